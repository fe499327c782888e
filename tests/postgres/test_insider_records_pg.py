"""Insider tests for the record commands' server side (systems, history, trash), written as
the attacker: a member with their own login and the real ``psql``, after the envelopes of
the records that are not a credential's current value (upgrade-2.sql, section pgcmds).

Same properties as ``test_insider_pg.py`` for credentials: no envelope without a committed,
durable audit entry (the ROLLBACK trick included), no direct read of an envelope column, no
direct write to these tables, and writes only by the roles access.py allows.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from pg_cluster import fetch_as_a_client, new_pg_vault
from pg_cluster import psql_denied as denied


def fetch_record(conn: Any, req: int, columns: str) -> Any:
    return fetch_as_a_client(conn, req, columns, "fetch_record")


ADDRESS = b"SYSTEM-ENVELOPE-\x00\x02-opaque-to-the-server"
ADDRESS_HEX = ADDRESS.hex()
DETAILS = b"DETAILS-ENVELOPE-\x00\x03"


def put_system(pg: Any, by: str, eng: str, name: str, address_env: bytes) -> Any:
    with pg.connect(by) as conn:
        return conn.execute(
            "SELECT credvault.put_system(%s, %s, %s, 1, 22, 'ssh', %s, %s, false,"
            " '{address,port}')",
            (eng, name, secrets.token_bytes(16), address_env, DETAILS),
        ).fetchone()[0]


def _populate(pg: Any) -> Any:
    """alice (admin, lead of alpha), bob (engineer on alpha), eve (reader on alpha), mallory
    (reader on beta only); alpha has the system web1, beta has gw."""
    for who in ("bob", "eve", "mallory"):
        pg.add(who)
    pg.engagement("alpha")
    pg.engagement("beta")
    pg.grant("alice", "alpha", "bob", "engineer")
    pg.grant("alice", "alpha", "eve", "reader")
    pg.grant("alice", "beta", "mallory", "reader")
    assert put_system(pg, "alice", "alpha", "web1", ADDRESS) == "system-add"
    assert put_system(pg, "alice", "beta", "gw", b"beta-address") == "system-add"
    pg.put("alice", "alpha", "db", b"credential-envelope")
    return pg


@pytest.fixture
def team(pg: Any) -> Any:
    return _populate(pg)


@pytest.fixture(scope="module")
def team_ro(pg_cluster: Any) -> Any:
    """One shared team for the attempts that must change nothing (each test asserts so)."""
    return _populate(new_pg_vault(pg_cluster))


READS = [
    "SELECT address_env FROM credvault.systems",
    "SELECT details_env FROM credvault.systems",
    "SELECT * FROM credvault.systems",
    "SELECT address_env FROM credvault.system_trash",
    "SELECT * FROM credvault.system_trash",
    "SELECT * FROM credvault.record_requests",
    "COPY credvault.systems TO STDOUT",
    "COPY credvault.system_trash TO STDOUT",
    # the helpers the functions use are the owner's alone
    "SELECT credvault.await_durable(pg_current_wal_insert_lsn())",
    "SELECT credvault.held(1)",
    "SELECT credvault.may(1, 'write')",
    "SELECT secret_env FROM credvault.credential_versions",
    "SELECT * FROM credvault.credential_versions",
    "SELECT uid FROM credvault.credential_versions",
    "COPY credvault.credential_versions TO STDOUT",
    "SELECT secret_env FROM credvault.credential_trash",
    "SELECT * FROM credvault.credential_trash",
    "SELECT uid FROM credvault.credential_trash",
    "SELECT * FROM credvault.move_requests",
    "SELECT * FROM credvault.export_requests",
]


@pytest.mark.parametrize("sql", READS)
def test_member_cannot_read_record_envelopes(team_ro: Any, sql: str) -> None:
    out = team_ro.psql("bob", sql)
    assert denied(out), (sql, out.stdout, out.stderr)
    assert ADDRESS_HEX not in out.stdout


WRITES = [
    "UPDATE credvault.systems SET port = 1",
    "UPDATE credvault.systems SET address_env = '\\x00'",
    "DELETE FROM credvault.systems",
    "INSERT INTO credvault.systems (uid, engagement_id, name, address_env)"
    " SELECT '\\x01', id, 'x', '\\x00' FROM credvault.engagements",
    "UPDATE credvault.system_trash SET expires_at = now()",
    "DELETE FROM credvault.system_trash",
    "INSERT INTO credvault.record_requests (member, kind, engagement_id, target_id, audit_seq, xid)"
    " VALUES ('bob', 'system', 1, 1, 1, pg_current_xact_id())",
    "UPDATE credvault.record_requests SET used_at = NULL",
    "UPDATE credvault.move_requests SET used_at = now(), moved_at = NULL",
    # the versions a multi-row read may release (section pinmany)
    "UPDATE credvault.record_requests SET pins = NULL",
    "UPDATE credvault.move_requests SET pins = '{}'",
    "UPDATE credvault.export_requests SET pins = '{}'",
    "UPDATE credvault.rotation_requests SET pins = '{}'",
    "SELECT credvault.engagement_pins(1)",
    "UPDATE credvault.credentials SET system_id = NULL",
    "TRUNCATE credvault.system_trash",
    "DELETE FROM credvault.credential_versions",
    "UPDATE credvault.credential_versions SET secret_env = '\\x00'",
    "INSERT INTO credvault.credential_versions (engagement_id, credential_id, version, uid, name,"
    " kind, key_version, secret_env, created_at, changed)"
    " SELECT id, 1, 9, '\\x01', 'db', 'password', 1, '\\x00', now(), 'x' FROM credvault.engagements",
    "UPDATE credvault.credentials SET version = 1",
    "ALTER TABLE credvault.credentials DISABLE TRIGGER keep_version",
    "DELETE FROM credvault.credential_trash",
    "UPDATE credvault.credential_trash SET expires_at = now()",
    "INSERT INTO credvault.credentials (uid, engagement_id, name, kind, key_version, secret_env)"
    " SELECT '\\x01', id, 'x', 'password', 1, '\\x00' FROM credvault.engagements",
    # version 1's rotation would leave systems under the old key: no member may call it
    "SELECT credvault.rotate_key('alpha', 1, 'fp', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
]


@pytest.mark.parametrize("sql", WRITES)
def test_member_cannot_write_record_tables(team_ro: Any, sql: str) -> None:
    before = team_ro.audit_count()
    for who in ("bob", "alice"):  # an engineer, and the lead and admin
        out = team_ro.psql(who, sql)
        assert denied(out), (who, sql, out.stdout, out.stderr)
    assert team_ro.audit_count() == before


def test_put_keeps_fields_only_for_the_rows_own_uid(team_ro: Any) -> None:
    """put keeps the envelopes it is not given (section pgput): only under the uid they were
    sealed for. A replace naming another uid (a stale client, or an insider grafting the
    kept notes onto a new place) is refused whole: nothing written, nothing audited."""
    import psycopg

    uid_of = (
        "SELECT c.uid FROM credvault.credentials c JOIN credvault.engagements e"
        " ON e.id = c.engagement_id WHERE e.name = 'alpha' AND c.name = 'db'"
    )
    before = team_ro.audit_count()
    with team_ro.connect("bob") as conn:
        uid = conn.execute(uid_of).fetchone()[0]
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed meanwhile"):
            conn.execute(
                "SELECT credvault.put_credential_linked('alpha', 'db', 'password', %s, 1, %s,"
                " NULL, NULL, NULL, NULL)",
                (secrets.token_bytes(16), b"grafted"),
            )
        conn.rollback()
        assert conn.execute(uid_of).fetchone()[0] == uid
    assert team_ro.audit_count() == before


def test_two_phase_system_read_is_on_the_record_first(team: Any) -> None:
    before = team.audit_count("system-show")
    with team.connect("eve") as conn:
        req = conn.execute(
            "SELECT credvault.request_record('system', 'alpha', 'web1', 'TICKET-9')"
        ).fetchone()[0]
        assert req is not None
        assert team.audit_count("system-show") == before + 1  # committed before any fetch
        row = fetch_record(conn, req, "e1, e2, audit_seq, name, port")
    assert (bytes(row[0]), bytes(row[1]), row[3], row[4]) == (ADDRESS, DETAILS, "web1", 22)
    with team.connect() as owner:
        entry = owner.execute(
            "SELECT member, action, engagement, item, outcome, detail FROM credvault.audit "
            "WHERE seq = %s",
            (row[2],),
        ).fetchone()
    assert entry == ("eve", "system-show", "alpha", "web1", "ok", "reason: TICKET-9")


@pytest.mark.parametrize("kind", ["system", "credential-system"])
def test_rollback_trick_yields_no_system_envelope(team: Any, kind: str) -> None:
    with team.connect("alice") as conn:  # link db to web1, so credential-system has one
        # a replace names the row's own uid (the server keeps the fields not given)
        conn.execute(
            "SELECT credvault.put_credential_linked('alpha', 'db', 'password', coalesce(("
            "SELECT c.uid FROM credvault.credentials c JOIN credvault.engagements e"
            " ON e.id = c.engagement_id WHERE e.name = 'alpha' AND c.name = 'db'), %s), 1, %s,"
            " NULL, NULL, NULL, 'web1')",
            (secrets.token_bytes(16), b"credential-envelope"),
        )
    item = "web1" if kind == "system" else "db"
    action = "system-show" if kind == "system" else "show"
    before = team.audit_count(action)
    script = (
        "BEGIN;\n"
        f"SELECT credvault.request_record('{kind}', 'alpha', '{item}') AS req \\gset\n"
        "SELECT encode(e1, 'hex') FROM credvault.fetch_record(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("bob", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert ADDRESS_HEX not in out.stdout
    assert team.audit_count(action) == before  # rolled back: and nothing was released
    # honestly, in two transactions, the same member gets it, on the record
    with team.connect("bob") as conn:
        req = conn.execute(
            "SELECT credvault.request_record(%s, 'alpha', %s)", (kind, item)
        ).fetchone()[0]
        assert bytes(fetch_record(conn, req, "e1")[0]) == ADDRESS
    assert team.audit_count(action) == before + 1


def test_synchronous_commit_off_never_outruns_the_system_audit_row(team: Any) -> None:
    cluster = team.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        before = team.audit_count("system-show")
        script = (
            "SET synchronous_commit = off;\n"
            "SELECT credvault.request_record('system', 'alpha', 'web1') AS req \\gset\n"
            "SELECT encode(e1, 'hex') FROM credvault.fetch_record(:req);\n"
        )
        out = team.psql("bob", script)
        released = ADDRESS_HEX in out.stdout
        if not released:
            assert "not yet durable" in out.stderr, out.stderr
        cluster.crash()
        cluster.start()
        if released:
            assert team.audit_count("system-show") == before + 1
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


def test_record_request_is_single_use_and_personal(team: Any) -> None:
    import psycopg

    with team.connect("bob") as bob, team.connect("eve") as eve:
        req = bob.execute("SELECT credvault.request_record('system', 'alpha', 'web1')").fetchone()[
            0
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT * FROM credvault.fetch_record(%s)", (req,))
        fetch_record(bob, req, "e1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="already used"):
            bob.execute("SELECT * FROM credvault.fetch_record(%s)", (req,))


def test_no_system_of_an_engagement_without_a_role(team: Any) -> None:
    """mallory (reader on beta only) asks for alpha's system: refused and on the record;
    listings hide alpha's systems (row-level security)."""
    out = team.psql("mallory", "SELECT credvault.request_record('system', 'alpha', 'web1') IS NULL")
    assert out.stdout.strip() == "t"
    with team.connect() as owner:
        last = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert last == ("mallory", "system show", "denied", "no grant")
    out = team.psql("mallory", "SELECT name FROM credvault.systems ORDER BY name")
    assert out.stdout.split() == ["gw"]


