"""Client-level requests: a full export of everything held for one client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from credvault import validate
from credvault.errors import NotFound

if TYPE_CHECKING:
    from credvault.vault import Vault


def export_client(vault: Vault, client: str) -> dict[str, object]:
    """Every engagement, system and credential (secrets included) of ``client``.

    Needs a reading role on each of the client's live engagements; audited per engagement.
    """
    validate.name(client, "client name")
    engs = vault.engagements.list(client)
    if not engs:
        raise NotFound("client", client)
    out: list[dict[str, object]] = []
    for eng in engs:
        entry: dict[str, object] = eng.to_json()
        if eng.state == "purged":
            entry["systems"], entry["credentials"] = [], []
            out.append(entry)
            continue
        entry["systems"] = [s.to_json() for s in vault.systems.export_engagement(eng.name)]
        entry["credentials"] = [c.to_json() for c in vault.credentials.export_engagement(eng)]
        vault._s.log_export(eng.name, len(entry["credentials"]))  # type: ignore[arg-type]
        out.append(entry)
    return {
        "format": "credvault-client-export/1",
        "client": client,
        "vault_id": vault.vault_id,
        "engagements": out,
    }
