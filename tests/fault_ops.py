"""The write operations of the fault suites, how to tell whether each took effect, and the
checks every faulted vault must pass (shared by the test process and ``fault_child.py``).

A trial runs one operation in a child process and faults it (kill -9 at an observed point,
a full disk, a signal). Afterwards :func:`check` holds the vault to spec §10: it opens for
every member, SQLite's and the audit chain's checks pass, the operation took effect if and
only if it was audited, an acknowledged operation took effect, and no stray file is left.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credvault import MIN_KDF, Vault
from credvault.errors import CredvaultError

PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "dave": "dave-pass"}
NEW = {"alice": "alice-new-pass", "carol": "carol-new-pass", "erin": "erin-pass"}
MEMBERS = ("alice", "bob", "carol", "dave")
ENG = "acme-2026"
VAULT_FILES = {
    "vault.db",
    "vault.db-wal",
    "vault.db-shm",
    "keyslots.json",
    "vault.lock",
    "failed-unlocks.log",
    "purge-ledger.jsonl",  # the signed record of what was destroyed (issue 12)
}
# Read-only actions (the checks themselves add some); everything else is a change.
READS = {
    "get",
    "ls",
    "audit-read",
    "audit-verify",
    "engagement-ls",
    "engagement-show",
    "system-ls",
    "system-show",
    "export",
}


def open_vault(path: Path, member: str, passphrase: str) -> Vault:
    return Vault.open(path, member, passphrase, kdf=MIN_KDF, auto_purge=False)


def make_template(path: Path) -> None:
    """alice (admin), bob, carol, dave; acme-2026 (bob engineer, carol reader) with a system
    and a credential; closeme-2026 active; old-2026 closed; held-2026 closed and held;
    gone-2026 (client gone) to shred."""
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=MIN_KDF)
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        for name in ("bob", "carol", "dave"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        e, c, sy = v.engagements, v.credentials, v.systems
        e.create(ENG, "acme")
        e.grant(ENG, "bob", "engineer")
        e.grant(ENG, "carol", "reader")
        sy.add(f"{ENG}/web1", "10.0.0.1", port=22, protocol="ssh")
        sy.add(f"{ENG}/spare", "10.0.0.9", port=22, protocol="ssh")
        c.put(f"{ENG}/web1-root", b"hunter2", username="root", system="web1")
        for name, client in (
            ("closeme-2026", "acme"),
            ("old-2026", "oldco"),
            ("held-2026", "oldco"),
            ("gone-2026", "gone"),
        ):
            e.create(name, client)
            c.put(f"{name}/cred", b"pw-" + name.encode())
        e.close("old-2026", grace_days=3650)
        e.close("held-2026", grace_days=3650)
        e.retain("held-2026", _later(400), "litigation")


def _later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%d")


def _names(v: Vault, eng: str) -> set[str]:
    return {c.name for c in v.credentials.list(eng)}


def _eng(v: Vault, name: str) -> object:
    return v.engagements.get(name, allow_purged=True)


@dataclass(frozen=True)
class Op:
    """``run`` (in the child, on alice's open vault) and ``applied`` (in the checker)."""

    name: str
    run: Callable[[Vault, Path], object]
    applied: Callable[[Vault, Path], bool]
    membership: bool = False


def _member_ids(v: Vault) -> set[str]:
    return {m.name for m in v.members.list()}


def _backup(v: Vault, work: Path) -> object:
    return v.backups.create(work / "backups")


def _restore(v: Vault, work: Path) -> object:
    src = next((work / "backups").glob("*.cvb"))
    return Vault.restore(src, work / "restored", "alice", PASSWORDS["alice"], kdf=MIN_KDF)


def _restored(v: Vault, work: Path) -> bool:
    """A complete restored vault (its own trail holds the restore entry), or nothing."""
    target = work / "restored"
    if not target.exists() or not any(target.iterdir()):
        return False
    with open_vault(target, "alice", PASSWORDS["alice"]) as r:
        if r.integrity_check():
            raise AssertionError("the restored vault fails its integrity check")
        if not any(e.action == "restore" for e in r.audit_entries()):
            raise AssertionError("a restored vault without its restore entry")
    return True


def _shred_client(v: Vault, work: Path) -> object:
    return v.clients.shred("gone")


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op(
            "put",
            lambda v, w: v.credentials.put(f"{ENG}/newcred", b"pw-new"),
            lambda v, w: "newcred" in _names(v, ENG),
        ),
        Op(
            "put_many",
            lambda v, w: v.credentials.put_many(
                ENG, [("bulk-a", b"1"), ("bulk-b", b"2"), ("bulk-c", b"3")]
            ),
            lambda v, w: _all_or_none({"bulk-a", "bulk-b", "bulk-c"} & _names(v, ENG), 3),
        ),
        Op(
            "rm",
            lambda v, w: v.credentials.remove(f"{ENG}/web1-root"),
            lambda v, w: "web1-root" not in _names(v, ENG),
        ),
        Op(
            "system_add",
            lambda v, w: v.systems.add(f"{ENG}/db1", "10.0.0.2", port=5432, protocol="postgres"),
            lambda v, w: "db1" in {s.name for s in v.systems.list(ENG)},
        ),
        Op(
            "system_rm",
            lambda v, w: v.systems.remove(f"{ENG}/spare"),
            lambda v, w: "spare" not in {s.name for s in v.systems.list(ENG)},
        ),
        Op(
            "grant",
            lambda v, w: v.engagements.grant(ENG, "dave", "reader"),
            lambda v, w: "dave" in {g.member for g in v.engagements.members(ENG)},
        ),
        Op(
            "revoke",
            lambda v, w: v.engagements.revoke(ENG, "carol"),
            lambda v, w: "carol" not in {g.member for g in v.engagements.members(ENG)},
        ),
        Op(
            "rotate",
            lambda v, w: v.engagements.rotate(ENG),
            lambda v, w: v.engagements.get(ENG).key_version > 1,
        ),
        Op(
            "close",
            lambda v, w: v.engagements.close("closeme-2026"),
            lambda v, w: v.engagements.get("closeme-2026").state == "closed",
        ),
        Op(
            "hold",
            lambda v, w: v.engagements.retain("old-2026", _later(500), "audit"),
            lambda v, w: v.engagements.get("old-2026").hold_until is not None,
        ),
        Op(
            "release",
            lambda v, w: v.engagements.release("held-2026"),
            lambda v, w: v.engagements.get("held-2026").hold_until is None,
        ),
        Op(
            "shred",
            lambda v, w: v.purger.shred("gone-2026"),
            lambda v, w: v.engagements.get("gone-2026", allow_purged=True).state == "purged",
        ),
        Op(
            "client_shred",
            _shred_client,
            lambda v, w: v.engagements.get("gone-2026", allow_purged=True).state == "purged",
        ),
        # the template's own backup (for restore) is there already: one more is the effect
        Op("backup", _backup, lambda v, w: len(list((w / "backups").glob("*.cvb"))) > 1),
        Op("restore", _restore, _restored),
        Op(
            "unlock",
            lambda v, w: None,  # the traced part is the open itself (imports failed unlocks)
            lambda v, w: w.joinpath("unlock-applied").exists(),
        ),
        Op(
            "passwd",
            lambda v, w: v.members.passwd(NEW["alice"].encode()),
            lambda v, w: v.member == "alice" and w.joinpath("alice-new").exists(),
            membership=True,
        ),
        Op(
            "passwd_compromised",
            lambda v, w: v.members.passwd(NEW["alice"].encode(), compromised=True),
            lambda v, w: v.member == "alice" and w.joinpath("alice-new").exists(),
            membership=True,
        ),
        Op(
            "member_add",
            lambda v, w: v.members.add("erin", passphrase=NEW["erin"].encode()),
            lambda v, w: "erin" in _member_ids(v),
            membership=True,
        ),
        Op(
            "member_reset",
            lambda v, w: v.members.reset("carol", NEW["carol"].encode()),
            lambda v, w: w.joinpath("carol-new").exists(),
            membership=True,
        ),
        Op(
            "member_rm",
            lambda v, w: v.members.remove("bob"),
            lambda v, w: "bob" not in _member_ids(v),
            membership=True,
        ),
    )
}


