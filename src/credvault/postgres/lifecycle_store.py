"""The SQL of an engagement's lifecycle and purge, ``passwd`` and the client export on a
team vault (``upgrade-2.sql``, section pgops), beside :mod:`credvault.postgres.store`, whose
connection and error mapping it uses. Like the rest of the client's SQL it decides nothing:
each call is one SECURITY DEFINER function that checks the caller's role and writes the
audit rows itself.

psycopg is imported inside the functions, never at module import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from credvault.errors import ClockSuspect, Conflict, RetentionError
from credvault.model import Engagement, GrantInfo
from credvault.postgres.store import PgStore, _message
from credvault.results import PurgePlan


class Lifecycle(NamedTuple):
    """An engagement as its lifecycle commands need it, and its effective grace period."""

    engagement: Engagement
    grace_days: int


class StoredReceipt(NamedTuple):
    receipt: str | None  # None: the purge is done, its receipt not signed yet
    signer: str | None
    sign_pub: bytes | None
    state: str


@contextlib.contextmanager
def _errors(store: PgStore, action: str, engagement: str | None = None) -> Iterator[None]:
    """The store's error mapping, and: a held purge (suspect clock) is ClockSuspect, a
    state that refuses the operation (not due, already purged) is RetentionError."""
    from psycopg import errors as pe

    with store._errors(action, engagement):
        try:
            yield
        except pe.ObjectNotInPrerequisiteState as e:
            text = _message(e)
            if getattr(e.diag, "message_hint", None) == "clock":
                raise ClockSuspect(text) from None
            raise RetentionError(text) from None


def _one(store: PgStore, sql: str, params: tuple[Any, ...], action: str, eng: str | None) -> Any:
    with _errors(store, action, eng):
        return store.conn.execute(sql, params).fetchone()


def _all(store: PgStore, sql: str, params: tuple[Any, ...], action: str) -> list[Any]:
    with _errors(store, action):
        return list(store.conn.execute(sql, params).fetchall())


def lifecycle(store: PgStore, name: str) -> Lifecycle | None:
    """The engagement's lifecycle facts, or None if the caller may not see it."""
    row = _one(
        store,
        "SELECT uid, name, client, state, key_version, key_fp, require_reason, grace_days, "
        "effective_grace, created_at, created_by, lead, closed_at, purge_due, hold_until, "
        "hold_reason, hold_by, purged_at FROM credvault.lifecycle(%s)",
        (name,),
        "read the engagement",
        name,
    )
    return None if row is None else _lifecycle(row)


def _lifecycle(row: Any) -> Lifecycle:
    """A row of lifecycle()'s columns (visible_engagements' and show_engagement's too)."""
    eng = Engagement(
        0,
        bytes(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        int(row[4]),
        str(row[5]),
        False,
        bool(row[6]),
        None if row[7] is None else int(row[7]),
        str(row[9]),
        str(row[10]),
        str(row[11]),
        b"",
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
        None,
    )
    return Lifecycle(eng, int(row[8]))


_COLS = (
    "uid, name, client, state, key_version, key_fp, require_reason, grace_days, "
    "effective_grace, created_at, created_by, lead, closed_at, purge_due, hold_until, "
    "hold_reason, hold_by, purged_at"
)


def set_purge_grace(store: PgStore, days: int) -> list[Engagement] | None:
    """``config set purge-grace-days`` (``set_purge_grace``): the closed engagements whose
    purge date it moved, with their new dates; None when refused (not an admin; audited)."""
    rows = _all(
        store,
        f"SELECT refused, {_COLS} FROM credvault.set_purge_grace(%s)",  # noqa: S608
        (days,),
        "config set",
    )
    if any(r[0] for r in rows):
        return None
    return [_lifecycle(r[1:]).engagement for r in rows]


def visible(store: PgStore, client: str | None) -> list[Lifecycle]:
    """``engagement ls``: what the caller may list, by name (audited by the server)."""
    rows = _all(
        store,
        f"SELECT {_COLS} FROM credvault.visible_engagements(%s)",  # noqa: S608
        (client,),
        "list engagements",
    )
    return [_lifecycle(r) for r in rows]


def show(store: PgStore, name: str) -> tuple[Lifecycle, str | None] | None:
    """``engagement show``: the engagement and the caller's role; None when refused (the
    refusal is audited by the server)."""
    row = _one(
        store,
        f"SELECT {_COLS}, your_role FROM credvault.show_engagement(%s)",  # noqa: S608
        (name,),
        "show",
        name,
    )
    return None if row is None else (_lifecycle(row), row[18])


def grants(store: PgStore, name: str) -> list[GrantInfo]:
    """Who holds which live role on ``name`` as the server's rows say (has_key: a copy of
    the current key); the caller checks them against the signed roster where it can."""
    rows = _all(
        store,
        "SELECT member, role, granted_by, granted_at, expires_at, has_key "
        "FROM credvault.engagement_grants(%s)",
        (name,),
        "list members",
    )
    return [GrantInfo(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], bool(r[5])) for r in rows]


