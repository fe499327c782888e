"""The phase twos that release many rows at once (a field search, a client export, import's
read of the addresses, a move across engagements, a rotation's read) release the row
versions their request found, and nothing written since (upgrade-2.sql, section pinmany;
docs/team.md "Reading a secret").

Written as the attacker first (a member with psql: fetch inside a transaction, ROLLBACK,
let a colleague write, fetch again under the earlier entry), then as the honest client,
which asks again under a new entry when a write lands between its request and its fetch.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from credvault import Secret
from credvault.importers import RawEntry
from credvault.postgres.store import PgStore
from pg_cluster import Cluster, fetch_as_a_client, fetch_rolled_back, new_pg_vault, write_once

from .test_contract import World, _postgresql
from .test_crl_pg import member
from .test_insider_pg import _populate
from .test_memberlog_pg import dba

CHANGED = "changed since the read request"


@pytest.fixture
def team(pg_cluster: Cluster) -> Any:
    """alice (admin, lead of alpha and beta), bob (engineer on alpha and beta); alpha holds
    the credential db and the system web."""
    pg = _populate(new_pg_vault(pg_cluster))
    pg.grant("alice", "beta", "bob", "engineer")
    with pg.connect("alice") as alice:
        alice.execute(
            "SELECT credvault.put_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (secrets.token_bytes(16), b"ADDRESS-before"),
        )
    return pg


def _set_web(pg: Any, address: bytes) -> None:
    """alice changes web's address (a write of the systems row, as `system set` makes it)."""
    with pg.connect("alice") as alice:
        uid = alice.execute(
            "SELECT uid FROM credvault.systems WHERE name = 'web'"
        ).fetchone()[0]  # fmt: skip
        alice.execute(
            "SELECT credvault.set_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL, true,"
            " ARRAY['address'])",
            (uid, address),
        )


