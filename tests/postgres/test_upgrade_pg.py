"""Schema upgrades from the command line (issue 14, requirement 6): a team vault made by a
release at schema version 1 is refused by this credvault with one line naming the fix;
the database's owner runs ``credvault init --upgrade-schema`` (libpq's own login, as for
``init``), which is audited on the team trail; the member's command then works. Nobody
but the owner can run it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import psycopg
import pytest

from conftest import KDF
from credvault import Secret
from credvault.crypto import primitives as p
from credvault.keyslots import MemberKeys
from credvault.postgres import SCHEMA_VERSION, apply_schema, bootstrap_sql, scram_verifier
from credvault.postgres.client import Member, TeamVault
from credvault.postgres.slot import login_password, new_slot
from pg_cluster import Cluster
from postgres.test_contract import World, _machine, one_line


def _v1_world(root: Path, cluster: Cluster, others: tuple[str, ...] = ()) -> World:
    """A team vault as a schema-1 credvault made it: the owner applied schema.sql only,
    alice (admin) joined from her machine with her key slot there, then each of ``others``
    (not admins) from theirs. Their keys are kept in ``w.extra['keys']``."""
    db = f"up{secrets.token_hex(4)}"
    owner = f"{db}_owner"
    owner_pw = secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_pw)))
    target = f"postgresql://127.0.0.1:{cluster.port}/{db}"
    w = World("postgresql", root, target)
    keys: dict[str, MemberKeys] = {}
    with psycopg.connect(
        cluster.conninfo(db, owner, tcp=True), password=owner_pw, autocommit=True
    ) as conn:
        assert apply_schema(conn, upto=1) is True
        vault_id = bytes(conn.execute("SELECT credvault.vault_id()").fetchone()[0])
        for name in ("alice", *others):
            w.envs[name] = _machine(root, name, target)
            passphrase = Secret(
                Path(w.envs[name]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
            )
            slot, keys[name] = new_slot(vault_id, db, name, passphrase, KDF)
            config = Path(w.envs[name]["XDG_CONFIG_HOME"])
            slot.write_new(config / "credvault" / "team" / db / f"{name}.slot")
            password = login_password(keys[name], vault_id)
            conn.execute(
                "SELECT credvault.create_member_role(%s, %s, %s, 'invited')",
                (name, scram_verifier(password), name == "alice"),
            )
            with psycopg.connect(
                cluster.conninfo(db, f"{db}_{name}", tcp=True), password=password, autocommit=True
            ) as mconn:
                mconn.execute(
                    "SELECT credvault.join_vault(%s, %s, %s)",
                    (slot.sign_pub, slot.kem_pub, scram_verifier(password)),
                )
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{owner_pw}\n")
    pgpass.chmod(0o600)
    w.extra.update(db=db, owner=owner, owner_pw=owner_pw, cluster=cluster, keys=keys)
    return w


def _v1_engagement(w: World, name: str, readers: tuple[str, ...], secret: bytes) -> None:
    """alice makes ``name`` as a schema-1 client did (the version-1 functions: no log),
    leads it, gives each of ``readers`` an engineer's copy, and stores ``db``."""
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    db = str(w.extra["db"])
    alice: MemberKeys = w.extra["keys"]["alice"]  # type: ignore[index]
    key = p.random_key()
    uid = p.random_key()[:16]
    with _owner_conn(w) as oc:
        vault_id = bytes(oc.execute("SELECT credvault.vault_id()").fetchone()[0])
    conn = psycopg.connect(
        cluster.conninfo(db, f"{db}_alice", tcp=True),
        password=login_password(alice, vault_id),
        autocommit=True,
    )
    with TeamVault(conn, alice_member(alice)) as tv:
        conn.execute(
            "SELECT credvault.create_engagement(%s, %s, 'acme', %s, %s, 'alice')",
            (uid, name, p.fingerprint(key), b"creation-sig"),
        )
        for member, role in (("alice", "lead"), *((r, "engineer") for r in readers)):
            sealed, sig = tv.seal_copy(uid, member, 1, key)
            conn.execute(
                "SELECT credvault.put_grant(%s, %s, %s, %s, 1, %s, %s)",
                (name, member, role, b"role-sig", sealed, sig),
            )
        tv.put(name, "db", secret)


def alice_member(k: MemberKeys) -> Member:
    return Member(k.name, k.kem_private, k.sign_private)


def _owner_conn(w: World) -> psycopg.Connection[tuple[object, ...]]:
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    return psycopg.connect(
        cluster.conninfo(str(w.extra["db"]), str(w.extra["owner"]), tcp=True),
        password=str(w.extra["owner_pw"]),
        autocommit=True,
    )


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


def _slot_version(w: World, who: str) -> int:
    config = Path(w.envs[who]["XDG_CONFIG_HOME"])
    doc = json.loads(
        (config / "credvault" / "team" / str(w.extra["db"]) / f"{who}.slot").read_text()
    )
    return int(doc["version"])


