"""Envelope helpers shared by credentials and systems, and re-encryption on key rotation.

**Record binding** (issue 11, docs/format.md §4). Each record has one *anchor* envelope, a
field it always has: a credential's ``secret``, a system's ``address``. The anchor's AAD
carries the record's clear columns (:func:`credential_binding`, :func:`system_binding`,
:func:`version_binding`), so a name, kind, system link, port or protocol changed or swapped
by SQL makes the anchor fail to open: an integrity error, never another record's data. The
other envelopes are bound to the record's uid (their place), and the uid to the header by
the anchor. Every read that returns clear columns opens the anchor; every write that
changes them re-seals it.

Anchors written before binding (format 0x01) still open: see :func:`_legacy_anchor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from credvault.crypto import envelope
from credvault.errors import IntegrityError
from credvault.model import HISTORY_SEALED, SEALED_FIELDS, CredentialRow, SealedRow, SystemRow

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.session import Session

CRED_FIELDS = SEALED_FIELDS["credentials"]
SYS_FIELDS = SEALED_FIELDS["systems"]
VERSIONS = "credential_versions"

Binding = envelope.Binding

# table -> the field whose envelope carries the record's binding (one every record has)
ANCHOR: dict[str, str] = {
    "credentials": "secret",
    "credential_trash": "secret",
    "credential_versions": "secret",
    "systems": "address",
    "system_trash": "address",
}

_TAMPERED = "a record's clear columns are corrupt or tampered with"


def credential_binding(name: object, kind: object, system_uid: object) -> Binding:
    """A credential's binding: name, kind, and the uid of the linked system (empty: none).

    The link is the system's uid, not its row id: it survives the system's trip through the
    trash (restored rows get new ids, keep their uids)."""
    if not (isinstance(name, str) and isinstance(kind, str)):
        raise IntegrityError(_TAMPERED)
    if system_uid is None:
        system_uid = b""
    if not isinstance(system_uid, bytes | bytearray | memoryview):
        raise IntegrityError(_TAMPERED)
    return ("credential", name, kind, bytes(system_uid))


def system_binding(name: object, port: object, protocol: object) -> Binding:
    """A system's binding: name, port (0: none; ports are 1-65535), protocol (empty: none)."""
    if port is None:
        port = 0
    if protocol is None:
        protocol = ""
    if not (
        isinstance(name, str)
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 <= port <= 65535
        and isinstance(protocol, str)
    ):
        raise IntegrityError(_TAMPERED)
    return ("system", name, port, protocol)


def version_binding(name: object, kind: object, system: object) -> Binding:
    """An earlier version's binding: its name, kind and system *name* (empty: none), as the
    history row keeps them (a revert links the system of that name again)."""
    if system is None:
        system = ""
    if not (isinstance(name, str) and isinstance(kind, str) and isinstance(system, str)):
        raise IntegrityError(_TAMPERED)
    return ("credential-version", name, kind, system)


def binding_of(table: str, meta: tuple[Any, ...]) -> Binding:
    """The binding of a row of ``table`` from its clear columns as :meth:`Store.sealed_rows`
    returns them (``meta``)."""
    if table in ("credentials", "credential_trash"):
        return credential_binding(*meta)
    return system_binding(*meta)


def _bind(table: str, field: str, record: Binding) -> Binding:
    """The binding a field's envelope carries: the record's for the anchor, none otherwise."""
    if field != ANCHOR.get(table):
        return ()
    if not record:  # pragma: no cover - internal contract: an anchor is never unbound
        raise ValueError(f"{table}.{field} is an anchor: its record binding is required")
    return record


def _legacy_anchor(
    s: Session, eng: Engagement, blob: bytes, since: int | bool | None = False
) -> None:
    """An anchor in format 0x01: written before binding (an upgraded vault), so it opens
    with its place alone and its record's clear columns are unchecked, as before.

    This code never writes one, so under a key version made by this code none can exist
    (making one takes the engagement key): after an engagement's first rotation here every
    anchor is bound. ``record_binding`` remembers that rotation; an unbound anchor under
    that key version or later is refused. The row is a hint, not the protection (an
    insider may delete it; there is still no unbound envelope under the new key to use).
    """
    if since is False:  # not looked up by the caller (a rotation looks it up once)
        since = s.store.bound_since(eng.id)
    if since is not None and envelope.key_version_of(blob) >= since:
        raise IntegrityError(
            f"engagement {eng.name!r}: a record sealed without its binding where every "
            "record is bound: tampered with"
        )


