"""The throwaway cluster and the schema: applied once by the owner, refused otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from credvault.errors import AccessDenied, UnsupportedFormat
from credvault.postgres import SCHEMA_VERSION, apply_schema, check_schema


def test_schema_applied_by_owner_once(pg: Any) -> None:
    with pg.connect() as conn:
        assert check_schema(conn) == SCHEMA_VERSION
        assert apply_schema(conn) is False  # already there: nothing re-run
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row[0] is False
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc "
            "WHERE pronamespace = 'credvault'::regnamespace"
        ).fetchall()
        assert owners == [(pg.owner,)]


def test_no_function_or_table_is_open_to_public(pg: Any) -> None:
    """Every function and table of every schema version (new functions are PUBLIC's by
    default in PostgreSQL) is reachable only through the grants the member group has."""
    with pg.connect() as conn:
        open_functions = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "WHERE p.pronamespace = 'credvault'::regnamespace "
            "AND has_function_privilege('public', p.oid, 'EXECUTE')"
        ).fetchall()
        open_tables = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'credvault'::regnamespace "
            "AND c.relkind IN ('r', 'v', 'S') "
            "AND (has_table_privilege('public', c.oid, 'SELECT') "
            "OR has_table_privilege('public', c.oid, 'INSERT'))"
        ).fetchall()
    assert open_functions == []
    assert open_tables == []


def test_superuser_and_members_may_not_apply_schema(pg: Any) -> None:
    import psycopg

    with (
        psycopg.connect(
            pg.cluster.conninfo(pg.db), password=pg.cluster.password, autocommit=True
        ) as su,
        pytest.raises(AccessDenied, match="superuser"),
    ):
        apply_schema(su)
    with pg.connect("alice") as conn, pytest.raises(AccessDenied, match="owner"):
        apply_schema(conn)


def test_client_refuses_unsupported_schema_in_one_line(pg: Any) -> None:
    with pg.connect() as conn:
        conn.execute("UPDATE credvault.schema_version SET version = 99")
        with pytest.raises(UnsupportedFormat) as info:
            check_schema(conn)
        assert "\n" not in str(info.value)
        assert "version 99 is not supported" in str(info.value)
        with pytest.raises(UnsupportedFormat):
            apply_schema(conn)


def test_a_database_of_an_earlier_schema_is_refused_then_upgraded(pg_cluster: Any) -> None:
    """A database made at version 1 (the previous release's schema) is refused by a client
    in one line naming the upgrade, and the owner's apply_schema brings it to the current
    version in one step, after which it is used like a new one."""
    import secrets

    from credvault.postgres import bootstrap_sql, scram_verifier
    from pg_cluster import PgVault

    db = f"old_{secrets.token_hex(3)}"
    owner, password = f"{db}_owner", secrets.token_urlsafe(16)
    pg_cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(password)))
    vault = PgVault(pg_cluster, db, owner, password)
    with vault.connect() as conn:
        assert apply_schema(conn, upto=1) is True
        with pytest.raises(UnsupportedFormat) as info:
            check_schema(conn)
        assert "\n" not in str(info.value)
        assert "version 1 is older" in str(info.value)
        assert "--upgrade-schema" in str(info.value)
        assert apply_schema(conn) is True
        assert check_schema(conn) == SCHEMA_VERSION
        assert apply_schema(conn) is False


def test_cluster_runs_unprivileged(pg: Any) -> None:
    postmaster = int((pg.cluster.datadir / "postmaster.pid").read_text().split()[0])
    assert Path(f"/proc/{postmaster}").stat().st_uid != 0  # PostgreSQL never runs as root
    assert pg.cluster.datadir.stat().st_uid == Path(f"/proc/{postmaster}").stat().st_uid


def test_missing_postgresql_skips_loudly_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pg_cluster

    monkeypatch.setattr(pg_cluster, "_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CREDVAULT_REQUIRE_PG", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"PostgreSQL UNAVAILABLE.*NOT RUN"):
        pg_cluster.start_cluster(tmp_path / "c")
    monkeypatch.setenv("CREDVAULT_REQUIRE_PG", "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required"):
        pg_cluster.start_cluster(tmp_path / "c")
