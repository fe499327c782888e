"""The audit trail (issue 3): one exact entry per action, tamper detection at the right
position, checkpoints, no secret in the trail, fail closed, reasons before reveal, who may
read what, and retention that keeps the chain verifiable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import CANARY, KDF, PASSWORDS, CliRunner, Clock, VaultFixture
from credvault import (
    AccessDenied,
    AuditChainBroken,
    ClockSuspect,
    CredvaultError,
    InMemory,
    NotFound,
    Vault,
    WrongPassphrase,
)
from credvault.crypto import labels

ENG = "acme-2026"
REF = f"{ENG}/web1-root"
TRIGGER = "CREATE TRIGGER t BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END"


# -- a fast copy of conftest's vault + engagement ----------------------------------------------
KEYS: dict[str, Any] = {}  # unlocked member keys: the same in every copy of the template


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> VaultFixture:
    """conftest's ``vault`` and ``engagement``, built once; each test gets its own copy."""
    clock = Clock()
    path = tmp_path_factory.mktemp("audit-template") / "vault"
    res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    assert res.recovery_key is not None
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "engineer")
        v.engagements.grant(ENG, "carol", "reader")
        v.systems.add(f"{ENG}/web1", "10.0.0.1", port=22, protocol="ssh", details="debian")
        v.credentials.put(REF, b"hunter2", username="root", system="web1")
    for name in ("alice", "bob", "carol"):
        with Vault.open(path, name, PASSWORDS[name], kdf=KDF, clock=clock) as v:
            KEYS[name] = v.member_keys()
    return VaultFixture(path, clock, res.recovery_key)


@pytest.fixture
def vault(template: VaultFixture, tmp_path: Path) -> VaultFixture:
    """Overrides conftest's: a copy of the template, with its own clock (a little later)."""
    path = tmp_path / "vault"
    shutil.copytree(template.path, path)
    return VaultFixture(path, Clock(), template.recovery_key)


@pytest.fixture
def engagement(vault: VaultFixture) -> str:
    return ENG


def _unlock(member: str) -> Any:
    return InMemory(KEYS[member]) if member in KEYS else PASSWORDS[member]


# -- helpers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class E:
    """An expected entry; ``detail`` is a substring of the real detail (exact if ``exact``)."""

    member: str
    action: str
    engagement: str | None
    item: str | None
    outcome: str
    detail: str = ""
    exact: bool = False

    def matches(self, row: tuple[Any, ...]) -> bool:
        member, action, engagement, item, outcome, detail = row
        head = (self.member, self.action, self.engagement, self.item, self.outcome)
        if head != (member, action, engagement, item, outcome):
            return False
        return detail == self.detail if self.exact else self.detail in detail


def raw_rows(v: Vault, after: int = 0) -> list[tuple[Any, ...]]:
    """(seq, member, action, engagement, item, outcome, detail) straight from the table."""
    return list(
        v._s.store.conn.execute(
            "SELECT seq, member, action, engagement, item, outcome, detail FROM audit "
            "WHERE seq > ? ORDER BY seq",
            (after,),
        )
    )


def head_of(path: Path, clock: Any) -> int:
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock, auto_purge=False) as v:
        row = v._s.store.conn.execute("SELECT max(seq) FROM audit").fetchone()
        return int(row[0])


def rows_after(path: Path, clock: Any, after: int) -> list[tuple[Any, ...]]:
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock, auto_purge=False) as v:
        return raw_rows(v, after)


def assert_entries(rows: list[tuple[Any, ...]], expected: list[E]) -> None:
    got = [r[1:] for r in rows]
    assert len(got) == len(expected), f"expected {expected}, got {got}"
    for row, exp in zip(got, expected, strict=True):
        assert exp.matches(row), f"expected {exp}, got {row}"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, _unlock(member), kdf=KDF, clock=vf.clock, **kw)


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    op: Callable[[VaultFixture, Path], Path | None]
    expected: list[E]
    prep: Callable[[VaultFixture], None] | None = None


def _with(member: str, fn: Callable[[Vault], object]) -> Callable[[VaultFixture, Path], None]:
    def op(vf: VaultFixture, tmp: Path) -> None:
        with open_as(vf, member) as v:
            fn(v)

    return op


def _raises(member: str, exc: type[BaseException], fn: Callable[[Vault], object]) -> Any:
    def op(vf: VaultFixture, tmp: Path) -> None:
        with open_as(vf, member) as v, pytest.raises(exc):
            fn(v)

    return op


