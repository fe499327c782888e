"""Insider tests for the PostgreSQL server side, written as the attacker: a member with
their own login, the real ``psql`` and every trick of SQL, trying to get ciphertext
without a committed audit entry, to write grants/log/audit, to see engagements they hold
no role in, and to gain roles.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from pg_cluster import fetch_as_a_client, fetch_rolled_back, new_pg_vault, write_once
from pg_cluster import psql_denied as denied

ENVELOPE = b"ENVELOPE-\x00\x01-not-really-but-opaque-to-the-server"
ENVELOPE_HEX = ENVELOPE.hex()


def _populate(pg: Any) -> Any:
    """alice (admin, lead of alpha), bob (engineer on alpha), eve (reader on beta only)."""
    pg.add("bob")
    pg.add("eve")
    pg.engagement("alpha")
    pg.engagement("beta")
    pg.grant("alice", "alpha", "bob", "engineer")
    pg.grant("alice", "beta", "eve", "reader")
    pg.put("alice", "alpha", "db", ENVELOPE)
    pg.put("alice", "beta", "wifi", b"beta-envelope")
    return pg


@pytest.fixture
def team(pg: Any) -> Any:
    return _populate(pg)


@pytest.fixture(scope="module")
def team_ro(pg_cluster: Any) -> Any:
    """One shared team for the attempts that must change nothing (each test asserts so)."""
    return _populate(new_pg_vault(pg_cluster))


PROTECTED_READS = [
    "SELECT secret_env FROM credvault.credentials",
    "SELECT * FROM credvault.credentials",
    "SELECT username_env FROM credvault.credentials",
    "SELECT address_env FROM credvault.systems",
    "SELECT * FROM credvault.grants",
    "SELECT sealed FROM credvault.grants",
    "SELECT * FROM credvault.audit",
    "SELECT * FROM credvault.audit_head",
    "SELECT * FROM credvault.membership_log",
    "SELECT * FROM credvault.read_requests",
    "SELECT * FROM credvault.rotation_requests",
    "SELECT * FROM credvault.meta",
    "SELECT role_name FROM credvault.members",
    "COPY credvault.credentials TO STDOUT",
]


@pytest.mark.parametrize("sql", PROTECTED_READS)
def test_member_cannot_read_protected_columns_or_tables(team_ro: Any, sql: str) -> None:
    out = team_ro.psql("bob", sql)
    assert denied(out), (sql, out.stdout, out.stderr)
    assert ENVELOPE_HEX not in out.stdout


PROTECTED_WRITES = [
    "INSERT INTO credvault.grants (engagement_id, member, role, granted_by, role_sig)"
    " SELECT id, 'eve', 'lead', 'alice', '\\x00' FROM credvault.engagements",
    "UPDATE credvault.grants SET role = 'lead'",
    "DELETE FROM credvault.grants",
    "UPDATE credvault.audit SET detail = 'x'",
    "DELETE FROM credvault.audit",
    "INSERT INTO credvault.audit (seq, ts, member, action, outcome, prev, hash)"
    " VALUES (999, now(), 'alice', 'get', 'ok', '\\x00', '\\x00')",
    "UPDATE credvault.audit_head SET seq = 0",
    "DELETE FROM credvault.membership_log",
    "INSERT INTO credvault.membership_log (signer, entry, sig) VALUES ('alice', '\\x00', '\\x00')",
    "UPDATE credvault.members SET admin = true",
    "UPDATE credvault.engagements SET state = 'purged'",
    "UPDATE credvault.engagements SET require_reason = false, grace_days = 0",
    "DELETE FROM credvault.credentials",
    "UPDATE credvault.read_requests SET used_at = NULL",
    "UPDATE credvault.read_requests SET claim_lsn = '0/0'",
    "UPDATE credvault.read_requests SET cred_xmin = NULL",
    "UPDATE credvault.rotation_requests SET used_at = NULL",
    "TRUNCATE credvault.audit",
    "ALTER TABLE credvault.audit DISABLE ROW LEVEL SECURITY",
    "SELECT credvault.audit_append('alice', 'get', 'alpha', 'db', 'ok', '')",
    # the write functions' opening (section pgclosed) audits a refusal: owner-only
    "SELECT credvault.open_for_write('alpha', 'put', 'db')",
    "SELECT credvault.create_member_role('mallory', 'SCRAM-SHA-256$x', true, 'active')",
    "CREATE FUNCTION credvault.me() RETURNS text LANGUAGE sql AS $$ SELECT 'alice' $$",
    "CREATE TEMP TABLE members (name text, role_name text, state text)",
    # the revocation list: appended only by remove_member_logged, for an admin
    "DELETE FROM credvault.revocation_list",
    "INSERT INTO credvault.revocation_list (version, statement, hash, signer, member)"
    " VALUES (1, '\\x00', '\\x00', 'alice', 'bob')",
    "SELECT credvault.revocation_append('bob', 'alice', '\\x00')",
]


@pytest.mark.parametrize("sql", PROTECTED_WRITES)
def test_member_cannot_write_security_state(team_ro: Any, sql: str) -> None:
    before = team_ro.audit_count()
    out = team_ro.psql("bob", sql)
    assert denied(out), (sql, out.stdout, out.stderr)
    assert team_ro.audit_count() == before


def test_listings_limited_to_own_engagements(team_ro: Any) -> None:
    out = team_ro.psql("eve", "SELECT name FROM credvault.engagements ORDER BY name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["beta"]
    out = team_ro.psql("eve", "SELECT name FROM credvault.credentials ORDER BY name")
    assert out.stdout.split() == ["wifi"]
    out = team_ro.psql("bob", "SELECT name FROM credvault.credentials ORDER BY name")
    assert out.stdout.split() == ["db"]
    # a guessed id does not get round the policy either
    out = team_ro.psql("eve", "SELECT count(*) FROM credvault.credentials WHERE name = 'db'")
    assert out.stdout.split() == ["0"]


def test_honest_two_phase_read_is_on_the_record_first(team: Any) -> None:
    before = team.audit_count("get")
    with team.connect("bob") as conn:
        req = conn.execute("SELECT credvault.request_read('alpha', 'db', 'deploy')").fetchone()[0]
        assert req is not None
        assert team.audit_count("get") == before + 1  # committed before any fetch
        row = fetch_as_a_client(conn, req, "secret_env, audit_seq")
    assert bytes(row[0]) == ENVELOPE
    with team.connect() as owner:
        entry = owner.execute(
            "SELECT member, action, engagement, item, outcome, detail FROM credvault.audit "
            "WHERE seq = %s",
            (row[1],),
        ).fetchone()
    assert entry == ("bob", "get", "alpha", "db", "ok", "reason: deploy")


def test_rollback_trick_yields_no_ciphertext(team: Any) -> None:
    before = team.audit_count("get")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_read('alpha', 'db') AS req \\gset\n"
        "SELECT encode(secret_env, 'hex') FROM credvault.fetch(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("bob", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert ENVELOPE_HEX not in out.stdout
    assert team.audit_count("get") == before  # rolled back: and nothing was released


def test_request_is_single_use_and_personal(team: Any) -> None:
    team.grant("alice", "alpha", "eve", "reader")
    with team.connect("bob") as bob, team.connect("eve") as eve:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        import psycopg

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT * FROM credvault.fetch(%s)", (req,))
        fetch_as_a_client(bob, req)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="already used"):
            bob.execute("SELECT * FROM credvault.fetch(%s)", (req,))


def test_denied_read_is_audited_and_releases_nothing(team: Any) -> None:
    before = team.audit_count("get")
    out = team.psql("eve", "SELECT credvault.request_read('alpha', 'db') IS NULL")
    assert out.stdout.strip() == "t"
    assert team.audit_count("get") == before + 1
    with team.connect() as owner:
        outcome = owner.execute(
            "SELECT member, outcome FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert outcome == ("eve", "denied")


def test_synchronous_commit_off_never_outruns_the_audit_row(team: Any) -> None:
    """The attacker commits the request asynchronously, hoping a crash loses the audit row
    after the ciphertext left. With the WAL writer slowed to 10 s the request is not
    flushed on its own: fetch must refuse, or (if something else flushed it) the audit
    row must survive a crash."""
    cluster = team.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        before = team.audit_count("get")
        script = (
            "SET synchronous_commit = off;\n"
            "SELECT credvault.request_read('alpha', 'db') AS req \\gset\n"
            "SELECT encode(secret_env, 'hex') FROM credvault.fetch(:req);\n"
        )
        out = team.psql("bob", script)
        released = ENVELOPE_HEX in out.stdout

        if not released:
            assert "not yet durable" in out.stderr, out.stderr
        cluster.crash()
        cluster.start()
        if released:
            assert team.audit_count("get") == before + 1
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


ESCALATIONS = [
    "CREATE ROLE mallory LOGIN",
    "ALTER ROLE CURRENT_USER CREATEROLE",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "SET ROLE {db}_owner",
    "GRANT {db}_owner TO CURRENT_USER",
    "GRANT {db}_alice TO CURRENT_USER",
    "SET SESSION AUTHORIZATION {db}_alice",
    "ALTER ROLE {db}_alice PASSWORD 'x'",
    "SELECT credvault.add_member('mallory', 'SCRAM-SHA-256$4096:x$y:z', true)",
    "SELECT credvault.remove_member('alice')",
    "SELECT credvault.create_engagement('\\x00', 'gamma', 'c', 'fp', '\\x00', 'bob')",
    "SELECT credvault.put_grant('alpha', 'bob', 'lead', '\\x00', 1, NULL, NULL)",
    "SELECT credvault.append_membership_log('\\x00', '\\x00')",
    "CREATE TABLE public.shadow (x int)",
    "CREATE SCHEMA mine",
]


@pytest.mark.parametrize("sql", ESCALATIONS)
def test_no_privilege_escalation_through_role_management(team_ro: Any, sql: str) -> None:
    grants_before = team_ro.psql("bob", "SELECT count(*) FROM credvault.engagements").stdout
    out = team_ro.psql("bob", sql.format(db=team_ro.db))
    if out.returncode == 0:
        # put_grant by a non-lead returns quietly with a 'denied' audit row: check nothing moved
        assert "put_grant" in sql
        with team_ro.connect() as owner:
            role = owner.execute(
                "SELECT g.role FROM credvault.grants g JOIN credvault.engagements e "
                "ON e.id = g.engagement_id WHERE e.name = 'alpha' AND g.member = 'bob'"
            ).fetchone()[0]
            last = owner.execute(
                "SELECT member, action, outcome FROM credvault.audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        assert role == "engineer"
        assert last == ("bob", "grant", "denied")
    else:
        assert denied(out), (sql, out.stderr)
    assert team_ro.psql("bob", "SELECT count(*) FROM credvault.engagements").stdout == grants_before
    with team_ro.connect() as owner:
        roles = owner.execute(
            "SELECT rolname FROM pg_roles r WHERE rolname = 'mallory' OR rolname LIKE %s "
            "OR (rolcreaterole AND rolname LIKE %s)",
            (f"{team_ro.db}_mallory", f"{team_ro.db}_bob"),
        ).fetchall()
    assert roles == []


def test_admin_cannot_inject_through_member_names(team: Any) -> None:
    from credvault.postgres import scram_verifier

    for name in ['x"; DROP TABLE credvault.audit; --', "Alice", "a" * 40, "owner\x00"]:
        with team.connect("alice") as conn:
            import psycopg

            with pytest.raises(psycopg.Error):
                conn.execute(
                    "SELECT credvault.invite_member(%s, %s, false, 'ipk', 'sig')",
                    (name, scram_verifier("invite")),
                )
    assert team.audit_count() > 0  # the table is still there


def test_removal_is_immediate(team: Any) -> None:
    """Version 1's ``remove_member`` publishes no revocation list version: an admin's psql
    is refused it (``credvault member rm`` instead) and nothing changes. What it does (inside
    ``remove_member_logged`` now, or opened again by the DBA as here) is immediate."""
    import psycopg

    bob = team.connect("bob")
    assert bob.execute("SELECT credvault.me()").fetchone()[0] == "bob"
    out = team.psql("alice", "SELECT credvault.remove_member('bob')")
    assert denied(out), out.stderr
    assert "permission denied for function remove_member" in out.stderr
    assert bob.execute("SELECT credvault.me()").fetchone()[0] == "bob"
    team.cluster.superuser_sql(
        f"GRANT EXECUTE ON FUNCTION credvault.remove_member(text) TO {team.role('alice')}",
        team.db,
    )
    with team.connect("alice") as alice:
        killed = alice.execute("SELECT credvault.remove_member('bob')").fetchone()[0]
    assert killed >= 1
    with pytest.raises(psycopg.OperationalError):
        bob.execute("SELECT 1")
    bob.close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        team.connect("bob")
    with team.connect() as owner:
        assert owner.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (team.role("bob"),)
        ).fetchone() == (False,)
        grant = owner.execute(
            "SELECT revoked_at IS NOT NULL, sealed IS NULL FROM credvault.grants "
            "WHERE member = 'bob'"
        ).fetchone()
        rotation = owner.execute(
            "SELECT needs_rotation FROM credvault.engagements WHERE name = 'alpha'"
        ).fetchone()[0]
    assert grant == (True, True)
    assert rotation is True


def test_invitation_then_join_on_the_new_members_machine(pg: Any) -> None:
    import psycopg

    invitation = pg.invite("alice", "carol")
    with (
        psycopg.connect(
            pg.cluster.conninfo(pg.db, pg.role("carol")), password=invitation, autocommit=True
        ) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="not an active member"),
    ):
        conn.execute("SELECT credvault.request_read('x', 'y')")
    pg.join("carol", invitation)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.cluster.conninfo(pg.db, pg.role("carol")), password=invitation)
    with pg.connect("carol") as conn:
        assert conn.execute("SELECT credvault.me()").fetchone()[0] == "carol"
        keys = conn.execute(
            "SELECT length(sign_pub), length(kem_pub) FROM credvault.members WHERE name = 'carol'"
        ).fetchone()
    assert keys == (32, 32)


def test_audit_chain_verifies_and_catches_a_dba_edit(team: Any) -> None:
    with team.connect("alice") as alice:
        assert alice.execute("SELECT credvault.audit_verify()").fetchone()[0] is None
    with team.connect() as owner:
        seq = owner.execute("SELECT min(seq) + 2 FROM credvault.audit").fetchone()[0]
        owner.execute("UPDATE credvault.audit SET detail = 'edited' WHERE seq = %s", (seq,))
    with team.connect("alice") as alice:
        assert alice.execute("SELECT credvault.audit_verify()").fetchone()[0] == seq


# -- the rotation read and revocation (issue 14's CLI path) -------------------------------
def test_rotation_read_needs_a_committed_request_too(team: Any) -> None:
    """alice (lead) tries the ROLLBACK trick on the rotation read of every envelope."""
    before = team.audit_count("rotate")
    script = (
        "BEGIN;\n"
        "SELECT credvault.request_rotation('alpha') AS req \\gset\n"
        "SELECT encode(e1, 'hex') FROM credvault.rotation_fetch_records(:req);\n"
        "ROLLBACK;\n"
    )
    out = team.psql("alice", script)
    assert out.returncode != 0
    assert "not committed" in out.stderr
    assert ENVELOPE_HEX not in out.stdout
    assert team.audit_count("rotate") == before


def test_a_member_without_a_role_can_neither_rotate_nor_grant_herself(team: Any) -> None:
    """eve holds no role on alpha (a reader on beta only). A role check that is NULL for
    her (no role: role_in is NULL) once let her request alpha's rotation and fetch every
    envelope of it, and grant herself its lead (upgrade-2.sql, section pgexport, part 4)."""
    before = team.audit_count("rotate")
    out = team.psql("eve", "SELECT credvault.request_rotation('alpha') IS NULL")
    assert out.stdout.strip() == "t", out.stderr
    assert team.audit_count("rotate") == before + 1  # the refusal, on the record
    out = team.psql(
        "eve", "SELECT credvault.put_grant('alpha', 'eve', 'lead', '\\x00', 1, NULL, NULL)"
    )
    assert out.stdout.strip() == "f", out.stderr
    out = team.psql("eve", "SELECT credvault.request_read('alpha', 'db') IS NULL")
    assert out.stdout.strip() == "t"  # still no role: no read
    out = team.psql("eve", "SELECT * FROM credvault.rotation_grantees('alpha')")
    assert out.returncode != 0
    assert "only a lead" in out.stderr
    out = team.psql("eve", "SELECT count(*) FROM credvault.audit_rows('alpha')")  # who read what
    assert out.returncode != 0
    assert "not allowed to read the audit" in out.stderr
    # version 1's revoke_grant (an unlogged engagement) had the same NULL check: she could
    # revoke bob; refused now, on the record, and bob keeps his role (section nullsafe's audit)
    before = team.audit_count("revoke")
    out = team.psql("eve", "SELECT credvault.revoke_grant('alpha', 'bob') IS NULL")
    assert out.stdout.strip() == "t", out.stderr
    assert team.audit_count("revoke") == before + 1
    with team.connect() as owner:
        (live,) = owner.execute(
            "SELECT count(*) FROM credvault.grants g JOIN credvault.engagements e"
            " ON e.id = g.engagement_id WHERE e.name = 'alpha' AND g.member = 'bob'"
            " AND g.revoked_at IS NULL"
        ).fetchone()
    assert live == 1


def test_an_engineer_can_neither_rotate_nor_revoke(team: Any) -> None:
    before_rotate, before_revoke = team.audit_count("rotate"), team.audit_count("revoke")
    out = team.psql("bob", "SELECT credvault.request_rotation('alpha') IS NULL")
    assert out.stdout.strip() == "t"  # refused ...
    assert team.audit_count("rotate") == before_rotate + 1  # ... and on the record
    out = team.psql("bob", "SELECT credvault.revoke_grant('alpha', 'alice') IS NULL")
    assert out.stdout.strip() == "t"
    assert team.audit_count("revoke") == before_revoke + 1
    out = team.psql(
        "bob",
        "SELECT credvault.rotate_records('alpha', 1, 'fp', '{}', '{}', '{}', '{}', '{}', '{}',"
        " '{}', '{}', '{}', '{}', NULL)",  # the rotation's request (section pinmany)
    )
    assert out.returncode != 0
    assert "may not rotate" in out.stderr
    # version 1's credentials-only rotation is closed to members since schema 2
    out = team.psql(
        "bob",
        "SELECT credvault.rotate_key('alpha', 1, 'fp', '{}', '{}', '{}', '{}', '{}',"
        " '{}', '{}', '{}')",
    )
    assert out.returncode != 0
    assert "permission denied" in out.stderr
    with team.connect() as owner:
        (version,) = owner.execute(
            "SELECT key_version FROM credvault.engagements WHERE name = 'alpha'"
        ).fetchone()
    assert version == 1


def test_a_revoked_member_is_refused_at_the_next_fetch(team: Any) -> None:
    """bob's request is committed; alice revokes him before he fetches: nothing released."""
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        out = team.psql("alice", "SELECT credvault.revoke_grant('alpha', 'bob')")
        assert out.returncode == 0, out.stderr
        import psycopg

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="revoked"):
            fetch_as_a_client(bob, req)


