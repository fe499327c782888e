"""A team member's keys held by the agent (PostgreSQL team vault, issue 14).

What the agent keeps for a team member is what ``credvault unlock`` made from the passphrase
once: the private keys of their own key slot, checked against the slot's public halves, and
one connection logged in with the password derived from them. It keeps nothing it reads: each
request gets a fresh :class:`credvault.team.Team` on that connection, so the engagement keys,
member certificates and membership logs a command uses are fetched and verified again, as a
new process would, and every read is the server's two-phase read (a committed, audited
request, then the envelope) exactly as without the agent. Before each request the key slot
file is checked: if it changed (``passwd``, a new ``join``) the keys are dropped. A connection
that dropped (server restart, failover, a terminated session) is made again, with the same
login and the same checks (the server's vault id, the login's member); a login the server no
longer takes (the member was removed) drops the keys.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from credvault.crypto import primitives as p
from credvault.errors import CredvaultError
from credvault.keyslots import MemberKeys

if TYPE_CHECKING:
    from credvault.postgres.slot import TeamSlot
    from credvault.postgres.store import PgStore
    from credvault.team import Team


class SlotChanged(Exception):
    """The member's key slot file is no longer the one the keys were unlocked from."""


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_keys(slot_path: Path, member: str, raw: bytes) -> tuple[TeamSlot, MemberKeys]:
    """The slot at ``slot_path`` and the keys ``raw`` (``MemberKeys.to_bytes``), checked to be
    that slot's member's: same vault, same name, private halves of its public keys."""
    from credvault.postgres.slot import TeamSlot

    slot = TeamSlot.read(slot_path)
    keys = MemberKeys.from_bytes(raw, slot.vault_id)
    if (
        keys.name != member
        or slot.member != member
        or p.x25519_public(keys.kem_private) != slot.kem_pub
        or p.ed25519_public(keys.sign_private) != slot.sign_pub
    ):
        raise SlotChanged
    return slot, keys


class TeamHold:
    """The open connection and the slot for one team entry of the agent."""

    def __init__(self, target: str, slot_path: Path, slot: TeamSlot, keys: MemberKeys) -> None:
        self.target = target
        self.slot_path = slot_path
        self.slot = slot
        self.keys = keys
        self.slot_stat = _stat(slot_path)
        self.store: PgStore | None = None

    def __repr__(self) -> str:
        return f"TeamHold({self.target!r}, member={self.keys.name!r})"

    def check_slot(self) -> None:
        """Raise :class:`SlotChanged` unless the slot file still holds the same slot."""
        from credvault.postgres.slot import TeamSlot

        try:
            if _stat(self.slot_path) == self.slot_stat:
                return
            same = TeamSlot.read(self.slot_path) == self.slot
            self.slot_stat = _stat(self.slot_path)
        except (OSError, CredvaultError):  # gone, corrupt: the keys are no longer its
            raise SlotChanged from None
        if not same:
            raise SlotChanged

    def broken(self) -> bool:
        """Whether the connection is gone (closed, or lost during the last command)."""
        conn = None if self.store is None else self.store.conn
        return conn is None or bool(getattr(conn, "closed", True) or getattr(conn, "broken", False))

    def team(self) -> Team:
        """A fresh Team on the held connection, logging in again if it dropped."""
        from credvault.team import Team

        if self.broken():
            self.close()
            fresh = Team.login(self.target, self.keys.name, self.slot, self.keys)
            self.store = fresh.store
            return fresh
        assert self.store is not None
        return Team(
            self.store,
            self.keys,
            self.slot.vault_id,
            self.target,
            self.slot.anchor,
            self.slot.database,
            self.slot,
        )

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
            self.store = None
