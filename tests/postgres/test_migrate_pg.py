"""``credvault migrate`` (issue 14): a SQLCipher vault moves to PostgreSQL with every
envelope, sealed copy and signature unchanged, the old audit trail archived and anchored,
and each member joining from their machine with the keys they already had."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from conftest import KDF_ARG
from credvault.postgres import bootstrap_sql, scram_verifier
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _machine, _sqlcipher, one_line


def _target_db(cluster: Cluster, w: World) -> tuple[str, str, str]:
    """A fresh database and owner (the DBA's part); alice's ~/.pgpass holds the owner's."""
    db = f"mg_{secrets.token_hex(4)}"
    owner, pw = f"{db}_owner", secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(pw)))
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{pw}\n")
    pgpass.chmod(0o600)
    return db, f"postgresql://{owner}@127.0.0.1:{cluster.port}/{db}", pw


def _owner_rows(cluster: Cluster, db: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(cluster.conninfo(db), password=cluster.password) as conn:
        return list(conn.execute(sql).fetchall())


@pytest.fixture
def migrated(tmp_path: Path, pg_cluster: Cluster) -> tuple[World, World, str]:
    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "put", "acme-2026/db", input=b"first\n")
    old.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")  # history: version 1
    old.ok("alice", "grant", "acme-2026", "bob", "engineer")
    old.ok("bob", "get", "acme-2026/db")
    db, owner_target, _ = _target_db(pg_cluster, old)
    invitations = tmp_path / "invitations"
    r = old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(invitations))
    assert r.text.startswith(f"migrated to {db}: 1 engagements, 1 credentials, 0 systems, ")
    member_target = f"postgresql://127.0.0.1:{pg_cluster.port}/{db}"
    new = World("postgresql", tmp_path / "new", member_target)
    new.extra.update(db=db, cluster=pg_cluster, old=old, owner_target=owner_target)
    for who in ("alice", "bob"):
        env = dict(old.envs[who])
        env["CREDVAULT_VAULT"] = member_target
        new.envs[who] = env
        new.ok(who, "join", "--from-vault", old.target,
               "--invitation-file", str(invitations / f"{who}.invitation"),
               "--passphrase-file", env["CREDVAULT_PASSPHRASE_FILE"], "--kdf", KDF_ARG)  # fmt: skip
    return old, new, str(invitations)


def test_everything_reads_back_on_postgresql(migrated: tuple[World, World, str]) -> None:
    _, new, _ = migrated
    # bob's sealed copy (made and signed by alice in the SQLCipher vault) opens and verifies
    assert new.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    assert new.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    new.ok("alice", "put", "acme-2026/new", input=b"after\n")
    assert new.ok("bob", "get", "acme-2026/new").out == b"after\n"


def test_envelopes_and_copies_are_byte_for_byte_the_same(
    migrated: tuple[World, World, str],
) -> None:
    old, new, _ = migrated
    from credvault import Vault

    pw = Path(old.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    with Vault.open(Path(old.target), "alice", pw) as v:
        st = v._s.store
        eng = st.engagement_by_name("acme-2026")
        assert eng is not None
        want_env = {c.uid: c.secret_env for c in st.credentials(eng.id)}
        want_copies = {g.member: (g.sealed, g.copy_sig, g.role_sig) for g in st.grants(eng.id)}
    cluster: Cluster = new.extra["cluster"]  # type: ignore[assignment]
    db = str(new.extra["db"])
    got_env = {
        bytes(u): bytes(e)
        for u, e in _owner_rows(cluster, db, "SELECT uid, secret_env FROM credvault.credentials")
    }
    assert got_env == want_env
    got = {
        str(m): (bytes(s) if s else None, bytes(c) if c else None, bytes(r))
        for m, s, c, r in _owner_rows(
            cluster, db, "SELECT member, sealed, copy_sig, role_sig FROM credvault.grants"
        )
    }
    assert got == want_copies
    assert "@recovery" in got  # the offline recovery key's copy came along too


def test_old_trail_and_history_are_archived_and_anchored(
    migrated: tuple[World, World, str],
) -> None:
    import hashlib

    _, new, _ = migrated
    cluster: Cluster = new.extra["cluster"]  # type: ignore[assignment]
    db = str(new.extra["db"])
    ((archive,),) = _owner_rows(
        cluster, db, "SELECT value FROM credvault.meta WHERE key = 'sqlcipher_archive'"
    )
    data = json.loads(bytes(archive))
    assert [e["action"] for e in data["audit"]].count("get") == 1  # bob's read
    assert len(data["history"]["acme-2026"]) == 1  # the replaced first value, sealed
    assert SECRET not in bytes(archive)
    ((detail,),) = _owner_rows(
        cluster, db, "SELECT detail FROM credvault.audit WHERE action = 'migrate'"
    )
    assert hashlib.sha256(bytes(archive)).hexdigest() in str(detail)
    v = new.ok("alice", "audit", "verify")
    assert v.text.startswith("audit trail intact: ")


def test_migrate_refuses_to_overwrite(migrated: tuple[World, World, str], tmp_path: Path) -> None:
    old, new, _ = migrated
    r = old.run(
        "alice", "migrate", "--to", str(new.extra["owner_target"]),
        "--invitations", str(tmp_path / "again"),
    )  # fmt: skip
    assert r.code == 1
    assert "already holds a credvault team vault" in one_line(r)
    assert not (tmp_path / "again").exists()


def test_a_migrated_member_cannot_join_with_other_keys(tmp_path: Path, pg_cluster: Cluster) -> None:
    old = _sqlcipher(tmp_path / "old")
    _, owner_target, _ = _target_db(pg_cluster, old)
    inv = tmp_path / "inv"
    old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    db = owner_target.rsplit("/", 1)[1]
    target = f"postgresql://127.0.0.1:{pg_cluster.port}/{db}"
    env = _machine(tmp_path, "bob2", target)
    env["CREDVAULT_MEMBER"] = "bob"
    w = World("postgresql", tmp_path, target, envs={"bob": env})
    r = w.run("bob", "join", "--invitation-file", str(inv / "bob.invitation"),
              "--passphrase-file", env["CREDVAULT_PASSPHRASE_FILE"], "--kdf", KDF_ARG)  # fmt: skip
    assert r.code == 4
    assert "--from-vault" in one_line(r)
