"""Backups you can trust (issue 12, item 4): written in full whatever the kernel's short
counts, checked and read back before anything is replaced or pruned; a failed backup prunes
nothing and leaves nothing; crash leftovers are cleaned by age and never count; temporary
files are exclusive and never followed through a symlink; restore targets end 0700; and
``credvault check`` finds damage no command reads, in a live vault or a backup file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import credvault
from conftest import KDF, KDF_ARG, PASSWORDS, CliRunner, VaultFixture
from credvault import AccessDenied, AlreadyExists, Passphrase, Vault
from credvault.backup import TMP_PREFIX
from credvault.layout import default_backup_dir

ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def open_as(vf: VaultFixture, member: str = "alice") -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock)


def _stamp(vf: VaultFixture, days_ago: float) -> str:
    return (vf.clock.now - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def _restores(vf: VaultFixture, file: Path, target: Path) -> bytes:
    Vault.restore(file, target, "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF, clock=vf.clock)
    with Vault.open(target, "bob", PASSWORDS["bob"], kdf=KDF, clock=vf.clock) as v:
        return v.get(REF).secret.reveal()


def test_short_writes_are_completed(
    vault: VaultFixture, engagement: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = []

    def short_write(fd: int, data: Any) -> int:  # what write(2) may do on any call
        calls.append(len(data))
        return real_write(fd, bytes(data[:777]))

    with open_as(vault) as v:
        monkeypatch.setattr(os, "write", short_write)
        file, _ = v.backups.create()
        monkeypatch.undo()
    assert any(n > 777 for n in calls)  # the backup did ask for more than it got
    assert _restores(vault, file, tmp_path / "restored") == b"hunter2"


def _plant_old_backup(vf: VaultFixture, directory: Path, vid: str, source: Path) -> Path:
    old = directory / f"credvault-backup-{vid}-{_stamp(vf, 40)}.cvb"
    old.write_bytes(source.read_bytes())
    return old


def _limited(limit: int) -> None:  # child side: a disk that fills at ``limit`` bytes per file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_at_any_point_prunes_nothing_and_leaves_nothing(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    r = cli("put", f"{ENG}/big", input=os.urandom(48 * 1024).hex().encode())
    assert r.code == 0, r.err
    directory = tmp_path / "bk"
    r = cli("backup", str(directory))
    assert r.code == 0, r.err
    (first,) = directory.glob("*.cvb")
    size = first.stat().st_size
    vid = first.name.split("-")[2]
    old = directory / f"credvault-backup-{vid}-20000101T000000Z.cvb"  # past any retention
    first.rename(old)
    old_bytes = old.read_bytes()
    # No coverage in the size-limited child: its data file would be cut short too.
    env = {k: v for k, v in cli_env.items() if not k.startswith("COVERAGE_")}
    for limit in sorted({size // 8 * k for k in range(1, 8)} | {size - 1, size - 4096 - 1}):
        p = subprocess.run(
            [sys.executable, "-m", "credvault", "backup", str(directory)],
            env=env,
            capture_output=True,
            preexec_fn=lambda limit=limit: _limited(limit),  # type: ignore[misc]
            start_new_session=True,
            timeout=60,
        )
        names = sorted(f.name for f in directory.iterdir() if "-ledger-" not in f.name)
        assert p.returncode == 1, (limit, p.returncode, p.stderr)
        assert names == [old.name], (limit, names, p.stderr)  # nothing new, nothing pruned
        assert old.read_bytes() == old_bytes
    # and without the limit it succeeds, is complete, and prunes the old one
    r = cli("backup", str(directory))
    assert r.code == 0, r.err
    (latest,) = directory.glob("*.cvb")
    assert latest.stat().st_size >= size
    r = cli("check", str(latest))
    assert r.code == 0, r.err


def _corrupt_unread_page(vault_dir: Path, env: dict[str, str]) -> None:
    """Flip a byte in a page that opening the vault and listing the engagement never read
    (found by trying, from the end of the file, where the bulk rows are)."""
    db = vault_dir / "vault.db"
    clean = db.read_bytes()
    for off in range(len(clean) - 4096 + 1000, 4096, -4096):
        data = bytearray(clean)
        data[off] ^= 0x55
        db.write_bytes(bytes(data))
        p = subprocess.run(
            [sys.executable, "-m", "credvault", "ls", ENG], env=env, capture_output=True
        )
        if p.returncode == 0:
            return
    raise AssertionError("every page is read by ls")


def test_damaged_page_is_found_by_check_and_stops_the_backup(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    r = cli("check")
    assert r.code == 0, r.err
    assert "sound" in r.text
    assert "audit chain" in r.text
    directory = tmp_path / "bk"
    assert cli("backup", str(directory)).code == 0
    (good,) = directory.glob("*.cvb")
    vid = good.name.split("-")[2]
    old = directory / f"credvault-backup-{vid}-20000101T000000Z.cvb"
    good.rename(old)
    vault_dir = Path(cli_env["CREDVAULT_VAULT"])
    r = cli("engagement", "new", "other-2026", "--client", "globex")
    assert r.code == 0, r.err
    rows = "".join(f"c{i},{'y' * 300}\n" for i in range(60))  # bulk rows: one process
    src = tmp_path / "bulk.csv"
    src.write_text("name,secret\n" + rows)
    r = cli("import", "other-2026", str(src), "--format", "csv", "--map", "name=name,secret=secret")
    assert r.code == 0, r.err
    assert cli("ls", ENG).code == 0
    _corrupt_unread_page(vault_dir, cli_env)  # ordinary use does not notice

    r = cli("check")
    assert r.code == 6, (r.code, r.err)
    assert "page" in r.err or "corrupt" in r.err

    r = cli("backup", str(directory))
    assert r.code == 6, (r.code, r.err)
    left = sorted(f.name for f in directory.iterdir() if "-ledger-" not in f.name)
    assert left == [old.name]  # nothing pruned, nothing left


def test_check_of_a_backup_file(
    vault: VaultFixture, engagement: str, tmp_path: Path, cli: CliRunner
) -> None:
    with open_as(vault) as v:
        file, _ = v.backups.create()
    before = file.read_bytes()
    report = credvault.check(file, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock)
    assert report.ok, report.problems
    assert any("audit chain" in c for c in report.checked)
    assert file.read_bytes() == before  # checking changes nothing in the backup

    damaged = tmp_path / "damaged.cvb"
    data = bytearray(before)
    data[-4096 + 500] ^= 1
    damaged.write_bytes(bytes(data))
    report = credvault.check(damaged, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock)
    assert not report.ok
    truncated = tmp_path / "truncated.cvb"
    truncated.write_bytes(before[:-3000])
    report = credvault.check(truncated, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock)
    assert not report.ok
    assert report.problems[0].startswith("backup file:")


def test_check_finds_an_insider_edit_of_the_audit_trail(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v._s.store.conn.execute("UPDATE audit SET detail = 'nothing to see' WHERE seq = 3")
        report = v.check()
    assert [p for p in report.problems if p.startswith("audit chain")], report
    with open_as(vault) as v:
        assert v.audit_entries(action="check")[-1].outcome == "error"


def test_check_is_for_admins_and_services(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault, "bob") as v, pytest.raises(AccessDenied):
        v.check()
    with open_as(vault) as v:
        assert v.audit_entries(action="check")[-1].outcome == "denied"


def test_crash_leftovers_are_cleaned_by_age_and_never_count(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    directory = tmp_path / "bk"
    directory.mkdir()
    with open_as(vault) as v:
        vid = v.vault_id
    old_time = time.time() - 7 * 3600
    leftovers = []
    for name in (f"{TMP_PREFIX}{vid}-abcd", ".tmp-x1y2"):  # ours, and main's older naming
        d = directory / name
        d.mkdir()
        (d / "db").write_bytes(b"a full copy of the database")
        os.utime(d, (old_time, old_time))
        leftovers.append(d)
    part = directory / f".credvault-backup-{vid}-{_stamp(vault, 2)}.cvb.part"
    part.write_bytes(b"half a backup")
    os.utime(part, (old_time, old_time))
    leftovers.append(part)
    young = directory / f"{TMP_PREFIX}{vid}-young"
    young.mkdir()  # a killed backup of this vault: under the directory lock, whatever its age
    legacy_young = directory / ".tmp-young"
    legacy_young.mkdir()  # an older credvault's, which took no lock: perhaps running now
    (legacy_young / "db").write_bytes(b"a copy being written")
    foreign = directory / ".tmp-someone-else"
    foreign.mkdir()
    (foreign / "notes").write_text("not ours")
    os.utime(foreign, (old_time, old_time))

    with open_as(vault) as v:
        file, pruned = v.backups.create(directory)
    assert pruned == 0
    assert not any(p.exists() for p in leftovers)
    assert not young.exists()
    assert legacy_young.exists()
    assert foreign.exists()
    assert file.exists()


def test_temporary_files_are_exclusive_and_never_follow_a_symlink(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o777)
    directory.chmod(0o1777)  # a shared backup directory
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    with open_as(vault) as v:
        vid = v.vault_id
        stamp = vault.clock.now.strftime("%Y%m%dT%H%M%SZ")
        name = f"credvault-backup-{vid}-{stamp}.cvb"
        (directory / f".{name}.part").symlink_to(victim)  # where main wrote through
        file, _ = v.backups.create(directory)
        assert victim.read_bytes() == b"precious"
        assert file.stat().st_mode & 0o777 == 0o600
        # a file planted under the final name is never replaced
        vault.clock.advance(seconds=1)
        stamp = vault.clock.now.strftime("%Y%m%dT%H%M%SZ")
        planted = directory / f"credvault-backup-{vid}-{stamp}.cvb"
        planted.symlink_to(victim)
        with pytest.raises(AlreadyExists):
            v.backups.create(directory)
    assert victim.read_bytes() == b"precious"
    assert not [p for p in directory.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_restore_target_ends_0700(vault: VaultFixture, engagement: str, tmp_path: Path) -> None:
    with open_as(vault) as v:
        file, _ = v.backups.create()
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o777)
    assert _restores(vault, file, target) == b"hunter2"
    assert target.stat().st_mode & 0o777 == 0o700
    assert file.parent == default_backup_dir(vault.path)


def test_cli_check_exit_codes(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    r = cli_vault("check", "--json")
    assert r.code == 0, r.err
    assert '"problems": []' in r.text
    r = cli_vault(
        "check",
        env={"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]},
    )
    assert r.code == 4, r.err
    assert KDF_ARG  # the CLI vault uses the cheap parameters
