"""The hash-chained, fail-closed audit trail.

Each entry's MAC is ``HMAC(audit key, previous MAC ‖ canonical entry)``, with the audit key
derived from the database key by HKDF under its own label. The key has successors: when a
member leaves (or their keys may be known) the re-keyed database gets a fresh random MAC key
the former member never saw; the change is itself an entry (``audit-key``, MACed under the
old key and naming the new key's fingerprint), and the retired keys stay in ``meta`` so the
whole chain still verifies, each entry under the key in force at its position. The entry of an operation is
written in the same transaction as the operation's own changes, and reads release their
secret only after that transaction commits: if the entry cannot be committed, nothing is
returned. Entries hold identifiers only (names, outcomes, short details); this module never
accepts a :class:`~credvault.secret.Secret`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import NamedTuple

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import AuditChainBroken, InvalidInput
from credvault.model import AuditRow
from credvault.store import Store

GENESIS = bytes(32)
OUTCOMES = ("ok", "denied", "error")
MAX_DETAIL = 300


class AuditEntry(NamedTuple):
    """One line of the trail, as listed by ``credvault audit``."""

    seq: int
    ts: str
    member: str
    action: str
    engagement: str | None
    item: str | None
    outcome: str
    detail: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Checkpoint(NamedTuple):
    """The chain head, to be kept outside the vault: ``POS:MAC``."""

    position: int
    mac: str

    def __str__(self) -> str:
        return f"{self.position}:{self.mac}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        try:
            pos, mac = text.strip().split(":")
            if len(bytes.fromhex(mac)) != 32:
                raise ValueError
            return cls(int(pos), mac.lower())
        except ValueError:
            raise InvalidInput(
                "invalid checkpoint: expected POSITION:MAC (64 hex digits)"
            ) from None


def audit_key(db_key: bytes) -> bytes:
    """HKDF of the database key under the audit label (computed once, at ``init``).

    The result is kept in the database (encrypted by SQLCipher) so that re-keying the
    database after a member leaves does not force re-computing a million MACs.
    """
    return p.hkdf(db_key, labels.AUDIT_MAC)


def _canonical(row: AuditRow) -> bytes:
    """``labels.encode(seq, ts, member, action, engagement, item, outcome, detail)``, inlined:
    it runs once per entry when a million entries are verified."""
    out = [_SEQ_PREFIX, int(row.seq).to_bytes(8, "big", signed=True)]
    for text in (
        row.ts,
        row.member,
        row.action,
        row.engagement or "",
        row.item or "",
        row.outcome,
        row.detail,
    ):
        b = text.encode()
        out += (len(b).to_bytes(4, "big"), b)
    return b"".join(out)


_SEQ_PREFIX = (8).to_bytes(4, "big")


def _clean(detail: str) -> str:
    detail = "".join(ch if ch.isprintable() else "?" for ch in detail)
    return detail[:MAX_DETAIL]


KEY_CHANGE = "audit-key"  # the entry that hands the MAC over to a successor key
PRIOR_META = "audit_key_prior"  # blob: (first position NOT under the key, key) records


class AuditLog:
    """Append and verify; bound to one open store and its database key."""

    def __init__(self, store: Store, db_key: bytes) -> None:
        self._store = store
        stored = store.get_meta("audit_key")
        self._key = p.KeyBytes(stored) if stored is not None else audit_key(db_key)

    def _prior(self) -> list[tuple[int, bytes]]:
        """The retired MAC keys: (the first position after the key's last entry, key).

        Stored as one blob of 40-byte records (bound, u64 big-endian; key, 32 bytes), read
        into :class:`~credvault.crypto.primitives.KeyBytes`, so neither the blob nor a key
        shows in a traceback's locals."""
        raw = self._store.get_meta(PRIOR_META)
        if raw is None:
            return []
        blob = p.KeyBytes(raw) if isinstance(raw, bytes) else None
        if blob is None or len(blob) % 40:
            raise AuditChainBroken(0, "the record of retired MAC keys is corrupt")
        out: list[tuple[int, bytes]] = [
            (int.from_bytes(blob[i : i + 8], "big"), p.KeyBytes(blob[i + 8 : i + 40]))
            for i in range(0, len(blob), 40)
        ]
        bounds = [u for u, _ in out]
        if bounds != sorted(set(bounds)):
            raise AuditChainBroken(0, "the record of retired MAC keys is corrupt")
        return out

    def succeed_key(self, ts: str, member: str, why: str) -> str:
        """Hand the MAC over to a new random key (caller's write transaction, on the
        re-keyed database only: a former member must never see the new key). Returns the
        new key's fingerprint. The ``audit-key`` entry is the last one under the old key."""
        new = p.random_key()
        fp = p.fingerprint(new)
        seq = self.append(ts, member, KEY_CHANGE, None, None, "ok", f"{why}; next MAC key {fp}")
        prior = b"".join(u.to_bytes(8, "big") + k for u, k in self._prior())
        self._store.set_meta(
            PRIOR_META, p.KeyBytes(prior + (seq + 1).to_bytes(8, "big") + self._key)
        )
        self._store.set_meta("audit_key", new)
        self._key = p.KeyBytes(new)
        return fp

    def append(
        self,
        ts: str,
        member: str,
        action: str,
        engagement: str | None,
        item: str | None,
        outcome: str,
        detail: str = "",
    ) -> int:
        """Append inside the caller's write transaction; returns the entry's position."""
        if outcome not in OUTCOMES:  # pragma: no cover - internal contract
            raise ValueError("bad outcome")
        head = self._store.audit_head()
        if head is not None:
            seq, prev = int(head.seq) + 1, bytes(head.mac)
        else:  # empty table: continue from the prune anchor, if any
            seq, prev = self._after_anchor()
        row = AuditRow(seq, ts, member, action, engagement, item, outcome, _clean(detail), b"")
        self._store.audit_insert(row._replace(mac=p.mac(self._key, prev + _canonical(row))))
        return seq

    def _after_anchor(self) -> tuple[int, bytes]:
        """(first position, MAC before it): where the trail starts after pruning."""
        anchor = self._store.get_meta("audit_anchor")
        if anchor is None:
            return 1, GENESIS
        pos, mac = str(anchor).split(":")
        return int(pos) + 1, bytes.fromhex(mac)

    def head(self) -> Checkpoint:
        row = self._store.audit_head()
        if row is None:
            return Checkpoint(0, GENESIS.hex())
        return Checkpoint(int(row.seq), bytes(row.mac).hex())

    def verify(self, checkpoint: Checkpoint | None = None) -> int:
        """Check the whole chain (and a remembered checkpoint); returns the entry count.

        Raises :class:`AuditChainBroken` naming the first position that does not verify.
        """
        expected_seq, prev = self._after_anchor()
        anchor = expected_seq > 1
        if checkpoint is not None and checkpoint.position < expected_seq - 1:
            raise AuditChainBroken(checkpoint.position, "the checkpoint predates the pruned part")
        count = 0
        seen_checkpoint = checkpoint is None or checkpoint.position == 0
        if checkpoint is not None and checkpoint.position == expected_seq - 1 and anchor:
            seen_checkpoint = prev.hex() == checkpoint.mac
            if not seen_checkpoint:
                raise AuditChainBroken(checkpoint.position, "differs from the checkpoint")
        # Each retired key covers the positions before its bound; the entry just before a
        # bound must be the ``audit-key`` entry naming the next key's fingerprint.
        keys: list[tuple[int | None, bytes]] = [*self._prior(), (None, self._key)]
        while len(keys) > 1 and keys[0][0] is not None and keys[0][0] <= expected_seq:
            keys.pop(0)
        bound, key = keys[0]
        for row in self._store.audit_iter(expected_seq - 1):
            seq = int(row.seq)
            if seq != expected_seq:
                raise AuditChainBroken(expected_seq, "entry missing or out of order")
            while bound is not None and seq >= bound:
                keys.pop(0)
                bound, key = keys[0]
            mac = bytes(row.mac)
            if not hmac.compare_digest(p.mac(key, prev + _canonical(row)), mac):
                raise AuditChainBroken(seq, "entry altered, inserted or reordered")
            if (
                bound is not None
                and seq == bound - 1
                and (
                    row.action != KEY_CHANGE
                    or not row.detail.endswith(f"next MAC key {p.fingerprint(keys[1][1])}")
                )
            ):
                raise AuditChainBroken(seq, "MAC key changed without its audit-key entry")
            if checkpoint is not None and seq == checkpoint.position:
                if mac.hex() != checkpoint.mac:
                    raise AuditChainBroken(seq, "differs from the checkpoint (trail rewritten)")
                seen_checkpoint = True
            prev, expected_seq = mac, seq + 1
            count += 1
        if not seen_checkpoint:
            assert checkpoint is not None
            raise AuditChainBroken(
                checkpoint.position, "entry of the checkpoint is missing (trail truncated)"
            )
        return count

    def prune_before(self, cutoff_ts: str, now: str, member: str) -> int:
        """Drop entries older than ``cutoff_ts``, keeping the chain verifiable from an anchor."""
        first_kept = self._store.audit_first_after_ts(cutoff_ts)
        head = self._store.audit_head()
        if head is None:
            return 0
        keep_from = int(first_kept.seq) if first_kept else int(head.seq) + 1
        start, _ = self._after_anchor()
        if keep_from <= start:
            return 0
        prev = self._store.audit_entry(keep_from - 1)
        assert prev is not None
        self._store.set_meta("audit_anchor", f"{keep_from - 1}:{bytes(prev.mac).hex()}")
        self._store.audit_prune_before(keep_from)
        self.append(
            now,
            member,
            "audit-prune",
            None,
            None,
            "ok",
            f"pruned entries {start}..{keep_from - 1} older than {cutoff_ts[:10]}; "
            f"anchor {keep_from - 1}:{bytes(prev.mac).hex()}",
        )
        return keep_from - start


def entries(rows: Iterable[AuditRow]) -> list[AuditEntry]:
    """The listed form of stored entries (without their MACs)."""
    return [
        AuditEntry(int(r.seq), r.ts, r.member, r.action, r.engagement, r.item, r.outcome, r.detail)
        for r in rows
    ]


def to_json(items: list[AuditEntry]) -> str:
    return json.dumps([e.to_json() for e in items], indent=1)
