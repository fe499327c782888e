"""Restore never resurrects (issue 12, item 2): the signed record of what was destroyed
outlives the database; restore consults the backup's tombstones, the ledger beside the
backups, newer backups in the directory, the live vault's ledger and ledgers the operator
names, destroys at once (and names) every engagement destroyed after the backup, and says
plainly when it found no newer record. Backups stamped in the future are suspect.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import IntegrityError, Passphrase, Purged, Vault
from credvault.backup import prune
from test_purge import decrypted_pages

ENG = "acme-2026"
B = "beta-2026"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


def restore(vf: VaultFixture, file: Path, target: Path, **kw: Any) -> Any:
    return Vault.restore_report(
        file, target, "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF, clock=vf.clock, **kw
    )


def _history(vf: VaultFixture) -> tuple[Path, bytes, bytes]:
    """A backup; then A shredded at the client's request and B purged after its grace."""
    with open_as(vf) as v:
        v.engagements.create(B, "globex")
        v.put(f"{B}/db", b"beta-secret")
        v.engagements.create("keep-2026", "initech")
        v.put("keep-2026/x", b"kept")
        env = v._s.store.conn.execute(
            "SELECT secret_env FROM credentials WHERE name = 'web1-root'"
        ).fetchone()[0]
        key = v._s.db_key
        file, _ = v.backups.create()
    vf.clock.advance(days=1)
    with open_as(vf) as v:
        v.purger.shred(ENG)
        v.engagements.close(B)
    vf.clock.advance(days=11)
    with open_as(vf) as v:  # the admin's open purges B
        assert v.engagements.get(B, allow_purged=True).state == "purged"
    return file, bytes(env), key


