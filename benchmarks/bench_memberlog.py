"""What the signed membership log (issue 11) costs, against credvault before it, in one run.

    python benchmarks/bench_memberlog.py [--quick] [--baseline REV] [--runs N]

``--baseline`` (default: ``git merge-base HEAD main``, i.e. main before this branch) is
extracted with ``git archive`` into a temporary directory; every figure is then measured for
both versions in the same run, alternating, each in its own Python process with
``PYTHONPATH`` pointing at that version's ``src``:

* ``credvault get`` whole-process (a service identity file: no Argon2id, so the log's share is
  not hidden behind the KDF), median of ``--runs`` round-robin samples, with each version's
  bytecode cached (``PYTHONPYCACHEPREFIX``, one per version, warmed first) as an installed
  package has it; and again without (``PYTHONDONTWRITEBYTECODE``, as an editable checkout
  with that set runs: every process compiles credvault's sources, so larger sources alone
  cost time there);
* in-process durable (audited) ``get``/s on an open vault: the median of 1-second bursts,
  alternating between the versions;
* ``engagement grant`` (a reader, in an engagement of 100 credentials), median ms;
* ``revoke`` with the rotation of 10,000 credentials (one sample each: the rotation re-seals
  every envelope), ms;
* open + first ``get`` in a fresh session with a 1,000-link log against the same vault with
  its 4-link log: the first such open replays and verifies every link and keeps the result
  (MACed, security §12); later ones verify only newer links.

Targets (issue 11): get whole-process and in-process within 10 % of the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time, statistics
from pathlib import Path
from credvault import MIN_KDF, Vault
import credvault

cmds, path = sys.argv[1], Path(sys.argv[2])
default_arg = int(sys.argv[3]) if len(sys.argv) > 3 else 0
ENG = "acme-2026"

def op(member="alice"):
    return Vault.open(path, member, member + "-pass", kdf=MIN_KDF)

out = {}
for item in cmds.split("+"):  # e.g. "grant:2+revoke": one process, one after the other
    cmd, _, own = item.partition(":")
    arg = int(own) if own else default_arg
    if cmd == "build":  # arg: number of credentials
        Vault.init(path, "alice", "alice-pass", kdf=MIN_KDF)
        with op() as v:
            for m in ("bob", "carol"):
                v.members.add(m, passphrase=m + "-pass")
            v.members.add("svc", identity_file=path.parent / "svc.identity")
            v.engagements.create(ENG, "acme")
            v.engagements.grant(ENG, "svc", "reader")
            v.engagements.grant(ENG, "bob", "engineer")
            v.credentials.put_many(ENG, [(f"c{i:05d}", f"secret-{i}".encode()) for i in range(arg)])
    elif cmd == "gets":  # arg: milliseconds
        with op() as v:
            v.get(f"{ENG}/c00000")
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < arg / 1000:
                v.get(f"{ENG}/c{n % 100:05d}")
                n += 1
            out["gets_per_s"] = n / (time.perf_counter() - t0)
            out["cpu_ms_per_get"] = 1000 * (time.process_time() - c0) / n
    elif cmd == "grant":  # arg: rounds
        times = []
        with op() as v:
            for i in range(arg):
                t = time.perf_counter()
                v.engagements.grant(ENG, "carol", "reader" if i % 2 else "engineer")
                times.append(time.perf_counter() - t)
        out["grant_ms"] = 1000 * statistics.median(times)
    elif cmd == "revoke":
        with op() as v:
            t = time.perf_counter()
            v.engagements.revoke(ENG, "bob")
            out["revoke_ms"] = 1000 * (time.perf_counter() - t)
    elif cmd == "links":  # arg: grants to add (role changes of bob: no rotation)
        with op() as v:
            for i in range(arg):
                v.engagements.grant(ENG, "bob", "reader" if i % 2 else "engineer")
    elif cmd == "open_get":  # arg: rounds, each a fresh open (a fresh session replays)
        times = []
        for _ in range(max(arg, 1)):
            t = time.perf_counter()
            with op() as v:
                v.get(f"{ENG}/c00000")
            times.append(time.perf_counter() - t)
        out["first_ms"] = 1000 * times[0]  # replays the whole log (and keeps a long one)
        out["open_get_ms"] = 1000 * statistics.median(times[1:] or times)
print(json.dumps(out))
"""


