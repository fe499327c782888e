"""Build large credvault vaults fast, for the library benchmarks.

Everything goes through the public library (``Vault.init``, ``members.add``,
``engagements.create``, ``credentials.put_many``) except the synthetic audit trail, which uses
the one documented test seam, ``credvault._bench_seam.append_audit_entries`` (see README.md):
a million audited calls would take minutes, and the result must (and does) pass
``audit verify``.

Members use the cheapest Argon2id the vault accepts (``MIN_KDF``): unlocking is not what these
benchmarks measure, except where they say so.
"""

from __future__ import annotations

import os
import random  # noqa: TID251 - seeded, reproducible synthetic trail (not for keys)
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credvault import MIN_KDF, Vault
from credvault._bench_seam import append_audit_entries

ADMIN = "alice"
PASSWORDS = {
    "alice": "alice-bench-pass",
    "bob": "bob-bench-pass",
    "carol": "carol-bench-pass",
    "dave": "dave-bench-pass",
}
CHUNK = 10_000  # credentials per put_many call (one transaction)


class Clock:
    """The real clock plus an offset the benchmark moves forward (to make a purge due)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **kw: float) -> None:
        self.offset += timedelta(**kw)


def cred_name(i: int) -> str:
    return f"c{i:07d}"


def eng_name(i: int) -> str:
    return f"e{i:03d}"


def secret_value(i: int) -> bytes:
    """A 32-byte password-like value, distinct per credential."""
    return f"pw{i:07d}-".encode() + os.urandom(11).hex().encode()[:22]


def create_vault(path: Path, clock: Clock, members: Sequence[str] = ("bob",)) -> Path:
    """A vault with admin ``alice`` and the given (non-admin) members; recovery key beside it."""
    Vault.init(
        path,
        ADMIN,
        PASSWORDS[ADMIN],
        kdf=MIN_KDF,
        recovery_file=path.parent / f"{path.name}.recovery",
        clock=clock,
    )
    with open_vault(path, clock) as v:
        for m in members:
            v.members.add(m, passphrase=PASSWORDS[m].encode())
    return path


def open_vault(path: Path, clock: Clock, member: str = ADMIN) -> Vault:
    return Vault.open(path, member, PASSWORDS[member], kdf=MIN_KDF, clock=clock)


@dataclass
class BuildReport:
    """Seconds per ``put_many`` call (each inserts one chunk in one transaction)."""

    chunk_seconds: list[float] = field(default_factory=list)
    credentials: int = 0
    total_seconds: float = 0.0


def fill_engagement(
    v: Vault, engagement: str, count: int, *, start: int = 0, report: BuildReport | None = None
) -> BuildReport:
    """Insert ``count`` credentials named ``c<start..>`` into an existing engagement."""
    rep = report if report is not None else BuildReport()
    t_all = time.perf_counter()
    i = start
    while i < start + count:
        n = min(CHUNK, start + count - i)
        entries = [(cred_name(j), secret_value(j)) for j in range(i, i + n)]
        t0 = time.perf_counter()
        v.credentials.put_many(engagement, entries)
        rep.chunk_seconds.append(time.perf_counter() - t0)
        rep.credentials += n
        i += n
    rep.total_seconds += time.perf_counter() - t_all
    return rep


def build_engagements(
    v: Vault,
    names: Sequence[str],
    per_engagement: int,
    *,
    client: str = "client",
    report: BuildReport | None = None,
) -> BuildReport:
    """Create each engagement (alice lead) and fill it with ``per_engagement`` credentials."""
    rep = report if report is not None else BuildReport()
    for name in names:
        t0 = time.perf_counter()
        v.engagements.create(name, client, lead=ADMIN)
        rep.total_seconds += time.perf_counter() - t0
        fill_engagement(v, name, per_engagement, report=rep)
    return rep


def append_audit(
    v: Vault, count: int, *, engagements: Sequence[str], per_engagement: int, seed: int = 1
) -> float:
    """Append ``count`` chained ``get`` entries of random credentials; returns seconds."""
    rng = random.Random(seed)

    def entries() -> Iterator[tuple[str, str | None, str | None]]:
        for _ in range(count):
            eng = engagements[rng.randrange(len(engagements))]
            yield "get", eng, cred_name(rng.randrange(per_engagement))

    t0 = time.perf_counter()
    added = append_audit_entries(v, entries())
    assert added == count, (added, count)
    return time.perf_counter() - t0


def credential_count(v: Vault, engagement: str | None = None) -> int:
    """Credentials (of one engagement, or all): one audited ``ls``."""
    return len(v.credentials.list(engagement))


def vault_bytes(path: Path) -> int:
    """Size of the database and its WAL."""
    return sum(
        f.stat().st_size for f in path.iterdir() if f.name.startswith("vault.db") and f.is_file()
    )
