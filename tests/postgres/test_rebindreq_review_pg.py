"""Review of section rebindpin's last commit (helper rev3): each store names the rebind
request its secret was read through (rename_credential, edit_credential, remove_system,
restore_trashed). A request that is not the store's own (another member's, unclaimed, of
another kind, for another credential) must not vouch for it; nor may the arrays of
remove_system / restore_trashed (lengths that differ, a uid twice, NULL entries) let a
secret read before a colleague's put through."""

from __future__ import annotations

from typing import Any

import pytest

from .test_rebindpin_review_pg import KV1, UIDQ, _linked_to_web, _rebind_read, _secret

psycopg = pytest.importorskip("psycopg")

EDIT = (
    "SELECT credvault.edit_credential('alpha', 'db', %s, 1, false, NULL, false,"
    " NULL, false, NULL, 'token', false, NULL, 'kind', %s, %s)"
)
MV = "SELECT credvault.rename_credential('alpha', 'db', 'db2', %s, %s)"


def test_only_the_members_own_claimed_request_of_that_kind_for_that_credential_counts(
    pg_cluster: Any,
) -> None:
    from pg_cluster import new_pg_vault

    from .test_insider_pg import _populate

    pg = _populate(new_pg_vault(pg_cluster))
    pg.put("alice", "alpha", "db", KV1 + b"V1")
    pg.put("alice", "alpha", "other", KV1 + b"O1")
    with pg.connect("alice") as a, pg.connect("bob") as b:
        uid = a.execute(UIDQ).fetchone()[0]
        wrong: list[tuple[str, int]] = []
        for kind in ("rebind-edit", "rebind-mv"):
            wrong.append((f"bob's {kind}", _rebind_read(b, kind, "alpha", "db")[0]))
            unclaimed = a.execute(
                "SELECT credvault.request_record(%s, 'alpha', 'db')", (kind,)
            ).fetchone()[0]
            wrong.append((f"unclaimed {kind}", int(unclaimed)))
            wrong.append((f"{kind} of another", _rebind_read(a, kind, "alpha", "other")[0]))
        wrong.append(("fields", _rebind_read_fields(a)))
        mv_req = _rebind_read(a, "rebind-mv", "alpha", "db")[0]
        edit_req = _rebind_read(a, "rebind-edit", "alpha", "db")[0]
        for what, req in [*wrong, ("mv's for an edit", mv_req), ("missing", -1)]:
            with pytest.raises(psycopg.errors.SerializationFailure):
                a.execute(EDIT, (uid, KV1 + b"X", req))
            assert _secret(pg, "alpha", "db") == KV1 + b"V1", what
        for what, req in [*wrong, ("edit's for a mv", edit_req), ("missing", -1)]:
            with pytest.raises(psycopg.errors.SerializationFailure):
                a.execute(MV, (KV1 + b"X", req))
            assert _secret(pg, "alpha", "db") == KV1 + b"V1", what
        assert a.execute(MV, (KV1 + b"V1-db2", mv_req)).fetchone()[0] == "ok"
    assert _secret(pg, "alpha", "db2") == KV1 + b"V1-db2"


def _rebind_read_fields(conn: Any) -> int:
    from pg_cluster import fetch_as_a_client

    req = conn.execute("SELECT credvault.request_record('fields', 'alpha', 'db')").fetchone()[0]
    fetch_as_a_client(conn, req, "e2", "fetch_record")
    return int(req)


def _linked(pg_cluster: Any) -> Any:
    """alpha/db bound (0x02) and linked to system web."""
    pg = _linked_to_web(pg_cluster)
    pg.put("alice", "alpha", "db", KV1 + b"V1")
    return pg


RM = (
    "SELECT outcome FROM credvault.remove_system('alpha', 'web', %s::bytea[], %s::bytea[],"
    " %s::bigint[])"
)


def test_system_rm_arrays_never_let_a_secret_read_before_a_put_through(pg_cluster: Any) -> None:
    """A stale request beside a fresh one for the same uid, requests fewer than secrets
    (unnest pads with NULL), NULL or no requests: refused, bob's value kept. The fresh
    request alone: stored."""
    pg = _linked(pg_cluster)
    with pg.connect("alice") as a:
        stale, _ = _rebind_read(a, "rebind-edit", "alpha", "db")
        with pg.connect("bob") as b:
            b.execute(
                "SELECT credvault.put_credential('alpha', 'db', 'password', %s, 1, %s)",
                (b"u" * 16, KV1 + b"V2"),
            )
        uid = bytes(a.execute(UIDQ).fetchone()[0])
        fresh, got = _rebind_read(a, "rebind-edit", "alpha", "db")
        assert got == KV1 + b"V2"
        old, new = KV1 + b"V1-unlinked", KV1 + b"V2-unlinked"
        for uids, secrets, reqs in (
            ([uid, uid], [old, new], [stale, fresh]),
            ([uid, uid], [new, old], [fresh, stale]),
            ([uid, uid], [new, old], [fresh]),
            ([uid], [old], [None]),
            ([uid], [old], []),
            ([uid], [old], None),
            ([uid], [old], [stale]),
        ):
            with pytest.raises(psycopg.errors.SerializationFailure):
                a.execute(RM, (uids, secrets, reqs))
            assert _secret(pg, "alpha", "db") == KV1 + b"V2", (secrets, reqs)
        assert a.execute(RM, ([uid], [new], [fresh])).fetchone()[0] == "ok"
    assert _secret(pg, "alpha", "db") == KV1 + b"V2-unlinked"


