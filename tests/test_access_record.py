"""Every access on the record (issue 12, item 5): listings of members, receipts and status
append an entry; reads of client data take a reason where the engagement requires one.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import KDF, PASSWORDS, VaultFixture
from credvault import AccessDenied, Vault

ENG = "acme-2026"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


def _last(vf: VaultFixture, action: str) -> Any:
    with open_as(vf) as v:
        es = v.audit.entries(action=action)
    assert es, action
    return es[-1]


def test_member_and_engagement_listings_status_and_receipts_are_audited(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault, "bob") as v:
        assert {g.member for g in v.engagements.members(ENG)} >= {"alice", "bob", "carol"}
        v.members.list()
        v.status()
    e = _last(vault, "engagement-members")
    assert (e.member, e.engagement, e.outcome) == ("bob", ENG, "ok")
    assert _last(vault, "member-ls").member == "bob"
    assert _last(vault, "status").member == "bob"
    with open_as(vault) as v:
        v.purger.shred(ENG)
        v.purger.receipt(ENG)
    e = _last(vault, "receipt")
    assert (e.member, e.engagement) == ("alice", ENG)


def test_system_show_takes_a_reason_and_requires_it_where_the_engagement_does(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v.engagements.set_options(ENG, require_reason=True)
    with open_as(vault, "bob") as v:
        with pytest.raises(AccessDenied):
            v.systems.show(f"{ENG}/web1")
        assert v.systems.show(f"{ENG}/web1", reason="TICKET-9").address == "10.0.0.1"
    e = _last(vault, "system-show")
    assert (e.member, e.outcome, e.detail) == ("bob", "ok", "reason: TICKET-9")


def test_client_export_takes_a_reason_and_tombstones_are_for_admins(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v.engagements.set_options(ENG, require_reason=True)
        with pytest.raises(AccessDenied):
            v.clients.export("acme")
        doc = v.clients.export("acme", reason="client asked, TICKET-7")
        assert doc["client"] == "acme"
    assert "reason: client asked, TICKET-7" in _last(vault, "export").detail
    with open_as(vault) as v:
        v.purger.shred(ENG)
    with open_as(vault, "bob") as v, pytest.raises(AccessDenied):  # no role left anywhere
        v.clients.export("acme")
    with open_as(vault) as v:
        v.clients.export("acme")
    e = _last(vault, "export")
    assert (e.member, e.item, e.outcome) == ("alice", "acme", "ok")


def test_reading_a_field_is_not_reading_the_secret(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    with open_as(vault, "bob") as v:
        assert v.credentials.fields(f"{ENG}/web1-root")["username"] == "root"
    e = _last(vault, "show")
    assert (e.member, e.item) == ("bob", "web1-root")
    with open_as(vault) as v:
        assert v.engagements.revoke(ENG, "bob") == []  # nothing to rotate: no secret seen
    env = {"CREDVAULT_MEMBER": "carol", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_CAROL"]}
    r = cli("get", f"{ENG}/web1-root", "--field", "username", "--vault", str(vault.path), env=env)
    assert r.code == 0, r.err
    assert r.out == b"root\n"
    assert _last(vault, "show").member == "carol"
    with open_as(vault) as v:
        assert [x for x in v.audit.entries(action="get") if x.member == "carol"] == []


# -- the role before the state; refusals on the record -----------------------------------------
def _entries(vf: VaultFixture, member: str) -> list[tuple[str, str | None, str | None, str]]:
    with open_as(vf) as v:
        return [
            (e.action, e.engagement, e.item, e.outcome)
            for e in v.audit.entries()
            if e.member == member
        ]


def test_a_write_to_a_closed_engagement_without_the_role_is_denied_not_a_state_error(
    vault: VaultFixture, engagement: str
) -> None:
    """spec §3 / issue 12 item 5: the role check comes first. carol (reader) and dave (no
    grant) writing to a closed engagement get AccessDenied, audited as denied; the lead gets
    the state error, itself on the record."""
    from credvault import RetentionError, Secret

    with open_as(vault) as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
        v.engagements.close(ENG)
    for member, held in (("carol", "role reader"), ("dave", "no grant")):
        with open_as(vault, member) as v:
            with pytest.raises(AccessDenied, match=held):
                v.credentials.put(f"{ENG}/new", Secret(b"x"))
            with pytest.raises(AccessDenied):
                v.systems.add(f"{ENG}/web2", "10.0.0.2")
            with pytest.raises(AccessDenied):
                v.credentials.remove(f"{ENG}/web1-root")
            with pytest.raises(AccessDenied):
                v.engagements.grant(ENG, "alice", "reader")
        got = _entries(vault, member)
        assert ("put", ENG, "new", "denied") in got
        assert ("system add", ENG, "web2", "denied") in got
        assert ("rm", ENG, "web1-root", "denied") in got
        assert ("grant", ENG, "alice", "denied") in got
    with open_as(vault, "bob") as v, pytest.raises(RetentionError, match="closed"):
        v.credentials.put(f"{ENG}/new", Secret(b"x"))  # engineer: the state is the reason
    assert ("put", ENG, "new", "error") in _entries(vault, "bob")


def test_a_closed_engagement_write_without_the_role_exits_4_on_the_cli(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    with open_as(vault) as v:
        v.engagements.close(ENG)
    env = {"CREDVAULT_MEMBER": "carol", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_CAROL"]}
    r = cli("put", f"{ENG}/new", "--vault", str(vault.path), input=b"pw\n", env=env)
    assert r.code == 4, r.err
    assert "access denied" in r.err
    assert "closed" not in r.err
    env["CREDVAULT_MEMBER"], env["CREDVAULT_PASSPHRASE_FILE"] = "bob", cli_env["TEST_PASS_BOB"]
    r = cli("put", f"{ENG}/new", "--vault", str(vault.path), input=b"pw\n", env=env)
    assert r.code == 1, r.err  # unchanged for a member who may write
    assert "is closed" in r.err


def test_attempts_on_purged_and_unknown_engagements_are_on_the_record(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    from credvault import NotFound, Purged

    with open_as(vault) as v:
        v.purger.shred(ENG)
    with open_as(vault, "bob") as v:
        with pytest.raises(Purged):
            v.get(f"{ENG}/web1-root")
        with pytest.raises(Purged):
            v.credentials.list(ENG)
        with pytest.raises(NotFound):
            v.get("nosuch-2026/x")
    got = [e for e in _entries(vault, "bob") if e[0] == "access"]
    assert got == [
        ("access", ENG, None, "error"),
        ("access", ENG, None, "error"),
        ("access", "nosuch-2026", None, "error"),
    ]
    env = {"CREDVAULT_MEMBER": "carol", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_CAROL"]}
    r = cli("get", f"{ENG}/web1-root", "--vault", str(vault.path), env=env)
    assert r.code == 3, r.err
    assert "purged" in r.err
    with open_as(vault) as v:
        e = [x for x in v.audit.entries(action="access") if x.member == "carol"][-1]
    assert (e.engagement, e.outcome) == (ENG, "error")
    assert e.detail.startswith("engagement purged on ")


def test_get_field_address_and_port_are_not_reads_of_the_secret(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    env = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    for field, want in (("address", b"10.0.0.1\n"), ("port", b"22\n")):
        r = cli("get", f"{ENG}/web1-root", "--field", field, "--vault", str(vault.path), env=env)
        assert (r.code, r.out) == (0, want), r.err
    with open_as(vault) as v:
        bob = [e for e in v.audit.entries(engagement=ENG) if e.member == "bob"]
    assert [e.action for e in bob] == ["show", "show"]
    assert all("address and port, without the secret" in e.detail for e in bob)
    with open_as(vault) as v:  # nothing to rotate: bob never saw the password
        report = v.engagements.revoke(ENG, "bob")
    assert report == []
    assert report.viewed == ("web1-root",)


def test_get_field_of_an_earlier_version_is_not_a_read_of_its_secret(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    """``get --version N --field username`` shows that version's field, audited as ``show``:
    revoke does not ask to change a secret (of any version) bob never saw."""
    with open_as(vault) as v:
        v.put(f"{ENG}/api", b"tok-1", username="svc-old")
        v.put(f"{ENG}/api", b"tok-2", username="svc-new")
    env = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    args = ("get", f"{ENG}/api", "--version", "1", "--vault", str(vault.path))
    r = cli(*args, "--field", "username", env=env)
    assert (r.code, r.out) == (0, b"svc-old\n"), r.err
    r = cli("get", f"{ENG}/api", "--version", "9", "--field", "username",
            "--vault", str(vault.path), env=env)  # fmt: skip
    assert r.code == 3
    with open_as(vault) as v:
        bob = [e for e in v.audit.entries(engagement=ENG) if e.member == "bob"]
    assert [(e.action, e.outcome) for e in bob] == [("show", "ok"), ("show", "error")]
    assert "version 1: fields without the secret" in bob[0].detail
    with open_as(vault) as v:
        report = v.engagements.revoke(ENG, "bob")
    assert report == []
    assert report.viewed == ("api",)


def test_get_field_address_of_a_credential_without_a_system_is_not_found(
    vault: VaultFixture, engagement: str, cli: Any
) -> None:
    with open_as(vault) as v:
        v.put(f"{ENG}/api", b"tok")
    r = cli("get", f"{ENG}/api", "--field", "address", "--vault", str(vault.path))
    assert (r.code, r.out) == (3, b""), r.err
    assert "has no address" in r.err


def test_revoke_lists_secrets_to_change_apart_from_records_only_viewed(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    with open_as(vault) as v:
        v.put(f"{ENG}/api", b"tok", username="svc")
    with open_as(vault, "bob") as v:
        v.get(f"{ENG}/api")  # a secret: must be changed
        v.credentials.fields(f"{ENG}/web1-root")  # only the username: viewed
        v.systems.show(f"{ENG}/web1")  # a system: no secret
    r = cli("revoke", ENG, "bob", "--vault", str(vault.path))
    assert r.code == 0, r.err
    assert r.text.splitlines() == [
        f"revoked bob on {ENG}; engagement key rotated",
        "bob read these; change them on the client's systems:",
        f"  {ENG}/api",
        "bob only viewed these (no secret read; nothing to change):",
        f"  {ENG}/web1",
        f"  {ENG}/web1-root",
    ]
    with open_as(vault) as v:
        e = v.audit.entries(action="revoke")[-1]
    assert e.detail == "1 credentials to change; 2 viewed"


def test_find_says_on_stderr_what_it_did_not_search(
    vault: VaultFixture, engagement: str, cli: Any, cli_env: dict[str, str]
) -> None:
    with open_as(vault) as v:
        v.engagements.set_options(ENG, require_reason=True)
    env = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    r = cli("find", "debian", "--vault", str(vault.path), env=env)
    assert r.code == 0, r.err
    assert r.err == (
        f"credvault: fields of 1 engagement not searched (names only): {ENG} requires --reason\n"
    )
    assert b"web1" not in r.out  # the match is in the details, which were not searched
    r = cli("find", "debian", "--reason", "T-1", "--vault", str(vault.path), env=env)
    assert (r.code, r.err) == (0, "")
    assert b"web1" in r.out
    with open_as(vault, "bob") as v:
        assert v.credentials.find("debian").skipped == (ENG,)
        assert v.credentials.find("debian", reason="T-2").skipped == ()
    # and `system show` on the command line obeys the same setting
    r = cli("system", "show", f"{ENG}/web1", "--vault", str(vault.path), env=env)
    assert (r.code, r.out) == (4, b""), r.err
    assert "requires --reason" in r.err
    r = cli("system", "show", f"{ENG}/web1", "--reason", "T-3", "--vault", str(vault.path), env=env)
    assert r.code == 0, r.err
    assert b"10.0.0.1" in r.out


def test_refusals_by_state_and_attempts_that_find_nothing_are_on_the_record(
    vault: VaultFixture, engagement: str
) -> None:
    from credvault import NotFound, RetentionError

    with open_as(vault) as v:
        with pytest.raises(RetentionError):
            v.engagements.lifecycle.retain(ENG, "2099-01-01", "support")  # still active
        with pytest.raises(RetentionError):
            v.engagements.lifecycle.release(ENG)  # no hold
        v.engagements.close(ENG)
        with pytest.raises(RetentionError):
            v.engagements.close(ENG)  # already closed
    with open_as(vault, "bob") as v:
        with pytest.raises(NotFound):
            v.systems.show(f"{ENG}/nosuch")
        with pytest.raises(NotFound):
            v.credentials.history(f"{ENG}/nosuch")
    got = [(a, i, o) for a, e, i, o in _entries(vault, "alice") if o == "error"]
    assert got == [("retain", None, "error"), ("release", None, "error"), ("close", None, "error")]
    assert [(a, i, o) for a, e, i, o in _entries(vault, "bob") if o == "error"] == [
        ("system-show", "nosuch", "error"),
        ("history", "nosuch", "error"),
    ]