def test_a_request_older_than_a_minute_releases_nothing(team: Any) -> None:
    """bob keeps a committed request for later; a minute on, it releases nothing, and
    stays usable by nobody (the refusal claims nothing)."""
    import psycopg

    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        with team.connect() as owner:  # the clock's minute, without waiting for it
            owner.execute(
                "UPDATE credvault.read_requests SET created_at = created_at - interval '61 s'"
                " WHERE id = %s",
                (req,),
            )
        for _ in range(2):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="expired"):
                fetch_as_a_client(bob, req)
        with team.connect() as owner:
            used = owner.execute(
                "SELECT used_at FROM credvault.read_requests WHERE id = %s", (req,)
            ).fetchone()[0]
        assert used is None


def test_a_request_whose_credential_is_gone_releases_nothing(team: Any) -> None:
    """The credential is deleted (the row, as a purge deletes it) between bob's request and
    his fetch: the request goes with it (version 2's cascade, section rpreview) and
    releases nothing, refused in version 2's words."""
    import psycopg

    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        with team.connect() as owner:
            owner.execute("DELETE FROM credvault.credentials WHERE name = 'db'")
            left = owner.execute(
                "SELECT count(*) FROM credvault.read_requests WHERE id = %s", (req,)
            ).fetchone()[0]
        assert left == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            fetch_as_a_client(bob, req)


