"""Vault settings for retention, with their defaults and bounds."""

from __future__ import annotations

from credvault import validate
from credvault.errors import InvalidInput

SETTINGS: dict[str, tuple[str, int]] = {
    # name on the command line: (meta key, default)
    "purge-grace-days": ("purge_grace_days", 7),
    "audit-retention-days": ("audit_retention_days", 365),
    "backup-retention-days": ("backup_retention_days", 30),
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
