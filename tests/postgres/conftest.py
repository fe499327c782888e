"""Fixtures for the PostgreSQL team backend: one cluster per session, one database per test.

``pg`` is a database with the credvault schema applied by its own non-superuser owner,
an admin member ``alice`` who has joined, and helpers to add members and run ``psql`` as
any of them (the insider's tool of choice).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from credvault.postgres import apply_schema, bootstrap_sql, scram_verifier
from pg_cluster import Cluster, running_cluster

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("pgcluster")) as cluster:
        yield cluster


@dataclass
class PgVault:
    """A credvault database on the session cluster, with helpers that act as its people."""

    cluster: Cluster
    db: str
    owner: str
    owner_password: str = field(repr=False)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    def role(self, member: str) -> str:
        return f"{self.db}_{member}"

    def connect(self, member: str | None = None, **kw: Any) -> Any:
        """A psycopg connection as ``member`` (None: the owner), autocommit by default."""
        import psycopg

        user = self.owner if member is None else self.role(member)
        password = self.owner_password if member is None else self.passwords[member]
        kw.setdefault("autocommit", True)
        return psycopg.connect(self.cluster.conninfo(self.db, user), password=password, **kw)

    def psql(self, member: str, sql: str) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` through the real psql as ``member``; errors stop the script."""
        return subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
            if "\n" not in sql
            else ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            input=sql if "\n" in sql else None,
            env=self.cluster.env(self.role(member), self.passwords[member], self.db),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def invite(self, by: str, member: str, *, admin: bool = False) -> str:
        """``by`` invites ``member``; returns the one-time invitation password."""
        invitation = secrets.token_urlsafe(16)
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.add_member(%s, %s, %s)",
                (member, scram_verifier(invitation), admin),
            )
        return invitation

    def join(self, member: str, invitation: str) -> None:
        """``member`` joins from their own machine with fresh public keys and password."""
        import psycopg

        password = secrets.token_urlsafe(16)
        with psycopg.connect(
            self.cluster.conninfo(self.db, self.role(member)), password=invitation, autocommit=True
        ) as conn:
            conn.execute(
                "SELECT credvault.join_vault(%s, %s, %s)",
                (secrets.token_bytes(32), secrets.token_bytes(32), scram_verifier(password)),
            )
        self.passwords[member] = password

    def add(self, member: str, *, admin: bool = False) -> None:
        self.join(member, self.invite("alice", member, admin=admin))

    def engagement(self, name: str, lead: str = "alice") -> None:
        """alice (admin) creates ``name`` and grants ``lead`` the lead role."""
        with self.connect("alice") as conn:
            conn.execute(
                "SELECT credvault.create_engagement(%s, %s, %s, %s, %s, %s)",
                (secrets.token_bytes(16), name, "acme", "fp-" + name, b"sig", lead),
            )
            conn.execute(
                "SELECT credvault.put_grant(%s, %s, 'lead', %s, 1, %s, %s)",
                (name, lead, b"role-sig", b"sealed-to-" + lead.encode(), b"copy-sig"),
            )

    def grant(self, by: str, eng: str, member: str, role: str) -> None:
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.put_grant(%s, %s, %s, %s, 1, %s, %s)",
                (eng, member, role, b"role-sig", b"sealed-to-" + member.encode(), b"copy-sig"),
            )

    def put(self, by: str, eng: str, name: str, secret_env: bytes) -> None:
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.put_credential(%s, %s, 'password', %s, 1, %s)",
                (eng, name, secrets.token_bytes(16), secret_env),
            )

    def audit_count(self, action: str | None = None) -> int:
        """Rows in the audit table, counted as the owner (a member cannot)."""
        with self.connect() as conn:
            sql = "SELECT count(*) FROM credvault.audit"
            row = (
                conn.execute(sql + " WHERE action = %s", (action,)).fetchone()
                if action
                else conn.execute(sql).fetchone()
            )
        return int(row[0])


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def pg(pg_cluster: Cluster) -> PgVault:
    db = f"cv{next(_counter)}_{secrets.token_hex(3)}"
    owner = f"{db}_owner"
    owner_password = secrets.token_urlsafe(16)
    pg_cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_password)))
    vault = PgVault(pg_cluster, db, owner, owner_password)
    with vault.connect() as conn:
        assert apply_schema(conn) is True
        # the first admin: made by the owner (the only one who can before any admin exists)
        invitation = secrets.token_urlsafe(16)
        conn.execute(
            "SELECT credvault.create_member_role('alice', %s, true, 'invited')",
            (scram_verifier(invitation),),
        )
    vault.join("alice", invitation)
    return vault


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "postgres":
            item.add_marker(pytest.mark.postgres)
