"""``credvault migrate`` (issue 14): a SQLCipher vault moves to PostgreSQL with every
envelope unchanged, the key copies of each membership-log engagement re-issued from its
replayed log by a lead of it (the grant rows, which any insider can write, are not the
source), the old audit trail and the logs archived and anchored, and each member joining
from their machine with the keys they already had."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

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


def _alice_vault(old: World) -> Any:
    from credvault import Vault

    pw = Path(old.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    return Vault.open(Path(old.target), "alice", pw)


def test_envelopes_unchanged_copies_reissued_from_the_log(
    migrated: tuple[World, World, str],
) -> None:
    """Envelopes byte for byte; copies sealed afresh to the log's readers, each signed by
    alice, a lead of the engagement, over the key the log committed to."""
    old, new, _ = migrated
    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.postgres.client import copy_message

    with _alice_vault(old) as v:
        st = v._s.store
        eng = st.engagement_by_name("acme-2026")
        assert eng is not None
        want_env = {c.uid: c.secret_env for c in st.credentials(eng.id)}
        state = v.engagements.grants.log_state(eng)
        assert state is not None
        key = v.engagements.keys.open_logged(eng, state, "alice", v._s.keys.kem_private)
        old_copies = {g.member: g.sealed for g in st.grants(eng.id)}
        vault_id, alice_pub = v._s.vault_id, v._s.me.sign_pub
    cluster: Cluster = new.extra["cluster"]  # type: ignore[assignment]
    db = str(new.extra["db"])
    got_env = {
        bytes(u): bytes(e)
        for u, e in _owner_rows(cluster, db, "SELECT uid, secret_env FROM credvault.credentials")
    }
    assert got_env == want_env
    ((key_fp, created_by),) = _owner_rows(
        cluster, db, "SELECT key_fp, created_by FROM credvault.engagements"
    )
    assert (key_fp, created_by) == (state.fingerprints[state.key_version], "alice")
    rows = _owner_rows(
        cluster, db, "SELECT member, key_version, sealed, sealed_by, copy_sig FROM credvault.grants"
    )
    assert sorted(str(r[0]) for r in rows) == ["alice", "bob"]
    for member, kv, sealed, sealed_by, sig in rows:
        assert (kv, sealed_by) == (state.key_version, "alice")
        assert bytes(sealed) != old_copies[member]  # sealed afresh, not the row's bytes
        msg = copy_message(vault_id, eng.uid, member, kv, bytes(sealed), key, "alice")
        p.verify(alice_pub, labels.GRANT_SIG, msg, bytes(sig), "copy")


def test_a_migrated_record_bound_secret_stays_bound(
    migrated: tuple[World, World, str],
) -> None:
    """The SQLCipher vault bound the secret to its record (format 0x02): a team rotation
    re-seals it bound, and a row renamed by the DBA no longer opens (exit 6)."""
    _, new, _ = migrated
    cluster: Cluster = new.extra["cluster"]  # type: ignore[assignment]
    db = str(new.extra["db"])
    sql = "SELECT key_version, secret_env FROM credvault.credentials WHERE name = 'db'"
    ((kv, env),) = _owner_rows(cluster, db, sql)
    assert bytes(env)[0] == 2  # record-bound, as the SQLCipher vault wrote it
    new.ok("alice", "revoke", "acme-2026", "bob")  # rotates the key on alice's machine
    ((kv2, env2),) = _owner_rows(cluster, db, sql)
    assert kv2 == kv + 1  # type: ignore[operator]
    assert bytes(env2)[0] == 2
    assert new.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    _owner_rows(cluster, db, "UPDATE credvault.credentials SET name = 'db2' WHERE name = 'db'"
                " RETURNING 1")  # fmt: skip
    r = new.run("alice", "get", "acme-2026/db2")
    assert r.code == 6, r.err
    assert SECRET not in r.out


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
    assert len(data["member_logs"]["acme-2026"]) == 3  # create, rotate (alice's key), grant bob
    # the offline recovery key's copy, as the vault held it (a team vault has no recovery key)
    assert data["recovery"]["acme-2026"]["sealed"]
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


def _pg_schemas(cluster: Cluster, db: str) -> int:
    ((n,),) = _owner_rows(
        cluster, db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'credvault'"
    )
    return int(n)  # type: ignore[call-overload]


def test_an_engagement_the_migrating_admin_does_not_lead_refuses_it_changing_nothing(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """alice (admin) cannot vouch for bob's engagement's copies: one line naming it and
    what to do, exit 4, nothing written anywhere. Once bob grants her lead, it migrates and
    bob reads his secret on the team vault through the copy alice sealed to him."""
    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "engagement", "new", "beta-2026", "--client", "beta", "--lead", "bob")
    old.ok("bob", "put", "beta-2026/db", input=SECRET + b"\n")  # bob makes its first key
    db, owner_target, _ = _target_db(pg_cluster, old)
    inv = tmp_path / "inv"
    with _alice_vault(old) as v:
        trail = [e.action for e in v._s.store.audit_iter()]
    r = old.run("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    assert r.code == 4
    line = one_line(r)
    assert "not a lead of beta-2026" in line
    assert "grant alice lead" in line
    assert "acme-2026" not in line.split("not a lead of", 1)[1].split(":")[0]
    assert not inv.exists()
    assert _pg_schemas(pg_cluster, db) == 0  # not even the schema applied
    with _alice_vault(old) as v:  # nothing written to the old vault's trail either
        assert [e.action for e in v._s.store.audit_iter()] == trail

    old.ok("bob", "grant", "beta-2026", "alice", "lead")
    r = old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    assert r.text.startswith(f"migrated to {db}: 2 engagements, 1 credentials, ")
    target = f"postgresql://127.0.0.1:{pg_cluster.port}/{db}"
    new = World("postgresql", tmp_path / "new", target)
    env = dict(old.envs["bob"], CREDVAULT_VAULT=target)
    new.envs["bob"] = env
    new.ok("bob", "join", "--from-vault", old.target,
           "--invitation-file", str(inv / "bob.invitation"),
           "--passphrase-file", env["CREDVAULT_PASSPHRASE_FILE"], "--kdf", KDF_ARG)  # fmt: skip
    assert new.ok("bob", "get", "beta-2026/db").out == SECRET + b"\n"


def _insider_sql(old: World, who: str, sql: str) -> None:
    """``who`` at a SQL shell on the SQLCipher database (every member holds its key)."""
    import sqlcipher3

    from credvault import Vault

    pw = Path(old.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    with Vault.open(Path(old.target), who, pw) as v:
        db_key = bytes(v._s.db_key)
    conn = sqlcipher3.connect(str(Path(old.target) / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def test_a_grant_row_planted_by_an_insider_does_not_migrate(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """Insider bob (database key) writes a lead grant for carol into acme-2026, with his own
    sealed copy's bytes. The log never granted her, so she gets no role and no copy on the
    team vault: migrate reads the replayed log, not the rows (byte-for-byte copying carried
    the row over)."""
    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    old.ok("alice", "grant", "acme-2026", "bob", "engineer")
    _insider_sql(
        old,
        "bob",
        "INSERT INTO grants (engagement_id, member, role, granted_by, granted_at, role_sig,"
        " key_version, sealed, sealed_by, copy_sig) SELECT engagement_id, 'carol', 'lead',"
        " 'alice', granted_at, role_sig, key_version, sealed, 'alice', x'00'"
        " FROM grants WHERE member = 'bob'",
    )
    db, owner_target, _ = _target_db(pg_cluster, old)
    inv = tmp_path / "inv"
    old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    members = [
        str(r[0]) for r in _owner_rows(pg_cluster, db, "SELECT member FROM credvault.grants")
    ]
    assert sorted(members) == ["alice", "bob"]
    target = f"postgresql://127.0.0.1:{pg_cluster.port}/{db}"
    new = World("postgresql", tmp_path / "new", target)
    env = dict(old.envs["carol"], CREDVAULT_VAULT=target)
    new.envs["carol"] = env
    new.ok("carol", "join", "--from-vault", old.target,
           "--invitation-file", str(inv / "carol.invitation"),
           "--passphrase-file", env["CREDVAULT_PASSPHRASE_FILE"], "--kdf", KDF_ARG)  # fmt: skip
    r = new.run("carol", "get", "acme-2026/db")
    assert r.code == 4, r.err
    assert SECRET not in r.out


def test_an_engagement_whose_log_demands_a_rotation_waits_for_it(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """bob's key is compromised (a signed succeed link demanding a rotation), and insider
    bob clears the ``needs_rotation`` flag so that alice's open does not rotate: the log
    still demands it, so the current key is not handed on to the team vault. migrate
    refuses, naming the engagement and the command; after alice rotates, it migrates."""
    from credvault import Vault

    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    old.ok("alice", "grant", "acme-2026", "bob", "engineer")
    bob_pw = Path(old.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    with Vault.open(Path(old.target), "bob", bob_pw) as v:
        v.members.passwd(b"bob-new-passphrase", compromised=True)
    Path(old.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).write_text("bob-new-passphrase\n")
    _insider_sql(old, "bob", "UPDATE engagements SET needs_rotation = 0")
    db, owner_target, _ = _target_db(pg_cluster, old)
    inv = tmp_path / "inv"
    r = old.run("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    assert r.code == 4
    assert "acme-2026 must get a new key first" in one_line(r)
    assert "credvault engagement rotate NAME" in one_line(r)
    assert not inv.exists()
    assert _pg_schemas(pg_cluster, db) == 0
    old.ok("alice", "engagement", "rotate", "acme-2026")
    old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(inv))


def test_the_membership_log_is_carried_over_and_goes_on(
    migrated: tuple[World, World, str],
) -> None:
    """The SQLCipher log becomes the team log link for link (same bytes, same hashes):
    bob's team client replays it from link 0 (alice, its creator, is a certified admin of
    the team vault with the same key), reads through it, and a revoke on the team vault
    appends a signed link after the SQLCipher ones. The engagement is not in the founder's
    list of engagements without a log."""
    from credvault import memberlog as ml

    old, new, _ = migrated
    with _alice_vault(old) as v:
        eng = v._s.store.engagement_by_name("acme-2026")
        assert eng is not None
        sqlcipher_links = v._s.store.log_links(eng.id)
    cluster: Cluster = new.extra["cluster"]  # type: ignore[assignment]
    db = str(new.extra["db"])
    q = "SELECT link FROM credvault.engagement_log ORDER BY seq"
    assert [bytes(r[0]) for r in _owner_rows(cluster, db, q)] == sqlcipher_links
    assert new.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    new.ok("alice", "revoke", "acme-2026", "bob")
    team_links = [bytes(r[0]) for r in _owner_rows(cluster, db, q)]
    assert team_links[: len(sqlcipher_links)] == sqlcipher_links
    assert [ml.Link.from_bytes(b).kind for b in team_links[len(sqlcipher_links) :]] == [
        "revoke",
        "rotate",
    ]
    assert new.run("bob", "get", "acme-2026/db").code == 4
    assert new.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    (listed,) = _owner_rows(
        cluster, db, "SELECT value FROM credvault.meta WHERE key = 'pre_log_engagements'"
    )[0]
    assert eng.uid not in bytes(listed)


def test_a_team_rotation_reseals_systems_and_keeps_their_links(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """A migrated engagement with a system (the version-1 rotation refused it): a revoke on
    the team vault rotates the key, re-sealing the system's address bound to its name,
    port and protocol, and the linked credential still opens under its system link. The
    DBA changing the port afterwards makes the next rotation fail (exit 6), nothing stored."""
    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "system", "add", "acme-2026/web1", "--address", "10.0.0.1", "--port", "22")
    old.ok("alice", "put", "acme-2026/root", "--system", "web1", input=SECRET + b"\n")
    old.ok("alice", "grant", "acme-2026", "bob", "reader")
    old.ok("alice", "grant", "acme-2026", "carol", "reader")
    old.ok("alice", "engagement", "set", "acme-2026", "--require-reason")
    db, owner_target, _ = _target_db(pg_cluster, old)
    inv = tmp_path / "inv"
    old.ok("alice", "migrate", "--to", owner_target, "--invitations", str(inv))
    target = f"postgresql://127.0.0.1:{pg_cluster.port}/{db}"
    new = World("postgresql", tmp_path / "new", target)
    for who in ("alice", "bob", "carol"):
        new.envs[who] = dict(old.envs[who], CREDVAULT_VAULT=target)
        new.ok(who, "join", "--from-vault", old.target,
               "--invitation-file", str(inv / f"{who}.invitation"),
               "--passphrase-file", new.envs[who]["CREDVAULT_PASSPHRASE_FILE"],
               "--kdf", KDF_ARG)  # fmt: skip
    sql = "SELECT address_env FROM credvault.systems WHERE name = 'web1'"
    ((before,),) = _owner_rows(pg_cluster, db, sql)
    new.ok("alice", "revoke", "acme-2026", "bob")
    ((after,),) = _owner_rows(pg_cluster, db, sql)
    assert bytes(after) != bytes(before)
    assert bytes(after)[0] == 2  # record-bound
    assert int.from_bytes(bytes(after)[1:5], "big") == int.from_bytes(bytes(before)[1:5], "big") + 1
    assert new.ok("alice", "get", "acme-2026/root", "--reason", "T").out == SECRET + b"\n"
    assert new.ok("carol", "get", "acme-2026/root", "--reason", "T").out == SECRET + b"\n"
    # --require-reason came over signed into the carried log (a `set` link by alice)
    no_reason = new.run("carol", "get", "acme-2026/root")
    assert (no_reason.code, no_reason.out) == (4, b"")
    assert "(this engagement requires --reason)" in no_reason.err
    _owner_rows(pg_cluster, db, "UPDATE credvault.systems SET port = 2222 RETURNING 1")
    r = new.run("alice", "revoke", "acme-2026", "carol")
    assert r.code == 6, r.err
    ((unchanged,),) = _owner_rows(pg_cluster, db, sql)
    assert bytes(unchanged) == bytes(after)
