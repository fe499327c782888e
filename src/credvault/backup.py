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
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from credvault.errors import AlreadyExists, CredvaultError, IntegrityError, NotAVault
from credvault.files import create_private, fsync_dir, make_private_dir, named, write_all
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
from credvault.store import check_file

MAGIC = b"CREDVAULT-BACKUP-1\n"
BACKUP_NAME = re.compile(BACKUP_NAME_PATTERN)
# What a restore writes into the target directory (removed again if the restore fails).
RESTORED_FILES = (DB_NAME, SLOTS_NAME, LOCK_NAME, *DB_SIDE_FILES)
TMP_PREFIX = ".credvault-tmp-"
# A backup in progress never takes this long; anything of ours older is a crash leftover.
LEFTOVER_AGE_S = 6 * 3600
_LEGACY_PART = re.compile(r"\A\.credvault-backup-([0-9a-f]{32})-\d{8}T\d{6}Z\.cvb\.part\Z")
# atomic_write's temporary file for the ledger copy beside the backups (ledger.py)
_LEDGER_TMP = re.compile(r"\A\.credvault-ledger-([0-9a-f]{32})\.jsonl\.(\d+)\.tmp\Z")

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
        """Write a backup; returns (file, number of old backups pruned).

        Order of trust: the database copy is checked (every page's MAC and SQLite's
        integrity check) before it is written; the file is written in full, fsynced, dropped
        from the page cache, read back and compared; only then is it linked under its final
        name (never over an existing file), and only after that are older backups pruned.
        Any failure leaves nothing behind and prunes nothing.
        """
        s = self.s
        s.require("vault.backup")
        directory = directory or default_backup_dir(s.path)
        make_private_dir(directory)
        vault_id = s.vault_id.hex()
        days = s.setting("backup-retention-days")
        from credvault.clock import clock_hold
        from credvault.ledger import write_ledgers

        held = clock_hold(s)  # pruning destroys: never on a suspect clock
        cutoff = s.clock() - timedelta(days=days)

        def audit(target: Path) -> None:
            # Audited before the file appears under its name: a backup (a copy of every
            # secret) never exists unaudited, even after a crash right here. The pruning it
            # announces happens only once the new file is written, verified and linked: a
            # failed backup prunes nothing.
            n = 0 if held else prune(directory, vault_id, cutoff, keep=target, dry_run=True)
            detail = f"{target.name}; {n} old backups pruned"
            with s.store.write():
                s.log(
                    "backup",
                    None,
                    None,
                    "ok",
                    detail + (f" (pruning held: {held})" if held else ""),
                )

        target = write_backup(s, directory, publish=audit)
        write_ledgers(s, directory)  # the record of destruction, beside every backup
        pruned = 0 if held else prune(directory, vault_id, cutoff, keep=target)
        return target, pruned


def write_backup(
    s: Session,
    directory: Path,
    publish: Callable[[Path], None] | None = None,
    *,
    next_free: bool = False,
) -> Path:
    """Write one backup file into ``directory`` (no permission check, no audit: callers).

    Also used before a format upgrade, so the pre-upgrade copy is an ordinary backup that
    ``restore`` reads and the backup retention prunes (purged data leaves it too).

    Order of trust: the database copy is checked (every page's MAC and SQLite's integrity
    check) before it is written; the file is written in full, fsynced, dropped from the page
    cache, read back and compared; only then is it linked under its final name (never over
    an existing file). Any failure leaves nothing behind.
    ``restore`` reads and the backup retention prunes (purged data leaves it too). That
    caller passes ``next_free``: an upgrade killed after its backup and retried within the
    same second names its new backup one second later instead of failing.
    ``publish`` is called with the final name once the file is complete, before it appears
    under that name (the caller's audit entry). One backup at a time per directory; what a
    killed one left there is removed first.
    """
    vault_id = s.vault_id.hex()
    make_private_dir(directory)
    now = s.clock()
    target = directory / backup_name(vault_id, backup_stamp(now))
    while next_free and target.exists():
        now += timedelta(seconds=1)
        target = directory / backup_name(vault_id, backup_stamp(now))
    if target.exists():
        raise AlreadyExists(f"{target} exists (one backup per second)")
    with _directory_locked(directory):
        # Under the directory lock no other backup runs here: this vault's temporary files
        # are a killed backup's, whatever their age (older credvaults' by age only).
        clean_leftovers(directory, vault_id, ours_age_s=0)
        # mkdtemp: a new 0700 directory of ours (mkdir is exclusive), so nothing in it can be
        # pre-created or planted by another user of a shared backup directory.
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f"{TMP_PREFIX}{vault_id}-"))
        try:
            db_copy = tmp / "db"
            create_private(db_copy)
            slots = _consistent_copy(s, db_copy)
            problems = check_file(db_copy, s.db_key)
            if problems:
                raise IntegrityError(f"the vault fails its integrity check: {problems[0][:120]}")
            part = tmp / "backup.part"
            header = MAGIC + len(slots).to_bytes(8, "big") + slots
            if _write_backup_file(part, header, db_copy) != _sha256_of(part):
                raise IntegrityError(
                    f"the backup read back from {directory} differs from what was written"
                )
            if publish is not None:
                publish(target)
            os.link(part, target)  # never replaces a file of that name that appeared meanwhile
            fsync_dir(directory)
        except FileExistsError:
            raise AlreadyExists(f"{target} exists (one backup per second)") from None
        except OSError as e:
            raise named(e, directory) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    """One backup at a time per directory (an ``flock`` on the directory itself), so the
    temporary files of this vault found there under the lock are leftovers of a killed one."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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


def _write_backup_file(part: Path, header: bytes, db_copy: Path) -> bytes:
    """Write header ‖ database copy to the new file ``part``; returns the SHA-256 of what
    was meant to be written."""
    h = hashlib.sha256(header)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(part, flags, 0o600)
    try:
        write_all(fd, header)
        with db_copy.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                write_all(fd, chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read back from the disk
    finally:
        os.close(fd)
    return h.digest()


def _sha256_of(path: Path) -> bytes:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def clean_leftovers(
    directory: Path,
    vault_id: str,
    *,
    age_s: float = LEFTOVER_AGE_S,
    ours_age_s: float | None = None,
) -> int:
    """Remove this vault's crash leftovers older than ``age_s``: temporary directories
    (with a full database copy inside) and old-style ``.part`` files. Only our own files,
    never through a symlink; younger ones may belong to a backup running now. A ledger
    copy's temporary file goes as soon as the process named in it is gone."""
    cutoff = time.time() - age_s
    uid = os.getuid()
    n = 0
    for f in directory.iterdir():
        name = f.name
        ours = name.startswith(f"{TMP_PREFIX}{vault_id}-")
        legacy_part = (m := _LEGACY_PART.match(name)) is not None and m.group(1) == vault_id
        legacy_tmp = name.startswith(".tmp-")
        ledger_tmp = (m := _LEDGER_TMP.match(name)) is not None and m.group(1) == vault_id
        if ledger_tmp and m is not None:
            n += _remove_if_orphaned(f, int(m.group(2)), uid, cutoff)
            continue
        if not (ours or legacy_part or legacy_tmp):
            continue
        try:
            st = f.lstat()
        except FileNotFoundError:
            continue
        limit = cutoff if not ours or ours_age_s is None else time.time() - ours_age_s
        if st.st_uid != uid or st.st_mtime > limit:
            continue
        if legacy_part and stat.S_ISREG(st.st_mode):
            f.unlink()
            n += 1
        elif stat.S_ISDIR(st.st_mode):
            # An older ".tmp-" directory is ours only if it holds nothing but the copy.
            if legacy_tmp and {c.name for c in f.iterdir()} - {"db"}:
                continue
            shutil.rmtree(f, ignore_errors=True)
            n += 1
    return n


