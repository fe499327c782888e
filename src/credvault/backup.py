"""Backups: one timestamped, encrypted file; pruned after the backup retention.

A backup file is ``CREDVAULT-BACKUP-1\\n`` ‖ u64 length ‖ key-slot file ‖ database copy. The
database copy is made with SQLite's online backup API (consistent while others write) and
stays encrypted under the vault's database key; the key slots inside it are those of the
moment of the backup. Restoring writes a new vault directory, checks it, and purges at once
everything that became due, so a restore never resurrects an engagement past its purge date.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from credvault.errors import AlreadyExists, IntegrityError, NotAVault
from credvault.files import create_private, fsync_dir, make_private_dir
from credvault.keyslots import KeySlots

if TYPE_CHECKING:
    from credvault.unlock import UnlockSource
    from credvault.vault import Vault

MAGIC = b"CREDVAULT-BACKUP-1\n"
_NAME = re.compile(r"\Acredvault-backup-([0-9a-f]{32})-(\d{8}T\d{6}Z)\.cvb\Z")


def default_backup_dir(vault_path: Path) -> Path:
    return vault_path.parent / f"{vault_path.name}-backups"


def backup(vault: Vault, directory: Path | None = None) -> tuple[Path, int]:
    """Write a backup of ``vault``; returns (file, number of old backups pruned)."""
    s = vault._s
    s.require_admin("back up")
    directory = directory or default_backup_dir(s.path)
    make_private_dir(directory)
    now = s.clock()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"credvault-backup-{vault.vault_id}-{stamp}.cvb"
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
    days = int(s.store.get_meta("backup_retention_days") or 30)
    pruned = prune(directory, vault.vault_id, now - timedelta(days=days))
    with s.store.write():
        s.log("backup", None, None, "ok", f"{target.name}; {pruned} old backups pruned")
    return target, pruned


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


def restore(
    file: Path, target: Path, member: str, source: UnlockSource, **open_kw: object
) -> list[str]:
    """Restore ``file`` into the new directory ``target``; returns engagements purged at once."""
    from credvault.session import DB_NAME, LOCK_NAME, SLOTS_NAME
    from credvault.vault import Vault

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
    try:
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
