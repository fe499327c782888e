"""The ``credvault`` console entry point: signal handling first, then the CLI.

Importing the CLI (SQLCipher, cryptography, the library) takes a noticeable moment; a
Ctrl-C or SIGTERM in it must not print a traceback. So this module, which imports nothing of
credvault, installs the handlers and only then imports the CLI. SIGINT exits 130 and SIGTERM
143, each with one line on stderr. The handler raises ``KeyboardInterrupt(signum)``, which
unwinds like any error: open transactions roll back and a key-slot change settles exactly as
after kill -9 (see docs/operations.md). Further signals during that unwinding are ignored.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # one interruption; the unwinding must finish
    raise KeyboardInterrupt(signum)


def install_signal_handlers() -> None:
    for s in SIGNALS:
        signal.signal(s, _on_signal)


def interrupted(exc: KeyboardInterrupt) -> int:
    """Print the one line for an interruption and return its exit status (128 + signal)."""
    signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else int(signal.SIGINT)
    name = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    sys.stderr.write(
        f"credvault: {name}; the command either finished or changed nothing "
        "(the next command completes or undoes anything it left half-way)\n"
    )
    return 128 + signum


def main() -> int:
    install_signal_handlers()
    try:
        from credvault.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt as e:
        return interrupted(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
