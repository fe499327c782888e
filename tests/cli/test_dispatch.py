"""What the command line makes of a command's failure (``credvault.cli.dispatch``): one line
on stderr and the exit code for each kind, never a traceback and never the text of an
unexpected exception (it may hold a secret); a closed stdout is exit 1 without a word."""

from __future__ import annotations

import argparse
import errno
import signal

import pytest

from credvault.cli import dispatch
from credvault.errors import NotFound

SECRET = "hunter2-in-an-exception"


def _raising(error: BaseException) -> argparse.Namespace:
    def func(_args: argparse.Namespace) -> int:
        raise error

    return argparse.Namespace(func=func)


CASES = [
    (NotFound("credential", "acme-2026/x"), 3, "credvault: credential 'acme-2026/x' not found\n"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), 1, ""),
    (OSError(errno.ENOSPC, "No space left", "/v/vault.db"), 1,
     "credvault: disk full: cannot write /v/vault.db\n"),
    (OSError(errno.EDQUOT, "Quota"), 1, "credvault: disk full\n"),
    (OSError(errno.EACCES, "Permission denied", "/v/keyslots.json"), 1,
     "credvault: Permission denied: /v/keyslots.json\n"),
    (OSError(), 1, "credvault: I/O error\n"),
    (ValueError(SECRET), 1, "credvault: internal error (ValueError); please report it\n"),
    (KeyError(SECRET), 1, "credvault: internal error (KeyError); please report it\n"),
    (KeyboardInterrupt(signal.SIGTERM), 128 + signal.SIGTERM,
     "credvault: terminated (SIGTERM); the command either finished or changed nothing "
     "(the next command completes or undoes anything it left half-way)\n"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code", "err"),
    CASES,
    ids=["not-found", "broken-pipe", "disk-full", "quota", "denied", "bare-oserror",
         "value-error", "key-error", "sigterm"],
)  # fmt: skip
def test_a_failure_is_one_line_and_its_exit_code(
    capsys: pytest.CaptureFixture[str], error: BaseException, code: int, err: str
) -> None:
    assert dispatch(_raising(error)) == code
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", err)
    assert SECRET not in out.err
