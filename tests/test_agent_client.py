"""The agent's client in-process (``credvault.agent.client``): what ``credvault get``/``put``
print and exit with when the agent answers, the secret asked on a terminal or read from a
pipe, and the client's distrust: a loosened or symlinked socket directory, another user's
socket, a hostile or malformed reply (never printed raw), an agent that will not start.

The command-line side (processes, kill -9, imports) is test_agent_cli.py; the answering
process ends with ``os._exit`` there, so the client's lines are measured here.
"""

from __future__ import annotations

import base64
import getpass
import io
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS
from credvault import Vault
from credvault.agent import client, protocol
from credvault.agent.server import Agent, Server, bind

ME = os.getuid()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, runtime_dir: Path, tmp_path: Path) -> Path:
    """The environment ``credvault`` would run in: this test's own runtime dir (no agent in
    it yet), a vault path and a member."""
    monkeypatch.delenv("CREDVAULT_NO_AGENT", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    monkeypatch.setenv("CREDVAULT_VAULT", str(tmp_path / "vault"))
    monkeypatch.setenv("CREDVAULT_MEMBER", "alice")
    return runtime_dir / "credvault"


def _open(path: Path) -> Vault:
    return Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF)


@pytest.fixture(scope="module")
def agent_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One vault for the module's served tests (each writes its own names)."""
    path = tmp_path_factory.mktemp("agent-client") / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with _open(path) as v:
        v.engagements.create("acme-2026", "acme")
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root")
    return path


