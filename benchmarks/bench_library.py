"""In-process figures of the credvault library, through its public API only.

    python benchmarks/bench_library.py [--quick | --full] [--dir DIR] [--profile] [--seed N]

Default: vaults of 1,000 and 100,000 credentials (10 engagements of 10,000) and an audit trail
of 1,000,000 entries. ``--quick`` runs every section at tiny sizes in a few seconds (a smoke
check: targets are shown, not judged). ``--full`` adds a vault of 1,000,000 credentials. Every
headline figure is printed with its target and whether it is met; a summary ends the run.
Vaults live in a temporary directory unless ``--dir`` is given (then they are kept).

Members unlock with the cheapest Argon2id the vault accepts (``MIN_KDF``) except where
Argon2id itself is timed. Rates are single library calls in a loop (each ``put`` and ``get``
commits its audit entry with ``synchronous=FULL``); latency samples are per call; ratios are
taken between variants measured in alternating slices of the same run. The only non-public
call is the documented test seam that writes the synthetic audit trail (see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import random  # noqa: TID251 - seeded, reproducible choice of which credential to read
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from argon2.low_level import Type, hash_secret_raw

from benchmarks import _vaults as V
from benchmarks._report import (
    Figures,
    Stats,
    fmt_ms,
    fmt_rate,
    fmt_s,
    machine,
    note,
    ratio,
    timed,
)
from credvault import DEFAULT_KDF, MIN_KDF, KdfParams, Vault


# -- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    mode: str
    small: int  # credentials in the small vault (1,000)
    engagements: int  # engagements in the big vault
    per_engagement: int  # credentials per engagement (10,000)
    audit_total: int  # audit entries in the big vault (1,000,000)
    gets: int  # timed gets per variant (split into rounds)
    puts: int  # timed puts per vault
    rounds: int  # interleaved rounds, so load changes hit every variant alike
    open_runs: int  # timed Vault.open calls
    due_runs: int  # timed due checks on an open vault
    kdf_runs: int  # Argon2id derivations per parameter set
    full_engagements: int  # engagements of per_engagement in the --full vault (100)

    @property
    def big(self) -> int:
        return self.engagements * self.per_engagement

    @property
    def judged(self) -> bool:
        """Targets are only judged at the sizes they name."""
        return self.mode != "quick"


DEFAULT = Config("default", 1_000, 10, 10_000, 1_000_000, 3_000, 1_000, 3, 20, 1_000, 3, 0)
# A smoke run: one round, a handful of calls per figure (each durable call waits on an fsync).
QUICK = Config("quick", 50, 4, 50, 2_000, 20, 10, 1, 1, 10, 1, 0)
FULL = Config("full", 1_000, 10, 10_000, 1_000_000, 3_000, 1_000, 3, 20, 1_000, 3, 100)


@dataclass
class State:
    cfg: Config
    fig: Figures
    root: Path
    clock: V.Clock
    small_path: Path
    big_path: Path
    args: argparse.Namespace
    small: Vault | None = None
    big: Vault | None = None

    def big_vault(self) -> Vault:
        assert self.big is not None
        return self.big

    def small_vault(self) -> Vault:
        assert self.small is not None
        return self.small


# -- small helpers ------------------------------------------------------------------------
def at(applies: bool, ok: bool) -> bool | None:
    """A target is judged only at the sizes it names (None: shown, not judged)."""
    return ok if applies else None


@contextlib.contextmanager
def cpu_time() -> Iterator[list[float]]:
    """Process CPU seconds of the block, in the yielded one-element list (wall time minus
    this is waiting: disk or other load)."""
    out = [0.0]
    c0 = time.process_time()
    try:
        yield out
    finally:
        out[0] = time.process_time() - c0


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
        pstats.Stats(pr, stream=sys.stdout).sort_stats("cumulative").print_stats(18)


def fsync_floor(directory: Path, runs: int = 300) -> Stats:
    """Overwriting 4 KiB of a preallocated file + fsync (what SQLite does at each WAL commit)
    on the vault's file system: the floor under every durable audited call."""
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
    return Stats.of_seconds(samples)


def argon2id(params: KdfParams, salt: bytes) -> bytes:
    """One Argon2id derivation at ``params`` (what unlocking with a passphrase costs)."""
    return hash_secret_raw(
        b"bench passphrase",
        salt,
        time_cost=params.iterations,
        memory_cost=params.memory_kib,
        parallelism=params.lanes,
        hash_len=32,
        type=Type.ID,
    )


