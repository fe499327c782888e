"""AES-256-GCM envelopes: one fresh data key per value, wrapped under the engagement key.

Byte layout (version 1)::

    0x01 ‖ key_version (u32 BE) ‖ wrapped DEK (12 nonce ‖ 32 key ‖ 16 tag) ‖ 12 nonce ‖ ct ‖ 16 tag

Both AEADs take the value's :class:`Place` as associated data, so a ciphertext copied to
another row, field, engagement, vault or key version fails to decrypt instead of returning the
wrong secret.
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


class Place(NamedTuple):
    """Where a value lives; its encoding is the associated data of the envelope."""

    vault_id: bytes
    engagement_id: bytes
    table: str
    record_id: bytes
    field: str

    def aad(self, label: bytes, key_version: int) -> bytes:
        if not (self.vault_id and self.engagement_id and self.record_id and self.field):
            raise ValueError("empty identifier in envelope place")  # never encrypt unbound
        return labels.encode(
            label,
            self.vault_id,
            self.engagement_id,
            self.table,
            self.record_id,
            self.field,
            key_version,
        )


def seal(place: Place, plaintext: bytes, key: bytes, key_version: int) -> bytes:
    """Encrypt ``plaintext`` for ``place`` under a fresh data key wrapped by ``key``."""
    return _seal_from_parts(place, plaintext, key, key_version, KeyBytes(os.urandom(KEY_LEN)))


def _seal_from_parts(
    place: Place, plaintext: bytes, key: bytes, key_version: int, dek: bytes
) -> bytes:
    wrapped = aead_encrypt(key, dek, place.aad(labels.ENVELOPE_WRAP, key_version))
    body = aead_encrypt(dek, plaintext, place.aad(labels.ENVELOPE_DATA, key_version))
    return bytes([labels.ENVELOPE_VERSION]) + key_version.to_bytes(4, "big") + wrapped + body


def key_version_of(blob: bytes) -> int:
    """The engagement-key version an envelope was sealed under (selects the key)."""
    if len(blob) < MIN_LEN or blob[0] != labels.ENVELOPE_VERSION:
        raise IntegrityError("envelope malformed or of an unknown version")
    return int.from_bytes(blob[1:_HEADER], "big")


def open_(place: Place, blob: bytes, key: bytes) -> bytes:
    """Decrypt an envelope at ``place``; any mismatch is :class:`IntegrityError`."""
    version = key_version_of(blob)
    dek = KeyBytes(
        aead_decrypt(
            key, blob[_HEADER : _HEADER + _WRAPPED], place.aad(labels.ENVELOPE_WRAP, version)
        )
    )
    body = blob[_HEADER + _WRAPPED :]
    try:
        return AESGCM(dek).decrypt(
            body[:NONCE_LEN], body[NONCE_LEN:], place.aad(labels.ENVELOPE_DATA, version)
        )
    except InvalidTag:
        raise IntegrityError("envelope authentication failed") from None
