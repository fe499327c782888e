"""What the vault-level calls return: ``info``, ``status``, ``engagement show``, ``purge``,
``shred`` and ``receipt``. Each record's ``to_json()`` is the document the CLI's ``--json``
prints. Not on the ``credvault get`` path: ``import credvault`` loads this module only when
one of these names is first used.
"""

from __future__ import annotations

from typing import NamedTuple

from credvault.model import GrantInfo


class VaultInfo(NamedTuple):
    """``vault.info()``: facts about the vault and its settings."""

    path: str
    vault_id: str
    format: int
    public_key: str
    created_at: str | None
    members: int
    key_generation: int | str  # a team vault: "not used by a team vault"
    settings: dict[str, int | str]

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
    """What a purge destroyed, as its receipt states it. The history and trash counts are in
    receipts written by format 2 and later (``None`` in older ones, and then left out of
    :meth:`to_json`, which gives back the signed document as it was)."""

    credentials: int
    systems: int
    credential_versions: int | None
    trashed_credentials: int | None
    trashed_systems: int | None
    key_copies: int
    key_version: int
    key_fingerprints: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        d = {k: v for k, v in self._asdict().items() if v is not None or k not in _SINCE_2}
        d["key_fingerprints"] = list(self.key_fingerprints)
        return d


_SINCE_2 = frozenset({"credential_versions", "trashed_credentials", "trashed_systems"})
_V2 = frozenset({"destruction_complete_at", "client_exports", "key_id"})
_TEAM = frozenset({"backups_expire_at"})


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
    # format 2 (issue 12): signed over RFC 8785, naming its key; absent from format 1
    destruction_complete_at: str | None = None
    client_exports: tuple[dict[str, str], ...] | None = None
    key_id: str | None = None
    # a team vault's (docs/team.md, "Purge"): after this time no backup or WAL archive kept
    # within the stated retention can hold a sealed copy; absent from a SQLCipher receipt
    backups_expire_at: str | None = None

    def to_json(self) -> dict[str, object]:
        d = self._asdict()
        d["destroyed"] = self.destroyed.to_json()
        d["hold"] = None if self.hold is None else self.hold.to_json()
        if self.backups_expire_at is None:
            d.pop("backups_expire_at")
        if self.key_id is None:  # format 1: the document as it was signed
            for k in _V2:
                d.pop(k)
        else:
            d["client_exports"] = [dict(x) for x in self.client_exports or ()]
        return d

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Receipt:
        """The record of a receipt document (raises KeyError/TypeError/ValueError if it is
        not one)."""
        every = set(cls._fields)
        if set(data) not in (every, every - _TEAM, every - _V2 - _TEAM):
            raise ValueError("not a purge receipt")
        destroyed = data["destroyed"]
        hold = data["hold"]
        if not isinstance(destroyed, dict) or not (hold is None or isinstance(hold, dict)):
            raise TypeError("not a purge receipt")
        fields = {**data}
        if not set(destroyed) <= set(ReceiptDestroyed._fields):
            raise ValueError("not a purge receipt")
        fields["destroyed"] = ReceiptDestroyed(
            **{
                **dict.fromkeys(_SINCE_2),
                **destroyed,
                "key_fingerprints": tuple(destroyed["key_fingerprints"]),
            }
        )
        fields["hold"] = None if hold is None else ReceiptHold(**hold)
        exports = data.get("client_exports")
        if exports is not None:
            if not isinstance(exports, list):
                raise TypeError("not a purge receipt")
            fields["client_exports"] = tuple(dict(x) for x in exports)
        return cls(**fields)  # type: ignore[arg-type]
