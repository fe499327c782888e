"""The ``credvault`` script's fast path (``credvault.launch``): an answer from the agent ends
the process with the agent's exit code once stdout and stderr are flushed (``os._exit``:
no interpreter teardown); output lost to a closed pipe is never exit 0."""

from __future__ import annotations

import io
import os

import pytest

from credvault import launch
from credvault.agent import client


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _ClosedPipe(io.StringIO):
    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def _exit(code: int) -> None:
    raise _Exited(code)


@pytest.mark.parametrize(
    ("answered", "closed", "expected"), [(0, False, 0), (3, False, 3), (0, True, 1), (4, True, 4)]
)
def test_an_agent_answer_exits_with_its_code(
    monkeypatch: pytest.MonkeyPatch, answered: int, closed: bool, expected: int
) -> None:
    monkeypatch.setattr(client, "fast_path", lambda argv: answered)
    monkeypatch.setattr(os, "_exit", _exit)
    if closed:
        monkeypatch.setattr("sys.stdout", _ClosedPipe())
    with pytest.raises(_Exited) as e:
        launch._main()
    assert e.value.code == expected
