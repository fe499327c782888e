"""Who may list, verify and checkpoint the audit trail (``vault.audit``).

The chain itself (MACs, verification, pruning) is :mod:`credvault.audit`; this module
decides what each member may read of it, and audits the reading.
"""

from __future__ import annotations

import contextlib

from credvault import audit as audit_mod
from credvault import validate
from credvault.access import permits
from credvault.audit import AuditEntry, Checkpoint
from credvault.engagements import Engagements
from credvault.errors import IntegrityError, InvalidInput
from credvault.model import iso
from credvault.session import Session


def clean_filters(
    member: str | None, action: str | None, since: str | None, limit: int | None
) -> str | None:
    """``audit``'s filters checked (InvalidInput, exit 2) for either backend; returns
    ``since`` as the vault's timestamp form (a bare date: from the start of that day)."""
    if member is not None:
        validate.name(member, "member name")
    if action is not None and not validate.is_action(action):
        raise InvalidInput("invalid --action: expected an action name such as get or put")
    since_iso = None
    if since is not None:
        start = validate.when(since, "since date")
        if len(since) == 10:  # a bare date means from the start of that day
            start = start.replace(hour=0, minute=0, second=0)
        since_iso = iso(start)
    if limit is not None and limit < 1:
        raise InvalidInput("--limit must be at least 1")
    return since_iso


class AuditTrail:
    """The audit trail as one member may see it."""

    def __init__(self, s: Session, engagements: Engagements) -> None:
        self.s = s
        self.e = engagements

    def entries(
        self,
        *,
        engagement: str | None = None,
        member: str | None = None,
        action: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries the member may read: admins all; leads and auditors their engagements."""
        s = self.s
        since_iso = clean_filters(member, action, since, limit)
        if engagement is not None:
            eng = self.e.get(engagement, allow_purged=True)
            s.check("audit.read", self.e.role_of(eng), eng.name)
            engs: list[str] | None = [eng.name]
            vault_wide = False
        elif permits("audit.read-all", None, admin=s.is_admin):
            engs, vault_wide = None, True
        else:
            engs = [
                e.name
                for e in self.e.list()
                if e.state != "purged" and permits("audit.read", self.e.role_of(e), admin=False)
            ]
            vault_wide = False
        rows = s.store.audit_query(
            engagements=engs,
            member=member,
            action=action,
            since=since_iso,
            limit=limit,
            include_vault_wide=vault_wide,
        )
        with s.store.write():
            s.log("audit-read", engagement, None, "ok", f"{len(rows)} entries")
        return audit_mod.entries(rows)

    def verify(self, checkpoint: str | None = None) -> int:
        """Check the whole chain (and, given one, that it extends ``checkpoint``)."""
        s = self.s
        s.require("audit.verify")
        cp = Checkpoint.parse(checkpoint) if checkpoint else None
        try:
            n = s.audit.verify(cp)
        except IntegrityError as e:
            with contextlib.suppress(Exception), s.store.write():
                s.log("audit-verify", None, None, "error", str(e)[:120])
            raise
        with s.store.write():
            s.log("audit-verify", None, None, "ok", f"{n} entries verified")
        return n

    def checkpoint(self) -> Checkpoint:
        """The chain head, to keep outside the vault."""
        s = self.s
        s.require("audit.checkpoint")
        with s.store.write():
            s.log("audit-checkpoint", None, None, "ok")
        return s.audit.head()
