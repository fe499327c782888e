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