def _all_or_none(present: set[str], n: int) -> bool:
    if len(present) not in (0, n):
        raise AssertionError(f"partial bulk insert: {sorted(present)}")
    return bool(present)


def _opens(path: Path, member: str, passphrase: str) -> bool:
    try:
        open_vault(path, member, passphrase).close()
    except CredvaultError:
        return False
    return True


def check(path: Path, op: Op, work: Path, acknowledged: bool, head: int) -> list[str]:
    """Everything spec §10 promises after a fault; returns the violations (empty: fine).

    ``head`` is the number of audit entries in the template: later ones are the trial's.
    """
    bad: list[str] = []
    if op.name == "unlock" and not (path / "failed-unlocks.log").exists():
        work.joinpath("unlock-applied").touch()  # before our own opens import it
    # Which passphrases are in force (exactly one of old/new for a changed member).
    changes_pw = op.name in ("passwd", "passwd_compromised")
    alice_new = _opens(path, "alice", NEW["alice"]) if changes_pw else False
    alice_pw = NEW["alice"] if alice_new else PASSWORDS["alice"]
    if changes_pw and _opens(path, "alice", PASSWORDS["alice"]) == alice_new:
        bad.append("passwd: old and new passphrase both work, or neither")
    if alice_new:
        work.joinpath("alice-new").touch()
    if op.name == "member_reset":
        carol_new = _opens(path, "carol", NEW["carol"])
        if carol_new == _opens(path, "carol", PASSWORDS["carol"]):
            bad.append("reset: old and new passphrase both work, or neither")
        if carol_new:
            work.joinpath("carol-new").touch()
    try:
        v = open_vault(path, "alice", alice_pw)
    except CredvaultError as e:
        return [*bad, f"alice cannot open: {type(e).__name__}: {e}"]
    with v:
        if v.integrity_check():
            bad.append("integrity_check failed")
        try:
            v.audit_verify()
        except CredvaultError as e:
            bad.append(f"audit chain: {e}")
        new = [e for e in v.audit_entries() if e.seq > head]
        audited = any(
            e.outcome == "ok" and e.action not in READS and "at open" not in e.detail for e in new
        )
        if op.name == "restore":  # audited in the restored vault (checked by _restored)
            audited = (work / "restored").exists() and any((work / "restored").iterdir())
        if op.name == "unlock":  # imported exactly once, by the trial or by our open
            imported = sum(1 for e in new if e.action == "unlock")
            if imported != 1:
                bad.append(f"the failed unlock was imported {imported} times")
            audited = work.joinpath("unlock-applied").exists()
        try:
            applied = op.applied(v, work)
        except AssertionError as e:
            bad.append(str(e))
            applied = False
        if acknowledged and not applied:
            bad.append("acknowledged but not in effect")
        if op.name == "backup":  # an external file: it may be audited yet missing after a
            if applied and not audited:  # crash, but it never exists unaudited
                bad.append("a backup file exists without its audit entry")
        elif applied != audited:
            bad.append(f"in effect={applied} but audited={audited}")
        members = [m.name for m in v.members.list()]
    for m in members:
        pw = {
            "alice": alice_pw,
            "carol": NEW["carol"] if work.joinpath("carol-new").exists() else PASSWORDS["carol"],
            "erin": NEW["erin"],
        }.get(m, PASSWORDS.get(m, ""))
        if not _opens(path, m, pw):
            bad.append(f"member {m} cannot open")
    stray = {f.name for f in path.iterdir()} - VAULT_FILES
    if stray:
        bad.append(f"stray files in the vault: {sorted(stray)}")
    backups = work / "backups"
    if op.name == "backup" and backups.exists():
        later = datetime.now(UTC) + timedelta(hours=1)  # not the killed backup's second
        with Vault.open(path, "alice", alice_pw, kdf=MIN_KDF, clock=lambda: later) as again:
            again.backups.create(backups)  # the next backup removes what a killed one left
    if backups.exists():
        hidden = [f.name for f in backups.iterdir() if f.name.startswith(".")]
        if hidden:
            bad.append(f"stray files in the backup directory: {hidden}")
    if op.name == "restore" and not applied and (work / ".restored.restoring").exists():
        try:  # what an interrupted restore left must not block a rerun, which removes it
            _restore(v, work)
        except CredvaultError as e:
            bad.append(f"a rerun of the restore fails: {e}")
    leftovers = [f.name for f in work.iterdir() if f.name.startswith(".")]
    if leftovers:
        bad.append(f"stray files beside the vault: {leftovers}")
    return bad


