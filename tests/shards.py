"""Which shard runs which test file (``CREDVAULT_TEST_SHARD=K/N``; scripts/test runs the whole
suite as three shards side by side).

A file is the unit, never a test: most files build module-scoped fixtures (a CLI vault, a
hundred error-case processes, a keyring daemon) that a split would build twice. Files are
packed heaviest first onto the lightest shard (LPT). Weights are seconds from a profiled run
(``--durations=0``) of the files that take more than a few; a file not listed counts
``PER_TEST`` seconds per test. Stale weights only unbalance the shards, never drop a test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

PER_TEST = 0.3
WEIGHTS: dict[str, float] = {
    "tests/postgres/test_contract.py": 310,
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


def assign(files: Sequence[str], counts: dict[str, int], shards: int) -> dict[str, int]:
    """Each file's shard: heaviest first onto the shard with the least weight so far (ties
    by name, so every shard process computes the same assignment)."""
    load = [0.0] * shards
    out: dict[str, int] = {}
    weight = {f: WEIGHTS.get(f, PER_TEST * counts.get(f, 1)) for f in files}
    for f in sorted(files, key=lambda f: (-weight[f], f)):
        k = min(range(shards), key=lambda i: (load[i], i))
        out[f] = k
        load[k] += weight[f]
    return out


def per_file(paths: Sequence[str]) -> dict[str, int]:
    """How many tests each file holds."""
    counts: dict[str, int] = defaultdict(int)
    for p in paths:
        counts[p] += 1
    return dict(counts)
