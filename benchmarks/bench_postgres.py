"""PostgreSQL team backend figures (issue 14): audited get in-process over a Unix socket and
over TCP with TLS (p50/p99), and aggregate audited reads/s from 16 client processes.

Starts a throwaway cluster exactly as the tests do (tests/pg_cluster.py: unprivileged, as
``credvault-pg`` when run as root), a credvault database on it, and members whose keys are
made here; every get is the full path: request_read (audit row committed), fetch, open the
sealed engagement-key copy and the envelope on this machine.

Also the product path in-process (``credvault.Team``, what the CLI runs), and whole-process
``credvault get`` against a team vault set up through the CLI (``init`` as the owner,
``engagement new``, ``put``) next to ``credvault get`` on a SQLCipher vault, both with the
same Argon2id parameters (MIN_KDF) and a passphrase file, run round-robin in the same run
so machine load hits both alike; the ratio is what is judged.

Targets from the issue: in-process p50 ≤ 1.5 ms on localhost TCP; ≥ 2,000 audited reads/s
across 16 clients on 2 cores; whole-process get within 1.2x of SQLCipher's.

The machine these run on is shared, so every figure comes with the load average, the
whole-process comparison also gives each side's median CPU time (user + system of the
child: what load barely changes), and the 16-client run also gives the CPU one read costs
the clients and the server, from which what two dedicated cores would sustain follows.
The ``credvault`` children run with a bytecode cache (``PYTHONPYCACHEPREFIX`` in a temp
directory, warmed first) even where the caller set ``PYTHONDONTWRITEBYTECODE``: an installed
credvault has its ``.pyc`` files, and compiling every module at each start would add the
same ~0.1 s to both sides and hide the ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from credvault import DEFAULT_KDF, MIN_KDF, Secret
from credvault.crypto import primitives
from credvault.postgres import bootstrap_sql, scram_verifier
from credvault.postgres.client import Member, TeamVault, connect
from pg_cluster import Cluster, PgVault, enable_tls, new_pg_vault, running_cluster

KDF_ARG = f"m={MIN_KDF.memory_kib},t={MIN_KDF.iterations},p={MIN_KDF.lanes}"
# The `credvault` this interpreter installed (the tree under measurement), not the first on
# PATH: another install (another checkout's editable one, say) would be measured instead.
_HERE = Path(sys.executable).parent / "credvault"
CREDVAULT = str(_HERE) if _HERE.exists() else (shutil.which("credvault") or str(_HERE))


# The set-up runner: each step in its person's environment, through the CLI's own main, in
# one process (as tests/postgres/test_contract.py sets up its worlds): set-up is not measured,
# and one interpreter start costs less than six.
_SETUP = """
import io, json, os, sys
from credvault.cli import main
for env, args, stdin in json.loads(sys.stdin.buffer.read()):
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    code = main(args)
    sys.stdout.flush()
    if code:
        sys.exit(f"set-up step {args[:2]} exited {code}")
