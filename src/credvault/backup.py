"""Backups: one timestamped, encrypted file; pruned after the backup retention.

A backup file is ``CREDVAULT-BACKUP-1\\n`` ‖ u64 length ‖ key-slot file ‖ database copy. The
database copy is made with SQLite's online backup API (consistent while others write) and
stays encrypted under the vault's database key; the key slots inside it are those of the
moment of the backup. Restoring writes a new vault directory, checks it, and purges at once
everything that became due, so a restore never resurrects an engagement past its purge date.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from credvault.errors import AlreadyExists, IntegrityError, NotAVault
from credvault.files import create_private, fsync_dir, make_private_dir, write_all
from credvault.keyslots import KeySlots

if TYPE_CHECKING:
    from credvault.unlock import UnlockSource
    from credvault.vault import Vault

MAGIC = b"CREDVAULT-BACKUP-1\n"
_NAME = re.compile(r"\Acredvault-backup-([0-9a-f]{32})-(\d{8}T\d{6}Z)\.cvb\Z")
TMP_PREFIX = ".credvault-tmp-"
# A backup in progress never takes this long; anything of ours older is a crash leftover.
LEFTOVER_AGE_S = 6 * 3600
_LEGACY_PART = re.compile(r"\A\.credvault-backup-([0-9a-f]{32})-\d{8}T\d{6}Z\.cvb\.part\Z")


def default_backup_dir(vault_path: Path) -> Path:
    return vault_path.parent / f"{vault_path.name}-backups"


def backup(vault: Vault, directory: Path | None = None) -> tuple[Path, int]:
    """Write a backup of ``vault``; returns (file, number of old backups pruned).

    Order of trust: the database copy is checked (every page's MAC and SQLite's integrity
    check) before it is written; the file is written in full, fsynced, dropped from the page
    cache and read back and compared; only then is it linked under its final name (never
    over an existing file), and only after that are older backups pruned. Any failure
    leaves nothing behind and prunes nothing.
    """
    s = vault._s
    s.require_admin("back up")
    directory = directory or default_backup_dir(s.path)
    make_private_dir(directory)
    vid = vault.vault_id
    clean_leftovers(directory, vid)
    now = s.clock()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"credvault-backup-{vid}-{stamp}.cvb"
    if target.exists():
        raise AlreadyExists(f"{target} exists (one backup per second)")
    # mkdtemp: a new 0700 directory of ours (mkdir is exclusive), so nothing in it can be
    # pre-created or planted by another user of a shared backup directory.
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f"{TMP_PREFIX}{vid}-"))
    try:
        db_copy = tmp / "db"
        create_private(db_copy)
        with s.store.write():  # the key slots and the copy, both as of one moment
            slots = s.reload_slots().to_bytes()
        s.store.copy_to(db_copy, s.db_key)
        problems = check_db_file(db_copy, s.db_key)
        if problems:
            raise IntegrityError(f"the vault fails its integrity check: {problems[0][:120]}")
        part = tmp / "backup.part"
        digest = _write_backup_file(part, MAGIC + len(slots).to_bytes(8, "big") + slots, db_copy)
        if _file_digest(part) != digest:
            raise IntegrityError(
                f"the backup read back from {directory} differs from what was written"
            )
        os.link(part, target)  # never replaces: a file of that name that appeared meanwhile
        fsync_dir(directory)
    except FileExistsError:
        raise AlreadyExists(f"{target} exists (one backup per second)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    days = int(s.store.get_meta("backup_retention_days") or 30)
    pruned = prune(directory, vid, now - timedelta(days=days))
    with s.store.write():
        s.log("backup", None, None, "ok", f"{target.name}; {pruned} old backups pruned")
    return target, pruned


def _write_backup_file(part: Path, header: bytes, db_copy: Path) -> bytes:
    """Write header ‖ database copy to the new file ``part``; returns its SHA-256."""
    h = hashlib.sha256(header)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(part, flags, 0o600)
    try:
        write_all(fd, header)
        with db_copy.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                write_all(fd, chunk)
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):  # the read-back should come from the disk
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return h.digest()


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def check_db_file(path: Path, key: bytes) -> list[str]:
    """Every page's MAC and SQLite's integrity check on a database file (read-only)."""
    from credvault.store import check_file

    return check_file(path, key)


def clean_leftovers(directory: Path, vault_id: str, *, age_s: float = LEFTOVER_AGE_S) -> int:
    """Remove this vault's crash leftovers older than ``age_s``: temporary directories
    (with a full database copy inside) and old-style ``.part`` files. Only our own files,
    never through a symlink; younger ones may belong to a backup running now."""
    cutoff = time.time() - age_s
    uid = os.getuid()
    n = 0
    for f in directory.iterdir():
        name = f.name
        ours = name.startswith(f"{TMP_PREFIX}{vault_id}-")
        legacy_part = (m := _LEGACY_PART.match(name)) is not None and m.group(1) == vault_id
        legacy_tmp = name.startswith(".tmp-")
        if not (ours or legacy_part or legacy_tmp):
            continue
        try:
            st = f.lstat()
        except FileNotFoundError:
            continue
        if st.st_uid != uid or st.st_mtime > cutoff:
            continue
        if legacy_part and stat.S_ISREG(st.st_mode):
            f.unlink()
            n += 1
        elif stat.S_ISDIR(st.st_mode):
            # A pre-1 ".tmp-" directory is ours only if it holds nothing but the copy.
            if legacy_tmp and {c.name for c in f.iterdir()} - {"db"}:
                continue
            shutil.rmtree(f, ignore_errors=True)
            n += 1
    return n


def prune(directory: Path, vault_id: str, cutoff: datetime) -> int:
    """Delete this vault's backups older than ``cutoff`` (credvault's own files only)."""
    n = 0
    for f in directory.iterdir():
        m = _NAME.match(f.name)
        if not m or m.group(1) != vault_id:
            continue
        when = datetime.strptime(m.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if when < cutoff:
            f.unlink()
            n += 1
    return n


def extract(file: Path, target: Path) -> None:
    """Write the vault held in backup ``file`` into the new (or empty) directory ``target``,
    0700 with 0600 files; nothing is opened or checked beyond the header."""
    from credvault.session import DB_NAME, LOCK_NAME, SLOTS_NAME

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
    fd = os.open(target / SLOTS_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, slots_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(target)


def restore(
    file: Path, target: Path, member: str, source: UnlockSource, **open_kw: object
) -> list[str]:
    """Restore ``file`` into the new directory ``target``; returns engagements purged at once."""
    from credvault.session import DB_NAME, LOCK_NAME, SLOTS_NAME
    from credvault.vault import Vault

    if target.exists() and any(target.iterdir()):
        raise AlreadyExists(f"{target} is not empty; restore into a new directory")
    try:
        extract(file, target)
        with Vault.open(target, member, source, auto_purge=False, **open_kw) as v:  # type: ignore[arg-type]
            problems = v.integrity_check()
            if problems:
                raise IntegrityError(
                    f"restored database fails its integrity check: {problems[0][:80]}"
                )
            v._s.audit.verify()
            done = v.purger.run_due(automatic=True)
            with v._s.store.write():
                v._s.log(
                    "restore",
                    None,
                    None,
                    "ok",
                    f"from {file.name}; {len(done)} engagements purged at once",
                )
            return [d.engagement for d in done]
    except BaseException:
        for name in (DB_NAME, SLOTS_NAME, LOCK_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (target / name).unlink()
        raise