def test_a_client_exports_other_records_are_on_the_record_first(team: Any) -> None:
    """request_export_records/fetch_export_records (section pgexport), as the attacker: no
    role, no release (audited); the ROLLBACK trick releases nothing; a request is its
    member's, once."""
    import psycopg

    out = team.psql("mallory", "SELECT credvault.request_export_records('alpha', '') IS NULL")
    assert out.stdout.strip() == "t"
    with team.connect() as owner:
        last = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert last == ("mallory", "export", "denied", "no grant")
    before = team.audit_count("system-show")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_export_records('alpha', 'T-1') AS req \\gset\n"
        "SELECT tbl, encode(e1, 'hex') FROM credvault.fetch_export_records(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("bob", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert ADDRESS_HEX not in out.stdout
    assert team.audit_count("system-show") == before
    with team.connect("bob") as bob, team.connect("eve") as eve:
        req = bob.execute("SELECT credvault.request_export_records('alpha', 'T-1')").fetchone()[0]
        assert team.audit_count("system-show") == before + 1  # web1, committed first
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT * FROM credvault.fetch_export_records(%s)", (req,))
        row = fetch_as_a_client(bob, req, "tbl, name, e1", "fetch_export_records")
        assert (row[0], row[1], bytes(row[2])) == ("systems", "web1", ADDRESS)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="already used"):
            bob.execute("SELECT * FROM credvault.fetch_export_records(%s)", (req,))


