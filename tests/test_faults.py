"""Fault and abuse suite (issue 7): kill -9 at random points during put, revoke with key
rotation and backup; many processes at once; and what other users of the machine can see of a
running credvault process. (Member removal and purge have their own kill loops in
test_rekey_crash.py and test_purge_crash.py; together the suite kills about 100 times, and
about 160 times with ``CREDVAULT_TEST_KILLS=full``.)

Kill points come from observed progress, never from wall-clock delays, so the loops behave the
same on a loaded machine: the worker reports each finished operation on a pipe, and after a
random number of them it either is killed by the parent as soon as the parent reads that report,
or kills itself at a random *event* of the next operation (an executed line of credvault, or a
tick of SQLite's progress handler, which fires inside SQLite's own work such as the backup copy).
How many events one operation takes is counted once per mode, so every chosen point lies inside
an operation.

After every kill: the vault opens, SQLite's and SQLCipher's integrity checks are clean, the
audit trail verifies, and every operation the worker reported as done is present.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, separate_client
from credvault import MIN_KDF, Vault
from killpoints import KILL_HOOK, kill_count, wait_until, without_coverage

pytestmark = pytest.mark.fault

ENG = "acme-2026"
KILLS = {"put": kill_count(16, 40), "revoke": kill_count(10, 20), "backup": kill_count(10, 20)}

# The worker prints a line after each operation *returned*: what it reported as done. With
# kill_at > 0 it kills itself at that event (see KILL_HOOK) once `after` operations are done;
# with kill_at == 0 it runs until the parent kills it; with kill_at < 0 it prints how many
# events operation number `after` took, and exits.
WORKER = (
    KILL_HOOK
    + r"""
from datetime import UTC, datetime, timedelta
from credvault import MIN_KDF, Vault
path, mode, start, after, kill_at = Path(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:6])
eng = sys.argv[6]
op = start
# backups are named by the second: each operation runs two seconds after the previous one
v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF,
               clock=lambda: datetime.now(UTC) + timedelta(seconds=2 * op))
i = start
while True:
    op = i
    if i - start == after and kill_at != 0:
        arm(kill_at if kill_at > 0 else None)
    if mode == "put":
        v.credentials.put(f"{eng}/k{i}", f"value-{i}".encode())
    elif mode == "revoke":
        member = "bob" if i % 2 else "carol"
        if v.engagements.role_of(v.engagements.get(eng), member) is None:
            v.engagements.grant(eng, member, "engineer")
        else:
            v.engagements.revoke(eng, member)
    elif mode == "backup":
        v.backups.create(path.parent / "backups")
    if i - start == after and kill_at < 0:
        print(f"events {sum(disarm())}", flush=True)
        break
    print(i, flush=True)
    i += 1
"""
)


def _template(tmp: Path) -> Path:
    path = tmp / "template"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create(ENG, "acme")
        v.credentials.put_many(ENG, [(f"seed{i}", f"seed-{i}".encode()) for i in range(200)])
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template(tmp_path_factory.mktemp("faults"))


def _worker(path: Path, mode: str, start: int, after: int, kill_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), mode, str(start), str(after), str(kill_at), ENG],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # every worker but the counting one (kill_at -1) dies of SIGKILL: no coverage data
        env=without_coverage() if kill_at >= 0 else None,
    )


def _events_per_op(template: Path, mode: str, scratch: Path) -> int:
    """How many events (credvault lines + SQLite progress ticks) one `mode` operation takes,
    counted on a copy, as the second operation of a worker (caches warm, as in the loop)."""
    shutil.copytree(template, scratch)
    separate_client(scratch)
    p = _worker(scratch, mode, 0, 1, -1)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    events = int(out.split("events")[1])
    assert events > 10, out
    shutil.rmtree(scratch.parent)
    return events


def _run_and_kill(path: Path, mode: str, start: int, after: int, kill_at: int) -> list[int]:
    """Run a worker until it has reported `after` operations, then kill it: at its `kill_at`-th
    event of the next operation, or (kill_at == 0) from here as soon as the report is read."""
    proc = _worker(path, mode, start, after, kill_at)
    assert proc.stdout is not None
    reported: list[int] = []
    if kill_at == 0:
        while len(reported) < after:
            line = proc.stdout.readline()
            assert line, f"worker exited early: {proc.communicate(timeout=300)[1]}"
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    return reported + [int(line) for line in out.split()]


def _check(path: Path) -> Vault:
    v = Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF)
    assert v.integrity_check() == []
    assert v.audit_verify() > 0
    return v


@pytest.mark.parametrize("mode", sorted(KILLS))
def test_kill_9_at_random_points(mode: str, template: Path, tmp_path: Path) -> None:
    rng = secrets.SystemRandom()
    events = _events_per_op(template, mode, tmp_path / "count" / "vault")
    path = tmp_path / "vault"
    shutil.copytree(template, path)
    separate_client(path)
    done: list[int] = []
    start = 0
    for n in range(KILLS[mode]):
        # 0-2 operations complete (at least one in the first round), then the kill lands in
        # the next one: from the parent, or at a random line / SQLite step inside it.
        after = rng.randint(1 if n == 0 else 0, 2)
        kill_at = 0 if n % 4 == 3 else rng.randint(1, events)
        reported = _run_and_kill(path, mode, start, after, kill_at)
        done += reported
        start += len(reported) + 1  # the op in flight may or may not have landed
        with _check(path) as v:
            if mode == "put":
                names = {c.name for c in v.credentials.list(ENG)}
                assert {f"k{i}" for i in done} <= names  # every reported put is there
                for i in reported:  # ... with its value
                    assert v.get(f"{ENG}/k{i}").secret.reveal() == f"value-{i}".encode()
            elif mode == "revoke":
                eng = v.engagements.get(ENG)
                # The engagement key and every envelope agree after any kill: all readable.
                assert v.get(f"{ENG}/seed7").secret.reveal() == b"seed-7"
                assert eng.key_version >= 1
            else:
                files = sorted((path.parent / "backups").glob("*.cvb"))
                assert len(files) >= len(done) > 0 or not done
    assert done, f"no {mode} ever completed before a kill"
    if mode == "backup":  # the last reported backup restores into a working vault
        last = sorted((path.parent / "backups").glob("*.cvb"))[-1]
        from credvault import Passphrase

        Vault.restore(last, tmp_path / "restored", "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF)
        with _check(tmp_path / "restored") as v:
            assert v.get(f"{ENG}/seed0").secret.reveal() == b"seed-0"


MIXED = r"""
import sys
from pathlib import Path
from credvault import MIN_KDF, Vault
path, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with Vault.open(path, who, who + "-pass", kdf=MIN_KDF) as v:
    for i in range(n):
        v.credentials.put(f"acme-2026/{who}-{sys.argv[4]}-{i}", f"{who}-{i}".encode())
        assert v.get(f"acme-2026/{who}-{sys.argv[4]}-{i}").secret.reveal() == f"{who}-{i}".encode()
        v.get("acme-2026/seed1")
