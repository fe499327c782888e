"""TLS with ``sslmode=verify-full`` against a CA made here with the real ``openssl``: the
team backend's connection strings verify the server's name, and a server whose certificate
another CA signed, or that carries another name, is refused before any password is sent."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from credvault.postgres.client import connect
from pg_cluster import enable_tls, make_ca

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def tls(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("ca")
    enable_tls(pg_cluster, d)
    make_ca(d, "rogue-ca")
    yield d
    pg_cluster.superuser_sql("ALTER SYSTEM RESET ssl;\nSELECT pg_reload_conf()")


def _uri(pg: Any, host: str, ca: Path) -> str:
    return (
        f"host={host} port={pg.cluster.port} dbname={pg.db} user={pg.role('alice')} "
        f"sslmode=verify-full sslrootcert={ca}"
    )


def test_verify_full_with_the_local_ca(pg: Any, tls: Path) -> None:
    with connect(_uri(pg, "localhost", tls / "team-ca.crt"), password=pg.passwords["alice"]) as c:
        assert c.execute("SELECT credvault.me()").fetchone()[0] == "alice"
        row = c.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl, version = row.fetchone()
    assert ssl is True
    assert version.startswith("TLSv1.")


def test_verify_full_refuses_another_ca_and_another_name(pg: Any, tls: Path) -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(_uri(pg, "localhost", tls / "rogue-ca.crt"), password=pg.passwords["alice"])
    # 127.0.0.1 is not a name the certificate carries
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        connect(_uri(pg, "127.0.0.1", tls / "team-ca.crt"), password=pg.passwords["alice"])


def test_the_libpq_path_of_get_verifies_the_same_way(pg: Any, tls: Path) -> None:
    """``credvault get`` connects through credvault.postgres.libpq: the same TLS checks."""
    from credvault.postgres import libpq

    alice = pg.passwords["alice"]
    c = libpq.Connection.connect(_uri(pg, "localhost", tls / "team-ca.crt"), password=alice)
    try:
        row = c.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl, version = row.fetchone() or (None, None)
        assert ssl is True
        assert str(version).startswith("TLSv1.")
    finally:
        c.close()
    with pytest.raises(libpq.Error, match="certificate verify failed"):
        libpq.Connection.connect(_uri(pg, "localhost", tls / "rogue-ca.crt"), password=alice)
    with pytest.raises(libpq.Error, match="does not match host name"):
        libpq.Connection.connect(_uri(pg, "127.0.0.1", tls / "team-ca.crt"), password=alice)