def test_a_revoked_member_is_refused_at_the_record_fetch(team: Any) -> None:
    import psycopg

    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_record('system', 'alpha', 'web1')").fetchone()[
            0
        ]
        out = team.psql("alice", "SELECT credvault.revoke_grant('alpha', 'bob')")
        assert out.returncode == 0, out.stderr
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="revoked"):
            fetch_record(bob, req, "e1")


def test_a_reader_cannot_write_systems_through_the_functions(team: Any) -> None:
    """eve (reader) calls the write functions directly: refused, audited, nothing moved."""
    assert put_system(team, "eve", "alpha", "web1", b"eve's address") is None
    assert put_system(team, "eve", "alpha", "new", b"eve's address") is None
    out = team.psql("eve", "SELECT outcome FROM credvault.remove_system('alpha', 'web1')")
    assert out.stdout.strip() == "denied"
    out = team.psql(
        "eve",
        "SELECT credvault.set_system('alpha', 'web1', NULL, 1, 22, 'ssh', '\\x00', NULL,"
        " false, '{address,details}')",
    )
    assert out.stdout.strip() == "denied"
    with team.connect() as owner:
        rows = owner.execute(
            "SELECT s.name, s.address_env, s.details_env FROM credvault.systems s "
            "JOIN credvault.engagements e ON e.id = s.engagement_id WHERE e.name = 'alpha'"
        ).fetchall()
        last = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 4"
        ).fetchall()
    assert [(n, bytes(a), bytes(d)) for n, a, d in rows] == [("web1", ADDRESS, DETAILS)]
    assert last == [
        ("eve", "system set", "denied", "role reader"),
        ("eve", "system rm", "denied", "role reader"),
        ("eve", "system add", "denied", "role reader"),
        ("eve", "system add", "denied", "role reader"),
    ]


