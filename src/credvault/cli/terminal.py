"""Terminal I/O: secret input without echo, one-line errors, tables and JSON."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Sequence

from credvault.errors import InvalidInput

MAX_STDIN = 1024 * 1024 + 1


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
    return getpass.getpass(prompt).encode()


def ask_new_secret(what: str) -> bytes:
    """Twice, without echo; they must match."""
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


def confirm(question: str) -> bool:
    """Ask only on a terminal; without one the caller must pass --yes."""
    if not has_terminal():
        return False
    with open("/dev/tty", "r+") as tty:  # noqa: PTH123 - a device, not a path to manage
        tty.write(f"{question} [y/N] ")
        tty.flush()
        return tty.readline().strip().lower() in ("y", "yes")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def out_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def err(message: str) -> None:
    """One line on stderr; control characters replaced so nothing can rewrite the terminal."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in message.splitlines()[0] if ch)
    sys.stderr.write(f"credvault: {clean}\n")
