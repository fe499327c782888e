"""Requests the agent refuses or hands back (``Agent.handle`` in-process), precisely: a
relative working directory, an environment entry it does not take, stdin that is not
base64 (bad-request, nothing run); shred and --clip go back to the client (the terminal
and the clipboard are the client's); a service identity is never served from held keys;
and the vault and member resolved from the defaults exactly as the CLI would."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS
from credvault import Vault
from credvault.agent.server import Agent

ME = os.getuid()


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$XDG_DATA_HOME`` whose default vault (``credvault``) has acme-2026/web1-root."""
    home = tmp_path_factory.mktemp("agent-requests")
    path = home / "credvault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-2026", "acme")
        v.credentials.put("acme-2026/web1-root", b"hunter2")
    return home


@pytest.fixture
def agent(data_home: Path) -> Agent:
    a = Agent()
    path = data_home / "credvault"
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        k = v.member_keys()
        payload = base64.b64encode(k.to_bytes(bytes.fromhex(v.vault_id))).decode()
    add = {"op": "add", "vault": str(path), "member": "alice", "keys": payload}
    assert a.handle({**add, "ttl": 3600, "idle": 600}, ME)["ok"] is True
    return a


def run(agent: Agent, argv: list[str], env: dict[str, str], **extra: Any) -> dict[str, Any]:
    return agent.handle({"op": "run", "argv": argv, "cwd": "/", "env": env, **extra}, ME)


def test_the_default_vault_and_login_name_are_resolved_as_the_cli_does(
    agent: Agent, data_home: Path
) -> None:
    env = {"XDG_DATA_HOME": str(data_home), "LOGNAME": "alice"}
    reply = run(agent, ["get", "acme-2026/web1-root"], env)
    assert reply["ok"] is True, reply
    assert base64.b64decode(reply["stdout"]) == b"hunter2\n"
    # HOME's default (~/.local/share/credvault) is another vault: not held, back to the client
    reply = run(agent, ["get", "acme-2026/web1-root"], {"HOME": str(data_home), "USER": "alice"})
    assert reply == {"ok": False, "error": "fallback", "message": "not unlocked in the agent"}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"cwd": "relative/dir"}, "cwd must be an absolute path"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env holds unknown or non-string entries"),
        ({"env": {"HOME": 5}}, "env holds unknown or non-string entries"),
        ({"stdin": "not base64!"}, "stdin is not base64"),
    ],
    ids=["relative-cwd", "unknown-env", "non-string-env", "stdin-not-base64"],
)
def test_a_malformed_run_request_is_refused_and_runs_nothing(
    agent: Agent, data_home: Path, request_: dict[str, Any], message: str
) -> None:
    env = {"XDG_DATA_HOME": str(data_home), "LOGNAME": "alice"}
    request = {"op": "run", "argv": ["get", "acme-2026/web1-root"], "cwd": "/", "env": env}
    served = agent.served
    reply = agent.handle({**request, **request_}, ME)
    assert reply == {"ok": False, "error": "bad-request", "message": message}
    assert agent.served == served


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["engagement", "shred", "acme-2026"], {}, "asks for confirmation on the terminal"),
        (["get", "acme-2026/web1-root", "--clip"], {},
         "the clipboard is the client's, not the agent's"),
        (["get", "acme-2026/web1-root"], {"CREDVAULT_IDENTITY": "/srv/svc.id"},
         "not unlocked in the agent"),
    ],
    ids=["shred", "clip", "service-identity"],
)  # fmt: skip
def test_what_belongs_to_the_client_goes_back_to_it(
    agent: Agent, data_home: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    base = {"XDG_DATA_HOME": str(data_home), "LOGNAME": "alice"}
    reply = run(agent, argv, {**base, **env})
    assert reply == {"ok": False, "error": "fallback", "message": message}
    assert agent.entries  # the keys are still held