def test_an_engineer_cannot_swap_a_systems_uid(team: Any) -> None:
    """The uid is part of every envelope's place, and credentials' links are bound to it:
    an update must name the system's own."""
    import psycopg

    with pytest.raises(psycopg.errors.SerializationFailure, match="changed meanwhile"):
        put_system(team, "bob", "alpha", "web1", b"bob's address")
    # system set: nor there; and a new port without an address sealed for it is refused
    # (the stored address is bound to port 22: it would no longer open)
    with team.connect() as owner:
        uid = owner.execute("SELECT uid FROM credvault.systems WHERE name = 'web1'").fetchone()[0]
    with team.connect("bob") as bob:
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed meanwhile"):
            bob.execute(
                "SELECT credvault.set_system('alpha', 'web1', %s, 1, 22, 'ssh', %s, NULL, true,"
                " '{address}')",
                (secrets.token_bytes(16), b"bob's address"),
            )
        bob.rollback()
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid system change"):
            bob.execute(
                "SELECT credvault.set_system('alpha', 'web1', %s, 1, 2222, 'ssh', NULL, NULL,"
                " true, '{port}')",
                (uid,),
            )
        bob.rollback()
        got = bob.execute(
            "SELECT credvault.set_system('alpha', 'web1', %s, 1, 22, 'ssh', NULL, NULL, false,"
            " '{details}')",
            (uid,),
        ).fetchone()[0]
        bob.commit()
    assert got == "ok"
    with team.connect() as owner:
        row = owner.execute(
            "SELECT address_env, details_env, port FROM credvault.systems WHERE name = 'web1'"
        ).fetchone()
        last = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert (bytes(row[0]), row[1], row[2]) == (ADDRESS, None, 22)  # details cleared, address kept
    assert last == ("bob", "system-set", "ok", "changed details")


def test_removed_system_goes_to_the_trash_and_leaves_with_the_purge(team: Any) -> None:
    with team.connect("eve") as eve:  # a request row naming alpha
        assert eve.execute("SELECT credvault.request_record('system', 'alpha', 'web1')").fetchone()[
            0
        ]
    out = team.psql("bob", "SELECT outcome FROM credvault.remove_system('alpha', 'web1')")
    assert out.stdout.strip() == "ok", out.stderr
    out = team.psql("eve", "SELECT name, deleted_by FROM credvault.system_trash")
    assert out.stdout.split() == ["web1|bob"]
    with team.connect("alice") as alice:  # a shred: destroy_engagement, as the client does
        facts = alice.execute(
            "SELECT credvault.destroy_engagement('alpha', 'request', false)"
        ).fetchone()[0]
    assert facts["destroyed"]["trashed_systems"] == 1
    with team.connect() as owner:
        left = owner.execute(
            "SELECT (SELECT count(*) FROM credvault.system_trash t JOIN credvault.engagements e"
            " ON e.id = t.engagement_id WHERE e.name = 'alpha'),"
            " (SELECT count(*) FROM credvault.record_requests r JOIN credvault.engagements e"
            " ON e.id = r.engagement_id WHERE e.name = 'alpha')"
        ).fetchone()
    assert left == (0, 0)


# -- history ---------------------------------------------------------------------------------
OLD = b"OLD-VALUE-ENVELOPE-\x00\x04"


def _two_versions(pg: Any) -> None:
    """alpha/db: version 1 is OLD (what alice stored first), version 2 the current value."""
    with pg.connect("alice") as conn:
        for env in (OLD, b"current-envelope"):
            conn.execute(
                "SELECT credvault.put_credential('alpha', 'hist', 'password', %s, 1, %s)",
                (secrets.token_bytes(16), env),
            )


