"""Envelope helpers shared by credentials and systems, and re-encryption on key rotation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from credvault.crypto import envelope

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.session import Session
    from credvault.store import Row

CRED_FIELDS = ("secret", "username", "url", "notes")
SYS_FIELDS = ("address", "details")


def place(s: Session, eng: Engagement, table: str, uid: bytes, field: str) -> envelope.Place:
    return envelope.Place(s.vault_id, eng.uid, table, uid, field)


def seal(
    s: Session, eng: Engagement, key: bytes, table: str, uid: bytes, field: str, value: bytes | None
) -> bytes | None:
    if value is None:
        return None
    return envelope.seal(place(s, eng, table, uid, field), value, key, eng.key_version)


def open_(
    s: Session, eng: Engagement, key: bytes, table: str, uid: bytes, field: str, blob: bytes | None
) -> bytes | None:
    if blob is None:
        return None
    return envelope.open_(place(s, eng, table, uid, field), bytes(blob), key)


def remove_audited(
    s: Session,
    eng: Engagement,
    name: str,
    action: str,
    find: Callable[[], Row | None],
    delete: Callable[[int], None],
) -> bool:
    """Delete one row and audit it ("error: not found" if absent), in one transaction."""
    with s.store.write():
        row = find()
        if row is not None:
            delete(int(row[0]))
        s.log(action, eng.name, name, "ok" if row else "error", "" if row else "not found")
    return row is not None


def reencrypt_engagement(
    s: Session, eng: Engagement, old_key: bytes, new_key: bytes, version: int
) -> None:
    """Decrypt every envelope of ``eng`` and seal it afresh under ``new_key`` at ``version``.

    Fresh data keys and nonces: a data key captured before the rotation opens nothing after it.
    """

    def redo(table: str, uid: bytes, field: str, blob: bytes | None) -> bytes | None:
        if blob is None:
            return None
        pl = place(s, eng, table, uid, field)
        return envelope.seal(pl, envelope.open_(pl, bytes(blob), old_key), new_key, version)

    rows = []
    for r in s.store.credentials(eng.id):
        uid = bytes(r[1])
        sec = redo("credentials", uid, "secret", r[5])
        assert sec is not None
        rows.append(
            (
                sec,
                redo("credentials", uid, "username", r[6]),
                redo("credentials", uid, "url", r[7]),
                redo("credentials", uid, "notes", r[8]),
                int(r[0]),
            )
        )
    s.store.set_credential_envelopes_many(rows)
    for r in s.store.systems(eng.id):
        uid = bytes(r[1])
        addr = redo("systems", uid, "address", r[5])
        assert addr is not None
        s.store.set_system_envelopes(int(r[0]), addr, redo("systems", uid, "details", r[6]))
