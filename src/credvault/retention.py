"""Vault settings for retention, with their defaults and bounds."""

from __future__ import annotations

from datetime import timedelta

from credvault import validate
from credvault.errors import InvalidInput
from credvault.model import iso, parse_iso

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
