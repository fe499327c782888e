"""The one reporting helper of the credvault benchmarks.

Every script measures with these functions and prints with them, so that all figures mean
the same thing everywhere:

* :class:`Stats` — median (= p50), p99, min and max of a list of samples, in milliseconds.
  Percentiles are nearest-rank on the sorted samples (no interpolation), so a p99 of 100
  samples is the second-slowest one.
* ratios are only ever taken between figures of the *same run* (:func:`ratio`), whose
  commands ran round-robin (:func:`round_robin`), so that a change of machine load hits
  both sides alike.
* :func:`print_table` (any rows) and :func:`print_stats` (rows of :class:`Stats`, with the
  ratio to baseline rows) print aligned tables; :class:`Figures` collects the headline
  figures with their targets and prints the closing summary.
* :func:`section` starts a section with the load average and CPU / I/O pressure, because the
  machine may be shared and a figure taken under load is not comparable.

Nothing here knows about credvault; the scripts use credvault only through its public API.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# A fixed argv, or a factory called before each run (outside the timed region) for commands
# that must differ per run, e.g. a fresh entry name.
Argv = Sequence[str] | Callable[[], Sequence[str]]


# -- statistics -------------------------------------------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(s)))
    return s[rank - 1]


@dataclass(frozen=True)
class Stats:
    """Summary of samples in milliseconds (median is p50)."""

    n: int
    median: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        if not samples_ms:
            raise ValueError("no samples")
        return cls(
            len(samples_ms),
            percentile(samples_ms, 50),
            percentile(samples_ms, 99),
            min(samples_ms),
            max(samples_ms),
        )

    @classmethod
    def of_seconds(cls, samples_s: Sequence[float]) -> Stats:
        return cls.of([s * 1000.0 for s in samples_s])

    @property
    def p50(self) -> float:
        return self.median

    def brief(self) -> str:
        """``median / p99`` with units, for one-line figures."""
        return f"{fmt_ms(self.median)} / {fmt_ms(self.p99)}"


def ratio(value: float, base: float) -> float:
    """value / base, NaN when base is not positive (only within one run: see module doc)."""
    return value / base if base > 0 else float("nan")


def fmt_ms(ms: float) -> str:
    """Milliseconds, with three decimals below 10 ms."""
    return f"{ms:.3f} ms" if ms < 10 else f"{ms:.1f} ms"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def fmt_rate(per_second: float) -> str:
    return f"{per_second:,.0f} /s"


# -- measuring ------------------------------------------------------------------------------
def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_call(fn: Callable[[], object], *, runs: int = 1, warmup: int = 0) -> Stats:
    """``runs`` timed calls of fn in this process, after ``warmup`` untimed ones."""
    samples: list[float] = []
    for i in range(warmup + runs):
        t, _ = timed(fn)
        if i >= warmup:
            samples.append(t * 1000.0)
    return Stats.of(samples)


class CommandFailed(RuntimeError):
    pass


@dataclass
class Command:
    """One whole process to time: argv, environment (None: inherit) and stdin bytes."""

    argv: Argv
    env: dict[str, str] | None = None
    stdin: bytes | None = None

    def args(self) -> list[str]:
        return list(self.argv() if callable(self.argv) else self.argv)


def run_once(cmd: Command) -> tuple[float, bytes]:
    """(ms, stdout) of one run: process start, the work, exit. A non-zero exit raises
    CommandFailed with its stderr."""
    args = cmd.args()
    start = time.perf_counter()
    proc = subprocess.run(
        args,
        input=cmd.stdin,
        stdin=None if cmd.stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=cmd.env,
        check=False,
    )
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise CommandFailed(f"{args!r} exited {proc.returncode}: {err}")
    return elapsed_ms, proc.stdout


def output(cmd: Command) -> bytes:
    """stdout of one run of cmd (which must succeed)."""
    return run_once(cmd)[1]


def time_command(cmd: Command, *, runs: int = 10, warmup: int = 1) -> Stats:
    """``runs`` whole-process samples of cmd after ``warmup`` untimed runs."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    samples = [run_once(cmd)[0] for _ in range(warmup + runs)]
    return Stats.of(samples[warmup:])


def round_robin(
    cmds: Mapping[str, Command],
    runs: int,
    warmup: int = 1,
    expect: Mapping[str, bytes] | None = None,
) -> dict[str, Stats]:
    """Time every command ``runs`` times, one sample each per round (after ``warmup`` untimed
    runs each), so that load changes during the run hit every command alike. A command named
    in ``expect`` must print that (surrounding whitespace aside) in every timed run: a smoke
    run checks its reads this way instead of with extra processes."""
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for c in cmds.values():
        for _ in range(warmup):
            run_once(c)
    for _ in range(runs):
        for name, c in cmds.items():
            ms, out = run_once(c)
            if expect is not None and name in expect and out.strip() != expect[name].strip():
                raise CommandFailed(f"{name} printed {out!r}, expected {expect[name]!r}")
            samples[name].append(ms)
    return {name: Stats.of(s) for name, s in samples.items()}


