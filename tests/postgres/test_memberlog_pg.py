"""The signed membership log and certified member keys on a team vault, tried as the attacker.

The attacker here is the DBA (a superuser with ``psql``, who can write every row and owns
nothing of a member's machine) or a member with their own login and ``psql``. Each test
drives the real ``credvault`` command as the honest members (their own HOME, their own
process) and the attack through SQL, then asserts what the signed history promises: a key
the DBA swapped in is refused before anything is sealed to it (exit 6), a forged, removed
or reordered link is exit 6 on the next replay, a member may not append a link out of order
or touch the log table, and a revoked member the DBA puts back gets no copy.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF_ARG
from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.postgres.slot import TeamSlot, login_password
from credvault.secret import Secret
from pg_cluster import Cluster

from .test_contract import SECRET, World, _postgresql, one_line


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def dba(w: World, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The DBA: the bootstrap superuser, straight into the vault's database."""
    import psycopg

    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    with psycopg.connect(
        cluster.conninfo(str(w.extra["db"])), password=cluster.password, autocommit=True
    ) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def member_conn(w: World, who: str) -> Any:
    """``who``'s own login (the password their slot derives), as their psql would have."""
    import psycopg

    db = str(w.extra["db"])
    home = Path(w.envs[who]["XDG_CONFIG_HOME"])
    slot = TeamSlot.read(home / "credvault" / "team" / db / f"{who}.slot")
    pw = Path(w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    keys = slot.unlock(Secret(pw.encode()))
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    return psycopg.connect(
        cluster.conninfo(db, user=f"{db}_{who}"),
        password=login_password(keys, slot.vault_id),
        autocommit=True,
    )


def links(w: World, eng: str) -> list[bytes]:
    rows = dba(
        w,
        "SELECT l.link FROM credvault.engagement_log l JOIN credvault.engagements e "
        "ON e.id = l.engagement_id WHERE e.name = %s ORDER BY l.seq",
        (eng,),
    )
    return [bytes(r[0]) for r in rows]


def copies(w: World, eng: str) -> dict[str, bytes | None]:
    rows = dba(
        w,
        "SELECT g.member, g.sealed FROM credvault.grants g JOIN credvault.engagements e "
        "ON e.id = g.engagement_id WHERE e.name = %s",
        (eng,),
    )
    return {str(m): None if s is None else bytes(s) for m, s in rows}


def test_the_log_is_made_with_the_engagement_and_every_change(team: World) -> None:
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "reader")
    team.ok("alice", "revoke", "acme-2026", "bob")
    kinds = [ml.Link.from_bytes(b).kind for b in links(team, "acme-2026")]
    assert kinds == ["create", "rotate", "grant", "revoke", "rotate"]
    # the chain is the SQLCipher one: each link names the hash of the one before
    chain = links(team, "acme-2026")
    for before, after in itertools.pairwise(chain):
        assert ml.Link.from_bytes(after).prev == ml.chain_hash(before)
    assert team.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"


