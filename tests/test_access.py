"""The role table of spec §3, enforced by the library: every allowed action succeeds, every
other one raises AccessDenied and is audited as denied; admins manage, they do not read.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import KDF, KDF_ARG, PASSWORDS, CliRunner, Clock, VaultFixture
from credvault import AccessDenied, InvalidInput, Vault
from credvault.access import Action, Role, allowed

ENG = "acme-2026"
REF = f"{ENG}/web1-root"

# Spec §3, written out independently of credvault.access (which is what is under test).
ACTIONS = ("list", "read", "write", "grant", "lifecycle", "audit")
SPEC_TABLE: dict[str, set[str]] = {
    "lead": {"list", "read", "write", "grant", "lifecycle", "audit"},
    "engineer": {"list", "read", "write"},
    "reader": {"list", "read"},
    "auditor": {"list", "audit"},
    "admin": {"list", "lifecycle", "audit"},  # global admin without a grant
}
_ACTION_OF = {
    "list": Action.LIST,
    "read": Action.READ,
    "write": Action.WRITE,
    "grant": Action.GRANT,
    "lifecycle": Action.LIFECYCLE,
    "audit": Action.AUDIT,
}


def test_role_table_oracle_matches_spec() -> None:
    for who, may in SPEC_TABLE.items():
        role = None if who == "admin" else Role(who)
        for action in ACTIONS:
            assert allowed(_ACTION_OF[action], role, admin=who == "admin") == (action in may), (
                who,
                action,
            )
    # No role at all and no admin flag: nothing, not even listing.
    assert not any(allowed(a, None, admin=False) for a in Action)


# -- one template vault per role of "dave", copied per test ----------------------------------
@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """acme-2026: alice (admin) lead, bob engineer, carol reader, one system and credential;
    dave holds the role under test (or is an admin with no grant)."""
    out: dict[str, Path] = {}
    for who in SPEC_TABLE:
        path = tmp_path_factory.mktemp(f"tpl-{who}") / "vault"
        clock = Clock()
        Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
        with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
            for name in ("bob", "carol", "dave"):
                v.members.add(
                    name,
                    passphrase=PASSWORDS[name].encode(),
                    admin=(name == "dave") and who == "admin",
                )
            v.engagements.create(ENG, "acme")
            v.engagements.grant(ENG, "bob", "engineer")
            v.engagements.grant(ENG, "carol", "reader")
            if who != "admin":
                v.engagements.grant(ENG, "dave", who)
            v.systems.add(f"{ENG}/web1", "10.0.0.1", port=22, protocol="ssh")
            v.credentials.put(REF, b"hunter2", username="root", system="web1")
        out[who] = path
    return out


def _copy(template: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "vault"
    shutil.copytree(template, dst)
    return dst


def _open(path: Path, member: str, clock: Clock) -> Vault:
    return Vault.open(path, member, PASSWORDS[member], kdf=KDF, clock=clock)


def _do(action: str, v: Vault) -> None:
    """Perform ``action`` as the vault's member and assert its effect when it succeeds."""
    if action == "list":
        assert [c.name for c in v.credentials.list(ENG)] == ["web1-root"]
    elif action == "read":
        assert v.get(REF).secret.reveal() == b"hunter2"
    elif action == "write":
        v.put(f"{ENG}/new-cred", b"fresh-value")
    elif action == "grant":
        g = v.engagements.grant(ENG, "carol", "engineer")
        assert (g.member, g.role) == ("carol", "engineer")
    elif action == "lifecycle":
        v.engagements.set_options(ENG, require_reason=True)
        assert v.engagements.get(ENG).require_reason
    elif action == "audit":
        entries = v.audit_entries(engagement=ENG)
        assert any(e.action == "put" and e.item == "web1-root" for e in entries)
    else:  # pragma: no cover
        raise AssertionError(action)


def _effect_absent(action: str, v: Vault) -> None:
    """As alice: a denied action left no trace but its audit entry."""
    if action == "write":
        assert [c.name for c in v.credentials.list(ENG)] == ["web1-root"]
    elif action == "grant":
        roles = {g.member: g.role for g in v.engagements.members(ENG)}
        assert roles["carol"] == "reader"
    elif action == "lifecycle":
        assert not v.engagements.get(ENG).require_reason


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("who", list(SPEC_TABLE))
def test_role_table(
    who: str, action: str, templates: dict[str, Path], tmp_path: Path, clock: Clock
) -> None:
    path = _copy(templates[who], tmp_path)
    expected = action in SPEC_TABLE[who]
    with _open(path, "dave", clock) as v:
        if expected:
            _do(action, v)
        else:
            with pytest.raises(AccessDenied) as ei:
                _do(action, v)
            assert ei.value.exit_code == 4
            assert "hunter2" not in str(ei.value)
    with _open(path, "alice", clock) as v:
        mine = v.audit_entries(member="dave", engagement=ENG)
        denied = [e for e in mine if e.outcome == "denied"]
        if expected:
            assert denied == []
            if action == "write":
                assert v.get(f"{ENG}/new-cred").secret.reveal() == b"fresh-value"
            if action == "grant":
                roles = {g.member: g.role for g in v.engagements.members(ENG)}
                assert roles["carol"] == "engineer"
        else:
            assert len(denied) == 1, mine
            assert denied[0] == mine[-1], mine
            _effect_absent(action, v)