def version_place(
    s: Session, eng: Engagement, uid: bytes, field: str, version: int, record: Binding = ()
) -> envelope.Place:
    """An earlier version's place: its own table, the credential's uid, ``field/vN``.

    So a version's envelope opens only as that version of that credential: copied onto the
    live row, another version or another credential it fails, like any moved envelope.
    The ``secret`` of a version is its anchor (``record``: :func:`version_binding`).
    """
    return envelope.Place(
        s.vault_id, eng.uid, VERSIONS, uid, f"{field}/v{version}", _bind(VERSIONS, field, record)
    )


def seal_version(
    s: Session,
    eng: Engagement,
    key: bytes,
    uid: bytes,
    field: str,
    version: int,
    value: bytes | None,
    record: Binding = (),
) -> bytes | None:
    if value is None:
        return None
    return envelope.seal(
        version_place(s, eng, uid, field, version, record), value, key, eng.key_version
    )


def open_version(
    s: Session,
    eng: Engagement,
    key: bytes,
    uid: bytes,
    field: str,
    version: int,
    blob: bytes | None,
    record: Binding = (),
    since: int | bool | None = False,
) -> bytes | None:
    if blob is None:
        return None
    blob = bytes(blob)
    pl = version_place(s, eng, uid, field, version, record)
    if pl.binding and not envelope.is_bound(blob):
        _legacy_anchor(s, eng, blob, since)
    return envelope.open_(pl, blob, key)


def place(
    s: Session, eng: Engagement, table: str, uid: bytes, field: str, record: Binding = ()
) -> envelope.Place:
    """A live (or trashed: same place) row's field; ``record`` is the row's binding, which
    only the table's anchor field carries."""
    return envelope.Place(s.vault_id, eng.uid, table, uid, field, _bind(table, field, record))


def seal(
    s: Session,
    eng: Engagement,
    key: bytes,
    table: str,
    uid: bytes,
    field: str,
    value: bytes | None,
    record: Binding = (),
) -> bytes | None:
    if value is None:
        return None
    return envelope.seal(place(s, eng, table, uid, field, record), value, key, eng.key_version)


def open_(
    s: Session,
    eng: Engagement,
    key: bytes,
    table: str,
    uid: bytes,
    field: str,
    blob: bytes | None,
    record: Binding = (),
    since: int | bool | None = False,
) -> bytes | None:
    """Open one field's envelope; ``since``: :meth:`Store.bound_since` if the caller has it."""
    if blob is None:
        return None
    blob = bytes(blob)
    pl = place(s, eng, table, uid, field, record)
    if pl.binding and not envelope.is_bound(blob):
        _legacy_anchor(s, eng, blob, since)
    return envelope.open_(pl, blob, key)


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
    Anchors are sealed bound to their record's clear columns as they are now: a record
    written before binding is bound here (docs/format.md §4), so from ``version`` on
    every record of the engagement is (``record_binding``).
    """
    since = s.store.bound_since(eng.id)  # once, not per record written before binding
    # Live rows, then the trash (trashed rows keep their live places and bindings).
    for table, live in (
        *((t, t) for t in SEALED_FIELDS),
        ("credential_trash", "credentials"),
        ("system_trash", "systems"),
    ):
        fields = SEALED_FIELDS.get(table) or HISTORY_SEALED[table]
        redone: list[SealedRow] = []
        for row in s.store.sealed_rows(table, eng.id):
            record = binding_of(table, row.meta)
            blobs: list[bytes | None] = []
            for field, blob in zip(fields, row.blobs, strict=True):
                if blob is None:
                    blobs.append(None)
                    continue
                old = open_(s, eng, old_key, live, row.uid, field, blob, record, since)
                assert old is not None
                pl = place(s, eng, live, row.uid, field, record)
                blobs.append(envelope.seal(pl, old, new_key, version))
            redone.append(row._replace(blobs=tuple(blobs)))
        s.store.set_sealed_rows(table, redone)
    # Versions have their own places (version_place).
    redone = []
    for v in s.store.engagement_versions(eng.id):
        record = version_binding(v.name, v.kind, v.system)
        blobs = []
        for field in CRED_FIELDS:
            old = open_version(
                s,
                eng,
                old_key,
                v.credential_uid,
                field,
                v.version,
                v.envelope(field),
                record,
                since,
            )
            if old is None:
                blobs.append(None)
                continue
            pl = version_place(s, eng, v.credential_uid, field, v.version, record)
            blobs.append(envelope.seal(pl, old, new_key, version))
        redone.append(SealedRow(v.id, v.credential_uid, tuple(blobs)))
    s.store.set_sealed_rows(VERSIONS, redone)
    s.store.set_bound_since(eng.id, version)
