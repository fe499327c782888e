"""Envelope helpers shared by credentials and systems, and re-encryption on key rotation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from credvault.crypto import envelope
from credvault.model import HISTORY_SEALED, SEALED_FIELDS, CredentialRow, SealedRow, SystemRow

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.session import Session

CRED_FIELDS = SEALED_FIELDS["credentials"]
SYS_FIELDS = SEALED_FIELDS["systems"]
VERSIONS = "credential_versions"


def version_place(
    s: Session, eng: Engagement, uid: bytes, field: str, version: int
) -> envelope.Place:
    """An earlier version's place: its own table, the credential's uid, ``field/vN``.

    So a version's envelope opens only as that version of that credential: copied onto the
    live row, another version or another credential it fails, like any moved envelope.
    """
    return envelope.Place(s.vault_id, eng.uid, VERSIONS, uid, f"{field}/v{version}")


def seal_version(
    s: Session,
    eng: Engagement,
    key: bytes,
    uid: bytes,
    field: str,
    version: int,
    value: bytes | None,
) -> bytes | None:
    if value is None:
        return None
    return envelope.seal(version_place(s, eng, uid, field, version), value, key, eng.key_version)


def open_version(
    s: Session,
    eng: Engagement,
    key: bytes,
    uid: bytes,
    field: str,
    version: int,
    blob: bytes | None,
) -> bytes | None:
    if blob is None:
        return None
    return envelope.open_(version_place(s, eng, uid, field, version), bytes(blob), key)


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
    find: Callable[[], CredentialRow | SystemRow | None],
    delete: Callable[[int], None],
) -> bool:
    """Delete one row and audit it ("error: not found" if absent), in one transaction."""
    with s.store.write():
        row = find()
        if row is not None:
            delete(row.id)
        s.log(action, eng.name, name, "ok" if row else "error", "" if row else "not found")
    return row is not None


def reencrypt_engagement(
    s: Session, eng: Engagement, old_key: bytes, new_key: bytes, version: int
) -> None:
    """Decrypt every envelope of ``eng`` and seal it afresh under ``new_key`` at ``version``.

    Every column :data:`~credvault.model.SEALED_FIELDS` names, and nothing else. Fresh data
    keys and nonces: a data key captured before the rotation opens nothing after it.
    """
    for table, fields in SEALED_FIELDS.items():
        redone: list[SealedRow] = []
        for row in s.store.sealed_rows(table, eng.id):
            blobs: list[bytes | None] = []
            for field, blob in zip(fields, row.blobs, strict=True):
                if blob is None:
                    blobs.append(None)
                    continue
                pl = place(s, eng, table, row.uid, field)
                blobs.append(envelope.seal(pl, envelope.open_(pl, blob, old_key), new_key, version))
            redone.append(row._replace(blobs=tuple(blobs)))
        s.store.set_sealed_rows(table, redone)
    # The history and the trash are the engagement's data too: same key, same rotation.
    # Trashed rows keep their live places; versions have their own (version_place).
    for table, live in (("credential_trash", "credentials"), ("system_trash", "systems")):
        redone = []
        for row in s.store.sealed_rows(table, eng.id):
            blobs = []
            for field, blob in zip(HISTORY_SEALED[table], row.blobs, strict=True):
                if blob is None:
                    blobs.append(None)
                    continue
                pl = place(s, eng, live, row.uid, field)
                blobs.append(envelope.seal(pl, envelope.open_(pl, blob, old_key), new_key, version))
            redone.append(row._replace(blobs=tuple(blobs)))
        s.store.set_sealed_rows(table, redone)
    redone = []
    for v in s.store.engagement_versions(eng.id):
        blobs = []
        for field in CRED_FIELDS:
            blob = v.envelope(field)
            if blob is None:
                blobs.append(None)
                continue
            pl = version_place(s, eng, v.credential_uid, field, v.version)
            blobs.append(envelope.seal(pl, envelope.open_(pl, blob, old_key), new_key, version))
        redone.append(SealedRow(v.id, v.credential_uid, tuple(blobs)))
    s.store.set_sealed_rows(VERSIONS, redone)