print("ok")
"""


def test_four_processes_200_operations_each(template: Path, tmp_path: Path) -> None:
    path = tmp_path / "vault"
    shutil.copytree(template, path)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.grant(ENG, "bob", "engineer")
    workers = [("alice", "a"), ("bob", "b"), ("alice", "c"), ("bob", "d")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIXED, str(path), who, "200", tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for who, tag in workers
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        assert b"locked" not in err
        assert out.strip() == b"ok"
    with _check(path) as v:
        names = {c.name for c in v.credentials.list(ENG)}
        for who, tag in workers:
            assert {f"{who}-{tag}-{i}" for i in range(200)} <= names


def _blocked_reading_stdin(proc_dir: Path) -> bool:
    """The child has exec'd `credvault put` and sleeps in read(2) on fd 0 (its secret).

    /proc/PID/syscall gives the syscall number and arguments of a blocked task: read is 0 on
    x86-64 and 63 on arm64. Where it is unreadable, the process state stands in."""
    try:
        if b"put" not in proc_dir.joinpath("cmdline").read_bytes():
            return False  # not yet exec'd
        fields = proc_dir.joinpath("syscall").read_text().split()
    except PermissionError:
        return proc_dir.joinpath("stat").read_text().split(") ")[1][0] == "S"
    return len(fields) > 1 and fields[0] in ("0", "63") and int(fields[1], 16) == 0


def test_proc_cmdline_and_environ_hold_no_secret(tmp_path: Path) -> None:
    """While `put` waits for its secret on stdin, nothing of it is in /proc; after it, the
    secret went only where it was sent."""
    secret = b"proc-canary-" + os.urandom(8).hex().encode()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORDS["alice"] + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")},
        "CREDVAULT_VAULT": str(tmp_path / "v"),
        "CREDVAULT_MEMBER": "alice",
        "CREDVAULT_PASSPHRASE_FILE": str(pw),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "HOME": str(tmp_path),
    }
    cli = [sys.executable, "-m", "credvault"]
    kdf = f"m={MIN_KDF.memory_kib},t={MIN_KDF.iterations},p={MIN_KDF.lanes}"
    for args in (["init", "--kdf", kdf, "--recovery-file", str(tmp_path / "r")],
                 ["engagement", "new", ENG, "--client", "acme"]):  # fmt: skip
        subprocess.run([*cli, *args], env=env, check=True, capture_output=True, timeout=60)
    proc = subprocess.Popen(
        [*cli, "put", f"{ENG}/db"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    proc_dir = Path(f"/proc/{proc.pid}")
    wait_until(lambda: _blocked_reading_stdin(proc_dir), "put to block reading its secret")
    seen = proc_dir.joinpath("cmdline").read_bytes() + proc_dir.joinpath("environ").read_bytes()
    assert PASSWORDS["alice"].encode() not in seen
    out, err = proc.communicate(secret + b"\n", timeout=60)
    assert proc.returncode == 0, err
    for text in (seen, out, err):
        assert secret not in text
    get = subprocess.run([*cli, "get", f"{ENG}/db"], env=env, capture_output=True, timeout=60)
    assert get.stdout == secret + b"\n"
    assert secret not in get.stderr
    audit = subprocess.run([*cli, "audit", "--json"], env=env, capture_output=True, timeout=60)
    assert secret not in audit.stdout + audit.stderr
