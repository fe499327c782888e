"""What a credential read returns, on either backend: :class:`Credential` (a decrypted
credential), :class:`CredentialInfo` (a listing's line), :class:`VersionInfo`,
:class:`TrashInfo`, :class:`OtpCode` and :class:`FindHits`.

Apart from :mod:`credvault.credentials` (the SQLCipher vault's reads and writes, which
re-exports them) so that a PostgreSQL team vault (:mod:`credvault.team`) returns the same
types without loading the SQLCipher store: a team vault's ``credvault get`` has a start-up
target (issue 14).
"""

from __future__ import annotations

import base64
from typing import NamedTuple

from credvault.secret import Secret


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
