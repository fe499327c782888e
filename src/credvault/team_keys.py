"""``info`` and ``receipt-keys`` on a PostgreSQL team vault (issue 14; docs/team.md,
"info and receipt keys").

``info`` answers in :class:`credvault.results.VaultInfo`'s shape, line for line as on
SQLCipher; where a line has no meaning on a team vault it says so in words, as ``status``
does for the keyring and the agent: a team vault has no database key, so no key
generation, and the server keeps its whole audit trail, so no audit retention.

Loaded when used: ``credvault get`` never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credvault.retention import SETTINGS

if TYPE_CHECKING:
    from credvault.postgres.store import PgStore
    from credvault.results import VaultInfo

UNUSED = "not used by a team vault"
# settings a team vault keeps in credvault.meta (the others: UNUSED)
TEAM_SETTINGS = {"purge_grace_days", "backup_retention_days", "trash_days"}


def info(store: PgStore, path: str, vault_id: bytes, public_key: str) -> VaultInfo:
    """``credvault info`` on a team vault (:meth:`credvault.Team.info`): ``path`` is the
    connection string you named, ``format`` the team schema version, ``public_key`` your
    own signing key (what signs your receipts, as ``info --public-key``), ``members`` the
    active ones."""
    from credvault.postgres.keys_store import vault_info
    from credvault.results import VaultInfo

    facts = vault_info(store)
    settings: dict[str, int | str] = {
        name: int(facts[key]) if key in TEAM_SETTINGS else UNUSED
        for name, (key, _) in SETTINGS.items()
    }
    created = facts.get("created_at")
    return VaultInfo(
        path=path,
        vault_id=vault_id.hex(),
        format=int(facts["schema"]),
        public_key=public_key,
        created_at=str(created) if created is not None else None,
        members=int(facts["members"]),
        key_generation=UNUSED,
        settings=settings,
    )
