"""Fixtures for the PostgreSQL team backend: one cluster per session, one database per test.

``pg`` is a database with the credvault schema applied by its own non-superuser owner,
an admin member ``alice`` who has joined, and helpers to add members and run ``psql`` as
any of them (the insider's tool of choice).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_cluster import Cluster, PgVault, new_pg_vault, running_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg(pg_cluster: Cluster) -> PgVault:
    """A fresh credvault database for one test."""
    return new_pg_vault(pg_cluster)


@pytest.fixture(params=["sqlcipher", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """The backend contract's world (tests/postgres/test_contract.py), once per backend:
    alice (admin, lead of acme-2026), bob and carol, each on their own "machine"."""
    from postgres.test_contract import _postgresql, _sqlcipher

    if request.param == "sqlcipher":
        return _sqlcipher(tmp_path)
    return _postgresql(tmp_path, request.getfixturevalue("pg_cluster"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "postgres":
            item.add_marker(pytest.mark.postgres)
