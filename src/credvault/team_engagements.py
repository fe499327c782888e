"""An engagement's settings and members on a team vault (``engagement set``, ``engagement
members``, and the grace period ``engagement close`` takes from the signed log), loaded when
used.

The settings (``--require-reason``, the engagement's own grace period) are decided twice:
the server enforces the columns (a read without a reason is refused and audited there), and
the engagement's signed membership log carries them as ``set`` links (format.md §17) signed
by the admin or lead who chose them. Every client replays the log and refuses an engagement
whose column differs from it (:meth:`credvault.team.Team.view`, exit 6), so a DBA who flips
the column to weaken it is caught by the next member's command rather than honoured; a
member has no write on the column at all. An engagement without a log (carried over by
``migrate``) keeps an unsigned setting, as on SQLCipher.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from credvault import memberlog as ml
from credvault import validate
from credvault.errors import AccessDenied, IntegrityError
from credvault.model import iso

if TYPE_CHECKING:
    from credvault.audit import AuditEntry
    from credvault.keyslots import MemberKeys
    from credvault.model import Engagement
    from credvault.postgres.store import PgStore
    from credvault.team_log import LogWitness


class Connected(Protocol):
    """An open team vault's connection and member (what the server-decided calls need)."""

    store: PgStore

    @property
    def member(self) -> str: ...


class TeamLike(Protocol):
    """What these commands need of an open :class:`credvault.team.Team` (a Protocol, so
    this module does not import ``team.py``, which loads it)."""

    store: PgStore
    keys: MemberKeys

    @property
    def member(self) -> str: ...

    @property
    def witness(self) -> LogWitness: ...

    def trust(self, uid: bytes, creator: str | None = None) -> ml.Trust: ...

    def leads(self, state: ml.State) -> bool: ...

    def replay_all(self, uid: bytes, name: str, links: list[bytes]) -> ml.State: ...


def _signed_state(t: TeamLike, name: str) -> tuple[bytes, ml.State] | None:
    """The engagement's uid and verified log state as this member (a lead, or an admin
    with or without a role) can read it; None without a log or when the server shows none."""
    from credvault.postgres import lifecycle_store as ls

    life = ls.lifecycle(t.store, name)
    if life is None:
        return None
    links = t.store.log_links(name, -1)
    if not links:
        return None
    uid = life.engagement.uid
    return uid, t.replay_all(uid, name, links)


def set_options(t: TeamLike, name: str, require_reason: bool | None) -> Engagement:
    """A lead or an admin signs a ``set`` link here (the log's grace period kept); the
    server appends it with the column and audits ``engagement-set`` as SQLCipher does.
    Anyone else is refused by the server, on the record (nothing signed)."""
    from credvault.postgres import engagement_store as es
    from credvault.postgres import lifecycle_store as ls

    validate.name(name, "engagement name")
    got = _signed_state(t, name)
    if require_reason is None:  # nothing to change: the current setting, signed again
        require_reason = got[1].require_reason if got is not None else False
    link: bytes | None = None
    new: ml.State | None = None
    if got is not None and (t.leads(got[1]) or t.store.whoami()[1]):
        uid, state = got
        grace = ml.NO_GRACE if state.grace_days is None else state.grace_days
        link, new = ml.sign_link(
            state,
            t.trust(uid),
            ml.SET,
            (int(require_reason), grace),
            t.member,
            t.keys.sign_private,
            iso(datetime.now(UTC)),
        )
    outcome = es.set_settings(t.store, name, require_reason, link)
    if outcome.startswith("denied: "):
        raise AccessDenied(t.member, "change settings", name, outcome.removeprefix("denied: "))
    if outcome != "ok":
        raise IntegrityError(f"the team vault answered {outcome!r}")
    if got is not None and new is not None:
        t.witness.keep(got[0], new)
    life = ls.lifecycle(t.store, name)
    if life is None:
        raise AccessDenied(t.member, "change settings", name, "no grant")
    return life.engagement


def signed_grace(t: TeamLike, name: str) -> int | None:
    """The grace period the engagement's log signs (None: the vault's own, or no log, or
    none the caller may read: the server then refuses the close or uses its column). An
    admin without a role reads the log too (``engagement_log_links`` lets admins)."""
    got = _signed_state(t, name)
    return None if got is None else got[1].grace_days


def members_role(t: TeamLike, name: str) -> str | None:
    """``engagement members``: the server checks the caller (a role, or an admin) and
    audits ``engagement-members`` with the count of live grants (a denial as ``list
    members``, exit 4); returns the caller's role (None: an admin without one)."""
    from credvault.postgres import engagement_store as es

    validate.name(name, "engagement name")
    outcome = es.members_listed(t.store, name)
    if outcome.startswith("denied: "):
        raise AccessDenied(t.member, "list members", name, outcome.removeprefix("denied: "))
    return outcome.removeprefix("ok:") or None


def audit_entries(
    t: TeamLike,
    engagement: str | None,
    member: str | None,
    action: str | None,
    since: str | None,
    limit: int | None,
) -> list[AuditEntry]:
    """``audit``, its input checked as SQLCipher's :meth:`credvault.audit_trail.AuditTrail
    .entries` checks it; who reads what is the server's (admins the whole trail, leads and
    auditors their engagements), which audits the read as ``audit-read`` "N entries"."""
    from credvault.audit import AuditEntry
    from credvault.audit_trail import clean_filters
    from credvault.postgres import engagement_store as es

    if engagement is not None:
        validate.name(engagement, "engagement name")
    since_iso = clean_filters(member, action, since, limit)
    rows, denied = es.audit_entries(t.store, engagement, member, action, since_iso, limit)
    if denied is not None:
        raise AccessDenied(t.member, "read the audit trail", engagement, denied)
    return [AuditEntry(*r) for r in rows]


def client_engagements(t: Connected, client: str) -> list[str]:
    """The client's engagements not purged yet, each of which this member may shred (the
    server checks all of them and audits the first refusal as ``shred`` denied)."""
    from credvault.errors import NotFound
    from credvault.postgres import engagement_store as es

    validate.name(client, "client name")
    rows = es.client_shred_check(t.store, client)
    if not rows:
        raise NotFound("client", client, f"client {client!r} has nothing left to shred")
    name, why = rows[0]
    if why is not None:
        if name is None:  # one the member holds no role in: its name stays hidden
            raise AccessDenied(
                t.member, "shred", None, f"an engagement of {client!r} you hold no role in"
            )
        raise AccessDenied(t.member, "shred", name, why)
    return [str(n) for n, _ in rows]
