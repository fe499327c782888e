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
