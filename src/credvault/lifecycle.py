"""An engagement's lifecycle: active → closed (purge scheduled) → purged, retention holds,
and per-engagement settings. The rules (when a purge is due) are :mod:`credvault.retention`;
the destruction itself is :mod:`credvault.purge`.
"""

from __future__ import annotations

from credvault import validate
from credvault.errors import InvalidInput, RetentionError
from credvault.grants import Grants
from credvault.model import Engagement, iso
from credvault.retention import describe, purge_due, require_active
from credvault.session import Session


class Lifecycle:
    """Closing, holds and settings of engagements, for one session."""

    def __init__(self, s: Session, grants: Grants) -> None:
        self.s = s
        self.grants = grants

    def grace_days(self, eng: Engagement) -> int:
        """The engagement's own grace period, else the vault's ``purge-grace-days``."""
        if eng.grace_days is not None:
            return eng.grace_days
        return self.s.setting("purge-grace-days")

    def purge_status(self, eng: Engagement) -> str:
        """When the purge is due and why, in words (``engagement show``)."""
        return describe(eng, self.grace_days(eng))

    def set_options(self, name: str, *, require_reason: bool | None = None) -> Engagement:
        s = self.s
        eng = s.engagement(name)
        s.check("engagement.set", self.grants.role_of(eng), eng.name)
        with s.store.write():
            if require_reason is not None:
                s.store.set_require_reason(eng.id, require_reason)
            s.log("engagement-set", eng.name, None, "ok", f"require-reason={require_reason}")
        return s.engagement(name)

    def close(self, name: str, grace_days: int | None = None) -> Engagement:
        s = self.s
        eng = s.engagement(name)
        s.check("engagement.close", self.grants.role_of(eng), eng.name)
        if eng.state != "active":
            refused(s, "close", eng)
            require_active(eng, "close")
        if grace_days is not None:
            grace_days = validate.days(grace_days, "grace period")
        # A clock behind the record would shorten the grace period: never close "earlier".
        now = max(s.now(), s.newest_recorded() or "")
        with s.store.write():
            grace = grace_days if grace_days is not None else self.grace_days(eng)
            due = purge_due(now, grace, None)
            s.store.close_engagement(eng.id, now, grace_days, due)
            s.log("close", eng.name, None, "ok", f"purge due {due[:16]}")
        record_state(s)
        return s.engagement(name)

    def retain(self, name: str, until: str, reason: str) -> Engagement:
        s = self.s
        eng = s.engagement(name)
        s.check("engagement.retain", self.grants.role_of(eng), eng.name)
        dt = validate.when(until, "hold end date")
        why = validate.reason(reason)
        if not why:
            raise InvalidInput("a retention hold needs a reason")
        if dt <= s.clock():
            raise InvalidInput("the hold end date is in the past")
        if eng.state != "closed":
            refused(s, "retain", eng)
            raise RetentionError(
                f"engagement {name!r} is {eng.state}: only a closed engagement can be held"
            )
        hold = iso(dt)
        with s.store.write():
            due = purge_due(eng.closed_at or s.now(), self.grace_days(eng), hold)
            s.store.set_hold(eng.id, hold, why, s.member, due)
            s.log("retain", eng.name, None, "ok", f"held until {hold[:16]}: {why}")
        record_state(s)
        return s.engagement(name)

    def release(self, name: str) -> Engagement:
        s = self.s
        eng = s.engagement(name)
        s.check("engagement.release", self.grants.role_of(eng), eng.name)
        if eng.hold_until is None:
            refused(s, "release", eng, "no retention hold")
            raise RetentionError(f"engagement {name!r} has no retention hold")
        with s.store.write():
            due = purge_due(eng.closed_at or s.now(), self.grace_days(eng), None)
            s.store.set_hold(eng.id, None, None, None, due)
            s.log("release", eng.name, None, "ok", "hold lifted")
        record_state(s)
        return s.engagement(name)

    def reschedule(self, grace_days: int) -> None:
        """The vault's grace period changed to ``grace_days``: move the purge date of every
        closed engagement that follows it (caller's transaction)."""
        s = self.s
        for eng in s.store.engagements():
            if eng.state == "closed" and eng.grace_days is None and eng.closed_at:
                s.store.set_purge_due(eng.id, purge_due(eng.closed_at, grace_days, eng.hold_until))


def record_state(s: Session) -> None:
    """Rewrite the purge ledgers (:mod:`credvault.ledger`) after a close, hold or release:
    their close records let a restore from an older backup bring the engagement back closed,
    with its purge date and hold, rather than active. Best effort, like after a purge: the
    state is committed, and the next purge or backup writes the ledgers again."""
    import contextlib

    from credvault.layout import default_backup_dir
    from credvault.ledger import write_ledgers

    with contextlib.suppress(OSError):
        write_ledgers(s, default_backup_dir(s.path))


def refused(s: Session, action: str, eng: Engagement, why: str | None = None) -> None:
    """Record a lifecycle change the engagement's state refuses (an ``error`` entry, after
    the role check passed): every refusal is on the record."""
    with s.store.write():
        s.log(action, eng.name, None, "error", why or f"engagement is {eng.state}")
