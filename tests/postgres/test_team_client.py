"""The member's side: envelopes, sealed copies and signatures made and checked on the
member's machine; the server (and its DBA) holding only ciphertext."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from credvault.crypto import primitives
from credvault.errors import AccessDenied, IntegrityError, NotFound
from credvault.postgres.client import TeamVault, connect, is_postgres_target

SECRET = b"CANARY-pg-7f3a9c-s3cr3t-\xe2\x98\x83"


def team_vault(pg: Any, member: str) -> TeamVault:
    return TeamVault(pg.connect(member), pg.keys[member])


@pytest.fixture
def alpha(pg: Any) -> tuple[Any, bytes]:
    """alice makes engagement alpha on her machine: the key never leaves it in clear."""
    pg.add("bob")
    pg.add("eve")
    key = primitives.random_key()
    uid = primitives.random_key()[:16]
    pg.unlogged_engagement("alpha", uid=bytes(uid), key_fp=primitives.fingerprint(key))
    with team_vault(pg, "alice") as alice:
        _make_alpha(alice, key, uid)
    return pg, bytes(key)


def _make_alpha(alice: TeamVault, key: bytes, uid: bytes) -> None:
    for member, role in (("alice", "lead"), ("bob", "engineer")):
        sealed, sig = alice.seal_copy(bytes(uid), member, 1, key)
        alice.conn.execute(
            "SELECT credvault.put_grant('alpha', %s, %s, %s, 1, %s, %s)",
            (member, role, b"role-sig", sealed, sig),
        )
    alice.put("alpha", "db", SECRET)


def test_secret_round_trips_through_the_server(alpha: tuple[Any, bytes]) -> None:
    pg, _ = alpha
    before = pg.audit_count("get")
    with team_vault(pg, "bob") as bob:
        assert bob.get("alpha", "db", "deploy") == SECRET
    assert pg.audit_count("get") == before + 1


def test_replacing_a_value(alpha: tuple[Any, bytes]) -> None:
    pg, _ = alpha
    with team_vault(pg, "alice") as alice:
        alice.put("alpha", "db", b"rotated password")
    with team_vault(pg, "bob") as bob:
        assert bob.get("alpha", "db") == b"rotated password"


def test_dba_dump_holds_no_key_and_no_secret(alpha: tuple[Any, bytes]) -> None:
    pg, key = alpha
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--schema=credvault"],
        env=pg.cluster.env("postgres", pg.cluster.password, pg.db),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert b"put_credential" not in dump  # data only, and there is data:
    assert b"alpha" in dump
    for needle in (SECRET, key):
        assert needle not in dump
        assert needle.hex().encode() not in dump


def test_no_role_no_rows_no_secret(alpha: tuple[Any, bytes]) -> None:
    pg, _ = alpha
    with team_vault(pg, "eve") as eve:
        with pytest.raises(AccessDenied):
            eve.get("alpha", "db")
        with pytest.raises(NotFound):  # row-level security: alpha does not exist for eve
            eve.engagement_key("alpha")


def test_dba_swapping_sealed_copies_is_caught_on_the_members_machine(
    alpha: tuple[Any, bytes],
) -> None:
    pg, _ = alpha
    with pg.connect() as owner:
        owner.execute(
            "UPDATE credvault.grants SET sealed = (SELECT sealed FROM credvault.grants "
            "WHERE member = 'alice') WHERE member = 'bob'"
        )
    # alice's copy is bound (HPKE info and recipient key) to alice: bob cannot open it
    with team_vault(pg, "bob") as bob, pytest.raises(IntegrityError, match="could not be opened"):
        bob.get("alpha", "db")


def test_dba_sealing_a_key_of_their_own_to_a_member_is_caught(
    alpha: tuple[Any, bytes],
) -> None:
    """The DBA knows bob's public key and can seal any key to it, so the copy opens; only
    the sealer's signature (over the key's fingerprint) tells bob it is not a lead's."""
    from credvault.postgres.client import seal_info

    pg, _ = alpha
    dba_key = primitives.random_key()
    with pg.connect() as owner:
        uid, kem_pub, vault_id = owner.execute(
            "SELECT e.uid, m.kem_pub, (SELECT value FROM credvault.meta WHERE key = 'vault_id')"
            " FROM credvault.engagements e, credvault.members m"
            " WHERE e.name = 'alpha' AND m.name = 'bob'"
        ).fetchone()
        forged = primitives.hpke_seal(
            bytes(kem_pub), dba_key, seal_info(bytes(vault_id), bytes(uid), "bob", 1)
        )
        owner.execute("UPDATE credvault.grants SET sealed = %s WHERE member = 'bob'", (forged,))
    with team_vault(pg, "bob") as bob, pytest.raises(IntegrityError, match="signature"):
        bob.get("alpha", "db")


def test_dba_moving_an_envelope_is_caught(alpha: tuple[Any, bytes]) -> None:
    pg, _ = alpha
    with team_vault(pg, "alice") as alice:
        alice.put("alpha", "other", b"another secret")
    with pg.connect() as owner:
        owner.execute(
            "UPDATE credvault.credentials SET secret_env = (SELECT secret_env FROM "
            "credvault.credentials WHERE name = 'other') WHERE name = 'db'"
        )
    with team_vault(pg, "bob") as bob, pytest.raises(IntegrityError):
        bob.get("alpha", "db")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("postgresql://db.example/team", True),
        ("postgres://u@db1:5432,db2:5433/team?target_session_attrs=read-write", True),
        ("service=team", True),
        ("host=db1,db2 dbname=team sslmode=verify-full", True),
        ("/home/alice/.local/share/credvault", False),
        ("vault", False),
        ("./host=x", False),
    ],
)
def test_vault_target_forms(target: str, expected: bool) -> None:
    assert is_postgres_target(target) is expected


def test_connect_by_service_file_and_multi_host(
    pg: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = pg.cluster
    service = tmp_path / "pg_service.conf"
    service.write_text(
        f"[team]\nhost={c.sockdir}\nport={c.port}\ndbname={pg.db}\nuser={pg.role('alice')}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    with connect("service=team", password=pg.passwords["alice"]) as conn:
        assert conn.execute("SELECT credvault.me()").fetchone()[0] == "alice"
    # a dead first host: libpq moves on to the next one in the list
    dead = c.port + 1 if c.port < 65535 else c.port - 1
    uri = (
        f"postgresql://{pg.role('alice')}@127.0.0.1:{dead},127.0.0.1:{c.port}/{pg.db}"
        "?connect_timeout=5"
    )
    with connect(uri, password=pg.passwords["alice"]) as conn:
        assert conn.execute("SELECT credvault.me()").fetchone()[0] == "alice"
