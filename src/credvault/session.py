"""What every domain operation needs: the open store, the audit log, the verified key slots,
the unlocked member, and the clock (injected, so tests move time without hooks in the product).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from credvault import validate
from credvault.access import OPERATIONS, VAULT_WIDE_WHY, Role, permits
from credvault.audit import AuditLog
from credvault.errors import AccessDenied, Conflict, NotFound, Purged
from credvault.files import locked
from credvault.keyslots import KeySlots, MemberKeys, MemberSlot
from credvault.layout import DB_NAME, LOCK_NAME, NEXT_DB, SLOTS_NAME
from credvault.model import Engagement, Grant, iso
from credvault.store import Store

__all__ = ["DB_NAME", "LOCK_NAME", "NEXT_DB", "SLOTS_NAME", "Session"]  # names: see layout


class Session:
    """One member's open vault."""

    def __init__(
        self,
        path: Path,
        store: Store,
        audit: AuditLog,
        slots: KeySlots,
        keys: MemberKeys,
        db_key: bytes,
        clock: Callable[[], datetime],
    ) -> None:
        self.path = path
        self.store = store
        self.audit = audit
        self.slots = slots
        self.keys = keys
        self.db_key = db_key
        self.clock = clock
        self.engagement_keys: dict[tuple[int, int], bytes] = {}
        # (engagement id, member) -> (grant row it was checked on, signature chain valid)
        self.verified: dict[tuple[int, str], tuple[Grant, bool]] = {}
        self.lock = contextlib.ExitStack()
        # The last audit time before this session wrote anything (set by Vault.open).
        self.newest_at_open: str | None = None
        self.db_file: tuple[int, int] | None = None
        self.note_db_file()

    def note_db_file(self) -> None:
        """Remember which file the store has open (a re-key swaps in a new one)."""
        st = (self.path / DB_NAME).stat()
        self.db_file = (st.st_dev, st.st_ino)

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, member={self.keys.name!r})"

    def exclusive(self) -> None:
        """Trade the shared vault lock for the exclusive one (waits for other users to close).

        flock conversion is not atomic, so callers re-read anything they read before.
        """
        self.lock.close()
        try:
            self.lock.enter_context(locked(self.path / LOCK_NAME, exclusive=True))
        except BaseException:
            self.lock.enter_context(locked(self.path / LOCK_NAME, exclusive=False))
            raise
        st = (self.path / DB_NAME).stat()
        if (st.st_dev, st.st_ino) != self.db_file:
            raise Conflict("another process re-keyed the vault meanwhile; run the command again")

    def reload_slots(self) -> KeySlots:
        """The key-slot file as it is now (another process may have changed it), verified."""
        slots = KeySlots.read(self.path / SLOTS_NAME)
        slots.verify_mac(self.db_key)
        if self.keys.name not in slots.members:
            raise AccessDenied(self.keys.name, "use the vault", None, "no longer a member")
        slots.check_member_keys(slots.members[self.keys.name], self.keys)
        self.slots = slots
        return slots

    @property
    def vault_id(self) -> bytes:
        return self.slots.vault_id

    @property
    def member(self) -> str:
        return self.keys.name

    @property
    def me(self) -> MemberSlot:
        return self.slots.members[self.keys.name]

    @property
    def is_admin(self) -> bool:
        return self.me.admin

    def engagement(self, name: str, *, allow_purged: bool = False) -> Engagement:
        """The engagement called ``name``; a purged one only with ``allow_purged``."""
        eng = self.store.engagement_by_name(validate.name(name, "engagement name"))
        if eng is None:
            self.log_attempt(name, "no such engagement")
            raise NotFound("engagement", name)
        if eng.state == "purged" and not allow_purged:
            self.log_attempt(eng.name, f"engagement purged on {(eng.purged_at or '')[:10]}")
            raise Purged(eng.name, eng.purged_at or "")
        return eng

    def log_attempt(self, engagement: str, why: str) -> None:
        """Record an attempted access to an engagement that is not there to access (unknown,
        or purged): every attempt is on the record, the ones that find nothing too.

        Inside the caller's write transaction the entry would roll back with it, so it is
        only written from outside one (a lookup at the start of an operation)."""
        if self.store.conn.in_transaction:
            return
        with self.store.write():
            self.log("access", engagement, None, "error", why)

    def setting(self, name: str) -> int:
        """A vault setting by its ``config`` name (``backup-retention-days``), or its default."""
        from credvault.retention import SETTINGS, value

        return value(name, self.store.get_meta(SETTINGS[name][0]))

    def newest_recorded(self) -> str | None:
        """The newest time the vault has recorded: its high-water time (last purge or clock
        confirmation) or the last audit entry before this session, whichever is later."""
        times = [t for t in (self.store.get_meta("time_high_water"), self.newest_at_open) if t]
        return max(times) if times else None

    @property
    def may_destroy(self) -> bool:
        """Admins and service identities may run purges (spec §3); only they trigger one."""
        return self.is_admin or self.me.service

    def now(self) -> str:
        return iso(self.clock())

    def log(
        self, action: str, engagement: str | None, item: str | None, outcome: str, detail: str = ""
    ) -> int:
        return self.audit.append(self.now(), self.member, action, engagement, item, outcome, detail)

    def log_export(
        self, engagement: str, count: int, digest: str | None = None, reason: str | None = None
    ) -> None:
        """Record a client export in its own committed transaction (fail closed)."""
        detail = (
            f"{count} credentials exported"
            + (f"; reason: {reason}" if reason else "")
            + (f"; sha256 {digest}" if digest else "")
        )
        with self.store.write():
            self.log("export", engagement, None, "ok", detail)

    def deny(self, action: str, engagement: str | None, item: str | None, why: str) -> AccessDenied:
        """Audit a denial in its own transaction and return the error to raise."""
        with self.store.write():
            self.log(action, engagement, item, "denied", why)
        return AccessDenied(self.member, action, engagement, why)

    def require(self, operation: str) -> None:
        """A vault-wide operation of :data:`~credvault.access.OPERATIONS` (denial audited)."""
        if not permits(operation, None, admin=self.is_admin, service=self.me.service):
            rule = OPERATIONS[operation]
            raise self.deny(rule.verb, None, None, VAULT_WIDE_WHY[rule.vault_wide])

    def check(
        self, operation: str, role: Role | None, engagement: str, item: str | None = None
    ) -> None:
        """An operation on ``engagement`` by a member holding ``role`` (denial audited)."""
        if not permits(operation, role, admin=self.is_admin):
            held = f"role {role.value}" if role else "no grant"
            raise self.deny(OPERATIONS[operation].verb, engagement, item, held)

    def require_reason(
        self, eng: Engagement, operation: str, item: str | None, reason: str | None
    ) -> None:
        """The engagement's ``--require-reason`` rule, decided here for every read.

        Only the member's own reason counts: a command reading on the member's behalf
        (``run``, ``ssh``) names itself in the audit detail, but that is not a reason.
        """
        if self.lacks_reason(eng, reason):
            raise self.refuse(operation, eng.name, item, "this engagement requires --reason")

    @staticmethod
    def lacks_reason(eng: Engagement, reason: str | None) -> bool:
        """Whether a read of ``eng`` given ``reason`` falls foul of ``--require-reason``."""
        return eng.require_reason and not reason

    def refuse(
        self, operation: str, engagement: str | None, item: str | None, why: str
    ) -> AccessDenied:
        """A rule of its own refused ``operation`` (e.g. granting oneself): audit the denial
        under the operation's verb and return the error to raise."""
        return self.deny(OPERATIONS[operation].verb, engagement, item, why)