def test_a_request_does_not_follow_its_credential_to_another_engagement(team: Any) -> None:
    """bob (engineer on alpha, reader on beta, where a reason is required) requests
    alpha/db; the credential is then moved to beta as `mv` moves it (the row deleted and
    made again under its id, re-sealed under beta's key). bob's request, audited as a
    read of alpha/db without a reason, must not release beta's envelope."""
    import psycopg

    team.grant("alice", "beta", "bob", "reader")
    moved = b"beta-sealed-" + ENVELOPE
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        with team.connect() as owner, owner.transaction():
            owner.execute(
                "UPDATE credvault.engagements SET require_reason = true WHERE name = 'beta'"
            )
            c = owner.execute(
                "DELETE FROM credvault.credentials WHERE name = 'db'"
                " RETURNING id, uid, kind, key_version, created_at"
            ).fetchone()
            owner.execute(
                "INSERT INTO credvault.credentials (id, uid, engagement_id, name, kind,"
                " key_version, secret_env, created_at)"
                " OVERRIDING SYSTEM VALUE VALUES (%s, %s,"
                " (SELECT id FROM credvault.engagements WHERE name = 'beta'), 'db2', %s, %s, %s, %s)",
                (c[0], c[1], c[2], c[3], moved, c[4]),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            fetch_as_a_client(bob, req)


def test_a_request_racing_a_move_names_no_row_of_another_engagement(team: Any) -> None:
    """bob's request_read has found alpha/db and waits for the audit chain's lock while
    the credential is moved to beta (as `mv` moves it: the row made again under its id).
    When the lock comes, the request is refused as changed meanwhile ('run the command
    again'): no request names the moved row, and no 'get ok' entry was kept."""
    import threading

    import psycopg

    team.grant("alice", "beta", "bob", "reader")
    before = team.audit_count("get")
    outcome: list[BaseException | int | None] = []
    with team.connect() as owner:
        owner.execute("BEGIN")
        owner.execute("LOCK TABLE credvault.audit_head IN EXCLUSIVE MODE")

        def request() -> None:
            try:
                with team.connect("bob") as bob:
                    row = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()
                    outcome.append(row[0])
            except BaseException as e:  # reported below, on the test's thread
                outcome.append(e)

        t = threading.Thread(target=request)
        t.start()
        with team.connect() as watcher:  # bob's read has looked the row up: it waits now
            for _ in range(3000):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'credvault.audit_head'::regclass"
                ).fetchone()[0]
                if waiting or not t.is_alive():
                    break
                time.sleep(0.01)
        c = owner.execute(
            "DELETE FROM credvault.credentials WHERE name = 'db'"
            " RETURNING id, uid, kind, key_version, secret_env, created_at"
        ).fetchone()
        owner.execute(
            "INSERT INTO credvault.credentials (id, uid, engagement_id, name, kind,"
            " key_version, secret_env, created_at)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s,"
            " (SELECT id FROM credvault.engagements WHERE name = 'beta'), 'db', %s, %s, %s, %s)",
            (c[0], c[1], c[2], c[3], c[4], c[5]),
        )
        owner.execute("COMMIT")
    t.join(60)
    assert len(outcome) == 1
    assert isinstance(outcome[0], psycopg.errors.SerializationFailure), outcome
    assert "changed meanwhile" in str(outcome[0])
    assert team.audit_count("get") == before
    with team.connect() as owner:
        assert owner.execute("SELECT count(*) FROM credvault.read_requests").fetchone()[0] == 0


