"""Fault and abuse suite (issue 7): kill -9 at random points during put, revoke with key
rotation and backup; many processes at once; and what other users of the machine can see of a
running credvault process. (Member removal and purge have their own kill loops in
test_rekey_crash.py and test_purge_crash.py; together the suite kills well over 100 times.)

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
import time
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS
from credvault import MIN_KDF, Vault

pytestmark = pytest.mark.fault

ENG = "acme-2026"
KILLS = {"put": 40, "revoke": 20, "backup": 20}

# The worker prints a line after each operation *returned*: what it reported as done.
WORKER = r"""
import sys
from pathlib import Path
from credvault import MIN_KDF, Vault
path, mode, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
i = start
while True:
    if mode == "put":
        v.credentials.put(f"{sys.argv[4]}/k{i}", f"value-{i}".encode())
    elif mode == "revoke":
        member = "bob" if i % 2 else "carol"
        if v.engagements.role_of(v.engagements.get(sys.argv[4]), member) is None:
            v.engagements.grant(sys.argv[4], member, "engineer")
        else:
            v.engagements.revoke(sys.argv[4], member)
    elif mode == "backup":
        from credvault.backup import backup
        backup(v, path.parent / "backups")
    print(i, flush=True)
    i += 1
"""


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


def _run_and_kill(path: Path, mode: str, start: int, delay: float) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), mode, str(start), ENG],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return [int(line) for line in out.split()]


def _check(path: Path) -> Vault:
    v = Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF)
    assert v.integrity_check() == []
    assert v.audit_verify() > 0
    return v


@pytest.mark.parametrize("mode", sorted(KILLS))
def test_kill_9_at_random_points(mode: str, template: Path, tmp_path: Path) -> None:
    rng = secrets.SystemRandom()
    path = tmp_path / "vault"
    shutil.copytree(template, path)
    done: list[int] = []
    start = 0
    for _ in range(KILLS[mode]):
        # Python start-up and unlock take ~0.15 s; kill anywhere from before the first
        # operation to several operations in.
        reported = _run_and_kill(path, mode, start, rng.uniform(0.05, 0.45))
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
    assert done, f"no {mode} ever completed before a kill; the delays are too short"
    if mode == "backup":  # the last reported backup restores into a working vault
        last = sorted((path.parent / "backups").glob("*.cvb"))[-1]
        from credvault import Passphrase
        from credvault.backup import restore

        restore(last, tmp_path / "restored", "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF)
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
    time.sleep(0.5)  # it is now blocked reading stdin
    proc_dir = Path(f"/proc/{proc.pid}")
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
