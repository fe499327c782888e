"""Retention rules without I/O: the vault settings (defaults, bounds, the one reader of a
stored value) and when a closed engagement is purged, and why."""

from __future__ import annotations

from datetime import timedelta

from credvault import validate
from credvault.errors import InvalidInput, RetentionError
from credvault.model import Engagement, iso, parse_iso

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