def test_a_request_made_before_rm_releases_nothing_after_restore(team: Any) -> None:
    """bob requests alpha/db, removes it to the trash and restores it (the row made again
    under its id): the request went with the removal, as in version 2."""
    import psycopg

    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        out = bob.execute("SELECT outcome FROM credvault.remove_credential('alpha', 'db')")
        assert out.fetchone()[0] == "ok"
        out = bob.execute("SELECT credvault.restore_trashed('alpha', 'db', false)")
        assert out.fetchone()[0] == "ok"
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            fetch_as_a_client(bob, req)


def test_a_stale_snapshot_cannot_append_to_the_chain(team: Any) -> None:
    """bob reads in a REPEATABLE READ transaction whose snapshot predates another append:
    his request is refused as version 2 refused it (serialization_failure, the client's
    Conflict), not as a duplicate audit entry, and the chain still verifies."""
    import psycopg

    with team.connect("bob", autocommit=False) as stale, team.connect("bob") as bob:
        stale.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        stale.execute("SELECT credvault.me()")  # the snapshot
        bob.execute("SELECT credvault.request_read('alpha', 'db')")
        with pytest.raises(psycopg.errors.SerializationFailure):
            stale.execute("SELECT credvault.request_read('alpha', 'db')")
        stale.rollback()
        assert bob.execute("SELECT credvault.audit_verify()").fetchone()[0] is None


def test_concurrent_reads_keep_one_chain_and_one_entry_per_release(team: Any) -> None:
    """Six members' connections read at once, three in one call (section readclaim), three
    in two (the chain's head is taken by a table lock, section readpath): every release names its own committed 'get' entry, the entries are
    one gap-free chain that verifies, and the head names the last."""
    import threading

    before = team.audit_count("get")
    seqs: list[int] = []
    errors: list[BaseException] = []

    def reader(one_call: bool) -> None:
        try:
            with team.connect("bob") as bob:
                for _ in range(15):
                    if one_call:  # CALL credvault.read: request, claim, release
                        got = bob.execute("CALL credvault.read('alpha', 'db', '')").fetchone()
                        row = (got[1], got[8])
                    else:  # version 2's request, then fetch
                        req = bob.execute("SELECT credvault.request_read('alpha', 'db')")
                        row = fetch_as_a_client(bob, req.fetchone()[0], "secret_env, audit_seq")
                    assert bytes(row[0]) == ENVELOPE
                    seqs.append(int(row[1]))
        except BaseException as e:  # reported below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seqs) == len(set(seqs)) == 90
    assert team.audit_count("get") == before + 90
    with team.connect() as owner:
        got = owner.execute("SELECT count(*), min(seq), max(seq) FROM credvault.audit").fetchone()
        head = owner.execute("SELECT seq FROM credvault.audit_head").fetchone()[0]
        rows = owner.execute(
            "SELECT action, member, outcome FROM credvault.audit WHERE seq = ANY(%s)", (seqs,)
        ).fetchall()
    assert got[0] == got[2] - got[1] + 1  # gap-free
    assert head == got[2]  # the head names the last
    assert set(rows) == {("get", "bob", "ok")}
    with team.connect("alice") as alice:
        assert alice.execute("SELECT credvault.audit_verify()").fetchone()[0] is None


# -- the read in one call: request, claim, release (section readclaim) ----------------------


def test_the_one_call_read_puts_its_entry_on_disk_before_it_releases(team: Any) -> None:
    """``CALL credvault.read``: one 'get' entry (reason and all), the envelope, and the
    request's claim flushed: its WAL position is at or below the flushed one."""
    before = team.audit_count("get")
    out = team.psql("bob", "CALL credvault.read('alpha', 'db', 'deploy')")
    assert out.returncode == 0, out.stderr
    fields = out.stdout.strip().split("|")
    req, env_hex, seq = int(fields[0]), fields[1], int(fields[8])
    assert env_hex == "\\x" + ENVELOPE_HEX
    assert team.audit_count("get") == before + 1
    with team.connect() as owner:
        entry = owner.execute(
            "SELECT member, action, engagement, item, outcome, detail FROM credvault.audit "
            "WHERE seq = %s",
            (seq,),
        ).fetchone()
        claim = owner.execute(
            "SELECT used_at IS NOT NULL, claim_lsn <= pg_current_wal_flush_lsn(), "
            "pg_xact_status(claim_xid) FROM credvault.read_requests WHERE id = %s",
            (req,),
        ).fetchone()
    assert entry == ("bob", "get", "alpha", "db", "ok", "reason: deploy")
    assert claim == (True, True, "committed")