def _beta(vf: VaultFixture) -> None:
    """beta-2026: created by admin alice, led by bob; alice holds no grant on it."""
    with open_as(vf) as v:
        v.engagements.create("beta-2026", "beta", lead="bob")
    with open_as(vf, "bob") as v:
        v.credentials.put("beta-2026/x", b"beta-secret")


def _close(vf: VaultFixture) -> None:
    with open_as(vf) as v:
        v.engagements.close(ENG)


def _close_and_hold(vf: VaultFixture) -> None:
    with open_as(vf) as v:
        v.engagements.close(ENG)
        v.engagements.retain(ENG, "2099-01-01", "client support contract")


def _close_and_age(vf: VaultFixture) -> None:
    with open_as(vf) as v:
        v.engagements.close(ENG)
    vf.clock.advance(days=8)


def _require_reason(vf: VaultFixture) -> None:
    with open_as(vf) as v:
        v.engagements.set_options(ENG, require_reason=True)


def _init(vf: VaultFixture, tmp: Path) -> Path:
    other = tmp / "other-vault"
    Vault.init(other, "dave", PASSWORDS["dave"], kdf=KDF, clock=vf.clock)
    return other


def _failed_unlock(vf: VaultFixture, tmp: Path) -> None:
    with pytest.raises(WrongPassphrase):
        Vault.open(vf.path, "bob", "not-bobs-passphrase", kdf=KDF, clock=vf.clock)


def _purge_run(vf: VaultFixture, tmp: Path) -> None:
    with open_as(vf, auto_purge=False) as v:
        assert [d.engagement for d in v.purge()] == [ENG]


def _purge_on_open(vf: VaultFixture, tmp: Path) -> None:
    with open_as(vf, "carol"):  # no right to destroy: her open purges nothing
        pass
    with open_as(vf):  # an admin's does
        pass


def _backup(vf: VaultFixture, tmp: Path) -> None:
    with open_as(vf) as v:
        v.backups.create(tmp / "backups")