def _src(baseline: str, into: Path) -> Path:
    """``src`` of ``baseline``, extracted with git archive."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", baseline, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _worker(src: Path, *args: object, write_bytecode: bool = False) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    if write_bytecode:  # cache what the worker imports beside the sources (a smoke run)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPYCACHEPREFIX", None)
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"worker {args[0]} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _get_process(
    src: Path, vault: Path, pycache: Path | Literal["beside"] | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process: user + system) of one ``credvault get``;
    bytecode cached in ``pycache``, or beside the sources (``"beside"``: a smoke run, where
    filling a private cache would compile the standard library too), or not at all."""
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CREDVAULT_") and k not in ("PYTHONPYCACHEPREFIX",)
        },
        "PYTHONPATH": str(src),
        "CREDVAULT_VAULT": str(vault),
        "CREDVAULT_MEMBER": "svc",
        "CREDVAULT_IDENTITY": str(vault.parent / "svc.identity"),
    }
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if pycache != "beside":
            env["PYTHONPYCACHEPREFIX"] = str(pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "credvault", "get", "acme-2026/c00001"],
        capture_output=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"credvault get failed: {proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _order(versions: dict[str, Path], i: int) -> list[tuple[str, Path]]:
    """Round ``i``'s order: A B, then B A (ABBA), so neither version always runs first."""
    items = list(versions.items())
    return items if i % 2 == 0 else items[::-1]