def test_the_one_call_read_refused_says_so_and_is_audited(team: Any) -> None:
    before = team.audit_count("get")
    out = team.psql("eve", "CALL credvault.read('alpha', 'db', '')")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().strip("|") == ""  # no request, no envelope: every column NULL
    assert team.audit_count("get") == before + 1
    with team.connect() as owner:
        last = owner.execute(
            "SELECT member, outcome, detail FROM credvault.audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert last == ("eve", "denied", "no grant")


def test_the_one_call_read_inside_a_transaction_yields_nothing(team: Any) -> None:
    """The ROLLBACK trick on the procedure: it cannot commit inside the member's
    transaction block, so it fails before the claim; nothing released, nothing kept."""
    before = team.audit_count("get")
    out = team.psql("bob", "BEGIN;\nCALL credvault.read('alpha', 'db', '');\nROLLBACK;\n")
    assert out.returncode != 0
    assert "invalid transaction termination" in out.stderr, out.stderr
    assert ENVELOPE_HEX not in out.stdout
    assert team.audit_count("get") == before


def test_release_needs_the_callers_own_claim_committed_earlier(team: Any) -> None:
    """Each step by hand, as the attacker would: release without a claim, a claim and its
    release in one transaction then rolled back, someone else's claim, a second claim."""
    import psycopg

    team.grant("alice", "alpha", "eve", "reader")
    with team.connect("bob") as bob, team.connect("eve") as eve:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such claimed"):
            bob.execute("SELECT * FROM credvault.release(%s)", (req,))
        with bob.transaction():  # claim and release in one transaction, rolled back
            bob.execute("SELECT credvault.claim_read(%s)", (req,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="claim not committed"):
                bob.execute("SELECT * FROM credvault.release(%s)", (req,))
            raise psycopg.Rollback
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            eve.execute("SELECT credvault.claim_read(%s)", (req,))
        bob.execute("SELECT credvault.claim_read(%s)", (req,))  # rolled back above: unused
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="already used"):
            bob.execute("SELECT credvault.claim_read(%s)", (req,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such claimed"):
            eve.execute("SELECT * FROM credvault.release(%s)", (req,))
        row = fetch_as_a_client(bob, req, "secret_env, audit_seq", "release")
        assert bytes(row[0]) == ENVELOPE
        # released again within the request's minute: the same entry, nothing new
        again = fetch_as_a_client(bob, req, "secret_env, audit_seq", "release")
        assert (bytes(again[0]), again[1]) == (ENVELOPE, row[1])
        # past the minute, or after a revoke, nothing
        with team.connect() as owner:
            owner.execute(
                "UPDATE credvault.read_requests SET created_at = created_at - interval '61 s'"
                " WHERE id = %s",
                (req,),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such claimed"):
            bob.execute("SELECT * FROM credvault.release(%s)", (req,))
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        bob.execute("SELECT credvault.claim_read(%s)", (req,))
        out = team.psql("alice", "SELECT credvault.revoke_grant('alpha', 'bob')")
        assert out.returncode == 0, out.stderr
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="revoked"):
            fetch_as_a_client(bob, req, "secret_env", "release")


def test_one_entry_releases_the_value_it_names_not_a_later_one(team: Any) -> None:
    """The attacker reads a password once, then waits for the lead to change it and asks
    again under the same entry: by release (read-only, so callable again within the
    request's minute) and by the two-call fetch after a rolled-back claim. Both refuse the
    value written since; released again unchanged (or frozen by VACUUM), the same value
    comes back. Then the same for a linked system's address, which `system set` changes."""
    import psycopg

    later = b"ENVELOPE-written-after-the-request"
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        bob.execute("SELECT credvault.claim_read(%s)", (req,))
        assert bytes(fetch_as_a_client(bob, req, "secret_env", "release")[0]) == ENVELOPE
        # freezing is no change (PostgreSQL keeps a frozen row's xmin): the same value again
        with team.connect() as owner:
            owner.execute("VACUUM (FREEZE) credvault.credentials")
        assert bytes(fetch_as_a_client(bob, req, "secret_env", "release")[0]) == ENVELOPE
        team.put("alice", "alpha", "db", later)
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT secret_env FROM credvault.release(%s)", (req,))
        # the two calls of earlier clients: fetch, ROLLBACK (the request unused again)
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        got = bytes(fetch_rolled_back(bob, req, "secret_env", "fetch")[0])
        assert got == later
        team.put("alice", "alpha", "db", ENVELOPE)
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT secret_env FROM credvault.fetch(%s)", (req,))
        # and a fresh read (a new entry) has the current value
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req)[0]) == ENVELOPE
    # the same for the address of a linked system (in this world: no vault of its own)
    _one_entry_releases_the_system_address_it_names_not_a_later_one(team)


def test_a_read_racing_a_write_reads_again_under_a_new_entry(team: Any) -> None:
    """The product path: the row written between the request and the release (here, by a
    test-only trigger, once, inside the claim's transaction) makes the release refuse; the
    client asks again, so the value comes with an entry of its own: two 'get' entries."""
    from credvault.postgres.store import PgStore

    with team.connect() as owner:
        write_once(
            owner,
            "AFTER UPDATE OF claim_lsn ON credvault.read_requests",
            "PERFORM set_config('credvault.rebinding', 'on', true); "
            "UPDATE credvault.credentials SET updated_at = updated_at "
            "WHERE id = NEW.credential_id;",
        )
    before = team.audit_count("get")
    with team.connect("bob") as bob:
        got = PgStore(bob, "bob").read("alpha", "db", "")
    assert got is not None
    assert got.secret_env == ENVELOPE
    with team.connect() as owner:
        assert owner.execute("SELECT count(*) FROM credvault.t_once").fetchone()[0] == 1
        rows = owner.execute(
            "SELECT rq.used_at IS NOT NULL FROM credvault.read_requests rq"
            " JOIN credvault.audit a ON a.seq = rq.audit_seq WHERE a.seq > %s ORDER BY a.seq",
            (before,),
        ).fetchall()
    assert team.audit_count("get") == before + 2
    assert rows == [(True,), (True,)]  # both claimed; the first one's release refused


def test_otp_run_and_ssh_release_the_value_their_entry_names(team: Any) -> None:
    """The same attack on the read of `otp`, `run` and `ssh` (request_use, fetch_use): a
    fetch rolled back, a put, the fetch again: refused. And their client asks again when
    the row changes between its request and its fetch (a test-only trigger writes the row
    once, with the request): the value comes under a second entry of its own."""
    from types import SimpleNamespace

    import psycopg

    from credvault.postgres.store import PgStore
    from credvault.team_use import _request

    later = b"ENVELOPE-written-after-the-use-request"
    with team.connect("bob") as bob:
        req = bob.execute(
            "SELECT credvault.request_use('get', 'alpha', 'db', '', 'run')"
        ).fetchone()[0]  # fmt: skip
        got = bytes(fetch_rolled_back(bob, req, "secret_env", "fetch_use")[0])
        assert got == ENVELOPE
        team.put("alice", "alpha", "db", later)
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT secret_env FROM credvault.fetch_use(%s)", (req,))
    with team.connect() as owner:
        write_once(
            owner,
            "AFTER INSERT ON credvault.record_requests",
            "PERFORM set_config('credvault.rebinding', 'on', true); "
            "UPDATE credvault.credentials SET updated_at = updated_at WHERE id = NEW.target_id;",
        )
    before = team.audit_count("get")
    with team.connect("bob") as bob:
        row = _request(SimpleNamespace(store=PgStore(bob, "bob"), member="bob"), "get",
                       "alpha/db", None, "run")  # fmt: skip
    assert row.secret == later
    assert team.audit_count("get") == before + 2


def test_a_use_request_between_two_writes_of_one_transaction_releases_neither_later(
    team: Any,
) -> None:
    """The attacker (an engineer) writes alpha/db, asks to use it (or to get it) and
    writes it again, all in one transaction: both versions carry that transaction's xmin,
    so xmin alone would release the second under the entry made before it. The row's ctid
    pins the version the request found (section pinned)."""
    import psycopg

    with team.connect("bob") as bob:
        put = "SELECT credvault.put_credential('alpha', 'db', 'password', %s, 1, %s)"
        with bob.transaction():
            bob.execute(put, (secrets.token_bytes(16), b"V1-bob-wrote"))
            req = bob.execute(
                "SELECT credvault.request_use('get', 'alpha', 'db', '', 'run')"
            ).fetchone()[0]  # fmt: skip
            bob.execute(put, (secrets.token_bytes(16), b"V2-written-after-the-request"))
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            fetch_as_a_client(bob, req, "secret_env", "fetch_use")
        # `get` (request_read): since section ownpin no request at all in a transaction
        # that has written (a VACUUM FULL could pack V4 where V3 was;
        # test_ownpin_review_pg.py)
        bob.execute("BEGIN")
        bob.execute(put, (secrets.token_bytes(16), b"V3-bob-wrote"))
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            bob.execute("SELECT credvault.request_read('alpha', 'db')")
        bob.execute("ROLLBACK")
        bob.execute(put, (secrets.token_bytes(16), b"V4-written-after-the-request"))
        # and a request made afterwards releases the current version
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req)[0]) == b"V4-written-after-the-request"


def test_field_and_system_reads_release_the_version_their_entry_names(team: Any) -> None:
    """The same attack on request_record/fetch_record (`get --field`, `system show`, a
    credential's system address, mv's and edit's rebind reads): a fetch rolled back, a
    write, the fetch again: refused. The client's PgStore.record asks again when the row
    changes in between (a test-only trigger writes it once, with the request)."""
    import psycopg

    from credvault.postgres.store import PgStore

    uid = secrets.token_bytes(16)
    with team.connect("alice") as alice:
        alice.execute(
            "SELECT credvault.put_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (uid, b"ADDRESS-before"),
        )

    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_record('fields', 'alpha', 'db')").fetchone()[0]
        fetch_rolled_back(bob, req, "*", "fetch_record")
        team.put("alice", "alpha", "db", b"ENVELOPE-after-the-fields-request")
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT * FROM credvault.fetch_record(%s)", (req,))
        req = bob.execute("SELECT credvault.request_record('system', 'alpha', 'web')").fetchone()[0]
        fetch_rolled_back(bob, req, "*", "fetch_record")
        with team.connect("alice") as alice:
            alice.execute(
                "SELECT credvault.set_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL,"
                " true, ARRAY['address'])",
                (uid, b"ADDRESS-after"),
            )
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT e1 FROM credvault.fetch_record(%s)", (req,))
    with team.connect() as owner:
        write_once(
            owner,
            "AFTER INSERT ON credvault.record_requests",
            "UPDATE credvault.systems SET updated_at = updated_at WHERE id = NEW.target_id;",
        )
    before = team.audit_count("system-show")
    with team.connect("bob") as bob:
        req, rec = PgStore(bob, "bob").record("system", "alpha", "web", "")
    assert req is not None
    assert rec is not None
    assert rec.e1 == b"ADDRESS-after"
    assert team.audit_count("system-show") == before + 2


