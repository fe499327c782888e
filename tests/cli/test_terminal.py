"""Confirmation on a real terminal: ``engagement shred`` and ``client shred`` without ``--yes``.

Each case runs ``python -m credvault`` on a fresh pseudo-terminal that is the process's
controlling terminal (what ``/dev/tty`` opens), with stdout and stderr on pipes so the
prompt and the command's output can be told apart. The test plays the person at the
keyboard: it waits for the question to appear, types an answer, and then checks the vault.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliResult, CliRunner
from credvault import Vault

pytestmark = pytest.mark.cli

# The child becomes a session leader (start_new_session) and opens its stdin's terminal by
# name, which makes that terminal its controlling one; then it is credvault.
BECOME_TTY_OWNER = (
    "import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'credvault', *sys.argv[1:]])"
)
PROMPT_END = b"[y/N] "
DEADLINE = 60.0


def run_on_terminal(env: dict[str, str], args: list[str], answer: bytes) -> tuple[CliResult, bytes]:
    """Run credvault with a controlling terminal; type ``answer`` once it asks. Returns the
    result and everything the terminal showed (prompt and echo)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", BECOME_TTY_OWNER, *args],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    shown = b""
    try:
        end = time.monotonic() + DEADLINE
        while PROMPT_END not in shown:
            ready, _, _ = select.select([master], [], [], max(0.0, min(end - time.monotonic(), 1)))
            data = _read(master) if ready else b""
            if (ready and not data) or time.monotonic() > end:  # closed, or never asked
                out, err = proc.communicate(timeout=DEADLINE)
                pytest.fail(f"no question on the terminal; exit {proc.returncode}, {err!r}")
            shown += data
        os.write(master, answer)
        out, err = proc.communicate(timeout=DEADLINE)
        while select.select([master], [], [], 0)[0] and (data := _read(master)):
            shown += data  # the echo of the answer, until the terminal is closed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(master)
    return CliResult(proc.returncode, out, err.decode("utf-8", errors="replace")), shown


def _read(master: int) -> bytes:
    """What the terminal shows; b"" once the other side closed it (Linux says EIO)."""
    try:
        return os.read(master, 4096)
    except OSError:
        return b""


SHREDS = {
    "engagement": (
        ["engagement", "shred", "acme-2026"],
        b"Destroy engagement acme-2026 and every secret in it now? [y/N] ",
        b"shredded acme-2026; receipt at audit position ",
    ),
    "client": (
        ["client", "shred", "acme"],
        b"Destroy 1 engagement(s) of acme now? [y/N] ",
        b"shredded acme-2026\n",
    ),
}


@pytest.fixture
def shred_vault(cli_vault: CliRunner, cli_env: dict[str, str]) -> CliRunner:
    """cli_vault plus a credential in acme-2026, so a shred has something to destroy (put
    in-process: set-up, not what is tested; a CLI process would cost ~0.3 s)."""
    vault = Path(cli_env["CREDVAULT_VAULT"])
    with Vault.open(vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.put("acme-2026/web1-root", b"hunter2")
    return cli_vault


@pytest.mark.parametrize("answer", [b"yes\n", b"Y\n"], ids=["yes", "Y"])
@pytest.mark.parametrize("family", list(SHREDS))
def test_yes_at_the_terminal_shreds(
    shred_vault: CliRunner, cli_env: dict[str, str], family: str, answer: bytes
) -> None:
    args, question, done = SHREDS[family]
    r, shown = run_on_terminal(cli_env, args, answer)
    assert (r.code, r.err) == (0, ""), r.err
    assert r.out.startswith(done), r.out
    assert question in shown, shown  # asked on the terminal, not on stdout
    assert b"[y/N]" not in r.out
    gone = shred_vault("get", "acme-2026/web1-root")
    assert gone.code == 3, gone.err
    assert "was purged on" in gone.err
    receipt = shred_vault("receipt", "acme-2026", "--json")
    assert receipt.code == 0, receipt.err
    assert json.loads(receipt.out)["reason"] == "client request"


@pytest.mark.parametrize(
    "answer",
    [b"n\n", b"\n", b"yess\n", b"x" * 600 + b"yes\n", b"\x04"],
    ids=["n", "enter", "yess", "long-line", "ctrl-d"],
)
@pytest.mark.parametrize("family", list(SHREDS))
def test_anything_else_changes_nothing(
    shred_vault: CliRunner, cli_env: dict[str, str], family: str, answer: bytes
) -> None:
    args, question, _ = SHREDS[family]
    r, shown = run_on_terminal(cli_env, args, answer)
    assert question in shown, shown
    assert (r.code, r.err, r.out) == (1, "credvault: not confirmed: nothing changed\n", b"")
    still = shred_vault("get", "acme-2026/web1-root")
    assert (still.code, still.out) == (0, b"hunter2\n"), still.err
    actions = [e["action"] for e in json.loads(shred_vault("audit", "--json").out)]
    assert "get" in actions  # the listing is real: the get above is in it
    assert "purge" not in actions


def test_without_a_terminal_it_still_asks_for_yes(shred_vault: CliRunner) -> None:
    # the scripted path is unchanged: no controlling terminal and no --yes is a usage error
    r = shred_vault("engagement", "shred", "acme-2026")
    assert (r.code, r.err) == (
        2,
        "credvault: not confirmed: pass --yes to shred without a terminal\n",
    )
    assert shred_vault("get", "acme-2026/web1-root").code == 0
