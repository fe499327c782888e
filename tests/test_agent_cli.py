"""The agent as users run it: ``credvault unlock`` starts it, ``get``/``ls`` reach it through
the stdlib client, ``lock`` ends it; kill -9; audit and output identical with and without it;
the fast path's imports (``python -X importtime``); 8 concurrent clients; and no key material
left in any file, environment or argv.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner
from credvault import Vault
from credvault.agent import client

pytestmark = pytest.mark.cli

HEAVY = ("cryptography", "sqlcipher3", "keyring", "psycopg", "argon2", "credvault.vault")
NO_PASSPHRASE = {"CREDVAULT_PASSPHRASE_FILE": ""}


class Agented:
    """The test's vault (alice, bob; acme-2026 with acme-2026/db) and its agent."""

    def __init__(self, cli: CliRunner, env: dict[str, str], runtime: Path) -> None:
        self.cli = cli
        self.env = env
        self.vault = Path(env["CREDVAULT_VAULT"])
        self.sock = runtime / "credvault" / "agent.sock"

    def status(self) -> dict[str, Any] | None:
        return client.status(self.sock)

    def pid(self) -> int:
        st = self.status()
        assert st is not None, "no agent answers"
        return int(st["pid"])

    def audit(self, action: str | None = None) -> list[tuple[object, ...]]:
        with Vault.open(self.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
            entries = v.audit_entries(action=action)
        return [(e.member, e.action, e.engagement, e.item, e.outcome, e.detail) for e in entries]

    def key_forms(self) -> list[bytes]:
        with Vault.open(self.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
            k = v.member_keys()
        forms = [PASSWORDS["alice"].encode()]
        for secret in (k.kem_private, k.sign_private):
            forms += [secret, secret.hex().encode(), base64.b64encode(secret)]
        return forms


@pytest.fixture
def ag(cli_vault: CliRunner, cli_env: dict[str, str], runtime_dir: Path) -> Agented:
    r = cli_vault("put", "acme-2026/db", "--username", "root", input=b"s3cret\n")
    assert r.code == 0, r.err
    return Agented(cli_vault, cli_env, runtime_dir)


def _unlock(ag: Agented, *extra: str) -> int:
    r = ag.cli("unlock", *extra)
    assert r.code == 0, r.err
    assert "in the agent (pid " in r.text
    return ag.pid()


def _gone(pid: int, sock: Path) -> bool:
    """The agent has ended: its socket is removed and the process is gone (or a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        state = "X"
    return not sock.exists() and state in ("X", "Z")


def test_lifecycle_unlock_get_lock_refused(ag: Agented) -> None:
    r = ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b"")  # locked: no passphrase, no terminal, no agent
    pid = _unlock(ag, "--ttl", "1h", "--idle", "10m")
    assert ag.sock.stat().st_mode & 0o777 == 0o600
    assert ag.sock.parent.stat().st_mode & 0o777 == 0o700
    r = ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE)
    assert (r.code, r.out, r.err) == (0, b"s3cret\n", "")
    r = ag.cli("ls", "acme-2026", env=NO_PASSPHRASE)
    assert r.code == 0
    assert "acme-2026/db" in r.text
    assert ag.pid() == _unlock(ag) == pid  # a second unlock reuses the running agent
    st = ag.cli("status", "--json", env=NO_PASSPHRASE)  # (status is not served: normal path)
    assert st.code == 5  # … so it needs the passphrase; with it, it reports the agent
    st = ag.cli("status")
    assert any(line.startswith("agent:   unlocked until ") for line in st.text.splitlines())
    r = ag.cli("lock")
    assert (r.code, r.text) == (0, "locked\n")
    deadline = time.monotonic() + 30
    while not _gone(pid, ag.sock):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b"")
    assert "agent" not in r.err  # no socket left: nothing to say, the normal path ran
    assert ag.cli("lock").text == "nothing cached; already locked\n"


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie awaiting its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:  # noqa: PTH123
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill9_then_fallback_and_restart(ag: Agented) -> None:
    pid = _unlock(ag)
    assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).code == 0
    os.kill(pid, signal.SIGKILL)
    # Wait for the process to die without touching its socket: a status probe that finds it
    # refused would remove the stale socket itself (and the notice below would never come).
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The next command says so and falls back to the normal unlock (none here: exit 5) …
    r = ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE)
    assert r.code == 5
    assert r.err.splitlines()[0].startswith("credvault: the agent is gone (")
    assert r.err.splitlines()[0].endswith("; unlocking without it")
    # … or with a passphrase file, succeeds; the stale socket is gone after the first notice.
    r = ag.cli("get", "acme-2026/db")
    assert (r.code, r.out, r.err) == (0, b"s3cret\n", "")
    new = _unlock(ag)
    assert new != pid
    assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).out == b"s3cret\n"


def test_kill9_under_load_loses_no_audit_entry(ag: Agented) -> None:
    pid = _unlock(ag)
    env = {"CREDVAULT_VAULT": str(ag.vault), "CREDVAULT_MEMBER": "alice"}
    returned: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            reason = f"L-{i}"
            argv = ["get", "acme-2026/db", "--reason", reason]
            try:
                reply = client.call(
                    {"op": "run", "argv": argv, "cwd": "/", "env": env}, path=ag.sock
                )
            except (client.AgentGone, client.NoAgent):
                return
            if base64.b64decode(reply["stdout"]) == b"s3cret\n":
                returned.append(reason)
            i += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(returned) < 60:  # kill at an observed point: mid-stream, replies in flight
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(60)
    stop.set()
    audited = {d.removeprefix("reason: ") for *_, d in ag.audit("get")}
    assert set(returned) <= audited  # every secret handed out has its committed entry


def test_audit_and_output_identical_with_and_without_agent(ag: Agented) -> None:
    ag.cli("system", "add", "acme-2026/web1", "--address", "10.0.0.1", "--port", "22")
    commands: list[tuple[list[str], bytes]] = [
        (["get", "acme-2026/db", "--reason", "T-1"], b""),
        (["get", "acme-2026/db", "--field", "username", "-n"], b""),
        (["get", "acme-2026/db", "--json"], b""),
        (["get", "acme-2026/db", "--field", "url"], b""),
        (["get", "acme-2026/nope"], b""),
        (["get", "nope/x"], b""),
        (["get", "bad ref"], b""),
        (["ls", "acme-2026"], b""),
        (["ls", "--json"], b""),
        (["system", "ls", "acme-2026"], b""),
        (["engagement", "show", "acme-2026", "--json"], b""),
        (["put", "acme-2026/tmp", "--username", "u"], b"pw1\n"),
        (["get", "acme-2026/tmp"], b""),
        (["rm", "acme-2026/tmp"], b""),
        (["get", "--bogus"], b""),
    ]

    def session(env: dict[str, str]) -> tuple[list[object], list[tuple[object, ...]]]:
        before = len(ag.audit())
        results: list[object] = []
        for argv, stdin in commands:
            r = ag.cli(*argv, input=stdin, env=env)
            out = re.sub(rb"\d{4}-\d\d-\d\dT[\d:.]+Z", b"<time>", r.out)  # e.g. trash expiry
            results.append((argv, r.code, out, r.err))
        # drop the audit-read entries of ag.audit() itself
        entries = [e for e in ag.audit()[before + 1 :] if e[1] != "audit-read"]
        return results, [
            (*e[:5], re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", str(e[5]))) for e in entries
        ]

    without = session({"CREDVAULT_NO_AGENT": "1"})
    _unlock(ag)
    served_before = ag.status()["served"]  # type: ignore[index]
    with_agent = session(NO_PASSPHRASE)
    assert ag.status()["served"] - served_before >= len(commands) - 1  # type: ignore[index]
    assert with_agent[0] == without[0]
    assert with_agent[1] == without[1]
    assert ("alice", "get", "acme-2026", "db", "ok", "reason: T-1") in with_agent[1]


def test_fast_path_imports_nothing_heavy(ag: Agented) -> None:
    _unlock(ag)
    env = dict(ag.env, CREDVAULT_PASSPHRASE_FILE="")
    for argv in (["get", "acme-2026/db"], ["ls", "acme-2026"]):
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "credvault", *argv],
            env=env,
            capture_output=True,
            timeout=60,
            start_new_session=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"s3cret\n" or b"acme-2026/db" in r.stdout
        imported = [
            line.rsplit("|", 1)[1].strip()
            for line in r.stderr.decode().splitlines()
            if line.startswith("import time:") and "|" in line
        ]
        assert "credvault.agent.client" in imported  # the measurement saw the fast path
        heavy = [m for m in imported if m.lstrip(" ").startswith(HEAVY)]
        assert heavy == []
    # Without an agent the same command loads the library (the proof is not vacuous).
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "credvault", "get", "acme-2026/db"],
        env=dict(ag.env, CREDVAULT_NO_AGENT="1"),
        capture_output=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert r.returncode == 0
    assert b"sqlcipher3" in r.stderr
    assert b"cryptography" in r.stderr


def test_eight_concurrent_clients_200_operations_each(ag: Agented) -> None:
    _unlock(ag)
    before = len(ag.audit("get"))
    env = {"CREDVAULT_VAULT": str(ag.vault), "CREDVAULT_MEMBER": "alice"}
    errors: list[str] = []

    def worker(i: int) -> None:
        for j in range(200):
            argv = ["get", "acme-2026/db", "--reason", f"T-{i}-{j}"]
            try:
                reply = client.call(
                    {"op": "run", "argv": argv, "cwd": "/", "env": env}, path=ag.sock
                )
            except Exception as e:
                errors.append(repr(e))
                continue
            if reply.get("code") != 0 or base64.b64decode(reply["stdout"]) != b"s3cret\n":
                errors.append(repr(reply))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    gets = ag.audit("get")
    assert len(gets) - before == 1600
    assert len({d for *_, d in gets if "T-" in str(d)}) == 1600


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_key_material_left_after_lock_and_expiry(ag: Agented, tmp_path: Path) -> None:
    forms = ag.key_forms()
    runtime = ag.sock.parent.parent

    def clean() -> None:
        for f in _files(tmp_path, runtime):
            data = f.read_bytes()
            for form in forms[1:]:  # the passphrase files the test wrote hold the passphrase
                assert form not in data, f"key material in {f}"

    pid = _unlock(ag)
    for proc_file in ("environ", "cmdline"):  # never in the agent's environment or argv
        data = Path(f"/proc/{pid}/{proc_file}").read_bytes()
        assert not [f for f in forms if f in data]
    assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).code == 0
    assert ag.cli("lock").code == 0
    deadline = time.monotonic() + 30
    while not _gone(pid, ag.sock):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    clean()

    pid = _unlock(ag, "--ttl", "2s")
    assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).code == 0
    deadline = time.monotonic() + 60
    while not _gone(pid, ag.sock):  # the agent ends by itself at expiry
        assert time.monotonic() < deadline
        time.sleep(0.05)
    clean()
    assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).code == 5


# What systemd does before exec: the socket on fd 3, LISTEN_PID = the pid that will run.
LAUNCH_AS_SYSTEMD = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "credvault", "agent"])
"""


def test_socket_activation(ag: Agented, runtime_dir: Path) -> None:
    """As systemd starts it: the listening socket on fd 3, LISTEN_FDS=1, LISTEN_PID=its pid."""
    import socket as sk

    d = runtime_dir / "credvault"
    d.mkdir(mode=0o700)
    listener = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    listener.bind(str(d / "agent.sock"))
    (d / "agent.sock").chmod(0o600)
    listener.listen(16)
    fd = listener.fileno()
    env = {**ag.env, "LISTEN_FDS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_AS_SYSTEMD, str(fd)],
        env=env,
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
    )
    listener.close()
    try:
        r = ag.cli("unlock")  # finds the socket-activated agent and gives it the keys
        assert r.code == 0, r.err
        assert f"(pid {proc.pid})" in r.text
        assert ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE).out == b"s3cret\n"
        assert ag.cli("lock").text == "locked\n"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drops_keys_and_removes_the_socket(ag: Agented) -> None:
    pid = _unlock(ag)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not _gone(pid, ag.sock):  # a clean end: the socket is removed, not left stale
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = ag.cli("get", "acme-2026/db", env=NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b"")
    assert "agent" not in r.err