def close(store: PgStore, name: str, grace_days: int | None) -> str:
    """'ok', 'denied: <why>' or 'error: <state>' (each audited by the server)."""
    row = _one(
        store,
        "SELECT credvault.close_engagement(%s, %s::integer)",
        (name, grace_days),
        "close",
        name,
    )
    return str(row[0])


def set_hold(store: PgStore, name: str, until: str, reason: str) -> str:
    row = _one(
        store,
        "SELECT credvault.set_hold(%s, %s::timestamptz, %s)",
        (name, until, reason),
        "set a retention hold",
        name,
    )
    return str(row[0])


def release_hold(store: PgStore, name: str) -> str:
    row = _one(store, "SELECT credvault.release_hold(%s)", (name,), "release the hold", name)
    return str(row[0])


def reapply_close(
    store: PgStore,
    name: str,
    closed_at: str,
    grace_days: int | None,
    purge_due: str,
    hold: tuple[str | None, str | None, str | None],
    as_of: str,
    source: str,
) -> str:
    """Give ``name`` back the lifecycle state a close record newer than this database gives
    it (an admin's purge after a restore): 'ok', 'same', 'older', 'gone' or 'denied: …'."""
    row = _one(
        store,
        "SELECT credvault.reapply_close(%s, %s::timestamptz, %s::integer, %s::timestamptz, "
        "%s::timestamptz, %s, %s, %s::timestamptz, %s)",
        (name, closed_at, grace_days, purge_due, *hold, as_of, source),
        "close",
        name,
    )
    return str(row[0])


