"""Smoke run of the peer harness: build each installed peer's store, check
that it reads back the right secret, and time one read and one write.

    python benchmarks/peers/smoke.py [--entries 1000] [--runs 10] [--bulk 10000]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._report import Stats, output, print_stats, time_call, time_command
from benchmarks.peers import WRITTEN_SECRET, Command, Peer, keepass, setup_all, which


def _output(cmd: Command) -> str:
    return output(cmd).decode().strip()


def _time(cmd: Command, runs: int, warmup: int) -> Stats:
    return time_command(cmd, runs=runs, warmup=warmup)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bulk", type=int, default=10_000, help="0 skips the bulk timings")
    ap.add_argument(
        "--argon2-iterations",
        type=int,
        help="pin the Argon2d databases' iterations (default: benchmark like KeePassXC 2.7)",
    )
    ap.add_argument("--keep", action="store_true", help="leave the scratch directory")
    args = ap.parse_args()

    # SIGTERM -> SystemExit, so the finally below still stops gpg-agent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="cvpb-"))
    peers: list[Peer] = []
    try:
        t0 = time.perf_counter()
        peers = setup_all(tmp, args.entries, args.argon2_iterations)
        print(
            f"built {len(peers)} peer stores of {args.entries} entries "
            f"in {time.perf_counter() - t0:.1f} s (scratch {tmp})\n"
        )
        reads: list[tuple[str, Stats]] = []
        writes: list[tuple[str, Stats]] = []
        for p in peers:
            got = _output(p.read)
            if got != p.expected:
                raise RuntimeError(f"{p.name}: read {got!r}, expected {p.expected!r}")
            reads.append((p.name, _time(p.read, args.runs, args.warmup)))
            writes.append((p.name, _time(p.write, args.runs, args.warmup)))
            got = _output(p.show(p.written_entry))
            if got != WRITTEN_SECRET:
                raise RuntimeError(f"{p.name}: wrote, read back {got!r}")
            print(f"{p.name}: store {p.setup_s:.2f} s; {'; '.join(p.notes)}")
        if peers:
            print(f"\nread one secret ({args.runs} runs, {args.warmup} warm-up)")
            print_stats(reads)
            print(f"\nwrite one secret ({args.runs} runs, {args.warmup} warm-up)")
            print_stats(writes)

        if args.bulk:
            print()
        if args.bulk and keepass.have_pykeepass():
            for n, via in ((args.bulk, False), (args.entries, True)):
                phases = keepass.pykeepass_bulk_insert(
                    tmp / "bulk", n, via_add_entry=via, argon2_iterations=args.argon2_iterations
                )
                how = "PyKeePass.add_entry" if via else "Entry + Group.append"
                print(
                    f"pykeepass bulk insert of {n} via {how} (in-process, Argon2d db): "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
                )
        if args.bulk and which("keepassxc-cli"):
            cmd = keepass.import_command(tmp / "import", args.bulk)
            st = _time(cmd, runs=3, warmup=0)
            print(
                f"keepassxc-cli import of {args.bulk} (whole process, AES-KDF db): "
                f"median {st.median:.0f} ms, min {st.min:.0f}, max {st.max:.0f}"
            )
        if args.bulk:
            xml = time_call(lambda: keepass.entries_xml(args.bulk))
            print(f"(generating the {args.bulk}-entry XML, untimed above: {xml.median:.0f} ms)")
    finally:
        for p in peers:
            p.cleanup()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
