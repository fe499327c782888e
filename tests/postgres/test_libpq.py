"""credvault.postgres.libpq: the psycopg-free connection behind ``credvault get`` on a team
vault (issue 14, "Figures"). It must read every type the read path reads exactly as psycopg
does, send parameters (bytea with NUL bytes, text, NULL) intact, keep the server's SQLSTATE
so the store maps errors the same way, and keep libpq's own behaviour (SCRAM, refused
logins, malformed connection strings) — with psycopg as the reference on the same server.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from credvault.errors import AccessDenied, InvalidInput, NotFound, StoreError, UnsupportedFormat
from credvault.postgres import libpq
from credvault.postgres.store import PgStore, database_of
from pg_cluster import PgVault

if libpq.load() is None:  # pragma: no cover - psycopg[binary] bundles one
    pytest.skip("no libpq to load (psycopg[binary] bundles one)", allow_module_level=True)


def _light(pg: PgVault, member: str | None = None) -> libpq.Connection:
    user = pg.owner if member is None else pg.role(member)
    password = pg.owner_password if member is None else pg.passwords[member]
    return libpq.Connection.connect(pg.cluster.conninfo(pg.db, user), password=password)


PROBE = (
    "SELECT %s::bytea, %s::text, %s::int8, %s::int4, %s::int2, %s::bool, %s::bool, "
    "%s::text IS NULL, now(), '2026-11-30 01:02:03.456789+05:30'::timestamptz, "
    "'2026-11-30 01:02:03'::timestamp, 'x'::name, 'abc'::varchar, '50%%'"
)
PARAMS: tuple[Any, ...] = (
    b"\x00\x01\xff\x00end",
    "snow \u2603 \x7f",
    -(2**62),
    2**31 - 1,
    -7,
    True,
    False,
    None,
)


def test_every_type_reads_as_psycopg_reads_it(pg: PgVault) -> None:
    light = _light(pg)
    try:
        # a session that would confuse a text-format reader: odd DateStyle and TimeZone
        light.execute("SET DateStyle = 'SQL, DMY'")
        light.execute("SET TimeZone = 'America/St_Johns'")
        got = light.execute(PROBE, PARAMS).fetchone()
    finally:
        light.close()
    with pg.connect() as conn:
        want = conn.execute(PROBE, PARAMS).fetchone()
    assert got is not None
    assert want is not None
    assert got[:8] == tuple(want[:8])
    assert got[0] == b"\x00\x01\xff\x00end"
    assert got[7] is True
    # timestamptz: the same instant (psycopg gives it in the session's zone, ours in UTC)
    assert got[9] == want[9]
    assert got[9].tzinfo is UTC
    assert got[9] == datetime(2026, 11, 29, 19, 32, 3, 456789, tzinfo=UTC)
    assert abs((got[8] - datetime.now(UTC)).total_seconds()) < 3600
    assert got[10] == want[10] == datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC).replace(tzinfo=None)
    assert got[11:] == ("x", "abc", "50%")


def test_rows_nulls_and_an_empty_result(pg: PgVault) -> None:
    light = _light(pg)
    try:
        rows = light.execute(
            "SELECT g, CASE WHEN g = 2 THEN NULL ELSE g::text END FROM generate_series(1, 3) g"
        ).fetchall()
        assert rows == [(1, "1"), (2, None), (3, "3")]
        assert light.execute("SELECT 1 WHERE false").fetchone() is None
        assert light.info.dbname == pg.db
    finally:
        light.close()
    assert light.closed


def test_errors_keep_the_sqlstate_and_the_servers_words(pg: PgVault) -> None:
    light = _light(pg, "alice")
    try:
        with pytest.raises(libpq.Error) as e:
            light.execute("SELECT secret_env FROM credvault.credentials")
        assert e.value.sqlstate == "42501"
        assert not e.value.operational
        assert "permission denied" in e.value.diag.message_primary
        with pytest.raises(libpq.Error) as e:
            light.execute("SELECT * FROM credvault.fetch(%s)", (123456,))
        assert e.value.sqlstate == "42501"
        assert e.value.diag.message_primary == "credvault: no such read request"
        # the connection is still usable after an error
        assert light.execute("SELECT credvault.me()").fetchone() == ("alice",)
    finally:
        light.close()
    with pytest.raises(libpq.Error, match="closed"):
        light.execute("SELECT 1")


def test_a_transaction_commits_or_rolls_back(pg: PgVault) -> None:
    light = _light(pg)
    try:
        light.execute("CREATE TABLE t (v int)")
        with light.transaction():
            light.execute("INSERT INTO t VALUES (%s)", (1,))

        def abandoned() -> None:
            with light.transaction():
                light.execute("INSERT INTO t VALUES (%s)", (2,))
                raise RuntimeError("abandon")

        with pytest.raises(RuntimeError):
            abandoned()
        assert light.execute("SELECT array_agg(v)::text FROM t").fetchone() == ("{1}",)
    finally:
        light.close()


def test_server_notices_are_not_printed(pg: PgVault, capfd: pytest.CaptureFixture[str]) -> None:
    light = _light(pg)
    try:
        light.execute("DO $$ BEGIN RAISE NOTICE 'noisy-notice'; END $$")
    finally:
        light.close()
    out, err = capfd.readouterr()
    assert "noisy-notice" not in out + err


def test_a_wrong_password_and_a_malformed_string_fail_as_libpq_says(pg: PgVault) -> None:
    with pytest.raises(libpq.Error) as e:
        libpq.Connection.connect(
            pg.cluster.conninfo(pg.db, pg.role("alice")), password="not-the-password"
        )
    assert e.value.sqlstate is None
    assert e.value.operational
    assert "password authentication failed" in str(e.value)
    with pytest.raises(libpq.Error, match="missing"):
        libpq.conninfo_parse("host=x dbname")
    assert libpq.conninfo_parse("postgresql://u@h1:5,h2/db?sslmode=verify-full") == {
        "user": "u",
        "host": "h1,h2",
        "port": "5,",
        "dbname": "db",
        "sslmode": "verify-full",
    }


def test_the_store_maps_its_errors_as_on_psycopg(pg: PgVault) -> None:
    target = pg.cluster.conninfo(pg.db, pg.role("alice"))
    pg.engagement("alpha")
    for light in (True, False):
        with pytest.raises(AccessDenied, match="login refused"):
            PgStore.connect(target, "alice", password="wrong", light=light)
        with pytest.raises(InvalidInput, match="invalid connection string"):
            PgStore.connect(target + " dbname", "alice", light=light)
        with PgStore.connect(target, "alice", password=pg.passwords["alice"], light=light) as s:
            assert type(s.conn).__module__.startswith("credvault" if light else "psycopg")
            assert s.opening()[1] == "alice"
            with pytest.raises(AccessDenied, match="no such read request"):
                s.phase_two("SELECT * FROM credvault.fetch(%s)", 987654, "read", "alpha")
            with pytest.raises(NotFound):  # P0002, raised by revoke_grant
                s.revoke_grant("alpha", "nobody")
    with pytest.raises(StoreError, match="cannot connect"):
        PgStore.connect("host=127.0.0.1 port=1 dbname=x connect_timeout=2", "a", light=True)


def test_database_of_reads_the_string_with_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    assert database_of("postgresql://h/one") == "one"
    assert database_of("host=h dbname=two") == "two"
    with pytest.raises(InvalidInput, match="invalid connection string"):
        database_of("host=h dbname")
    monkeypatch.setattr(libpq, "_lib", None)  # no libpq: psycopg's parser, same answers
    monkeypatch.setattr(libpq, "_tried", True)
    assert database_of("postgresql://h/one") == "one"
    with pytest.raises(InvalidInput, match="invalid connection string"):
        database_of("host=h dbname")


def test_without_libpq_the_light_store_falls_back_to_psycopg(
    pg: PgVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libpq, "_lib", None)
    monkeypatch.setattr(libpq, "_tried", True)
    target = pg.cluster.conninfo(pg.db, pg.role("alice"))
    with PgStore.connect(target, "alice", password=pg.passwords["alice"], light=True) as s:
        assert type(s.conn).__module__.startswith("psycopg")
        assert s.opening()[1] == "alice"


def test_the_schema_check_shares_the_opening_round_trip_and_refuses_as_before(
    pg: PgVault,
) -> None:
    """checked_opening (Team's login): the version and the opening in one statement, and
    every schema a client must refuse refused with check_schema's own line, on libpq and
    on psycopg alike, including a statement that fails (no schema_version table)."""
    target = pg.cluster.conninfo(pg.db, pg.role("alice"))
    stores = [
        PgStore.connect(target, "alice", password=pg.passwords["alice"], light=light, check=False)
        for light in (True, False)
    ]
    try:
        for s in stores:
            assert s.checked_opening() == s.opening()
            assert s.checked_opening()[1] == "alice"
        for sql, line in (
            ("UPDATE credvault.schema_version SET version = 99", "version 99 is not supported"),
            ("UPDATE credvault.schema_version SET version = 1", "version 1 is older"),
            ("DELETE FROM credvault.schema_version", "no credvault schema"),
            ("ALTER TABLE credvault.schema_version RENAME TO gone", "no credvault schema"),
        ):
            with pg.connect() as owner:
                owner.execute(sql)
            for s in stores:
                with pytest.raises(UnsupportedFormat, match=line):
                    s.checked_opening()
    finally:
        for s in stores:
            s.close()


def test_importing_the_binding_imports_no_psycopg() -> None:
    code = (
        "import sys; from credvault.postgres import libpq; assert libpq.load() is not None; "
        "from credvault.postgres.store import database_of; database_of('dbname=x'); "
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_fetch_refused_as_not_yet_durable_is_nudged_and_answered(pg: PgVault) -> None:
    """The store's answer to "not yet durable" (nudge_wal, a void function, then the same
    fetch again) works on this connection too: the request is committed asynchronously
    with the WAL writer slowed to 10 s, so only the nudge can flush it. A get in such a
    session needs no nudge: ``credvault.read`` commits its claim synchronously whatever
    the session says, and that flush makes the entry durable."""
    pg.engagement("alpha")
    pg.put("alice", "alpha", "db", b"envelope-bytes")
    cluster = pg.cluster
    cluster.superuser_sql("ALTER SYSTEM SET wal_writer_delay = '10s';\nSELECT pg_reload_conf()")
    try:
        target = cluster.conninfo(pg.db, pg.role("alice"))
        with PgStore.connect(target, "alice", password=pg.passwords["alice"], light=True) as s:
            assert s.conn.execute("SELECT credvault.nudge_wal()").fetchone() == (None,)
            s.conn.execute("SET synchronous_commit = off")
            before = pg.audit_count("get")
            got_env = s.read("alpha", "db", "")
            assert got_env is not None
            assert got_env.secret_env == b"envelope-bytes"
            assert pg.audit_count("get") == before + 1
            # and every other phase two (`get --version`'s fetch_record among them)
            pg.put("alice", "alpha", "db", b"second-envelope")  # version 1 is kept
            req = s.request_record("version", "alpha", "db", "", 1)
            assert req is not None
            got = s.fetch_record(req, "alpha")
            assert got is not None
            assert got.e1 == b"envelope-bytes"
            assert pg.audit_count("get") == before + 2
    finally:
        cluster.superuser_sql("ALTER SYSTEM RESET wal_writer_delay;\nSELECT pg_reload_conf()")


def test_services_and_multi_host_lists_as_psycopg_takes_them(
    pg: PgVault, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = pg.cluster
    service = tmp_path / "pg_service.conf"
    service.write_text(
        f"[team]\nhost={c.sockdir}\nport={c.port}\ndbname={pg.db}\nuser={pg.role('alice')}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    assert database_of("service=team") == pg.db
    password = pg.passwords["alice"]
    light = libpq.Connection.connect("service=team", password=password)
    try:
        assert light.execute("SELECT credvault.me()").fetchone() == ("alice",)
    finally:
        light.close()
    # a dead first host: libpq moves on to the next one in the list
    dead = c.port + 1 if c.port < 65535 else c.port - 1
    uri = (
        f"postgresql://{pg.role('alice')}@127.0.0.1:{dead},127.0.0.1:{c.port}/{pg.db}"
        "?connect_timeout=5&target_session_attrs=read-write"
    )
    light = libpq.Connection.connect(uri, password=password)
    try:
        assert light.execute("SELECT credvault.me()").fetchone() == ("alice",)
    finally:
        light.close()


def test_arrays_read_as_psycopg_reads_them(pg: PgVault) -> None:
    """One-dimensional arrays (the membership log's links come as bytea[]), with NULLs
    and empty arrays, read as psycopg reads the same statement."""
    probe = (
        "SELECT ARRAY['\\x00ff'::bytea, NULL, ''::bytea], ARRAY[1, -2, NULL]::bigint[],"
        " ARRAY['a', 'ü']::text[], '{}'::bytea[], ARRAY[true, false]"
    )
    light = _light(pg)
    try:
        got = light.execute(probe, ()).fetchone()
    finally:
        light.close()
    with pg.connect() as conn:
        want = conn.execute(probe).fetchone()
    assert got is not None
    assert want is not None
    assert tuple(got) == tuple(want)
    assert got[0] == [b"\x00\xff", None, b""]
    assert got[3] == []
