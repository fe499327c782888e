"""How the key-slot file changes: atomically with the database, decided by one COMMIT.

The key-slot file must be readable before the database can be opened, so it cannot live
inside it; yet every membership or passphrase change touches both (the slot, plus grants and
the audit entry). The protocol that keeps them one change:

1. Inside the database write transaction (``BEGIN IMMEDIATE``: one writer at a time), the
   writer creates ``keyslots.json.<random>.staged`` with the new version, holds an ``flock``
   on it (so others can tell a live writer from a dead one) and fsyncs it.
2. In the same transaction it does its database work, including the audit entry, and records
   the new version's :meth:`~credvault.keyslots.KeySlots.membership_digest` in ``meta``
   (``keyslots_digest``). **The COMMIT is the moment the change takes effect.**
3. After the COMMIT it renames the staged file over ``keyslots.json`` (fsyncing the
   directory).

A fault before the COMMIT leaves the old file in force and a staged file the database does
not record; a fault after it leaves a staged file the database does record. Every open
(:func:`settle`, called only when the fast check in ``Vault.open`` sees something to do) takes
the write lock and decides each staged file whose writer is gone by that one rule — install
it if the database records its digest, delete it otherwise — and audits what it did. A
``keyslots.json`` the database does not record, with no staged file that explains it, is an
integrity error: someone put back an older (or foreign) key-slot file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from credvault.errors import (
    AccessDenied,
    CredvaultError,
    IntegrityError,
    NotFound,
    WrongPassphrase,
)
from credvault.files import FILE_MODE, fsync_dir, named
from credvault.keyslots import MAX_SIZE, KeySlots
from credvault.session import SLOTS_NAME, Session

DIGEST_META = "keyslots_digest"
STAGED_PREFIX = SLOTS_NAME + "."
STAGED_SUFFIX = ".staged"
# The audit entry of what an open decided about an interrupted change (its own action, so
# an interrupted change is never counted twice: the change's own entry committed with it).
SETTLE = "settle"
FINISHED = "finished at open after an interruption"
UNDONE = "interrupted before it took effect; undone at open"
UNDONE_INCOMPLETE = "an incomplete change was discarded at open"


def is_staged_name(name: str) -> bool:
    return name.startswith(STAGED_PREFIX) and name.endswith(STAGED_SUFFIX)


def staged_files(vault: Path) -> list[Path]:
    return sorted(f for f in vault.iterdir() if is_staged_name(f.name))


class Staged:
    """A next version of the key-slot file, ``flock``-ed by its writer until it is settled."""

    def __init__(self, vault: Path) -> None:
        self.vault = vault
        self.path = vault / f"{STAGED_PREFIX}{os.urandom(8).hex()}{STAGED_SUFFIX}"
        self.fd: int | None = None

    def write(self, data: bytes) -> None:
        """Create, lock and fill the file, then fsync it (and the directory: it must survive
        a crash right after the COMMIT that makes it the current version)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, FILE_MODE)
            self.fd = fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            fsync_dir(self.vault)
        except OSError as e:
            raise named(e, self.vault / SLOTS_NAME) from None

    def install(self) -> None:
        """Rename over ``keyslots.json``. Gone already: an opener settled it for us (it does
        so only under the write lock, after our COMMIT, so it installed it)."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.vault / SLOTS_NAME)
        fsync_dir(self.vault)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _recorded(s: Session) -> str | None:
    """The digest the database records now (None if that cannot be read)."""
    try:
        with s.store.read():
            value = s.store.get_meta(DIGEST_META)
    except CredvaultError:
        return None
    return value if isinstance(value, str) else None


def change(
    s: Session,
    build: Callable[[KeySlots], KeySlots],
    db_work: Callable[[KeySlots], None],
    *,
    seal_key: bytes | None = None,
) -> KeySlots:
    """Change the key-slot file and the database as one: ``build`` maps the current file to
    the new one, ``db_work`` makes the database half (and the audit entry) in the same
    transaction. Either both take effect or neither; the key-slot file is sealed under
    ``seal_key`` (default: the current database key).

    If the COMMIT reports an error the database is asked what happened: a change it records
    is finished and reported done; one it does not is undone and the error raised.
    """
    staged = Staged(s.path)
    digest: str | None = None
    new: KeySlots | None = None
    try:
        try:
            with s.store.write():
                cur, _ = _in_force(s)
                _check_member(s, cur)
                s.slots = cur
                new = build(cur).sealed_with(seal_key or s.db_key)
                db_work(cur)
                digest = new.membership_digest()
                s.store.set_meta(DIGEST_META, digest)
                staged.write(new.to_bytes())
        except BaseException as e:
            if digest is None or staged.fd is None:
                staged.discard()  # failed before the file was complete: never recorded
                raise
            recorded = _recorded(s)
            if recorded is None:
                raise  # cannot tell: leave the staged file for the next open to decide
            if recorded != digest:
                staged.discard()
                raise
            if not isinstance(e, Exception):
                staged.install()  # committed; the interrupt goes on after finishing
                raise
            # The COMMIT took effect although it reported an error: the change is done.
        assert new is not None
        staged.install()
    finally:
        staged.close()
    s.slots = new
    return new


def rewrite(s: Session, slots: KeySlots) -> None:
    """Replace the file with one of the same membership digest (a re-key step): no database
    change, so nothing to commit; a fault leaves a staged file :func:`settle` deletes."""
    if slots.membership_digest() != s.slots.membership_digest():
        raise ValueError("rewrite() may not change the membership")  # pragma: no cover
    staged = Staged(s.path)
    try:
        try:
            staged.write(slots.to_bytes())
        except BaseException:
            staged.discard()
            raise
        staged.install()
    finally:
        staged.close()
    s.slots = slots


def describe(old: KeySlots, new: KeySlots) -> tuple[str, str | None]:
    """(audit action, member) for the change from ``old`` to ``new``."""
    for name in sorted(set(new.members) - set(old.members)):
        return "member-add", name
    for name in sorted(set(old.members) - set(new.members)):
        return "member-rm", name
    for name, slot in sorted(new.members.items()):
        before = old.members[name]
        if before.kem_pub != slot.kem_pub:
            return "member-reset", name
        if before.private != slot.private:
            return "passwd", name
    return "keyslots-change", None


def _read_locked(path: Path) -> tuple[int, bytes] | None:
    """(fd, contents) of a staged file whose writer is gone; None if it is live or gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except BaseException:
        os.close(fd)
        raise
    return fd, data