def test_an_asynchronous_claim_never_outruns_the_audit_row(team: Any) -> None:
    """The attacker commits request and claim asynchronously, hoping a crash loses the
    audit row after the ciphertext left. With the WAL writer slowed to 10 s neither is
    flushed on its own: release must refuse, or (if something else flushed them) the
    audit row must survive a crash."""
    cluster = team.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        before = team.audit_count("get")
        script = (
            "SET synchronous_commit = off;\n"
            "SELECT credvault.request_read('alpha', 'db') AS req \\gset\n"
            "SELECT credvault.claim_read(:req);\n"
            "SELECT encode(secret_env, 'hex') FROM credvault.release(:req);\n"
        )
        out = team.psql("bob", script)
        released = ENVELOPE_HEX in out.stdout
        if not released:
            assert "not yet durable" in out.stderr, out.stderr
        cluster.crash()
        cluster.start()
        if released:
            assert team.audit_count("get") == before + 1
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


def test_the_one_call_read_commits_its_claim_synchronously_in_any_session(team: Any) -> None:
    """A member whose session (or database default) commits asynchronously still reads in
    one call, and what was released is on disk: a crash right after keeps the entry."""
    cluster = team.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        before = team.audit_count("get")
        out = team.psql(
            "bob", "SET synchronous_commit = off;\nCALL credvault.read('alpha', 'db', '');\n"
        )
        assert out.returncode == 0, out.stderr
        assert "\\x" + ENVELOPE_HEX in out.stdout
        cluster.crash()
        cluster.start()
        assert team.audit_count("get") == before + 1
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


# -- review of the one-call read (section clmreview) ---------------------------------------


def _waiting_on(watcher: Any, table: str, n: int, alive: Any) -> None:
    """Observe (pg_locks) until ``n`` backends wait for a lock on ``table``."""
    for _ in range(3000):
        waiting = watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
            (table,),
        ).fetchone()[0]
        if waiting >= n or not alive():
            return
        time.sleep(0.01)


def test_a_claim_that_sees_its_request_commit_late_waits_for_that_commit(team: Any) -> None:
    """bob's claim starts while his request (another session, committing asynchronously) is
    still open, and sees it committed by the time its UPDATE looks (READ COMMITTED: a
    snapshot per statement). claim_lsn, release's whole durability test, must still lie
    after the request's commit record, or an asynchronous claim is released with the 'get'
    entry not on disk. The interleaving, microseconds wide on its own, is held open by a
    lock the owner queues on read_requests (observed in pg_locks, no sleeps to time it)."""
    import threading

    errors: list[BaseException] = []
    with team.connect("bob") as a, team.connect() as owner, team.connect() as watcher:
        a.execute("BEGIN")
        req = a.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]

        def queue_a_lock() -> None:  # waits behind bob's open request, then lets go
            try:
                owner.execute("BEGIN")
                owner.execute("LOCK TABLE credvault.read_requests IN SHARE MODE")
                owner.execute("COMMIT")
            except BaseException as e:  # reported below, on the test's thread
                errors.append(e)

        def claim() -> None:  # the second session: its UPDATE queues behind that lock
            try:
                with team.connect("bob") as b:
                    b.execute("SET synchronous_commit = off")
                    b.execute("SELECT credvault.claim_read(%s)", (req,))
            except BaseException as e:
                errors.append(e)

        locker = threading.Thread(target=queue_a_lock)
        locker.start()
        _waiting_on(watcher, "credvault.read_requests", 1, locker.is_alive)
        claimer = threading.Thread(target=claim)
        claimer.start()
        _waiting_on(watcher, "credvault.read_requests", 2, claimer.is_alive)
        # below the request's commit record, which is inserted after this
        mark = watcher.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        a.execute("SET LOCAL synchronous_commit = off")
        a.execute("COMMIT")
        locker.join(60)
        claimer.join(60)
    assert errors == []
    with team.connect() as owner:
        row = owner.execute(
            "SELECT used_at IS NOT NULL, claim_lsn > %s FROM credvault.read_requests WHERE id = %s",
            (mark, req),
        ).fetchone()
    assert row == (True, True)


# The same window in the phase two of the two-call read (section early), and in otp, run
# and ssh's: each with the request that makes its row and the table that holds it.
EARLY_READS = {
    "fetch": ("SELECT credvault.request_read('alpha', 'db')", "credvault.read_requests"),
    "fetch_use": (
        "SELECT credvault.request_use('get', 'alpha', 'db')",
        "credvault.record_requests",
    ),
}


@pytest.mark.parametrize("function", EARLY_READS)
def test_a_fetch_that_sees_its_request_commit_late_refuses_until_it_is_durable(
    team: Any, function: str
) -> None:
    """As the claim above, for the phase two of the two-call read: bob's fetch starts (and
    takes the WAL position it waits for) while his request, in another session, is still
    open, and finds the request committed, asynchronously, a moment later. Everything up to
    that position is flushed (the owner commits synchronously just before), the request's
    commit record lies after it: fetch must not release the envelope on that wait. It
    refuses as "not yet durable", its claim rolled back, and the client's nudge and new
    attempt read. The window is held open by an EXCLUSIVE lock the owner queues on the
    request table (observed in pg_locks, no sleeps to time it)."""
    import threading

    import psycopg

    request_sql, table = EARLY_READS[function]
    # function: one of the literals above, never input
    call = f"SELECT secret_env FROM credvault.{function}(%s)"  # noqa: S608
    outcome: list[Any] = []
    with (
        team.connect("bob") as a,
        team.connect("bob") as b,
        team.connect() as owner,
        team.connect() as watcher,
    ):
        # b has read before (the catalog pages its first call prunes are WAL of their own)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no such read request"):
            b.execute(call, (0,))
        a.execute("BEGIN")
        req = a.execute(request_sql).fetchone()[0]

        def queue_a_lock() -> None:  # waits behind bob's open request, then lets go
            try:
                owner.execute("BEGIN")
                owner.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
                owner.execute("COMMIT")
            except BaseException as e:  # reported below, on the test's thread
                outcome.append(e)

        def fetch() -> None:  # the second session: its claim queues behind that lock
            try:
                b.execute("BEGIN")
                b.execute("SET LOCAL synchronous_commit = off")
                outcome.append(bytes(b.execute(call, (req,)).fetchone()[0]))
                b.execute("COMMIT")
            except BaseException as e:
                outcome.append(e)

        locker = threading.Thread(target=queue_a_lock)
        locker.start()
        _waiting_on(watcher, table, 1, locker.is_alive)
        # the WAL so far (the open request's rows included) flushed: fetch's position is
        # reached at once; only the request's commit record, inserted later, is not
        watcher.execute("UPDATE credvault.wal_nudge SET n = n + 1")
        fetcher = threading.Thread(target=fetch)
        fetcher.start()
        _waiting_on(watcher, table, 2, fetcher.is_alive)
        a.execute("SET LOCAL synchronous_commit = off")
        a.execute("COMMIT")
        locker.join(60)
        fetcher.join(60)
        b.execute("ROLLBACK")
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], psycopg.errors.ObjectNotInPrerequisiteState), outcome
        assert "not yet durable" in str(outcome[0])
        # nothing claimed: the client's nudge and new attempt read
        assert bytes(fetch_as_a_client(b, req, "secret_env", function)[0]) == ENVELOPE


