"""Schema upgrades from the command line (issue 14, requirement 6): a team vault made by a
release at schema version 1 is refused by this credvault with one line naming the fix;
the database's owner runs ``credvault init --upgrade-schema`` (libpq's own login, as for
``init``), which is audited on the team trail; the member's command then works. Nobody
but the owner can run it."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest

from conftest import KDF
from credvault import Secret
from credvault.postgres import SCHEMA_VERSION, apply_schema, bootstrap_sql, scram_verifier
from credvault.postgres.slot import login_password, new_slot
from pg_cluster import Cluster
from postgres.test_contract import World, _machine, one_line


def _v1_world(root: Path, cluster: Cluster) -> World:
    """A team vault as a schema-1 credvault made it: the owner applied schema.sql only,
    alice (admin) joined from her machine with her key slot there."""
    db = f"up{secrets.token_hex(4)}"
    owner = f"{db}_owner"
    owner_pw = secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_pw)))
    target = f"postgresql://127.0.0.1:{cluster.port}/{db}"
    w = World("postgresql", root, target)
    w.envs["alice"] = _machine(root, "alice", target)
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{owner_pw}\n")
    pgpass.chmod(0o600)
    passphrase = Secret(Path(w.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip())
    with psycopg.connect(
        cluster.conninfo(db, owner, tcp=True), password=owner_pw, autocommit=True
    ) as conn:
        assert apply_schema(conn, upto=1) is True
        vault_id = bytes(conn.execute("SELECT credvault.vault_id()").fetchone()[0])
        slot, keys = new_slot(vault_id, db, "alice", passphrase, KDF)
        config = Path(w.envs["alice"]["XDG_CONFIG_HOME"])
        slot.write_new(config / "credvault" / "team" / db / "alice.slot")  # team_slot_path's
        password = login_password(keys, vault_id)
        conn.execute(
            "SELECT credvault.create_member_role('alice', %s, true, 'invited')",
            (scram_verifier(password),),
        )
    with psycopg.connect(
        cluster.conninfo(db, f"{db}_alice", tcp=True), password=password, autocommit=True
    ) as conn:
        conn.execute(
            "SELECT credvault.join_vault(%s, %s, %s)",
            (slot.sign_pub, slot.kem_pub, scram_verifier(password)),
        )
    w.extra.update(db=db, owner=owner, owner_pw=owner_pw, cluster=cluster)
    return w


def _owner_target(w: World) -> str:
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    return f"postgresql://{w.extra['owner']}@127.0.0.1:{cluster.port}/{w.extra['db']}"


def _audit(w: World) -> list[tuple[str, str, str]]:
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    with psycopg.connect(
        cluster.conninfo(str(w.extra["db"]), str(w.extra["owner"]), tcp=True),
        password=str(w.extra["owner_pw"]),
    ) as conn:
        rows = conn.execute(
            "SELECT member, action, detail FROM credvault.audit ORDER BY seq"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_a_member_is_refused_before_and_served_after_the_owners_upgrade(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    assert SCHEMA_VERSION == 2
    w = _v1_world(tmp_path, pg_cluster)
    before = w.run("alice", "engagement", "new", "acme-2026", "--client", "acme")
    assert before.code == 1
    line = one_line(before)
    assert "schema version 1 is older" in line
    assert "`credvault init --upgrade-schema`" in line

    up = w.ok("alice", "init", "--vault", _owner_target(w), "--upgrade-schema")
    assert up.text == f"upgraded team vault {w.extra['db']} from schema 1 to 2\n"
    trail = _audit(w)
    assert (str(w.extra["owner"]), "upgrade", "schema 1 -> 2") in trail
    assert [a for _, a, _ in trail].count("upgrade") == 1

    w.ok("alice", "engagement", "new", "acme-2026", "--client", "acme")
    w.ok("alice", "put", "acme-2026/db", input=b"after-upgrade\n")
    assert w.ok("alice", "get", "acme-2026/db").out == b"after-upgrade\n"
    assert w.ok("alice", "audit", "verify").text.startswith("audit trail intact: ")

    again = w.ok("alice", "init", "--vault", _owner_target(w), "--upgrade-schema")
    assert again.text == f"team vault {w.extra['db']} is at schema 2 already; nothing to do\n"
    assert [a for _, a, _ in _audit(w)].count("upgrade") == 1  # nothing done, nothing logged


def test_only_the_owner_upgrades(tmp_path: Path, pg_cluster: Cluster) -> None:
    w = _v1_world(tmp_path, pg_cluster)
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    # alice's member login (from her key slot) is not the owner: libpq has no password for
    # it, so she tries the DBA's superuser through .pgpass instead: refused as well
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:*:postgres:{cluster.password}\n")
    su = f"postgresql://postgres@127.0.0.1:{cluster.port}/{w.extra['db']}"
    r = w.run("alice", "init", "--vault", su, "--upgrade-schema")
    assert r.code == 4
    assert "a superuser may not" in one_line(r)
    with psycopg.connect(
        cluster.conninfo(str(w.extra["db"]), str(w.extra["owner"]), tcp=True),
        password=str(w.extra["owner_pw"]),
    ) as conn:
        assert conn.execute("SELECT version FROM credvault.schema_version").fetchone() == (1,)


def test_upgrade_needs_a_team_vault_with_a_schema(tmp_path: Path, pg_cluster: Cluster) -> None:
    w = _v1_world(tmp_path, pg_cluster)
    r = w.run("alice", "init", "--vault", str(tmp_path / "dir"), "--upgrade-schema")
    assert r.code == 2
    assert "SQLCipher vault upgrades itself" in one_line(r)
    db = f"empty{secrets.token_hex(3)}"
    owner = f"{db}_owner"
    pw = secrets.token_urlsafe(12)
    pg_cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(pw)))
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_cluster.port}:{db}:{owner}:{pw}\n")
    empty = f"postgresql://{owner}@127.0.0.1:{pg_cluster.port}/{db}"
    r = w.run("alice", "init", "--vault", empty, "--upgrade-schema")
    assert r.code == 1
    assert "make the vault with `credvault init`" in one_line(r)


@pytest.mark.parametrize("upto", [1, 2])
def test_a_new_vault_logs_no_upgrade(pg_cluster: Cluster, upto: int) -> None:
    db = f"nw{secrets.token_hex(4)}"
    owner = f"{db}_owner"
    pw = secrets.token_urlsafe(12)
    pg_cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(pw)))
    with psycopg.connect(
        pg_cluster.conninfo(db, owner, tcp=True), password=pw, autocommit=True
    ) as conn:
        assert apply_schema(conn, upto=upto) is True
        assert conn.execute("SELECT count(*) FROM credvault.audit").fetchone() == (0,)
        if upto == 1:
            assert apply_schema(conn) is True
            assert conn.execute(
                "SELECT member, action, detail FROM credvault.audit"
            ).fetchall() == [(owner, "upgrade", "schema 1 -> 2")]