@pytest.mark.parametrize("column", ["kem_pub", "sign_pub"])
def test_a_key_the_dba_swaps_in_before_a_grant_is_refused(team: World, column: str) -> None:
    """The DBA replaces bob's published public key with one of their own just before alice
    grants him: alice's client finds the key is not the one bob's join proof certifies,
    refuses with exit 6, and nothing is sealed to the DBA's key (no copy, no link)."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    before = links(team, "acme-2026")
    gen = p.x25519_generate if column == "kem_pub" else p.ed25519_generate
    attacker = gen()[1]
    swap = {
        "kem_pub": "UPDATE credvault.members SET kem_pub = %s WHERE name = 'bob'",
        "sign_pub": "UPDATE credvault.members SET sign_pub = %s WHERE name = 'bob'",
    }
    dba(team, swap[column], (attacker,))
    r = team.run("alice", "grant", "acme-2026", "bob", "engineer")
    assert r.code == 6, r.err
    assert "bob" in one_line(r)
    assert "bob" not in copies(team, "acme-2026")
    assert links(team, "acme-2026") == before


def test_a_member_the_dba_made_up_cannot_be_granted(team: World) -> None:
    """A member row with its own self-signed "founder" certificate: not the founder every
    member pins (the fingerprint rides in each invitation code), so exit 6."""
    from credvault.team_log import invitation_message, join_message

    db = str(team.extra["db"])
    sign_priv, sign_pub = p.ed25519_generate()
    kem_pub = p.x25519_generate()[1]
    vault_id = bytes(dba(team, "SELECT value FROM credvault.meta WHERE key = 'vault_id'")[0][0])
    dba(team, f'CREATE ROLE "{db}_mallory" LOGIN')
    dba(
        team,
        "INSERT INTO credvault.members (name, role_name, admin, state, sign_pub, kem_pub) "
        "VALUES ('mallory', %s, true, 'active', %s, %s)",
        (f"{db}_mallory", sign_pub, kem_pub),
    )
    inv = p.sign(
        sign_priv,
        labels.TEAM_INVITE_SIG,
        invitation_message(vault_id, "mallory", sign_pub, True, "mallory"),
    )
    proof = p.sign(
        sign_priv, labels.TEAM_JOIN_PROOF, join_message(vault_id, "mallory", sign_pub, kem_pub)
    )
    dba(
        team,
        "INSERT INTO credvault.member_certs VALUES ('mallory', 'mallory', true, %s, %s, %s)",
        (sign_pub, inv, proof),
    )
    r = team.run("alice", "grant", "acme-2026", "mallory", "reader")
    assert r.code == 6, r.err
    assert "mallory" not in copies(team, "acme-2026")


def test_a_member_cannot_write_the_log_or_append_out_of_order(team: World) -> None:
    team.ok("alice", "grant", "acme-2026", "bob", "lead")
    head = links(team, "acme-2026")
    with member_conn(team, "bob") as conn:
        for sql in (
            "SELECT count(*) FROM credvault.engagement_log",
            "INSERT INTO credvault.engagement_log SELECT engagement_id, seq + 100, link, hash "
            "FROM credvault.engagement_log",
            "DELETE FROM credvault.engagement_log",
            "UPDATE credvault.member_certs SET admin = true",
            "SELECT credvault.log_append(1, '\\x00'::bytea)",
        ):
            with pytest.raises(Exception, match="permission denied"):
                conn.execute(sql)
        # a replayed link (an old one again) and a link that skips ahead: both refused
        for link in (head[1], _relinked(head[-1], len(head) + 1, ml.chain_hash(head[-1]))):
            with pytest.raises(Exception, match="out of order"):
                conn.execute(
                    "SELECT credvault.revoke_grant_logged('acme-2026', 'alice', %s)", (link,)
                )
    assert links(team, "acme-2026") == head
    assert team.ok("alice", "ls", "acme-2026").code == 0


def _relinked(blob: bytes, seq: int, prev: bytes) -> bytes:
    """A link moved to another place in the chain (its signature no longer covers it)."""
    link = ml.Link.from_bytes(blob)
    return link._replace(seq=seq, prev=prev).to_bytes()


def test_a_forged_link_the_dba_appends_fails_the_next_replay(team: World) -> None:
    """The DBA appends a grant of lead to carol in alice's name, with the chain's seq and
    hash right (so the server takes it) but a signature they cannot make: bob's next read
    replays it and stops, exit 6, before any key is used."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "reader")
    assert team.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    chain = links(team, "acme-2026")
    last = ml.Link.from_bytes(chain[-1])
    carol = dba(team, "SELECT sign_pub, kem_pub FROM credvault.members WHERE name = 'carol'")[0]
    forged = ml.Link(
        last.vault_id, last.engagement_uid, last.seq + 1, ml.chain_hash(chain[-1]),
        last.time, ml.GRANT, "alice", last.signer_key,
        ("carol", "lead", "", bytes(carol[0]), bytes(carol[1])), os.urandom(64),
    ).to_bytes()  # fmt: skip
    dba(
        team,
        "INSERT INTO credvault.engagement_log SELECT id, %s, %s, "
        "sha256(convert_to('credvault/v1/membership-chain', 'UTF8') || %s) "
        "FROM credvault.engagements WHERE name = 'acme-2026'",
        (last.seq + 1, forged, forged),
    )
    r = team.run("bob", "get", "acme-2026/db")
    assert r.code == 6, r.err
    assert "signature" in one_line(r)
    assert SECRET not in r.out
    r = team.run("alice", "grant", "acme-2026", "carol", "reader")
    assert r.code == 6