def make_campaign_template(root: Path) -> tuple[Path, int]:
    """:func:`make_template` in ``root/vault`` plus one backup in ``root/backups``; returns
    ``(root, audit head)``. Backups are named by the second, so this returns only once the
    second of that backup is over: a trial's own backup never collides with it."""
    import time

    from killpoints import wait_until

    make_template(root / "vault")
    with open_vault(root / "vault", "alice", PASSWORDS["alice"]) as v:
        v.backups.create(root / "backups")
        second = int(time.time())  # the backup's stamp is no later than this
    wait_until(lambda: int(time.time()) > second, "the backup's second to pass", 10)
    return root, audit_head(root / "vault")


def audit_head(path: Path) -> int:
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        return max(e.seq for e in v.audit_entries())


def fresh_copy(template: Path, work: Path, op: str = "") -> Path:
    """A copy of the template vault (and its backups directory) under ``work``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(template / "vault", work / "vault")
    from conftest import separate_client  # not at the top: the fault child imports this module

    separate_client(work / "vault")
    if (template / "backups").exists():
        shutil.copytree(template / "backups", work / "backups")
    if op == "unlock":  # a failed unlock that the next open imports into the audit trail
        (work / "vault" / "failed-unlocks.log").write_text("2026-01-01T00:00:00.000000Z bob\n")
    return work / "vault"
