"""Client-level requests: what is held for one client, its full export, and its shred."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from credvault import validate
from credvault.errors import NotFound

if TYPE_CHECKING:
    from credvault.credentials import Credentials
    from credvault.engagements import Engagements
    from credvault.purge import Purger
    from credvault.session import Session
    from credvault.systems import Systems


class Clients:
    """Requests about everything held for one client (``vault.clients``)."""

    def __init__(
        self,
        s: Session,
        engagements: Engagements,
        credentials: Credentials,
        systems: Systems,
        purger: Purger,
    ) -> None:
        self.s = s
        self.e = engagements
        self.credentials = credentials
        self.systems = systems
        self.purger = purger

    def engagements(self, client: str) -> list[str]:
        """Names of the client's engagements not yet purged (what a shred would destroy)."""
        validate.name(client, "client name")
        names = [e.name for e in self.e.list(client) if e.state != "purged"]
        if not names:
            raise NotFound("client", client, f"client {client!r} has nothing left to shred")
        return names

    def shred(self, client: str) -> list[str]:
        """The client's deletion request: shred every engagement, or none.

        Permission is checked on every engagement before the first is destroyed, so a member
        entitled to only some of them destroys nothing.
        """
        names = self.engagements(client)
        for name in names:
            eng = self.e.get(name)
            self.s.check("engagement.shred", self.e.role_of(eng), eng.name)
        for name in names:
            self.purger.shred(name)
        return names

    def export_bytes(self, client: str, *, reason: str | None = None) -> bytes:
        """:meth:`export` as the bytes of the export file, whose SHA-256 the audit trail and
        any later purge receipt name."""
        return export_bytes(self.export(client, reason=reason))

    def export(self, client: str, *, reason: str | None = None) -> dict[str, object]:
        """Every engagement, system and credential (secrets included) of ``client``.

        Needs a reading role on each of the client's live engagements (and ``reason`` where
        an engagement requires one); audited per engagement. A client whose engagements are
        all purged is shown to admins only, and that is audited too.
        """
        s = self.s
        validate.name(client, "client name")
        reason = validate.reason(reason)
        engs = self.e.list(client)
        if not engs:
            raise NotFound("client", client)
        live = [eng for eng in engs if eng.state != "purged"]
        for eng in live:  # every permission first (denials audited), so nothing half-exported
            s.require_reason(eng, "client.export", None, reason)
            self.e.key(eng, "client.export")
        if not live:
            if not s.is_admin:
                raise s.deny("export", None, client, "admin only")
            with s.store.write():
                s.log("export", None, client, "ok", f"{len(engs)} purged engagements (tombstones)")
        out: list[dict[str, object]] = []
        for eng in engs:
            entry: dict[str, object] = eng.to_json()
            entry["systems"], entry["credentials"] = [], []
            entry["earlier_versions"], entry["trash"] = [], []
            if eng.state != "purged":
                systems = self.systems.export_engagement(eng.name)
                creds = self.credentials.export_engagement(eng)
                entry["systems"] = [x.to_json() for x in systems]
                entry["credentials"] = [c.to_json() for c in creds]
                entry.update(self.credentials.export_history(eng))
            out.append(entry)
        doc: dict[str, object] = {
            "format": "credvault-client-export/1",
            "client": client,
            "vault_id": s.vault_id.hex(),
            "engagements": out,
        }
        # The digest of the file as written goes on the record, and later into the purge
        # receipt: "what you received" tied to "what we destroyed".
        digest = hashlib.sha256(export_bytes(doc)).hexdigest()
        for eng in live:  # fail closed: the entries commit before anything is returned
            s.log_export(
                eng.name, len(s.store.credential_names(eng.id)), digest=digest, reason=reason
            )
        return doc


def export_bytes(doc: dict[str, object]) -> bytes:
    """The export file's exact bytes (its SHA-256 is what the trail and receipts name)."""
    return (json.dumps(doc, indent=1) + "\n").encode()
