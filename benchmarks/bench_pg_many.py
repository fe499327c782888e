"""What pinning costs the reads that release many rows (issue 14, upgrade-2.sql section
pinmany): a field search, a client export and a rotation's read of one engagement, each a
request (its audit entries committed) and its phase two, on the server alone.

One engagement holds N credentials (each written twice, so N earlier versions), N systems
and N/10 removed credentials; envelopes are opaque bytes to the server, so random ones
stand in. Each read is timed end to end from one member's session (request, then the
phase two as the client calls it), alternately against this tree's schema and, with
``--against REV``, git revision REV's, in the same cluster, so load hits both alike; the
median of each and their ratio are printed. Starts its own throwaway cluster as the tests
do (Debian's ``postgresql``; the ``postgres`` extra).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_postgres import load, new_pg_vault_at
from pg_cluster import PgVault, fetch_as_a_client, new_pg_vault, running_cluster

# (label, who, phase one, phase two)
READS = [
    ("find (fields)", "bob", "SELECT credvault.request_find('alpha')", "fetch_find"),
    (
        "client export",
        "bob",
        "SELECT credvault.request_export_records('alpha', 'bench')",
        "fetch_export_records",
    ),
    (
        "rotation's read",
        "alice",
        "SELECT credvault.request_rotation('alpha')",
        "rotation_fetch_records",
    ),
]


def fill(pg: PgVault, n: int) -> None:
    """alpha: n credentials written twice, n systems, n/10 of the credentials removed."""
    pg.add("bob")
    pg.engagement("alpha")
    pg.grant("alice", "alpha", "bob", "engineer")
    with pg.connect("alice") as alice:
        for i in range(n):
            for _ in range(2):
                alice.execute(
                    "SELECT credvault.put_credential('alpha', %s, 'password', %s, 1, %s)",
                    (f"c{i}", os.urandom(16), os.urandom(60)),
                )
            alice.execute(
                "SELECT credvault.put_system('alpha', %s, %s, 1, 22, 'ssh', %s, NULL, false,"
                " ARRAY['address', 'port', 'protocol'])",
                (f"s{i}", os.urandom(16), os.urandom(40)),
            )
        for i in range(0, n, 10):
            alice.execute("SELECT * FROM credvault.remove_credential('alpha', %s)", (f"c{i}",))


def one(conn: Any, ask: str, fetch: str) -> tuple[float, int]:
    """Request and phase two, as the client calls them: (ms, rows released)."""
    start = time.perf_counter()
    req = conn.execute(ask).fetchone()[0]
    rows = fetch_as_a_client(conn, req, "count(*)", fetch)
    return (time.perf_counter() - start) * 1000, int(rows[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--records", type=int, default=1000, help="credentials (and systems)")
    ap.add_argument("--runs", type=int, default=20, help="reads of each kind per schema")
    ap.add_argument("--against", metavar="REV", help="also time git revision REV's schema")
    args = ap.parse_args()
    n = 20 if args.quick else args.records
    runs = 3 if args.quick else args.runs
    print(
        f"start: {load()}; {n} credentials (and {n} earlier versions), {n} systems, {n // 10} removed"
    )
    with running_cluster("fsync = on\nfull_page_writes = on\n") as cluster:
        vaults = {"this tree": new_pg_vault(cluster)}
        if args.against:
            vaults[args.against] = new_pg_vault_at(cluster, args.against)
        for pg in vaults.values():
            fill(pg, n)
        conns = {
            (name, who): pg.connect(who) for name, pg in vaults.items() for who in ("alice", "bob")
        }
        for label, who, ask, fetch in READS:
            times: dict[str, list[float]] = {name: [] for name in vaults}
            rows = {}
            for _ in range(runs):
                for name in vaults:  # alternately
                    ms, rows[name] = one(conns[(name, who)], ask, fetch)
                    times[name].append(ms)
            med = {name: statistics.median(t) for name, t in times.items()}
            line = ", ".join(f"{name} {med[name]:.1f} ms ({rows[name]} rows)" for name in vaults)
            ratio = f"; ratio {med['this tree'] / med[args.against]:.2f}x" if args.against else ""
            print(f"{label:<16} median of {runs}: {line}{ratio}")
        for c in conns.values():
            c.close()
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
