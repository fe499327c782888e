"""In-place upgrade of a vault written by the format-1 release (tests/fixtures/vault-format1).

The fixture was made once by ``tests/fixtures/make_format1_vault.py`` with the format-1 code:
alice (admin, passphrase ``alice-pass``), bob (engineer, ``bob-pass``), Argon2id at
``credvault.MIN_KDF``; engagement acme-2026 with system web1 and credentials web1-root and
api-token.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_fixture_vault
from credvault import MIN_KDF, AccessDenied, IntegrityError, Vault
from credvault.store import FORMAT_VERSION
from credvault.unlock import Passphrase
from killpoints import KILL_HOOK, without_coverage

FIXTURE = Path(__file__).parent / "fixtures" / "vault-format1"


@pytest.fixture
def old_vault(tmp_path: Path) -> Path:
    return copy_fixture_vault(FIXTURE, tmp_path / "vault")


def test_format1_vault_is_upgraded_in_place_with_a_backup_first(old_vault: Path) -> None:
    with Vault.open(old_vault, "bob", "bob-pass", kdf=MIN_KDF) as v:
        assert v.info().format == FORMAT_VERSION == 3
        assert v._s.store.schema_format() == 3  # the member_log table (format 3) is there
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
    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        v.put("acme-2026/api-token", b"changed-after-upgrade")
    (backup,) = (old_vault.parent / "vault-backups").glob("*.cvb")
    target = tmp_path / "restored"
    Vault.restore(backup, target, "alice", Passphrase("alice-pass"), kdf=MIN_KDF)
    with Vault.open(target, "alice", "alice-pass", kdf=MIN_KDF) as v:
        assert v.get("acme-2026/api-token").secret.reveal() == b"format1-token"


UPGRADE_WORKER = (
    KILL_HOOK
    + r"""
from credvault import MIN_KDF, AccessDenied, IntegrityError, Vault

path, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
arm(None if mode == "count" else n, "any")
v = Vault.open(path, "bob", "bob-pass", kdf=MIN_KDF)
lines, ticks = disarm()
print(f"done {lines + ticks} {marks.get('_upgrade', -1)}", flush=True)
v.close()
"""
)


def _run_worker(worker: Path, path: Path, mode: str, n: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(worker), str(path), mode, str(n)],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        check=False,
        # a worker aimed at a kill point dies without writing coverage data; the counting
        # run measures the whole upgrade
        env=without_coverage() if mode != "count" else None,
    )


@pytest.mark.fault
def test_a_kill_anywhere_in_the_upgrade_leaves_a_vault_that_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed at points spread over the upgrade (backup, migration, audit, commit), the vault
    opens afterwards at the current format with its data, and is upgraded exactly once."""
    worker = tmp_path / "worker.py"
    worker.write_text(UPGRADE_WORKER)

    def fresh(name: str) -> Path:
        # each trial is a separate copy of one vault: separate clients, or they are forks
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / f"state-{name}"))
        path = tmp_path / name
        shutil.copytree(FIXTURE, path)
        for f in path.iterdir():
            f.chmod(0o600)
        return path

    probe = _run_worker(worker, fresh("probe"), "count", 0)
    assert probe.returncode == 0, probe.stderr
    _, total, start = probe.stdout.split()
    total_n, start_n = int(total), int(start)
    assert 0 < start_n < total_n
    points = [start_n + (total_n - start_n) * k // 7 for k in range(1, 7)]
    for i, at in enumerate(points):
        path = fresh(f"kill{i}")
        r = _run_worker(worker, path, "kill", at)
        assert r.returncode in (-9, 0), r.stderr
        with Vault.open(path, "bob", "bob-pass", kdf=MIN_KDF) as v:
            assert v.info().format == FORMAT_VERSION
            assert v.get("acme-2026/web1-root").secret.reveal() == b"format1-secret"
        with Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF) as v:
            assert len(v.audit_entries(action="upgrade")) == 1, at
            assert v.audit_verify() > 0


# -- format 3: the membership log of engagements made before it -------------------------------
def _log_rows(path: Path, member: str, pw: str) -> int:
    with Vault.open(path, member, pw, kdf=MIN_KDF) as v:
        eng = v.engagements.get("acme-2026")
        return len(v._s.store.log_links(eng.id))


def test_pre_log_engagement_gets_its_log_from_its_first_leads_next_open(old_vault: Path) -> None:
    """acme-2026 predates the log. bob (engineer) opens first: nothing changes, he reads by
    the pre-log rules. alice (its first lead, named in the admin-signed creation record)
    opens: one transaction writes create, bob's grant and a rotation to a key of alice's own,
    audited; bob reads under the log from then on."""
    with Vault.open(old_vault, "bob", "bob-pass", kdf=MIN_KDF) as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"format1-secret"
        eng = v.engagements.get("acme-2026")
        assert v._s.store.log_head(eng.id) is None
        before = eng.key_fp
    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        eng = v.engagements.get("acme-2026")
        state = v.engagements.grants.log_state(eng)
        assert state is not None
        assert {n: m.role for n, m in state.roster.items()} == {
            "alice": "lead",
            "bob": "engineer",
        }
        assert state.key_version == 1
        assert state.fingerprints[1] == eng.key_fp != before
        (start,) = v.audit_entries(action="memberlog-start")
        assert start.engagement == "acme-2026"
        assert v.audit_verify() > 0
    assert _log_rows(old_vault, "alice", "alice-pass") == 3  # create, grant bob, rotate
    with Vault.open(old_vault, "bob", "bob-pass", kdf=MIN_KDF) as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"format1-secret"
        v.put("acme-2026/web1-root", b"after-the-log")
    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"after-the-log"
        assert len(v.audit_entries(action="memberlog-start")) == 1  # once


def test_deleting_a_bootstrapped_log_gives_no_key_under_the_old_rules(old_vault: Path) -> None:
    """The insider deletes the new log to fall back to the pre-log rules (where clearing
    revoked_at undid a revocation). Copies sealed under the log carry no pre-log copy
    signature, so the old rules open nothing: a denial of service, not a way in."""
    with Vault.open(old_vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
        v.engagements.revoke("acme-2026", "bob")
        v.put("acme-2026/after", b"written-after-revoke")
        eng = v.engagements.get("acme-2026")
        v._s.store.conn.execute("DELETE FROM member_log WHERE engagement_id = ?", (eng.id,))
        v._s.store.conn.execute(
            "UPDATE grants SET revoked_at = NULL, role = 'engineer' WHERE member = 'bob'"
        )
        v._s.store.conn.execute("UPDATE engagements SET needs_rotation = 1")
    with (
        Vault.open(old_vault, "bob", "bob-pass", kdf=MIN_KDF) as v,
        pytest.raises((AccessDenied, IntegrityError)),
    ):
        v.get("acme-2026/after")
