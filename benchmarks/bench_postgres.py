"""PostgreSQL team backend figures (issue 14): audited get in-process over a Unix socket and
over TCP with TLS (p50/p99), and aggregate audited reads/s from 16 client processes.

Starts a throwaway cluster exactly as the tests do (tests/pg_cluster.py: unprivileged, as
``credvault-pg`` when run as root), a credvault database on it, and members whose keys are
made here; every get is the full path: request_read (audit row committed), fetch, open the
sealed engagement-key copy and the envelope on this machine.

Targets from the issue: in-process p50 ≤ 1.5 ms on localhost TCP; ≥ 2,000 audited reads/s
across 16 clients on 2 cores. Whole-process ``credvault get`` against PostgreSQL is not
measured: the CLI does not speak PostgreSQL yet (docs/team.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from credvault.crypto import primitives
from credvault.postgres.client import Member, TeamVault, connect
from pg_cluster import PgVault, enable_tls, new_pg_vault, running_cluster


def setup(pg: PgVault) -> None:
    pg.add("bob")
    key = primitives.random_key()
    uid = os.urandom(16)
    with TeamVault(pg.connect("alice"), pg.keys["alice"]) as alice:
        alice.conn.execute(
            "SELECT credvault.create_engagement(%s, 'alpha', 'acme', 'fp', '\\x00', 'alice')",
            (uid,),
        )
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


def _client(args: tuple[str, str, bytes, bytes, int, Any]) -> int:
    conninfo, password, kem, sign, n, barrier = args
    with TeamVault(connect(conninfo, password=password), Member("bob", kem, sign)) as v:
        v.get("alpha", "db")
        barrier.wait()
        for _ in range(n):
            v.get("alpha", "db")
    return n


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:<40} p50 {statistics.median(ms):7.3f} ms   p99 {p99:7.3f} ms   (n={len(ms)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--reads", type=int, default=2000, help="gets per latency series")
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    n = 20 if args.quick else args.reads
    per_client = 5 if args.quick else 300
    with running_cluster() as cluster, tempfile.TemporaryDirectory() as d:
        pg = new_pg_vault(cluster)
        setup(pg)
        ca = enable_tls(cluster, Path(d))
        bob, pw = pg.keys["bob"], pg.passwords["bob"]
        unix = cluster.conninfo(pg.db, pg.role("bob"))
        tls = (
            f"host=localhost port={cluster.port} dbname={pg.db} user={pg.role('bob')} "
            f"sslmode=verify-full sslrootcert={ca}"
        )
        tcp = f"host=127.0.0.1 port={cluster.port} dbname={pg.db} user={pg.role('bob')} sslmode=disable"
        print(f"PostgreSQL audited get (two-phase + local decrypt), {n} reads each")
        report("in-process, Unix socket", latencies(unix, pw, bob, n))
        report("in-process, TCP localhost (no TLS)", latencies(tcp, pw, bob, n))
        report("in-process, TCP + TLS verify-full", latencies(tls, pw, bob, n))
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Manager().Barrier(args.clients + 1)
        with ctx.Pool(args.clients) as pool:
            job = pool.map_async(
                _client,
                [(unix, pw, bob.kem_private, bob.sign_private, per_client, barrier)] * args.clients,
            )
            barrier.wait()
            t = time.perf_counter()
            total = sum(job.get(600))
            dt = time.perf_counter() - t
        print(
            f"{args.clients} client processes, Unix socket: {total / dt:8.0f} audited reads/s "
            f"({total} reads in {dt:.2f} s)"
        )
        print("whole-process credvault get vs SQLCipher: not measured (no PostgreSQL CLI yet)")


if __name__ == "__main__":
    main()