def test_a_schema_1_vault_stays_usable_after_the_upgrade(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """The first admin's command after the upgrade certifies the members it finds and lists
    the engagements without a log (TOFU, audited); the old engagement is read, granted and
    rotated; bob, who joined under schema 1, reads it and pins the founder."""
    w = _v1_world(tmp_path, pg_cluster, ("bob", "carol"))
    _v1_engagement(w, "old-eng", ("bob",), b"from-schema-1")
    w.ok("alice", "init", "--vault", _owner_target(w), "--upgrade-schema")
    # before any admin opened it, bob is told to wait for one (no TOFU by a non-admin)
    early = w.run("bob", "engagement", "new", "x", "--client", "c")
    assert early.code == 4, early.err
    assert "no admin has certified its members yet" in one_line(early)
    assert _slot_version(w, "bob") == 1

    # `get` keeps its lean connection: it asks for another command first
    assert w.run("alice", "get", "old-eng/db").code == 4
    w.ok("alice", "engagement", "new", "new-eng", "--client", "acme")
    assert w.ok("alice", "get", "old-eng/db").out.startswith(b"from-schema-1")
    assert _slot_version(w, "alice") == 2  # the founder pinned herself
    certify = [d for _, a, d in _audit(w) if a == "certify"]
    assert len(certify) == 1
    assert "founder alice: alice, bob, carol;" in certify[0]
    assert "1 engagements without a log" in certify[0]

    assert w.ok("bob", "get", "old-eng/db").out.startswith(b"from-schema-1")
    assert _slot_version(w, "bob") == 2  # pinned the founder at his first chain check

    w.ok("alice", "grant", "old-eng", "carol", "reader")
    assert w.ok("carol", "get", "old-eng/db").out.startswith(b"from-schema-1")
    w.ok("alice", "revoke", "old-eng", "carol")
    assert w.run("carol", "get", "old-eng/db").code == 4
    assert w.ok("bob", "get", "old-eng/db").out.startswith(b"from-schema-1")

    w.ok("alice", "put", "new-eng/db", input=b"after\n")
    w.ok("alice", "grant", "new-eng", "bob", "engineer")
    assert w.ok("bob", "get", "new-eng/db").out == b"after\n"
    assert [a for _, a, _ in _audit(w)].count("certify") == 1  # once only
    assert w.ok("alice", "audit", "verify").text.startswith("audit trail intact: ")


def test_a_key_swapped_after_the_certification_is_caught(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """The DBA (here the owner, who can write every row) replaces bob's published X25519
    key with its own after the certification: alice's next grant to bob seals nothing and
    says tampering; so does bob's own read of the old engagement by the sealer's chain."""
    w = _v1_world(tmp_path, pg_cluster, ("bob",))
    _v1_engagement(w, "old-eng", (), b"s1")
    w.ok("alice", "init", "--vault", _owner_target(w), "--upgrade-schema")
    w.ok("alice", "engagement", "new", "new-eng", "--client", "acme")
    w.ok("alice", "put", "new-eng/db", input=b"after\n")
    _, dba_pub = p.x25519_generate()
    with _owner_conn(w) as conn:
        conn.execute("UPDATE credvault.members SET kem_pub = %s WHERE name = 'bob'", (dba_pub,))
    for eng in ("old-eng", "new-eng"):
        r = w.run("alice", "grant", eng, "bob", "reader")
        assert r.code == 6, (eng, r.err)
        assert "bob" in one_line(r)
    with _owner_conn(w) as conn:
        assert conn.execute(
            "SELECT count(*) FROM credvault.grants WHERE member = 'bob'"
        ).fetchone() == (0,)


def test_a_pinned_admin_never_certifies_again(tmp_path: Path, pg_cluster: Cluster) -> None:
    """The DBA deletes every certificate after the step, hoping the next admin's command
    certifies keys of its choosing: the founder's slot pins her now, so nothing is
    certified again (denial of service, no new certificate, no second `certify`)."""
    w = _v1_world(tmp_path, pg_cluster, ("bob",))
    w.ok("alice", "init", "--vault", _owner_target(w), "--upgrade-schema")
    w.ok("alice", "engagement", "new", "new-eng", "--client", "acme")
    assert _slot_version(w, "alice") == 2
    _, dba_pub = p.x25519_generate()
    with _owner_conn(w) as conn:
        conn.execute("DELETE FROM credvault.member_certs")
        conn.execute("UPDATE credvault.members SET kem_pub = %s WHERE name = 'bob'", (dba_pub,))
    r = w.run("alice", "grant", "new-eng", "bob", "reader")
    assert r.code == 3, r.err  # bob has no certificate: as after any deletion of one
    assert one_line(r) == "credvault: member 'bob' not found"
    with _owner_conn(w) as conn:
        assert conn.execute("SELECT count(*) FROM credvault.member_certs").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM credvault.grants WHERE member = 'bob'"
        ).fetchone() == (0,)
    assert [a for _, a, _ in _audit(w)].count("certify") == 1
