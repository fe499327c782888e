"""The standing fault campaign (issue 13, item 6): every write operation of ``fault_ops.OPS``
killed with SIGKILL, SIGINT and SIGTERM at points spread over the lines it executes, each
trial followed by ``fault_ops.check`` (opens for every member, integrity and audit checks,
in effect if and only if audited, acknowledged means in effect, no stray file).

By default a cheap deterministic sample runs (one kill point for a few operations; the
membership changes are covered in depth by test_atomicity.py). ``CREDVAULT_FAULT_CAMPAIGN=full``
runs every operation at ``CREDVAULT_FAULT_POINTS`` (default 30) points for each of SIGKILL,
SIGINT and SIGTERM (an interrupted operation must exit 128+N with one line on stderr, and
be all or nothing like a killed one), and appends a table (operation × fault → trials, violations) to the file named by
``CREDVAULT_FAULT_REPORT`` if set.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fault_ops import OPS, PASSWORDS, audit_head, check, fresh_copy, make_template, open_vault
from killpoints import points, run_child

pytestmark = pytest.mark.fault

FULL = os.environ.get("CREDVAULT_FAULT_CAMPAIGN") == "full"
SAMPLE = ["put", "rotate", "shred", "unlock"]
KINDS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("campaign")
    make_template(root / "vault")
    with open_vault(root / "vault", "alice", PASSWORDS["alice"]) as v:
        v.backups.create(root / "backups")
    return root, audit_head(root / "vault")


def _count(kind: str) -> int:
    """Fault points per operation: 1 in the default sample; in the full campaign
    ``CREDVAULT_FAULT_POINTS`` (default 30) for each of SIGKILL, SIGINT and SIGTERM."""
    if not FULL:
        return 1
    return int(os.environ.get("CREDVAULT_FAULT_POINTS", "30"))


CASES = (
    [(op, kind) for op in sorted(OPS) for kind in KINDS]
    if FULL
    else [(op, "SIGKILL") for op in SAMPLE] + [("put", "SIGINT"), ("rotate", "SIGTERM")]
)


@pytest.mark.parametrize(("op", "kind"), CASES)
def test_fault_campaign(op: str, kind: str, template: tuple[Path, int], tmp_path: Path) -> None:
    fresh_copy(template[0], tmp_path / "dry", op)
    total = run_child(tmp_path / "dry", op).lines
    sig = KINDS[kind]
    trials, bad = 0, []
    for at in points(total, _count(kind)):
        work = tmp_path / f"t{at}"
        fresh_copy(template[0], work, op)
        out = run_child(work, op, str(at), sig)
        trials += 1
        problems = check(work / "vault", OPS[op], work, out.acknowledged, template[1])
        if "Traceback" in out.err:
            problems.append("traceback on stderr")
        if sig != signal.SIGKILL and not out.acknowledged:
            if out.code != 128 + sig:  # (acknowledged: it finished before the signal landed)
                problems.append(f"exit status {out.code}, not {128 + sig}")
            lines = out.err.strip().splitlines()
            if len(lines) != 1 or not lines[0].startswith("credvault: "):
                problems.append(f"not one line on stderr: {out.err[-300:]!r}")
        bad += [f"@{at}/{total}: {p}" for p in problems]
    report = os.environ.get("CREDVAULT_FAULT_REPORT")
    if report:
        with Path(report).open("a") as f:
            f.write(f"| {op} | {kind} | {trials} | {len(bad)} | {total} |\n")
    assert not bad, bad
