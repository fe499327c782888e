"""The public facade (issue 10): everything a front end needs is a public name of
``credvault`` or a sub-object of ``Vault``; ``Conflict`` is its own error, apart from I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

import credvault
from conftest import VaultFixture
from credvault import Conflict, CredvaultError, StoreError, Vault


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