def _remove_if_orphaned(f: Path, pid: int, uid: int, cutoff: float) -> int:
    """Remove our regular file ``f`` written by process ``pid`` if that process is gone
    (or the file is older than ``cutoff``); 1 if removed."""
    try:
        st = f.lstat()
    except FileNotFoundError:
        return 0
    if st.st_uid != uid or not stat.S_ISREG(st.st_mode):
        return 0
    if st.st_mtime > cutoff:
        try:
            os.kill(pid, 0)
            return 0  # its writer may still be at work
        except ProcessLookupError:
            pass
        except PermissionError:
            return 0  # a live process of another user
    with contextlib.suppress(FileNotFoundError):
        f.unlink()
    return 1


def prune(
    directory: Path,
    vault_id: str,
    cutoff: datetime,
    *,
    keep: Path | None = None,
    dry_run: bool = False,
) -> int:
    """Delete this vault's backups older than ``cutoff`` (credvault's own files only), but
    never ``keep`` (the backup just written: its name is rounded down to the second).
    ``dry_run`` only counts them."""
    n = 0
    for f in directory.iterdir():
        m = BACKUP_NAME.match(f.name)
        if not m or m.group(1) != vault_id or (keep is not None and f.name == keep.name):
            continue
        # A name stamped in the future is suspect: its age is the file's, if that is older.
        written = datetime.fromtimestamp(f.stat().st_mtime, UTC)
        if min(parse_backup_stamp(m.group(2)), written) < cutoff:
            if not dry_run:
                f.unlink()
            n += 1
    return n


def _not_a_backup(file: Path, head: bytes) -> CredvaultError:
    """A header that is credvault's with a byte or two changed, or cut short, belongs to a
    damaged backup (exit 6: corruption); anything else (an empty file included) is some
    other file (exit 1)."""
    magic = head[: len(MAGIC)]
    if head and len(head) < len(MAGIC) + 8 and MAGIC.startswith(magic):
        return IntegrityError(f"{file}: the backup is truncated")
    if len(magic) == len(MAGIC) and sum(a != b for a, b in zip(magic, MAGIC, strict=True)) <= 2:
        return IntegrityError(f"{file}: the backup header is corrupt")
    return NotAVault(f"{file} is not a credvault backup")


def unpack(file: Path, target: Path) -> None:
    """Write the backup ``file`` as a vault directory at ``target`` (new or empty).

    Only the files: opening, checking and purging what is due is :meth:`Vault.restore`'s.
    """
    try:
        with file.open("rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or not head.startswith(MAGIC):
                raise _not_a_backup(file, head)
            n = int.from_bytes(head[len(MAGIC) :], "big")
            if n > 16 * 1024 * 1024:
                raise IntegrityError("backup header is corrupt")
            slots_bytes = f.read(n)
            KeySlots.from_bytes(slots_bytes)  # parse before writing anything
            if target.exists() and any(target.iterdir()):
                raise AlreadyExists(f"{target} is not empty; restore into a new directory")
            make_private_dir(target)
            target.chmod(0o700)  # an existing empty directory becomes a vault: tighten it
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
        fd = os.open(
            target / SLOTS_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600
        )
        try:
            write_all(fd, slots_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(target)
    except OSError as e:
        raise named(e, target / SLOTS_NAME) from None