class Refs:
    """Credential references to read, chosen uniformly at random over whole engagements."""

    def __init__(self, engagements: Sequence[str], per_engagement: int, seed: int) -> None:
        self.engagements = list(engagements)
        self.per = per_engagement
        self.rng = random.Random(seed)

    def next(self) -> str:
        eng = self.engagements[self.rng.randrange(len(self.engagements))]
        return f"{eng}/{V.cred_name(self.rng.randrange(self.per))}"


@dataclass
class Calls:
    """Per-call latencies (seconds), total wall and CPU seconds of a series of calls."""

    lat: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0

    @property
    def stats(self) -> Stats:
        return Stats.of_seconds(self.lat)

    @property
    def rate(self) -> float:
        return len(self.lat) / self.wall

    @property
    def cpu_per_call_ms(self) -> float:
        return self.cpu / len(self.lat) * 1000.0


def run_calls(fn: Callable[[], object], n: int, into: Calls) -> None:
    c0, t_all = time.process_time(), time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        into.lat.append(time.perf_counter() - t0)
    into.wall += time.perf_counter() - t_all
    into.cpu += time.process_time() - c0


def interleaved_gets(
    variants: dict[str, tuple[Vault, Refs]], n: int, rounds: int
) -> dict[str, Calls]:
    """n durable gets per variant, in ``rounds`` alternating slices (fair under a changing
    load, so their ratios are same-run ratios)."""
    out = {k: Calls() for k in variants}
    per = max(1, n // rounds)
    for _ in range(rounds):
        for k, (v, refs) in variants.items():
            run_calls(lambda v=v, refs=refs: v.get(refs.next()), per, out[k])  # type: ignore[misc]
    return out


def warm(v: Vault, engagements: Sequence[str]) -> None:
    """One read per engagement: opens and caches each engagement key (not timed)."""
    for e in engagements:
        v.get(f"{e}/{V.cred_name(0)}")


def report_gets(fig: Figures, label: str, c: Calls) -> None:
    fig.add(f"get/s at {label} (durable audit entry each)", fmt_rate(c.rate))
    fig.add(f"  get latency at {label}: median / p99", c.stats.brief())
    fig.add("  CPU per get (the rest is waiting: fsync, load)", fmt_ms(c.cpu_per_call_ms))


# -- sections -----------------------------------------------------------------------------
def section_argon2(st: State) -> None:
    st.fig.section("Argon2id: one passphrase derivation")
    salt = os.urandom(16)
    for label, params in (("DEFAULT_KDF", DEFAULT_KDF), ("MIN_KDF", MIN_KDF)):
        s = Stats.of_seconds(
            [timed(lambda p=params: argon2id(p, salt))[0] for _ in range(st.cfg.kdf_runs)]  # type: ignore[misc]
        )
        st.fig.add(
            f"Argon2id {label} m={params.memory_kib},t={params.iterations},p={params.lanes}",
            fmt_ms(s.median),
        )


def section_put_get(st: State) -> None:
    cfg, fig, args = st.cfg, st.fig, st.args
    fig.section(f"put and get at {cfg.small:,} vs {cfg.big:,} credentials, bulk insert")
    V.create_vault(st.small_path, st.clock, ("bob",))
    st.small = s = V.open_vault(st.small_path, st.clock)
    s.engagements.create("small", "client")
    t_small = V.fill_engagement(s, "small", cfg.small).total_seconds
    note(f"small vault: {cfg.small:,} credentials inserted in {fmt_s(t_small)}")
    V.create_vault(st.big_path, st.clock, ("bob", "carol", "dave"))
    st.big = b = V.open_vault(st.big_path, st.clock)
    names = [V.eng_name(i) for i in range(cfg.engagements)]
    with maybe_profile(args.profile, "big vault build"):
        build = V.build_engagements(b, names, cfg.per_engagement)
    assert V.credential_count(b) == cfg.big
    note(
        f"big vault: {cfg.big:,} credentials in {cfg.engagements} engagements built in "
        f"{fmt_s(build.total_seconds)} ({cfg.big / build.total_seconds:,.0f} credentials/s)"
    )
    chunk = min(V.CHUNK, cfg.per_engagement)
    bulk = Stats.of_seconds(build.chunk_seconds)
    fig.add(
        f"bulk insert of {chunk:,} (put_many), median of {bulk.n}",
        fmt_s(bulk.median / 1000),
        "< 1 s",
        at(chunk == 10_000, bulk.median < 1000),
    )
    fig.add(
        f"bulk insert of {chunk:,} (put_many), slowest call",
        fmt_s(bulk.max / 1000),
        "< 1 s",
        at(chunk == 10_000, bulk.max < 1000),
    )

    warm(s, ["small"])
    warm(b, names)
    res = interleaved_gets(
        {
            "small": (s, Refs(["small"], cfg.small, args.seed)),
            "big": (b, Refs(names, cfg.per_engagement, args.seed + 1)),
        },
        cfg.gets,
        cfg.rounds,
    )
    report_gets(fig, f"{cfg.small:,}", res["small"])
    report_gets(fig, f"{cfg.big:,}", res["big"])
    r = ratio(res["big"].stats.median, res["small"].stats.median)
    fig.add(
        f"get latency {cfg.big:,} / {cfg.small:,} (median, same run)",
        f"{r:.2f}x",
        "<= 1.5x",
        at(cfg.small == 1_000 and cfg.big >= 100_000, r <= 1.5),
    )
    fig.add(
        f"get latency {cfg.big:,} / {cfg.small:,} (p99, same run)",
        f"{ratio(res['big'].stats.p99, res['small'].stats.p99):.2f}x",
    )

    puts = {"small": Calls(), "big": Calls()}
    per = max(1, cfg.puts // cfg.rounds)
    counter = iter(range(10**9))
    for _ in range(cfg.rounds):
        for key, vv, eng in (("small", s, "small"), ("big", b, names[0])):

            def put(vv: Vault = vv, eng: str = eng) -> None:
                i = next(counter)
                vv.credentials.put(f"{eng}/p{i:07d}", V.secret_value(i))

            run_calls(put, per, puts[key])
    for key, n in (("small", cfg.small), ("big", cfg.big)):
        fig.add(f"put/s at {n:,} credentials (single put, durable)", fmt_rate(puts[key].rate))
        fig.add(f"  put latency at {n:,}: median / p99", puts[key].stats.brief())


def revoke_once(st: State, eng: str, label: str, reads: int = 5) -> None:
    """Grant bob engineer on ``eng``, let him read a few credentials, then time the revoke."""
    b = st.big_vault()
    b.engagements.grant(eng, "bob", "engineer")
    with V.open_vault(st.big_path, st.clock, "bob") as bob:
        for i in range(reads):
            bob.get(f"{eng}/{V.cred_name(i)}")
    n_creds = V.credential_count(b, eng)
    with maybe_profile(st.args.profile, f"revoke {label}"), cpu_time() as cpu:
        t, read = timed(lambda: b.engagements.revoke(eng, "bob"))
    assert {V.cred_name(i) for i in range(reads)} <= set(read), read
    note(f"revoke {eng}: {len(read):,} credentials reported as read by bob")
    st.fig.add(
        f"revoke + key rotation, engagement of {n_creds:,} ({label})",
        fmt_s(t),
        "< 2 s",
        at(n_creds == 10_000, t < 2.0),
    )
    st.fig.add("  CPU time (this process)", fmt_s(cpu[0]))


def member_rm_once(st: State, member: str, grant_on: str, label: str) -> None:
    b = st.big_vault()
    b.engagements.grant(grant_on, member, "reader")
    n = V.credential_count(b)
    size = V.vault_bytes(st.big_path)
    with maybe_profile(st.args.profile, f"member rm {label}"), cpu_time() as cpu:
        t, _ = timed(lambda: b.members.remove(member))
    assert member not in {m.name for m in b.members.list()}
    assert V.credential_count(b) == n
    st.fig.add(
        f"member rm (re-key), {n:,} credentials, db {size / 2**20:,.0f} MiB ({label})",
        fmt_s(t),
        "< 20 s",
        at(n >= 100_000, t < 20.0),
    )
    st.fig.add("  CPU time (this process)", fmt_s(cpu[0]))
    # member rm only marks the member's engagements; the lead's next use rotates them.
    assert b.engagements.get(grant_on).needs_rotation
    n_eng = V.credential_count(b, grant_on)
    t, _ = timed(lambda: b.get(f"{grant_on}/{V.cred_name(0)}"))
    assert not b.engagements.get(grant_on).needs_rotation
    st.fig.add(f"  + deferred rotation: lead's next get on {grant_on} ({n_eng:,})", fmt_s(t))


def purge_once(st: State, eng: str, label: str) -> None:
    b = st.big_vault()
    total = V.credential_count(b)
    n_eng = V.credential_count(b, eng)
    b.engagements.close(eng, grace_days=1)
    st.clock.advance(days=2)
    size = V.vault_bytes(st.big_path)
    with maybe_profile(st.args.profile, f"purge {label}"), cpu_time() as cpu:
        t, done = timed(b.purge)
    assert [d.engagement for d in done] == [eng], done
    assert V.credential_count(b) == total - n_eng
    st.fig.add(
        f"purge of {n_eng:,} in {total:,}, db {size / 2**20:,.0f} MiB ({label})",
        fmt_s(t),
        "< 5 s",
        at(n_eng == 10_000 and total >= 100_000, t < 5.0),
    )
    st.fig.add("  CPU time (this process)", fmt_s(cpu[0]))
    note(f"db after the purge: {V.vault_bytes(st.big_path) / 2**20:,.0f} MiB")


def section_maintenance_short_trail(st: State) -> None:
    cfg = st.cfg
    st.fig.section(
        f"revoke with key rotation, member removal (re-key), purge: {cfg.big:,} credentials, "
        "short audit trail"
    )
    revoke_once(st, V.eng_name(1), "short trail")
    member_rm_once(st, "carol", V.eng_name(cfg.engagements - 1), "short trail")
    purge_once(st, V.eng_name(cfg.engagements - 2), "short trail")
    top = V.eng_name(cfg.engagements)  # back to the big size with a fresh engagement
    V.build_engagements(st.big_vault(), [top], cfg.per_engagement)
    note(f"topped up with {top}: {V.credential_count(st.big_vault()):,} credentials")


def read_engagements(cfg: Config) -> list[str]:
    """Engagements of the big vault that stay readable (not purged, no rotation pending)."""
    return [V.eng_name(i) for i in range(cfg.engagements - 2)] + [V.eng_name(cfg.engagements)]


def section_audit(st: State) -> None:
    cfg, fig, b = st.cfg, st.fig, st.big_vault()
    fig.section(
        f"durable audited get and audit verify: {cfg.big:,} credentials, "
        f"{cfg.audit_total:,} audit entries"
    )
    t = V.append_audit(
        b, cfg.audit_total, engagements=read_engagements(cfg), per_engagement=cfg.per_engagement
    )
    note(
        f"{cfg.audit_total:,} chained audit entries appended (test seam) in {fmt_s(t)}; "
        f"db {V.vault_bytes(st.big_path) / 2**20:,.0f} MiB"
    )
    fs = fsync_floor(st.big_path, 30 if cfg.mode == "quick" else 300)
    fig.add("fsync floor (overwrite 4 KiB + fsync): median / p99", fs.brief())
    engs = read_engagements(cfg)
    warm(b, engs)
    with maybe_profile(st.args.profile, "durable gets"):
        res = interleaved_gets(
            {"big": (b, Refs(engs, cfg.per_engagement, st.args.seed + 2))}, cfg.gets, cfg.rounds
        )
    d = res["big"]
    fig.add(
        "get/s, audit entry committed durably",
        fmt_rate(d.rate),
        ">= 2,000/s",
        at(cfg.big >= 100_000 and cfg.audit_total >= 1_000_000, d.rate >= 2000),
    )
    fig.add("  latency median / p99", d.stats.brief())
    fig.add("  CPU per get", fmt_ms(d.cpu_per_call_ms))
    fig.add("  median get / median fsync (same run)", f"{ratio(d.stats.median, fs.median):.1f}x")
    with maybe_profile(st.args.profile, "audit verify"), cpu_time() as cpu:
        t, count = timed(b.audit_verify)
    assert count >= cfg.audit_total, (count, cfg.audit_total)
    fig.add(
        f"audit verify of {count:,} entries",
        fmt_s(t),
        "< 10 s",
        at(count >= 1_000_000, t < 10.0),
    )
    fig.add("  CPU time of the verify (this process)", fmt_s(cpu[0]))


def section_open(st: State) -> None:
    cfg, fig, b = st.cfg, st.fig, st.big_vault()
    fig.section("opening a vault when nothing is due: the due check and the whole open")
    assert b.purge(dry_run=True) == []
    due = Stats.of_seconds([timed(lambda: b.purge(dry_run=True))[0] for _ in range(cfg.due_runs)])
    fig.add(
        f"due check (purge --dry-run: the due-engagement query), median of {due.n}",
        fmt_ms(due.median),
        "< 1 ms",
        due.median < 1.0,
    )
    fig.add("  p99", fmt_ms(due.p99))
    b.close()
    st.big = None
    st.small_vault().close()
    st.small = None
    salt = os.urandom(16)
    opens: dict[str, list[float]] = {"small": [], "big": [], "argon2": []}
    for _ in range(cfg.open_runs):  # alternating: same-run ratios
        for label, path in (("small", st.small_path), ("big", st.big_path)):
            t, v = timed(lambda p=path: V.open_vault(p, st.clock))  # type: ignore[misc]
            v.close()
            opens[label].append(t)
        opens["argon2"].append(timed(lambda: argon2id(MIN_KDF, salt))[0])
    small, big, kdf = (Stats.of_seconds(opens[k]) for k in ("small", "big", "argon2"))
    fig.add(f"Vault.open, {cfg.small:,} credentials (MIN_KDF), median", fmt_ms(small.median))
    fig.add(f"Vault.open, {cfg.big:,} + audit trail, median", fmt_ms(big.median))
    fig.add("  of which Argon2id MIN_KDF (same run)", fmt_ms(kdf.median))
    fig.add(
        "  open(big) - open(small): what grows with the vault", fmt_ms(big.median - small.median)
    )
    st.big = V.open_vault(st.big_path, st.clock)


def section_maintenance_long_trail(st: State) -> None:
    cfg = st.cfg
    st.fig.section(
        f"revoke with key rotation, member removal (re-key), purge: {cfg.audit_total:,}-entry "
        "audit trail"
    )
    revoke_once(st, V.eng_name(cfg.engagements), "long trail")
    member_rm_once(st, "dave", V.eng_name(cfg.engagements - 1), "long trail")
    purge_once(st, V.eng_name(cfg.engagements - 1), "long trail")


def section_huge(st: State) -> None:
    cfg, fig = st.cfg, st.fig
    n_total = cfg.full_engagements * cfg.per_engagement
    fig.section(f"get latency at {n_total:,} vs {cfg.small:,} credentials")
    path = st.root / "huge"
    V.create_vault(path, st.clock, ())
    names = [V.eng_name(i) for i in range(cfg.full_engagements)]
    with V.open_vault(path, st.clock) as h:
        build = V.build_engagements(h, names, cfg.per_engagement)
        assert V.credential_count(h) == n_total
        fig.add(
            f"build of {n_total:,} credentials (put_many of {V.CHUNK:,})",
            fmt_s(build.total_seconds),
        )
        with V.open_vault(st.small_path, st.clock) as s:
            warm(s, ["small"])
            warm(h, names)
            res = interleaved_gets(
                {
                    "small": (s, Refs(["small"], cfg.small, st.args.seed + 6)),
                    "huge": (h, Refs(names, cfg.per_engagement, st.args.seed + 7)),
                },
                cfg.gets,
                cfg.rounds,
            )
    report_gets(fig, f"{cfg.small:,}", res["small"])
    report_gets(fig, f"{n_total:,}", res["huge"])
    r = ratio(res["huge"].stats.median, res["small"].stats.median)
    fig.add(
        f"get latency {n_total:,} / {cfg.small:,} (median, same run)",
        f"{r:.2f}x",
        "<= 1.5x",
        at(n_total >= 1_000_000, r <= 1.5),
    )


# -- main ---------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check (seconds)")
    g.add_argument("--full", action="store_true", help="also the 1,000,000-credential vault")
    ap.add_argument("--dir", type=Path, help="build the vaults here and keep them")
    ap.add_argument("--profile", action="store_true", help="cProfile the one-shot operations")
    ap.add_argument("--seed", type=int, default=20260101)
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="cvbench-", dir=args.dir))
    else:
        root = Path(tempfile.mkdtemp(prefix="cvbench-"))
    st = State(cfg, Figures(judged=cfg.judged), root, V.Clock(), root / "small", root / "big", args)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    machine(
        "credvault library benchmarks (in-process, public API)",
        cfg.mode,
        [("vault dir", str(root))],
    )
    try:
        section_argon2(st)
        section_put_get(st)
        section_maintenance_short_trail(st)
        section_audit(st)
        section_open(st)
        section_maintenance_long_trail(st)
        if cfg.full_engagements:
            section_huge(st)
    finally:
        for v in (st.small, st.big):
            if v is not None:
                v.close()
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    st.fig.summary()
    print(
        f"\nrun: {time.perf_counter() - t_start:.0f} s wall, "
        f"{time.process_time() - cpu_start:.0f} s CPU in this process"
    )
    if args.dir is not None:
        print(f"vaults kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
