"""Review of section verpin (upgrade-2.sql), helper rev7: a pin (a row version's id, xmin
and ctid) is unique only for row versions other transactions committed.

One transaction that writes a credential, makes a read request for it, then writes it again
leaves two versions with the same id and xmin; a VACUUM FULL (or CLUSTER) within the
request's minute may pack the second where the first was, and fetch_record then released
it under the entry made for the first. bob wrote the first (his own value), the server
wrote the second (revert: alice's version 1 copied back), and bob read alice's secret
without a 'get' of it on the trail. Section ownpin: request_record refuses in a
transaction that has already written, and so does request_read (the `get` path: the
same story). Also: the honest reads still work, CALL credvault.read included.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from pg_cluster import Cluster, PgVault, fetch_as_a_client, new_pg_vault

psycopg = pytest.importorskip("psycopg")


def _vault(pg_cluster: Cluster) -> PgVault:
    """alpha/db: alice's S1 (version 1), then S2 (current); bob an engineer on alpha."""
    pg = new_pg_vault(pg_cluster)
    pg.add("bob")
    pg.engagement("alpha")
    pg.grant("alice", "alpha", "bob", "engineer")
    for value in (b"S1-alice", b"S2-alice"):
        pg.put("alice", "alpha", "db", value)
    return pg


def _put(conn: Any, name: str, value: bytes) -> None:
    conn.execute(
        "SELECT credvault.put_credential('alpha', %s, 'password', %s, 1, %s)",
        (name, secrets.token_bytes(16), value),
    )


# each path: its phase one for alpha/db, its phase two and the column with the secret
PATHS = {
    "record": (
        "SELECT credvault.request_record('rebind-edit', 'alpha', 'db')",
        "fetch_record",
        "e1",
    ),
    "read": ("SELECT credvault.request_read('alpha', 'db', '')", "fetch", "secret_env"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_request_between_two_writes_of_its_transaction_is_refused(
    pg_cluster: Cluster, path: str
) -> None:
    """bob: BEGIN; put db (his value); ask; put zz; revert db to version 1 (alice's S1);
    COMMIT; the DBA's VACUUM FULL; bob's phase two. Before: S1, under bob's entry for his
    own value (no 'get' of S1 on the trail)."""
    ask, fetch, col = PATHS[path]
    pg = _vault(pg_cluster)
    dba = psycopg.connect(pg_cluster.conninfo(pg.db), password=pg_cluster.password, autocommit=True)
    try:
        dba.execute("VACUUM FULL credvault.credentials")  # db alone, at (0,1)
        req = None
        with pg.connect("bob") as bob:
            bob.execute("BEGIN")
            try:
                _put(bob, "db", b"B-bob")  # the row version A, at (0,2)
                req = bob.execute(ask).fetchone()[0]
                _put(bob, "zz", b"Z-bob")  # one row between: packed, B lands on A's ctid
                assert bob.execute(
                    "SELECT credvault.revert_credential('alpha', 'db', 1)"
                ).fetchone() == ("ok",)
                bob.execute("COMMIT")
            except psycopg.errors.InvalidTransactionState:
                bob.execute("ROLLBACK")
                req = None
        if req is not None:
            dba.execute("VACUUM FULL credvault.credentials")
            with pg.connect("bob") as bob:
                try:
                    got = fetch_as_a_client(bob, req, col, fetch)
                except psycopg.errors.SerializationFailure:
                    got = None
            assert got is None or bytes(got[0]) != b"S1-alice", (
                "alice's version 1 released under bob's entry for his own value"
            )
        # a request after a write in a transaction, even one rolled back to a savepoint
        with pg.connect("bob") as bob:
            bob.execute("BEGIN")
            bob.execute("SAVEPOINT s")
            _put(bob, "db", b"C-bob")
            bob.execute("ROLLBACK TO SAVEPOINT s")
            with pytest.raises(psycopg.errors.InvalidTransactionState, match="transaction"):
                bob.execute(ask)
            bob.execute("ROLLBACK")
    finally:
        dba.close()


def test_honest_reads_in_their_own_transaction(pg_cluster: Cluster) -> None:
    """Every kind, asked in an autocommit statement or first in an explicit transaction."""
    pg = _vault(pg_cluster)
    with pg.connect("bob") as bob:
        for kind, ver, col, want in (
            ("version", 1, "e1", b"S1-alice"),
            ("version-show", 1, "e1", None),
            ("rebind-edit", None, "e1", b"S2-alice"),
            ("rebind-mv", None, "e1", b"S2-alice"),
        ):
            req = bob.execute(
                "SELECT credvault.request_record(%s, 'alpha', 'db', '', %s)", (kind, ver)
            ).fetchone()[0]
            got = fetch_as_a_client(bob, req, col, "fetch_record")
            assert (None if got[0] is None else bytes(got[0])) == want, kind
        bob.execute("BEGIN")
        req = bob.execute(
            "SELECT credvault.request_record('version', 'alpha', 'db', '', 1)"
        ).fetchone()[0]
        bob.execute("COMMIT")
        assert bytes(fetch_as_a_client(bob, req, "e1", "fetch_record")[0]) == b"S1-alice"
        req = bob.execute(PATHS["read"][0]).fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req, "secret_env", "fetch")[0]) == b"S2-alice"
        out = bob.execute(
            "CALL credvault.read('alpha', 'db', '', NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ).fetchone()
        assert out[0] is not None
        assert bytes(out[1]) == b"S2-alice"
