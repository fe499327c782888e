"""The benchmarks' one test seam (not public API; see benchmarks/README.md, "The test seam").

Three benchmark figures need a vault whose audit trail holds a million entries. Through the
public API each entry is one audited call with its own durable commit (~0.5 ms each: over
eight minutes per million), so this function appends many entries per transaction instead.
Each one is chained and MACed by the vault's own audit log exactly as a real entry is
(``audit verify`` accepts the result), stamped by the vault's clock and attributed to the
member who opened the vault. It lives in the package, not in benchmarks/, so that a change
of the internals it uses is caught by ``mypy`` and by the benchmark smoke test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from credvault.vault import Vault


def append_audit_entries(
    vault: Vault,
    entries: Iterable[tuple[str, str | None, str | None]],
    *,
    per_transaction: int = 100_000,
) -> int:
    """Append ``(action, engagement, item)`` entries with outcome ``ok``; returns how many."""
    s = vault._s
    done = 0
    it = iter(entries)
    while batch := list(itertools.islice(it, per_transaction)):
        with s.store.write():
            for action, engagement, item in batch:
                s.log(action, engagement, item, "ok")
        done += len(batch)
    return done


def witness_off(vault: Vault) -> None:
    """Stop ``vault`` advancing its member's witness after each commit (issue 11), so that
    ``benchmarks/bench_witness.py`` can time gets with and without that step in one run."""
    vault._s.store.on_commit = None


def witness_write(vault: Vault, *, durable: bool) -> None:
    """Replace the member's witness file once, with or without fsync (file and directory):
    what the get path skips, timed by ``benchmarks/bench_witness.py``."""
    from credvault import witness as wt

    keeper = vault._witness
    assert keeper is not None
    with wt.locked(keeper.path):
        at = wt.read(keeper.path, keeper.key, vault._s.vault_id, vault._s.member)
        assert at.witness is not None
        wt.save(keeper.path, at.witness, keeper.key, durable=durable, at=at)
