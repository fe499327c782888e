"""Whole-process wall-clock timing shared by the credvault and peer benchmarks."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# A fixed argv, or a factory called before each run (outside the timed
# region) for commands that must differ per run, e.g. a fresh entry name.
Argv = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Stats:
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Stats:
        if not samples_ms:
            raise ValueError("no samples")
        return cls(statistics.median(samples_ms), min(samples_ms), max(samples_ms), len(samples_ms))


class CommandFailed(RuntimeError):
    pass


def time_command(
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    runs: int = 10,
    warmup: int = 1,
) -> Stats:
    """Time `runs` executions of argv (after `warmup` untimed ones).

    Each sample is time.perf_counter() around subprocess.run: process start,
    the work, and exit. stdout is discarded; stderr is kept only to report a
    non-zero exit, which raises CommandFailed.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    samples: list[float] = []
    for i in range(warmup + runs):
        args = list(argv() if callable(argv) else argv)
        start = time.perf_counter()
        proc = subprocess.run(
            args,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            check=False,
        )
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise CommandFailed(f"{args!r} exited {proc.returncode}: {err}")
        if i >= warmup:
            samples.append(elapsed_ms)
    return Stats.from_samples(samples)


def time_call(fn: Callable[[], object], *, runs: int = 1, warmup: int = 0) -> Stats:
    """In-process counterpart of time_command, for library peers."""
    samples: list[float] = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        fn()
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if i >= warmup:
            samples.append(elapsed_ms)
    return Stats.from_samples(samples)


def print_table(rows: Sequence[tuple[str, Stats]], baseline: str | None = None) -> None:
    """Print name, median, min, max and median ratio to the `baseline` row.

    baseline defaults to the first row; rows are printed in the order given.
    """
    if not rows:
        return
    base_name = baseline if baseline is not None else rows[0][0]
    base = dict(rows).get(base_name)
    if base is None:
        raise KeyError(f"baseline {base_name!r} not among rows")
    width = max(len("name"), *(len(name) for name, _ in rows))
    header = f"{'name':<{width}}  {'median ms':>10}  {'min ms':>10}  {'max ms':>10}  x {base_name}"
    print(header)
    print("-" * len(header))
    for name, s in rows:
        ratio = s.median_ms / base.median_ms if base.median_ms > 0 else float("nan")
        print(
            f"{name:<{width}}  {s.median_ms:>10.1f}  {s.min_ms:>10.1f}  {s.max_ms:>10.1f}"
            f"  {ratio:>.2f}"
        )