# (the phase one as the member calls it, the phase two, the columns the attacker takes, the
# member, a colleague's write between the two that the request's entries do not cover)
ROLLED_BACK = [
    pytest.param(
        "SELECT credvault.request_find('alpha')", "fetch_find", "e1", "bob", "system",
        id="find",
    ),
    pytest.param(
        "SELECT credvault.request_import('alpha')", "fetch_import", "address_env", "bob",
        "system", id="import",
    ),
    pytest.param(
        "SELECT credvault.request_export_records('alpha', 'T-1')", "fetch_export_records",
        "e1", "bob", "system", id="export",
    ),
    pytest.param(
        "SELECT request FROM credvault.request_move('alpha', 'db', 'beta', 'db')",
        "fetch_move", "e1", "bob", "put", id="move",
    ),
    pytest.param(
        "SELECT credvault.request_rotation('alpha')", "rotation_fetch_records", "e1", "alice",
        "put", id="rotation",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("ask", "function", "column", "who", "write"), ROLLED_BACK)
def test_a_rolled_back_fetch_fetched_again_releases_nothing_written_since(
    team: Any, ask: str, function: str, column: str, who: str, write: str
) -> None:
    """The attacker fetches inside a transaction and rolls it back (the request stays
    unused), waits for a colleague's write, and fetches again within the minute: before
    section pinmany the second fetch released the new value under the entry made before
    it. Now it is refused, and nothing leaves the server."""
    import psycopg

    written = b"ENVELOPE-written-after-the-request"
    with team.connect(who) as conn:
        req = conn.execute(ask).fetchone()[0]
        assert req is not None
        agg = f"array_agg({column})"
        assert written not in fetch_rolled_back(conn, req, agg, function)[0]
        if write == "system":
            _set_web(team, written)
        else:
            team.put("alice", "alpha", "db", written)
        with pytest.raises(psycopg.errors.SerializationFailure, match=CHANGED):
            fetch_as_a_client(conn, req, agg, function)
        # refused as a whole, the claim rolled back with it: the same answer again
        with pytest.raises(psycopg.errors.SerializationFailure, match=CHANGED):
            fetch_as_a_client(conn, req, agg, function)
        # a new request (a new entry) releases what is there now
        again = conn.execute(ask).fetchone()[0]
        assert written in fetch_as_a_client(conn, again, agg, function)[0]


@pytest.fixture
def w(tmp_path: Path, pg_cluster: Cluster) -> World:
    """alice (admin, lead of acme-2026 and beta-2026), bob (engineer on acme-2026); acme-2026
    holds the credential db and the system web."""
    w = _postgresql(tmp_path, pg_cluster)
    with member(w, "alice") as alice:
        alice.credentials.put("acme-2026/db", Secret(b"db-before"))
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        alice.engagements.grant("acme-2026", "bob", "engineer")
        alice.engagements.create("beta-2026", "beta")
    return w


def test_a_rotation_does_not_undo_a_system_set_made_while_it_read(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob changes web's address and port after alice's rotation has read the records and
    before it stores them re-sealed: the rotation must not write the old address back (a
    lost update; sealed for the old port, it would no longer open: exit 6 on every read).
    rotate_records refuses it (Conflict) and the rotation runs again from a fresh read."""
    real = PgStore.rotation_fetch_records
    fired: list[bool] = []

    def write_between(self: PgStore, request: int, engagement: str) -> Any:
        rows = real(self, request, engagement)
        if not fired:
            fired.append(True)
            with member(w, "bob") as bob:
                bob.systems.set("acme-2026/web", {"address": "10.9.9.9", "port": 2222})
        return rows

    monkeypatch.setattr(PgStore, "rotation_fetch_records", write_between)
    before = _entries(w, "rotate", "read for rotation")
    with member(w, "alice") as alice:
        assert alice.engagements.rotate("acme-2026") == 2
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        web = alice.systems.show("acme-2026/web")
    assert (web.address, web.port) == ("10.9.9.9", 2222)
    # two reads for rotation on the record: the one refused at the store, and the next
    assert _entries(w, "rotate", "read for rotation") == before + 2


def _entries(w: World, action: str, detail: str) -> int:
    """Entries on acme-2026's trail."""
    return int(
        dba(
            w,
            "SELECT count(*) FROM credvault.audit WHERE engagement = 'acme-2026'"
            " AND action = %s AND detail LIKE %s",
            (action, detail),
        )[0][0]
    )


REQUEST_TABLES = ("record_requests", "export_requests", "move_requests")


def _write_once_in(w: World, table: str) -> None:
    """A test-only trigger (pg_cluster.write_once): the next request made in ``table``
    writes every credential and system of its engagement (no value changes; a new row
    version each, and no earlier version made), in the request's own transaction. The
    phase two then finds none of the versions its request pinned."""
    import psycopg

    assert table in REQUEST_TABLES
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    with psycopg.connect(  # the DBA
        cluster.conninfo(str(w.extra["db"])), password=cluster.password, autocommit=True
    ) as conn:
        armed = conn.execute("SELECT to_regclass('credvault.t_once')").fetchone()[0]
        if armed is not None:
            conn.execute("DROP TABLE credvault.t_once; DROP FUNCTION credvault.t_touch() CASCADE")
        write_once(
            conn,
            f"AFTER INSERT ON credvault.{table}",
            "PERFORM set_config('credvault.rebinding', 'on', true);"
            " UPDATE credvault.credentials SET updated_at = updated_at"
            " WHERE engagement_id = NEW.engagement_id;"
            " UPDATE credvault.systems SET updated_at = updated_at"
            " WHERE engagement_id = NEW.engagement_id;"
            " PERFORM set_config('credvault.rebinding', '', true);",
            definer=True,
        )


def test_the_client_asks_again_when_records_change_between_request_and_fetch(
    w: World,
) -> None:
    """The honest client's side (PgStore.asked_again): each multi-row read whose records are
    written between its request and its fetch is asked again, under a new entry, and
    completes with what is there then. Each path once, a write landing in its request."""
    with member(w, "alice") as alice:
        _write_once_in(w, "record_requests")
        hits = alice.credentials.find("10.0.0.1")
        assert [(h.name, h.field) for h in hits] == [("web", "address")]
        assert _entries(w, "find", "fields searched%") == 2

        _write_once_in(w, "record_requests")
        alice.credentials.import_entries(
            "acme-2026",
            [RawEntry("line 1", "root", Secret(b"imported"), host="10.0.0.1", port=22,
                      protocol="ssh")],
        )  # fmt: skip
        assert _entries(w, "import-read", "%") == 2
        linked = {c.name: c.system for c in alice.credentials.list("acme-2026")}
        assert linked["root"] == "web"  # the host matched the address the read released

        _write_once_in(w, "export_requests")
        before = _entries(w, "system-show", "%")
        alice.clients.export("acme")
        assert _entries(w, "system-show", "%") == before + 2

        _write_once_in(w, "move_requests")
        alice.credentials.move("acme-2026/db", "beta-2026/db")
        assert _entries(w, "rebind", "released to seal it again%") == 2
        assert alice.credentials.get("beta-2026/db").secret.reveal() == b"db-before"


def test_a_rotation_is_stored_only_against_the_leads_own_claimed_read(team: Any) -> None:
    """rotate_records takes the request whose read released the records: one never
    fetched (nothing released), or another engagement's, is refused, and nothing changes."""
    import psycopg

    store = (
        "SELECT credvault.rotate_records('alpha', 1, 'fp', '{}', '{}', '{}', '{}', '{}', '{}',"
        " '{}', '{}', '{}', '{}', %s)"
    )
    with team.connect("alice") as alice:
        unread = alice.execute("SELECT credvault.request_rotation('alpha')").fetchone()[0]
        beta = alice.execute("SELECT credvault.request_rotation('beta')").fetchone()[0]
        fetch_as_a_client(alice, beta, "count(*)", "rotation_fetch_records")
        for req in (unread, beta, None):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such rotation"):
                alice.execute(store, (req,))
        version = alice.execute(
            "SELECT key_version FROM credvault.engagements WHERE name = 'alpha'"
        ).fetchone()[0]  # fmt: skip
    assert version == 1