def test_after_a_disaster_restore_destroys_again_what_was_destroyed_after_the_backup(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    file, env, key = _history(vault)
    shutil.rmtree(vault.path)  # the live vault and its receipts are gone
    target = tmp_path / "restored"
    r = restore(vault, file, target)
    assert sorted(r.destroyed_after_backup) == [ENG, B]
    assert r.newest_record is not None
    assert any("credvault-ledger-" in p for p in r.looked_in)
    assert env not in decrypted_pages(target, key)
    with (
        Vault.open(target, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v,
        pytest.raises(Purged),
    ):
        v.get(f"{ENG}/web1-root")
    with Vault.open(target, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        assert v.get("keep-2026/x").secret.reveal() == b"kept"
        receipt = v.purger.receipt(ENG)
        assert receipt.reason == "destroyed after this backup was made"
        detail = v.audit.entries(action="restore")[-1].detail
        assert "destroyed again" in detail
        assert ENG in detail
        assert B in detail


def test_a_lone_backup_says_plainly_that_it_found_no_newer_record(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    file, _, _ = _history(vault)
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    copy = alone / file.name
    shutil.copy(file, copy)
    r = restore(vault, copy, tmp_path / "r1")
    assert r.newest_record is None
    assert r.destroyed_after_backup == []
    # the operator names the live vault's ledger: now it is found
    r = restore(vault, copy, tmp_path / "r2", ledgers=[vault.path / "purge-ledger.jsonl"])
    assert sorted(r.destroyed_after_backup) == [ENG, B]


def test_newer_backups_in_the_directory_are_consulted(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    file, _, _ = _history(vault)
    with open_as(vault) as v:
        v.backups.create()  # a newer backup, holding the tombstones
    for ledger in file.parent.glob("credvault-ledger-*"):
        ledger.unlink()
    shutil.rmtree(vault.path)
    r = restore(vault, file, tmp_path / "r")
    assert sorted(r.destroyed_after_backup) == [ENG, B]


def test_a_forged_ledger_line_destroys_nothing(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    file, _, _ = _history(vault)
    ledger = vault.path / "purge-ledger.jsonl"
    lines = ledger.read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["engagement"] = "keep-2026"  # the insider wants another engagement gone
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(file, alone / file.name)
    fake = tmp_path / "forged.jsonl"
    fake.write_text(json.dumps(forged) + "\n")
    r = restore(vault, alone / file.name, tmp_path / "r", ledgers=[fake])
    assert r.destroyed_after_backup == []
    with Vault.open(tmp_path / "r", "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        assert v.get("keep-2026/x").secret.reveal() == b"kept"


def test_future_stamped_backups_are_suspect(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    vault.clock.advance(days=3650)
    with open_as(vault) as v:
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")
        future, _ = v.backups.create(tmp_path / "b")
    vault.clock.advance(days=-3650)
    with pytest.raises(IntegrityError, match="stamped in the future"):
        restore(vault, future, tmp_path / "r")
    old = time.time() - 40 * 86400
    os.utime(future, (old, old))  # written 40 days ago, whatever its name says
    assert (
        prune(future.parent, future.name.split("-")[2], vault.clock.now - timedelta(days=30)) == 1
    )
    assert not future.exists()


def test_cli_restore_names_what_it_destroyed_and_warns_when_alone(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    assert cli("put", f"{ENG}/db", input=b"pg").code == 0
    r = cli("backup")
    assert r.code == 0, r.err
    file = Path(r.text.split("backup written to ")[1].split(";")[0].strip())
    assert cli("engagement", "shred", ENG, "--yes").code == 0
    r = cli("restore", str(file), "--vault", str(tmp_path / "r1"))
    assert r.code == 0, r.err
    assert f"destroyed again now: {ENG}" in r.text
    assert "warning" not in r.err
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(file, alone / file.name)
    r = cli("restore", str(alone / file.name), "--vault", str(tmp_path / "r2"))
    assert r.code == 0, r.err
    assert "no record of destruction newer than this backup" in r.err
    ledger = Path(cli_env["CREDVAULT_VAULT"]) / "purge-ledger.jsonl"
    r = cli(
        "restore", str(alone / file.name), "--vault", str(tmp_path / "r3"), "--ledger", str(ledger)
    )
    assert r.code == 0, r.err
    assert f"destroyed again now: {ENG}" in r.text


def test_the_ledger_beside_backups_never_writes_through_a_planted_symlink(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    with open_as(vault) as v:
        name = f".credvault-ledger-{v.vault_id}.jsonl.{os.getpid()}.tmp"
        (shared / name).symlink_to(victim)
        v.backups.create(shared)
    assert victim.read_text() == "precious"
    assert len(list(shared.glob("credvault-ledger-*.jsonl"))) == 1


# -- engagements closed, held or released after the backup come back in that state ------------
def _closed_after_backup(vf: VaultFixture) -> Path:
    """A backup with ENG active; then ENG closed (7 days' grace); then 12 days pass and the
    live vault is lost before anyone opens it."""
    with open_as(vf) as v:
        file, _ = v.backups.create()
    vf.clock.advance(days=1)
    with open_as(vf) as v:
        v.engagements.close(ENG)
    vf.clock.advance(days=12)
    shutil.rmtree(vf.path)
    return file


def test_an_engagement_closed_after_the_backup_does_not_come_back_active(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    """Without a record of the close, the restored ENG is active again and its purge, due
    five days ago, never comes: the client's data outlives the promise."""
    file = _closed_after_backup(vault)
    r = restore(vault, file, tmp_path / "r")
    assert r.closed_after_backup == [ENG]
    assert r.purged_due == [ENG]  # due since the close + 7 days: destroyed at once
    with Vault.open(tmp_path / "r", "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        eng = v.engagements.get(ENG, allow_purged=True)
        assert eng.state == "purged"
        closes = [e for e in v.audit.entries(action="close") if "after the backup" in e.detail]
        assert [e.engagement for e in closes] == [ENG]
        assert "closed again" in v.audit.entries(action="restore")[-1].detail


def test_a_close_not_yet_due_comes_back_closed_and_takes_no_writes(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    from credvault import RetentionError, Secret

    with open_as(vault) as v:
        file, _ = v.backups.create()
    vault.clock.advance(days=1)
    with open_as(vault) as v:
        v.engagements.close(ENG)
        due = v.engagements.get(ENG).purge_due
    shutil.rmtree(vault.path)
    r = restore(vault, file, tmp_path / "r")
    assert (r.closed_after_backup, r.purged_due) == ([ENG], [])
    with Vault.open(tmp_path / "r", "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v:
        eng = v.engagements.get(ENG)
        assert (eng.state, eng.purge_due) == ("closed", due)
        with pytest.raises(RetentionError):
            v.credentials.put(f"{ENG}/new", Secret(b"x"))


def test_a_hold_set_after_the_backup_is_kept_by_the_restore(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    """The client asked to keep the data after the backup was made: a restore must not
    purge it on the backup's older purge date."""
    with open_as(vault) as v:
        v.engagements.close(ENG)
        file, _ = v.backups.create()
    vault.clock.advance(days=1)
    until = f"{vault.clock.now.year + 2}-01-01"
    with open_as(vault) as v:
        v.engagements.lifecycle.retain(ENG, until, "client keeps it for support")
    vault.clock.advance(days=30)  # the backup's own purge date is long past
    shutil.rmtree(vault.path)
    r = restore(vault, file, tmp_path / "r")
    assert (r.closed_after_backup, r.purged_due) == ([ENG], [])
    with Vault.open(tmp_path / "r", "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock) as v:
        eng = v.engagements.get(ENG)
        assert (eng.state, (eng.hold_until or "")[:10]) == ("closed", until)
        assert v.get(f"{ENG}/web1-root").secret.reveal() == b"hunter2"


def test_a_forged_close_record_changes_nothing(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    """The insider edits the ledger beside the backups to hold ENG until 2099 (so that the
    restore keeps it): the record no longer verifies and the purge happens."""
    file = _closed_after_backup(vault)
    ledger = next(file.parent.glob("credvault-ledger-*.jsonl"))
    lines = ledger.read_text().splitlines()
    out = []
    for line in lines:
        item = json.loads(line)
        if item.get("format") == "credvault-lifecycle-record/1":
            assert item["engagement"] == ENG
            item["hold_until"] = "2099-01-01T00:00:00Z"
            item["purge_due"] = "2099-01-01T00:00:00Z"
        out.append(json.dumps(item))
    ledger.write_text("\n".join(out) + "\n")
    r = restore(vault, file, tmp_path / "r")
    assert r.closed_after_backup == []  # the forged record is ignored...
    assert r.purged_due == []  # ...so ENG is back as the backup had it: active
    # and a close record never passes for a purge receipt (its own signing label)
    from credvault import IntegrityError as IE
    from credvault.receipts import verify_receipt

    with Vault.open(tmp_path / "r", "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        pub = base64.b64decode(v.public_key)
    good = next(json.loads(x) for x in lines if "lifecycle-record" in x)
    with pytest.raises(IE):
        verify_receipt(good, pub)


def test_a_newer_backup_carries_the_close_when_no_ledger_survives(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    with open_as(vault) as v:
        file, _ = v.backups.create()
    vault.clock.advance(days=1)
    with open_as(vault) as v:
        v.engagements.close(ENG)
        v.backups.create()  # newer: ENG closed inside it
    vault.clock.advance(days=12)
    for ledger in file.parent.glob("credvault-ledger-*"):
        ledger.unlink()
    shutil.rmtree(vault.path)
    r = restore(vault, file, tmp_path / "r")
    assert (r.closed_after_backup, r.purged_due) == ([ENG], [ENG])


def test_cli_restore_names_what_it_closed_again(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    r = cli("backup")
    assert r.code == 0, r.err
    file = Path(r.text.split("backup written to ")[1].split(";")[0].strip())
    assert cli("engagement", "close", ENG).code == 0
    r = cli("restore", str(file), "--vault", str(tmp_path / "r1"))
    assert r.code == 0, r.err
    assert f"closed after this backup was made, closed again now (purged when due): {ENG}" in (
        r.text
    )
    r = cli("engagement", "show", ENG, "--vault", str(tmp_path / "r1"))
    assert r.code == 0, r.err
    assert "closed" in r.text


def test_a_longer_grace_set_after_the_backup_is_kept_by_the_restore(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    """The vault's grace period grew after the backup (purge dates moved later): a restore
    keeps the later date rather than purging on the backup's."""
    with open_as(vault) as v:
        v.engagements.close(ENG)  # 7 days' grace
        file, _ = v.backups.create()
    vault.clock.advance(hours=1)
    with open_as(vault) as v:
        v.set_setting("purge-grace-days", "60")
    vault.clock.advance(days=30)
    shutil.rmtree(vault.path)
    r = restore(vault, file, tmp_path / "r")
    assert (r.closed_after_backup, r.purged_due) == ([ENG], [])
    with Vault.open(tmp_path / "r", "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        assert v.engagements.get(ENG).state == "closed"