# -- printing -------------------------------------------------------------------------------
def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> None:
    """Columns aligned: the first left, the others right; floats with one decimal."""

    def cell(v: object) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "".join(f"  {c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return indent + first + rest

    head = line(list(headers))
    print(head)
    print(indent + "-" * (len(head) - len(indent)))
    for r in text:
        print(line(r))


def print_stats(
    rows: Sequence[tuple[str, Stats]], baselines: Sequence[str] = (), indent: str = ""
) -> None:
    """name, n, median (p50), p99, min and max in ms, and each median's ratio to the median
    of each baseline row (same run)."""
    by_name = dict(rows)
    for b in baselines:
        if b not in by_name:
            raise KeyError(f"baseline {b!r} not among rows")
    headers = [
        "name",
        "n",
        "median ms",
        "p99 ms",
        "min ms",
        "max ms",
        *(f"x {b}" for b in baselines),
    ]
    table = [
        [
            name,
            s.n,
            f"{s.median:.2f}",
            f"{s.p99:.2f}",
            f"{s.min:.2f}",
            f"{s.max:.2f}",
            *(f"{ratio(s.median, by_name[b].median):.2f}" for b in baselines),
        ]
        for name, s in rows
    ]
    print_table(headers, table, indent)


def load() -> str:
    """Load average and pressure (PSI avg10: share of time tasks waited for CPU / I/O)."""
    la = os.getloadavg()
    out = f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
    psi = []
    for res in ("cpu", "io"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            line = Path(f"/proc/pressure/{res}").read_text().splitlines()[0]
            psi.append(f"{res} {float(line.split()[1].split('=')[1]):.0f}%")
    if psi:
        out += "; pressure avg10 " + ", ".join(psi)
    return out


def section(title: str) -> None:
    print(f"\n== {title}  ({load()})", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine(title: str, mode: str, extra: Sequence[tuple[str, str]] = ()) -> None:
    """The header every script prints: what ran, where, with which libraries."""
    import importlib.metadata as md

    import sqlcipher3

    conn = sqlcipher3.connect(":memory:")
    conn.execute("PRAGMA key = 'bench'")
    cipher = conn.execute("PRAGMA cipher_version").fetchone()[0]
    conn.close()
    rows = [
        ("date", f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"),
        ("mode", mode),
        ("host", f"{platform.node()}  {platform.platform()}"),
        ("cpu", f"{os.cpu_count()} logical (nproc {len(os.sched_getaffinity(0))})  {cpu_model()}"),
        ("python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("sqlcipher", f"{cipher} (SQLite {sqlcipher3.sqlite_version})"),
        (
            "credvault",
            f"{md.version('credvault')}; cryptography {md.version('cryptography')}; "
            f"argon2-cffi {md.version('argon2-cffi')}; keyring {md.version('keyring')}",
        ),
        ("source", git_state()),
        *extra,
        ("load", f"{load()} (the machine may be shared)"),
    ]
    print(title)
    w = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{w}} {v}")
    sys.stdout.flush()


def git_state() -> str:
    """Commit of the tree benchmarked, and whether src/ differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "? (not a git checkout)"
    return f"commit {head}" + (" + uncommitted changes in src/" if dirty else ", src/ clean")


# -- headline figures and targets -----------------------------------------------------------
@dataclass
class Figure:
    section: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, or not judged in this run
    why: str = ""


@dataclass
class Figures:
    """The figures of a run, printed as they come and again in the closing summary.

    ``judged`` is False for smoke runs (``--quick``): their sizes are not the ones a target
    names, so targets are shown but not judged.
    """

    judged: bool = True
    items: list[Figure] = field(default_factory=list)
    current: str = ""

    def section(self, title: str) -> None:
        self.current = title
        section(title)

    def add(
        self, metric: str, value: str, target: str = "", met: bool | None = None, why: str = ""
    ) -> None:
        f = Figure(
            self.current, metric, value, target, met if self.judged and target else None, why
        )
        self.items.append(f)
        print(f"   {metric:<60} {value:>22}  {target:<12} {self._met(f)}", flush=True)

    def _met(self, f: Figure) -> str:
        if not f.target:
            return ""
        if f.met is None:
            return "-" if self.judged else "- (smoke run)"
        return "yes" if f.met else "NOT MET"

    def summary(self) -> None:
        """Every figure by section, then the targets met and missed."""
        if not self.items:
            return
        print("\n== Summary")
        rows: list[list[object]] = []
        sec = None
        for f in self.items:
            if f.section != sec:
                sec = f.section
                rows.append([f"[{sec}]", "", "", ""])
            rows.append([f.metric, f.value, f.target, self._met(f)])
        print_table(["figure", "value", "target", "met?"], rows)
        judged = [f for f in self.items if f.met is not None]
        missed = [f for f in judged if not f.met]
        print(f"\n{len(judged) - len(missed)} of {len(judged)} judged targets met.")
        for f in missed:
            print(f"  NOT MET: {f.metric}: {f.value} (target {f.target}) {f.why}".rstrip())
