"""The agent (issue 15): whole-process ``credvault get`` through it against the peers, the
aggregate throughput of 8 clients through one agent, and its memory with 1,000 engagements.

    python benchmarks/bench_agent.py [--quick] [--runs N] [--entries 1000] [--argon2-iterations 19]

* Whole-process read of one secret, every command round-robin (one sample each per round, so
  load hits all alike), ``--runs`` rounds (default 15): ``credvault get`` through the agent
  (the venv's console script, unlocked once with ``credvault unlock``), ``credvault get``
  without it (``CREDVAULT_NO_AGENT=1``: passphrase file at DEFAULT_KDF, and a service identity
  file), ``pass show``, ``keepassxc-cli show`` on the AES-KDF and on the desktop-style Argon2d
  database (benchmarks/peers), and ``python -c pass``. Target: the agent's median ≤ ``pass
  show``'s (stretch ≤ 0.8×).
* Aggregate audited gets per second: 8 client processes, each opening one connection per
  request (as the command line does) and asking the agent for ``get`` 250 times; wall time
  from the first request to the last reply. Target ≥ 2,000/s on 2 cores. Every request is a
  real ``get``: decrypted and audited (checked: the audit trail grows by exactly as many).
* Resident memory (VmRSS, VmHWM) of the agent holding a vault of 1,000 engagements, after
  unlock and after one ``get`` in every engagement (its engagement-key cache full).

Nothing here installs anything; a missing peer is reported as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_cli as C
from benchmarks._report import Command, Figures, load, output, print_stats, round_robin
from benchmarks.peers import INSTALL_HINT, setup_all
from credvault import DEFAULT_KDF, MIN_KDF, Vault

AGENT = "credvault get (agent)"
NO_AGENT_PW = "credvault get (no agent, passphrase file)"
NO_AGENT_ID = "credvault get (no agent, identity file)"
CLIENTS = 8
PER_CLIENT = 250

CLIENT = """
import base64, os, sys, time
from credvault.agent import client
ref, n, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
env = {k: os.environ[k] for k in client.ENV_KEYS if k in os.environ}
req = {"op": "run", "argv": ["get", ref], "cwd": "/", "env": env}
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
t0 = time.time()
bad = 0
for _ in range(n):
    r = client.call(req)
    bad += r.get("code") != 0
