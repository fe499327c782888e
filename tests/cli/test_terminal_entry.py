"""Typing at a real terminal: ``put`` asks the secret twice without echo (entries that differ
are refused, exit 2, nothing stored) and ``--ask`` reads a field as a typed line.

``python -m credvault`` runs on a fresh pseudo-terminal that is its controlling terminal
(what ``/dev/tty`` opens) and its stdin; the test waits for each prompt and types the answer.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from conftest import KDF_ARG, CliResult, CliRunner

from .test_terminal import BECOME_TTY_OWNER, DEADLINE, _read

pytestmark = pytest.mark.cli


def dialogue(
    env: dict[str, str], args: list[str], turns: list[tuple[bytes, bytes]]
) -> tuple[CliResult, bytes]:
    """Run credvault on a terminal; for each (prompt, answer) wait for the prompt, type the
    answer. Returns the result and everything the terminal showed."""
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
        for prompt, answer in turns:
            while not shown.endswith(prompt):
                left = max(0.0, min(end - time.monotonic(), 1))
                ready, _, _ = select.select([master], [], [], left)
                data = _read(master) if ready else b""
                if (ready and not data) or time.monotonic() > end:
                    out, err = proc.communicate(timeout=DEADLINE)
                    pytest.fail(f"no {prompt!r} on the terminal; exit {proc.returncode}, {err!r}")
                shown += data
            os.write(master, answer)
        out, err = proc.communicate(timeout=DEADLINE)
        while select.select([master], [], [], 0)[0] and (data := _read(master)):
            shown += data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(master)
    return CliResult(proc.returncode, out, err.decode("utf-8", errors="replace")), shown


def test_put_at_the_terminal_asks_twice_and_reads_a_field_as_a_line(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    args = ["put", "acme-2026/typed", "--ask", "username"]
    r, shown = dialogue(
        cli_env,
        args,
        [(b"Username: ", b"svc-typed\n"), (b"Secret: ", b"one\n"), (b"(again): ", b"two\n")],
    )
    assert (r.code, r.err, r.out) == (2, "credvault: the two secret entries differ\n", b"")
    assert cli_vault("get", "acme-2026/typed").code == 3  # nothing stored

    r, shown = dialogue(
        cli_env,
        args,
        [
            (b"Username: ", b"svc-typed\n"),
            (b"Secret: ", b"typed-secret\n"),
            (b"(again): ", b"typed-secret\n"),
        ],
    )
    assert r.code == 0, r.err
    assert b"svc-typed" in shown  # the field is echoed as typed ...
    assert b"typed-secret" not in shown  # ... the secret never is
    got = cli_vault("get", "acme-2026/typed", "--field", "username")
    assert got.out == b"svc-typed\n"
    assert cli_vault("get", "acme-2026/typed").out == b"typed-secret\n"


def test_the_passphrase_is_asked_at_the_terminal_and_a_new_one_must_not_be_empty(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "CREDVAULT_PASSPHRASE_FILE"}
    r, shown = dialogue(env, ["ls", "acme-2026"], [(b"Passphrase for alice: ", b"alice-pass\n")])
    assert (r.code, r.err) == (0, "")
    assert b"alice-pass" not in shown  # typed without echo
    r, _ = dialogue(
        env,
        ["member", "add", "carol", "--kdf", KDF_ARG],
        [
            (b"Passphrase for alice: ", b"alice-pass\n"),
            (b"New passphrase for carol: ", b"\n"),
            (b"(again): ", b"\n"),
        ],
    )
    assert (r.code, r.err) == (2, "credvault: the passphrase is empty\n")
    assert b"carol" not in cli_vault("member", "ls").out
