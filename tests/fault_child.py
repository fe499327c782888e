"""Run one write operation of ``fault_ops.OPS`` and fault it at an observed point.

``python fault_child.py WORK OP [KILL_AT|call:NAME#K [SIGNAL]]``: opens the vault in WORK/vault as alice,
then runs OP under a line tracer that counts the lines executed inside credvault's own code
(the observed progress). With KILL_AT, the process sends itself SIGNAL (default SIGKILL) when
that count is reached; without it, it prints the count. An operation that returns prints
``ACK`` (acknowledged) first. With SIGINT/SIGTERM the CLI's handlers are installed, as in
``credvault``; the child then exits as the CLI does.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

PKG = os.sep + "credvault" + os.sep


def main() -> int:
    work = Path(sys.argv[1])
    op_name = sys.argv[2]
    at = sys.argv[3] if len(sys.argv) > 3 else "0"
    # "call:NAME#K": the K-th call of a credvault function NAME (a named progress point)
    kill_at, call_name, call_k = 0, "", 1
    if at.startswith("call:"):
        call_name, _, k = at[5:].partition("#")
        call_k = int(k or 1)
    else:
        kill_at = int(at)
    sig = int(sys.argv[4]) if len(sys.argv) > 4 else signal.SIGKILL
    if sig != signal.SIGKILL:
        from credvault.interrupts import install_signal_handlers

        install_signal_handlers()
    from credvault.errors import CredvaultError
    from fault_ops import OPS, PASSWORDS, open_vault

    op = OPS[op_name]
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), sig)
        return local

    calls = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal calls
        if PKG not in frame.f_code.co_filename:
            return None
        if call_name and frame.f_code.co_name == call_name:
            calls += 1
            if calls == call_k:
                os.kill(os.getpid(), sig)
        return local

    try:
        if op_name == "unlock":
            sys.settrace(trace)
        v = open_vault(work / "vault", "alice", PASSWORDS["alice"])
        sys.settrace(trace)
        with v:
            op.run(v, work)
        sys.settrace(None)
    except KeyboardInterrupt as e:
        sys.settrace(None)
        from credvault.interrupts import interrupted

        return interrupted(e)
    except (CredvaultError, OSError) as e:  # what the CLI would print, on one line
        sys.settrace(None)
        sys.stdout.write(f"ERR {type(e).__name__}: {e}\n")
        return 1
    sys.stdout.write(f"ACK\nLINES {count}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
