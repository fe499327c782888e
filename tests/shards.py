"""The whole suite as several pytest processes side by side (scripts/test): each claims whole
test files from a shared directory (``CREDVAULT_TEST_CLAIMS``), heaviest first, and runs the
files it claimed; a file goes to whichever process is free first, so the processes finish
together however the files' costs drift.

A file is the unit, never a test: most files build module-scoped fixtures (a CLI vault, a
hundred error-case processes, a keyring daemon) that a split would build twice. A claim is an
``os.mkdir`` (atomic: exactly one process wins it). Weights only order the files (heaviest
first, so no shard is left with a long file at the end); they are seconds from a profiled run
(``--durations=0``), and a file not listed counts ``PER_TEST`` seconds per test. Stale weights
only cost balance, never a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PER_TEST = 0.3
WEIGHTS: dict[str, float] = {
    "tests/postgres/test_contract.py": 205,
    "tests/postgres/test_contract_vault.py": 200,
    "tests/postgres/test_contract_lifecycle.py": 58,
    "tests/test_bench.py": 54,
    "tests/cli/test_cli.py": 54,
    "tests/postgres/test_migrate_pg.py": 46,
    "tests/postgres/test_memberlog_pg.py": 44,
    "tests/test_atomicity.py": 37,
    "tests/test_agent_cli.py": 30,
    "tests/postgres/test_merged_records_pg.py": 27,
    "tests/cli/test_records_cli.py": 24,
    "tests/postgres/test_upgrade_pg.py": 23,
    "tests/postgres/test_lifecycle_pg.py": 22,
    "tests/test_rekey_crash.py": 22,
    "tests/cli/test_terminal.py": 22,
    "tests/test_lifecycle.py": 21,
    "tests/test_witness_vault.py": 20,
    "tests/test_faults.py": 19,
    "tests/postgres/test_passwd_pg.py": 17,
    "tests/test_handoff_cli.py": 17,
    "tests/postgres/test_contract_export.py": 16,
    "tests/test_audit.py": 15,
    "tests/test_corruption_campaign.py": 15,
    "tests/test_grants_crypto.py": 14,
    "tests/test_keyring_cache.py": 14,
    "tests/test_binding.py": 13,
    "tests/postgres/test_insider_records_pg.py": 11,
    "tests/test_completion.py": 11,
}


def weight(path: str, tests: int) -> float:
    return WEIGHTS.get(path, PER_TEST * tests)


def claimed(files: list[tuple[str, list[T]]], claims: Path) -> Iterator[list[T]]:
    """The test lists of the files this process wins, heaviest file first."""
    for path, items in sorted(files, key=lambda f: (-weight(f[0], len(f[1])), f[0])):
        try:
            (claims / path.replace("/", "__")).mkdir()
        except FileExistsError:
            continue
        yield items
