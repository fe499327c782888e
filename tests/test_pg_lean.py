"""The SQLCipher path never loads the PostgreSQL backend (issue 14): ``credvault get`` on a
SQLCipher vault imports neither ``credvault.postgres`` nor ``psycopg``, even though psycopg
is installed in the test environment (the ``dev`` extra)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import CliRunner


@pytest.mark.cli
def test_sqlcipher_get_imports_nothing_postgresql(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    assert importlib.util.find_spec("psycopg") is not None  # so the check below means something
    put = cli_vault("put", "acme-2026/db", "--kind", "password", input=b"pw\n")
    assert put.code == 0, put.err
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "credvault", "get", "acme-2026/db"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
        start_new_session=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "pw\n"
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()}
    assert "credvault" in imported  # importtime output was parsed
    leaked = sorted(m for m in imported if m.startswith(("psycopg", "credvault.postgres")))
    assert leaked == []


def test_bootstrap_sql_takes_only_plain_identifiers_and_a_verifier() -> None:
    from credvault.errors import InvalidInput
    from credvault.postgres import bootstrap_sql, scram_verifier

    verifier = scram_verifier("owner password")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert "owner password" not in verifier
    sql = bootstrap_sql("team", "team_owner", verifier)
    assert 'CREATE DATABASE "team" OWNER "team_owner"' in sql
    assert "NOSUPERUSER" in sql
    assert sql.count("SUPERUSER") == sql.count("NOSUPERUSER")  # never a superuser
    for db, owner in (('te"am', "o"), ("team", "o; DROP"), ("Team", "o")):
        with pytest.raises(InvalidInput):
            bootstrap_sql(db, owner, verifier)
    with pytest.raises(InvalidInput, match="SCRAM"):
        bootstrap_sql("team", "team_owner", "plain-password")


def test_a_directory_is_not_a_postgresql_target() -> None:
    from credvault.errors import InvalidInput
    from credvault.postgres.client import connect

    with pytest.raises(InvalidInput, match="not a PostgreSQL connection string"):
        connect("/home/alice/vault")