CASES = [
    Case("init", _init, [E("dave", "init", None, None, "ok", "created")]),
    Case(
        "member-add",
        _with("alice", lambda v: v.members.add("dave", passphrase=b"dave-pass")),
        [E("alice", "member-add", None, "dave", "ok", "member")],
    ),
    Case(
        "engagement-new",
        _with("alice", lambda v: v.engagements.create("beta-2026", "beta")),
        [E("alice", "engagement-new", "beta-2026", None, "ok", "client beta, lead alice")],
    ),
    Case(
        "grant",
        _with("alice", lambda v: v.engagements.grant("beta-2026", "carol", "engineer")),
        [E("alice", "grant", "beta-2026", "carol", "ok", "role engineer")],
        prep=lambda vf: _with("alice", lambda v: v.engagements.create("beta-2026", "beta"))(
            vf, vf.path
        ),
    ),
    Case(
        "grant-downgrade-rotates",
        _with("alice", lambda v: v.engagements.grant(ENG, "carol", "auditor")),
        [
            E("alice", "grant", ENG, "carol", "ok", "role auditor"),
            E("alice", "rotate", ENG, None, "ok", "role lowered"),
        ],
    ),
    Case(
        "revoke",
        _with("alice", lambda v: v.engagements.revoke(ENG, "bob")),
        [
            E("alice", "rotate", ENG, None, "ok", "revoked bob"),
            E("alice", "revoke", ENG, "bob", "ok", "0 credentials to change"),
        ],
    ),
    Case(
        "put",
        _with("bob", lambda v: v.put(f"{ENG}/db", b"pg-secret", username="pg", kind="token")),
        [E("bob", "put", ENG, "db", "ok", "kind token")],
    ),
    Case(
        "update",
        _with("bob", lambda v: v.put(REF, b"new-secret")),
        [E("bob", "update", ENG, "web1-root", "ok")],
    ),
    Case(
        "get",
        _with("carol", lambda v: v.get(REF)),
        [E("carol", "get", ENG, "web1-root", "ok", "", exact=True)],
    ),
    Case(
        "get-with-reason",
        _with("carol", lambda v: v.get(REF, reason="TICKET-4711 reboot web1")),
        [E("carol", "get", ENG, "web1-root", "ok", "reason: TICKET-4711 reboot web1")],
    ),
    Case(
        "get-missing",
        _raises("bob", NotFound, lambda v: v.get(f"{ENG}/nope")),
        [E("bob", "get", ENG, "nope", "error", "not found")],
    ),
    Case(
        "system-add",
        _with("bob", lambda v: v.systems.add(f"{ENG}/db1", "10.0.0.2", port=5432)),
        [E("bob", "system-add", ENG, "db1", "ok")],
    ),
    Case(
        "system-show",
        _with("carol", lambda v: v.systems.show(f"{ENG}/web1")),
        [E("carol", "system-show", ENG, "web1", "ok")],
    ),
    Case(
        "system-rm",
        _with("bob", lambda v: v.systems.remove(f"{ENG}/web1")),
        [E("bob", "system-rm", ENG, "web1", "ok")],
    ),
    Case(
        "rm",
        _with("bob", lambda v: v.credentials.remove(REF)),
        [E("bob", "rm", ENG, "web1-root", "ok")],
    ),
    Case(
        "close",
        _with("alice", lambda v: v.engagements.close(ENG)),
        [E("alice", "close", ENG, None, "ok", "purge due")],
    ),
    Case(
        "retain",
        _with(
            "alice",
            lambda v: v.engagements.retain(ENG, "2099-01-01", "client support contract"),
        ),
        [E("alice", "retain", ENG, None, "ok", "held until 2099-01-01T23:59: client support")],
        prep=_close,
    ),
    Case(
        "release",
        _with("alice", lambda v: v.engagements.release(ENG)),
        [E("alice", "release", ENG, None, "ok", "hold lifted")],
        prep=_close_and_hold,
    ),
    Case(
        "shred",
        _with("alice", lambda v: v.purger.shred(ENG)),
        [
            E(
                "alice",
                "purge",
                ENG,
                None,
                "ok",
                "client request; 1 credentials, 1 systems, 4 key copies destroyed",
            )
        ],
    ),
    Case(
        "purge-run",
        _purge_run,
        [
            E("alice", "purge", ENG, None, "ok", "grace period expired; 1 credentials"),
            E("alice", "purge-run", None, None, "ok", "1 engagements purged"),
        ],
        prep=_close_and_age,
    ),
    Case(
        "purge-on-open",
        _purge_on_open,
        [E("alice", "purge", ENG, None, "ok", "grace period expired; 1 credentials")],
        prep=_close_and_age,
    ),
    Case("backup", _backup, [E("alice", "backup", None, None, "ok", ".cvb; 0 old backups")]),
    Case(
        "export",
        _with("alice", lambda v: v.clients.export("acme")),
        [E("alice", "export", ENG, None, "ok", "1 credentials exported")],
    ),
    Case(
        "denied-get-no-grant",
        _raises("carol", AccessDenied, lambda v: v.get("beta-2026/x")),
        [E("carol", "get", "beta-2026", "x", "denied", "no grant")],
        prep=_beta,
    ),
    Case(
        "denied-get-admin-without-grant",
        _raises("alice", AccessDenied, lambda v: v.get("beta-2026/x")),
        [E("alice", "get", "beta-2026", "x", "denied", "no grant")],
        prep=_beta,
    ),
    Case(
        "denied-put-reader",
        _raises("carol", AccessDenied, lambda v: v.put(f"{ENG}/new", b"x")),
        [E("carol", "put", ENG, "new", "denied", "role reader")],
    ),
    Case(
        "denied-get-without-required-reason",
        _raises("bob", AccessDenied, lambda v: v.get(REF)),
        [E("bob", "get", ENG, "web1-root", "denied", "requires --reason")],
        prep=_require_reason,
    ),
    Case(
        "failed-unlock-recorded-at-next-open",
        _failed_unlock,
        [E("bob", "unlock", None, None, "denied", "failed unlock at")],
    ),
    Case(
        "audit-verify",
        _with("alice", lambda v: v.audit_verify()),
        [E("alice", "audit-verify", None, None, "ok", "entries verified")],
    ),
    Case(
        "audit-checkpoint",
        _with("alice", lambda v: v.audit_checkpoint()),
        [E("alice", "audit-checkpoint", None, None, "ok")],
    ),
    Case(
        "audit-read",
        _with("alice", lambda v: v.audit_entries(engagement=ENG)),
        [E("alice", "audit-read", ENG, None, "ok", "entries")],
    ),
    Case(
        "config-set",
        _with("alice", lambda v: v.set_setting("purge-grace-days", "3")),
        [E("alice", "config-set", None, "purge-grace-days", "ok", "purge-grace-days=3")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_action_leaves_exactly_the_expected_entry(
    vault: VaultFixture, engagement: str, tmp_path: Path, case: Case
) -> None:
    if case.prep is not None:
        case.prep(vault)
    before = head_of(vault.path, vault.clock)
    other = case.op(vault, tmp_path)
    if other is not None:  # the action made a new vault: read its whole trail
        with Vault.open(other, "dave", PASSWORDS["dave"], kdf=KDF, clock=vault.clock) as v:
            rows = raw_rows(v)
    else:
        rows = rows_after(vault.path, vault.clock, before)
    assert_entries(rows, case.expected)
    with open_as(vault) as v:
        v.audit_verify()


def test_entries_carry_utc_timestamps_of_the_clock(vault: VaultFixture, engagement: str) -> None:
    vault.clock.advance(days=3)
    with open_as(vault, "bob") as v:
        v.get(REF)
    with open_as(vault) as v:
        last = v.audit_entries(action="get")[-1]
    assert last.ts.endswith("Z")
    assert last.ts.startswith(vault.clock.now.strftime("%Y-%m-%dT%H:%M"))


def test_denial_in_a_session_opened_before_the_revoke_is_audited(
    vault: VaultFixture, engagement: str
) -> None:
    bob = open_as(vault, "bob")
    try:
        assert bob.get(REF).secret.reveal() == b"hunter2"
        with open_as(vault) as v:
            v.engagements.revoke(ENG, "bob")
        before = head_of(vault.path, vault.clock)
        with pytest.raises(AccessDenied):
            bob.get(REF)
    finally:
        bob.close()
    rows = rows_after(vault.path, vault.clock, before)
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [("bob", "get", "web1-root", "denied")]


def test_failed_rm_is_audited_as_error(vault: VaultFixture, engagement: str) -> None:
    before = head_of(vault.path, vault.clock)
    with open_as(vault, "bob") as v, pytest.raises(NotFound):
        v.credentials.remove(f"{ENG}/nope")
    rows = rows_after(vault.path, vault.clock, before)
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [("bob", "rm", "nope", "error")]


# -- tampering ----------------------------------------------------------------------------------
def _edit(conn: Any, k: int) -> None:
    conn.execute("UPDATE audit SET detail = 'nothing to see' WHERE seq = ?", (k,))


def _edit_member(conn: Any, k: int) -> None:
    conn.execute("UPDATE audit SET member = 'mallory' WHERE seq = ?", (k,))


def _edit_mac(conn: Any, k: int) -> None:
    conn.execute("UPDATE audit SET mac = zeroblob(32) WHERE seq = ?", (k,))


def _delete(conn: Any, k: int) -> None:
    conn.execute("DELETE FROM audit WHERE seq = ?", (k,))


def _reorder(conn: Any, k: int) -> None:
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (k,))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = ?", (k, k + 1))
    conn.execute("UPDATE audit SET seq = ? WHERE seq = -1", (k + 1,))


def _insert(conn: Any, k: int) -> None:
    """Shift entries k.. up by one and put a copy of entry k-1 (MAC included) at k."""
    conn.execute("UPDATE audit SET seq = -seq WHERE seq >= ?", (k,))
    conn.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0")
    conn.execute(
        "INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, mac) "
        "SELECT ?, ts, member, action, engagement, item, outcome, detail, mac "
        "FROM audit WHERE seq = ?",
        (k, k - 1),
    )


def _insert_at_end(conn: Any, k: int) -> None:
    head = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    conn.execute(
        "INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, mac) "
        "SELECT ?, ts, member, action, engagement, item, outcome, detail, mac "
        "FROM audit WHERE seq = ?",
        (head + 1, head),
    )


TAMPERS: list[tuple[str, Callable[[Any, int], None], int]] = [
    ("edit-detail", _edit, 0),
    ("edit-member", _edit_member, 0),
    ("edit-mac", _edit_mac, 0),
    ("delete", _delete, 0),
    ("reorder", _reorder, 0),
    ("insert", _insert, 0),
    ("insert-at-end", _insert_at_end, -1),
]


@pytest.mark.parametrize(("how", "tamper", "where"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_verify_detects_tampering_at_the_right_position(
    vault: VaultFixture,
    engagement: str,
    how: str,
    tamper: Callable[[Any, int], None],
    where: int,
) -> None:
    k = 5
    with open_as(vault) as v:
        assert v.audit_verify() >= 8
        conn = v._s.store.conn
        head = int(conn.execute("SELECT max(seq) FROM audit").fetchone()[0])
        tamper(conn, k)
        with pytest.raises(AuditChainBroken) as ei:
            v._s.audit.verify()
        expected = head + 1 if where == -1 else k
        assert ei.value.position == expected, str(ei.value)
        assert f"entry {expected}" in str(ei.value)
        with pytest.raises(AuditChainBroken):
            v.audit_verify()


def test_cli_audit_verify_exit_codes_and_position(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli_vault("put", f"{ENG}/db", input=b"pg\n")
    assert r.code == 0, r.err
    r = cli_vault("audit", "verify")
    assert r.code == 0, r.err
    assert "intact" in r.text
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        _edit(v._s.store.conn, 3)
    r = cli_vault("audit", "verify")
    assert r.code == 6
    assert "entry 3" in r.err
    assert r.err.startswith("credvault: ")
    assert len(r.err.strip().splitlines()) == 1


# -- checkpoints --------------------------------------------------------------------------------
def _rebuild_chain(v: Vault, rows: list[tuple[Any, ...]]) -> None:
    """What an insider with the database key can do: rewrite a fully valid chain."""
    conn = v._s.store.conn
    key = bytes(conn.execute("SELECT value FROM meta WHERE key = 'audit_key'").fetchone()[0])
    conn.execute("DELETE FROM audit")
    prev = bytes(32)
    for seq, (ts, member, action, eng, item, outcome, detail) in enumerate(rows, start=1):
        body = labels.encode(seq, ts, member, action, eng or "", item or "", outcome, detail)
        mac = hmac.new(key, prev + body, hashlib.sha256).digest()
        conn.execute(
            "INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, mac) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, member, action, eng, item, outcome, detail, mac),
        )
        prev = mac


def test_checkpoint_passes_on_intact_trail_and_catches_a_rewrite(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault, "bob") as v:
        v.get(REF)  # the read the insider wants to hide
    with open_as(vault) as v:
        cp = str(v.audit_checkpoint())
        pos = int(cp.split(":")[0])
        v.put(f"{ENG}/later", b"x")
        assert v.audit_verify(cp) > pos
        assert v.audit_verify(f"{pos}:{cp.split(':')[1].upper()}") > pos
        conn = v._s.store.conn
        old = list(
            conn.execute(
                "SELECT ts, member, action, engagement, item, outcome, detail FROM audit "
                "ORDER BY seq"
            )
        )
        forged = [r for r in old if not (r[1] == "bob" and r[2] == "get")]
        forged += [old[-1]] * (len(old) - len(forged))  # same length: positions line up
        _rebuild_chain(v, forged)
        assert v.audit_verify() == len(old)  # the forged chain is internally valid ...
        with pytest.raises(AuditChainBroken) as ei:
            v.audit_verify(cp)  # ... but not the one the checkpoint remembers
        assert ei.value.position == pos


def test_checkpoint_beyond_the_head_means_truncation(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        cp = v.audit_checkpoint()
        v._s.store.conn.execute("DELETE FROM audit WHERE seq >= ?", (cp.position,))
        assert v._s.audit.verify() == cp.position - 1  # a cut tail alone is not visible ...
        with pytest.raises(AuditChainBroken) as ei:
            v._s.audit.verify(cp)  # ... the checkpoint shows it
        assert ei.value.position == cp.position


def test_cli_checkpoint_round_trip_and_rewrite(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli_vault("audit", "checkpoint")
    assert r.code == 0, r.err
    cp = r.text.strip()
    pos, mac = cp.split(":")
    assert int(pos) > 1
    assert len(bytes.fromhex(mac)) == 32
    r = cli_vault("put", f"{ENG}/db", input=b"pg\n")
    assert r.code == 0, r.err
    r = cli_vault("audit", "verify", "--checkpoint", cp)
    assert r.code == 0, r.err
    assert f"checkpoint {pos}" in r.text
    r = cli_vault("audit", "verify", "--checkpoint", "garbage")
    assert r.code == 2
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        rows = list(
            v._s.store.conn.execute(
                "SELECT ts, member, action, engagement, item, outcome, detail FROM audit "
                "ORDER BY seq"
            )
        )
        rows[1] = (*rows[1][:6], "rewritten history")
        _rebuild_chain(v, rows)
    r = cli_vault("audit", "verify")
    assert r.code == 6  # alice's client saw the chain before: a rewrite is a fork (issue 11)
    assert "forked" in r.err
    # a client without a witness (another machine) finds it internally valid; the checkpoint
    # kept outside the vault catches it
    elsewhere = {"XDG_STATE_HOME": str(Path(cli_env["HOME"]) / "elsewhere")}
    r = cli_vault("audit", "verify", env=elsewhere)
    assert r.code == 0, r.err  # internally valid
    r = cli_vault("audit", "verify", "--checkpoint", cp, env=elsewhere)
    assert r.code == 6
    assert f"entry {pos}" in r.err


# -- no secret in the trail ---------------------------------------------------------------------
def _forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        hashlib.sha256(secret).hexdigest().encode(),
    ]


def test_canary_never_enters_the_audit_table(vault: VaultFixture, engagement: str) -> None:
    text = CANARY.decode()
    with open_as(vault) as v:
        v.put(f"{ENG}/canary", CANARY, username=text, url=f"https://x/{text}", notes=text)
        v.systems.add(f"{ENG}/db1", "10.0.0.9", details=text)
        v.get(f"{ENG}/canary", reason="TICKET-1")
        v.systems.show(f"{ENG}/db1")
        v.put(f"{ENG}/canary", CANARY + b"-v2", notes=text)
        v.clients.export("acme")
        v.engagements.grant(ENG, "carol", "auditor")
    with open_as(vault, "carol") as v, pytest.raises(AccessDenied):
        v.get(f"{ENG}/canary")
    with open_as(vault) as v:
        v.engagements.revoke(ENG, "bob")
        v.purger.shred(ENG)
        cells: list[bytes] = []
        for row in v._s.store.conn.execute("SELECT * FROM audit"):
            for cell in row:
                if isinstance(cell, str):
                    cells.append(cell.encode())
                elif isinstance(cell, bytes):
                    cells.append(cell)
                elif cell is not None:
                    cells.append(str(cell).encode())
        listed = json.dumps([e.to_json() for e in v.audit_entries()]).encode()
    blob = b"\n".join(cells)
    assert b"TICKET-1" in blob  # the scan sees what is there
    for form in _forms(CANARY) + _forms(CANARY + b"-v2") + [text.encode()]:
        assert form not in blob
        assert form not in listed


def test_canary_never_in_cli_audit_json(cli_vault: CliRunner) -> None:
    r = cli_vault("put", f"{ENG}/canary", "--notes", "see ticket", input=CANARY + b"\n")
    assert r.code == 0, r.err
    r = cli_vault("get", f"{ENG}/canary")
    assert (r.code, r.out) == (0, CANARY + b"\n")
    r = cli_vault("get", f"{ENG}/canary", "--json", "--reason", "TICKET-9")
    assert r.code == 0, r.err
    r = cli_vault("audit", "--json")
    assert r.code == 0, r.err
    entries = json.loads(r.out)
    assert any(e["action"] == "get" and "TICKET-9" in e["detail"] for e in entries)
    for form in [*_forms(CANARY), CANARY.decode().encode("unicode_escape")]:
        assert form not in r.out
    r = cli_vault("audit")
    assert r.code == 0, r.err
    assert CANARY not in r.out
    assert "canary" in r.text  # item names are listed, values are not


# -- fail closed --------------------------------------------------------------------------------
def test_get_fails_closed_when_the_entry_cannot_be_written(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v._s.store.conn.execute(TRIGGER)
    with open_as(vault, "bob") as v:
        got: list[object] = []
        with pytest.raises(CredvaultError) as ei:
            got.append(v.get(REF))
        assert got == []
        assert "hunter2" not in str(ei.value)
        with pytest.raises(CredvaultError):
            got.append(v.systems.show(f"{ENG}/web1"))
        with pytest.raises(CredvaultError):
            got.append(v.clients.export("acme"))
        assert got == []
        # a write and its entry commit together: no entry, no write
        with pytest.raises(CredvaultError):
            v.put(f"{ENG}/new", b"x")
        n = v._s.store.conn.execute("SELECT count(*) FROM credentials WHERE name = 'new'")
        assert n.fetchone()[0] == 0


def test_cli_get_fails_closed(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    r = cli_vault("put", f"{ENG}/db", input=CANARY + b"\n")
    assert r.code == 0, r.err
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v._s.store.conn.execute(TRIGGER)
    for args in (("get", f"{ENG}/db"), ("get", f"{ENG}/db", "--json")):
        r = cli_vault(*args)
        assert r.code != 0
        assert CANARY not in r.out
        assert CANARY.decode() not in r.err
        assert r.out == b""
        assert r.err.startswith("credvault: ")
        assert "Traceback" not in r.err


# -- a reason before reveal ---------------------------------------------------------------------
def test_required_reason_is_enforced_and_recorded(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create("beta-2026", "beta", require_reason=True)
        v.engagements.grant("beta-2026", "bob", "engineer")
    with open_as(vault, "bob") as v:
        v.put("beta-2026/x", b"x-secret")
        with pytest.raises(AccessDenied) as ei:
            v.get("beta-2026/x")
        assert "reason" in str(ei.value)
        assert v.get("beta-2026/x", reason="INC-77").secret.reveal() == b"x-secret"
    with open_as(vault) as v:
        gets = [e for e in v.audit_entries(engagement="beta-2026") if e.action == "get"]
    assert [(e.member, e.outcome) for e in gets] == [("bob", "denied"), ("bob", "ok")]
    assert "requires --reason" in gets[0].detail
    assert gets[1].detail == "reason: INC-77"


def test_cli_reason(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    with _cli_lib(cli_env) as v:
        v.put(f"{ENG}/db", b"pg")
    r = cli_vault("engagement", "set", ENG, "--require-reason")
    assert r.code == 0, r.err
    r = cli_vault("get", f"{ENG}/db")
    assert r.code == 4
    assert r.out == b""
    assert "reason" in r.err
    r = cli_vault("get", f"{ENG}/db", "--reason", "CHG-1234 rotate")
    assert (r.code, r.out) == (0, b"pg\n")
    r = cli_vault("audit", "--json", "--action", "get")
    entries = json.loads(r.out)
    assert [e["outcome"] for e in entries[-2:]] == ["denied", "ok"]
    assert "reason" in entries[-2]["detail"]
    assert entries[-1]["detail"] == "reason: CHG-1234 rotate"
    r = cli_vault("engagement", "set", ENG, "--no-require-reason")
    assert r.code == 0, r.err
    r = cli_vault("get", f"{ENG}/db")
    assert (r.code, r.out) == (0, b"pg\n")


# -- who may read what ----------------------------------------------------------------------------
def test_who_may_read_the_trail(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create("beta-2026", "beta", lead="bob")  # alice: admin, no grant
    with open_as(vault, "bob") as v:
        v.put("beta-2026/x", b"x")
        v.engagements.grant("beta-2026", "carol", "auditor")

    # admin: everything, including vault-wide entries and engagements without a grant
    with open_as(vault) as v:
        everything = v.audit_entries()
        assert {e.engagement for e in everything} >= {None, ENG, "beta-2026"}
        assert any(e.action == "member-add" for e in everything)
        assert {e.engagement for e in v.audit_entries(engagement="beta-2026")} == {"beta-2026"}

    # lead (not admin): own engagement only, nothing vault-wide
    with open_as(vault, "bob") as v:
        mine = v.audit_entries()
        assert {e.engagement for e in mine} == {"beta-2026"}
        assert v.audit_entries(engagement="beta-2026")
        with pytest.raises(AccessDenied):  # engineer on acme-2026
            v.audit_entries(engagement=ENG)
        with pytest.raises(AccessDenied):
            v.audit_verify()

    # auditor: own engagement; reader elsewhere is denied
    with open_as(vault, "carol") as v:
        assert {e.engagement for e in v.audit_entries()} == {"beta-2026"}
        assert v.audit_entries(engagement="beta-2026", action="put")[0].item == "x"
        with pytest.raises(AccessDenied):  # reader on acme-2026
            v.audit_entries(engagement=ENG)

    with open_as(vault) as v:
        denied = [e for e in v.audit_entries(engagement=ENG) if e.outcome == "denied"]
    assert {(e.member, e.engagement) for e in denied} == {("bob", ENG), ("carol", ENG)}


def _cli_lib(cli_env: dict[str, str], member: str = "alice") -> Vault:
    """The CLI's vault through the library (setup without paying a subprocess per step)."""
    path = Path(cli_env["CREDVAULT_VAULT"])
    return Vault.open(path, member, PASSWORDS[member], kdf=KDF)


def test_cli_audit_filters(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    with _cli_lib(cli_env) as v:
        for name in ("a", "b", "c"):
            v.put(f"{ENG}/{name}", b"s")
        v.get(f"{ENG}/b")
    r = cli_vault("audit", "--json", "--engagement", ENG, "--action", "put")
    assert r.code == 0, r.err
    assert [e["item"] for e in json.loads(r.out)] == ["a", "b", "c"]
    r = cli_vault("audit", "--json", "--limit", "2", "--action", "put", "--member", "alice")
    assert [e["item"] for e in json.loads(r.out)] == ["b", "c"]  # newest last
    r = cli_vault("audit", "--json", "--since", "2999-01-01")
    assert (r.code, json.loads(r.out)) == (0, [])
    r = cli_vault("audit")
    assert r.code == 0, r.err
    lines = [ln for ln in r.text.splitlines() if " get " in ln]
    assert len(lines) == 1
    assert "alice" in lines[0]
    assert ENG in lines[0]


def test_cli_engineer_cannot_read_engagement_trail_auditor_can(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    with _cli_lib(cli_env) as v:
        v.engagements.grant(ENG, "bob", "engineer")
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    r = cli_vault("audit", "--engagement", ENG, env=bob)
    assert r.code == 4
    assert "access denied" in r.err
    with _cli_lib(cli_env) as v:
        v.engagements.grant(ENG, "bob", "auditor")
    r = cli_vault("audit", "--engagement", ENG, "--json", env=bob)
    assert r.code == 0, r.err
    entries = json.loads(r.out)
    assert {e["engagement"] for e in entries} == {ENG}
    assert ("bob", "denied") in {(e["member"], e["outcome"]) for e in entries}


# -- retention ----------------------------------------------------------------------------------
def test_retention_prunes_old_entries_and_keeps_the_chain_verifiable(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v.set_setting("audit-retention-days", "30")
        old_cp = str(v.audit_checkpoint())
        v.audit_checkpoint()  # one more old entry: old_cp is not the anchor
    vault.clock.advance(days=40)
    with open_as(vault, "bob") as v:
        v.get(REF)  # recent: must survive
    with open_as(vault) as v:
        head_cp = v.audit_checkpoint()
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")  # bob's clock vouches for nothing
        rows = raw_rows(v)
        seqs = [r[0] for r in rows]
        assert seqs[0] > int(old_cp.split(":")[0])  # the old part is gone
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert ("bob", "get", ENG, "web1-root", "ok", "") in [r[1:] for r in rows]
        prune = [r for r in rows if r[2] == "audit-prune"]
        assert len(prune) == 1
        assert f"pruned entries 1..{seqs[0] - 1}" in prune[0][6]
        assert "anchor" in prune[0][6]
        assert v.audit_verify() == len(rows)
        assert v.audit_verify(str(head_cp)) >= len(rows)
        with pytest.raises(AuditChainBroken):  # the checkpoint's entry was pruned
            v.audit_verify(old_cp)
        cutoff = (vault.clock.now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
        assert all(e.ts >= cutoff for e in v.audit_entries())


def test_retention_when_every_entry_is_old(vault: VaultFixture) -> None:
    with open_as(vault) as v:
        v.set_setting("audit-retention-days", "30")
        cp = v.audit_checkpoint()
    vault.clock.advance(days=40)  # nobody used the vault for longer than the retention
    with open_as(vault) as v:
        with pytest.raises(ClockSuspect):  # so the clock is doubted: an admin confirms it
            v.purge()
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")
        for _ in range(cp.position + 2):  # the trail grows past the anchor again
            v.audit_checkpoint()
        rows = raw_rows(v)
        assert rows[0][0] == cp.position + 1
        assert [r[2] for r in rows[:2]] == ["clock-confirm", "audit-prune"]
        assert v.audit_verify(str(cp)) == len(rows)


def test_default_retention_keeps_a_year(vault: VaultFixture, engagement: str) -> None:
    vault.clock.advance(days=40)
    with open_as(vault) as v:
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")
        assert raw_rows(v)[0][0] == 1
        assert v.info().settings["audit-retention-days"] == 365  # type: ignore[index]
