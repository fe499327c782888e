"""A member's witness of how far a vault has gone: rollback, fork and silent loss detection.

An insider can replace the whole vault directory with an older copy, delete membership-log
links or audit entries, or lose committed transactions to a damaged WAL (SQLite ends the log
at the first bad frame). Inside the vault every one of those is self-consistent. So each
member's client keeps, *outside* the vault, in its own XDG state directory, the latest
positions it has verified: the audit head and, per engagement, the membership log's last
link (seq and hash). Opening a vault that is behind a witnessed position, or differs at it,
is tampering (exit 6) and names what is missing; a deliberate restore is accepted with an
audited command that resets the witness.

The file is MACed under a key derived from the member's own private signing key, so an
insider who can write the member's files but does not hold that key cannot forge "all is
well"; they can delete it (the next open then starts afresh, and says so).

This module is pure apart from reading and writing its one file; the vault decides when
to check and when to advance. Format: docs/format.md §18.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError
from credvault.files import atomic_write, make_private_dir

FORMAT = "credvault-witness/1"
MAX_SIZE = 4 * 1024 * 1024


class Mark(NamedTuple):
    """A witnessed position: a sequence number and the hash or MAC found there."""

    seq: int
    hash: bytes


class Witness(NamedTuple):
    """What one member has seen of one vault."""

    vault_id: bytes
    member: str
    audit: Mark | None
    logs: Mapping[str, Mark]  # engagement uid (hex) -> last verified membership link

    def check(
        self,
        audit_at: Mapping[int, bytes],
        audit_head: int,
        logs: Mapping[str, list[bytes]],
        gone: frozenset[str] = frozenset(),
    ) -> None:
        """Refuse a vault that is behind this witness or forked from it.

        ``audit_at`` gives the audit MAC at the witnessed position (if that entry still
        exists), ``audit_head`` the last audit position; ``logs`` every engagement's link
        hashes in order; ``gone`` the uids of engagements purged (their log went with them,
        as the audit trail records). All problems are named in one message.
        """
        problems = []
        if self.audit is not None:
            if audit_head < self.audit.seq:
                problems.append(
                    f"audit trail ends at {audit_head}, but entry {self.audit.seq} was seen"
                )
            elif self.audit.seq in audit_at and audit_at[self.audit.seq] != self.audit.hash:
                problems.append(f"audit trail differs at entry {self.audit.seq} (forked)")
        for uid, mark in sorted(self.logs.items()):
            hashes = logs.get(uid)
            if hashes is None:
                if uid not in gone:
                    problems.append(f"engagement {uid} and its membership log are missing")
                continue
            if mark.seq >= len(hashes):
                problems.append(
                    f"membership log of engagement {uid} ends at link {len(hashes) - 1}, "
                    f"but link {mark.seq} was seen"
                )
            elif hashes[mark.seq] != mark.hash:
                problems.append(f"membership log of engagement {uid} forked at link {mark.seq}")
        if problems:
            raise IntegrityError(
                "this vault is behind or forked from what this member saw before (rollback, "
                "deleted rows or lost writes): "
                + "; ".join(problems)
                + "; if it was restored on purpose, run 'credvault witness accept'"
            )

    def advanced(self, audit: Mark | None, logs: Mapping[str, Mark]) -> Witness:
        """This witness moved forward to the positions just verified (never backward)."""
        new = dict(self.logs)
        for uid, mark in logs.items():
            old = new.get(uid)
            if old is None or mark.seq >= old.seq:
                new[uid] = mark
        if audit is None or (self.audit is not None and audit.seq < self.audit.seq):
            audit = self.audit
        return self._replace(audit=audit, logs=new)

    # -- file ------------------------------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "vault_id": self.vault_id.hex(),
            "member": self.member,
            "audit": None if self.audit is None else [self.audit.seq, self.audit.hash.hex()],
            "logs": {u: [m.seq, m.hash.hex()] for u, m in sorted(self.logs.items())},
        }

    def to_bytes(self, mac_key: bytes) -> bytes:
        body = self._body()
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["mac"] = p.mac(mac_key, canonical).hex()
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, mac_key: bytes, vault_id: bytes, member: str) -> Witness:
        try:
            d = json.loads(data)
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ValueError
            mac = bytes.fromhex(d.pop("mac"))
            audit = None if d["audit"] is None else _mark(d["audit"])
            logs = {_uid(u): _mark(m) for u, m in d["logs"].items()}
            w = cls(bytes.fromhex(d["vault_id"]), d["member"], audit, logs)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise IntegrityError("witness file is corrupt") from None
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        p.mac_verify(mac_key, canonical, mac, "witness file")
        if w.vault_id != vault_id or w.member != member:
            raise IntegrityError("witness file belongs to another vault or member")
        return w


def _mark(v: Any) -> Mark:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or type(v[0]) is not int
        or not 0 <= v[0] < 2**63
        or not isinstance(v[1], str)
    ):
        raise ValueError
    h = bytes.fromhex(v[1])
    if len(h) != 32:
        raise ValueError
    return Mark(v[0], h)


def _uid(u: Any) -> str:
    if not isinstance(u, str) or len(u) != 32 or len(bytes.fromhex(u)) != 16:
        raise ValueError
    return u


def mac_key(sign_private: bytes) -> bytes:
    """The witness MAC key: the member's own, never in the vault."""
    return p.hkdf(sign_private, labels.WITNESS_MAC)


def state_dir() -> Path:
    """``$XDG_STATE_HOME/credvault``, else ``~/.local/state/credvault``."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "credvault"


def path_for(vault_id: bytes, member: str, directory: Path | None = None) -> Path:
    return (directory or state_dir()) / f"witness-{vault_id.hex()}-{member}.json"


def load(path: Path, key: bytes, vault_id: bytes, member: str) -> Witness | None:
    """The witness at ``path``, or None if there is none yet."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SIZE:
        raise IntegrityError("witness file is too large")
    return Witness.from_bytes(data, key, vault_id, member)


def save(path: Path, witness: Witness, key: bytes) -> None:
    make_private_dir(path.parent)
    atomic_write(path, witness.to_bytes(key))
