"""Mixed operations across N processes with membership churn (issue 13 figures).

``python benchmarks/bench_churn.py [SECONDS] [PROCESSES]`` (defaults 120 s, 8): one vault,
PROCESSES-1 library workers mixing put/get/grant/revoke/rotate on two engagements, and one
admin process churning members (add, passwd, reset, rm). Prints ops/s, errors by class (an
IntegrityError is exit 6: must be 0), lost acknowledged writes (must be 0), and how long
``member rm`` waited for the vault (p50/p99), plus the cost of one membership change.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from credvault import MIN_KDF, Vault
from credvault.errors import CredvaultError, IntegrityError

ENGS = ("acme-2026", "beta-2026")


def _open(path: Path, who: str) -> Vault:
    return Vault.open(path, who, f"{who}-pass", kdf=MIN_KDF, auto_purge=False)


def worker(path: Path, who: str, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import secrets

    rng = secrets.SystemRandom()
    ops = errors = 0
    kinds: dict[str, int] = {}
    acked: list[str] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        eng = rng.choice(ENGS)
        op = rng.choice(["put", "put", "get", "get", "grant", "revoke", "rotate"])
        try:
            with _open(path, who) as v:
                if op == "put":
                    ref = f"{eng}/{who}-{i}"
                    v.credentials.put(ref, b"v")
                    acked.append(ref)
                elif op == "get" and acked:
                    v.credentials.get(rng.choice(acked))
                elif op == "grant":
                    v.engagements.grant(eng, "reader1", "reader")
                elif op == "revoke":
                    v.engagements.revoke(eng, "reader1")
                elif op == "rotate":
                    v.engagements.rotate(eng)
            ops += 1
        except Exception as e:  # noqa: BLE001 - a crash is a finding, counted by type
            errors += 1
            k = "IntegrityError(6)" if isinstance(e, IntegrityError) else type(e).__name__
            if not isinstance(e, CredvaultError):
                k = f"crash:{k}"
            kinds[k] = kinds.get(k, 0) + 1
    out.put({"who": who, "ops": ops, "errors": errors, "kinds": kinds, "acked": acked})


def churner(path: Path, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    waits: list[float] = []
    changes: list[float] = []
    ops = 0
    kinds: dict[str, int] = {}
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        name = f"temp{i}"
        try:
            with _open(path, "alice") as v:
                t = time.perf_counter()
                v.members.add(name, passphrase=b"temp-pass")
                v.members.passwd(b"alice-pass")
                v.members.reset(name, b"temp-pass-2")
                changes.append((time.perf_counter() - t) / 3)
                t = time.perf_counter()
                v.members.remove(name)
                waits.append(time.perf_counter() - t)
            ops += 4
        except Exception as e:  # noqa: BLE001 - a crash is a finding, counted by type
            k = "IntegrityError(6)" if isinstance(e, IntegrityError) else type(e).__name__
            if not isinstance(e, CredvaultError):
                k = f"crash:{k}"
            kinds[k] = kinds.get(k, 0) + 1
    out.put({"who": "churn", "ops": ops, "waits": waits, "changes": changes, "kinds": kinds})


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    procs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    tmp = Path(tempfile.mkdtemp(prefix="credvault-churn-"))
    path = tmp / "vault"
    Vault.init(path, "alice", "alice-pass", kdf=MIN_KDF)
    workers = [f"w{i}" for i in range(procs - 1)]
    with _open(path, "alice") as v:
        for w in [*workers, "reader1"]:
            v.members.add(w, passphrase=f"{w}-pass".encode())
        for eng in ENGS:
            v.engagements.create(eng, "client")
            for w in workers:
                v.engagements.grant(eng, w, "lead")
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    ps = [mp.Process(target=worker, args=(path, w, seconds, q)) for w in workers]
    ps.append(mp.Process(target=churner, args=(path, seconds, q)))
    t0 = time.monotonic()
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    elapsed = time.monotonic() - t0
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    lost = 0
    with _open(path, "alice") as v:
        for r in results:
            for ref in r.get("acked", []):
                try:
                    v.credentials.get(ref)
                except CredvaultError:
                    lost += 1
    churn = next(r for r in results if r["who"] == "churn")
    waits = sorted(churn["waits"]) or [0.0]
    summary = {
        "seconds": round(elapsed, 1),
        "processes": procs,
        "ops": sum(r["ops"] for r in results),
        "ops_per_s": round(sum(r["ops"] for r in results) / elapsed, 1),
        "errors": kinds,
        "exit6": kinds.get("IntegrityError(6)", 0),
        "lost_acknowledged_writes": lost,
        "member_rm": len(churn["waits"]),
        "member_rm_wait_p50_s": round(statistics.median(waits), 3),
        "member_rm_wait_p99_s": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 3),
        "membership_change_mean_ms": round(1000 * statistics.mean(churn["changes"] or [0]), 1),
    }
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
