"""The records credvault passes around, and the one place timestamps are written and read.

No I/O and no SQL: :mod:`credvault.store` decodes its rows into these records next to its
column lists, and every other module reads fields by name. What a credential read returns
(:class:`Credential`, :class:`CredentialInfo`, …) is here too, shared by both backends. NamedTuples rather than
dataclasses: they cost nothing to import on the ``credvault get`` path.

Three timestamp formats exist, each with one writer and one reader here: stored timestamps
(:func:`iso`, microseconds, sorts chronologically as text), backup file names
(:func:`backup_stamp`) and keyring expiries (:func:`expiry_stamp`, whole seconds).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from credvault.secret import Secret

_ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
_BACKUP = "%Y%m%dT%H%M%SZ"
_EXPIRY = "%Y-%m-%dT%H:%M:%SZ"
# What :func:`iso` writes, read without ``strptime``: its first call in a process imports
# ``_strptime`` and builds its locale tables (about 2 ms of CPU in a whole-process
# ``credvault get``, 8 ms on its own). Anything else still goes to ``strptime``, which
# decides as before.
_ISO_TEXT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z"
)

RECOVERY = "@recovery"  # the grant holder that stands for the offline recovery key


# -- time ----------------------------------------------------------------------------------
def iso(dt: datetime) -> str:
    """Timestamps are stored as ISO-8601 UTC text, which sorts chronologically."""
    return dt.strftime(_ISO)


def parse_iso(text: str) -> datetime:
    """The inverse of :func:`iso`."""
    m = _ISO_TEXT.fullmatch(text) if text.__class__ is str else None  # else: as before
    if m is not None:
        y, mo, d, h, mi, sec, us = (int(g) for g in m.groups())
        try:
            return datetime(y, mo, d, h, mi, sec, us, tzinfo=UTC)
        except ValueError:
            pass  # out of range: strptime raises its own error, as before
    return datetime.strptime(text, _ISO).replace(tzinfo=UTC)


def backup_stamp(dt: datetime) -> str:
    """The time part of a backup file name (one backup per second)."""
    return dt.strftime(_BACKUP)


def parse_backup_stamp(text: str) -> datetime:
    return datetime.strptime(text, _BACKUP).replace(tzinfo=UTC)


def expiry_stamp(dt: datetime) -> str:
    """A keyring cache expiry (whole seconds; compared as text, like :func:`iso`)."""
    return dt.strftime(_EXPIRY)


# -- records -------------------------------------------------------------------------------
class Engagement(NamedTuple):
    """An engagement's public record (what every role may list)."""

    id: int
    uid: bytes
    name: str
    client: str
    state: str
    key_version: int
    key_fp: str
    needs_rotation: bool
    require_reason: bool
    grace_days: int | None
    created_at: str
    created_by: str
    lead: str
    creation_sig: bytes
    closed_at: str | None
    purge_due: str | None
    hold_until: str | None
    hold_reason: str | None
    hold_by: str | None
    purged_at: str | None
    receipt: str | None

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        for k in ("id", "uid", "creation_sig", "receipt", "key_version", "needs_rotation"):
            d.pop(k)
        return d


class GrantInfo(NamedTuple):
    """A member's role on an engagement, as ``engagement members`` lists it."""

    member: str
    role: str
    granted_by: str
    granted_at: str
    expires_at: str | None
    has_key: bool

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Grant(NamedTuple):
    """A grant row: the signed role certificate and, for reading roles, the sealed key copy."""

    member: str
    role: str
    granted_by: str
    granted_at: str
    expires_at: str | None
    role_sig: bytes
    key_version: int | None
    sealed: bytes | None
    sealed_by: str | None
    copy_sig: bytes | None
    revoked_at: str | None

    def live(self, now: str) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


# Which columns hold envelopes sealed under the engagement key: table -> fields, each stored in
# the column ``<field>_env``. Re-encryption on rotation walks exactly this (a test checks it
# against schema.sql), so a new envelope column cannot be forgotten there.
SEALED_FIELDS: dict[str, tuple[str, ...]] = {
    "credentials": ("secret", "username", "url", "notes"),
    "systems": ("address", "details"),
}


class SealedRow(NamedTuple):
    """One row's envelopes, in :data:`SEALED_FIELDS` order (re-encryption), and the clear
    columns its anchor envelope is bound to (``meta``: see :func:`credvault.items.binding_of`)."""

    id: int
    uid: bytes
    blobs: tuple[bytes | None, ...]
    meta: tuple[Any, ...] = ()


class CredentialRow(NamedTuple):
    """A stored credential: names and dates in clear, values as envelopes."""

    id: int
    uid: bytes
    name: str
    kind: str
    system: str | None  # the linked system's name
    secret_env: bytes
    username_env: bytes | None
    url_env: bytes | None
    notes_env: bytes | None
    created_at: str
    updated_at: str
    system_id: int | None
    version: int = 1  # format 2: the live version's number, writer and what it changed
    updated_by: str | None = None
    changed: str = "created"
    system_uid: bytes | None = None  # the linked system's uid (bound in the secret's AAD)

    def envelope(self, field: str) -> bytes | None:
        """The envelope of one of ``SEALED_FIELDS["credentials"]``."""
        blob: bytes | None = getattr(self, f"{field}_env")
        return blob


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
    updated_by: str | None = None


