"""A purge killed with SIGKILL at random points (issue 5): the engagement is either intact
(every secret readable) or purged (tombstone and signed receipt), never half; the next open
finishes an interrupted rewrite (WAL truncated, needs_vacuum cleared) and the vault passes
its integrity check and its audit verification.

Kill points come from the worker's own progress (tests/killpoints.py), never from a clock: it
SIGKILLs itself at the N-th event of the shred, counting either every executed line of
credvault and SQLite progress tick (N random, plus points inside the file rewrite), or SQLite
progress ticks alone, which land inside SQLite calls such as the incremental vacuum that no
Python line tracer can interrupt. A calibration run counts both first.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlcipher3

from conftest import KDF, PASSWORDS, separate_client
from credvault import Purged, RetentionError, Vault, verify_receipt
from killpoints import KILL_HOOK, kill_count, without_coverage
from test_purge import decrypted_pages

pytestmark = pytest.mark.fault

ENG = "acme-2026"
N_CREDS = 150
TRACE_RUNS = kill_count(14, 26)  # 3 fixed points, TRACE_RUNS - 9 random, 6 in the rewrite
SQL_RUNS = kill_count(8, 20)

WORKER = (
    KILL_HOOK
    + r"""
from credvault import MIN_KDF, Vault

path, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
arm(None if mode == "count" else n, "sql" if mode == "sql" else "any")
v.purger.shred("acme-2026")
lines, ticks = disarm()
print(f"done {lines + ticks} {marks.get('rewrite', -1)} {ticks}", flush=True)
v.close()
"""
)


@dataclass
class Template:
    path: Path
    worker: Path
    db_key: bytes
    secrets: dict[str, bytes]
    canary_env: bytes
    sealed: list[bytes]
    total_events: int  # credvault lines + SQLite progress ticks of one whole shred
    rewrite_at: int  # the event count at which the file rewrite starts
    sql_ticks: int  # SQLite progress ticks alone


def _worker(template: Path, worker: Path, mode: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(worker), str(template), mode, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a worker aimed at a kill point dies without writing coverage data; the counting
        # run measures the whole shred
        env=without_coverage() if mode != "count" else None,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("crash")
    path = base / "template"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    values = {f"c{i:03d}": secrets.token_bytes(64) for i in range(N_CREDS)}
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.members.add("bob", passphrase=PASSWORDS["bob"].encode())
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "engineer")
        v.systems.add(f"{ENG}/web1", "10.0.0.1", details="debian")
        v.credentials.put_many(ENG, list(values.items()))
        v.put(f"{ENG}/canary", b"CANARY-crash-test", system="web1")
        values["canary"] = b"CANARY-crash-test"
        v.engagements.create("other-2026", "globex")
        v.put("other-2026/keep", b"keep-me")
        conn = v._s.store.conn
        canary_env = bytes(
            conn.execute("SELECT secret_env FROM credentials WHERE name = 'canary'").fetchone()[0]
        )
        sealed = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT sealed FROM grants g JOIN engagements e ON e.id = g.engagement_id "
                "WHERE e.name = ? AND sealed IS NOT NULL",
                (ENG,),
            )
        ]
        db_key = v._s.db_key
    worker = base / "worker.py"
    worker.write_text(WORKER)
    # calibrate: how many events a shred takes, and where the rewrite starts
    probe = base / "probe"
    shutil.copytree(path, probe)
    separate_client(probe)
    p = _worker(probe, worker, "count", 0)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    _, total, rewrite_at, ticks = out.split()
    assert 0 < int(rewrite_at) < int(total)
    return Template(
        path,
        worker,
        db_key,
        values,
        canary_env,
        sealed,
        int(total),
        int(rewrite_at),
        int(ticks),
    )


def _snapshot(run: Path, db_key: bytes, scratch: Path) -> tuple[str, int]:
    """(state, needs_vacuum) as left on disk, read from a copy (the real files stay as the
    kill left them for the next open to deal with)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for name in ("vault.db", "vault.db-wal"):
        if (run / name).exists():
            shutil.copy2(run / name, scratch / name)
    conn = sqlcipher3.connect(str(scratch / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
        state = conn.execute("SELECT state FROM engagements WHERE name = ?", (ENG,)).fetchone()[0]
        row = conn.execute("SELECT value FROM meta WHERE key = 'needs_vacuum'").fetchone()
    finally:
        conn.close()
    return state, int(row[0]) if row else 0


def _check_after_kill(t: Template, run: Path, scratch: Path, what: str) -> tuple[str, int]:
    state_on_disk, pending = _snapshot(run, t.db_key, scratch)
    assert state_on_disk in ("active", "purged"), what
    with Vault.open(run, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        wal = run / "vault.db-wal"
        wal_size = wal.stat().st_size if wal.exists() else 0
        conn = v._s.store.conn
        eng = v.engagements.get(ENG, allow_purged=True)
        counts = [
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE engagement_id = ?",  # noqa: S608
                (eng.id,),
            ).fetchone()[0]
            for table in ("credentials", "systems", "grants")
        ]
        assert eng.state == state_on_disk, what
        if eng.state == "active":
            assert counts == [len(t.secrets), 1, 3], what
            got = {c.name: c.secret.reveal() for c in v.credentials.export_engagement(eng)}
            assert got == t.secrets, what
            with pytest.raises(RetentionError):
                v.purger.receipt(ENG)
        else:
            assert counts == [0, 0, 0], what
            receipt = v.purger.receipt(ENG).to_json()
            body = verify_receipt(receipt, v.public_key)
            assert body["destroyed"]["credentials"] == len(t.secrets), what  # type: ignore[index]
            assert body["reason"] == "client request"
            with pytest.raises(Purged):
                v.get(f"{ENG}/canary")
            plain = decrypted_pages(run, t.db_key)
            assert t.canary_env not in plain, what
            assert not any(s in plain for s in t.sealed), what
        assert not v._s.store.get_meta("needs_vacuum"), what
        if pending:
            assert wal_size == 0, f"{what}: WAL not truncated by the open that finished it"
        assert v.integrity_check() == [], what
        v.audit_verify()
        assert v.get("other-2026/keep").secret.reveal() == b"keep-me"
    return eng.state, pending


def test_killed_purge_is_all_or_nothing(template: Template, tmp_path: Path) -> None:
    t = template
    rng = secrets.SystemRandom()
    # random lines of the whole shred, and lines inside the rewrite (after the commit)
    points = [1, t.rewrite_at + 1, t.rewrite_at + 2]  # before anything; just after the commit
    points += [rng.randint(1, t.total_events) for _ in range(TRACE_RUNS - 9)]
    points += [rng.randint(t.rewrite_at, t.total_events) for _ in range(6)]
    assert t.sql_ticks > 5, t  # SQLite's own steps are seen, so kills can land inside them
    kills = [("any", n) for n in points]
    kills += [("sql", rng.randint(1, t.sql_ticks)) for _ in range(SQL_RUNS)]
    outcomes: dict[tuple[str, int], int] = {}

    def record(key: tuple[str, int]) -> None:
        outcomes[key] = outcomes.get(key, 0) + 1

    for i, (kind, n) in enumerate(kills):
        run = tmp_path / f"kill-{i}"
        shutil.copytree(t.path, run)
        separate_client(run)
        p = _worker(run, t.worker, kind, n)
        _out, err = p.communicate(timeout=120)
        assert p.returncode in (0, -signal.SIGKILL), err
        what = f"kill at {'SQLite tick' if kind == 'sql' else 'event'} {n}"
        record(_check_after_kill(t, run, tmp_path / "scratch", what))
        shutil.rmtree(run)

    states = {s for s, _ in outcomes}
    assert states == {"active", "purged"}, outcomes  # both sides of the commit were hit
    assert outcomes.get(("purged", 1), 0) >= 1, outcomes  # and the unfinished rewrite
