"""In-process benchmarks of the credvault library against the targets of issues 2-5 and 7.

    python benchmarks/bench_library.py [--quick | --full] [--dir DIR] [--profile] [--seed N]

Default: vaults of 1,000 and 100,000 credentials (10 engagements of 10,000) and a trail of
1,000,000 audit entries. ``--quick`` runs the same steps at small sizes (a smoke check, under a
minute; targets are then not judged). ``--full`` adds a vault of 1,000,000 credentials (issue
7). Every figure is printed with its target and whether it is met; a summary table ends the
run. Vaults live in a temporary directory unless ``--dir`` is given (then they are kept).

Members unlock with the cheapest Argon2id the vault accepts (``MIN_KDF``) except where
Argon2id itself is timed. Rates are single library calls in a loop (each ``put`` and ``get``
commits its audit entry with ``synchronous=FULL``); latency samples are per call. The machine
may be shared: the load average is printed with every section.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import random  # noqa: TID251 - seeded, reproducible choice of which credential to read
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _vaults as V

import credvault
import credvault.keyslots as keyslots_mod
from credvault import DEFAULT_KDF, MIN_KDF, Secret, Vault
from credvault import items as items_mod
from credvault import validate as validate_mod
from credvault import vault as vault_mod
from credvault.access import Action
from credvault.crypto import passphrase as passphrase_mod


# -- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    mode: str
    small: int  # credentials in the small vault (issue 2: 1,000)
    engagements: int  # engagements in the big vault
    per_engagement: int  # credentials per engagement (issues 2, 4, 5: 10,000)
    audit_total: int  # audit entries in the big vault (issue 3: 1,000,000)
    gets: int  # timed gets per measurement (split into rounds)
    puts: int  # timed puts per vault
    rounds: int  # interleaved rounds, so load changes hit every variant alike
    open_runs: int  # timed Vault.open calls
    after_open_runs: int  # timed due checks on an open vault
    full_engagements: int  # engagements of per_engagement in the --full vault (issue 7: 100)

    @property
    def big(self) -> int:
        return self.engagements * self.per_engagement

    @property
    def judged(self) -> bool:
        """Targets are only judged at the sizes the issues name."""
        return self.mode != "quick"


DEFAULT = Config("default", 1_000, 10, 10_000, 1_000_000, 3_000, 1_000, 3, 20, 1_000, 0)
QUICK = Config("quick", 200, 4, 1_000, 20_000, 300, 100, 3, 5, 200, 0)
FULL = Config("full", 1_000, 10, 10_000, 1_000_000, 3_000, 1_000, 3, 20, 1_000, 100)


# -- results ------------------------------------------------------------------------------
@dataclass
class Result:
    section: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    cfg: Config
    results: list[Result] = field(default_factory=list)
    section: str = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"\n== {title}  ({load()})", flush=True)

    def note(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def add(self, metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        met = ok if (target and self.cfg.judged) else None
        r = Result(self.section, metric, value, target, met)
        self.results.append(r)
        print(f"   {metric:<58} {value:>22}  {target:<12} {_met(r, self.cfg)}", flush=True)

    def summary(self) -> None:
        w = max(len(r.metric) for r in self.results)
        vw = max(len(r.value) for r in self.results)
        tw = max(len("target"), *(len(r.target) for r in self.results))
        print("\n== Summary")
        header = f"{'metric':<{w}}  {'value':>{vw}}  {'target':<{tw}}  met?"
        print(header)
        print("-" * len(header))
        section = None
        for r in self.results:
            if r.section != section:
                section = r.section
                print(f"[{section}]")
            print(f"{r.metric:<{w}}  {r.value:>{vw}}  {r.target:<{tw}}  {_met(r, self.cfg)}")
        missed = [r for r in self.results if r.met is False]
        judged = [r for r in self.results if r.met is not None]
        print(f"\n{len(judged) - len(missed)} of {len(judged)} judged targets met.")
        for r in missed:
            print(f"  NOT MET: {r.metric}: {r.value} (target {r.target})")


def _met(r: Result, cfg: Config) -> str:
    if not r.target:
        return ""
    if r.met is None:
        return "- (smoke sizes)" if not cfg.judged else "-"
    return "yes" if r.met else "NO"


# -- small helpers ------------------------------------------------------------------------
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


@dataclass
class Cpu:
    seconds: float = 0.0


@contextlib.contextmanager
def cpu_time() -> Iterator[Cpu]:
    """Process CPU time of the block (wall time minus this is waiting: disk or other load)."""
    c = Cpu()
    c0 = time.process_time()
    try:
        yield c
    finally:
        c.seconds = time.process_time() - c0


@contextlib.contextmanager
def maybe_profile(enabled: bool, label: str) -> Iterator[None]:
    """With --profile, run the block under cProfile and print the top functions."""
    if not enabled:
        yield
        return
    pr = cProfile.Profile()
    pr.enable()
    try:
        yield
    finally:
        pr.disable()
        print(f"   -- cProfile: {label} (timings above include profiler overhead)")
        st = pstats.Stats(pr, stream=sys.stdout)
        st.sort_stats("cumulative").print_stats(18)


@contextlib.contextmanager
def wrapped(owner: object, attr: str, samples: list[float]) -> Iterator[None]:
    """Temporarily time every call of ``owner.attr`` into ``samples`` (benchmark only)."""
    orig = getattr(owner, attr)

    def timing(*a: object, **k: object) -> object:
        t0 = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            samples.append(time.perf_counter() - t0)

    setattr(owner, attr, timing)
    try:
        yield
    finally:
        setattr(owner, attr, orig)


def mount_of(path: Path) -> str:
    best, desc = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype, opts = line.split()[:4]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, desc = mnt, f"{dev} on {mnt} ({fstype}, {opts.split(',')[0]})"
    return desc


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


def fsync_floor(directory: Path, runs: int = 300) -> tuple[float, float]:
    """Median and p95 of overwriting 4 KiB of a preallocated file + fsync (what SQLite
    calls at each WAL commit, as strace shows) on the vault's file system."""
    probe = directory / "fsync-probe"
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600)
    samples = []
    try:
        os.write(fd, b"\0" * 64 * 4096)
        os.fsync(fd)
        for i in range(runs):
            os.pwrite(fd, b"\1" * 4096, (i % 64) * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        probe.unlink()
    return median(samples), p95(samples)


# -- workloads ----------------------------------------------------------------------------
class Refs:
    """Credential references to read, chosen uniformly at random over whole engagements."""

    def __init__(self, engagements: Sequence[str], per_engagement: int, seed: int) -> None:
        self.engagements = list(engagements)
        self.per = per_engagement
        self.rng = random.Random(seed)

    def next(self) -> str:
        eng = self.engagements[self.rng.randrange(len(self.engagements))]
        return f"{eng}/{V.cred_name(self.rng.randrange(self.per))}"


def run_gets(fn: Callable[[str], object], refs: Refs, n: int) -> tuple[list[float], float, float]:
    """Per-call latencies, total wall time and process CPU time of n reads."""
    lat = []
    c_all = time.process_time()
    t_all = time.perf_counter()
    for _ in range(n):
        ref = refs.next()
        t0 = time.perf_counter()
        fn(ref)
        lat.append(time.perf_counter() - t0)
    return lat, time.perf_counter() - t_all, time.process_time() - c_all


def warm(v: Vault, engagements: Sequence[str]) -> None:
    """One read per engagement: opens and caches each engagement key (not timed)."""
    for e in engagements:
        v.get(f"{e}/{V.cred_name(0)}")


@dataclass
class GetStats:
    lat: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0

    def add(self, lat: list[float], wall: float, cpu: float) -> None:
        self.lat += lat
        self.wall += wall
        self.cpu += cpu

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / len(self.lat)

    def line(self) -> str:
        """median / p95 latency and CPU per call."""
        return f"{ms(median(self.lat))} / {ms(p95(self.lat))} / {ms(self.cpu_per_call)}"

    @property
    def rate(self) -> float:
        return len(self.lat) / self.wall


Variant = tuple[
    Callable[[str], object], Refs, Callable[[], contextlib.AbstractContextManager[None]]
]


def interleaved_gets(variants: dict[str, Variant], n: int, rounds: int) -> dict[str, GetStats]:
    """n reads per variant, in ``rounds`` alternating slices (fair under a changing load).

    Each slice runs inside its variant's context (a patch or a pragma), entered untimed.
    """
    out = {k: GetStats() for k in variants}
    per = max(1, n // rounds)
    for _ in range(rounds):
        for k, (fn, refs, ctx) in variants.items():
            with ctx():
                out[k].add(*run_gets(fn, refs, per))
    return out


def plain_ctx() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def run_puts(v: Vault, engagement: str, n: int, start: int) -> tuple[list[float], float]:
    lat = []
    t_all = time.perf_counter()
    for i in range(start, start + n):
        value = V.secret_value(i)
        t0 = time.perf_counter()
        v.credentials.put(f"{engagement}/p{i:07d}", value)
        lat.append(time.perf_counter() - t0)
    return lat, time.perf_counter() - t_all


def read_without_audit(v: Vault) -> Callable[[str], Secret]:
    """The read path of ``Credentials.get`` without its audit transaction.

    Same lookups and checks (engagement row, verified role, cached engagement key, credential
    row, all four envelopes opened); no BEGIN/INSERT/COMMIT.
    """
    s = v._s
    e = v.engagements

    def read(ref: str) -> Secret:
        eng_name, name = validate_mod.ref(ref)
        eng = e.get(eng_name)
        key = e.key(eng, "get", Action.READ, name)
        row = s.store.credential(eng.id, name)
        assert row is not None
        uid = bytes(row[1])
        fields = [
            items_mod.open_(s, eng, key, "credentials", uid, f, row[5 + i])
            for i, f in enumerate(items_mod.CRED_FIELDS)
        ]
        assert fields[0] is not None
        return Secret(fields[0])

    return read


@contextlib.contextmanager
def audit_append_patched_out(v: Vault) -> Iterator[None]:
    """``get`` with ``Session.log`` a no-op: its transaction is then empty (no WAL write)."""
    s = v._s
    s.log = lambda *a, **k: 0  # type: ignore[method-assign]
    try:
        yield
    finally:
        del s.log


@contextlib.contextmanager
def synchronous(v: Vault, mode: str) -> Iterator[None]:
    conn = v._s.store.conn
    conn.execute(f"PRAGMA synchronous = {mode}")
    try:
        yield
    finally:
        conn.execute("PRAGMA synchronous = FULL")
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


# -- sections -----------------------------------------------------------------------------
def machine(rep: Report, root: Path) -> None:
    import importlib.metadata as md

    import sqlcipher3

    conn = sqlcipher3.connect(":memory:")
    conn.execute("PRAGMA key = 'bench'")
    cipher = conn.execute("PRAGMA cipher_version").fetchone()[0]
    provider = conn.execute("PRAGMA cipher_provider").fetchone()
    provider_v = conn.execute("PRAGMA cipher_provider_version").fetchone()
    conn.close()
    print("credvault library benchmarks")
    print(f"date:       {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"mode:       {rep.cfg.mode}")
    print(f"host:       {platform.node()}  {platform.platform()}")
    print(f"cpu:        {os.cpu_count()} logical (nproc {len(os.sched_getaffinity(0))})  {_cpu()}")
    print(f"memory:     {_mem()}")
    print(f"python:     {sys.version.split()[0]} ({platform.python_implementation()})")
    print(
        f"sqlcipher:  {cipher} (SQLite {sqlcipher3.sqlite_version}; provider "
        f"{provider[0] if provider else '?'} {provider_v[0] if provider_v else ''})"
    )
    print(
        f"credvault:  {credvault.__version__}; cryptography {md.version('cryptography')}; "
        f"argon2-cffi {md.version('argon2-cffi')}"
    )
    print(f"vault dir:  {root}  [{mount_of(root)}]")
    print(f"load:       {load()} (the machine may be shared)")


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _mem() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def section_argon2(rep: Report) -> None:
    rep.start("Argon2id (one derivation)")
    salt = os.urandom(16)
    for label, params, runs in (("DEFAULT_KDF", DEFAULT_KDF, 3), ("MIN_KDF", MIN_KDF, 5)):
        samples = [
            timed(lambda p=params: passphrase_mod.derive(b"bench passphrase", salt, p))[0]
            for _ in range(runs)
        ]
        rep.add(
            f"Argon2id {label} m={params.memory_kib},t={params.iterations},p={params.lanes}",
            ms(median(samples)),
        )


@dataclass
class State:
    root: Path
    clock: V.Clock
    small_path: Path
    big_path: Path
    small: Vault | None = None
    big: Vault | None = None
    small_get_median: float = 0.0


def section_issue2(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    rep.start(f"Issue 2: put/get at {cfg.small:,} and {cfg.big:,} credentials")
    # Small vault: one engagement.
    V.create_vault(st.small_path, st.clock, ("bob",))
    st.small = s = V.open_vault(st.small_path, st.clock)
    s.engagements.create("small", "client")
    t_small = V.fill_engagement(s, "small", cfg.small).total_seconds
    rep.note(f"small vault: {cfg.small:,} credentials inserted in {secs(t_small)}")
    # Big vault: engagements of per_engagement each, put_many in chunks of 10,000.
    V.create_vault(st.big_path, st.clock, ("bob", "carol", "dave"))
    st.big = b = V.open_vault(st.big_path, st.clock)
    names = [V.eng_name(i) for i in range(cfg.engagements)]
    with maybe_profile(args.profile, "big vault build"):
        build = V.build_engagements(b, names, cfg.per_engagement)
    assert V.credential_count(b) == cfg.big
    rep.note(
        f"big vault: {cfg.big:,} credentials in {cfg.engagements} engagements built in "
        f"{secs(build.total_seconds)} ({cfg.big / build.total_seconds:,.0f} credentials/s)"
    )
    chunk = min(V.CHUNK, cfg.per_engagement)
    judged_chunk = chunk == 10_000
    rep.add(
        f"bulk insert of {chunk:,} (put_many), median of {len(build.chunk_seconds)}",
        secs(median(build.chunk_seconds)),
        "< 1 s",
        median(build.chunk_seconds) < 1.0 if judged_chunk else None,
    )
    rep.add(
        f"bulk insert of {chunk:,} (put_many), slowest call",
        secs(max(build.chunk_seconds)),
        "< 1 s",
        max(build.chunk_seconds) < 1.0 if judged_chunk else None,
    )

    # Reads: both vaults, interleaved rounds; uniform over every credential.
    warm(s, ["small"])
    warm(b, names)
    res = interleaved_gets(
        {
            "small": (s.get, Refs(["small"], cfg.small, args.seed), plain_ctx),
            "big": (b.get, Refs(names, cfg.per_engagement, args.seed + 1), plain_ctx),
            "small-plain": (read_without_audit(s), Refs(["small"], cfg.small, 9), plain_ctx),
            "big-plain": (read_without_audit(b), Refs(names, cfg.per_engagement, 10), plain_ctx),
        },
        cfg.gets,
        cfg.rounds,
    )
    for key, n in (("small", cfg.small), ("big", cfg.big)):
        g = res[key]
        rep.add(f"get/s at {n:,} credentials (durable audit entry each)", f"{g.rate:,.0f} /s")
        rep.add(f"get latency at {n:,}: median", ms(median(g.lat)))
        rep.add(f"get latency at {n:,}: p95", ms(p95(g.lat)))
        rep.add("  CPU per get (the rest is waiting: fsync, load)", ms(g.cpu_per_call))
    st.small_get_median = median(res["small"].lat)
    ratio = median(res["big"].lat) / median(res["small"].lat)
    ratio95 = p95(res["big"].lat) / p95(res["small"].lat)
    ok_sizes = cfg.small == 1_000 and cfg.big == 100_000
    rep.add(
        f"get latency ratio {cfg.big:,} / {cfg.small:,} (median)",
        f"{ratio:.2f}x",
        "<= 1.5x",
        ratio <= 1.5 if ok_sizes else None,
    )
    rep.add(f"get latency ratio {cfg.big:,} / {cfg.small:,} (p95)", f"{ratio95:.2f}x")
    sp, bp = res["small-plain"], res["big-plain"]
    rep.add(
        "read path without audit txn: median at small / big (diag.)",
        f"{ms(median(sp.lat))} / {ms(median(bp.lat))}",
    )
    rep.add(
        f"  ratio {cfg.big:,} / {cfg.small:,} without the fsync (diag.)",
        f"{median(bp.lat) / median(sp.lat):.2f}x",
    )

    # Writes: single put calls of new credentials, alternating vaults.
    put_lat: dict[str, list[float]] = {"small": [], "big": []}
    put_wall = {"small": 0.0, "big": 0.0}
    per = max(1, cfg.puts // cfg.rounds)
    for r in range(cfg.rounds):
        for key, vv, eng in (("small", s, "small"), ("big", b, names[0])):
            lat, wall = run_puts(vv, eng, per, r * per)
            put_lat[key] += lat
            put_wall[key] += wall
    for key, n in (("small", cfg.small), ("big", cfg.big)):
        rep.add(
            f"put/s at {n:,} credentials (single put, durable)",
            f"{len(put_lat[key]) / put_wall[key]:,.0f} /s",
        )
        rep.add(
            f"put latency at {n:,}: median / p95",
            f"{ms(median(put_lat[key]))} / {ms(p95(put_lat[key]))}",
        )


def revoke_once(
    rep: Report, st: State, eng: str, label: str, args: argparse.Namespace, reads: int = 5
) -> None:
    """Grant bob engineer on ``eng``, let him read a few credentials, then time the revoke."""
    b = st.big
    assert b is not None
    b.engagements.grant(eng, "bob", "engineer")
    with V.open_vault(st.big_path, st.clock, "bob") as bob:
        for i in range(reads):
            bob.get(f"{eng}/{V.cred_name(i)}")
    n_creds = b._s.store.count_engagement_items(b.engagements.get(eng).id)[0]
    with maybe_profile(args.profile, f"revoke {label}"), cpu_time() as cpu:
        t, read = timed(lambda: b.engagements.revoke(eng, "bob"))
    assert isinstance(read, list)
    assert {V.cred_name(i) for i in range(reads)} <= set(read), read
    rep.note(f"revoke {eng}: {len(read):,} credentials reported as read by bob")
    judged = n_creds == 10_000
    rep.add(
        f"revoke + rotation, engagement of {n_creds:,} ({label})",
        secs(t),
        "< 2 s",
        t < 2.0 if judged else None,
    )
    rep.add("  CPU time (this process)", secs(cpu.seconds))


def member_rm_once(
    rep: Report, st: State, member: str, grant_on: str, label: str, args: argparse.Namespace
) -> None:
    b = st.big
    assert b is not None
    b.engagements.grant(grant_on, member, "reader")
    n = V.credential_count(b)
    size = V.vault_bytes(st.big_path)
    with maybe_profile(args.profile, f"member rm {label}"), cpu_time() as cpu:
        t, _ = timed(lambda: b.members.remove(member))
    assert member not in b._s.slots.members
    assert V.credential_count(b) == n
    rep.add(
        f"member rm (re-key), {n:,} credentials, db {size / 2**20:,.0f} MiB ({label})",
        secs(t),
        "< 20 s",
        t < 20.0 if n >= 100_000 else None,
    )
    rep.add("  CPU time (this process)", secs(cpu.seconds))
    # member rm only marks the member's engagements; the lead's next use rotates them.
    eng = b.engagements.get(grant_on)
    assert eng.needs_rotation
    n_eng = b._s.store.count_engagement_items(eng.id)[0]
    t, _ = timed(lambda: b.get(f"{grant_on}/{V.cred_name(0)}"))
    assert not b.engagements.get(grant_on).needs_rotation
    rep.add(f"  + deferred rotation: lead's next get on {grant_on} ({n_eng:,})", secs(t))


def purge_once(rep: Report, st: State, eng: str, label: str, args: argparse.Namespace) -> None:
    b = st.big
    assert b is not None
    total = V.credential_count(b)
    n_eng = b._s.store.count_engagement_items(b.engagements.get(eng).id)[0]
    b.engagements.close(eng, grace_days=1)
    st.clock.advance(days=2)
    size = V.vault_bytes(st.big_path)
    times: list[float] = []
    with (
        maybe_profile(args.profile, f"purge {label}"),
        wrapped(b.purger, "rewrite", times),
        cpu_time() as cpu,
    ):
        t, done = timed(b.purge)
    assert isinstance(done, list)
    assert [d["engagement"] for d in done] == [eng], done
    assert V.credential_count(b) == total - n_eng
    rep.add(
        f"purge of {n_eng:,} in {total:,}, db {size / 2**20:,.0f} MiB ({label})",
        secs(t),
        "< 5 s",
        t < 5.0 if n_eng == 10_000 and total >= 100_000 else None,
    )
    rep.add("  CPU time (this process)", secs(cpu.seconds))
    rep.note(
        f"of which VACUUM + WAL truncate (Purger.rewrite): {secs(times[0])}; "
        f"db after: {V.vault_bytes(st.big_path) / 2**20:,.0f} MiB"
    )


def section_issue4_5_before_audit(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    b = st.big
    assert b is not None
    rep.start(f"Issues 4 and 5 on the {cfg.big:,}-credential vault, short audit trail")
    rep.note(f"audit trail: {V.audit_count(b):,} entries")
    revoke_once(rep, st, V.eng_name(1), "short trail", args)
    member_rm_once(rep, st, "carol", V.eng_name(cfg.engagements - 1), "short trail", args)
    purge_once(rep, st, V.eng_name(cfg.engagements - 2), "short trail", args)
    # Top up to the big size again with a fresh engagement.
    top = V.eng_name(cfg.engagements)
    V.build_engagements(b, [top], cfg.per_engagement)
    rep.note(f"topped up with {top}: {V.credential_count(b):,} credentials")


def read_engagements(cfg: Config) -> list[str]:
    """Engagements of the big vault that stay readable (not purged, no rotation pending)."""
    return [V.eng_name(i) for i in range(cfg.engagements - 2)] + [V.eng_name(cfg.engagements)]


def section_issue3(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    b = st.big
    assert b is not None
    rep.start(
        f"Issue 3: auditing on get ({cfg.big:,}-credential vault, {cfg.audit_total:,} audit entries)"
    )
    have = V.audit_count(b)
    t = V.append_audit(
        b,
        cfg.audit_total - have,
        st.clock,
        engagements=read_engagements(cfg),
        per_engagement=cfg.per_engagement,
        members=("alice", "bob", "carol"),
    )
    rep.note(
        f"{cfg.audit_total - have:,} chained audit entries appended in {secs(t)}; "
        f"trail {V.audit_count(b):,} entries, db {V.vault_bytes(st.big_path) / 2**20:,.0f} MiB"
    )
    conn = b._s.store.conn
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    jm = conn.execute("PRAGMA journal_mode").fetchone()[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    rep.note(
        f"durability: PRAGMA journal_mode = {jm}, PRAGMA synchronous = {sync} "
        f"({names.get(sync, '?')}): every get's audit entry is fsynced in the WAL before "
        "the secret is returned"
    )
    med, p = fsync_floor(st.big_path)
    rep.add("fsync floor (overwrite 4 KiB, fsync) median / p95", f"{ms(med)} / {ms(p)}")

    engs = read_engagements(cfg)
    warm(b, engs)
    plain = read_without_audit(b)

    def refs(k: int) -> Refs:
        return Refs(engs, cfg.per_engagement, args.seed + k)

    before = V.audit_count(b)
    with maybe_profile(args.profile, "get variants"):
        res = interleaved_gets(
            {
                "durable": (b.get, refs(2), plain_ctx),
                "patched": (b.get, refs(3), lambda: audit_append_patched_out(b)),
                "plain": (plain, refs(4), plain_ctx),
                "normal": (b.get, refs(5), lambda: synchronous(b, "NORMAL")),
            },
            cfg.gets,
            cfg.rounds,
        )
    added = V.audit_count(b) - before
    n_each = len(res["durable"].lat)
    # Durable and NORMAL-sync gets are audited; the other two are not.
    assert added == 2 * n_each, (added, n_each)
    d = res["durable"]
    rep.add(
        "get/s, audit entry committed durably (normal get)",
        f"{d.rate:,.0f} /s",
        ">= 2,000/s",
        d.rate >= 2000 and cfg.big >= 100_000 and cfg.audit_total >= 1_000_000,
    )
    rep.add("  latency median / p95 / CPU per get", d.line())
    for key, label in (
        ("patched", "get/s, audit append patched out (empty txn)"),
        ("plain", "get/s, read path without audit txn (replicated)"),
        ("normal", "get/s, audit entry with synchronous=NORMAL (diag.)"),
    ):
        g = res[key]
        rep.add(label, f"{g.rate:,.0f} /s")
        rep.add("  latency median / p95 / CPU per get", g.line())
    overhead = median(d.lat) - median(res["plain"].lat)
    rep.add("audit cost per get (median durable - median plain)", ms(overhead))
    rep.add(
        "  of which the fsync (median durable - median NORMAL)",
        ms(median(d.lat) - median(res["normal"].lat)),
    )

    # audit verify over the whole trail.
    n_entries = V.audit_count(b)
    with maybe_profile(args.profile, "audit verify"), cpu_time() as cpu:
        t, count = timed(b.audit_verify)
    assert isinstance(count, int)
    assert count >= n_entries, (count, n_entries)
    rep.add(
        f"audit verify of {count:,} entries",
        secs(t),
        "< 10 s",
        t < 10.0 if count >= 1_000_000 else None,
    )
    rep.add("  CPU time of the verify (this process)", secs(cpu.seconds))


def section_open(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    b = st.big
    assert b is not None
    rep.start("Issue 5: cost of opening a vault when nothing is due")
    s = b._s
    # The due check on an open vault, as Vault._after_open runs it (nothing is due).
    assert not s.store.anything_due(s.now())
    assert not (s.path / vault_mod.FAILED_UNLOCKS).exists()
    n = cfg.after_open_runs
    parts: dict[str, list[float]] = {"after": [], "due": [], "vacuum": [], "unlocks": []}
    for _ in range(n):
        parts["after"].append(timed(lambda: b._after_open(True))[0])
        parts["due"].append(timed(lambda: s.store.anything_due(s.now()))[0])
        parts["vacuum"].append(timed(lambda: s.store.get_meta("needs_vacuum"))[0])
        parts["unlocks"].append(timed(lambda: vault_mod._import_failed_unlocks(s))[0])
    rep.add(
        f"open's due check (Vault._after_open), median of {n}",
        ms(median(parts["after"])),
        "< 1 ms",
        median(parts["after"]) < 0.001,
    )
    rep.add("  anything_due(now) (two indexed probes)", ms(median(parts["due"])))
    rep.add("  needs_vacuum meta read", ms(median(parts["vacuum"])))
    rep.add("  failed-unlock file check (no file)", ms(median(parts["unlocks"])))
    rep.add("  _after_open p95", ms(p95(parts["after"])))

    # Whole Vault.open (MIN_KDF), split: Argon2id / due check / the rest.
    b.close()
    st.big = None
    assert st.small is not None
    st.small.close()
    st.small = None
    for label, path in (("small", st.small_path), ("big", st.big_path)):
        total: list[float] = []
        argon: list[float] = []
        after: list[float] = []
        for _ in range(cfg.open_runs):
            with (
                wrapped(keyslots_mod, "derive", argon),
                wrapped(Vault, "_after_open", after),
            ):
                t, v = timed(lambda p=path: V.open_vault(p, st.clock))
            assert isinstance(v, Vault)
            v.close()
            total.append(t)
        assert len(argon) == len(after) == len(total)
        what = f"{cfg.small:,} credentials" if label == "small" else f"{cfg.big:,} + audit"
        rest = [t - a - f for t, a, f in zip(total, argon, after, strict=True)]
        rep.add(f"Vault.open total, {what} (MIN_KDF), median", ms(median(total)))
        rep.add("  Argon2id (MIN_KDF)", ms(median(argon)))
        rep.add("  due check (_after_open)", ms(median(after)))
        rep.add("  the rest (key slots, HPKE, SQLCipher open, checks)", ms(median(rest)))
    st.big = V.open_vault(st.big_path, st.clock)


def section_issue4_5_after_audit(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    b = st.big
    assert b is not None
    rep.start(f"Issues 4 and 5 with {V.audit_count(b):,} audit entries")
    revoke_once(rep, st, V.eng_name(cfg.engagements), "long trail", args)
    member_rm_once(rep, st, "dave", V.eng_name(cfg.engagements - 1), "long trail", args)
    purge_once(rep, st, V.eng_name(cfg.engagements - 1), "long trail", args)


def section_issue7(rep: Report, st: State, args: argparse.Namespace) -> None:
    cfg = rep.cfg
    n_total = cfg.full_engagements * cfg.per_engagement
    rep.start(f"Issue 7: read latency at {n_total:,} vs {cfg.small:,} credentials")
    path = st.root / "huge"
    V.create_vault(path, st.clock, ())
    names = [V.eng_name(i) for i in range(cfg.full_engagements)]
    with V.open_vault(path, st.clock) as h:
        build = V.build_engagements(h, names, cfg.per_engagement)
        assert V.credential_count(h) == n_total
        rep.add(
            f"build of {n_total:,} credentials (put_many of {V.CHUNK:,})",
            f"{secs(build.total_seconds)}",
        )
        rep.note(
            f"{n_total / build.total_seconds:,.0f} credentials/s; put_many median "
            f"{secs(median(build.chunk_seconds))}, slowest {secs(max(build.chunk_seconds))}; "
            f"db {V.vault_bytes(path) / 2**20:,.0f} MiB"
        )
        with V.open_vault(st.small_path, st.clock) as s:
            warm(s, ["small"])
            warm(h, names)
            res = interleaved_gets(
                {
                    "small": (s.get, Refs(["small"], cfg.small, args.seed + 6), plain_ctx),
                    "huge": (h.get, Refs(names, cfg.per_engagement, args.seed + 7), plain_ctx),
                    "small-plain": (
                        read_without_audit(s),
                        Refs(["small"], cfg.small, 11),
                        plain_ctx,
                    ),
                    "huge-plain": (
                        read_without_audit(h),
                        Refs(names, cfg.per_engagement, 12),
                        plain_ctx,
                    ),
                },
                cfg.gets,
                cfg.rounds,
            )
    for key, n in (("small", cfg.small), ("huge", n_total)):
        g = res[key]
        rep.add(f"get latency at {n:,}: median / p95", f"{ms(median(g.lat))} / {ms(p95(g.lat))}")
        rep.add(f"get/s at {n:,}", f"{g.rate:,.0f} /s")
    ratio = median(res["huge"].lat) / median(res["small"].lat)
    rep.add(
        f"get latency ratio {n_total:,} / {cfg.small:,} (median)",
        f"{ratio:.2f}x",
        "<= 1.5x",
        ratio <= 1.5 if n_total >= 1_000_000 else None,
    )
    rep.add(
        f"get latency ratio {n_total:,} / {cfg.small:,} (p95)",
        f"{p95(res['huge'].lat) / p95(res['small'].lat):.2f}x",
    )
    sp, hp = res["small-plain"], res["huge-plain"]
    rep.add(
        "read path without audit txn: median at small / huge (diag.)",
        f"{ms(median(sp.lat))} / {ms(median(hp.lat))}",
    )
    rep.add(
        f"  ratio {n_total:,} / {cfg.small:,} without the fsync (diag.)",
        f"{median(hp.lat) / median(sp.lat):.2f}x",
    )


# -- main ---------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes: a smoke check (< 60 s)")
    g.add_argument("--full", action="store_true", help="also the 1,000,000-credential vault")
    ap.add_argument("--dir", type=Path, help="build the vaults here and keep them")
    ap.add_argument("--profile", action="store_true", help="cProfile the one-shot operations")
    ap.add_argument("--seed", type=int, default=20260101)
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    rep = Report(cfg)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="cvbench-", dir=args.dir))
    else:
        root = Path(tempfile.mkdtemp(prefix="cvbench-"))
    st = State(root, V.Clock(), root / "small", root / "big")
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        machine(rep, root)
        section_argon2(rep)
        section_issue2(rep, st, args)
        section_issue4_5_before_audit(rep, st, args)
        section_issue3(rep, st, args)
        section_open(rep, st, args)
        section_issue4_5_after_audit(rep, st, args)
        if cfg.full_engagements:
            section_issue7(rep, st, args)
    finally:
        for v in (st.small, st.big):
            if v is not None:
                v.close()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    rep.summary()
    wall = time.perf_counter() - t_start
    print(
        f"\nrun: {wall:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU in this "
        f"process; at the end: {load()}"
    )
    if args.dir is not None:
        print(f"vaults kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
