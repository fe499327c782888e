"""What the member's witness costs a get (issue 11, property 7):

    python benchmarks/bench_witness.py [--quick] [--gets N] [--rounds N]

1. In-process durable audited gets on one vault through two open ``Vault`` objects of the
   same member, round-robin in slices: one advancing the witness after each commit (as
   shipped), one with that step switched off (``credvault._bench_seam.witness_off``). The
   difference of the medians is the witness's cost per get, measured in one run.
2. One replace of the witness file without fsync (the journal's fold; the get path itself
   appends one journal record) against one with fsync of the file and its directory (what
   both skip; see docs/security.md §13).

Whole-process ``credvault get`` is ``bench_cli.py`` (run it on the commit before and after).
Members unlock with ``MIN_KDF``; the witness lives in a private ``XDG_STATE_HOME``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Figures, Stats, fmt_ms, fmt_rate
from credvault import MIN_KDF, Vault
from credvault._bench_seam import witness_off, witness_write

ENG = "acme-2026"


def _gets(v: Vault, n: int, refs: list[str], into: list[float]) -> float:
    cpu = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        v.get(refs[i % len(refs)])
        into.append(time.perf_counter() - t0)
    return time.process_time() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    ap.add_argument("--gets", type=int, help="gets per variant (default 4000; --quick 40)")
    ap.add_argument("--rounds", type=int, help="alternating slices (default 20; --quick 4)")
    args = ap.parse_args()
    n = args.gets or (40 if args.quick else 4000)
    args.rounds = args.rounds or (4 if args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="credvault-bench-witness-") as tmp:
        os.environ["XDG_STATE_HOME"] = str(Path(tmp) / "state")
        path = Path(tmp) / "vault"
        Vault.init(path, "alice", "alice-pass", kdf=MIN_KDF)
        refs = [f"{ENG}/cred-{i}" for i in range(20 if args.quick else 100)]
        with Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF) as v:
            v.engagements.create(ENG, "acme")
            for ref in refs:
                v.put(ref, b"s3cret")
        on = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
        off = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
        witness_off(off)
        fig = Figures(judged=not args.quick)
        try:
            fig.section(f"1. durable audited get, witness advanced vs not ({n:,} gets each)")
            lat: dict[str, list[float]] = {"with witness": [], "without witness": []}
            cpu = dict.fromkeys(lat, 0.0)
            per = max(1, n // args.rounds)
            for _ in range(args.rounds):
                cpu["with witness"] += _gets(on, per, refs, lat["with witness"])
                cpu["without witness"] += _gets(off, per, refs, lat["without witness"])
            stats = {k: Stats.of_seconds(v) for k, v in lat.items()}
            for k, st in stats.items():
                fig.add(f"get/s {k}", fmt_rate(len(lat[k]) / sum(lat[k])))
                fig.add(f"  latency {k}: median / p99", st.brief())
                fig.add(f"  CPU per get {k}", fmt_ms(cpu[k] / len(lat[k]) * 1000))
            d = stats["with witness"].median - stats["without witness"].median
            rel = d / stats["without witness"].median * 100
            fig.add(
                "witness cost per get (difference of medians)",
                f"{fmt_ms(d)} ({rel:+.1f} %)",
                "<= 10 %",
                rel <= 10,
            )

            fig.section("2. one witness-file replace: get path (no fsync) vs durable")
            for label, durable in (("no fsync (get path)", False), ("fsync file + dir", True)):
                samples = []
                for _ in range(max(20, n // 20)):
                    t0 = time.perf_counter()
                    witness_write(on, durable=durable)
                    samples.append(time.perf_counter() - t0)
                fig.add(
                    f"witness replace, {label}: median / p99", Stats.of_seconds(samples).brief()
                )
        finally:
            on.close()
            off.close()
    fig.summary()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
