"""``credvault client export`` on a PostgreSQL team vault (issue 14): everything held for a
client, secrets included, as the SQLCipher export's JSON (``credvault-client-export/1``).

Every secret comes through the same two-phase audited read as ``get`` (a committed
``get`` audit row per credential, with the reason, before its envelope leaves the server),
and is opened here; so do the engagement's systems, its credentials' earlier versions and
its trash (:func:`credvault.team_records.export_records`: a committed audit row per
record, under the action and detail the same read has alone), so the file holds what
SQLCipher's holds for the same data. Every permission is checked first, so a member without a reading role
on one of the client's engagements exports nothing (the server audits the denial). The
export file's SHA-256 is then recorded per engagement (``export``, committed before the
bytes are returned: fail closed), and a later purge receipt lists it under
``client_exports``, as on SQLCipher. A purged engagement of the client is in it as on
SQLCipher, a tombstone (its public fields, empty lists): every one for an admin, those a
member held a grant in for them (row-level security hides the rest); a client whose
engagements are all purged is exported to admins only, and that is audited.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol, cast

from credvault import validate
from credvault.clients import export_bytes
from credvault.errors import AccessDenied

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.results import Receipt
    from credvault.team_handle import TeamHandle
    from credvault.team_records import Team as RecordsTeam


class Shredder(Protocol):
    """``engagement shred`` (:class:`credvault.team_lifecycle.TeamPurger`), given by
    ``team.py``."""

    def shred(self, name: str) -> Receipt: ...


class TeamClients:
    """``vault.clients`` on a team vault: the export and ``client shred``."""

    def __init__(self, t: TeamHandle, purger: Shredder | None = None) -> None:
        self.t = t
        self.purger = purger

    def engagements(self, client: str) -> list[str]:
        """What ``client shred`` destroys: every engagement of the client not purged yet,
        checked by the server first (all or none, :mod:`credvault.team_engagements`)."""
        from credvault.team_engagements import client_engagements

        return client_engagements(self.t, client)

    def shred(self, client: str) -> list[str]:
        """The client's deletion request: every engagement shredded, each with its receipt
        signed here (as ``engagement shred``), once the server has allowed them all."""
        if self.purger is None:
            raise AssertionError("TeamClients.shred needs the team's purger")
        names = self.engagements(client)
        for name in names:
            self.purger.shred(name)
        return names

    def export_bytes(self, client: str, *, reason: str | None = None) -> bytes:
        return export_bytes(self.export(client, reason=reason))

    def export(self, client: str, *, reason: str | None = None) -> dict[str, object]:
        from credvault.postgres import lifecycle_store as ls
        from credvault.team_records import export_records

        t = self.t
        validate.name(client, "client name")
        why = validate.reason(reason)
        names = [
            e.name for e in t.store.engagements() if e.client == client and e.state != "purged"
        ]
        tombs: list[Engagement] | None = []
        if not names:  # only purged ones: tombstones, for admins (audited), as on SQLCipher
            tombs = ls.export_tombstones(t.store, client, alone=True)
            if tombs is None:
                raise AccessDenied(t.member, "export", None, "admin only")
        if not names and not tombs:  # absent or hidden (row-level security): the same to a member
            raise AccessDenied(
                t.member, "export", None, f"no engagement of {client!r} you hold a role in"
            )
        engs = []
        for name in names:  # every permission first (denials audited): nothing half-exported
            outcome = ls.export_check(t.store, name, why or "")
            if outcome.startswith("denied: "):
                raise AccessDenied(t.member, "export", name, outcome.removeprefix("denied: "))
            got = ls.lifecycle(t.store, name)
            if got is None:
                raise AccessDenied(t.member, "export", name, "no grant")
            engs.append(got.engagement)
        if names:  # beside live ones: the purged ones' tombstones, not audited on their own
            tombs = ls.export_tombstones(t.store, client, alone=False) or []
        entries: dict[str, dict[str, object]] = {}
        counts = {}
        for eng in engs:
            entry: dict[str, object] = eng.to_json()
            # as SQLCipher's export: by name, the linked system's name, not its address
            held = sorted(
                ((row[1], row[5]) for row in t.store.credentials(eng.name)),
                key=lambda r: r[0].encode(),
            )
            creds = [
                t.credentials.get(f"{eng.name}/{name}", reason=why)
                ._replace(system=linked, address=None, port=None)
                .to_json()
                for name, linked in held
            ]
            counts[eng.name] = len(creds)
            # the open Team is both this module's handle and team_records' (Protocols)
            rest = export_records(cast("RecordsTeam", t), eng.name, why or "")
            entry["systems"], entry["credentials"] = rest["systems"], creds
            entry["earlier_versions"], entry["trash"] = rest["earlier_versions"], rest["trash"]
            entries[eng.name] = entry
        for eng in tombs or ():  # a purged engagement: its public fields, empty lists
            entry = eng.to_json()
            entry["systems"], entry["credentials"] = [], []
            entry["earlier_versions"], entry["trash"] = [], []
            entries[eng.name] = entry
        out = [entries[n] for n in sorted(entries)]  # by name, as SQLCipher's (binary) order
        doc: dict[str, object] = {
            "format": "credvault-client-export/1",
            "client": client,
            "vault_id": t.vault_id.hex(),
            "engagements": out,
        }
        digest = hashlib.sha256(export_bytes(doc)).hexdigest()
        for eng in engs:  # fail closed: committed before anything is returned
            ls.log_export(t.store, eng.name, counts[eng.name], digest, why or "")
        return doc