@pytest.mark.parametrize("who", list(SPEC_TABLE))
def test_systems_follow_the_table(
    who: str, templates: dict[str, Path], tmp_path: Path, clock: Clock
) -> None:
    """System details are secrets too: shown to reading roles, changed by writing roles."""
    path = _copy(templates[who], tmp_path)
    may = SPEC_TABLE[who]
    with _open(path, "dave", clock) as v:
        assert [x.name for x in v.systems.list(ENG)] == ["web1"]
        assert v.systems.list(ENG)[0].address is None  # listings never carry the address
        if "read" in may:
            assert v.systems.show(f"{ENG}/web1").address == "10.0.0.1"
        else:
            with pytest.raises(AccessDenied):
                v.systems.show(f"{ENG}/web1")
        if "write" in may:
            v.systems.add(f"{ENG}/db1", "10.0.0.2", details="postgres")
            v.systems.remove(f"{ENG}/db1")
        else:
            with pytest.raises(AccessDenied):
                v.systems.add(f"{ENG}/db1", "10.0.0.2", details="postgres")
            with pytest.raises(AccessDenied):
                v.systems.remove(f"{ENG}/web1")
    with _open(path, "alice", clock) as v:
        assert [x.name for x in v.systems.list(ENG)] == ["web1"]
        denied = [e for e in v.audit_entries(member="dave") if e.outcome == "denied"]
        expected = (0 if "read" in may else 1) + (0 if "write" in may else 2)
        assert len(denied) == expected, denied


def test_admin_without_grant_holds_no_key(
    templates: dict[str, Path], tmp_path: Path, clock: Clock
) -> None:
    path = _copy(templates["admin"], tmp_path)
    with _open(path, "dave", clock) as v:
        assert v._s.is_admin
        eng = v.engagements.get(ENG)
        assert v.engagements.role_of(eng) is None
        assert v._s.store.grant_of(eng.id, "dave") is None
        with pytest.raises(AccessDenied):
            v.systems.show(f"{ENG}/web1")
        assert v._s.engagement_keys == {}


@pytest.mark.parametrize("who", ["admin", "lead", "engineer", "reader"])
def test_members_cannot_grant_themselves(
    who: str, templates: dict[str, Path], tmp_path: Path, clock: Clock
) -> None:
    path = _copy(templates[who], tmp_path)
    with _open(path, "dave", clock) as v:
        before = v._s.store.grant_of(v.engagements.get(ENG).id, "dave")
        for role in ("lead", "engineer", "reader"):
            with pytest.raises(AccessDenied):
                v.engagements.grant(ENG, "dave", role)
        assert v._s.store.grant_of(v.engagements.get(ENG).id, "dave") == before
    with _open(path, "alice", clock) as v:
        denied = [
            e for e in v.audit_entries(member="dave", action="grant") if e.outcome == "denied"
        ]
        assert len(denied) == 3
        assert {e.item for e in denied} == {"dave"}
        roles = {g.member: g.role for g in v.engagements.members(ENG)}
        assert roles.get("dave") == (None if who == "admin" else who)


