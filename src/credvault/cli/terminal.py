"""Terminal I/O: secret input without echo, one-line errors, tables and JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from credvault import CredvaultError, InvalidInput

MAX_STDIN = 1024 * 1024 + 1
MAX_ANSWER = 256


def is_tty() -> bool:
    return sys.stdin.isatty()


def has_terminal() -> bool:
    """A controlling terminal to prompt on (getpass uses /dev/tty)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def ask_hidden(prompt: str) -> bytes:
    import getpass  # only when asking: not on the path of a `get` that needs no prompt

    return getpass.getpass(prompt).encode()


def ask_new_secret(what: str) -> bytes:
    """Twice, without echo; they must match."""
    import getpass

    first = getpass.getpass(f"{what}: ").encode()
    second = getpass.getpass(f"{what} (again): ").encode()
    if first != second:
        raise InvalidInput(f"the two {what.lower()} entries differ")
    return first


def read_secret_stdin() -> bytes:
    """The secret from stdin: on a terminal typed twice; piped, one trailing newline removed."""
    if is_tty():
        return ask_new_secret("Secret")
    data = sys.stdin.buffer.read(MAX_STDIN + 1)
    if data.endswith(b"\n"):
        data = data[:-1]
    return data


class NotConfirmed(CredvaultError):
    """The person at the terminal did not answer yes: nothing was changed (exit 1)."""


def ask_terminal(question: str) -> str | None:
    """Ask on the controlling terminal and return the answer; None when there is none.

    The terminal is opened as one unbuffered read-write file: a buffered ``"r+"`` text file
    needs a seekable stream, and Python refuses that on a terminal.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    with open(fd, "r+b", buffering=0) as tty:  # noqa: PTH123 - a device, not a path to manage
        tty.write(question.encode())
        answer = line = tty.readline(MAX_ANSWER)
        while line and not line.endswith(b"\n"):  # drain an over-long line: no leftover input
            line = tty.readline(MAX_ANSWER)
    return answer.decode(errors="replace").strip()


def confirm(question: str, *, yes: bool, verb: str) -> None:
    """Go on only with consent: ``--yes``, or "y"/"yes" typed at the terminal.

    The one confirmation of every destructive command. Without a terminal and without
    ``--yes`` it raises :class:`InvalidInput` (exit 2: scripts must say ``--yes``); an
    answer other than yes raises :class:`NotConfirmed` (exit 1). Either way nothing changed.
    """
    if yes:
        return
    answer = ask_terminal(f"{question} [y/N] ")
    if answer is None:
        raise InvalidInput(f"not confirmed: pass --yes to {verb} without a terminal")
    if answer.lower() not in ("y", "yes"):
        raise NotConfirmed("not confirmed: nothing changed")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def out_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def escaped(text: str) -> str:
    """``text`` with every non-printable character (terminal escapes, C1 controls, tabs,
    newlines, bidi overrides …) shown as ``\\xNN`` / ``\\uNNNN``: cells come from the audit
    trail and from files others can write, and must never drive the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable()
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[escaped("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def printable(text: str) -> str:
    """``text`` with every non-printable character (escapes, newlines) replaced by ``?``:
    for anything from outside (an import file's titles) shown on the terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def err(message: str) -> None:
    """One line on stderr; control characters replaced so nothing can rewrite the terminal."""
    sys.stderr.write(f"credvault: {printable((message.splitlines() or [''])[0])}\n")


def ask_line(prompt: str) -> str:
    """One line typed at the terminal (echoed: for non-secret client data)."""
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    with open(fd, "r+b", buffering=0) as tty:  # noqa: PTH123 - a device; "r+" text fails
        tty.write(prompt.encode())
        return tty.readline().decode(errors="replace").rstrip("\n")
