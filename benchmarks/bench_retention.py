"""Benchmarks of issue 12 (destroyed exactly when due, never resurrected):

    python benchmarks/bench_retention.py [--quick] [--dir DIR]

1. Shred of a 10,000-credential engagement in a 100,000-credential vault while another
   process keeps reading (``get`` in a loop): time to the receipt, and whether the
   destruction was complete (``destruction_complete_at``) or waited for the reader.
2. ``credvault check`` (``credvault.check``) on a 100,000-credential vault with 1,000,000
   audit entries: every page's MAC, SQLite's integrity check, the audit chain, receipts.
3. Backup with verification (as shipped: copy checked, file read back) against the same
   backup with the two verification steps replaced by no-ops (monkeypatched here, for the
   figure only): the cost of trusting a backup.
4. Restore consulting a ledger of 1,000 tombstones (1,000 engagements shredded after the
   backup; every receipt verified; every one destroyed again at once).

Members unlock with ``MIN_KDF``. The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _vaults as V
from credvault import MIN_KDF, Passphrase, Vault
from credvault import check as full_check

SUMMARY: list[str] = []


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _reader(path: str, engagement: str, stop: object, reading: object) -> None:
    """Another process: reads in a loop until stopped; ``reading`` is set at its first get."""
    clock = V.Clock()
    with V.open_vault(Path(path), clock, "bob") as v:
        i = 0
        while not stop.is_set():  # type: ignore[attr-defined]
            v.get(f"{engagement}/{V.cred_name(i % 100)}")
            reading.set()  # type: ignore[attr-defined]
            i += 1


def bench_purge(root: Path, total: int, target: int) -> None:
    print(
        f"\n== 1. shred of {target:,} credentials in a {total:,}-credential vault, beside a reader"
    )
    clock = V.Clock()
    path = V.create_vault(root / "purge", clock)
    others = max(1, (total - target) // 10_000)
    with V.open_vault(path, clock) as v:
        V.build_engagements(v, [V.eng_name(i) for i in range(others)], (total - target) // others)
        V.build_engagements(v, ["doomed"], target)
        v.engagements.grant(V.eng_name(0), "bob", "reader")
    stop, reading = mp.Event(), mp.Event()
    reader = mp.Process(target=_reader, args=(str(path), V.eng_name(0), stop, reading))
    reader.start()
    try:
        if not reading.wait(60):  # the reader is running
            raise RuntimeError("the reader did not start")
        with V.open_vault(path, clock) as v:
            t0 = time.perf_counter()
            receipt = v.purger.shred("doomed")
            dt = time.perf_counter() - t0
            complete = v.purger.complete
    finally:
        stop.set()
        reader.join()
    print(
        f"   shred: {dt:.2f} s; complete at return: {complete} "
        f"(destruction_complete_at={receipt.destruction_complete_at}); {load()}"
    )


def bench_check(root: Path, creds: int, entries: int) -> None:
    print(f"\n== 2. credvault check on {creds:,} credentials and {entries:,} audit entries")
    clock = V.Clock()
    path = V.create_vault(root / "check", clock)
    names = [V.eng_name(i) for i in range(max(1, creds // 10_000))]
    with V.open_vault(path, clock) as v:
        V.build_engagements(v, names, creds // len(names))
        V.append_audit(v, entries, engagements=names, per_engagement=creds // len(names))
    t0 = time.perf_counter()
    report = full_check(path, "alice", V.PASSWORDS["alice"], kdf=MIN_KDF, clock=clock)
    dt = time.perf_counter() - t0
    assert report.ok, report.problems
    size = V.vault_bytes(path) / 1e6
    SUMMARY.append(f"check of {creds:,} credentials / {entries:,} entries: {dt:.2f} s")
    print(f"   check: {dt:.2f} s for {size:.0f} MB ({'; '.join(report.checked)}); {load()}")


def bench_backup(root: Path, creds: int, runs: int) -> None:
    import importlib

    print(f"\n== 3. backup of a {creds:,}-credential vault: verified vs not")
    clock = V.Clock()
    path = V.create_vault(root / "backup", clock)
    with V.open_vault(path, clock) as v:
        V.build_engagements(v, [V.eng_name(0)], creds)
    mod: Any = importlib.import_module("credvault.backup")  # for the figure only
    real = (mod.check_file, mod._sha256_of, mod._write_backup_file)
    last: dict[str, bytes] = {}

    def write(part: Path, header: bytes, db: Path) -> bytes:
        last["digest"] = real[2](part, header, db)
        return last["digest"]

    times: dict[str, list[float]] = {"verified": [], "unverified": []}
    for _run in range(runs):
        for mode in ("verified", "unverified"):
            if mode == "unverified":  # the copy not checked, the file not read back
                mod.check_file = lambda *_a: []
                mod._write_backup_file = write
                mod._sha256_of = lambda _p: last["digest"]
            try:
                clock.advance(seconds=2)
                with V.open_vault(path, clock) as v:
                    t0 = time.perf_counter()
                    file, _ = v.backups.create(root / f"bk-{mode}")
                    times[mode].append(time.perf_counter() - t0)
                    file.unlink()
            finally:
                mod.check_file, mod._sha256_of, mod._write_backup_file = real
    ver, unv = min(times["verified"]), min(times["unverified"])
    SUMMARY.append(f"backup of {creds:,}: verified {ver:.2f} s, unverified {unv:.2f} s")
    print(
        f"   verified {ver:.2f} s, unverified {unv:.2f} s (best of {runs}): "
        f"verification costs {ver - unv:.2f} s (x{ver / unv:.2f}); {load()}"
    )


def bench_restore(root: Path, tombstones: int) -> None:
    print(f"\n== 4. restore consulting a ledger of {tombstones:,} tombstones")
    clock = V.Clock()
    path = V.create_vault(root / "restore", clock)
    with V.open_vault(path, clock) as v:
        for i in range(tombstones):
            v.engagements.create(f"t{i:05d}", "client", lead="alice")
            v.credentials.put_many(f"t{i:05d}", [("x", b"s")])
        file, _ = v.backups.create(root / "rbk")
        t0 = time.perf_counter()
        for i in range(tombstones):
            v.purger.shred(f"t{i:05d}")
        shred_s = time.perf_counter() - t0
    ledger = path / "purge-ledger.jsonl"
    alone = root / "alone"
    alone.mkdir()
    shutil.copy(file, alone / file.name)
    t0 = time.perf_counter()
    r = Vault.restore_report(
        alone / file.name,
        root / "restored",
        "alice",
        Passphrase(V.PASSWORDS["alice"]),
        kdf=MIN_KDF,
        clock=clock,
        ledgers=[ledger],
    )
    dt = time.perf_counter() - t0
    assert len(r.destroyed_after_backup) == tombstones
    SUMMARY.append(f"restore with a {tombstones:,}-tombstone ledger: {dt:.2f} s")
    print(
        f"   restore: {dt:.2f} s, {len(r.destroyed_after_backup):,} destroyed again "
        f"({ledger.stat().st_size / 1e3:.0f} kB ledger; the {tombstones:,} shreds took "
        f"{shred_s:.1f} s); {load()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="credvault-bench-"))
    q = args.quick
    print(f"bench_retention{' --quick' if q else ''}: {load()}")
    try:
        bench_purge(root, 500 if q else 100_000, 100 if q else 10_000)
        bench_check(root, 300 if q else 100_000, 500 if q else 1_000_000)
        bench_backup(root, 300 if q else 100_000, 1 if q else 3)
        bench_restore(root, 5 if q else 1_000)
        print("\n== Summary (no targets set by issue 12: figures only)")
        for line in SUMMARY:
            print(f"   {line}")
        print("   judged targets met: 0 of 0 (issue 12 sets figures, not targets)")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