@pytest.fixture(scope="module")
def module_agent(agent_vault: Path) -> Iterator[tuple[Agent, Path]]:
    """A real agent holding alice's keys, serving its own runtime dir from a thread."""
    runtime = Path(tempfile.mkdtemp(prefix="cv-run-", dir="/tmp"))
    agent = Agent()
    with _open(agent_vault) as v:
        k = v.member_keys()
        payload = base64.b64encode(k.to_bytes(bytes.fromhex(v.vault_id))).decode()
    request = {"op": "add", "vault": str(agent_vault), "member": "alice", "keys": payload}
    assert agent.handle({**request, "ttl": 3600, "idle": 600}, ME)["ok"] is True
    listener, path, lock_fd = bind(runtime / "credvault")
    server = Server(agent, listener, path=path, lock_fd=lock_fd, empty_grace=3600)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield agent, runtime
    agent.stopping = True
    client.status(path)  # wakes the loop
    thread.join(30)
    assert not thread.is_alive()
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def served(
    module_agent: tuple[Agent, Path], agent_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> Agent:
    """``credvault``'s environment pointing at the module's agent and vault."""
    agent, runtime = module_agent
    monkeypatch.delenv("CREDVAULT_NO_AGENT", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("CREDVAULT_VAULT", str(agent_vault))
    monkeypatch.setenv("CREDVAULT_MEMBER", "alice")
    return agent


class FakeAgent:
    """A socket in the agent's place that answers every request with ``reply`` (a hostile
    or broken agent, as far as the client can tell)."""

    def __init__(self, directory: Path, reply: dict[str, Any]) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / "agent.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(4)
        body = json.dumps({"v": protocol.VERSION, **reply}).encode()
        self.frame = protocol.HEADER.pack(len(body)) + body
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.requests.append(protocol.recv_frame(conn, protocol.MAX_REQUEST))
                conn.sendall(self.frame)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        self.thread.join(30)
        self.listener.close()
        self.path.unlink()


@pytest.fixture
def fake(env: Path) -> Iterator[Any]:
    made: list[FakeAgent] = []

    def start(reply: dict[str, Any]) -> FakeAgent:
        f = FakeAgent(env, reply)
        made.append(f)
        return f

    yield start
    for f in made:
        f.close()


# -- the agent answers ----------------------------------------------------------------------
def test_get_prints_the_agents_answer_and_exits_with_its_code(
    served: Agent, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert client.fast_path(["get", "acme-2026/web1-root"]) == 0
    out, err = capsysbinary.readouterr()
    assert (out, err) == (b"hunter2\n", b"")
    assert client.fast_path(["get", "acme-2026/nothing-here"]) == 3
    out, err = capsysbinary.readouterr()
    assert out == b""
    assert err.count(b"\n") == 1
    assert b"nothing-here" in err
    # not served by the agent at all: no request, the normal command line runs
    served_before = served.served
    assert client.fast_path(["member", "ls"]) is None
    assert client.fast_path(["--version"]) is None
    assert served.served == served_before


def test_put_sends_piped_input_and_leaves_it_for_the_normal_path(
    served: Agent, agent_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"piped-secret\n")))
    assert client.fast_path(["put", "acme-2026/new"]) == 0
    import sys

    assert sys.stdin.buffer.read() == b"piped-secret\n"  # still there had it fallen back
    with _open(agent_vault) as v:
        assert v.credentials.get("acme-2026/new").secret.reveal() == b"piped-secret"


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_put_on_a_terminal_asks_twice_and_refuses_entries_that_differ(
    served: Agent,
    agent_vault: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal(io.BytesIO()))
    answers = iter(["typed-secret", "typed-secreT"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert client.fast_path(["put", "acme-2026/typed"]) == 2
    assert capsys.readouterr().err == "credvault: the two secret entries differ\n"

    answers = iter(["typed-secret", "typed-secret"])
    monkeypatch.setattr("sys.stdin", _Terminal(io.BytesIO()))
    assert client.fast_path(["put", "acme-2026/typed"]) == 0
    with _open(agent_vault) as v:
        assert v.credentials.get("acme-2026/typed").secret.reveal() == b"typed-secret"
        assert [e.outcome for e in v.audit_entries(action="put")][-1:] == ["ok"]
        assert len([e for e in v.audit_entries(action="put") if e.item == "typed"]) == 1


def test_put_without_any_stdin_uses_the_normal_path(
    served: Agent, agent_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", None)
    assert client.fast_path(["put", "acme-2026/none"]) is None
    with _open(agent_vault) as v:
        assert "none" not in [c.name for c in v.credentials.list("acme-2026")]


# -- the client's distrust --------------------------------------------------------------------
def test_a_hostile_message_is_printed_on_one_line_without_control_characters(
    fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = fake({"ok": False, "error": "denied", "message": "no\x1b[2J\r\nforged: ok" + "x" * 400})
    assert client.fast_path(["get", "acme-2026/web1-root"]) is None
    err = capsys.readouterr().err
    assert err.startswith("credvault: agent: no?[2J??forged: ok")
    assert err.endswith("; unlocking without it\n")
    assert err.count("\n") == 1
    assert "\x1b" not in err
    assert len(err) < 360  # cut at 300 characters of message
    (request,) = agent.requests
    assert request["argv"] == ["get", "acme-2026/web1-root"]
    assert set(request["env"]) <= set(client.ENV_KEYS)


def test_a_fallback_says_nothing(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake({"ok": False, "error": "fallback", "message": "not unlocked in the agent"})
    assert client.fast_path(["ls"]) is None
    assert capsys.readouterr() == ("", "")


def test_a_malformed_success_is_not_printed(
    fake: Any, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fake({"ok": True, "code": 0, "stdout": 12, "stderr": ""})
    assert client.fast_path(["get", "acme-2026/web1-root"]) is None
    out, err = capsysbinary.readouterr()
    assert out == b""
    assert err == b"credvault: the agent is gone (malformed reply); unlocking without it\n"


def _listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


def test_a_socket_directory_others_can_enter_is_not_trusted(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.mkdir(mode=0o700)
    with _listening(env / "agent.sock"):
        env.chmod(0o755)
        assert client.fast_path(["get", "acme-2026/web1-root"]) is None
        err = capsys.readouterr().err
        assert err == (
            "credvault: the agent is gone (unsafe agent directory: "
            f"{env} is accessible to other users (mode 755)); unlocking without it\n"
        )
        assert client.status() is None


def test_a_symlinked_socket_directory_is_not_trusted(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    env.symlink_to(real)
    with _listening(real / "agent.sock"):
        assert client.fast_path(["ls"]) is None
        assert f"unsafe agent directory: {env} is not a directory" in capsys.readouterr().err


def test_a_socket_directory_of_another_user_is_not_trusted(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root to give the directory away (CI runs as root)")
    env.mkdir(mode=0o700)
    with _listening(env / "agent.sock"):
        os.chown(env, 65534, 65534)
        assert client.fast_path(["ls"]) is None
        assert f"{env} belongs to another user" in capsys.readouterr().err
        assert client.lock() is False


def test_an_agent_that_refuses_to_start_is_reported(env: Path) -> None:
    """``credvault agent`` on a loosened runtime directory: the agent refuses to start and
    ``ensure_running`` says so instead of waiting out its timeout."""
    env.mkdir(mode=0o755)
    env.chmod(0o755)
    with pytest.raises(client.AgentGone, match="exited with status 1"):
        client.ensure_running(timeout=60)
    assert not (env / "agent.sock").exists()