def _parse(data: bytes, key: bytes) -> KeySlots | None:
    try:
        slots = KeySlots.from_bytes(data)
        slots.verify_mac(key)
    except CredvaultError:
        return None
    return slots


def _in_force(s: Session) -> tuple[KeySlots, list[Path]]:
    """Under the write lock: decide every staged file, return the version in force and the
    staged files deleted. A staged file the database records (while ``keyslots.json`` is not
    that version) is installed, whoever wrote it; any other is deleted. Only decisions about
    a writer that is gone (its ``flock`` is free) are audited: a live writer is merely
    between its COMMIT and its rename, and has audited its change itself."""
    slots_path = s.path / SLOTS_NAME
    discarded: list[Path] = []
    recorded = s.store.get_meta(DIGEST_META)
    cur = KeySlots.read(slots_path)
    cur.verify_mac(s.db_key)
    for path in staged_files(s.path):
        got = _read_locked(path)
        if got is None:  # a live writer (or gone meanwhile): read it without the lock
            try:
                data, fd = path.read_bytes()[: MAX_SIZE + 1], None
            except FileNotFoundError:
                continue
        else:
            fd, data = got
        try:
            staged = _parse(data, s.db_key)
            if (
                staged is not None
                and recorded is not None
                and staged.membership_digest() == recorded
                and cur.membership_digest() != recorded
            ):
                with contextlib.suppress(FileNotFoundError):  # its writer was quicker
                    os.replace(path, slots_path)
                fsync_dir(s.path)
                if fd is not None:
                    action, item = describe(cur, staged)
                    s.log(SETTLE, None, item, "ok", f"{action}: {FINISHED}")
                cur = staged
            elif fd is not None:
                path.unlink()
                fsync_dir(s.path)
                discarded.append(path)
                if staged is None:
                    s.log(SETTLE, None, None, "error", UNDONE_INCOMPLETE)
                elif staged.membership_digest() != cur.membership_digest():
                    action, item = describe(cur, staged)
                    s.log(SETTLE, None, item, "error", f"{action}: {UNDONE}")
        finally:
            if fd is not None:
                os.close(fd)
    if recorded is None:
        s.store.set_meta(DIGEST_META, cur.membership_digest())  # a vault made before this
    elif cur.membership_digest() != recorded:
        raise IntegrityError(
            "the key-slot file is not the version the database records (an older or foreign "
            "keyslots.json was put in place)"
        )
    return cur, discarded


def _check_member(s: Session, cur: KeySlots) -> None:
    member = s.keys.name
    if member not in cur.members:
        raise AccessDenied(member, "use the vault", None, "no longer a member")
    cur.check_member_keys(cur.members[member], s.keys)


def in_force(s: Session) -> KeySlots:
    """The key-slot version the database records, settled; call under the write lock."""
    cur, _ = _in_force(s)
    _check_member(s, cur)
    s.slots = cur
    return cur


def settle(s: Session, unlocked_from: Path | None = None) -> None:
    """At open: finish or undo interrupted key-slot changes, then check that
    ``keyslots.json`` is the version the database records (module docstring). Audits what it
    decided. ``unlocked_from`` is the staged file the member's keys came from, if any: when
    that change is undone the member must unlock with what is in force instead.
    """
    with s.store.write():
        cur, discarded = _in_force(s)
    member = s.keys.name
    if unlocked_from in discarded:
        if member not in cur.members:
            raise NotFound("member", member, f"adding {member!r} was interrupted and undone")
        raise WrongPassphrase(
            f"the passphrase change of {member!r} was interrupted and undone; "
            "use the previous passphrase"
        )
    if member not in cur.members:
        raise NotFound("member", member, f"{member!r} is not a member of this vault")
    if cur.members[member].kem_pub != s.me.kem_pub:
        raise WrongPassphrase(f"member {member!r} was reset meanwhile: use the new passphrase")
    _check_member(s, cur)
    s.slots = cur
