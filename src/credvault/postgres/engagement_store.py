"""The SQL of an engagement's settings, its members listing and the whole-trail audit on a
team vault (``upgrade-2.sql``, section pgeng), beside :mod:`credvault.postgres.store`,
whose connection and error mapping it uses. It decides nothing: each call is one SECURITY
DEFINER function that checks the caller and writes the audit rows itself.

psycopg is imported by the store, never here at module import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from credvault.postgres.store import PgStore


@contextlib.contextmanager
def _errors(store: PgStore, action: str, engagement: str | None = None) -> Iterator[None]:
    """The store's mapping of SQLSTATEs to credvault's errors (exit codes)."""
    with store._errors(action, engagement):
        yield


def create_with_settings(
    store: PgStore,
    uid: bytes,
    name: str,
    client: str,
    lead: str,
    link0: bytes,
    require_reason: bool,
    grace_days: int | None,
    link1: bytes,
) -> None:
    """``engagement new --require-reason/--grace-days``: link 0, the ``set`` link 1 and
    the columns the server enforces, in one transaction."""
    with _errors(store, "create an engagement", name):
        store.conn.execute(
            "SELECT credvault.create_engagement_set(%s, %s, %s, %s, %s, %s, %s::integer, %s)",
            (uid, name, client, lead, link0, require_reason, grace_days, link1),
        )


def set_settings(store: PgStore, name: str, require_reason: bool, link: bytes | None) -> str:
    """``engagement set``: 'ok' or 'denied: <why>' (audited by the server)."""
    with _errors(store, "change settings", name):
        row = store.conn.execute(
            "SELECT credvault.set_engagement_logged(%s, %s, %s)", (name, require_reason, link)
        ).fetchone()
    return str(row[0])


def members_listed(store: PgStore, name: str) -> str:
    """``engagement members``: 'ok:<your role>' (audited ``engagement-members``) or
    'denied: <why>' (audited ``list members``)."""
    with _errors(store, "list members", name):
        row = store.conn.execute("SELECT credvault.members_listed(%s)", (name,)).fetchone()
    return str(row[0])


def rotation_refused(store: PgStore, name: str) -> str:
    """A rotation this member may not make, audited ``rotate`` denied; the role held."""
    with _errors(store, "rotate", name):
        row = store.conn.execute("SELECT credvault.rotation_refused(%s)", (name,)).fetchone()
    return str(row[0])


def client_shred_check(store: PgStore, client: str) -> list[tuple[str | None, str | None]]:
    """(name, None) for each engagement of ``client`` left to shred, all of which the
    caller may shred; or one (name or None, why) for the first they may not (audited)."""
    with _errors(store, "shred"):
        rows = store.conn.execute(
            "SELECT name, denial FROM credvault.client_shred_check(%s)", (client,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


AuditEntryRow = tuple[int, str, str, str, str | None, str | None, str, str]


def audit_entries(
    store: PgStore,
    engagement: str | None,
    member: str | None,
    action: str | None,
    since: str | None,
    limit: int | None,
) -> tuple[list[AuditEntryRow], str | None]:
    """``audit``: the entries the server lets the caller read (audited ``audit-read``),
    and None; or no entries and the reason of a denial (audited by the server)."""
    with _errors(store, "read the audit trail", engagement):
        rows = store.conn.execute(
            "SELECT seq, ts, member, action, engagement, item, outcome, detail "
            "FROM credvault.audit_entries(%s, %s, %s, %s::timestamptz, %s::integer)",
            (engagement, member, action, since, limit),
        ).fetchall()
    if len(rows) == 1 and int(rows[0][0]) == -1:
        return [], str(rows[0][7])
    return [
        (
            int(r[0]),
            _ts(r[1]),
            str(r[2]),
            str(r[3]),
            r[4],
            r[5],
            str(r[6]),
            str(r[7]),
        )
        for r in rows
    ], None


def _ts(v: Any) -> str:
    """An audit entry's time as SQLCipher's entries carry it (and as the server's chain
    hashes it): UTC, microseconds, ``Z`` (:func:`credvault.model.iso`)."""
    from credvault.model import iso

    return iso(v.astimezone(UTC))
