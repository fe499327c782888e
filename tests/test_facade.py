"""The public facade (issue 10): everything a front end needs is a public name of
``credvault`` or a sub-object of ``Vault``; ``Conflict`` is its own error, apart from I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

import credvault
from conftest import VaultFixture
from credvault import Conflict, CredvaultError, StoreError, Vault
from credvault.jcs import canonical


def test_conflict_is_its_own_error() -> None:
    assert issubclass(Conflict, CredvaultError)
    assert not issubclass(Conflict, StoreError)  # StoreError means I/O only
    assert Conflict("x").exit_code == StoreError("x").exit_code == 1
    assert {"Conflict", "StoreError"} <= set(credvault.__all__)


def test_a_write_after_a_rotation_is_a_conflict(vault: VaultFixture, engagement: str) -> None:
    """A key read before another process rotated it must not be used to seal: Conflict,
    and nothing stored."""
    with vault.open() as v:
        stale = v.engagements.get(engagement)
        v.engagements.rotate(engagement)
        expected = pytest.raises(Conflict, match="changed keys meanwhile; nothing was stored")
        with expected, v._s.store.write():
            v.engagements.assert_current(stale)
        v.engagements.assert_current(v.engagements.get(engagement))  # current: no error


def test_audit_sub_object_and_old_methods_agree(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        assert v.audit.verify() == v.audit_verify() - 1  # the first verify is audited too
        head = v.audit.checkpoint()
        assert v.audit.verify(str(head)) > head.position - 1
        assert [e.action for e in v.audit.entries(action="audit-checkpoint")] == [
            "audit-checkpoint"
        ]
        assert (
            v.audit_entries(action="audit-checkpoint")
            == v.audit.entries(action="audit-checkpoint")[:1]
        )


def test_clients_sub_object(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        assert v.clients.engagements("acme") == [engagement]
        data = v.clients.export("acme")
        assert data["client"] == "acme"
        assert data["vault_id"] == v.vault_id
        assert v.clients.shred("acme") == [engagement]
        with pytest.raises(credvault.NotFound, match="nothing left to shred"):
            v.clients.engagements("acme")


def test_keyring_status_and_forget_without_a_cache(vault: VaultFixture, tmp_path: Path) -> None:
    status = Vault.keyring_status(vault.path, "alice")
    assert status == {"unlocked": False, "until": None, "message": "locked (no cached key)"}
    assert Vault.forget_cached_keys(tmp_path / "no-vault", "alice") is False


def test_helpers_a_front_end_needs_are_public(tmp_path: Path) -> None:
    assert credvault.validate_name("bob", "member name") == "bob"
    with pytest.raises(credvault.InvalidInput):
        credvault.validate_name("no spaces", "member name")
    assert credvault.parse_ttl("2h").total_seconds() == 7200
    assert len(credvault.generate_secret(12).reveal()) == 12
    f = tmp_path / "pass"
    f.write_bytes(b"first line\nsecond\n")
    assert credvault.read_passphrase_file(f) == b"first line"
    out = tmp_path / "new"
    credvault.write_new_private(out, b"data")
    assert (out.read_bytes(), out.stat().st_mode & 0o777) == (b"data", 0o600)


def test_results_are_typed_records_whose_json_is_unchanged(
    vault: VaultFixture, engagement: str
) -> None:
    """info, status, show, purge, shred and receipt return records; their ``to_json()`` is
    the document the CLI prints (keys and order as before the records existed)."""
    with vault.open() as v:
        info = v.info()
        assert isinstance(info, credvault.VaultInfo)
        assert list(info.to_json()) == [
            "path",
            "vault_id",
            "format",
            "public_key",
            "created_at",
            "members",
            "key_generation",
            "settings",
        ]
        view = v.engagements.show(engagement)
        assert isinstance(view, credvault.EngagementView)
        assert view.your_role == "lead"
        assert [g["member"] for g in view.to_json()["members"]] == ["alice", "bob", "carol"]  # type: ignore[attr-defined]
        v.engagements.close(engagement)
        status = v.status()
        assert isinstance(status, credvault.VaultStatus)
        assert [s.engagement for s in status.scheduled] == [engagement]
        assert status.to_json()["scheduled"] == [
            {
                "engagement": engagement,
                "purge_due": status.scheduled[0].purge_due,
                "why": status.scheduled[0].why,
            }
        ]
        vault.clock.advance(days=8)
        due = v.purge(dry_run=True)
        assert due == [credvault.PurgePlan(engagement, "acme", due[0].due, "grace")]
        assert due[0].to_json() == {
            "engagement": engagement,
            "client": "acme",
            "due": due[0].due,
            "reason": "grace",
        }
        receipt = v.purger.shred(engagement)
        assert isinstance(receipt, credvault.Receipt)
        assert receipt.destroyed.credentials == 1
        stored = v._s.store.engagement_by_name(engagement)
        assert stored is not None
        # the record gives back exactly the signed document the vault stored
        # stored as its RFC 8785 form (issue 12: receipts format 2)
        assert canonical(receipt.to_json()).decode() == stored.receipt
        assert credvault.Receipt.from_json(receipt.to_json()) == receipt
        assert v.purger.receipt(engagement) == receipt
        assert credvault.verify_receipt(receipt, v.public_key)["engagement"] == engagement
        forged = receipt._replace(destroyed=receipt.destroyed._replace(credentials=0))
        with pytest.raises(credvault.IntegrityError):
            credvault.verify_receipt(forged, v.public_key)
