"""The at-the-terminal commands as a user runs them (``python -m credvault`` subprocesses):
``put --totp`` / ``otp`` against the real oathtool, ``get -c`` / ``otp -c`` with real xclip
under Xvfb, ``run``, and ``ssh`` against a real sshd and ssh-agent."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliResult, CliRunner
from credvault import Vault
from sshd_fixture import Agent, Sshd, keypair, ssh_agent, sshd_server  # noqa: F401
from test_clipboard import clearers, needs_x, paste, wait_gone, xvfb_display  # noqa: F401

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module")
def cli_vault(tmp_path_factory: pytest.TempPathFactory) -> CliRunner:
    """One vault for the module, made with the library (fast): admin alice leads acme-2026.

    Each test uses its own credential names, and reads the audit trail for those only.
    """
    root = tmp_path_factory.mktemp("handoff")
    Vault.init(root / "vault", "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(root / "vault", "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-2026", "acme")
    (root / "alice.pass").write_text(PASSWORDS["alice"] + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    base.update(
        HOME=str(root),
        XDG_CACHE_HOME=str(root / "cache"),
        CREDVAULT_VAULT=str(root / "vault"),
        CREDVAULT_MEMBER="alice",
        CREDVAULT_PASSPHRASE_FILE=str(root / "alice.pass"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )

    def run(*args: str, input: bytes | None = b"", env: dict[str, str] | None = None) -> CliResult:
        p = subprocess.run(
            [sys.executable, "-m", "credvault", *args],
            input=input,
            capture_output=True,
            env={**base, **(env or {})},
            timeout=120,
            start_new_session=True,  # no controlling terminal: never prompts
        )
        return CliResult(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))

    return run


def audit(cli: CliRunner, action: str, *items: str) -> list[str]:
    r = cli("audit", "--action", action, "--json")
    assert r.code == 0, r.err
    return [
        f"{e['item']} {e['outcome']} {e['detail']}" for e in json.loads(r.out) if e["item"] in items
    ]


# -- TOTP -----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("oathtool") is None, reason="LOUD SKIP: oathtool missing")
def test_put_totp_and_otp_match_oathtool(cli_vault: CliRunner) -> None:
    key = os.urandom(20)
    seed = base64.b32encode(key).decode().rstrip("=")
    r = cli_vault("put", "acme-2026/portal-otp", "--totp", input=f"{seed.lower()}\n".encode())
    assert (r.code, r.text) == (0, "stored acme-2026/portal-otp\n")

    def oath() -> str:
        return subprocess.run(
            ["oathtool", "--totp", "-b", "-"],
            input=seed,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    before = oath()
    r = cli_vault("otp", "acme-2026/portal-otp", "--reason", "T-3")
    after = oath()
    assert r.code == 0, r.err
    assert r.text.strip() in (before, after)  # the same 30 s window, or the next one
    assert audit(cli_vault, "otp", "portal-otp") == ["portal-otp ok reason: T-3"]
    stored = cli_vault("get", "acme-2026/portal-otp").text
    assert stored.startswith("otpauth://totp/acme-2026:portal-otp?secret=" + seed)


def test_otp_refusals(cli_vault: CliRunner) -> None:
    r = cli_vault("put", "acme-2026/bad", "--totp", input=b"hunter2!\n")
    assert (r.code, r.err) == (
        2,
        "credvault: invalid TOTP seed: expected an otpauth://totp/ URI or a base32 secret (letters A-Z and digits 2-7)\n",
    )
    r = cli_vault("put", "acme-2026/bad", "--totp", "--generate")
    assert r.code == 2
    assert cli_vault("put", "acme-2026/pw", input=b"JBSWY3DPEHPK3PXPJBSW\n").code == 0
    r = cli_vault("otp", "acme-2026/pw")
    assert (r.code, r.out) == (2, b"")
    assert (
        r.err
        == "credvault: acme-2026/pw: holds no TOTP seed (store one with `credvault put --totp`)\n"
    )
    assert cli_vault("otp", "acme-2026/nosuch").code == 3


# -- clipboard ------------------------------------------------------------------------------
@needs_x
def test_get_c_copies_and_clears(cli_vault: CliRunner, display: str) -> None:
    assert (
        cli_vault("put", "acme-2026/idrac", "--username", "root", input=b"s3cr3t-clip\n").code == 0
    )
    env = {"DISPLAY": display, "CREDVAULT_CLIPBOARD": ""}
    r = cli_vault("get", "-c", "acme-2026/idrac", "--clip-time", "1", env=env)
    assert r.code == 0, r.err
    assert r.text == "copied acme-2026/idrac secret to the clipboard (xclip); clears in 1 s\n"
    assert b"s3cr3t-clip" not in r.out
    wait_gone(clearers(display))
    assert paste(display) == b""
    r = cli_vault(
        "get",
        "-c",
        "acme-2026/idrac",
        "--field",
        "username",
        env={**env, "CREDVAULT_CLIP_TIME": "0"},
    )
    assert r.text == "copied acme-2026/idrac username to the clipboard (xclip); not cleared\n"
    assert paste(display) == b"root"


@needs_x
def test_otp_c(cli_vault: CliRunner, display: str) -> None:
    seed = base64.b32encode(os.urandom(20)).decode()
    assert cli_vault("put", "acme-2026/o", "--totp", input=seed.encode()).code == 0
    r = cli_vault("otp", "-c", "acme-2026/o", "--clip-time", "0", env={"DISPLAY": display})
    assert r.text == "copied the code of acme-2026/o to the clipboard (xclip); not cleared\n"
    code = paste(display).decode()
    assert len(code) == 6
    assert code.isdigit()


def test_no_clipboard_no_read(cli_vault: CliRunner) -> None:
    assert cli_vault("put", "acme-2026/x", input=b"pw\n").code == 0
    r = cli_vault(
        "get",
        "-c",
        "acme-2026/x",
        env={"DISPLAY": "", "WAYLAND_DISPLAY": "", "SSH_TTY": "", "SSH_CONNECTION": ""},
    )
    assert r.code == 1
    assert r.err.startswith("credvault: no clipboard reachable")
    assert cli_vault("get", "-c", "--json", "acme-2026/x").code == 2
    r = cli_vault("get", "-c", "acme-2026/x", "--clip-time", "-5", env={"DISPLAY": ":99"})
    assert (r.code, r.err) == (2, "credvault: invalid clip time: expected 0 to 86400 seconds\n")
    assert audit(cli_vault, "get", "x") == []  # refused before anything was read


# -- run ------------------------------------------------------------------------------------
def test_run(cli_vault: CliRunner, tmp_path: Path) -> None:
    assert cli_vault("put", "acme-2026/db", "--username", "dba", input=b"db-pass-77\n").code == 0
    script = tmp_path / "show.sh"
    script.write_text('#!/bin/sh\necho "$DB_USER:$DB_PW"\necho "args: $*"\nexit 5\n')
    script.chmod(0o755)
    r = cli_vault(
        "run",
        "--env",
        "DB_PW=acme-2026/db",
        "--env",
        "DB_USER=acme-2026/db:username",
        "--reason",
        "T-1",
        "--",
        str(script),
        "--flag",
        "x",
    )
    assert (r.code, r.text) == (5, "dba:db-pass-77\nargs: --flag x\n")
    r = cli_vault("run", "--mask", "--env", "DB_PW=acme-2026/db", "--", str(script))
    assert (r.code, r.text) == (5, ":*****\nargs: \n")
    assert audit(cli_vault, "get", "db") == [
        "db ok reason: run show.sh: T-1",
        "db ok reason: run show.sh",
    ]
    r = cli_vault("run", "--env", "DB_PW=acme-2026/db", "--", "no-such-command-here")
    assert (r.code, r.err) == (127, "credvault: command not found: no-such-command-here\n")
    assert cli_vault("run", "--", "true").code == 2  # nothing to pass
    assert cli_vault("run", "--env", "X=acme-2026/db:colour", "--", "true").code == 2
    assert len(audit(cli_vault, "get", "db")) == 2  # none of the refusals read anything


def test_run_with_fields_only_never_reads_the_secret(cli_vault: CliRunner, tmp_path: Path) -> None:
    """Issue 12 item 5: a run that passes only a username is audited as ``show``, so that a
    later ``revoke`` does not ask to change a password the command never received."""
    assert cli_vault("put", "acme-2026/dbf", "--username", "dba", input=b"db-pass-77\n").code == 0
    script = tmp_path / "user.sh"
    script.write_text('#!/bin/sh\necho "$DB_USER"\n')
    script.chmod(0o755)
    r = cli_vault("run", "--env", "DB_USER=acme-2026/dbf:username", "--", str(script))
    assert (r.code, r.text) == (0, "dba\n"), r.err
    assert audit(cli_vault, "get", "dbf") == []
    assert audit(cli_vault, "show", "dbf") == [
        "dbf ok fields without the secret; reason: run user.sh"
    ]


# -- ssh ------------------------------------------------------------------------------------
def test_ssh_with_a_key(cli_vault: CliRunner, sshd: Sshd, agent: Agent, tmp_path: Path) -> None:
    private, public = keypair(tmp_path, "cli")
    with sshd.authorized_keys.open("a") as f:
        f.write(public + "\n")
    assert (
        cli_vault(
            "system", "add", "acme-2026/box", "--address", "127.0.0.1", "--port", str(sshd.port)
        ).code
        == 0
    )
    r = cli_vault(
        "put",
        "acme-2026/box-key",
        "--kind",
        "ssh-key",
        "--username",
        sshd.user,
        "--system",
        "box",
        input=private,
    )
    assert r.code == 0, r.err
    r = cli_vault(
        "ssh",
        "acme-2026/box",
        "--key-lifetime",
        "2m",
        "--",
        *sshd.client_opts,
        "echo",
        "CV-CLI-SSH",
        env={"SSH_AUTH_SOCK": str(agent.sock)},
    )
    assert r.code == 0, r.err
    assert r.text == "CV-CLI-SSH\n"
    assert r.err.startswith(
        "credvault: ssh acme-2026/box with acme-2026/box-key (key in ssh-agent for 2m)\n"
    )
    assert "life: 120" in agent.log.read_text()
    assert audit(cli_vault, "get", "box-key") == ["box-key ok reason: ssh box"]
    # ssh's own failure status comes through
    r = cli_vault(
        "ssh",
        "acme-2026/box",
        "--",
        *sshd.client_opts,
        "exit 9",
        env={"SSH_AUTH_SOCK": str(agent.sock)},
    )
    assert r.code == 9