@pytest.mark.parametrize("kind", ["version", "version-show"])
def test_rollback_trick_yields_no_earlier_version(team: Any, kind: str) -> None:
    _two_versions(team)
    action = "get" if kind == "version" else "show"
    before = team.audit_count(action)
    script = (
        "BEGIN;\n"
        f"SELECT credvault.request_record('{kind}', 'alpha', 'hist', '', 1) AS req \\gset\n"
        "SELECT encode(e1, 'hex'), encode(e2, 'hex') FROM credvault.fetch_record(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("eve", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert OLD.hex() not in out.stdout
    assert team.audit_count(action) == before
    with team.connect("eve") as conn:
        req = conn.execute(
            "SELECT credvault.request_record(%s, 'alpha', 'hist', 'why', 1)", (kind,)
        ).fetchone()[0]
        row = fetch_record(conn, req, "e1, audit_seq")
    # 'version-show' releases no secret; 'version' releases it, on the record
    assert (None if row[0] is None else bytes(row[0])) == (OLD if kind == "version" else None)
    with team.connect() as owner:
        entry = owner.execute(
            "SELECT member, action, item, outcome, detail FROM credvault.audit WHERE seq = %s",
            (row[1],),
        ).fetchone()
    detail = "version 1" if kind == "version" else "version 1: fields without the secret"
    assert entry == ("eve", action, "hist", "ok", detail + "; reason: why")


def test_no_write_replaces_a_value_without_keeping_it(team: Any) -> None:
    """bob (engineer) writes through version 1's put_credential, not the client's path: the
    server keeps the old value all the same (a trigger, whatever function writes)."""
    _two_versions(team)
    out = team.psql(
        "bob",
        "SELECT credvault.put_credential('alpha', 'hist', 'password', '\\x0102', 1, '\\x0304')",
    )
    assert out.returncode == 0, out.stderr
    with team.connect() as owner:
        rows = owner.execute(
            "SELECT version, created_by, secret_env FROM credvault.credential_versions "
            "WHERE name = 'hist' ORDER BY version"
        ).fetchall()
        current = owner.execute(
            "SELECT version, updated_by FROM credvault.credentials WHERE name = 'hist'"
        ).fetchone()
    assert [(v, by, bytes(env)) for v, by, env in rows] == [
        (1, "alice", OLD),
        (2, "alice", b"current-envelope"),
    ]
    assert current == (3, "bob")
    out = team.psql("eve", "SELECT version, changed FROM credvault.credential_versions ORDER BY 1")
    assert out.stdout.split() == ["1|created", "2|secret"]


def test_a_reader_cannot_revert_through_the_function(team: Any) -> None:
    _two_versions(team)
    out = team.psql("eve", "SELECT credvault.revert_credential('alpha', 'hist', 1)")
    assert out.stdout.strip() == "denied"
    with team.connect() as owner:
        env = owner.execute(
            "SELECT secret_env FROM credvault.credentials WHERE name = 'hist'"
        ).fetchone()[0]
        last = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert bytes(env) == b"current-envelope"
    assert last == ("eve", "revert", "denied", "role reader")
    # the engineer may, and the replaced value is kept as a version
    out = team.psql("bob", "SELECT credvault.revert_credential('alpha', 'hist', 1)")
    assert out.stdout.strip() == "ok", out.stderr
    with team.connect() as owner:
        env = owner.execute(
            "SELECT secret_env FROM credvault.credentials WHERE name = 'hist'"
        ).fetchone()[0]
        kept = owner.execute(
            "SELECT count(*) FROM credvault.credential_versions WHERE name = 'hist'"
        ).fetchone()[0]
    assert (bytes(env), kept) == (OLD, 2)


# -- edit, mv, find ----------------------------------------------------------------------------
def test_rollback_trick_yields_no_field_of_a_search(team: Any) -> None:
    before = team.audit_count("find")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_find('alpha') AS req \\gset\n"
        "SELECT encode(e1, 'hex') FROM credvault.fetch_find(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("eve", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert ADDRESS_HEX not in out.stdout
    assert team.audit_count("find") == before
    with team.connect("eve") as conn:
        # a request of another kind opens no search, and a search request no record
        other = conn.execute(
            "SELECT credvault.request_record('system', 'alpha', 'web1')"
        ).fetchone()[0]
        import psycopg

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            conn.execute("SELECT * FROM credvault.fetch_find(%s)", (other,))
        req = conn.execute("SELECT credvault.request_find('alpha', 'audit')").fetchone()[0]
        rows = fetch_as_a_client(conn, req, "tbl, name, e1", "fetch_find")
    assert tuple(rows[:2]) == ("credentials", "db")  # fetchone: the first record
    assert team.audit_count("find") == before + 1
    out = team.psql("mallory", "SELECT credvault.request_find('alpha') IS NULL")
    assert out.stdout.strip() == "t"  # no role on alpha: refused, and on the record
    assert team.audit_count("find") == before + 2


def test_a_reader_can_neither_edit_nor_rename(team: Any) -> None:
    before = team.audit_count()
    out = team.psql(
        "eve",
        "SELECT credvault.edit_credential('alpha', 'db', '\\x00', 1, true, '\\x01', false, NULL,"
        " false, NULL, 'token', false, NULL, 'username, kind')",
    )
    assert out.stdout.strip() == "denied"
    out = team.psql("eve", "SELECT credvault.rename_credential('alpha', 'db', 'mine')")
    assert out.stdout.strip() == "denied"
    with team.connect() as owner:
        row = owner.execute(
            "SELECT name, kind, username_env FROM credvault.credentials WHERE name = 'db'"
        ).fetchone()
        last = owner.execute(
            "SELECT member, action, outcome FROM credvault.audit ORDER BY seq DESC LIMIT 2"
        ).fetchall()
    assert row == ("db", "password", None)
    assert last == [("eve", "mv", "denied"), ("eve", "edit", "denied")]
    assert team.audit_count() == before + 2


def test_an_edit_keeps_the_version_it_replaces(team: Any) -> None:
    """bob (engineer) edits through the function: the old username envelope stays as a
    version, and the secret is untouched."""
    with team.connect("bob") as bob:
        (uid,) = bob.execute("SELECT uid FROM credvault.credentials WHERE name = 'db'").fetchone()
        out = bob.execute(
            "SELECT credvault.edit_credential('alpha', 'db', %s, 1, true, %s, false, NULL,"
            " false, NULL, NULL, false, NULL, 'username')",
            (uid, b"new-username-envelope"),
        ).fetchone()[0]
    assert out == "ok"
    with team.connect() as owner:
        cur = owner.execute(
            "SELECT version, secret_env, username_env FROM credvault.credentials WHERE name = 'db'"
        ).fetchone()
        kept = owner.execute(
            "SELECT version, changed, username_env FROM credvault.credential_versions "
            "WHERE name = 'db'"
        ).fetchall()
    assert (cur[0], bytes(cur[1]), bytes(cur[2])) == (
        2,
        b"credential-envelope",
        b"new-username-envelope",
    )
    assert [(v, c, u) for v, c, u in kept] == [(1, "created", None)]


# -- the trash -------------------------------------------------------------------------------
def test_rm_keeps_the_envelopes_out_of_reach_and_only_writers_use_the_trash(team: Any) -> None:
    out = team.psql("eve", "SELECT outcome FROM credvault.remove_credential('alpha', 'db')")
    assert out.stdout.strip() == "denied"
    out = team.psql("bob", "SELECT outcome FROM credvault.remove_credential('alpha', 'db')")
    assert out.stdout.strip() == "ok", out.stderr
    # listed by name (row-level security), never by envelope
    out = team.psql("eve", "SELECT name, deleted_by FROM credvault.credential_trash")
    assert out.stdout.split() == ["db|bob"]
    out = team.psql("mallory", "SELECT count(*) FROM credvault.credential_trash")
    assert out.stdout.split() == ["0"]
    assert team.psql("mallory", "SELECT * FROM credvault.trash_list('alpha')").stdout == ""
    for fn in ("restore_trashed", "destroy_trashed"):
        out = team.psql("eve", f"SELECT credvault.{fn}('alpha', 'db', false)")
        assert out.stdout.strip() == "denied"
    # a removed credential cannot be read: request_read finds nothing to release
    out = team.psql("eve", "SELECT credvault.request_read('alpha', 'db') IS NULL")
    assert out.stdout.strip() == "t"
    with team.connect() as owner:
        last = owner.execute(
            "SELECT member, action, outcome FROM credvault.audit ORDER BY seq DESC LIMIT 4"
        ).fetchall()
    assert last == [
        ("eve", "get", "error"),
        ("eve", "trash purge", "denied"),
        ("eve", "restore", "denied"),
        ("mallory", "trash", "denied"),
    ]
    out = team.psql("bob", "SELECT credvault.restore_trashed('alpha', 'db', false)")
    assert out.stdout.strip() == "ok", out.stderr
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req)[0]) == b"credential-envelope"


