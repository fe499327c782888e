"""Kill points chosen by observed progress, not by sleeps (shared by the fault suites).

``fault_child.py`` counts the lines it executes inside credvault while running an
operation; a dry run gives the total, and :func:`points` spreads kill points over it. The
same count in a later run reaches the same line (single process, same inputs), so a trial
is reproducible from its (operation, point) pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

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
    r = subprocess.run(
        [sys.executable, str(CHILD), str(work), op, str(kill_at), str(sig)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Outcome(r.returncode, r.stdout, r.stderr)


def points(total: int, n: int) -> list[int]:
    """``n`` distinct kill points spread evenly over ``total`` observed lines."""
    n = max(1, min(n, total))
    return sorted({max(1, round(total * (i + 0.5) / n)) for i in range(n)})
