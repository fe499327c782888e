"""Retention rules without I/O: the vault settings (defaults, bounds, the one reader of a
stored value), when a closed engagement is purged and why, and the clock rules that decide
whether irreversible work may run now.

Purge, grant expiry, audit pruning and backup pruning destroy for good, so they never trust
one wrong clock: they do not run when the clock is earlier than the newest recorded time
(beyond a small skew between processes, :data:`CLOCK_SKEW`), nor when it is more than
:data:`MAX_CLOCK_AHEAD` after the vault's trusted high-water time. Then they wait for an
explicit, audited confirmation by an admin or service identity naming the date they will
act on (:func:`check_confirmation`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from credvault import validate
from credvault.errors import InvalidInput, RetentionError
from credvault.model import Engagement, iso, parse_iso

# Two processes on one machine stamp their entries a little out of order.
CLOCK_SKEW = timedelta(minutes=2)
# Any use of the vault moves the newest recorded time; a month of silence is allowed.
MAX_CLOCK_AHEAD = timedelta(days=31)

SETTINGS: dict[str, tuple[str, int]] = {
    # name on the command line: (meta key, default)
    "purge-grace-days": ("purge_grace_days", 7),
    "audit-retention-days": ("audit_retention_days", 365),
    "backup-retention-days": ("backup_retention_days", 30),
    # how long rm and system rm keep an item recoverable (never past the engagement purge)
    "trash-days": ("trash_days", 30),
}


def value(name: str, stored: object) -> int:
    """The setting ``name`` given what the vault stores for it (``None``: never set).

    The one reader of settings: ``0`` is a value, not "unset" (``backup-retention-days 0``
    keeps no old backups).
    """
    default = SETTINGS[name][1]
    return default if stored is None else int(str(stored))


def parse(name: str, value: str) -> tuple[str, int]:
    """Validate a ``config set`` pair; returns (meta key, value)."""
    if name not in SETTINGS:
        raise InvalidInput(f"unknown setting {name!r}: expected one of {', '.join(SETTINGS)}")
    n = validate.days(value, name)
    if name == "audit-retention-days" and n < 1:
        raise InvalidInput("audit-retention-days must be at least 1")
    return SETTINGS[name][0], n


def purge_due(closed_at: str, grace_days: int, hold_until: str | None) -> str:
    """When a closed engagement is purged: ``grace_days`` after it closed, or when its
    retention hold ends, whichever is later (timestamps as :func:`~credvault.model.iso`)."""
    due = iso(parse_iso(closed_at) + timedelta(days=grace_days))
    return max(due, hold_until) if hold_until else due


def clock_problem(now: datetime, newest: datetime | None, ahead_of: datetime | None) -> str | None:
    """Why irreversible work must not run at ``now`` (None: it may).

    ``newest`` is the newest recorded time; ``ahead_of`` the time the forward bound is
    measured from (the same, or None to skip that rule).
    """
    if newest is not None and now < newest - CLOCK_SKEW:
        return (
            f"the clock ({now:%Y-%m-%d %H:%M} UTC) is earlier than the newest recorded time "
            f"({newest:%Y-%m-%d %H:%M} UTC)"
        )
    if ahead_of is not None and now > ahead_of + MAX_CLOCK_AHEAD:
        days = (now - ahead_of).days
        return (
            f"the clock ({now:%Y-%m-%d %H:%M} UTC) is {days} days ahead of the newest recorded "
            f"time ({ahead_of:%Y-%m-%d %H:%M} UTC; the bound is {MAX_CLOCK_AHEAD.days} days)"
        )
    return None


def check_confirmation(now: datetime, confirmed: str) -> None:
    """An admin's confirmation must name the date (UTC) the work will act on."""
    if confirmed.strip() != f"{now:%Y-%m-%d}":
        raise InvalidInput(
            f"--confirm-clock {confirmed!r} does not match the clock's date ({now:%Y-%m-%d} "
            "UTC): confirm only the date you checked"
        )


def purge_reason(eng: Engagement) -> str:
    """``"hold"`` if the purge waits for a retention hold to end, else ``"grace"``."""
    return "hold" if eng.hold_until and eng.purge_due == eng.hold_until else "grace"


def describe(eng: Engagement, grace_days: int) -> str:
    """When the purge is due and why, in words (``engagement show``, ``status``)."""
    if eng.state == "purged":
        return f"purged on {(eng.purged_at or '')[:10]}"
    if eng.state == "active":
        return f"active; purge {grace_days} days after close"
    if purge_reason(eng) == "hold":
        return (
            f"held until {(eng.hold_until or '')[:16]} ({eng.hold_reason}, by {eng.hold_by}); "
            "purged when the hold ends"
        )
    return (
        f"closed {(eng.closed_at or '')[:16]}; purge due {(eng.purge_due or '')[:16]} "
        f"(grace {grace_days} days)"
    )


def require_active(eng: Engagement, verb: str | None = None) -> None:
    """Closed and purged engagements take no changes (their data awaits destruction)."""
    if eng.state != "active":
        what = f"cannot {verb}" if verb else "it takes no changes"
        raise RetentionError(f"engagement {eng.name!r} is {eng.state}: {what}")
