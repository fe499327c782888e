"""Backups: one timestamped, encrypted file; pruned after the backup retention.

A backup file is ``CREDVAULT-BACKUP-1\\n`` ‖ u64 length ‖ key-slot file ‖ database copy. The
database copy is made with SQLite's online backup API (consistent while others write) and
stays encrypted under the vault's database key; the key slots inside it are those of the
moment of the backup. Restoring writes a new vault directory, checks it, and purges at once
everything that became due, so a restore never resurrects an engagement past its purge date.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from credvault.errors import AlreadyExists, IntegrityError, NotAVault
from credvault.files import create_private, fsync_dir, make_private_dir
from credvault.keyslots import KeySlots
from credvault.layout import (
    BACKUP_NAME_PATTERN,
    DB_NAME,
    DB_SIDE_FILES,
    LOCK_NAME,
    SLOTS_NAME,
    backup_name,
    default_backup_dir,
)
from credvault.model import backup_stamp, parse_backup_stamp
from credvault.session import Session

MAGIC = b"CREDVAULT-BACKUP-1\n"
BACKUP_NAME = re.compile(BACKUP_NAME_PATTERN)
# What a restore writes into the target directory (removed again if the restore fails).
RESTORED_FILES = (DB_NAME, SLOTS_NAME, LOCK_NAME, *DB_SIDE_FILES)

__all__ = [
    "BACKUP_NAME",
    "MAGIC",
    "RESTORED_FILES",
    "Backups",
    "default_backup_dir",
    "prune",
    "unpack",
    "write_backup",
]


class Backups:
    """Backups of one open vault (``vault.backups``)."""

    def __init__(self, s: Session) -> None:
        self.s = s

    def create(self, directory: Path | None = None) -> tuple[Path, int]:
        """Write a backup; returns (file, number of old backups pruned)."""
        s = self.s
        s.require("vault.backup")
        directory = directory or default_backup_dir(s.path)
        target = write_backup(s, directory)
        days = s.setting("backup-retention-days")
        pruned = prune(directory, s.vault_id.hex(), s.clock() - timedelta(days=days), keep=target)
        with s.store.write():
            s.log("backup", None, None, "ok", f"{target.name}; {pruned} old backups pruned")
        return target, pruned


def write_backup(s: Session, directory: Path, *, next_free: bool = False) -> Path:
    """Write one backup file into ``directory`` (no permission check, no audit: callers).

    Also used before a format upgrade, so the pre-upgrade copy is an ordinary backup that
    ``restore`` reads and the backup retention prunes (purged data leaves it too). That
    caller passes ``next_free``: an upgrade killed after its backup and retried within the
    same second names its new backup one second later instead of failing.
    """
    make_private_dir(directory)
    now = s.clock()
    target = directory / backup_name(s.vault_id.hex(), backup_stamp(now))
    while next_free and target.exists():
        now += timedelta(seconds=1)
        target = directory / backup_name(s.vault_id.hex(), backup_stamp(now))
    if target.exists():
        raise AlreadyExists(f"{target} exists (one backup per second)")
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-") as tmp:
        db_copy = Path(tmp) / "db"
        create_private(db_copy)
        with s.store.write():  # the key slots and the copy, both as of one moment
            slots = s.reload_slots().to_bytes()
        s.store.copy_to(db_copy, s.db_key)
        part = directory / f".{target.name}.part"
        fd = os.open(part, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            os.write(fd, MAGIC + len(slots).to_bytes(8, "big") + slots)
            with db_copy.open("rb") as f:
                while chunk := f.read(1 << 20):
                    os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, target)
        fsync_dir(directory)
    return target


def prune(directory: Path, vault_id: str, cutoff: datetime, *, keep: Path | None = None) -> int:
    """Delete this vault's backups older than ``cutoff`` (credvault's own files only), but
    never ``keep`` (the backup just written: its name is rounded down to the second)."""
    n = 0
    for f in directory.iterdir():
        m = BACKUP_NAME.match(f.name)
        if not m or m.group(1) != vault_id or (keep is not None and f.name == keep.name):
            continue
        if parse_backup_stamp(m.group(2)) < cutoff:
            f.unlink()
            n += 1
    return n


def unpack(file: Path, target: Path) -> None:
    """Write the backup ``file`` as a vault directory at ``target`` (new or empty).

    Only the files: opening, checking and purging what is due is :meth:`Vault.restore`'s.
    """
    try:
        with file.open("rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or not head.startswith(MAGIC):
                raise NotAVault(f"{file} is not a credvault backup")
            n = int.from_bytes(head[len(MAGIC) :], "big")
            if n > 16 * 1024 * 1024:
                raise IntegrityError("backup header is corrupt")
            slots_bytes = f.read(n)
            KeySlots.from_bytes(slots_bytes)  # parse before writing anything
            if target.exists() and any(target.iterdir()):
                raise AlreadyExists(f"{target} is not empty; restore into a new directory")
            make_private_dir(target)
            create_private(target / LOCK_NAME)
            create_private(target / DB_NAME)
            with (target / DB_NAME).open("r+b") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except FileNotFoundError:
        raise NotAVault(f"no such backup file: {file}") from None
    fd = os.open(target / SLOTS_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, slots_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(target)
