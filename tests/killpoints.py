"""Kill points from observed progress, for the crash tests' child processes.

``KILL_HOOK`` is Python source that a crash test puts at the top of its child script. It counts
*events* while armed: every executed line of credvault code (a ``sys.settrace`` line tracer
limited to files under a ``credvault`` package directory) and every tick of SQLite's progress
handler (installed on each connection credvault opens, by wrapping ``sqlcipher3.connect``; it
fires every ``PROGRESS_STEP`` virtual-machine instructions *inside* SQLite's own work: commits,
``VACUUM``, the online backup copy). ``arm(at, kind)`` starts counting, and the child SIGKILLs
itself at the ``at``-th event of ``kind`` ("any", "line" or "sql"). ``disarm()`` stops and
returns the counts ``(lines, sql_ticks)``; ``marks`` maps each credvault function name to the
event count at its first call, so a test can aim inside a named step.

A calibration run (armed with ``at=None``) counts the events of the whole operation; kill
points are then drawn from that range. Nothing here reads a clock: the same kill point lands
at the same step of the operation however loaded the machine is. The product has no hook for
this; only the child process of the test is instrumented.

``wait_until`` polls a condition (a file appearing, a process state) with a generous deadline;
it picks no kill point, it only waits for one.

The second way, for the standing fault suites (test_fault_campaign.py, test_atomicity.py,
test_corruption_campaign.py): ``fault_child.py`` runs one operation of ``fault_ops.OPS`` under
a line tracer and faults it (SIGKILL, SIGINT or SIGTERM) at the N-th executed line of
credvault or at the K-th call of a named function; :func:`run_child` runs it and
:func:`points` spreads N over the line count of a dry run. Same principle: a point is a
step of the operation, not a moment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

#: ``CREDVAULT_TEST_KILLS=full`` runs the random kill loops at their full counts (the suite
#: then kills about 160 times); the default run does fewer random kills, while every
#: deterministic kill point (the fixed ones, each file-system step of a re-key) stays.
FULL_KILLS = os.environ.get("CREDVAULT_TEST_KILLS", "") == "full"


def kill_count(default: int, full: int) -> int:
    """How many random kills a loop does in this run (see FULL_KILLS)."""
    return full if FULL_KILLS else default


KILL_HOOK = r"""
import os, signal, sys, threading
from pathlib import Path
import sqlcipher3

PROGRESS_STEP = 50
_SEP = os.sep + "credvault" + os.sep
_st = {"line": 0, "sql": 0, "at": None, "kind": "any", "on": False}
marks = {}

def _event(kind):
    _st[kind] += 1
    if _st["at"] is not None and (_st["kind"] == kind or _st["kind"] == "any"):
        n = _st[kind] if _st["kind"] == kind else _st["line"] + _st["sql"]
        if n >= _st["at"]:
            os.kill(os.getpid(), signal.SIGKILL)

def _local(frame, event, arg):
    if event == "line" and _st["on"]:
        _event("line")
    return _local

def _global(frame, event, arg):
    if not _st["on"] or _SEP not in frame.f_code.co_filename:
        return None
    marks.setdefault(frame.f_code.co_name, _st["line"] + _st["sql"])
    return _local

def _progress():
    if _st["on"]:
        _event("sql")
    return 0

_connect = sqlcipher3.connect

def _connect_hooked(*a, **kw):
    conn = _connect(*a, **kw)
    conn.set_progress_handler(_progress, PROGRESS_STEP)
    return conn

sqlcipher3.connect = _connect_hooked

def arm(at=None, kind="any"):
    _st.update(line=0, sql=0, at=at, kind=kind, on=True)
    marks.clear()
    threading.settrace(_global)
    sys.settrace(_global)

def disarm():
    sys.settrace(None)
    threading.settrace(None)
    _st["on"] = False
    return _st["line"], _st["sql"]
"""


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 120.0) -> None:
    """Poll ``condition`` until it holds; fail after a deadline that only a hang reaches."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- fault_child.py: one operation, faulted at a traced line or a named call ----------------
CHILD = Path(__file__).with_name("fault_child.py")
TIMEOUT_S = 300


class Outcome(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def acknowledged(self) -> bool:
        return "ACK" in self.out.split()

    @property
    def lines(self) -> int:
        return int(self.out.split("LINES ", 1)[1].split()[0])


def run_child(work: Path, op: str, kill_at: int | str = 0, sig: int = 9) -> Outcome:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(CHILD.parent), os.environ.get("PYTHONPATH")])),
    )
    if sig == 9 and str(kill_at) != "0":
        # a child that SIGKILLs itself never writes its coverage data: starting coverage
        # there (~0.15 s) measures nothing (the dry run, kill_at 0, measures the operation)
        env = without_coverage(env)
    r = subprocess.run(
        [sys.executable, str(CHILD), str(work), op, str(kill_at), str(sig)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Outcome(r.returncode, r.stdout, r.stderr)


def without_coverage(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) without coverage's subprocess variables, for a
    child that is killed with SIGKILL (coverage writes its data at exit, which such a
    child never reaches: starting it there costs ~0.15 s and measures nothing)."""
    env = dict(os.environ) if env is None else env
    return {k: v for k, v in env.items() if not k.startswith("COVERAGE_PROCESS_")}


def points(total: int, n: int) -> list[int]:
    """``n`` distinct kill points spread evenly over ``total`` observed lines."""
    n = max(1, min(n, total))
    return sorted({max(1, round(total * (i + 0.5) / n)) for i in range(n)})
