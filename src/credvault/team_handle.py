"""What the team vault's parts loaded when used (lifecycle and purge, passphrase change,
client export) need of an open :class:`credvault.team.Team`.

A :class:`typing.Protocol`, so those modules depend on this one and not on ``team.py``,
which imports them: the layering test counts every import, lazy or for types only, and a
cycle would hide which module decides what.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from credvault import memberlog as ml
    from credvault.keyslots import MemberKeys
    from credvault.postgres.store import PgStore
    from credvault.team_log import Certs, LogWitness


class TeamHandle(Protocol):
    """An open team vault: its connection, the member's keys, the vault id."""

    store: PgStore
    keys: MemberKeys
    vault_id: bytes
    database: str  # where this machine keeps the member's files (slot, witness, ledger)
    credentials: Any  # credvault.team.TeamCredentials (its get is the audited read)

    @property
    def member(self) -> str: ...

    def forget_keys(self, engagement: str) -> None: ...


class CertifyingTeam(TeamHandle, Protocol):
    """What an admin's ``member certify`` (:func:`credvault.team_keys.certify`) reads
    besides: the certificates and list it extends, the witness keeping the list's head."""

    sign_pub: bytes

    @property
    def witness(self) -> LogWitness: ...

    def certs(self) -> Certs: ...

    def require_certified(self, action: str) -> None: ...

    def replay_all(self, uid: bytes, name: str, links: list[bytes]) -> ml.State: ...

    def trust(self, uid: bytes, creator: str | None = None) -> ml.Trust: ...


class CheckedTeam(TeamHandle, Protocol):
    """What ``credvault check`` (:mod:`credvault.team_check`) reads besides: the vault's
    address, the trust it verifies (certificates, logs, witness), the audit chain and the
    receipts."""

    path: str
    audit: Any  # credvault.team.TeamAudit (verify)

    @property
    def witness(self) -> LogWitness: ...

    @property
    def purger(self) -> Any: ...  # credvault.team_lifecycle.TeamPurger (receipt)

    def certs(self) -> Certs: ...

    def replay_all(self, uid: bytes, name: str, links: list[bytes]) -> ml.State: ...