RESTORE = (
    "SELECT credvault.restore_trashed('alpha', 'web', true, %s::bytea[], %s::bytea[], %s::bigint[])"
)


def test_system_restore_arrays_never_let_a_secret_read_before_a_put_through(
    pg_cluster: Any,
) -> None:
    pg = _linked(pg_cluster)
    with pg.connect("alice") as a:
        uid = bytes(a.execute(UIDQ).fetchone()[0])
        req, _ = _rebind_read(a, "rebind-edit", "alpha", "db")
        assert a.execute(RM, ([uid], [KV1 + b"V1-unlinked"], [req])).fetchone()[0] == "ok"
        stale, _ = _rebind_read(a, "rebind-edit", "alpha", "db")
        with pg.connect("bob") as b:
            b.execute(
                "SELECT credvault.put_credential('alpha', 'db', 'password', %s, 1, %s)",
                (uid, KV1 + b"V2"),
            )
        fresh, got = _rebind_read(a, "rebind-edit", "alpha", "db")
        assert got == KV1 + b"V2"
        old, new = KV1 + b"V1-linked", KV1 + b"V2-linked"
        for uids, secrets, reqs in (
            ([uid, uid], [old, new], [stale, fresh]),
            ([uid, uid], [old, new], [fresh, stale]),
            ([uid, uid], [new, old], [fresh]),
            ([uid], [old], [None]),
            ([uid], [old], None),
            ([uid], [old], [stale]),
        ):
            with pytest.raises(psycopg.errors.SerializationFailure):
                a.execute(RESTORE, (uids, secrets, reqs))
            assert _secret(pg, "alpha", "db") == KV1 + b"V2", (secrets, reqs)
        assert a.execute(RESTORE, ([uid], [new], [fresh])).fetchone()[0] == "ok"
    assert _secret(pg, "alpha", "db") == KV1 + b"V2-linked"


NEW = (
    "credvault.remove_system(text, text, bytea[], bytea[], bigint[])",
    "credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea,"
    " boolean, bytea, text, boolean, text, text, bytea, bigint, bytea)",
    "credvault.rename_credential(text, text, text, bytea, bigint)",
    "credvault.restore_trashed(text, text, boolean, bytea[], bytea[], bigint[])",
    # and put's, with the system its secret is bound to (section putbind)
    "credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea, bytea,"
    " bytea, text, text, bytea)",
)
OLD = (
    "credvault.remove_system(text, text, bytea[], bytea[])",
    "credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea,"
    " boolean, bytea, text, boolean, text, text, bytea)",
    "credvault.rename_credential(text, text, text, bytea)",
    "credvault.restore_trashed(text, text, boolean, bytea[], bytea[])",
    "credvault.rebind_read(text, text, bigint)",
    "credvault.edit_credential(text, text, bytea, integer, boolean, bytea, boolean, bytea,"
    " boolean, bytea, text, boolean, text, text, bytea, bigint)",
    "credvault.put_credential_linked(text, text, text, bytea, integer, bytea, bytea, bytea,"
    " bytea, text, text)",
)


def test_the_new_signatures_are_the_members_alone_and_the_old_ones_gone(pg: Any) -> None:
    with pg.connect() as conn:
        for sig in NEW:
            row = conn.execute(
                "SELECT has_function_privilege(%s, %s, 'EXECUTE'),"
                " has_function_privilege('public', %s, 'EXECUTE'),"
                " (SELECT prosecdef FROM pg_proc WHERE oid = %s::regprocedure)",
                (pg.role("alice"), sig, sig, sig),
            ).fetchone()
            assert row == (True, False, True), sig
        for sig in OLD:
            assert conn.execute("SELECT to_regprocedure(%s)", (sig,)).fetchone() == (None,), sig
        helper = "credvault.rebind_read(text, text, bigint, bigint)"
        row = conn.execute(
            "SELECT has_function_privilege(%s, %s, 'EXECUTE'),"
            " has_function_privilege('public', %s, 'EXECUTE')",
            (pg.role("alice"), helper, helper),
        ).fetchone()
        assert row == (False, False)
