"""AES-256-GCM envelopes: one fresh data key per value, wrapped under the engagement key.

Byte layout::

    FORMAT ‖ key_version (u32 BE) ‖ wrapped DEK (12 nonce ‖ 32 key ‖ 16 tag) ‖ 12 nonce ‖ ct ‖ 16 tag

Both AEADs take the value's :class:`Place` as associated data, so a ciphertext copied to
another row, field, engagement, vault or key version fails to decrypt instead of returning the
wrong secret. ``FORMAT`` 0x01 binds the place only; 0x02 (a place with a ``binding``: the
record's name, kind, system link, port…, issue 11) binds the record's clear columns too, under
other labels: so the format byte itself is authenticated, and an envelope sealed bound does
not open as unbound (nor the reverse).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credvault.crypto import labels
from credvault.crypto.primitives import (
    KEY_LEN,
    NONCE_LEN,
    TAG_LEN,
    KeyBytes,
    aead_decrypt,
    aead_encrypt,
)
from credvault.errors import IntegrityError

_HEADER = 5
_WRAPPED = NONCE_LEN + KEY_LEN + TAG_LEN
MIN_LEN = _HEADER + _WRAPPED + NONCE_LEN + TAG_LEN


Binding = tuple[bytes | str | int, ...]

# format byte -> (wrap label, data label)
_LABELS = {
    labels.ENVELOPE_VERSION: (labels.ENVELOPE_WRAP, labels.ENVELOPE_DATA),
    labels.ENVELOPE_BOUND: (labels.ENVELOPE_WRAP_BOUND, labels.ENVELOPE_DATA_BOUND),
}


class Place(NamedTuple):
    """Where a value lives; its encoding is the associated data of the envelope.

    ``binding``: the clear columns of the record this value anchors (empty for a value
    bound to its place only). A place with a binding is sealed in format 0x02, whose AAD
    appends the binding's parts after the place's.
    """

    vault_id: bytes
    engagement_id: bytes
    table: str
    record_id: bytes
    field: str
    binding: Binding = ()

    def aad(self, label: bytes, key_version: int, *, bound: bool = False) -> bytes:
        if not (self.vault_id and self.engagement_id and self.record_id and self.field):
            raise ValueError("empty identifier in envelope place")  # never encrypt unbound
        parts = (self.vault_id, self.engagement_id, self.table, self.record_id, self.field)
        if bound:
            return labels.encode(label, *parts, key_version, *self.binding)
        return labels.encode(label, *parts, key_version)


def seal(place: Place, plaintext: bytes, key: bytes, key_version: int) -> bytes:
    """Encrypt ``plaintext`` for ``place`` under a fresh data key wrapped by ``key``
    (format 0x02 if the place has a binding, else 0x01)."""
    return _seal_from_parts(place, plaintext, key, key_version, KeyBytes(os.urandom(KEY_LEN)))


def _seal_from_parts(
    place: Place, plaintext: bytes, key: bytes, key_version: int, dek: bytes
) -> bytes:
    fmt = labels.ENVELOPE_BOUND if place.binding else labels.ENVELOPE_VERSION
    wrap_label, data_label = _LABELS[fmt]
    bound = fmt == labels.ENVELOPE_BOUND
    wrapped = aead_encrypt(key, dek, place.aad(wrap_label, key_version, bound=bound))
    body = aead_encrypt(dek, plaintext, place.aad(data_label, key_version, bound=bound))
    return bytes([fmt]) + key_version.to_bytes(4, "big") + wrapped + body


def key_version_of(blob: bytes) -> int:
    """The engagement-key version an envelope was sealed under (selects the key)."""
    if len(blob) < MIN_LEN or blob[0] not in _LABELS:
        raise IntegrityError("envelope malformed or of an unknown version")
    return int.from_bytes(blob[1:_HEADER], "big")


def is_bound(blob: bytes) -> bool:
    """Whether an envelope was sealed in format 0x02 (bound to its record's header).

    Only a hint until :func:`open_` succeeds: the byte is authenticated by the AAD choice."""
    return len(blob) > 0 and blob[0] == labels.ENVELOPE_BOUND


def open_(place: Place, blob: bytes, key: bytes) -> bytes:
    """Decrypt an envelope at ``place``; any mismatch is :class:`IntegrityError`.

    A format-0x01 envelope is opened with the place alone (records written before
    binding, and fields that are not a record's anchor): whether that is acceptable at a
    place with a binding is the caller's decision (:mod:`credvault.items`). A format-0x02
    envelope is opened with the binding, which must be there."""
    version = key_version_of(blob)
    fmt = blob[0]
    bound = fmt == labels.ENVELOPE_BOUND
    if bound and not place.binding:
        raise IntegrityError("record-bound envelope where none belongs")
    wrap_label, data_label = _LABELS[fmt]
    dek = KeyBytes(
        aead_decrypt(
            key,
            blob[_HEADER : _HEADER + _WRAPPED],
            place.aad(wrap_label, version, bound=bound),
        )
    )
    body = blob[_HEADER + _WRAPPED :]
    try:
        return AESGCM(dek).decrypt(
            body[:NONCE_LEN], body[NONCE_LEN:], place.aad(data_label, version, bound=bound)
        )
    except InvalidTag:
        raise IntegrityError("envelope authentication failed") from None
