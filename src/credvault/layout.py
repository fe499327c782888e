"""What a vault looks like on disk: file names in the vault directory, the default
locations, and the names of backup files and keyring markers. No I/O.

A vault directory holds ``keyslots.json`` (the key slots), ``vault.db`` (SQLCipher, with its
``-wal``/``-shm``), ``vault.lock`` (the flock), during a re-key ``vault.db.next``, and after a
failed unlock ``failed-unlocks.log``. Backups go to ``<vault>-backups`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "vault.db"
NEXT_DB = "vault.db.next"  # a re-key's copy under the new key, before it replaces DB_NAME
LOCK_NAME = "vault.lock"
SLOTS_NAME = "keyslots.json"
FAILED_UNLOCKS = "failed-unlocks.log"  # noted beside the database, imported at the next open
DB_SIDE_FILES = (DB_NAME + "-wal", DB_NAME + "-shm")

# What backup_name() produces (compiled by backup.py, which alone needs it).
BACKUP_NAME_PATTERN = r"\Acredvault-backup-([0-9a-f]{32})-(\d{8}T\d{6}Z)\.cvb\Z"


def default_dir() -> Path:
    """``$CREDVAULT_VAULT``, else ``$XDG_DATA_HOME/credvault``, else ``~/.local/share/credvault``."""
    env = os.environ.get("CREDVAULT_VAULT")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "credvault"


# A --vault/CREDVAULT_VAULT value in one of libpq's forms names a PostgreSQL team vault
# (docs/team.md): a URI, or key=value conninfo words libpq itself uses.
TEAM_URI_PREFIXES = ("postgresql://", "postgres://")
TEAM_KEYWORDS = ("host=", "hostaddr=", "service=", "dbname=", "port=", "user=")


def is_team_target(target: str) -> bool:
    """Whether a ``--vault``/``CREDVAULT_VAULT`` value names a PostgreSQL team vault.

    libpq's two forms: a URI (``postgresql://…``, multi-host lists included) and a key=value
    conninfo string (``service=team``, ``host=db1,db2 dbname=team``). Anything else is a
    SQLCipher vault directory. Pure string work: the ``credvault get`` path calls it.
    """
    t = target.strip()
    if t.startswith(TEAM_URI_PREFIXES):
        return True
    return any(word.startswith(TEAM_KEYWORDS) for word in t.split())


def vault_target(given: str | None) -> str | None:
    """The team vault named by ``--vault`` (``given``) or ``$CREDVAULT_VAULT``, or None for
    a SQLCipher directory. Read before any ``Path()``: a path would fold ``//`` to ``/``."""
    raw = given if given else os.environ.get("CREDVAULT_VAULT")
    return raw if raw and is_team_target(raw) else None


def team_slot_path(database: str, member: str) -> Path:
    """Where a team member's own key slot lives on their machine:
    ``$XDG_CONFIG_HOME/credvault/team/<database>/<member>.slot`` (else ``~/.config/…``)."""
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base else Path.home() / ".config"
    return root / "credvault" / "team" / database / f"{member}.slot"


def default_backup_dir(vault_path: Path) -> Path:
    """``<vault>-backups`` beside the vault directory."""
    return vault_path.parent / f"{vault_path.name}-backups"


def backup_name(vault_id: str, stamp: str) -> str:
    """The file name of a backup (``stamp`` from :func:`credvault.model.backup_stamp`);
    :data:`BACKUP_NAME_PATTERN` matches exactly these."""
    return f"credvault-backup-{vault_id}-{stamp}.cvb"


def keyring_marker_dir() -> Path:
    """``$XDG_CACHE_HOME/credvault`` (else ``~/.cache/credvault``): keyring expiry markers."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "credvault"


def keyring_marker(vault_id: str, member: str) -> Path:
    return keyring_marker_dir() / f"unlocked-{vault_id}-{member}"


def team_keyring_marker(vault_id: str, member: str) -> Path:
    """A team member's keyring marker: its own name, as a migrated team vault keeps the
    SQLCipher vault's id."""
    return keyring_marker_dir() / f"team-unlocked-{vault_id}-{member}"