def test_field_reads_never_release_the_secret(team: Any) -> None:
    """kind 'fields' (get --field username, edit in $EDITOR) is audited as a show, so it must
    not carry the secret's envelope; and the ROLLBACK trick gets nothing."""
    before = team.audit_count("show")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_record('fields', 'alpha', 'db') AS req \\gset\n"
        "SELECT encode(e2, 'hex') FROM credvault.fetch_record(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("eve", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert team.audit_count("show") == before
    with team.connect("eve") as conn:
        req = conn.execute("SELECT credvault.request_record('fields', 'alpha', 'db')").fetchone()[0]
        row = fetch_record(conn, req, "e1, name, kind")
    assert tuple(row) == (None, "db", "password")
    assert team.audit_count("show") == before + 1


def test_otp_run_and_ssh_reads_are_on_the_record_first(team: Any) -> None:
    """request_use/fetch_use (otp, run, ssh; section pgdaily) as the attacker: the ROLLBACK
    trick gets nothing; a `show` use never carries the secret; another member's request,
    or a request of another kind, releases nothing; the command's name is no reason; a
    member without a role is refused, on the record."""
    import psycopg

    before = team.audit_count("otp")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_use('otp', 'alpha', 'db', 'T-1') AS req \\gset\n"
        "SELECT encode(secret_env, 'hex') FROM credvault.fetch_use(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("eve", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert b"credential-envelope".hex() not in out.stdout
    assert team.audit_count("otp") == before
    with team.connect("eve") as eve, team.connect("bob") as bob:
        req = eve.execute(
            "SELECT credvault.request_use('show', 'alpha', 'db', '', 'run psql')"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            bob.execute("SELECT * FROM credvault.fetch_use(%s)", (req,))
        row = fetch_as_a_client(eve, req, "secret_env, name, audit_seq", "fetch_use")
        assert tuple(row[:2]) == (None, "db")
        other = eve.execute(
            "SELECT credvault.request_record('system', 'alpha', 'web1')"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT * FROM credvault.fetch_use(%s)", (other,))
        req = eve.execute(
            "SELECT credvault.request_use('get', 'alpha', 'db', 'T-2', 'ssh web1')"
        ).fetchone()[0]
        got = fetch_as_a_client(eve, req, "secret_env, audit_seq", "fetch_use")
        assert bytes(got[0]) == b"credential-envelope"
    with team.connect() as owner:
        owner.execute("UPDATE credvault.engagements SET require_reason = true WHERE name = 'alpha'")
    for who in ("mallory", "eve"):
        out = team.psql(
            who, "SELECT credvault.request_use('get', 'alpha', 'db', '', 'run x') IS NULL"
        )
        assert out.stdout.strip() == "t", out.stderr
    with team.connect() as owner:
        entries = owner.execute(
            "SELECT member, action, outcome, detail FROM credvault.audit "
            "WHERE seq = %s OR seq = %s OR (action = 'get' AND outcome = 'denied') ORDER BY seq",
            (row[2], got[1]),
        ).fetchall()
    assert entries == [
        ("eve", "show", "ok", "fields without the secret; reason: run psql"),
        ("eve", "get", "ok", "reason: ssh web1: T-2"),
        ("mallory", "get", "denied", "no grant"),
        ("eve", "get", "denied", "this engagement requires --reason"),
    ]


def _moved_to(team: Any) -> list[tuple[str, str]]:
    """(engagement, name) of every credential, as the owner sees them."""
    with team.connect() as owner:
        rows = owner.execute(
            "SELECT e.name, c.name FROM credvault.credentials c"
            " JOIN credvault.engagements e ON e.id = c.engagement_id ORDER BY 1, 2"
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_mv_to_another_engagement_needs_both_writes_and_its_own_audited_read(
    team: Any,
) -> None:
    """bob (engineer on alpha) calls the move functions directly (upgrade-2.sql, section
    pgrec): into beta, where he holds no role, he is refused and on the record; with a
    writing role on beta revoked, or a new value put, between the read and the store, the
    store refuses and alpha keeps the credential; a move request is his own, fetched first, used once; the
    ROLLBACK trick releases nothing; an honest move changes both sides in one step."""
    import psycopg

    sealed = b"\x02\x00\x00\x00\x01" + secrets.token_bytes(40)  # bound, key version 1
    store = (
        "SELECT credvault.move_credential(%s, %s, %s, 1, %s, NULL, NULL, NULL,"
        " '{}'::bigint[], '{}'::bytea[], '{}'::bytea[], '{}'::bytea[], '{}'::bytea[])"
    )
    with team.connect("bob") as bob:
        got = bob.execute("SELECT * FROM credvault.request_move('alpha', 'db', 'beta', 'db')")
        assert got.fetchone() == ("denied", None)
    with team.connect() as owner:
        last = owner.execute(
            "SELECT member, action, engagement, item, outcome, detail FROM credvault.audit"
            " ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert last == ("bob", "mv", "beta", "db", "denied", "no grant")
    # the ROLLBACK trick: the request rolled back, so nothing is released
    script = (
        "BEGIN;\n"
        "SELECT request AS req FROM credvault.request_move('alpha', 'db', 'beta', 'x') \\gset\n"
        "SELECT encode(e1, 'hex') FROM credvault.fetch_move(:req);\n"
        "ROLLBACK;\n"
    )
    team.grant("alice", "beta", "bob", "engineer")
    out = team.psql("bob", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert b"credential-envelope".hex() not in out.stdout
    with team.connect("bob") as bob, team.connect("eve") as eve:
        req = bob.execute(
            "SELECT request FROM credvault.request_move('alpha', 'db', 'beta', 'db')"
        ).fetchone()[0]
        uid, version = (
            bob.execute("SELECT uid, version FROM credvault.credentials WHERE name = 'db'")
            .fetchone()
        )  # fmt: skip
        args = (req, uid, version, sealed)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such move request"):
            bob.execute(store, args)  # not fetched: no audited read, no move
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT * FROM credvault.fetch_move(%s)", (req,))
        rows = fetch_as_a_client(bob, req, "tbl, e1", "fetch_move")
        assert (rows[0], bytes(rows[1])) == ("credentials", b"credential-envelope")
        # alice revokes bob on beta before he stores: the source must not be dropped
        out = team.psql("alice", "SELECT credvault.revoke_grant('beta', 'bob')")
        assert out.returncode == 0, out.stderr
        assert bob.execute(store, args).fetchone()[0] == "denied"
        assert _moved_to(team) == [("alpha", "db")]
        team.grant("alice", "beta", "bob", "engineer")
        # a new value put between the read and the store: refused, nothing changed
        req = bob.execute(
            "SELECT request FROM credvault.request_move('alpha', 'db', 'beta', 'db2')"
        ).fetchone()[0]
        fetch_as_a_client(bob, req, "tbl", "fetch_move")
        team.put("alice", "alpha", "db", b"replaced-envelope")
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed meanwhile"):
            bob.execute(store, (req, uid, version, sealed))
        assert _moved_to(team) == [("alpha", "db")]
        # an honest move: both sides in one transaction, audited on both, used once
        req = bob.execute(
            "SELECT request FROM credvault.request_move('alpha', 'db', 'beta', 'db2')"
        ).fetchone()[0]
        fetch_as_a_client(bob, req, "tbl", "fetch_move")
        uid, version = (
            bob.execute("SELECT uid, version FROM credvault.credentials WHERE name = 'db'")
            .fetchone()
        )  # fmt: skip
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            bob.execute(store, (req, uid, version, b"\x01" + sealed[1:]))  # not record-bound
        with pytest.raises(psycopg.errors.SerializationFailure, match="versions changed"):
            bob.execute(store, (req, uid, version, sealed))  # its version 1 left behind
        vid = bob.execute("SELECT id FROM credvault.credential_versions").fetchone()[0]
        honest = store.replace(
            "'{}'::bigint[], '{}'::bytea[]", "ARRAY[%s]::bigint[], ARRAY[%s]::bytea[]"
        ).replace("'{}'::bytea[]", "ARRAY[NULL]::bytea[]")
        assert bob.execute(honest, (req, uid, version, sealed, vid, sealed)).fetchone()[0] == "ok"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such move request"):
            bob.execute(honest, (req, uid, version, sealed, vid, sealed))
    assert _moved_to(team) == [("beta", "db2")]
    with team.connect() as owner:  # the version went with it, renamed
        assert owner.execute(
            "SELECT e.name, v.name FROM credvault.credential_versions v"
            " JOIN credvault.engagements e ON e.id = v.engagement_id"
        ).fetchall() == [("beta", "db2")]
    with team.connect("alice") as alice:  # beta's shred takes its move requests with it
        alice.execute("SELECT credvault.destroy_engagement('beta', 'request', false)")
    with team.connect() as owner:
        assert owner.execute("SELECT count(*) FROM credvault.move_requests").fetchone()[0] == 0
    with team.connect() as owner:
        trail = owner.execute(
            "SELECT engagement, item, outcome, detail FROM credvault.audit"
            " WHERE member = 'bob' AND action IN ('mv', 'rebind') ORDER BY seq"
        ).fetchall()
    assert trail == [
        ("beta", "db", "denied", "no grant"),
        ("alpha", "db", "ok", "released to seal it again for beta/db"),
        ("beta", "db", "denied", "no grant"),
        ("alpha", "db", "ok", "released to seal it again for beta/db2"),
        ("alpha", "db", "ok", "released to seal it again for beta/db2"),
        ("alpha", "db", "ok", "moved to beta/db2"),
        ("beta", "db2", "ok", "moved from alpha/db"),
    ]


def test_a_reader_cannot_import_through_the_function(team_ro: Any) -> None:
    """eve (reader on alpha) and mallory (no role there) call import_credentials and
    request_import directly: refused, each refusal on the record, nothing stored."""
    sealed = b"\x02\x00\x00\x00\x01" + secrets.token_bytes(40)
    before = _moved_to(team_ro)
    for who, held in (("eve", "role reader"), ("mallory", "no grant")):
        with team_ro.connect(who) as conn:
            got = conn.execute(
                "SELECT credvault.import_credentials('alpha', false, 1, 0, '{}', '{}', '{}',"
                " '{}', '{}', ARRAY['mine'], ARRAY['password'], ARRAY[%s::bytea],"
                " ARRAY[NULL::text], ARRAY[%s::bytea], ARRAY[NULL::bytea], ARRAY[NULL::bytea],"
                " ARRAY[NULL::bytea])",
                (secrets.token_bytes(16), sealed),
            ).fetchone()[0]
            assert got == "denied"
            assert conn.execute("SELECT credvault.request_import('alpha')").fetchone()[0] is None
        with team_ro.connect() as owner:
            last = owner.execute(
                "SELECT member, action, outcome, detail FROM credvault.audit"
                " ORDER BY seq DESC LIMIT 2"
            ).fetchall()
        assert last == [(who, "import", "denied", held)] * 2
    assert _moved_to(team_ro) == before
