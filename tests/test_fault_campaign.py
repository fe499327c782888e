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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credvault import MIN_KDF, Vault
from fault_ops import OPS, PASSWORDS, check, fresh_copy, make_campaign_template, open_vault
from killpoints import points, run_child

pytestmark = pytest.mark.fault

FULL = os.environ.get("CREDVAULT_FAULT_CAMPAIGN") == "full"
SAMPLE = ["put", "rotate", "shred", "unlock"]
KINDS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return make_campaign_template(tmp_path_factory.mktemp("campaign"))


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


def test_a_killed_ledger_copy_is_cleaned_by_the_next_backup(
    template: tuple[Path, int], tmp_path: Path
) -> None:
    """Found by this campaign: a backup killed while it rewrote the ledger copy beside the
    backups left ``.credvault-ledger-<id>.jsonl.<pid>.tmp``. The next backup removes it once
    its writer is gone, but never one whose writer is still alive."""
    import subprocess
    import sys

    fresh_copy(template[0], tmp_path / "w")
    backups = tmp_path / "w" / "backups"
    with open_vault(tmp_path / "w" / "vault", "alice", PASSWORDS["alice"]) as v:
        vid = v.vault_id
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = backups / f".credvault-ledger-{vid}.jsonl.{int(gone.stdout)}.tmp"
    writer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)  # fmt: skip
    live = backups / f".credvault-ledger-{vid}.jsonl.{writer.pid}.tmp"
    other = backups / f".credvault-ledger-{'0' * 32}.jsonl.{int(gone.stdout)}.tmp"
    for f in (dead, live, other):
        f.write_bytes(b"half a ledger")
    later = datetime.now(UTC) + timedelta(hours=1)
    try:
        with Vault.open(
            tmp_path / "w" / "vault", "alice", PASSWORDS["alice"], kdf=MIN_KDF, clock=lambda: later
        ) as v:
            v.backups.create(backups)
    finally:
        writer.communicate(b"", timeout=60)
    assert not dead.exists(), "a dead writer's temporary ledger copy survived the next backup"
    assert live.exists(), "a live writer's temporary file must be left to it"
    assert other.exists(), "another vault's files are not ours to remove"