def test_admin_without_grant_cannot_read_via_cli(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli_vault("put", f"{ENG}/db", input=b"pg-secret\n")
    assert r.code == 0, r.err
    r = cli_vault(
        "member", "add", "dave", "--admin", "--passphrase-file", cli_env["TEST_PASS_DAVE"],
        "--kdf", KDF_ARG,
    )  # fmt: skip
    assert r.code == 0, r.err
    dave = {"CREDVAULT_MEMBER": "dave", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_DAVE"]}
    r = cli_vault("get", f"{ENG}/db", env=dave)
    assert r.code == 4, r.err
    assert r.out == b""
    assert r.err.startswith("credvault: ")
    assert r.err.count("\n") == 1
    assert "pg-secret" not in r.err
    # Listing is allowed to an admin; granting oneself is not.
    r = cli_vault("ls", ENG, env=dave)
    assert r.code == 0, r.err
    assert b"db" in r.out
    assert b"pg-secret" not in r.out
    r = cli_vault("grant", ENG, "dave", "reader", env=dave)
    assert r.code == 4, r.err
    r = cli_vault("get", f"{ENG}/db", env=dave)
    assert r.code == 4, r.err
    r = cli_vault("audit", "--member", "dave", "--json")
    assert r.code == 0, r.err
    outcomes = [(e["action"], e["outcome"]) for e in json.loads(r.out)]
    assert outcomes.count(("get", "denied")) == 2
    assert ("grant", "denied") in outcomes


def test_grant_until_in_the_past(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        yesterday = (vault.clock() - timedelta(days=1)).strftime("%Y-%m-%d")
        an_hour_ago = (vault.clock() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        for until in (yesterday, an_hour_ago, "2001-01-01"):
            with pytest.raises(InvalidInput) as ei:
                v.engagements.grant(engagement, "carol", "engineer", until=until)
            assert ei.value.exit_code == 2
        for bad in ("tomorrow", "2030-13-01", "2030-01-01 10:00"):
            with pytest.raises(InvalidInput):
                v.engagements.grant(engagement, "carol", "engineer", until=bad)
        roles = {g.member: (g.role, g.expires_at) for g in v.engagements.members(engagement)}
        assert roles["carol"] == ("reader", None)
        # A future date is accepted and shown.
        until = (vault.clock() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
        g = v.engagements.grant(engagement, "carol", "engineer", until=until)
        assert g.expires_at is not None
        assert g.expires_at.startswith(until)


def test_unknown_role_is_invalid_input(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        for role in ("admin", "owner", "LEAD", "", "recovery", "lead ", "@recovery"):
            with pytest.raises(InvalidInput) as ei:
                v.engagements.grant(engagement, "carol", role)
            assert ei.value.exit_code == 2
            with pytest.raises(InvalidInput):
                v.recover(engagement, vault.recovery_key, "carol", role)
        roles = {g.member: g.role for g in v.engagements.members(engagement)}
        assert roles["carol"] == "reader"
        assert not v.audit_entries(action="recover")


def test_grant_errors_via_cli(cli_vault: CliRunner) -> None:
    r = cli_vault("grant", ENG, "bob", "wizard")
    assert r.code == 2, r.err
    assert r.err.startswith("credvault: ")
    assert r.err.count("\n") == 1
    r = cli_vault("grant", ENG, "bob", "engineer", "--until", "2001-01-01")
    assert r.code == 2, r.err
    r = cli_vault("engagement", "members", ENG, "--json")
    assert r.code == 0, r.err
    assert [g["member"] for g in json.loads(r.out)] == ["alice"]
    r = cli_vault("grant", ENG, "bob", "engineer", "--until", "2999-01-01")
    assert r.code == 0, r.err
    r = cli_vault("engagement", "members", ENG, "--json")
    got = {g["member"]: g for g in json.loads(r.out)}
    assert got["bob"]["role"] == "engineer"
    assert got["bob"]["expires_at"].startswith("2999-01-01T23:59")
    assert got["bob"]["has_key"] is True
    r = cli_vault("grant", ENG, "ghost", "engineer")
    assert r.code == 3, r.err


def test_auditor_gets_no_key_and_a_downgrade_rotates(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        eng = v.engagements.get(engagement)
        v.engagements.grant(engagement, "carol", "auditor")
        after = v.engagements.get(engagement)
        # carol could read before: lowering her to auditor rotates the key.
        assert after.key_version == eng.key_version + 1
        assert after.key_fp != eng.key_fp
        info = {g.member: g for g in v.engagements.members(engagement)}
        assert info["carol"].role == "auditor"
        assert not info["carol"].has_key
        row = v._s.store.grant_of(after.id, "carol")
        assert row is not None
        assert row[7] is None
    with vault.open("carol") as v:
        with pytest.raises(AccessDenied):
            v.get(f"{engagement}/web1-root")
        assert [e for e in v.audit_entries(engagement=engagement) if e.action == "grant"]


def _grant_chain(vault: VaultFixture) -> None:
    """alice creates; bob is made lead and grants carol and a rotation (revoking dave)."""
    with vault.open() as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "lead")
    with vault.open("bob") as v:
        v.put(REF, b"hunter2")
        v.engagements.grant(ENG, "carol", "engineer")
        v.engagements.grant(ENG, "dave", "reader")
        v.engagements.revoke(ENG, "dave")  # the key copies are now sealed by bob


@pytest.mark.parametrize("new_role", ["engineer", "reader"])
def test_changing_a_leads_role_keeps_what_they_signed(vault: VaultFixture, new_role: str) -> None:
    _grant_chain(vault)
    with vault.open() as v:
        v.engagements.grant(ENG, "bob", new_role)  # bob keeps a reading role
    readers: list[tuple[str, Callable[[], Vault]]] = [
        ("alice", lambda: vault.open()),
        ("carol", lambda: vault.open("carol")),
        ("bob", lambda: vault.open("bob")),
    ]
    for who, opener in readers:
        with opener() as v:
            assert v.get(REF).secret.reveal() == b"hunter2", who