@pytest.mark.parametrize("attack", ["truncate", "reorder", "delete-all"])
def test_a_removed_or_reordered_link_is_caught(team: World, attack: str) -> None:
    """bob verified the log once; the DBA then removes the last link (carol's grant, or a
    revocation), or deletes the whole log to pass the engagement off as one made before the
    log: bob's next command is exit 6 (his witness). Two links swapped: carol, replaying
    it for the first time, gets exit 6 (the chain)."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "reader")
    team.ok("alice", "grant", "acme-2026", "carol", "reader")
    assert team.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    where = "engagement_id = (SELECT id FROM credvault.engagements WHERE name = 'acme-2026')"
    statements = {
        "truncate": ["DELETE FROM credvault.engagement_log WHERE seq = 3 AND "],
        "reorder": [
            "UPDATE credvault.engagement_log SET seq = 100 WHERE seq = 2 AND ",
            "UPDATE credvault.engagement_log SET seq = 2 WHERE seq = 3 AND ",
            "UPDATE credvault.engagement_log SET seq = 3 WHERE seq = 100 AND ",
        ],
        "delete-all": ["DELETE FROM credvault.engagement_log WHERE "],
    }
    for sql in statements[attack]:
        dba(team, sql + where)
    who = "carol" if attack == "reorder" else "bob"
    r = team.run(who, "get", "acme-2026/db")
    assert r.code == 6, r.err
    assert SECRET not in r.out
    one_line(r)


def test_a_revoked_member_the_owner_puts_back_gets_no_copy(team: World) -> None:
    """bob is revoked (signed, then the key rotates). The DBA clears his revocation and
    gives him a role row again; at alice's next rotation the copies go to the replayed
    roster only: none to bob, and he reads nothing."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "reader")
    team.ok("alice", "grant", "acme-2026", "carol", "reader")
    team.ok("alice", "revoke", "acme-2026", "bob")
    dba(
        team,
        "UPDATE credvault.grants SET revoked_at = NULL, role = 'lead' WHERE member = 'bob'",
    )
    dba(team, "UPDATE credvault.engagements SET needs_rotation = true")
    team.ok("alice", "revoke", "acme-2026", "carol")  # and the key rotates again
    got = copies(team, "acme-2026")
    assert got["bob"] is None
    assert {m for m, s in got.items() if s is not None} == {"alice"}
    r = team.run("bob", "get", "acme-2026/db")
    assert r.code in (4, 6), r.err
    assert SECRET not in r.out
    assert team.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"


