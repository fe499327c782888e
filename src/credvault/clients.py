"""Client-level requests: a full export of everything held for one client."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from credvault import validate
from credvault.access import Action
from credvault.errors import NotFound

if TYPE_CHECKING:
    from credvault.vault import Vault


def client_engagements(vault: Vault, client: str) -> list[str]:
    """Names of the client's engagements not yet purged (what a shred would destroy)."""
    validate.name(client, "client name")
    names = [e.name for e in vault.engagements.list(client) if e.state != "purged"]
    if not names:
        raise NotFound("client", client, f"client {client!r} has nothing left to shred")
    return names


def shred_client(vault: Vault, client: str) -> list[str]:
    """The client's deletion request: shred every engagement, or none.

    Permission is checked on every engagement before the first is destroyed, so a member
    entitled to only some of them destroys nothing.
    """
    names = client_engagements(vault, client)
    e = vault.engagements
    for name in names:
        eng = e.get(name)
        vault._s.check(Action.LIFECYCLE, e.role_of(eng), "shred", eng.name)
    for name in names:
        vault.purger.shred(name)
    return names


def export_client(vault: Vault, client: str) -> dict[str, object]:
    """Every engagement, system and credential (secrets included) of ``client``.

    Needs a reading role on each of the client's live engagements; audited per engagement.
    """
    validate.name(client, "client name")
    engs = vault.engagements.list(client)
    if not engs:
        raise NotFound("client", client)
    live = [eng for eng in engs if eng.state != "purged"]
    for eng in live:  # every permission first (denials audited), so nothing half-exported
        vault.engagements.key(eng, "export", Action.READ)
    out: list[dict[str, object]] = []
    for eng in engs:
        entry: dict[str, object] = eng.to_json()
        entry["systems"], entry["credentials"] = [], []
        if eng.state != "purged":
            systems = vault.systems.export_engagement(eng.name)
            creds = vault.credentials.export_engagement(eng)
            entry["systems"] = [s.to_json() for s in systems]
            entry["credentials"] = [c.to_json() for c in creds]
        out.append(entry)
    doc: dict[str, object] = {
        "format": "credvault-client-export/1",
        "client": client,
        "vault_id": vault.vault_id,
        "engagements": out,
    }
    # The digest of the file as written goes on the record, and later into the purge
    # receipt: "what you received" tied to "what we destroyed".
    digest = hashlib.sha256(export_bytes(doc)).hexdigest()
    for eng in live:  # fail closed: the entries commit before anything is returned
        vault._s.log_export(eng.name, len(vault._s.store.credential_names(eng.id)), digest)
    return doc


def export_bytes(doc: dict[str, object]) -> bytes:
    """The export file's exact bytes (its SHA-256 is what the trail and receipts name)."""
    return (json.dumps(doc, indent=1) + "\n").encode()
