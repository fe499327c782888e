"""Backups (issue 5): one private, encrypted file; restore into a new directory only, and
never bringing back what is past its purge date; old backups pruned after the retention.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import (
    AccessDenied,
    AlreadyExists,
    CredvaultError,
    IntegrityError,
    NotAVault,
    Passphrase,
    Purged,
    Vault,
)
from credvault.layout import default_backup_dir
from test_purge import decrypted_pages

ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


def do_restore(vf: VaultFixture, file: Path, target: Path, member: str = "alice") -> list[str]:
    return Vault.restore(
        file, target, member, Passphrase(PASSWORDS[member]), kdf=KDF, clock=vf.clock
    )


def _stamp(vf: VaultFixture, days_ago: float) -> str:
    return (vf.clock.now - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def test_backup_is_private_and_restores(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    with open_as(vault) as v:
        file, pruned = v.backups.create()
        vault_id = v.vault_id
    assert pruned == 0
    assert file.parent == default_backup_dir(vault.path)
    assert re.fullmatch(rf"credvault-backup-{vault_id}-\d{{8}}T\d{{6}}Z\.cvb", file.name)
    assert file.stat().st_mode & 0o777 == 0o600
    assert file.parent.stat().st_mode & 0o777 == 0o700
    ledger = f"credvault-ledger-{vault_id}.jsonl"  # the record of destruction, beside it
    assert sorted(p.name for p in file.parent.iterdir()) == sorted([file.name, ledger])
    assert b"hunter2" not in file.read_bytes()

    target = tmp_path / "restored"
    assert do_restore(vault, file, target) == []
    assert {p.name for p in target.iterdir()} >= {"vault.db", "keyslots.json"}
    assert (target / "vault.db").stat().st_mode & 0o777 == 0o600
    with Vault.open(target, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v:
        assert v.vault_id == vault_id
        assert v.get(REF).secret.reveal() == b"hunter2"
    with Vault.open(target, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        restored = v.audit_entries(action="restore")
        assert len(restored) == 1
        assert f"from {file.name}; 0 engagements purged at once" in restored[0].detail
        v.audit_verify()
        assert v.integrity_check() == []


def test_backup_then_shred_then_restore_after_the_purge_date(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    with open_as(vault) as v:
        v.engagements.create("other-2026", "globex")
        v.put("other-2026/keep", b"globex-secret")
        v.engagements.close(ENG)  # purge due in 7 days
        (env,) = [
            bytes(r[0])
            for r in v._s.store.conn.execute(
                "SELECT secret_env FROM credentials WHERE name = 'web1-root'"
            )
        ]
        db_key = v._s.db_key
        file, _ = v.backups.create()
        v.purger.shred(ENG)  # the client asked: gone from the live vault at once

    # restored before the purge date: the shred's record (the ledger beside the backups and
    # in the live vault) destroys it again at once; nothing comes back (issue 12)
    early = tmp_path / "early"
    vault.clock.advance(days=1)
    assert do_restore(vault, file, early) == [ENG]
    with Vault.open(early, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v:
        assert v.engagements.get(ENG, allow_purged=True).state == "purged"

    # restored after it: purged at once, nothing of it left in the new files
    late = tmp_path / "late"
    vault.clock.advance(days=7)
    assert do_restore(vault, file, late) == [ENG]
    assert env not in decrypted_pages(late, db_key)
    # bob used the first restored copy: this one is a fork of it, which he accepts (issue 11)
    with pytest.raises(IntegrityError, match="forked"):
        Vault.open(late, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock)
    assert Vault.accept_witness(late, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock)
    with (
        Vault.open(late, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v,
        pytest.raises(Purged),
    ):
        v.get(REF)
    with Vault.open(late, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        receipt = v.purger.receipt(ENG).to_json()
        assert receipt["reason"] == "destroyed after this backup was made"
        assert "automatic" in str(receipt["purged_by"])
        assert v.get("other-2026/keep").secret.reveal() == b"globex-secret"
        restore_entry = v.audit_entries(action="restore")[-1]
        assert f"destroyed again: {ENG}" in restore_entry.detail


def test_backup_pruning_by_name_and_clock(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    with open_as(vault) as v:
        vid = v.vault_id
    other_vid = "0" * 32
    old = directory / f"credvault-backup-{vid}-{_stamp(vault, 40)}.cvb"
    recent = directory / f"credvault-backup-{vid}-{_stamp(vault, 10)}.cvb"
    foreign = directory / f"credvault-backup-{other_vid}-{_stamp(vault, 400)}.cvb"
    unrelated = directory / "notes-credvault-backup.txt"
    lookalike = directory / f"credvault-backup-{vid}-{_stamp(vault, 400)}.cvb.bak"
    for f in (old, recent, foreign, unrelated, lookalike):
        f.write_bytes(b"x")

    with open_as(vault) as v:
        first, pruned = v.backups.create(directory)
    assert pruned == 1
    assert not old.exists()
    assert all(f.exists() for f in (recent, foreign, unrelated, lookalike, first))

    vault.clock.advance(days=31)  # now the first backup and "recent" are old too
    with open_as(vault) as v:
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")  # a month unused: confirm
        second, pruned = v.backups.create(directory)
        assert pruned == 2
        assert not first.exists()
        assert not recent.exists()
        assert all(f.exists() for f in (foreign, unrelated, lookalike, second))
        v.set_setting("backup-retention-days", "5")
        vault.clock.advance(days=6)
        third, pruned = v.backups.create(directory)
        assert (pruned, second.exists(), third.exists()) == (1, False, True)
        assert "1 old backups pruned" in v.audit_entries(action="backup")[-1].detail


def test_purge_runs_prune_old_default_backups(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        file, _ = v.backups.create()
    vault.clock.advance(days=29)
    with open_as(vault) as v:
        v.purge()
    assert file.exists()
    vault.clock.advance(days=2)
    with open_as(vault) as v:
        v.purge()
        assert v.audit_entries(action="backup-prune")
    assert not file.exists()


def test_backup_is_for_admins(vault: VaultFixture, engagement: str, tmp_path: Path) -> None:
    with open_as(vault, "bob") as v, pytest.raises(AccessDenied):
        v.backups.create(tmp_path / "b")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_one_backup_per_second(vault: VaultFixture, tmp_path: Path) -> None:
    with open_as(vault) as v:
        v.backups.create(tmp_path / "b")
        with pytest.raises(AlreadyExists):
            v.backups.create(tmp_path / "b")


def test_restore_refuses_a_non_empty_directory(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    with open_as(vault) as v:
        file, _ = v.backups.create()
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(AlreadyExists) as ei:
        do_restore(vault, file, target)
    assert "not empty" in str(ei.value)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "mine"
    with pytest.raises(AlreadyExists):  # and certainly not over the live vault
        do_restore(vault, file, vault.path)
    with open_as(vault, "bob") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"


def test_restore_of_something_else_is_a_clear_error(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.cvb"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(NotAVault) as ei:
        do_restore(vault, junk, tmp_path / "t1")
    assert "not a credvault backup" in str(ei.value)
    assert not (tmp_path / "t1").exists()
    with pytest.raises(NotAVault) as ei:
        do_restore(vault, tmp_path / "missing.cvb", tmp_path / "t2")
    assert "no such backup file" in str(ei.value)
    empty = tmp_path / "empty.cvb"
    empty.write_bytes(b"")
    with pytest.raises(NotAVault):
        do_restore(vault, empty, tmp_path / "t3")

    # a real backup cut short: refused, and nothing half-restored is left behind
    with open_as(vault) as v:
        file, _ = v.backups.create()
    data = file.read_bytes()
    cut = tmp_path / "cut.cvb"
    cut.write_bytes(data[: len(data) - 8192])
    target = tmp_path / "t4"
    with pytest.raises(CredvaultError):
        do_restore(vault, cut, target)
    assert not (target / "vault.db").exists()
    assert not (target / "keyslots.json").exists()


def test_backup_into_a_shared_directory_leaves_its_mode(
    vault: VaultFixture, tmp_path: Path
) -> None:
    shared = tmp_path / "srv-backups"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "other-tool.tar").write_bytes(b"x")
    with open_as(vault) as v:
        file, _ = v.backups.create(shared)
    assert file.stat().st_mode & 0o777 == 0o600
    assert shared.stat().st_mode & 0o777 == 0o755


@pytest.mark.cli
def test_cli_backup_and_restore(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    cli = cli_vault
    r = cli("put", f"{ENG}/db", input=b"pg\n")
    assert r.code == 0, r.err
    base = Path(cli_env["CREDVAULT_VAULT"]).parent
    r = cli("backup", str(base / "bk"))
    assert r.code == 0, r.err
    files = list((base / "bk").glob("credvault-backup-*.cvb"))
    assert len(files) == 1
    assert str(files[0]) in r.text
    assert files[0].stat().st_mode & 0o777 == 0o600

    target = base / "restored"
    r = cli("restore", str(files[0]), "--vault", str(target))
    assert r.code == 0, r.err
    assert "restored into" in r.text
    r = cli("get", f"{ENG}/db", "--vault", str(target))
    assert (r.code, r.out) == (0, b"pg\n")

    r = cli("restore", str(files[0]), "--vault", str(target))
    assert r.code == 1
    assert "not empty" in r.err
    junk = base / "junk.cvb"
    junk.write_text("hello")
    r = cli("restore", str(junk), "--vault", str(base / "t"))
    assert r.code == 1
    assert "not a credvault backup" in r.err
    assert len(r.err.strip().splitlines()) == 1

    # alice's witness followed the restored copy: the original is now a fork of it (issue
    # 11) until she says she means to go on with it
    r = cli("audit", "--json", "--action", "backup")
    assert r.code == 6
    assert "rollback or fork detected for alice: audit entr" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = cli("witness", "accept", "--yes")
    assert r.code == 0, r.err
    r = cli("audit", "--json", "--action", "backup")
    assert len(json.loads(r.out)) == 1


def test_backup_retention_zero_keeps_no_old_backup(vault: VaultFixture, tmp_path: Path) -> None:
    """`config set backup-retention-days 0` means 0, not the default 30 (issue 10): the next
    backup and the next purge prune every older backup, on both paths that prune."""
    directory = tmp_path / "backups"
    with open_as(vault) as v:
        v.set_setting("backup-retention-days", "0")
        assert v.info().settings == {
            "purge-grace-days": 7,
            "audit-retention-days": 365,
            "backup-retention-days": 0,
            "trash-days": 30,
        }
        first, pruned = v.backups.create(directory)
    assert (pruned, first.exists()) == (0, True)  # never the backup just written
    vault.clock.advance(days=1)
    with open_as(vault) as v:
        second, pruned = v.backups.create(directory)
    assert (pruned, first.exists(), second.exists()) == (1, False, True)

    with open_as(vault) as v:
        default, _ = v.backups.create()
    vault.clock.advance(days=1)
    with open_as(vault) as v:
        assert v.purger.prune_backups() == 1
    assert not default.exists()


def test_restore_through_the_facade(vault: VaultFixture, engagement: str, tmp_path: Path) -> None:
    """`Vault.restore` is the public restore; the old module function gives the same result."""
    with open_as(vault) as v:
        file, _ = v.backups.create(tmp_path / "b")
    target = tmp_path / "restored"
    assert (
        Vault.restore(
            file, target, "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF, clock=vault.clock
        )
        == []
    )
    with Vault.open(target, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        assert v.get(REF).secret.reveal() == b"hunter2"
        (detail,) = [e.detail for e in v.audit.entries(action="restore")]
        # the restoring member's witness now follows the restored vault; the entry says what
        # it had seen that the backup lacks (the entries written after the backup, issue 11)
        assert re.fullmatch(
            rf"from {re.escape(file.name)}; 0 engagements purged at once; "
            r"witness of alice reset \(audit behind: seen \d+, vault at \d+\)",
            detail,
        ), detail
