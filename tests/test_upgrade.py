"""In-place upgrade of a vault written by the format-1 release (tests/fixtures/vault-format1).

The fixture was made once by ``tests/fixtures/make_format1_vault.py`` with the format-1 code:
alice (admin, passphrase ``alice-pass``), bob (engineer, ``bob-pass``), Argon2id at
``credvault.MIN_KDF``; engagement acme-2026 with system web1 and credentials web1-root and
api-token.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from credvault import MIN_KDF, Vault
from credvault.store import FORMAT_VERSION
from credvault.unlock import Passphrase

FIXTURE = Path(__file__).parent / "fixtures" / "vault-format1"


@pytest.fixture
def old_vault(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    shutil.copytree(FIXTURE, path)
    path.chmod(0o700)
    for f in path.iterdir():
        f.chmod(0o600)
    return path


def test_format1_vault_is_upgraded_in_place_with_a_backup_first(old_vault: Path) -> None:
    with Vault.open(old_vault, "bob", "bob-pass", kdf=MIN_KDF) as v:
        assert v.info()["format"] == FORMAT_VERSION == 2
        c = v.get("acme-2026/web1-root")
        assert c.secret.reveal() == b"format1-secret"
        assert (c.username, c.notes, c.address) == ("root", "rack 4", "203.0.113.10")
        # The new tables work on the upgraded vault: a change keeps the old version.
        v.put("acme-2026/web1-root", b"format2-secret")
        hist = v.credentials.history("acme-2026/web1-root")
        assert [h.version for h in hist] == [1, 2]
        assert v.credentials.get("acme-2026/web1-root", version=1).secret.reveal() == (
            b"format1-secret"
        )
    backups = list((old_vault.parent / "vault-backups").glob("credvault-backup-*.cvb"))
    assert len(backups) == 1
    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        ups = v.audit_entries(action="upgrade")
        assert len(ups) == 1  # once, not on every open
        assert backups[0].name in ups[0].detail
        assert v.audit_verify() > 0


def test_the_backup_taken_before_the_upgrade_restores_the_old_vault(
    old_vault: Path, tmp_path: Path
) -> None:
    from credvault.backup import restore

    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        v.put("acme-2026/api-token", b"changed-after-upgrade")
    (backup,) = (old_vault.parent / "vault-backups").glob("*.cvb")
    target = tmp_path / "restored"
    restore(backup, target, "alice", Passphrase("alice-pass"), kdf=MIN_KDF)
    with Vault.open(target, "alice", "alice-pass", kdf=MIN_KDF) as v:
        assert v.get("acme-2026/api-token").secret.reveal() == b"format1-token"
