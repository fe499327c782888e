"""SIGINT and SIGTERM for the ``credvault`` command: one line and exit 130 or 143.

Installed by :mod:`credvault.launch` before anything heavy is imported (``_signal``, not
``signal``: that one imports ``enum``, which the agent's fast path would pay for). The handler
raises ``KeyboardInterrupt(signum)``, which unwinds like any error: open transactions roll
back and a key-slot change settles exactly as after kill -9 (see docs/operations.md).
Further signals during that unwinding are ignored.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # `signal` would import enum
import sys
from types import FrameType

SIGNALS: tuple[int, int] = (int(_signal.SIGINT), int(_signal.SIGTERM))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for s in SIGNALS:
        _signal.signal(s, _signal.SIG_IGN)  # one interruption; the unwinding must finish
    raise KeyboardInterrupt(signum)


def install_signal_handlers() -> None:
    for s in SIGNALS:
        _signal.signal(s, _on_signal)


def interrupted(exc: KeyboardInterrupt) -> int:
    """Print the one line for an interruption and return its exit status (128 + signal)."""
    signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else SIGNALS[0]
    name = "terminated (SIGTERM)" if signum == SIGNALS[1] else "interrupted"
    sys.stderr.write(
        f"credvault: {name}; the command either finished or changed nothing "
        "(the next command completes or undoes anything it left half-way)\n"
    )
    return 128 + signum
