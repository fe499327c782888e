"""TLS with ``sslmode=verify-full`` against a CA made here with the real ``openssl``: the
team backend's connection strings verify the server's name, and a server whose certificate
another CA signed, or that carries another name, is refused before any password is sent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from credvault.postgres.client import connect

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip


def make_server_cert(d: Path, ca: str, out: str, san: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=credvault-test-server", "-keyout", f"{out}.key", "-out", f"{out}.csr",
        cwd=d,
    )  # fmt: skip
    (d / f"{out}.ext").write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{out}.ext", "-out", f"{out}.crt",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("ca")
    make_ca(d, "team-ca")
    make_ca(d, "rogue-ca")
    make_server_cert(d, "team-ca", "server", "DNS:localhost")
    data = pg_cluster.datadir
    for name in ("server.crt", "server.key"):
        shutil.copy(d / name, data / name)
        (data / name).chmod(0o600)
        if pg_cluster.as_root:
            st = data.stat()
            os.chown(data / name, st.st_uid, st.st_gid)
    pg_cluster.superuser_sql("ALTER SYSTEM SET ssl = on;\nSELECT pg_reload_conf()")
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