def test_a_release_racing_a_move_hands_over_no_row_of_another_engagement(team: Any) -> None:
    """bob (reader on beta too) has claimed a request for alpha/db; while his release runs,
    the credential is moved to beta (as `mv` moves it: the row made again under its id, the
    request deleted with it, section rpreview). The release must not hand over the moved
    row, beta's envelope, under the 'get' entry that names alpha/db. The moment between
    release's look at the request and its look at the credential is held open by a lock
    the owner holds on credvault.systems, observed in pg_locks."""
    import threading

    import psycopg

    team.grant("alice", "beta", "bob", "reader")
    outcome: list[Any] = []
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        bob.execute("SELECT credvault.claim_read(%s)", (req,))
    with team.connect() as owner, team.connect() as watcher:
        owner.execute("BEGIN")
        owner.execute("LOCK TABLE credvault.systems IN ACCESS EXCLUSIVE MODE")

        def release() -> None:
            try:
                with team.connect("bob") as b:
                    row = fetch_as_a_client(b, req, "secret_env", "release")
                    outcome.append(bytes(row[0]))
            except BaseException as e:  # reported below, on the test's thread
                outcome.append(e)

        t = threading.Thread(target=release)
        t.start()
        _waiting_on(watcher, "credvault.systems", 1, t.is_alive)
        c = owner.execute(
            "DELETE FROM credvault.credentials WHERE name = 'db'"
            " RETURNING id, uid, kind, key_version, created_at"
        ).fetchone()
        owner.execute(
            "INSERT INTO credvault.credentials (id, uid, engagement_id, name, kind,"
            " key_version, secret_env, created_at)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s,"
            " (SELECT id FROM credvault.engagements WHERE name = 'beta'), 'db', %s, %s,"
            " 'moved: beta''s envelope', %s)",
            (c[0], c[1], c[2], c[3], c[4]),
        )
        owner.execute("COMMIT")
    t.join(60)
    assert len(outcome) == 1
    assert isinstance(outcome[0], psycopg.errors.InsufficientPrivilege), outcome


def test_an_audit_checkpoint_names_only_a_head_on_disk(team: Any) -> None:
    """Since the one-call read (section readclaim) a 'get' entry commits asynchronously, its
    flush left to the claim's: for that moment the head is visible but not on disk (a
    member may also commit request_read so on their own). A checkpoint taken then and a
    crash after it would name an entry the recovered server never had, and every later
    `audit verify --checkpoint` would report tampering (exit 6). The store reads the head
    and then commits synchronously itself, so what it names is on disk."""
    from credvault.postgres.store import PgStore

    cluster = team.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        with team.connect("bob") as bob:
            bob.execute("SET synchronous_commit = off")  # as CALL credvault.read's step 1
            bob.execute("SELECT credvault.request_read('alpha', 'db')")
        target = cluster.conninfo(team.db, team.role("alice"))
        with PgStore.connect(target, "alice", password=team.passwords["alice"]) as s:
            seq, mac = s.audit_head()
        cluster.crash()
        cluster.start()
        with team.connect() as owner:
            row = owner.execute("SELECT hash FROM credvault.audit WHERE seq = %s", (seq,))
            at = row.fetchone()
        assert at is not None
        assert bytes(at[0]) == mac
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


# -- version 1's entry points (schema 2, section pgv1) ------------------------------------
# Closed to members: the schema-2 client calls their replacements.
CLOSED_V1 = {
    "add_member": "SELECT credvault.add_member('mallory', 'SCRAM-SHA-256$4096:x$y:z', true)",
    "join_vault": "SELECT credvault.join_vault('\\x00', '\\x00', 'SCRAM-SHA-256$4096:x$y:z')",
    "create_engagement": (
        "SELECT credvault.create_engagement('\\x0102', 'delta', 'c', 'fp', '\\x00', 'alice')"
    ),
    "close_engagement": "SELECT credvault.close_engagement('gamma')",
    "purge_engagement": "SELECT credvault.purge_engagement('alpha', 'receipt')",
    "purge_horizon": "SELECT credvault.purge_horizon()",
    "append_membership_log": "SELECT credvault.append_membership_log('\\x00', '\\x00')",
    "membership_log_entries": "SELECT count(*) FROM credvault.membership_log_entries()",
    "rotation_fetch": "SELECT count(*) FROM credvault.rotation_fetch(1)",
    "rotation_fetch_all": "SELECT count(*) FROM credvault.rotation_fetch_all(1)",
    "rotate_key": (
        "SELECT credvault.rotate_key('alpha', 1, 'fp', '{}', '{}', '{}', '{}', '{}', '{}', '{}',"
        " '{}')"
    ),
    "rotate_key_logged": (
        "SELECT credvault.rotate_key_logged('gamma', 0, 'fp', '{}', '{}', '{}', '{}', '{}', '{}',"
        " '{}', '{}', '{}', '{}', '{}', '{}')"
    ),
}
# Still there for engagements without a log (alpha), refused for one that keeps a log.
LOG_ONLY = {
    "put_grant": "SELECT credvault.put_grant('gamma', 'bob', 'lead', '\\x00', 0, NULL, NULL)",
    "revoke_grant": "SELECT credvault.revoke_grant('gamma', 'alice')",
    "rotation_grantees": "SELECT count(*) FROM credvault.rotation_grantees('gamma')",
}


def test_version_1_entry_points_are_closed_to_an_admin_lead_with_psql(team: Any) -> None:
    """alice, admin and lead of alpha (no log, as a schema-1 vault's) and of gamma (made as
    the schema-2 client makes it, link 0 signed by her), tries every version-1 function that
    changes security state, in one psql session: each closed one is refused by privilege,
    the pre-log ones are refused for gamma with one line naming its log; none leaves a row.
    Nor can she start a log on alpha with a link 0 of her own. Honest use goes on: the
    pre-log grant on alpha, and gamma's log grows by alice's signed grant and replays."""
    import os
    from datetime import UTC, datetime

    from credvault import memberlog as ml
    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.errors import AccessDenied
    from credvault.model import iso
    from credvault.postgres.store import PgStore
    from credvault.team_log import NO_RECOVERY

    alice = team.keys["alice"]
    with team.connect("alice") as conn:
        vid = bytes(conn.execute("SELECT credvault.vault_id()").fetchone()[0])
        keys = {
            str(n): (bytes(s), bytes(k))
            for n, s, k in conn.execute("SELECT name, sign_pub, kem_pub FROM credvault.members")
        }
        uid = os.urandom(16)
        trust = ml.Trust(vid, uid, {"alice": frozenset({keys["alice"][0]})}, NO_RECOVERY)
        now = iso(datetime.now(UTC))
        fields = ("gamma", "c", "alice", *keys["alice"])
        link0, state = ml.sign_link(
            None, trust, ml.CREATE, fields, "alice", alice.sign_private, now
        )
        conn.execute(
            "SELECT credvault.create_engagement_logged(%s, 'gamma', 'c', 'alice', %s)",
            (uid, link0),
        )
    with team.connect() as owner:
        before = owner.execute(
            "SELECT (SELECT count(*) FROM credvault.audit), (SELECT count(*) FROM credvault.grants),"
            " (SELECT count(*) FROM credvault.engagements),"
            " (SELECT count(*) FROM credvault.members)"
        ).fetchone()
    script = "\\set ON_ERROR_STOP 0\n" + "".join(
        f"{sql};\n" for sql in (*CLOSED_V1.values(), *LOG_ONLY.values())
    )
    out = team.psql("alice", script)
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [
        *(f"ERROR:  permission denied for function {name}" for name in CLOSED_V1),
        *(
            f"ERROR:  credvault: gamma keeps a signed membership log: {why}"
            for why in (
                "version 1's put_grant is closed to it (put_grant_logged)",
                "version 1's revoke_grant is closed to it (revoke_grant_logged)",
                "its key holders are the log's roster, not rotation_grantees",
            )
        ),
    ], out.stderr
    assert out.stdout == ""  # nothing answered
    with team.connect() as owner:
        after = owner.execute(
            "SELECT (SELECT count(*) FROM credvault.audit), (SELECT count(*) FROM credvault.grants),"
            " (SELECT count(*) FROM credvault.engagements),"
            " (SELECT count(*) FROM credvault.members)"
        ).fetchone()
        gamma = owner.execute(
            "SELECT e.state, array_agg(g.member || ':' || g.role || ':' || (g.revoked_at IS NULL)),"
            " (SELECT count(*) FROM credvault.engagement_log l WHERE l.engagement_id = e.id)"
            " FROM credvault.engagements e JOIN credvault.grants g ON g.engagement_id = e.id"
            " WHERE e.name = 'gamma' GROUP BY e.id, e.state"
        ).fetchone()
    assert after == before
    assert gamma == ("active", ["alice:lead:true"], 1)
    # the client's one line for the pre-log path on a logged engagement: denied (exit 4)
    with team.connect("alice") as conn:
        store = PgStore(conn, "alice")
        with pytest.raises(AccessDenied, match="keeps a signed membership log"):
            store.revoke_grant("gamma", "bob")
        # the other way round: no log started on alpha, whose key exists already (a
        # well-formed link 0 signed by alice, revoking bob)
        alpha_uid = bytes(
            conn.execute("SELECT uid FROM credvault.engagements WHERE name = 'alpha'").fetchone()[0]
        )
        body = ml.Link(
            vid, alpha_uid, 0, ml.ZERO_HASH, now, ml.REVOKE, "alice", keys["alice"][0],
            ("bob",), b"",
        ).body()  # fmt: skip
        link = body + p.sign(alice.sign_private, labels.MEMBER_LOG, body)
        with pytest.raises(AccessDenied, match="cannot start one"):
            store.revoke_grant_logged("alpha", "bob", link)
        # honest use goes on: version 1's grant on alpha (no log), the log's grant on gamma
        assert store.put_grant(
            "alpha", "eve", "reader", b"role-sig", 1, b"sealed-to-eve", b"copy-sig", None
        )
        fields = ("bob", "engineer", "", *keys["bob"])
        link1, _ = ml.sign_link(state, trust, ml.GRANT, fields, "alice", alice.sign_private, now)
        assert store.put_grant_logged("gamma", "bob", "engineer", None, None, None, None, link1)
        links = [
            bytes(r[0])
            for r in conn.execute("SELECT link FROM credvault.engagement_log_links('gamma')")
        ]
    assert ml.replay(links, trust).roster["bob"].role == "engineer"
    with team.connect("bob") as bob:
        role = bob.execute(
            "SELECT credvault.role_in(id) FROM credvault.engagements WHERE name = 'gamma'"
        ).fetchone()
        assert role == ("engineer",)
        req = bob.execute("SELECT credvault.request_read('alpha', 'db')").fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req)[0]) == ENVELOPE


