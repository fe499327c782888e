"""Backups: one timestamped, encrypted file; pruned after the backup retention.

A backup file is ``CREDVAULT-BACKUP-1\\n`` ‖ u64 length ‖ key-slot file ‖ database copy. The
database copy is made with SQLite's online backup API (consistent while others write) and
stays encrypted under the vault's database key; the key slots inside it are those of the
moment of the backup. Restoring writes a new vault directory, checks it, and purges at once
everything that became due, so a restore never resurrects an engagement past its purge date.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from credvault.errors import AlreadyExists, IntegrityError, NotAVault
from credvault.files import create_private, fsync_dir, make_private_dir, named
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
        make_private_dir(directory)
        vault_id = s.vault_id.hex()
        days = s.setting("backup-retention-days")
        pruned: list[int] = []

        def audit(target: Path) -> None:
            # Audited before the file appears under its name: a backup (a copy of every
            # secret) never exists unaudited, even after a crash right here.
            n = prune(directory, vault_id, s.clock() - timedelta(days=days), keep=target)
            pruned.append(n)
            with s.store.write():
                s.log("backup", None, None, "ok", f"{target.name}; {n} old backups pruned")

        target = write_backup(s, directory, publish=audit)
        return target, pruned[0]


def write_backup(
    s: Session,
    directory: Path,
    publish: Callable[[Path], None] | None = None,
    *,
    next_free: bool = False,
) -> Path:
    """Write one backup file into ``directory`` (no permission check, no audit: callers).

    Also used before a format upgrade, so the pre-upgrade copy is an ordinary backup that
    ``restore`` reads and the backup retention prunes (purged data leaves it too). That
    caller passes ``next_free``: an upgrade killed after its backup and retried within the
    same second names its new backup one second later instead of failing.
    ``publish`` is called with the final name once the file is complete, before it appears
    under that name (the caller's audit entry). One backup at a time per directory; what a
    killed one left there is removed first.
    """
    make_private_dir(directory)
    now = s.clock()
    target = directory / backup_name(s.vault_id.hex(), backup_stamp(now))
    while next_free and target.exists():
        now += timedelta(seconds=1)
        target = directory / backup_name(s.vault_id.hex(), backup_stamp(now))
    if target.exists():
        raise AlreadyExists(f"{target} exists (one backup per second)")
    with _directory_locked(directory):
        _remove_leftovers(directory)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-") as tmp:
            db_copy = Path(tmp) / "db"
            create_private(db_copy)
            slots = _consistent_copy(s, db_copy)
            part = directory / f".{target.name}.part"
            try:
                fd = os.open(part, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
                try:
                    os.write(fd, MAGIC + len(slots).to_bytes(8, "big") + slots)
                    with db_copy.open("rb") as f:
                        while chunk := f.read(1 << 20):
                            os.write(fd, chunk)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if publish is not None:
                    publish(target)
                os.replace(part, target)
                fsync_dir(directory)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    part.unlink()
                if isinstance(e, OSError):
                    raise named(e, part) from None
                raise
    return target


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    """One backup at a time per directory (an ``flock`` on the directory itself), so the
    temporary files found there under the lock are leftovers of a killed backup."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(directory: Path) -> None:
    """Delete what a killed backup left: ``.tmp-*`` directories and ``.….cvb.part`` files."""
    for f in directory.iterdir():
        if f.name.startswith(".tmp-") and f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        elif f.name.startswith(".credvault-backup-") and f.name.endswith(".cvb.part"):
            with contextlib.suppress(OSError):
                f.unlink()


def _consistent_copy(s: Session, db_copy: Path) -> bytes:
    """Copy the database to ``db_copy``; return the key-slot file that goes with the copy
    (the version the copy records: a membership change between the two reads is retried)."""
    from credvault.slotfile import DIGEST_META, in_force
    from credvault.store import Store, StoreError

    for _ in range(10):
        s.store.copy_to(db_copy, s.db_key)
        copy = Store.open(db_copy, s.db_key)
        try:
            recorded = copy.get_meta(DIGEST_META)
        finally:
            copy.close()
        with s.store.write():
            slots = in_force(s)
        if recorded in (None, slots.membership_digest()):
            return slots.to_bytes()
    raise StoreError("the vault's members kept changing during the backup; run it again")


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
    except OSError as e:
        raise named(e, target / DB_NAME) from None
    try:
        fd = os.open(target / SLOTS_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, slots_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(target)
    except OSError as e:
        raise named(e, target / SLOTS_NAME) from None
