"""The ``credvault`` console script: the agent's fast path first, the full CLI otherwise.

Importing ``credvault.cli`` costs the whole library (cryptography, SQLCipher); a command the
running agent can serve needs none of it, so this module imports only the standard-library
client until it knows the agent will not answer.
"""

from __future__ import annotations

import sys


def main() -> int:
    from credvault.agent.client import fast_path

    code = fast_path(sys.argv[1:])
    if code is not None:
        # Answered by the agent: nothing is open but stdout and stderr, so skip the
        # interpreter's teardown (several ms of a ~20 ms command) once they are flushed.
        import os

        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            code = code or 1
        os._exit(code)
    from credvault.cli import main as full_cli

    return full_cli()