def test_engagement_settings_change_only_with_their_signed_link(team: Any) -> None:
    """(upgrade-2.sql, section pgeng.) With psql: an engineer cannot turn --require-reason
    off (refused, on the record); nobody but an admin creates an engagement with settings;
    a lead cannot start a log on an engagement without one, and on a logged engagement the
    server takes a setting only with a `set` link of the caller that says the same (the
    signature is every client's to check: a DBA's flip of the column alone is exit 6 for
    them, test_contract.py)."""
    import os

    from credvault import memberlog as ml
    from credvault.crypto import primitives as p

    with team.connect() as owner:
        owner.execute("UPDATE credvault.engagements SET require_reason = true WHERE name = 'alpha'")
    before = team.audit_count("change settings")
    out = team.psql("bob", "SELECT credvault.set_engagement_logged('alpha', false, NULL)")
    assert out.stdout.strip() == "denied: role engineer", out.stderr
    assert team.audit_count("change settings") == before + 1
    out = team.psql(
        "bob",
        "SELECT credvault.create_engagement_set('\\x00', 'x', 'y', 'bob', '\\x00',"
        " false, NULL, '\\x00')",
    )
    assert out.returncode != 0
    assert "admin" in out.stderr
    priv = p.hkdf(b"alice-test-key" * 3, b"sign")
    pub, kem = p.ed25519_public(priv), p.x25519_public(p.hkdf(b"k" * 32, b"kem"))
    with team.connect("alice") as alice:
        (vault_id,) = alice.execute("SELECT credvault.vault_id()").fetchone()
        uid = os.urandom(16)
        trust = ml.Trust(bytes(vault_id), uid, {"alice": frozenset({pub})}, b"")
        now = "2026-01-01T00:00:00.000000Z"
        link0, st = ml.sign_link(
            None, trust, ml.CREATE, ("gamma", "g", "alice", pub, kem), "alice", priv, now
        )
        says_on, _ = ml.sign_link(st, trust, ml.SET, (1, ml.NO_GRACE), "alice", priv, now)
        import psycopg

        # link 1 must say what the columns get
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="settings link"):
            alice.execute(
                "SELECT credvault.create_engagement_set(%s, 'gamma', 'g', 'alice', %s, false,"
                " NULL, %s)",
                (uid, link0, says_on),
            )
        alice.execute(
            "SELECT credvault.create_engagement_set(%s, 'gamma', 'g', 'alice', %s, true, NULL, %s)",
            (uid, link0, says_on),
        )
        st = ml.replay([link0, says_on], trust)
        says_off, _ = ml.sign_link(st, trust, ml.SET, (0, ml.NO_GRACE), "alice", priv, now)
        for rr, link in ((True, says_off), (False, None), (False, link0)):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                alice.execute("SELECT credvault.set_engagement_logged('gamma', %s, %s)", (rr, link))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot start one"):
            alice.execute("SELECT credvault.set_engagement_logged('alpha', false, %s)", (says_off,))
    with team.connect() as owner:
        rows = owner.execute(
            "SELECT name, require_reason FROM credvault.engagements ORDER BY name"
        ).fetchall()
    assert rows == [("alpha", True), ("beta", False), ("gamma", True)]


def _one_entry_releases_the_system_address_it_names_not_a_later_one(team: Any) -> None:
    """The linked system's sealed address, which release returns beside the credential
    from the `systems` row (a `system set` writes that row, not the credential's): the
    attacker reads alpha/srv once, the lead moves its system to a new address, and release
    again must not hand over the new address under the old entry (section pinned)."""
    import psycopg

    uid = secrets.token_bytes(16)
    with team.connect("alice") as alice:
        assert alice.execute(
            "SELECT credvault.put_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (uid, b"ADDRESS-before"),
        ).fetchone()[0] == "system-add"  # fmt: skip
        assert alice.execute(
            "SELECT credvault.put_credential_linked('alpha', 'srv', 'password', %s, 1, %s,"
            " NULL, NULL, NULL, 'web')",
            (secrets.token_bytes(16), ENVELOPE),
        ).fetchone()[0]  # fmt: skip
    with team.connect("bob") as bob:
        req = bob.execute("SELECT credvault.request_read('alpha', 'srv')").fetchone()[0]
        bob.execute("SELECT credvault.claim_read(%s)", (req,))
        got = fetch_as_a_client(bob, req, "address_env", "release")
        assert bytes(got[0]) == b"ADDRESS-before"
        with team.connect("alice") as alice:
            assert alice.execute(
                "SELECT credvault.set_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL,"
                " true, ARRAY['address'])",
                (uid, b"ADDRESS-after"),
            ).fetchone()[0] == "ok"  # fmt: skip
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT address_env FROM credvault.release(%s)", (req,))
        # the two calls of earlier clients: fetch after its own ROLLBACK, then a change
        req = bob.execute("SELECT credvault.request_read('alpha', 'srv')").fetchone()[0]
        got = bytes(fetch_rolled_back(bob, req, "address_env", "fetch")[0])
        assert got == b"ADDRESS-after"
        with team.connect("alice") as alice:
            alice.execute(
                "SELECT credvault.set_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL,"
                " true, ARRAY['address'])",
                (uid, b"ADDRESS-third"),
            )
        with pytest.raises(psycopg.errors.SerializationFailure, match="changed since"):
            bob.execute("SELECT address_env FROM credvault.fetch(%s)", (req,))
        # a fresh read (a new entry) has the current address
        req = bob.execute("SELECT credvault.request_read('alpha', 'srv')").fetchone()[0]
        assert bytes(fetch_as_a_client(bob, req, "address_env")[0]) == b"ADDRESS-third"