def due(store: PgStore, confirm: str | None, *, plan: bool, quiet: bool) -> list[PurgePlan]:
    """What is due now (empty for a non-admin, whose explicit attempt is audited as denied;
    and, when ``quiet``, on a suspect clock)."""
    rows = _all(
        store,
        "SELECT name, client, due, reason FROM credvault.due_purges(%s::date, %s, %s)",
        (confirm, plan, quiet),
        "purge",
    )
    return [PurgePlan(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def destroy(store: PgStore, name: str, why: str, *, automatic: bool) -> dict[str, Any] | None:
    """Destroy in the live rows; the receipt's facts, unsigned (None: denied, audited)."""
    action = "shred" if why == "request" else "purge"
    row = _one(
        store,
        "SELECT credvault.destroy_engagement(%s, %s, %s)",
        (name, why, automatic),
        action,
        name,
    )
    return None if row[0] is None else dict(row[0])


def store_receipt(store: PgStore, name: str, text: str) -> None:
    _one(store, "SELECT credvault.store_receipt(%s, %s)", (name, text), "sign the receipt", name)


def receipts_to_sign(store: PgStore) -> list[tuple[str, dict[str, Any], str | None]]:
    rows = _all(
        store, "SELECT name, facts, rewritten_at FROM credvault.receipts_to_sign()", (), "purge"
    )
    return [(str(r[0]), dict(r[1]), r[2]) for r in rows]


def awaiting_rewrite(store: PgStore) -> list[str]:
    return [str(r[0]) for r in _all(store, "SELECT credvault.awaiting_rewrite()", (), "purge")]


def read_receipt(store: PgStore, name: str) -> StoredReceipt | None:
    row = _one(
        store,
        "SELECT receipt, signer, sign_pub, state FROM credvault.read_receipt(%s)",
        (name,),
        "read the receipt",
        name,
    )
    if row is None:
        return None
    return StoredReceipt(row[0], row[1], None if row[2] is None else bytes(row[2]), str(row[3]))


def expire_trash(store: PgStore, confirmed: bool) -> int:
    """Destroy the trash past its recovery period (an admin's; 0 for anyone else, or on a
    suspect clock unless ``confirmed``): how many removed records went."""
    row = _one(store, "SELECT credvault.expire_trash(%s)", (confirmed,), "purge", None)
    return int(row[0])


def purge_run(store: PgStore, n: int) -> None:
    _one(store, "SELECT credvault.purge_run(%s)", (n,), "purge", None)


def rewrite(owner: PgStore) -> tuple[int, int]:
    """As the owner: VACUUM FULL the tables a purge deleted from, then record which purged
    engagements that rewrote out of the table files. Returns (rewritten, still pending)."""
    from psycopg import errors as pe

    from credvault.postgres.server import rewrite_after_purge

    with _errors(owner, "rewrite the tables"):
        # VACUUM FULL waits for every lock on a table and, while waiting, queues every
        # member's read behind it: give up rather than stall the team behind a long
        # transaction
        owner.conn.execute("SET lock_timeout = '10s'")
        pending = [
            str(r[0])
            for r in owner.conn.execute(
                "SELECT name FROM credvault.engagements WHERE state = 'purged' "
                "AND purge_facts IS NOT NULL AND rewritten_at IS NULL"
            ).fetchall()
        ]
        names = [
            str(r[0])
            for r in owner.conn.execute("SELECT credvault.rewrite_candidates()").fetchall()
        ]
        try:
            rewrite_after_purge(owner.conn)
        except pe.LockNotAvailable:
            raise Conflict(
                "the tables are in use by a long transaction: nothing was rewritten; run "
                "`credvault purge --rewrite` again"
            ) from None
        row = owner.conn.execute(
            "SELECT credvault.record_rewrite(%s::text[], %s)",
            (names, len(pending) - len(names)),
        ).fetchone()
    return int(row[0]), len(pending) - len(names)


def change_login(store: PgStore, verifier: str) -> None:
    """``passwd``: the member's own new login verifier (audited by the server)."""
    _one(store, "SELECT credvault.change_login(%s)", (verifier,), "change the login", None)


def export_check(store: PgStore, name: str, reason: str) -> str:
    """``client export``: 'ok', 'denied: <why>' (audited) or 'error: <state>'."""
    row = _one(store, "SELECT credvault.export_check(%s, %s)", (name, reason), "export", name)
    return str(row[0])


def export_tombstones(store: PgStore, client: str, alone: bool) -> list[Engagement] | None:
    """``client export``: the client's purged engagements the caller may see, by name (their
    tombstones in the export); ``alone`` (nothing live to export) audits the export as
    SQLCipher does, and None is its refusal (not an admin; audited)."""
    rows = _all(
        store,
        f"SELECT refused, {_COLS} FROM credvault.export_tombstones(%s, %s)",  # noqa: S608
        (client, alone),
        "export",
    )
    if any(r[0] for r in rows):
        return None
    return [_lifecycle(r[1:]).engagement for r in rows]


def log_export(store: PgStore, name: str, count: int, digest: str, reason: str) -> None:
    """The export's ``export`` audit entry with the file's SHA-256 (committed)."""
    _one(
        store,
        "SELECT credvault.log_export(%s, %s, %s, %s)",
        (name, count, digest, reason),
        "export",
        name,
    )


class ExportRecord(NamedTuple):
    """One record ``fetch_export_records`` released for a client export: ``table`` is its
    server table (``systems``, ``credential_versions``, ``credential_trash``,
    ``system_trash``); ``envelopes`` its envelope columns, the anchor first; dates as text
    with microseconds (``iso``)."""

    table: str
    uid: bytes
    name: str
    kind: str | None
    version: int | None
    port: int | None
    protocol: str | None
    system_uid: bytes | None
    system: str | None
    envelopes: tuple[bytes | None, bytes | None, bytes | None, bytes | None]
    created_at: str | None
    updated_at: str | None
    created_by: str | None
    changed: str | None
    deleted_at: str | None
    deleted_by: str | None
    expires_at: str | None
    label: str  # the name the export shows (``name``: the one the anchor is bound to)


def request_export_records(store: PgStore, name: str, reason: str) -> int | None:
    """Phase one of a client export's systems, earlier versions and trash: a committed
    audit row per record (``system-show`` / ``get``); None when refused (audited)."""
    row = _one(
        store, "SELECT credvault.request_export_records(%s, %s)", (name, reason), "export", name
    )
    return None if row[0] is None else int(row[0])


def fetch_export_records(store: PgStore, request: int, name: str) -> list[ExportRecord]:
    """Phase two: the records the request's committed audit rows name, in SQLCipher's
    export order (systems by name, versions as kept, the trash newest first)."""
    rows = store.phase_two(
        "SELECT tbl, uid, name, kind, version, port, protocol, sys_uid, sys_name, e1, e2, e3, "
        "e4, created_at, updated_at, created_by, changed, deleted_at, deleted_by, expires_at, "
        "label "
        "FROM credvault.fetch_export_records(%s)",
        request,
        "export",
        name,
    )

    def b(v: Any) -> bytes | None:
        return None if v is None else bytes(v)

    def t(v: Any) -> str | None:
        return None if v is None else str(v)

    return [
        ExportRecord(
            str(r[0]),
            bytes(r[1]),
            str(r[2]),
            t(r[3]),
            None if r[4] is None else int(r[4]),
            None if r[5] is None else int(r[5]),
            t(r[6]),
            b(r[7]),
            t(r[8]),
            (b(r[9]), b(r[10]), b(r[11]), b(r[12])),
            t(r[13]),
            t(r[14]),
            t(r[15]),
            t(r[16]),
            t(r[17]),
            t(r[18]),
            t(r[19]),
            str(r[20]),
        )
        for r in rows
    ]
