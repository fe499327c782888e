"""File creation with safe modes, and atomic replace.

SQLite creates databases 0644 under the usual umask, and -wal/-shm copy the main file's
mode, so credvault creates every file itself, 0600, before anything else opens it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700. An existing directory keeps its mode:
    it may be a shared one the user chose (a backup target), not ours to change."""
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)  # mkdir's mode is masked by the umask


def create_private(path: Path) -> None:
    """Create an empty file with mode 0600; refuse if it exists (O_EXCL)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written: a short count is not an error, it is the
    kernel's way of saying "the rest later" (the next call then fails with ENOSPC/EFBIG)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - POSIX write returns >0 or raises
            raise OSError(errno.EIO, "write made no progress")
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync directory.

    A crash at any point leaves either the old or the new complete file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Also used in backup directories, which may be shared: never write through a file or
    # symlink someone planted under the temporary name (a stale one of ours is removed).
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_new_private(path: Path, data: bytes) -> None:
    """Write a new 0600 file that must not exist yet (exports, receipts, identities)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold a shared or exclusive ``flock`` on the vault's lock file.

    Every use of a vault holds it shared; swapping the database file for a re-keyed copy
    holds it exclusive, so no process keeps writing to a file that was replaced.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