def test_rotation_seals_to_the_key_the_log_pins_not_a_swapped_one(team: World) -> None:
    """bob is on the roster; the DBA then swaps his published X25519 key. The next
    rotation seals bob's copy to the key his grant link pinned: bob still reads."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "reader")
    team.ok("alice", "grant", "acme-2026", "carol", "reader")
    attacker = p.x25519_generate()[1]
    dba(team, "UPDATE credvault.members SET kem_pub = %s WHERE name = 'bob'", (attacker,))
    team.ok("alice", "revoke", "acme-2026", "carol")
    assert team.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"


def test_an_admin_who_does_not_lead_never_holds_the_key(team: World) -> None:
    """alice (admin) creates beta with bob as its first lead: no key exists until bob's
    first use, which makes it on his machine; alice holds no copy and reads nothing."""
    team.ok("alice", "engagement", "new", "beta", "--client", "b", "--lead", "bob")
    row = dba(team, "SELECT key_version, key_fp FROM credvault.engagements WHERE name = 'beta'")
    assert row == [(0, "")]
    team.ok("bob", "put", "beta/db", input=SECRET + b"\n")
    assert team.ok("bob", "get", "beta/db").out == SECRET + b"\n"
    got = copies(team, "beta")
    assert set(got) == {"bob"}
    kinds = [ml.Link.from_bytes(b).kind for b in links(team, "beta")]
    assert kinds == ["create", "rotate"]
    assert ml.Link.from_bytes(links(team, "beta")[1]).signer == "bob"
    r = team.run("alice", "get", "beta/db")
    assert r.code == 4
    assert SECRET not in r.out


def test_team_secrets_are_record_bound(team: World) -> None:
    """Issue 11's record binding on the team vault: the DBA swaps two credentials' names
    (their envelopes stay where they are): a get is exit 6, never the other secret."""
    team.ok("alice", "put", "acme-2026/prod", input=b"PROD-secret\n")
    team.ok("alice", "put", "acme-2026/test", input=b"TEST-secret\n")
    env = dba(team, "SELECT secret_env FROM credvault.credentials WHERE name = 'prod'")[0][0]
    assert bytes(env)[0] == 0x02  # format 0x02: record-bound
    for old, new in (("prod", "x"), ("test", "prod"), ("x", "test")):
        dba(team, "UPDATE credvault.credentials SET name = %s WHERE name = %s", (new, old))
    r = team.run("alice", "get", "acme-2026/prod")
    assert r.code == 6, r.err
    assert b"TEST-secret" not in r.out
    # and a kind edited behind the client's back fails the same way
    team.ok("alice", "put", "acme-2026/other", input=b"OTHER\n")
    assert team.ok("alice", "get", "acme-2026/other").out == b"OTHER\n"
    dba(team, "UPDATE credvault.credentials SET kind = 'token' WHERE name = 'other'")
    assert team.run("alice", "get", "acme-2026/other").code == 6


def test_an_invitation_code_without_the_founder_fingerprint_is_refused(
    team: World, tmp_path: Path
) -> None:
    code = tmp_path / "dave.invitation"
    team.ok("alice", "member", "invite", "dave", "--invitation-file", str(code))
    text = code.read_text().strip()
    token, fp = text.rsplit(".", 1)
    assert len(fp) == 32
    from credvault.team_log import fingerprint

    alice_sign = dba(team, "SELECT sign_pub FROM credvault.members WHERE name = 'alice'")[0][0]
    assert fp == fingerprint(bytes(alice_sign))  # the founder every member pins
    code.write_text(token + "\n")
    team.envs["dave"] = {**team.envs["carol"], "CREDVAULT_MEMBER": "dave"}
    home = tmp_path / "home-dave"
    home.mkdir(mode=0o700)
    team.envs["dave"].update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
    pfile = team.envs["carol"]["CREDVAULT_PASSPHRASE_FILE"]
    r = team.run(
        "dave", "join", "--invitation-file", str(code), "--passphrase-file", pfile,
        "--kdf", KDF_ARG,
    )  # fmt: skip
    assert r.code == 2, r.err
    assert "invitation code" in one_line(r)


def test_an_engagement_made_around_the_log_is_refused(team: World) -> None:
    """alice, an admin with psql, tries the version-1 ``create_engagement``: closed to
    members since schema 2 (section pgv1). The DBA then writes the same rows straight into
    the tables: an engagement without a log, bob its lead, with a key alice made and sealed
    to bob (the copy signed with her own certified key, so every signature checks). bob's
    client refuses it (exit 6): only engagements the founder listed at ``migrate`` may lack a
    log, so he never seals a secret under a key his admin knows."""
    import psycopg

    from credvault.postgres.client import copy_message, creation_message, seal_info

    db = str(team.extra["db"])
    home = Path(team.envs["alice"]["XDG_CONFIG_HOME"])
    slot = TeamSlot.read(home / "credvault" / "team" / db / "alice.slot")
    pw = Path(team.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    keys = slot.unlock(Secret(pw.encode()))
    vid, uid, key = slot.vault_id, os.urandom(16), p.random_key()
    bob_kem = bytes(dba(team, "SELECT kem_pub FROM credvault.members WHERE name = 'bob'")[0][0])
    sealed = p.hpke_seal(bob_kem, key, seal_info(vid, uid, "bob", 1))
    creation_sig = p.sign(
        keys.sign_private,
        labels.GRANT_SIG,
        creation_message(vid, uid, "planted", "c", "bob", "alice"),
    )
    copy_sig = p.sign(
        keys.sign_private, labels.GRANT_SIG, copy_message(vid, uid, "bob", 1, sealed, key, "alice")
    )
    with (
        member_conn(team, "alice") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
    ):
        conn.execute(
            "SELECT credvault.create_engagement(%s, 'planted', 'c', %s, %s, 'bob')",
            (uid, p.fingerprint(key), creation_sig),
        )
    (eid,) = dba(
        team,
        "INSERT INTO credvault.engagements (uid, name, client, state, key_version, key_fp,"
        " created_by, lead, creation_sig) VALUES (%s, 'planted', 'c', 'active', 1, %s,"
        " 'alice', 'bob', %s) RETURNING id",
        (uid, p.fingerprint(key), creation_sig),
    )[0]
    dba(
        team,
        "INSERT INTO credvault.grants (engagement_id, member, role, granted_by, role_sig,"
        " key_version, sealed, sealed_by, copy_sig)"
        " VALUES (%s, 'bob', 'lead', 'alice', '\\x00', 1, %s, 'alice', %s) RETURNING 1",
        (eid, sealed, copy_sig),
    )
    r = team.run("bob", "put", "planted/db", input=SECRET + b"\n")
    assert r.code == 6, r.err
    assert "membership log" in one_line(r)
    assert dba(team, "SELECT count(*) FROM credvault.credentials")[0][0] == 0


def test_join_checks_its_own_certificate(team: World, tmp_path: Path) -> None:
    """The DBA replaces dave's invitation statement (say, to make him an admin) before he
    joins: the signature no longer verifies, and dave's own join says so (exit 6), so the
    forged invitation is found at once, not at his first grant."""
    code = tmp_path / "dave.invitation"
    team.ok("alice", "member", "invite", "dave", "--invitation-file", str(code))
    dba(team, "UPDATE credvault.member_certs SET admin = true WHERE member = 'dave'")
    home = tmp_path / "home-dave"
    home.mkdir(mode=0o700)
    team.envs["dave"] = {
        **team.envs["carol"],
        "CREDVAULT_MEMBER": "dave",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    pfile = team.envs["carol"]["CREDVAULT_PASSPHRASE_FILE"]
    r = team.run(
        "dave", "join", "--invitation-file", str(code), "--passphrase-file", pfile,
        "--kdf", KDF_ARG,
    )  # fmt: skip
    assert r.code == 6, r.err
    assert "certificate" in one_line(r)
    assert team.run("alice", "grant", "acme-2026", "dave", "reader").code == 6


def _unlock(w: World, who: str) -> tuple[bytes, bytes, bytes]:
    """(signing private key, login password, vault id) as ``who``'s machine holds them."""
    db = str(w.extra["db"])
    home = Path(w.envs[who]["XDG_CONFIG_HOME"])
    slot = TeamSlot.read(home / "credvault" / "team" / db / f"{who}.slot")
    pw = Path(w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_text().strip()
    keys = slot.unlock(Secret(pw.encode()))
    return keys.sign_private, login_password(keys, slot.vault_id).encode(), slot.vault_id


def test_member_rm_signs_revocations_the_dba_cannot_undo(team: World) -> None:
    """alice (admin) removes bob, a reader of acme-2026 (alice leads it) and a co-lead of
    beta (carol leads it; alice holds no role there). One call that fails half-way leaves
    nothing; a removal by the older server function alone leaves bob on both rosters;
    `member rm` then signs his revocation into both logs. The DBA puts everything back —
    login, password, `members` row, grant rows with his old copies — and still: bob reads
    nothing, carol's next rotation seals nothing to him, and a link bob signs himself with
    his own key is exit 6 for carol. The audit shows each revocation. gamma, which bob
    alone leads, keeps him (a log keeps a lead) and `member rm` says so."""
    import psycopg

    from credvault.postgres import scram_verifier

    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.setup(
        [
            ("alice", ("grant", "acme-2026", "bob", "reader")),
            ("alice", ("engagement", "new", "beta", "--client", "b", "--lead", "carol")),
            ("carol", ("grant", "beta", "bob", "lead")),  # carol's first use makes the key
            ("alice", ("engagement", "new", "gamma", "--client", "g", "--lead", "bob")),
        ]
    )
    rows = "SELECT g.engagement_id, g.key_version, g.sealed, g.sealed_by, g.copy_sig FROM "
    back = dba(team, rows + "credvault.grants g WHERE g.member = 'bob'")
    assert len(back) == 3  # gamma: bob's lead row, no key yet
    assert sum(r[2] is not None for r in back) == 2
    before = {e: links(team, e) for e in ("acme-2026", "beta")}
    # atomic: a call whose second link the server refuses appends nothing, removes nothing
    last = ml.Link.from_bytes(before["acme-2026"][-1])
    unsigned = ml.Link(
        last.vault_id, last.engagement_uid, last.seq + 1, ml.chain_hash(before["acme-2026"][-1]),
        last.time, ml.REVOKE, "alice", last.signer_key, ("bob",), bytes(64),
    ).to_bytes()  # fmt: skip
    call = "SELECT credvault.remove_member_logged('bob', %s::text[], %s::bytea[], NULL)"
    alice_role = f"{team.extra['db']}_alice"
    with member_conn(team, "alice") as alice:
        with pytest.raises(Exception, match="not a revoke of bob"):
            alice.execute(call, (["acme-2026", "beta"], [unsigned, b"\x00" * 200]))
        assert {e: links(team, e) for e in before} == before
        assert dba(team, "SELECT state FROM credvault.members WHERE name = 'bob'") == [("active",)]
        # version 1's remove_member publishes no list version: closed to admins (crlgaps)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="remove_member"):
            alice.execute("SELECT credvault.remove_member('bob')")
        # an older client's removal (the DBA opens it again to recreate one): login off,
        # rows revoked, both logs still name bob
        dba(team, f"GRANT EXECUTE ON FUNCTION credvault.remove_member(text) TO {alice_role}")
        alice.execute("SELECT credvault.remove_member('bob')")
        dba(team, f"REVOKE EXECUTE ON FUNCTION credvault.remove_member(text) FROM {alice_role}")
    assert {e: links(team, e) for e in before} == before
    r = team.ok("alice", "member", "rm", "bob")  # completes it: the links, signed by alice
    assert "revocation signed in 2 engagement log(s)" in r.text
    assert r.text.endswith(
        "bob stays on the signed roster of what they alone lead (no other lead can sign them "
        "out): gamma\n"
    )
    for eng in before:
        new = links(team, eng)
        assert new[: len(before[eng])] == before[eng]
        revoke = ml.Link.from_bytes(new[-1])
        assert (revoke.kind, revoke.signer, revoke.fields) == (ml.REVOKE, "alice", ("bob",))
    audit = dba(
        team,
        "SELECT engagement, detail FROM credvault.audit WHERE action = 'revoke' "
        "AND member = 'alice' AND item = 'bob' ORDER BY seq",
    )
    assert audit == [(e, "member removed: revoke link signed") for e in ("acme-2026", "beta")]
    # the DBA undoes everything the server's rows say
    db = str(team.extra["db"])
    bob_key, bob_pw, vault_id = _unlock(team, "bob")
    dba(team, f"ALTER ROLE {db}_bob LOGIN PASSWORD '{scram_verifier(bob_pw.decode())}'")
    dba(team, "UPDATE credvault.members SET state = 'active', removed_at = NULL WHERE name = 'bob'")
    for eid, kv, sealed, by, sig in back:
        dba(
            team,
            "UPDATE credvault.grants SET revoked_at = NULL, key_version = %s, sealed = %s, "
            "sealed_by = %s, copy_sig = %s WHERE member = 'bob' AND engagement_id = %s",
            (kv, sealed, by, sig, eid),
        )
    got = team.run("bob", "get", "acme-2026/db")
    assert got.code == 4, got.err
    assert "no reading role in its log" in one_line(got)
    assert SECRET not in got.out
    # carol's next command rotates beta (bob held its key): no copy for bob
    team.ok("carol", "grant", "beta", "alice", "reader")
    assert ml.Link.from_bytes(links(team, "beta")[-2]).kind == ml.ROTATE
    assert copies(team, "beta")["bob"] is None
    # bob, once a lead of beta, signs a grant with his own key: carol refuses the log
    chain = links(team, "beta")
    head = ml.Link.from_bytes(chain[-1])
    body = ml.Link(
        vault_id, head.engagement_uid, head.seq + 1, ml.chain_hash(chain[-1]), head.time,
        ml.GRANT, "bob", p.ed25519_public(bob_key), ("bob", "lead", "", p.ed25519_public(bob_key),
        bytes(32)), b"",
    ).body()  # fmt: skip
    forged = body + p.sign(bob_key, labels.MEMBER_LOG, body)
    dba(
        team,
        "INSERT INTO credvault.engagement_log SELECT id, %s, %s, "
        "sha256(convert_to('credvault/v1/membership-chain', 'UTF8') || %s) "
        "FROM credvault.engagements WHERE name = 'beta'",
        (head.seq + 1, forged, forged),
    )
    r = team.run("carol", "grant", "beta", "bob", "reader")
    assert r.code == 6, r.err
    assert "not on the roster" in one_line(r)