def _paired(this: list[float], baseline: list[float]) -> float:
    """Median over rounds of this/baseline within each round, as a change in %: load that
    drifts between rounds cancels within each."""
    return 100 * (statistics.median(t / b for t, b in zip(this, baseline, strict=True)) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--bursts", type=int, default=None, help="1-second get bursts per version")
    a = ap.parse_args()
    # A smoke run: one sample of each, one 0.2-second burst (the gets cycle through the first
    # 100 credentials, so no fewer), and no bytecode warm-up run.
    runs = a.runs or (1 if a.quick else 30)
    creds, seconds, links = (100, 1, 20) if a.quick else (10_000, 15, 1000)
    seconds = a.bursts or seconds
    burst_ms = 200 if a.quick else 1000  # (printed below as words)
    baseline = (
        a.baseline
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "HEAD"  # no main branch here (a CI checkout): the committed tree against itself
    )
    with tempfile.TemporaryDirectory(prefix="credvault-memberlog-bench-") as tmp_s:
        tmp = Path(tmp_s)
        # members' witnesses (issue 11) in the run's own state directory (same file system)
        os.environ["XDG_STATE_HOME"] = str(tmp / "state")
        (tmp / "old").mkdir()
        versions = {"baseline": _src(baseline, tmp / "old"), "this": ROOT / "src"}
        vaults = {}
        caches: dict[str, Path | Literal["beside"]] = {
            n: "beside" if a.quick else tmp / f"pycache-{n}" for n in versions
        }
        for name, src in versions.items():
            (tmp / name).mkdir()
            vaults[name] = tmp / name / "vault"
            # A smoke run has no warm-up get: its build caches most of the bytecode.
            _worker(src, "build", vaults[name], creds, write_bytecode=a.quick)
        fig: dict[str, dict[str, float]] = {n: {} for n in versions}
        if not a.quick:
            for name, src in versions.items():  # warm each version's bytecode cache
                _get_process(src, vaults[name], caches[name])
        samples: dict[str, list[float]] = {n: [] for n in versions}
        process_cpu: dict[str, list[float]] = {n: [] for n in versions}
        cold: dict[str, list[float]] = {n: [] for n in versions}
        for i in range(runs):  # round-robin, ABBA: machine load hits both alike
            for name, src in _order(versions, i):
                wall, used = _get_process(src, vaults[name], caches[name])
                samples[name].append(wall)
                process_cpu[name].append(used)
                cold[name].append(_get_process(src, vaults[name])[0])
        for name in versions:
            fig[name]["get_process_ms"] = 1000 * statistics.median(samples[name])
            fig[name]["get_process_cpu_ms"] = 1000 * statistics.median(process_cpu[name])
            fig[name]["get_process_nocache_ms"] = 1000 * statistics.median(cold[name])
        rates: dict[str, list[float]] = {n: [] for n in versions}
        cpu: dict[str, list[float]] = {n: [] for n in versions}
        for i in range(seconds):  # 1-second bursts, ABBA: load hits both alike
            for name, src in _order(versions, i):
                burst = _worker(src, "gets", vaults[name], burst_ms)
                rates[name].append(burst["gets_per_s"])
                cpu[name].append(burst["cpu_ms_per_get"])
        for name in versions:
            fig[name]["gets_per_s"] = statistics.median(rates[name])
            fig[name]["cpu_ms_per_get"] = statistics.median(cpu[name])
        paired = {
            "get_process_ms": _paired(samples["this"], samples["baseline"]),
            "get_process_cpu_ms": _paired(process_cpu["this"], process_cpu["baseline"]),
            "get_process_nocache_ms": _paired(cold["this"], cold["baseline"]),
            "gets_per_s": _paired(rates["this"], rates["baseline"]),
            "cpu_ms_per_get": _paired(cpu["this"], cpu["baseline"]),
        }
        rounds = 2 if a.quick else 10  # fresh opens, each an open + first get
        if a.quick:  # one process each for both (and this version's opens with a short log)
            fig["baseline"].update(
                _worker(versions["baseline"], "grant+revoke", vaults["baseline"], 2)
            )
            both = _worker(versions["this"], "grant+revoke+open_get", vaults["this"], rounds)
            fig["this"].update({k: both[k] for k in ("grant_ms", "revoke_ms")})
            short = both
        else:
            for name, src in versions.items():
                fig[name].update(_worker(src, "grant", vaults[name], 20))
            for name, src in versions.items():
                fig[name].update(_worker(src, "revoke", vaults[name]))
            short = _worker(versions["this"], "open_get", vaults["this"], rounds)
        # A long log (this version only: the baseline has none).
        src = versions["this"]
        _worker(src, "links", vaults["this"], links)
        # a fresh process: its first open pays what a first open after a long log pays
        long = _worker(src, "open_get", vaults["this"], rounds)
    load = os.getloadavg()[0]
    print(f"credvault membership log (issue 11); baseline {baseline[:10]}; load average {load:.1f}")
    print(
        f"  {creds:,} credentials; whole-process get: median of {runs} round-robin samples "
        f"(ABBA); in-process gets: {seconds} {'0.2-second' if a.quick else 'one-second'} "
        "bursts each, alternating"
    )
    print(
        f"\n== get, grant, revoke: baseline against this ({'quick sizes' if a.quick else 'full'})"
    )
    print(f"  {'':44} {'baseline':>10} {'this':>10} {'change':>8} {'paired':>8}")
    rows = [
        ("credvault get, whole process", "get_process_ms", "ms"),
        ("  CPU of that process (user + system)", "get_process_cpu_ms", "ms"),
        ("  the same, no bytecode cache (compiles)", "get_process_nocache_ms", "ms"),
        ("durable get in-process", "gets_per_s", "/s"),
        ("  CPU per durable get", "cpu_ms_per_get", "ms"),
        ("grant", "grant_ms", "ms"),
        (f"revoke + rotation of {creds:,} credentials", "revoke_ms", "ms"),
    ]
    change: dict[str, float] = {}
    for label, key, unit in rows:
        b, t = fig["baseline"][key], fig["this"][key]
        change[key] = 100 * (t / b - 1)
        digits = 3 if key == "cpu_ms_per_get" else 1
        pair = f"{paired[key]:+7.1f}%" if key in paired else ""
        print(
            f"  {label:44} {b:8.{digits}f} {unit:2} {t:8.{digits}f} {unit:2} "
            f"{change[key]:+7.1f}% {pair:>8}"
        )
    print("  change: of the medians; paired: median over rounds of this/baseline in the same round")
    if a.quick:
        print(
            "  (smoke run: bytecode cached beside each version's sources, no private cache; "
            "the no-cache row compiles only what has no .pyc there)"
        )
    print("\n== open with a long membership log (open + first get, a fresh session)")
    print(f"  {4:>5}-link log: {short['open_get_ms']:.1f} ms")
    print(
        f"  {4 + links:>5}-link log: first {long['first_ms']:.1f} ms (replays every link, "
        f"keeps the result), then {long['open_get_ms']:.1f} ms (verifies none)"
    )
    per_link = (long["first_ms"] - short["open_get_ms"]) / links
    print(f"  first open's cost: {per_link:.3f} ms per link")
    judged = [
        ("get whole-process within 10 % of the baseline", change["get_process_ms"] <= 10),
        ("durable get/s within 10 % of the baseline", change["gets_per_s"] >= -10),
    ]
    print(
        "\n== Summary" + (" (quick sizes: figures are not the targets' sizes)" if a.quick else "")
    )
    for what, ok in judged:
        print(f"  {'met    ' if ok else 'NOT met'} {what}")
    print(f"{sum(ok for _, ok in judged)} of {len(judged)} judged targets met")


if __name__ == "__main__":
    main()
