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


def named(e: OSError, path: Path) -> Exception:
    """``e`` as credvault reports it: a full disk is ``StoreError("disk full: cannot write
    PATH")`` (one clear line, exit 1); other errors keep their type and get the file they
    concern (``os.write`` errors carry none)."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        from credvault.errors import StoreError

        return StoreError(f"disk full: cannot write {e.filename or path}")
    if e.filename is None:
        return OSError(e.errno, e.strerror, str(path))
    return e


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync directory.

    A crash at any point leaves either the old or the new complete file. ``durable=False``
    skips both fsyncs, for a file where losing the latest version to a system crash is
    harmless (the witness on the ``get`` path): other processes still see old or new, never
    a mixture, but after a power loss the file may be the old one, or empty.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Also used in backup directories, which may be shared: never write through a file or
    # symlink someone planted under the temporary name (a stale one of ours is removed).
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()  # no temporary file survives a failure
        raise named(e, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_new_private(path: Path, data: bytes) -> None:
    """Write a new 0600 file that must not exist yet (exports, receipts, identities)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            path.unlink()  # a partial file is of no use and would block a rerun
        if isinstance(e, OSError):
            raise named(e, path) from None
        raise
    finally:
        os.close(fd)


#: How long an operation that needs the vault alone (``member rm``, finishing an interrupted
#: re-key) waits for other processes to close it before giving up, changing nothing.
EXCLUSIVE_WAIT_S = 60.0
_POLL_S = 0.05
_held: dict[str, int] = {}  # lock file -> how many locks this process holds on it


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool, wait_s: float | None = None) -> Iterator[None]:
    """Hold a shared or exclusive ``flock`` on the vault's lock file.

    Every use of a vault holds it shared; swapping the database file for a re-keyed copy
    holds it exclusive, so no process keeps writing to a file that was replaced. The
    exclusive lock is never waited for forever: if others hold the vault, a warning says so
    (``logging``, shown on stderr by the CLI) and after ``wait_s`` seconds it gives up with
    an error. A process that holds the vault itself (another open ``Vault``) is told at once
    instead of deadlocking on its own lock.
    """
    from credvault.errors import StoreError

    key = os.path.realpath(path)
    if exclusive and _held.get(key):
        raise StoreError(
            "this process has the vault open in another Vault object; close it first "
            "(an operation that replaces the database needs the vault alone)"
        )
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        if exclusive:
            _lock_exclusive(fd, path, EXCLUSIVE_WAIT_S if wait_s is None else wait_s)
        else:
            # Writer preference: pass the intent lock (a POSIX record lock on byte 1, held
            # exclusively by an operation waiting to have the vault alone) before joining the
            # shared holders, so a stream of short-lived users cannot starve it.
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 1)
            except OSError:
                import logging

                logging.getLogger("credvault").warning(
                    "credvault: waiting for an operation that needs the vault alone "
                    "(member removal) to finish"
                )
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, 1)
            fcntl.flock(fd, fcntl.LOCK_SH)
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
    finally:
        os.close(fd)


def _lock_exclusive(fd: int, path: Path, wait_s: float) -> None:
    import time

    deadline = time.monotonic() + wait_s
    # First the intent lock (new users now wait behind us), then the vault lock itself.
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1)
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise _gave_up(path, wait_s) from None
            time.sleep(_POLL_S)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    import logging

    logging.getLogger("credvault").warning(
        "credvault: waiting up to %d s for other processes to close the vault %s",
        int(wait_s),
        path.parent,
    )
    while time.monotonic() < deadline:
        time.sleep(_POLL_S)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, 1)
    raise _gave_up(path, wait_s)


def _gave_up(path: Path, wait_s: float) -> Exception:
    from credvault.errors import StoreError

    return StoreError(
        f"other processes kept the vault {path.parent} open for {int(wait_s)} s; gave up and "
        "changed nothing (close them, or run it again when the vault is idle)"
    )
