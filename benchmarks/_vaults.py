"""Helpers for the library benchmarks: build large credvault vaults fast.

Everything goes through the public library (``Vault.init``, ``members.add``,
``engagements.create``, ``credentials.put_many``) except the synthetic audit trail, which is
chained here with credvault's own canonical encoding and MAC (``audit._canonical`` and
``primitives.mac``) and inserted with ``executemany``: a million ``AuditLog.append`` calls
would take minutes, and the result must (and does) pass ``audit verify``.

Members use the cheapest Argon2id the vault accepts (``MIN_KDF``): unlocking is not what these
benchmarks measure, except where they say so.
"""

from __future__ import annotations

import os
import random  # noqa: TID251 - seeded, reproducible synthetic trail (not for keys)
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credvault import MIN_KDF, Vault
from credvault import audit as audit_mod
from credvault.crypto import primitives as p
from credvault.session import iso

ADMIN = "alice"
PASSWORDS = {
    "alice": "alice-bench-pass",
    "bob": "bob-bench-pass",
    "carol": "carol-bench-pass",
    "dave": "dave-bench-pass",
}
CHUNK = 10_000  # credentials per put_many call (one transaction)
AUDIT_CHUNK = 100_000  # synthetic audit entries per transaction
AUDIT_STEP = timedelta(microseconds=100)  # spacing of synthetic audit timestamps
_AUDIT_INSERT = (
    "INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, mac) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


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


def open_vault(path: Path, clock: Clock, member: str = ADMIN, **kw: bool) -> Vault:
    return Vault.open(path, member, PASSWORDS[member], kdf=MIN_KDF, clock=clock, **kw)


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
    v: Vault,
    count: int,
    clock: Clock,
    *,
    engagements: Sequence[str],
    per_engagement: int,
    members: Sequence[str] = (ADMIN,),
    seed: int = 1,
) -> float:
    """Append ``count`` chained ``get`` entries (read by ``members``); returns seconds.

    Timestamps follow the current head 100 µs apart, and the clock is moved past the last
    one afterwards, so the trail stays in time order (pruning relies on it).
    """
    s = v._s
    store = s.store
    key: bytes = s.audit._key
    rng = random.Random(seed)
    start = clock()
    t0 = time.perf_counter()
    done = 0
    while done < count:
        n = min(AUDIT_CHUNK, count - done)
        rows = []
        with store.write():
            head = store.audit_head()
            assert head is not None, "a vault always has its init entry"
            seq, prev = int(head[0]), bytes(head[8])
            for k in range(n):
                seq += 1
                ts = iso(start + AUDIT_STEP * (done + k))
                body = (
                    seq,
                    ts,
                    members[rng.randrange(len(members))],
                    "get",
                    engagements[rng.randrange(len(engagements))],
                    cred_name(rng.randrange(per_engagement)),
                    "ok",
                    "",
                )
                prev = p.mac(key, prev + audit_mod._canonical(body))
                rows.append((*body, prev))
            store.conn.executemany(_AUDIT_INSERT, rows)
        done += n
    clock.advance(microseconds=AUDIT_STEP.microseconds * count + 1000)
    return time.perf_counter() - t0


def audit_count(v: Vault) -> int:
    row = v._s.store.conn.execute("SELECT count(*) FROM audit").fetchone()
    return int(row[0])


def credential_count(v: Vault) -> int:
    row = v._s.store.conn.execute("SELECT count(*) FROM credentials").fetchone()
    return int(row[0])


def vault_bytes(path: Path) -> int:
    """Size of the database and its WAL."""
    return sum(
        f.stat().st_size for f in path.iterdir() if f.name.startswith("vault.db") and f.is_file()
    )