class CredentialUpdate(NamedTuple):
    """A credential replaced in place: ``None`` keeps the stored value."""

    updated_at: str
    secret_env: bytes
    username_env: bytes | None = None
    url_env: bytes | None = None
    notes_env: bytes | None = None
    system_id: int | None = None
    kind: str | None = None


# Format 2 (store.MIGRATIONS[2]): the history and the trash hold envelopes too, re-encrypted
# on rotation with the rest (items.reencrypt_engagement). Their places differ from the live
# rows': a version is sealed at ("credential_versions", credential uid, "FIELD/vN"); a
# trashed row keeps the place of the live row it was. Table -> fields.
HISTORY_SEALED: dict[str, tuple[str, ...]] = {
    "credential_versions": SEALED_FIELDS["credentials"],
    "credential_trash": SEALED_FIELDS["credentials"],
    "system_trash": SEALED_FIELDS["systems"],
}


class VersionRow(NamedTuple):
    """An earlier version of a credential (metadata in clear, values as envelopes)."""

    id: int
    credential_uid: bytes
    version: int
    name: str
    kind: str
    system: str | None
    secret_env: bytes
    username_env: bytes | None
    url_env: bytes | None
    notes_env: bytes | None
    created_at: str
    created_by: str | None
    changed: str

    def envelope(self, field: str) -> bytes | None:
        blob: bytes | None = getattr(self, f"{field}_env")
        return blob


class NewVersion(NamedTuple):
    """A version to keep (envelopes already sealed at the version's place)."""

    credential_uid: bytes
    version: int
    name: str
    kind: str
    system: str | None
    secret_env: bytes
    username_env: bytes | None
    url_env: bytes | None
    notes_env: bytes | None
    created_at: str
    created_by: str | None
    changed: str


class TrashEntry(NamedTuple):
    """One removed credential or system in an engagement's trash."""

    type: str  # credential or system
    id: int
    name: str
    uid: bytes
    deleted_at: str
    deleted_by: str
    expires_at: str
    linked: str  # systems: JSON list of the hex uids of credentials that linked to it


class SystemRow(NamedTuple):
    """A stored system: port and protocol in clear, address and details as envelopes."""

    id: int
    uid: bytes
    name: str
    port: int | None
    protocol: str | None
    address_env: bytes
    details_env: bytes | None
    created_at: str
    updated_at: str


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


class AuditRow(NamedTuple):
    """One stored audit entry with its chain MAC."""

    seq: int
    ts: str
    member: str
    action: str
    engagement: str | None
    item: str | None
    outcome: str
    detail: str
    mac: bytes


# -- what a credential read returns, on either backend ------------------------------------
# Here rather than in credvault.credentials (the SQLCipher vault's reads and writes, which
# re-exports them) so that a PostgreSQL team vault (credvault.team) returns the same types
# without loading the SQLCipher store: a team vault's `credvault get` has a start-up target
# (issue 14).


class CredentialInfo(NamedTuple):
    """What listing shows: names, kinds and dates, never values."""

    engagement: str
    name: str
    kind: str
    system: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Credential(NamedTuple):
    """A decrypted credential; ``secret`` is redacted in ``repr``."""

    engagement: str
    name: str
    kind: str
    secret: Secret
    username: str | None
    system: str | None
    address: str | None
    port: int | None
    url: str | None
    notes: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, object]:
        """Everything, the secret included (for ``get --json`` and client export)."""
        d: dict[str, object] = self._asdict()
        raw = self.secret.reveal()
        try:
            d["secret"] = raw.decode("utf-8")
        except UnicodeDecodeError:  # binary secrets travel as base64, never mangled
            del d["secret"]
            d["secret_base64"] = base64.b64encode(raw).decode()
        return d


class OtpCode(NamedTuple):
    """A one-time code and how many seconds it stays valid."""

    code: str
    seconds_left: int
    period: int


class VersionInfo(NamedTuple):
    """One version of a credential in its history: metadata only, never a value."""

    engagement: str
    name: str
    version: int
    kind: str
    system: str | None
    by: str | None  # None: written before credvault kept history (format 1)
    at: str
    changed: str
    current: bool

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class TrashInfo(NamedTuple):
    engagement: str
    type: str  # credential or system
    name: str
    deleted_at: str
    deleted_by: str
    expires_at: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class FindHit(NamedTuple):
    """A search result: where, and which field matched (never the matching value)."""

    engagement: str
    type: str  # credential or system
    name: str
    field: str  # name, username, url, notes, address or details

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class FindHits(list[FindHit]):
    """The hits of :meth:`Credentials.find`, and the engagements whose fields were not
    searched because they require ``--reason`` and none was given (``skipped``): a search
    that quietly covered less than asked would mislead."""

    skipped: tuple[str, ...] = ()
