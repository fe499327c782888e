"""Re-keying the database (after a member leaves), step by step, and finishing an
interrupted one.

Steps, each leaving a vault every remaining member can open: (1) :func:`with_pending` — the
key-slot file gains *pending* slots sealing a fresh database key, in the COMMIT that removes
the member (:mod:`credvault.slotfile`); (2) a full copy under the
new key in ``vault.db.next``; (3) the copy renamed over ``vault.db``; (4) the pending slots
promoted (2–4: :func:`finish`). An open that finds pending slots takes the exclusive lock
and decides from what is on disk: database still under the old key → :func:`resume_before_swap`;
already under the new one → :func:`resume_after_swap`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from credvault import slotfile
from credvault.audit import AuditLog
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.files import fsync_dir
from credvault.keyslots import KeySlots, MemberKeys
from credvault.layout import DB_NAME, DB_SIDE_FILES, NEXT_DB
from credvault.session import Session
from credvault.store import Store


def with_pending(slots: KeySlots, new_key: bytes, pinned: bytes) -> KeySlots:
    """Step 1: ``slots`` plus pending slots sealing ``new_key`` to every member, for
    generation + 1. ``member rm`` commits this version with the removal itself (see
    :mod:`credvault.slotfile`); the caller holds the exclusive vault lock."""
    gen = slots.generation + 1
    pending = {
        n: p.hpke_seal(
            slots.certified_kem(n, pinned),
            new_key,
            labels.encode(labels.SEAL_DB_KEY, slots.vault_id, n, gen),
        )
        for n in slots.members
    }
    return slots._replace(pending=pending)


def drop_orphan_grants(s: Session) -> int:
    """Revoke the grants of names no longer in the key-slot file: the database half of a
    ``member rm`` that was interrupted after its key-slot half (see :meth:`Members.remove`)."""
    n = 0
    with s.store.write():
        for name in s.store.grant_holders():
            if name not in s.slots.members and not name.startswith("@"):
                n += len(s.store.grants_of_member(name))
                for eng_id, _role in s.store.grants_of_member(name):
                    s.store.revoke_grant(eng_id, name, s.now())
                    s.store.mark_needs_rotation(eng_id)
                s.log("member-rm", None, name, "ok", "completed at open after an interruption")
    s.verified.clear()
    return n


def finish(s: Session, new_key: bytes) -> None:
    """Steps 2–4 (copy, swap, promote); also how an open completes an interrupted re-key."""
    path = s.path
    nxt = path / NEXT_DB
    with contextlib.suppress(FileNotFoundError):
        nxt.unlink()
    s.store.checkpoint_truncate()
    fd = os.open(nxt, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    s.store.copy_to(nxt, new_key)
    fd = os.open(nxt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    s.store.close()
    for side in DB_SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (path / side).unlink()
    os.replace(nxt, path / DB_NAME)
    fsync_dir(path)
    promote(s, new_key)


def promote(s: Session, new_key: bytes) -> None:
    """Make the pending slots current (database already under ``new_key``)."""
    slots = s.slots
    assert slots.pending is not None
    members = {
        n: m._replace(db_key=slots.pending[n])
        for n, m in slots.members.items()
        if n in slots.pending
    }
    final = slots._replace(
        members=members, pending=None, generation=slots.generation + 1
    ).sealed_with(new_key)
    old_store, s.store = s.store, Store.open(s.path / DB_NAME, new_key)
    s.store.on_commit = old_store.on_commit
    with contextlib.suppress(Exception):
        old_store.close()
    s.audit = AuditLog(s.store, new_key)
    s.note_db_file()
    s.db_key = new_key
    succeed_vault_keys(s)
    slotfile.rewrite(s, final)


SUCCESSION_DUE = "key_succession_due"  # meta: why the next promote must replace the keys


def mark_succession_due(s: Session, why: str) -> None:
    """In the COMMIT that removes a member (or retires their keys): the receipt and audit
    MAC keys get successors as soon as the database is under its new key."""
    s.store.set_meta(SUCCESSION_DUE, why)


def succeed_vault_keys(s: Session) -> None:
    """After the swap, on the re-keyed database only: new receipt signing key (signed
    forward by the old one) and new audit MAC key (chained by an ``audit-key`` entry), so
    a former member's copies of the old ones sign and MAC nothing the vault accepts as
    new. Never written into the old file, which the former member can still decrypt. Runs
    once: the due mark goes in the same transaction, and an open that finishes an
    interrupted re-key comes through here too."""
    from credvault.purge import succeed_receipt_key

    if not s.store.get_meta(SUCCESSION_DUE):
        return
    with s.store.write():
        why = str(s.store.get_meta(SUCCESSION_DUE) or "")
        if not why:
            return
        succeed_receipt_key(s, why)
        s.audit.succeed_key(s.now(), s.member, why)
        s.store.set_meta(SUCCESSION_DUE, "")


def resume_after_swap(
    path: Path,
    slots: KeySlots,
    keys: MemberKeys,
    old_key: bytes,
    new_key: bytes,
    clock: Callable[[], datetime],
    check: Callable[[Session], Session],
) -> Session:
    """Interrupted after the swap (the database is already under ``new_key``): promote the
    pending slots and drop the removed member's grants; returns the open session."""
    store = Store.open(path / DB_NAME, new_key)
    swapped = Session(path, store, AuditLog(store, new_key), slots, keys, new_key, clock)
    try:
        slots.verify_mac(old_key)
        promote(swapped, new_key)
        drop_orphan_grants(swapped)
        return check(swapped)
    except BaseException:
        swapped.store.close()
        raise


def resume_before_swap(session: Session) -> None:
    """Interrupted before the swap (caller holds the exclusive lock): copy, swap, promote.
    Also removes a stale ``vault.db.next`` left by a re-key that never got that far."""
    if session.slots.pending is not None:
        new_key = session.slots.open_pending_db_key(session.keys)
        if new_key is not None:
            finish(session, new_key)
            drop_orphan_grants(session)
    with contextlib.suppress(FileNotFoundError):
        (session.path / NEXT_DB).unlink()