print(t0, time.time(), bad)
"""


def agent_env(cv: C.CliVault, tmp: Path) -> dict[str, str]:
    run = Path(tempfile.mkdtemp(prefix="cvb-", dir="/tmp"))
    return {**cv.env, "XDG_RUNTIME_DIR": str(run), "CREDVAULT_MEMBER": "alice"}


def unlock(env: dict[str, str], pass_file: Path) -> int:
    out = output(Command(C.cli("unlock"), {**env, "CREDVAULT_PASSPHRASE_FILE": str(pass_file)}))
    return int(out.decode().split("(pid ")[1].split(")")[0])


def lock(env: dict[str, str]) -> None:
    output(Command(C.cli("lock"), env))
    shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


def audit_count(path: Path, action: str = "get") -> int:
    with Vault.open(path, "alice", C.PASSPHRASES["alice"], kdf=MIN_KDF) as v:
        return len(v.audit_entries(action=action))


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def whole_process(
    cv: C.CliVault, env: dict[str, str], runs: int, tmp: Path, fig: Figures
) -> dict[str, float]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        peers = setup_all(tmp / "peers", cv.n, ARGS.argon2_iterations, quick=ARGS.quick)
    for line in err.getvalue().splitlines():
        print(f"   SKIPPED {line.removeprefix('skipped: ')} (see {INSTALL_HINT})")
    peers = [p for p in peers if p.name == "pass" or p.name.startswith("keepassxc-cli")]
    no_agent = {**cv.env, "CREDVAULT_NO_AGENT": "1"}
    cmds = {
        AGENT: cv.get(env),
        NO_AGENT_PW: cv.get({**cv.env_passphrase(), **no_agent}),
        NO_AGENT_ID: cv.get({**cv.env_identity(), **no_agent}),
        **{f"{p.name} show" if p.name == "pass" else p.name: p.read for p in peers},
        "python -c pass": Command(C.py("pass"), cv.env),
    }
    reads = [name for name in cmds if name != "python -c pass"]
    if not ARGS.quick:  # (a smoke run checks its one timed round instead)
        for name in reads:
            got = output(cmds[name]).strip()
            assert got == cv.expected, (name, got)
    fig.section(f"Whole-process read of one secret ({runs} rounds, round-robin)")
    # (a smoke run: no warm-up)
    st = round_robin(cmds, runs, 0 if ARGS.quick else 1, dict.fromkeys(reads, cv.expected))
    print_stats(list(st.items()), [b for b in (AGENT, "pass show") if b in st], indent="   ")
    print("   (x ...: the row's median over that row's; > 1 means the agent is faster)")
    for p in peers:
        p.cleanup()
    medians = {k: v.median for k, v in st.items()}
    if "pass show" in medians:
        ratio = medians[AGENT] / medians["pass show"]
        fig.add(
            "credvault get via the agent / pass show (medians)",
            f"{ratio:.2f}x",
            "<= 1.0x",
            ratio <= 1.0,
            f"({medians[AGENT]:.1f} ms vs {medians['pass show']:.1f} ms; stretch 0.8x)",
        )
    else:
        fig.add("credvault get via the agent", f"{medians[AGENT]:.1f} ms")
    return medians


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    cv: C.CliVault,
    env: dict[str, str],
    tmp: Path,
    pid: int,
    clients: int,
    per_client: int,
    fig: Figures,
) -> None:
    fig.section(f"Aggregate gets/s: {clients} client processes x {per_client} through one agent")
    go = tmp / "go"
    before = audit_count(cv.path)
    procs = [
        subprocess.Popen(
            [C.PY, "-c", CLIENT, cv.ref, str(per_client), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        for p in procs:  # every client has started (imports done) before the gate opens
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a client failed to start")
        cpu0 = cpu_s(pid)
    finally:
        go.write_text("go")  # whatever happens, the clients must not wait forever
    results = [p.communicate()[0].split() for p in procs]
    agent_cpu = cpu_s(pid) - cpu0
    start = min(float(r[0]) for r in results)
    end = max(float(r[1]) for r in results)
    bad = sum(int(r[2]) for r in results)
    total = clients * per_client
    rate = total / (end - start)
    audited = audit_count(cv.path) - before
    print(f"   {total} gets in {end - start:.2f} s: {rate:,.0f} gets/s; {bad} errors")
    print(f"   audit trail grew by {audited} get entries (expected {total})")
    per_get = agent_cpu / total * 1000
    print(
        f"   agent CPU: {agent_cpu:.2f} s for {total} gets = {per_get:.2f} ms per get (the rest "
        "of the wall time: waiting for the CPU on a shared machine, and each commit's fsync)"
    )
    assert audited == total
    assert bad == 0
    fig.add(
        f"aggregate audited gets/s, {clients} clients",
        f"{rate:,.0f} /s",
        ">= 2,000/s",
        rate >= 2000,
    )
    if per_get > 0:
        fig.add("agent CPU per get (load-independent)", f"{per_get:.2f} ms")


def memory(tmp: Path, engagements: int, fig: Figures) -> None:
    fig.section(f"Agent memory with {engagements:,} engagements")
    path = tmp / "many" / "vault"
    path.parent.mkdir()
    pw = C._write_private(tmp / "many" / "alice.pass", "many-pass\n")
    t0 = time.perf_counter()
    Vault.init(path, "alice", "many-pass", kdf=MIN_KDF)
    with Vault.open(path, "alice", "many-pass", kdf=MIN_KDF) as v:
        for i in range(engagements):
            name = f"eng-{i:04d}"
            v.engagements.create(name, f"client-{i % 50}")
            v.credentials.put(f"{name}/db", f"secret-{i}".encode())
    print(f"   built in {time.perf_counter() - t0:.1f} s (one credential in each engagement)")
    env = {**C.base_env(tmp), "CREDVAULT_VAULT": str(path)}
    env = {**env, "XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix="cvm-", dir="/tmp")}
    env["CREDVAULT_MEMBER"] = "alice"
    pid = unlock(env, pw)
    after_unlock = rss_kib(pid)
    from credvault.agent import client

    sock = Path(env["XDG_RUNTIME_DIR"]) / "credvault" / "agent.sock"
    req_env = {"CREDVAULT_VAULT": str(path), "CREDVAULT_MEMBER": "alice"}
    for i in range(engagements):
        r = client.call(
            {"op": "run", "argv": ["get", f"eng-{i:04d}/db"], "cwd": "/", "env": req_env},
            path=sock,
        )
        assert r["code"] == 0, r
    after_gets = rss_kib(pid)
    lock(env)
    fig.add("agent VmRSS after unlock", f"{after_unlock[0] / 1024:.1f} MiB")
    fig.add(
        f"agent VmRSS after a get in each of {engagements:,}",
        f"{after_gets[0] / 1024:.1f} MiB",
        why=f"(peak {after_gets[1] / 1024:.1f} MiB)",
    )


ARGS: argparse.Namespace


def main() -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 round, small sizes")
    ap.add_argument("--runs", type=int, help="rounds (default 15; --quick 1)")
    ap.add_argument("--entries", type=int, help="credentials (default 1000; --quick 20)")
    ap.add_argument("--argon2-iterations", type=int, default=19)
    ARGS = ap.parse_args()
    runs = ARGS.runs or (1 if ARGS.quick else 15)
    entries = ARGS.entries or (20 if ARGS.quick else 1000)
    if ARGS.quick:
        ARGS.argon2_iterations = 2
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cvagent-"))
    fig = Figures(judged=not ARGS.quick)
    env: dict[str, str] | None = None
    try:
        if not ARGS.quick:
            C.cache_bytecode(tmp)
        C.header("credvault agent benchmarks", "quick" if ARGS.quick else "default")
        fig.section(f"the stores ({entries:,} entries)")
        # A smoke run: alice's passphrase at MIN_KDF (as compare.py's), 2 clients (the
        # concurrent path still runs), 10 engagements.
        kdf = MIN_KDF if ARGS.quick else DEFAULT_KDF
        cv = C.make_vault(
            tmp / "credvault", entries, min_member=False, service=True, kdf=kdf, quick=ARGS.quick
        )
        env = agent_env(cv, tmp)
        pid = unlock(env, cv.pass_files["alice"])
        print(
            f"   credvault: {cv.build_s:.1f} s"
            + (" (alice's passphrase at MIN_KDF)" if ARGS.quick else "")
            + f"; agent pid {pid}"
        )
        whole_process(cv, env, runs, tmp, fig)
        throughput(
            cv,
            env,
            tmp,
            pid,
            2 if ARGS.quick else CLIENTS,
            10 if ARGS.quick else PER_CLIENT,
            fig,
        )
        lock(env)
        env = None
        memory(tmp, 10 if ARGS.quick else 1000, fig)
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                lock(env)
        shutil.rmtree(tmp, ignore_errors=True)
    fig.summary()
    print(f"\nrun: {time.perf_counter() - t0:.0f} s; at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
