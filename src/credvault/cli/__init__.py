"""The ``credvault`` command: parse with the command table, run one handler, map errors.

Errors are one line on stderr (``credvault: …``) and the exit codes of spec §7; never a
traceback, never a secret. No SQL and no cryptography here: every handler calls the library.

The commands are declared once, in :data:`credvault.cli.table.TABLE` (handlers in
:mod:`credvault.cli.commands`, how an entry becomes argparse in :mod:`credvault.cli.spec`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from credvault.cli import spec
from credvault.cli.table import TABLE
from credvault.cli.terminal import err
from credvault.errors import CredvaultError

COMMANDS = frozenset(cmd.name for cmd in TABLE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` just that command's part (what `main` needs)."""
    return spec.build_parser(TABLE, only)


def parse(words: Sequence[str]) -> argparse.Namespace:
    """Parse a command line, building only the parser of the command it names.

    The command is the first word (the top level takes no option but --help and
    --version); without one, the parser lists the commands without their arguments, which
    is all ``--help``, ``--version`` and a usage error need.
    """
    words = list(words)
    if words and words[0] in COMMANDS:
        parser = build_parser(words[0])
    else:
        parser = spec.build_parser(TABLE, shallow=True)
    return parser.parse_args(words)


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command; errors become one line on stderr and their exit code."""
    try:
        code: int = args.func(args)
        return code
    except CredvaultError as e:
        err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        err(f"{e.strerror or 'I/O error'}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback, never a secret
        err(f"internal error ({type(e).__name__}); please report it")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(parse(sys.argv[1:] if argv is None else argv))