"""


def _setup(steps: list[tuple[dict[str, str], list[str], str]]) -> None:
    """Run CLI commands (environment, argv, stdin) in one process through ``main``."""
    p = subprocess.run(
        [sys.executable, "-c", _SETUP],
        input=json.dumps(steps).encode(),
        capture_output=True,
        env=steps[0][0],
        timeout=240,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"CLI set-up failed: {p.stderr.decode()}")


def _cli(env: dict[str, str], *args: str) -> bytes:
    p = subprocess.run(
        [CREDVAULT, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"credvault {' '.join(args)}: {p.stderr.decode()}")
    return p.stdout


def cli_vaults(cluster: Cluster, d: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A SQLCipher vault and a team vault, each with alice (lead of alpha) and alpha/db,
    made through the CLI; returns each one's environment for ``credvault get``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CREDVAULT_", "PG")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    base["PYTHONPYCACHEPREFIX"] = str(d / "pycache")
    pw = d / "alice.pass"
    pw.write_text("alice-bench-passphrase\n")
    pw.chmod(0o600)
    envs = []
    for name in ("sqlite", "team"):
        home = d / f"home-{name}"
        home.mkdir(mode=0o700)
        envs.append(
            {
                **base,
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data"),
                "XDG_CACHE_HOME": str(home / "cache"),
                "XDG_RUNTIME_DIR": str(home),
                "CREDVAULT_MEMBER": "alice",
                "CREDVAULT_PASSPHRASE_FILE": str(pw),
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            }
        )
    sq, team = envs
    sq["CREDVAULT_VAULT"] = str(d / "vault")
    db = f"bench_{secrets.token_hex(3)}"
    owner, owner_pw = f"{db}_owner", secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_pw)))
    pgpass = Path(team["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{owner_pw}\n")
    pgpass.chmod(0o600)
    team_init = {**team, "CREDVAULT_VAULT": f"postgresql://{owner}@127.0.0.1:{cluster.port}/{db}"}
    team["CREDVAULT_VAULT"] = f"postgresql://127.0.0.1:{cluster.port}/{db}?sslmode=disable"
    steps = [
        (sq, ["init", "--kdf", KDF_ARG, "--recovery-file", str(d / "recovery")], ""),
        (team_init, ["init", "--kdf", KDF_ARG], ""),
    ]
    for env in (sq, team):
        steps.append((env, ["engagement", "new", "alpha", "--client", "acme"], ""))
        steps.append((env, ["put", "alpha/db"], "s3cret-password\n"))
    _setup(steps)
    return sq, team


def whole_process(
    sq: dict[str, str], team: dict[str, str], runs: int, warmup: int = 2
) -> dict[str, tuple[float, float]]:
    """(median wall ms, median CPU ms) of ``credvault get alpha/db`` on each, round-robin,
    after ``warmup`` unmeasured runs each (the bytecode cache; a smoke run has none: the
    set-up process already filled the cache)."""
    for _ in range(warmup):
        for env in (sq, team):
            _cli(env, "get", "alpha/db")
    wall: dict[str, list[float]] = {"sqlite": [], "team": []}
    cpu: dict[str, list[float]] = {"sqlite": [], "team": []}
    for _ in range(runs):
        for name, env in (("sqlite", sq), ("team", team)):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            out = _cli(env, "get", "alpha/db")
            wall[name].append((time.perf_counter() - t) * 1000)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            cpu[name].append(used * 1000)
            assert out == b"s3cret-password\n"
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}


def unlocked_team(
    team: dict[str, str], sq: dict[str, str], runs: int, warmup: int = 2
) -> dict[str, tuple[float, float]] | str:
    """(median wall ms, median CPU ms) of a team ``credvault get`` unlocked three ways, run
    round-robin: from the passphrase file (Argon2id every time; ``--no-keyring``), from the
    OS keyring after ``unlock --keyring`` (a private gnome-keyring Secret Service, as the
    tests run it; ``CREDVAULT_NO_AGENT=1``), and through the agent after ``unlock``; and,
    for scale, the SQLCipher vault's get from the same keyring. All but the first run
    without a passphrase file, so nothing else can answer. A string: why the keyring could
    not be measured."""
    from keyring_daemon import missing_binaries, secret_service

    missing = missing_binaries()
    if missing:
        return f"no Secret Service here (missing {', '.join(missing)})"
    with secret_service() as ss, tempfile.TemporaryDirectory(dir="/tmp") as run_dir:
        env = {k: v for k, v in team.items() if k != "PYTHON_KEYRING_BACKEND"}
        env["DBUS_SESSION_BUS_ADDRESS"] = ss["DBUS_SESSION_BUS_ADDRESS"]
        env["XDG_RUNTIME_DIR"] = run_dir  # the agent's socket: short and this run's own
        sq_env = {k: v for k, v in sq.items() if k != "PYTHON_KEYRING_BACKEND"}
        sq_env["DBUS_SESSION_BUS_ADDRESS"] = ss["DBUS_SESSION_BUS_ADDRESS"]
        _cli(env, "unlock", "--keyring", "--ttl", "1h")
        _cli(sq_env, "unlock", "--keyring", "--ttl", "1h")
        _cli(env, "unlock", "--ttl", "1h")
        bare = {k: v for k, v in env.items() if k != "CREDVAULT_PASSPHRASE_FILE"}
        sq_bare = {k: v for k, v in sq_env.items() if k != "CREDVAULT_PASSPHRASE_FILE"}
        ways = {
            "passphrase": ({**env, "CREDVAULT_NO_AGENT": "1"}, ("get", "--no-keyring", "alpha/db")),
            "keyring": ({**bare, "CREDVAULT_NO_AGENT": "1"}, ("get", "alpha/db")),
            "agent": (bare, ("get", "alpha/db")),
            "sqlcipher keyring": ({**sq_bare, "CREDVAULT_NO_AGENT": "1"}, ("get", "alpha/db")),
        }
        try:
            for _ in range(warmup):
                for e, argv in ways.values():
                    _cli(e, *argv)
            wall: dict[str, list[float]] = {k: [] for k in ways}
            cpu: dict[str, list[float]] = {k: [] for k in ways}
            for _ in range(runs):
                for name, (e, argv) in ways.items():
                    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t = time.perf_counter()
                    out = _cli(e, *argv)
                    wall[name].append((time.perf_counter() - t) * 1000)
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu[name].append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
                    assert out == b"s3cret-password\n"
        finally:
            _cli(env, "lock")  # ends the agent and deletes the keyring entry
            _cli(sq_env, "lock")
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}


def default_kdf_ms() -> float:
    """One Argon2id derivation at the default parameters (median of 3), in ms."""
    from credvault.crypto.passphrase import derive

    times = []
    for _ in range(3):
        t = time.perf_counter()
        derive(Secret(b"a passphrase"), bytes(16), DEFAULT_KDF)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def load() -> str:
    """The 1-minute load average: how busy the shared machine was."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def server_cpu(cluster: Cluster) -> float:
    """CPU seconds used so far by the postmaster and its live children (the backends)."""
    pm = cluster.postmaster_pid()
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(proc.name) == pm or int(fields[1]) == pm:
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def team_latencies(env: dict[str, str], n: int) -> list[float]:
    """The product path in-process: credvault.Team.credentials.get over TCP."""
    from credvault import Secret, Team

    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = env["XDG_CONFIG_HOME"]
    try:
        pw = Path(env["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
        with Team.open(env["CREDVAULT_VAULT"], "alice", Secret(pw)) as t:
            t.credentials.get("alpha/db")
            out = []
            for _ in range(n):
                s = time.perf_counter()
                t.credentials.get("alpha/db")
                out.append((time.perf_counter() - s) * 1000)
    finally:
        if old is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old
    return out


def setup(pg: PgVault) -> None:
    pg.add("bob")
    key = primitives.random_key()
    uid = os.urandom(16)
    pg.unlogged_engagement("alpha", uid=uid, key_fp="fp")
    with TeamVault(pg.connect("alice"), pg.keys["alice"]) as alice:
        for member, role in (("alice", "lead"), ("bob", "engineer")):
            sealed, sig = alice.seal_copy(uid, member, 1, key)
            alice.conn.execute(
                "SELECT credvault.put_grant('alpha', %s, %s, '\\x00', 1, %s, %s)",
                (member, role, sealed, sig),
            )
        alice.put("alpha", "db", b"s3cret-password")


def latencies(conninfo: str, password: str, me: Member, n: int) -> list[float]:
    out = []
    with TeamVault(connect(conninfo, password=password), me) as v:
        v.get("alpha", "db")  # warm: connection, prepared plans
        for _ in range(n):
            t = time.perf_counter()
            v.get("alpha", "db")
            out.append((time.perf_counter() - t) * 1000)
    return out


def _two_call_get(v: TeamVault, engagement: str, name: str) -> bytes:
    """The read as clients before section readclaim made it (request_read, then fetch: two
    round trips), for a schema without ``credvault.read`` (``--against`` an older tree)."""
    import psycopg

    from credvault.crypto import envelope

    req = v._read.execute(
        "SELECT credvault.request_read(%s, %s, %s)", (engagement, name, ""), prepare=True
    ).fetchone()[0]
    while True:
        try:
            row = v._read.execute(
                "SELECT secret_env, uid, key_version FROM credvault.fetch(%s)", (req,), prepare=True
            ).fetchone()
            break
        except psycopg.errors.ObjectNotInPrerequisiteState:  # others' WAL not flushed yet
            v.conn.execute("SELECT credvault.nudge_wal()")
    cached = v._keys.get(engagement)  # the engagement key opened once, as TeamVault.get keeps it
    if cached is None or cached[2] != int(row[2]):
        cached = v._keys[engagement] = v.engagement_key(engagement)
    eng_uid, key, _ = cached
    place = envelope.Place(v.vault_id, eng_uid, "credentials", bytes(row[1]), "secret")
    return envelope.open_(place, bytes(row[0]), key)


def _client(
    args: tuple[str, str, bytes, bytes, int, bool, Any, Any],
) -> tuple[int, float, float, float]:
    conninfo, password, kem, sign, n, two_calls, start, done = args
    with TeamVault(connect(conninfo, password=password), Member("bob", kem, sign)) as v:

        def get() -> bytes:
            return _two_call_get(v, "alpha", "db") if two_calls else v.get("alpha", "db")

        get()
        start.wait()
        cpu, t0 = time.process_time(), time.monotonic()
        for _ in range(n):
            get()
        cpu, t1 = time.process_time() - cpu, time.monotonic()
        done.wait()  # connected until the server's CPU is read (its backends then exit)
    return n, cpu, t0, t1


def _team_client(args: tuple[dict[str, str], int, Any, Any]) -> tuple[int, float, float, float]:
    """The product path in a client process: ``credvault.Team`` as the CLI opens it."""
    env, n, start, done = args
    os.environ.clear()
    os.environ.update(env)
    from credvault import Secret, Team

    pw = Path(env["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    with Team.open(env["CREDVAULT_VAULT"], "alice", Secret(pw)) as t:
        t.credentials.get("alpha/db")
        start.wait()
        cpu, t0 = time.process_time(), time.monotonic()
        for _ in range(n):
            t.credentials.get("alpha/db")
        cpu, t1 = time.process_time() - cpu, time.monotonic()
        done.wait()
    return n, cpu, t0, t1


def report(name: str, ms: list[float], target: float | None = 1.5) -> None:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    goal = f"   (target p50 <= {target} ms)" if target else ""
    print(
        f"{name:<40} p50 {statistics.median(ms):7.3f} ms   p99 {p99:7.3f} ms   (n={len(ms)}){goal}"
    )


def throughput(
    cluster: Cluster, d: Path, args: argparse.Namespace, n: int, per_client: int
) -> None:
    """The in-process latency series and the 16-client aggregate."""
    pg = new_pg_vault(cluster)
    setup(pg)
    ca = enable_tls(cluster, d)
    bob, pw = pg.keys["bob"], pg.passwords["bob"]
    unix = cluster.conninfo(pg.db, pg.role("bob"))
    tls = (
        f"host=localhost port={cluster.port} dbname={pg.db} user={pg.role('bob')} "
        f"sslmode=verify-full sslrootcert={ca}"
    )
    tcp = f"host=127.0.0.1 port={cluster.port} dbname={pg.db} user={pg.role('bob')} sslmode=disable"
    print(
        f"PostgreSQL audited get (request, claim, release in one call + local decrypt), {n} reads each"
    )
    report("in-process, Unix socket", latencies(unix, pw, bob, n))
    report("in-process, TCP localhost (no TLS)", latencies(tcp, pw, bob, n))
    report("in-process, TCP + TLS verify-full", latencies(tls, pw, bob, n))
    # A smoke run forks its clients: no interpreter start and imports for each (and for
    # the manager); a full run spawns them, as fresh processes.
    ctx = multiprocessing.get_context("fork" if args.quick else "spawn")
    sides = [("Unix socket", unix, pw, bob, False)]
    if args.against:
        # the server side of another tree, in the same cluster, alternately: what a schema
        # change did to throughput, whatever the machine's load. Its clients read as that
        # tree's did when it has no one-call read (section readclaim): request, then fetch.
        old = new_pg_vault_at(cluster, args.against)
        setup(old)
        with old.connect() as conn:
            two_calls = conn.execute("SELECT to_regproc('credvault.read') IS NULL").fetchone()[0]
        sides.append(
            (
                f"Unix socket [schema of {args.against}]",
                cluster.conninfo(old.db, old.role("bob")),
                old.passwords["bob"],
                old.keys["bob"],
                bool(two_calls),
            )
        )
    for _ in range(1 if args.quick else args.rounds):
        for label, conninfo, password, member, two in sides:
            job = (conninfo, password, member.kem_private, member.sign_private, per_client, two)
            clients_round(ctx, cluster, args, label, _client, job)


def new_pg_vault_at(cluster: Cluster, rev: str) -> PgVault:
    """A vault whose schema is ``rev``'s (``git show REV:src/credvault/postgres/...``)."""
    from credvault.postgres import server

    root = Path(__file__).resolve().parent.parent

    def text(version: int) -> str:
        name = "schema.sql" if version == 1 else f"upgrade-{version}.sql"
        return subprocess.run(
            ["git", "-C", str(root), "show", f"{rev}:src/credvault/postgres/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    current = server._schema_text
    server._schema_text = text
    try:
        return new_pg_vault(cluster)
    finally:
        server._schema_text = current


def clients_round(
    ctx: Any,
    cluster: Cluster,
    args: argparse.Namespace,
    label: str,
    client: Any,
    job: tuple[Any, ...],
) -> None:
    """One round: ``args.clients`` processes reading at once, the server's CPU beside.

    The round's time is the clients' own: from the first client's start to the last one's
    end, each read on CLOCK_MONOTONIC (one clock for every process). This process only
    waits for them now and then (every 50 ms, to read the server's CPU while their backends
    still live): it used to ask the manager every 2 ms, a round trip that took CPU from
    the round it timed."""
    manager = ctx.Manager()
    start, done = manager.Barrier(args.clients + 1), manager.Barrier(args.clients + 1)
    with ctx.Pool(args.clients) as pool:
        running = pool.map_async(client, [(*job, start, done)] * args.clients)
        try:
            start.wait(120)  # a client that fails before it: the barrier breaks, not hangs
        except threading.BrokenBarrierError:
            running.get(60)  # that client's error
            raise
        server0 = server_cpu(cluster)
        while done.n_waiting < args.clients:
            if running.ready():  # a client failed before the finish line: say why
                running.get()
            time.sleep(0.05)
        server = server_cpu(cluster) - server0
        done.wait()
        results = running.get(600)
    manager.shutdown()
    total = sum(r[0] for r in results)
    dt = max(r[3] for r in results) - min(r[2] for r in results)
    per_read = (sum(r[1] for r in results) + server) / total * 1000
    print(
        f"{args.clients} client processes, {label}: {total / dt:8.0f} audited "
        f"reads/s ({total} reads in {dt:.2f} s; {load()}; target >= 2,000/s); CPU per "
        f"read: clients {sum(r[1] for r in results) / total * 1000:.3f} ms + server "
        f"{server / total * 1000:.3f} ms = {per_read:.3f} ms, i.e. two dedicated cores "
        f"would sustain ~{2000 / per_read:,.0f}/s",
        flush=True,
    )
    _RATES.setdefault(label, []).append(total / dt)


# reads/s of every round so far, by label: the summary judges the target on all of them
_RATES: dict[str, list[float]] = {}


def rounds_summary() -> None:
    """Per path: the median, the range and how many rounds met 2,000/s. One round is ~2 s
    on a shared host whose speed drifts by ±15 % from minute to minute (the same round on
    the same tree has measured 1,750 and 2,330): no single round decides."""
    for label, rates in _RATES.items():
        met = sum(r >= 2000 for r in rates)
        print(
            f"  {label}: median {statistics.median(rates):,.0f} reads/s over {len(rates)} "
            f"rounds ({min(rates):,.0f}-{max(rates):,.0f}); {met} of {len(rates)} at >= 2,000/s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--reads", type=int, default=2000, help="gets per latency series")
    ap.add_argument("--clients", type=int, help="client processes (default 16; --quick 2)")
    ap.add_argument("--runs", type=int, default=30, help="whole-process gets per backend")
    ap.add_argument("--rounds", type=int, default=3, help="16-client throughput rounds")
    ap.add_argument(
        "--fsync-off",
        action="store_true",
        help="run the cluster as the tests do (fsync and full_page_writes off): the CPU-bound ceiling, not a "
        "production server's figure",
    )
    ap.add_argument(
        "--against",
        metavar="REV",
        help="also run each throughput round against the server schema of git revision REV",
    )
    ap.add_argument(
        "--unlock-only",
        action="store_true",
        help="only the whole-process gets (SQLCipher, team; team unlocked three ways)",
    )
    args = ap.parse_args()
    n = 10 if args.quick else args.reads
    per_client = 25 if args.quick else 300
    # A smoke run: two clients (the concurrent path still runs), each process spawned costs
    # an interpreter start and credvault's imports.
    args.clients = args.clients or (2 if args.quick else 16)
    # fsync on by default: a production server's commits reach the disk (the SQLCipher side
    # of the whole-process comparison fsyncs too); the tests' clusters run with fsync off
    print(f"start: {load()}; cluster with fsync {'off' if args.fsync_off else 'on'}")
    with (
        running_cluster("" if args.fsync_off else "fsync = on\nfull_page_writes = on\n") as cluster,
        tempfile.TemporaryDirectory() as d,
    ):
        if not args.unlock_only:
            throughput(cluster, Path(d), args, n, per_client)
        sq, team = cli_vaults(cluster, Path(d))
        if not args.unlock_only:
            report("in-process credvault.Team get, TCP", team_latencies(team, n))
            # the same rounds through the product's own path (what the CLI opens), over TCP
            ctx = multiprocessing.get_context("fork" if args.quick else "spawn")
            for _ in range(1 if args.quick else args.rounds):
                label = "credvault.Team over TCP"
                clients_round(ctx, cluster, args, label, _team_client, (team, per_client))
            print(f"{args.clients} client processes, every round:")
            rounds_summary()
        runs = 1 if args.quick else args.runs
        got = whole_process(sq, team, runs, 0 if args.quick else 2)
        (aw, ac), (bw, bc) = got["sqlite"], got["team"]
        print(
            f"whole-process credvault get, median of {runs} interleaved ({load()}): "
            f"SQLCipher {aw:.1f} ms wall / {ac:.1f} ms CPU, PostgreSQL (TCP) {bw:.1f} ms wall / "
            f"{bc:.1f} ms CPU; ratio {bw / aw:.2f}x wall, {bc / ac:.2f}x CPU (target <= 1.2x)"
        )
        ways = unlocked_team(team, sq, runs, 0 if args.quick else 2)
        if isinstance(ways, str):
            print(f"team get unlocked once: not measured: {ways}")
        else:
            (pw_w, pw_c), (kr_w, kr_c), (ag_w, ag_c), (sk_w, sk_c) = ways.values()
            print(
                f"team credvault get unlocked once, median of {runs} interleaved ({load()}): "
                f"passphrase file {pw_w:.1f} ms wall / {pw_c:.1f} ms CPU, OS keyring "
                f"{kr_w:.1f} / {kr_c:.1f} ms ({kr_w / pw_w:.2f}x wall), agent {ag_w:.1f} / "
                f"{ag_c:.1f} ms ({ag_w / pw_w:.2f}x wall); SQLCipher get from the same OS "
                f"keyring {sk_w:.1f} / {sk_c:.1f} ms"
            )
            print(
                f"  (these vaults use MIN_KDF; with the default Argon2id (m="
                f"{DEFAULT_KDF.memory_kib} KiB, t={DEFAULT_KDF.iterations}, "
                f"p={DEFAULT_KDF.lanes}) the "
                f"passphrase path adds {default_kdf_ms():.0f} ms here to every get, the "
                "keyring and the agent nothing)"
            )


if __name__ == "__main__":
    main()
