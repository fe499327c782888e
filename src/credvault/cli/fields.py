"""Client data kept out of argv: one reusable way to give any encrypted field.

Every field NAME (``username``, ``url``, ``notes``, ``address``, ``details`` …) can be given

* ``--NAME-file PATH``: the file's text (one trailing newline dropped); ``-`` is stdin;
* ``--fields-from PATH``: a JSON object ``{"NAME": "value", …}`` (``-`` is stdin);
* ``--ask NAME``: typed at a prompt on the terminal (repeatable);
* ``--NAME VALUE``: still accepted, but visible to every local user in ``/proc/PID/cmdline``
  and kept in shell history: the documented forms above come first.

A command declares its fields with :func:`field_args` in the command table and reads them
with :func:`read_fields`; only one source may use stdin (``put`` keeps stdin for the secret
unless ``--generate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from credvault import InvalidInput
from credvault.cli.spec import Arg, arg

MAX_FIELD = 1024 * 1024


def field_args(*fields: tuple[str, str]) -> tuple[Arg, ...]:
    """The arguments for ``fields`` (name, help): ``--NAME``, ``--NAME-file``, and once
    ``--fields-from`` and ``--ask``."""
    out: list[Arg] = []
    for name, help_ in fields:
        out.append(arg(f"--{name}", help=f"{help_} (visible in argv: prefer --{name}-file)"))
        out.append(
            arg(
                f"--{name}-file",
                metavar="PATH",
                value="file",
                help=f"read the {name} from this file ('-': stdin)",
            )
        )
    names = ", ".join(n for n, _ in fields)
    out.append(
        arg(
            "--fields-from",
            metavar="PATH",
            value="file",
            help=f"a JSON object with any of {names} ('-': stdin)",
        )
    )
    out.append(
        arg(
            "--ask",
            action="append",
            choices=[n for n, _ in fields],
            metavar="FIELD",
            help=f"type this field at a prompt (repeatable; one of {names})",
        )
    )
    return tuple(out)


def _read(path: str, what: str, *, stdin_free: bool) -> str:
    try:
        if path == "-":
            if not stdin_free:
                raise InvalidInput(f"stdin already carries the secret: give the {what} in a file")
            data = sys.stdin.buffer.read(MAX_FIELD + 1)
        else:
            with Path(path).open("rb") as f:
                data = f.read(MAX_FIELD + 1)
    except OSError:
        raise InvalidInput(f"cannot read the {what} from {path}") from None
    if len(data) > MAX_FIELD:
        raise InvalidInput(f"the {what} is too long")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {what} is not valid UTF-8") from None
    return text[:-1] if text.endswith("\n") else text


def read_fields(
    args: argparse.Namespace, names: tuple[str, ...], *, stdin_free: bool
) -> dict[str, str | None]:
    """Each field's value from wherever it was given (None: not given). Two sources for one
    field, or two uses of stdin, are usage errors."""
    values: dict[str, str | None] = {}
    given: dict[str, str] = {}
    stdin_used = False

    def put(name: str, value: str, how: str) -> None:
        if name in given:
            raise InvalidInput(f"the {name} is given twice ({given[name]} and {how})")
        given[name] = how
        values[name] = value

    src = getattr(args, "fields_from", None)
    if src:
        stdin_used = src == "-"
        try:
            obj = json.loads(_read(src, "fields", stdin_free=stdin_free))
        except ValueError:
            raise InvalidInput("--fields-from: expected a JSON object") from None
        if not isinstance(obj, dict):
            raise InvalidInput("--fields-from: expected a JSON object")
        for key, value in obj.items():
            if key not in names:
                raise InvalidInput(
                    f"--fields-from: unknown field {key!r} (one of {', '.join(names)})"
                )
            if not isinstance(value, str):
                raise InvalidInput(f"--fields-from: {key} must be a string")
            put(key, value, "--fields-from")
    for name in names:
        direct = getattr(args, name, None)
        if direct is not None:
            put(name, direct, f"--{name}")
        path = getattr(args, f"{name}_file", None)
        if path is not None:
            if path == "-":
                if stdin_used:
                    raise InvalidInput("only one field can be read from stdin")
                stdin_used = True
            put(name, _read(path, name, stdin_free=stdin_free), f"--{name}-file")
    for name in getattr(args, "ask", None) or ():
        from credvault.cli import terminal as t

        if not t.has_terminal():
            raise InvalidInput(f"no terminal to ask the {name}: use --{name}-file")
        put(name, t.ask_line(f"{name.capitalize()}: "), "--ask")
    return {n: values.get(n) for n in names}
