"""The records credvault passes around, and the one place timestamps are written and read.

No I/O and no SQL: :mod:`credvault.store` decodes its rows into these records next to its
column lists, and every other module reads fields by name. NamedTuples rather than
dataclasses: they cost nothing to import on the ``credvault get`` path.

Three timestamp formats exist, each with one writer and one reader here: stored timestamps
(:func:`iso`, microseconds, sorts chronologically as text), backup file names
(:func:`backup_stamp`) and keyring expiries (:func:`expiry_stamp`, whole seconds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

_ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
_BACKUP = "%Y%m%dT%H%M%SZ"
_EXPIRY = "%Y-%m-%dT%H:%M:%SZ"

RECOVERY = "@recovery"  # the grant holder that stands for the offline recovery key


# -- time ----------------------------------------------------------------------------------
def iso(dt: datetime) -> str:
    """Timestamps are stored as ISO-8601 UTC text, which sorts chronologically."""
    return dt.strftime(_ISO)


def parse_iso(text: str) -> datetime:
    """The inverse of :func:`iso`."""
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
    """One row's envelopes, in :data:`SEALED_FIELDS` order (re-encryption)."""

    id: int
    uid: bytes
    blobs: tuple[bytes | None, ...]


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


class CredentialUpdate(NamedTuple):
    """A credential replaced in place: ``None`` keeps the stored value."""

    updated_at: str
    secret_env: bytes
    username_env: bytes | None = None
    url_env: bytes | None = None
    notes_env: bytes | None = None
    system_id: int | None = None
    kind: str | None = None


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


# -- results of vault-level calls (each ``to_json()`` is what ``--json`` prints) -----------
class VaultInfo(NamedTuple):
    """``vault.info()``: facts about the vault and its settings."""

    path: str
    vault_id: str
    format: int
    public_key: str
    created_at: str | None
    members: int
    key_generation: int
    settings: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class PurgePlan(NamedTuple):
    """An engagement whose purge is due (``purge --dry-run``) or was just done."""

    engagement: str
    client: str
    due: str
    reason: str  # "grace" or "hold"

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class ScheduledPurge(NamedTuple):
    """A closed engagement and when (and why) it will be purged."""

    engagement: str
    purge_due: str | None
    why: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class VaultStatus(NamedTuple):
    """``vault.status()``: who you are and what purges are due or scheduled."""

    member: str
    admin: bool
    vault: str
    vault_id: str
    due_now: list[PurgePlan]
    scheduled: list[ScheduledPurge]

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        d["due_now"] = [p.to_json() for p in self.due_now]
        d["scheduled"] = [x.to_json() for x in self.scheduled]
        return d


class EngagementView(NamedTuple):
    """``engagement show``: the public record, the purge in words, your role, the members."""

    name: str
    client: str
    state: str
    key_fp: str
    require_reason: bool
    grace_days: int | None
    created_at: str
    created_by: str
    lead: str
    closed_at: str | None
    purge_due: str | None
    hold_until: str | None
    hold_reason: str | None
    hold_by: str | None
    purged_at: str | None
    purge: str
    your_role: str | None
    members: list[GrantInfo]

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        d["members"] = [g.to_json() for g in self.members]
        return d


class ReceiptDestroyed(NamedTuple):
    """What a purge destroyed, as its receipt states it."""

    credentials: int
    systems: int
    key_copies: int
    key_version: int
    key_fingerprints: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        d["key_fingerprints"] = list(self.key_fingerprints)
        return d


class ReceiptHold(NamedTuple):
    """The retention hold a purged engagement had, if any."""

    until: str
    reason: str | None
    by: str | None

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Receipt(NamedTuple):
    """A signed purge receipt (``shred``, ``receipt``). ``to_json()`` is the signed document,
    byte for byte what the vault stored; check it with :func:`credvault.verify_receipt`."""

    format: str
    vault_id: str
    engagement: str
    client: str
    created_at: str
    closed_at: str | None
    purged_at: str
    reason: str
    purged_by: str
    destroyed: ReceiptDestroyed
    hold: ReceiptHold | None
    audit_position: int
    signature: str
    public_key: str

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        d["destroyed"] = self.destroyed.to_json()
        d["hold"] = None if self.hold is None else self.hold.to_json()
        return d

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Receipt:
        """The record of a receipt document (raises KeyError/TypeError/ValueError if it is
        not one)."""
        if set(data) != set(cls._fields):
            raise ValueError("not a purge receipt")
        destroyed = data["destroyed"]
        hold = data["hold"]
        if not isinstance(destroyed, dict) or not (hold is None or isinstance(hold, dict)):
            raise TypeError("not a purge receipt")
        fields = {**data}
        fields["destroyed"] = ReceiptDestroyed(
            **{**destroyed, "key_fingerprints": tuple(destroyed["key_fingerprints"])}
        )
        fields["hold"] = None if hold is None else ReceiptHold(**hold)
        return cls(**fields)  # type: ignore[arg-type]
