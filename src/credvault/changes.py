"""Records of what a write stores: new rows, in-place updates, re-sealed envelopes.

Kept apart from :mod:`credvault.model` so that the read-only ``credvault get`` path does
not create these classes (each NamedTuple class costs a fraction of a millisecond at import).
"""

from __future__ import annotations

from typing import NamedTuple


class SealedRow(NamedTuple):
    """One row's envelopes, in :data:`SEALED_FIELDS` order (re-encryption)."""

    id: int
    uid: bytes
    blobs: tuple[bytes | None, ...]


class NewEngagement(NamedTuple):
    """An engagement to create (state ``active``, key version 1)."""

    uid: bytes
    name: str
    client: str
    key_fp: str
    require_reason: bool
    grace_days: int | None
    created_at: str
    created_by: str
    lead: str
    creation_sig: bytes


class NewCredential(NamedTuple):
    """A credential to insert (envelopes already sealed)."""

    uid: bytes
    name: str
    kind: str
    system_id: int | None
    secret_env: bytes
    username_env: bytes | None
    url_env: bytes | None
    notes_env: bytes | None
    created_at: str
    updated_at: str


class CredentialUpdate(NamedTuple):
    """A credential replaced in place: ``None`` keeps the stored value."""

    updated_at: str
    secret_env: bytes
    username_env: bytes | None = None
    url_env: bytes | None = None
    notes_env: bytes | None = None
    system_id: int | None = None
    kind: str | None = None


class NewSystem(NamedTuple):
    """A system to insert or replace (by engagement and name)."""

    uid: bytes
    name: str
    port: int | None
    protocol: str | None
    address_env: bytes
    details_env: bytes | None
    created_at: str
    updated_at: str
