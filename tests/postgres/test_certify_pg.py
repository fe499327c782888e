"""An admin certifies the keys ``passwd --compromised`` made (docs/team.md, format.md
§19.8), tried as the member, a non-admin, the DBA and the thief who holds bob's old keys.

One world for the module (a fresh one costs seconds): alice (admin, lead of acme-2026),
bob (engineer) and carol (a second lead, whose client sees nothing of bob's change until
the last test). bob runs ``passwd --compromised`` through the real CLI, which prints the
fingerprint he compares with alice. The refusals come first and leave the server as they
found it; the last test certifies (the CLI, alice's path) and goes on from there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KDF_ARG
from credvault import Secret, Team
from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import AccessDenied, IntegrityError, InvalidInput, NotFound
from credvault.postgres.client import seal_info
from credvault.postgres.slot import TeamSlot
from credvault.team_log import Revocation, fingerprint, links_signed_by, revocation_hash
from pg_cluster import Cluster

from .test_contract import SECRET, World, _machine, _postgresql, one_line
from .test_crl_pg import _append_link, _join, _link_after, _pw, machine, member
from .test_lifecycle_pg import psql
from .test_memberlog_pg import dba


def _slot(w: World, who: str) -> TeamSlot:
    return TeamSlot.read(
        Path(w.envs[who]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(w.extra["db"])
        / f"{who}.slot"
    )  # fmt: skip


@pytest.fixture(scope="module")
def rekeyed(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster) -> World:
    root = tmp_path_factory.mktemp("certify")
    w = _postgresql(root, pg_cluster)
    with member(w, "alice") as alice:
        alice.credentials.put("acme-2026/db", SECRET)
        alice.engagements.grant("acme-2026", "bob", "engineer")
        alice.engagements.grant("acme-2026", "carol", "lead")
    old = _slot(w, "bob")
    w.extra["old"] = (old.sign_pub, old.kem_pub, old.unlock(_pw(w, "bob")).kem_private)
    new_pw = root / "bob.new.pass"
    new_pw.write_text("bob after the leak, a long passphrase\n")
    new_pw.chmod(0o600)
    out = w.ok("bob", "passwd", "--compromised", "--passphrase-file", str(new_pw), "--kdf", KDF_ARG)
    w.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"] = str(new_pw)
    fp = fingerprint(_slot(w, "bob").sign_pub)
    assert (
        f"your new signing key fingerprint: {fp} (compare it with an admin out of band; they "
        f"run `credvault member certify bob --fingerprint {fp}`)\n"
    ) in out.text
    assert w.ok("bob", "info", "--fingerprint").text == f"{fp}\n"  # the same, again
    w.extra["fp"] = fp
    return w


def _certify_sql(key: str = "11") -> str:
    k = f"'\\x{key * 32}'::bytea"
    return f"SELECT credvault.certify_keys('bob', 1, {k}, {k}, {k}, '\\x{'00' * 64}', '\\x00')"


@contextlib.contextmanager
def _unchanged(w: World) -> Iterator[None]:
    """Nothing certified, one list version (alice's client saw bob's hand-over)."""
    yield
    assert dba(w, "SELECT count(*) FROM credvault.member_rekeys") == [(0,)]
    assert dba(w, "SELECT count(*) FROM credvault.revocation_list") == [(1,)]


def test_refused_wrong_fingerprint_non_admin_self_and_a_forged_row(
    rekeyed: World, tmp_path: Path
) -> None:
    """alice's first command after bob's change (her client sees his hand-over link) signs
    his old pair into the revocation list at once. A fingerprint that is not the new key's:
    one line, exit 2, nothing signed. carol (no
    admin) is refused by the server, with her client and with psql; alice may not
    certify her own keys. The DBA's own certificate row (alice named, not signed by her)
    is exit 6 at the lead's grant; bob stays retired (not found, exit 3) meanwhile."""
    w = rekeyed
    with _unchanged(w):
        wrong = "0" * 32 if w.extra["fp"] != "0" * 32 else "1" * 32
        r = w.run("alice", "member", "certify", "bob", "--fingerprint", wrong)
        assert r.code == 2, r.err
        assert one_line(r) == (
            "credvault: the fingerprint does not match bob's new signing key: nothing "
            "certified; compare it with bob again (if bob did not make these keys, `member rm "
            "bob` and invite them again)"
        )
        (row,) = dba(w, "SELECT version, statement FROM credvault.revocation_list")
        seen = Revocation.from_bytes(bytes(row[1]))
        old_sign, old_kem, _ = w.extra["old"]  # type: ignore[misc]
        assert (seen.version, seen.member, seen.signer, seen.ipk) == (1, "bob", "alice", b"")
        assert seen.keys == ((p.digest(old_sign), p.digest(old_kem)),)
        assert dba(w, "SELECT member, item, detail FROM credvault.audit WHERE action = "
                   "'key-retire'") == [("alice", "bob", "key hand-over (passwd --compromised) "
                                        "seen: old keys revoked (list version 1)")]  # fmt: skip
        with member(w, "alice") as alice:
            with pytest.raises(InvalidInput, match="32 hexadecimal digits"):
                alice.members.certify("bob", "not-a-fingerprint")
            with pytest.raises(AccessDenied, match="another admin"):
                alice.members.certify("alice", str(w.extra["fp"]))
            with pytest.raises(NotFound):  # no hand-over: nothing to certify
                alice.members.certify("carol", str(w.extra["fp"]))
            with pytest.raises(NotFound):  # retired until certified
                alice.engagements.grant("acme-2026", "bob", "reader")
            assert "bob" in {m.name for m in alice.members.list()}  # a member meanwhile
        with machine(w, "carol"):  # on another machine of carol's: hers sees bob's link later
            os.environ["XDG_STATE_HOME"] = str(tmp_path)
            with (
                Team.open(w.target, "carol", _pw(w, "carol")) as carol,
                pytest.raises(AccessDenied, match="not an admin"),
            ):
                carol.members.certify("bob", str(w.extra["fp"]))
        out = psql(w, "carol", _certify_sql())
        assert (out.returncode, "is not an admin" in out.stderr) == (1, True), out.stderr
        out = psql(w, "alice", _certify_sql().replace("'bob'", "'alice'"))
        assert "cannot certify their own keys" in out.stderr
        out = psql(w, "alice", "INSERT INTO credvault.member_rekeys VALUES "
                   "('bob', 1, '\\x00', '\\x00', 'alice', '\\x00', '\\x00')")  # fmt: skip
        assert "permission denied" in out.stderr

        # the DBA writes a certificate of keys of its own, in alice's name
        alice_key = _slot(w, "alice").sign_pub
        dba_sign, dba_kem = p.ed25519_generate()[1], p.x25519_generate()[1]
        dba(
            w,
            "INSERT INTO credvault.member_rekeys VALUES ('bob', 1, %s, %s, 'alice', %s, %s)",
            (dba_sign, dba_kem, alice_key, bytes(64)),
        )
        try:
            with member(w, "alice") as alice, pytest.raises(IntegrityError) as e:
                alice.engagements.grant("acme-2026", "bob", "reader")
            assert e.value.exit_code == 6
            assert "the new keys of member 'bob' (certificate 1)" in str(e.value)
        finally:
            dba(w, "DELETE FROM credvault.member_rekeys")
        assert dba(
            w, "SELECT count(*) FROM credvault.grants WHERE member = 'bob' AND sealed IS NOT NULL"
        ) == [(0,)]


def test_certified_keys_are_sealed_to_and_the_old_key_never_again(rekeyed: World) -> None:
    """alice compares the fingerprint and certifies (the CLI): a certificate and, signed
    with it, the revocation list's version naming bob's old keys. Then, as the DBA: bob's
    hand-over link and certificate deleted before carol's client ever saw them, so carol
    would take bob's old key for current: her rotation still seals it nothing and signs bob
    out of the log (the list names it). The rows back, carol grants bob again: he reads
    with his new keys, and the thief with bob's old X25519 key opens no copy there is."""
    w = rekeyed
    r = w.ok("alice", "member", "certify", "bob", "--fingerprint", str(w.extra["fp"]))
    assert r.text == (
        f"certified bob's new keys (fingerprint {w.extra['fp']}); their old keys are revoked "
        "(revocation list version 2); each lead grants bob again: `credvault grant "
        "ENGAGEMENT bob ROLE`\n"
    )
    old_sign, old_kem, old_kem_private = w.extra["old"]  # type: ignore[misc]
    (stmt,) = dba(w, "SELECT statement FROM credvault.revocation_list WHERE version = 2")
    listed = Revocation.from_bytes(bytes(stmt[0]))
    assert (listed.member, listed.signer, listed.ipk) == ("bob", "alice", b"")
    assert listed.keys == ((p.digest(old_sign), p.digest(old_kem)),)
    p.verify(
        _slot(w, "alice").sign_pub, labels.TEAM_REVOCATION_LIST, listed.body(),
        listed.signature, "list",
    )  # fmt: skip
    assert dba(w, "SELECT member, action, item, outcome FROM credvault.audit "
               "WHERE action = 'certify'") == [("alice", "certify", "bob", "ok")]  # fmt: skip
    with member(w, "alice") as alice:  # alice's client believes the new keys now
        assert alice.certs().keys("bob").sign == _slot(w, "bob").sign_pub
    with member(w, "bob") as bob, pytest.raises(AccessDenied, match="no reading role in its"):
        bob.credentials.get("acme-2026/db")  # alice's rotation signed him out: a grant is due
    with member(w, "alice") as alice, pytest.raises(NotFound):
        alice.members.certify("bob", str(w.extra["fp"]))  # nothing new to certify

    # the DBA, before carol's client has seen any of it
    links = dba(w, "SELECT * FROM credvault.member_key_links")
    certs = dba(w, "SELECT * FROM credvault.member_rekeys")
    dba(w, "DELETE FROM credvault.member_key_links; DELETE FROM credvault.member_rekeys")
    with member(w, "carol") as carol:
        carol.engagements.rotate("acme-2026")
        v = carol.view("acme-2026")
        assert v.state is not None
        assert "bob" not in v.state.roster  # signed out: the list names the keys pinned
    sealed = dba(w, "SELECT member, sealed FROM credvault.grants WHERE sealed IS NOT NULL")
    assert sorted(m for m, _ in sealed) == ["alice", "carol"]

    # the rows back (nothing forged: the DBA only hid them); carol grants bob again
    for row in links:
        dba(w, "INSERT INTO credvault.member_key_links VALUES (%s, %s, %s, %s, %s, %s)", row)
    for row in certs:
        dba(w, "INSERT INTO credvault.member_rekeys VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row)
    with member(w, "carol") as carol:
        carol.engagements.grant("acme-2026", "bob", "engineer")
    with member(w, "bob") as bob:
        assert bob.credentials.get("acme-2026/db").secret.reveal() == SECRET
    # the thief: bob's old X25519 key and every copy the DBA can dump, each in the context
    # it was sealed for (bob's own too): nothing opens
    sealed = dba(
        w,
        "SELECT g.member, g.sealed, g.key_version, e.uid, credvault.vault_id() "
        "FROM credvault.grants g JOIN credvault.engagements e ON e.id = g.engagement_id "
        "WHERE g.sealed IS NOT NULL",
    )
    assert sorted(r[0] for r in sealed) == ["alice", "bob", "carol"]
    for who, copy, version, uid, vault_id in sealed:
        info = seal_info(bytes(vault_id), bytes(uid), who, version)
        with pytest.raises(IntegrityError):
            p.hpke_open(old_kem_private, bytes(copy), info)
    with member(w, "bob") as bob:  # ... while bob's new key opens his
        (mine,) = (r for r in sealed if r[0] == "bob")
        info = seal_info(bytes(mine[4]), bytes(mine[3]), "bob", mine[2])
        p.hpke_open(bob.keys.kem_private, bytes(mine[1]), info)


def test_an_admins_new_keys_keep_what_the_old_ones_certified(rekeyed: World) -> None:
    """alice (the founder, who invited everyone and certified bob's new keys) runs
    ``passwd --compromised``; dave, an admin she invited, certifies her new keys. The list
    version revoking her old key endorses again what that key certified — every invitation
    and bob's new keys — so carol's client still believes them all; carol grants alice
    again. alice signs with her new key (``member rm bob``: every pair of his listed), and
    a list version the thief signs with alice's old key is exit 6 for carol."""
    w = rekeyed
    _join(w, "alice", "dave", admin=True)
    old_keys = _slot(w, "alice").unlock(_pw(w, "alice"))
    old_sign_private, old_kem_private = old_keys.sign_private, old_keys.kem_private
    w.extra["alice-old"] = old_sign_private
    new_pw = w.root / "alice.new.pass"
    new_pw.write_text("alice after the leak, a long passphrase\n")
    with member(w, "alice") as alice:
        alice.members.passwd(Secret(b"alice after the leak, a long passphrase"), compromised=True)
    w.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"] = str(new_pw)
    new = _slot(w, "alice")
    with member(w, "dave") as dave:
        # dave's client saw alice's hand-over (version 3), then he certifies (version 4)
        assert dave.members.certify("alice", fingerprint(new.sign_pub)).list_version == 4
    two = Revocation.from_bytes(bytes(dba(w, "SELECT statement FROM credvault.revocation_list "
                                          "WHERE version = 4")[0][0]))  # fmt: skip
    bob = _slot(w, "bob")
    assert ("bob", p.digest(bob.sign_pub), p.digest(bob.kem_pub)) in two.endorsed
    assert sorted({e[0] for e in two.endorsed}) == ["bob", "carol", "dave"]
    with member(w, "carol") as carol:
        assert carol.certs().keys("bob").sign == bob.sign_pub  # certified by alice's old key
        assert carol.certs().keys("alice").sign == new.sign_pub
        listed = {m.name: m.admin for m in carol.members.list()}  # by their current keys
        assert {"alice": True, "bob": False, "dave": True}.items() <= listed.items()
        # dave's certificate came with a succeed link: the log pins alice's new keys, she
        # stays a lead, and a rotation is due (compromised): carol rotates, no grant again
        v = carol.view("acme-2026")
        assert v.state is not None
        assert v.state.roster["alice"] == (ml.LEAD, None, new.sign_pub, new.kem_pub)
        assert v.state.rotation_due
        carol.engagements.rotate("acme-2026")
        carol.engagements.grant("acme-2026", "alice", "lead")  # still works (changes nothing)
    assert dba(w, "SELECT member, action, engagement, item FROM credvault.audit WHERE "
               "action = 'certify' AND engagement IS NOT NULL") == [
        ("dave", "certify", "acme-2026", "alice")]  # fmt: skip
    with member(w, "alice") as alice:
        assert alice.credentials.get("acme-2026/db").secret.reveal() == SECRET
        version = alice.engagements.rotate("acme-2026")  # she leads with her new key
    ((copy, uid),) = dba(w, "SELECT g.sealed, e.uid FROM credvault.grants g JOIN "
                         "credvault.engagements e ON e.id = g.engagement_id WHERE g.member = "
                         "'alice' AND e.name = 'acme-2026' AND g.key_version = %s", (version,))  # fmt: skip
    vault_id = bytes(dba(w, "SELECT credvault.vault_id()")[0][0])
    with pytest.raises(IntegrityError):  # the thief's copy of alice's old X25519 key
        p.hpke_open(old_kem_private, bytes(copy), seal_info(vault_id, bytes(uid), "alice", version))
    with member(w, "alice") as alice:
        alice.engagements.create("acme-2027", "acme", lead="carol")  # link 0: her new key
        alice.members.remove("bob")
    three = Revocation.from_bytes(bytes(dba(w, "SELECT statement FROM credvault.revocation_list "
                                            "WHERE version = 5")[0][0]))  # fmt: skip
    assert three.signer_key == new.sign_pub
    old_sign, old_kem, _ = w.extra["old"]  # type: ignore[misc]
    assert set(three.keys) >= {
        (p.digest(old_sign), p.digest(old_kem)),
        (p.digest(bob.sign_pub), p.digest(bob.kem_pub)),
    }
    with member(w, "carol") as carol:
        assert carol.certs().revoked.version == 5  # alice's new key signed it: verified
    _old_admin_links(w, old_sign_private, new.sign_pub)
    forged = three._replace(
        version=6, prev=revocation_hash(three.to_bytes()), signer_key=p.ed25519_public(
            old_sign_private), member="carol", keys=(), endorsed=(),
    ).signed(old_sign_private)  # fmt: skip
    blob = forged.to_bytes()
    dba(w, "INSERT INTO credvault.revocation_list (version, statement, hash, signer, member) "
        "VALUES (6, %s, %s, 'alice', 'carol')", (blob, revocation_hash(blob)))  # fmt: skip
    try:
        with member(w, "carol") as carol, pytest.raises(IntegrityError, match="revoked before"):
            carol.engagements.grant("acme-2026", "dave", "reader")
    finally:
        dba(w, "DELETE FROM credvault.revocation_list WHERE version = 6")


def test_a_rekeyed_admin_invites_with_her_new_key_and_the_thief_with_the_old_one_cannot(
    rekeyed: World,
) -> None:
    """alice's new keys are certified (dave, above): her invitation, signed with her new
    key, certifies erin — erin's own ``join`` checks the chain, carol's client seals erin a
    copy (a grant), erin reads. The thief holding alice's old key invites mal with the DBA
    (the invitation signed with the old key, stored through alice's login the DBA took
    over): the signature is good, but the list revokes that key and no version endorses
    mal, so mal's ``join`` is exit 6 in one line and carol's grant to mal exit 6 too."""
    import psycopg

    from credvault.postgres.server import scram_verifier
    from credvault.team_log import invitation_key, invitation_message, make_code

    w = rekeyed
    new = _slot(w, "alice").sign_pub
    _join(w, "alice", "erin")  # in-process: Team.join checks erin's chain (exit 6 before)
    vault_id = bytes(dba(w, "SELECT credvault.vault_id()")[0][0])
    ((ipk, sig),) = dba(w, "SELECT ipk, invitation_sig FROM credvault.member_certs "
                        "WHERE member = 'erin'")  # fmt: skip
    statement = invitation_message(vault_id, "erin", bytes(ipk), False, "alice")
    p.verify(new, labels.TEAM_INVITE_SIG, statement, bytes(sig), "her new key signed it")
    with member(w, "carol") as carol:
        carol.engagements.grant("acme-2026", "erin", "engineer")
    with member(w, "erin") as erin:
        assert erin.credentials.get("acme-2026/db").secret.reveal() == SECRET

    # the thief: alice's old key signs an invitation for mal, the DBA stores it as alice
    old = w.extra["alice-old"]
    assert isinstance(old, bytes)
    code = make_code(fingerprint(p.ed25519_public(old)))  # the founder's: every slot pins it
    ipk = p.ed25519_public(invitation_key(code.encode()))
    sig = p.sign(old, labels.TEAM_INVITE_SIG, invitation_message(vault_id, "mal", ipk, False,
                                                                  "alice"))  # fmt: skip
    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    db = str(w.extra["db"])
    with psycopg.connect(cluster.conninfo(db), password=cluster.password, autocommit=True) as conn:
        conn.execute(f'SET SESSION AUTHORIZATION "{db}_alice"')
        conn.execute(
            "SELECT credvault.invite_member('mal', %s, false, %s, %s)",
            (scram_verifier(code), ipk, sig),
        )
    w.envs["mal"] = _machine(w.root, "mal", w.target)
    code_file = w.root / "mal.code"
    code_file.write_text(code + "\n")
    pfile = w.envs["mal"]["CREDVAULT_PASSPHRASE_FILE"]
    r = w.run("mal", "join", "--invitation-file", str(code_file), "--passphrase-file", pfile,
              "--kdf", KDF_ARG)  # fmt: skip
    assert r.code == 6, r.err
    assert one_line(r) == (
        "credvault: joined, but the certificate of mal's keys does not verify (the keys of "
        "member 'mal' are not certified: invited by 'alice', whose keys are revoked, and not "
        "endorsed again): the invitation did not come from an admin of this vault or was "
        "altered on the server; tell your admin"
    )
    with member(w, "carol") as carol:
        assert carol.certs().certified("mal").admin is False  # the old key's signature holds
        with pytest.raises(IntegrityError, match="'alice', whose keys are revoked") as e:
            carol.engagements.grant("acme-2026", "mal", "engineer")
        assert e.value.exit_code == 6
    assert dba(w, "SELECT count(*) FROM credvault.grants WHERE member = 'mal'") == [(0,)]


def _old_admin_links(w: World, old_private: bytes, new_sign: bytes) -> None:
    """alice's links as an admin after her keys changed (format.md §19.7): version 3, the
    first to revoke her old key, names the link 0 it signed before (acme-2026's), which dave
    replays from scratch; acme-2027's link 0, signed with her new key, counts through dave's
    certificate. A `set` the thief signs with her old key later is exit 6 for carol."""
    old_sign = p.ed25519_public(old_private)
    three = Revocation.from_bytes(bytes(dba(w, "SELECT statement FROM credvault.revocation_list "
                                            "WHERE version = 3")[0][0]))  # fmt: skip
    with member(w, "dave") as dave:
        logs = {name: (uid, links) for uid, name, links in dave.store.engagement_logs()}
        for name, (uid, links) in logs.items():
            dave.replay_all(uid, name, links)  # dave's first look: from link 0
    acme, later = logs["acme-2026"][1], logs["acme-2027"][1]
    assert ml.Link.from_bytes(acme[0]).signer_key == old_sign
    assert ml.Link.from_bytes(later[0]).signer_key == new_sign
    assert ml.chain_hash(acme[0]) in three.links  # and the revoke of bob her rotation signed
    assert three.links == links_signed_by([ls for _, ls in logs.values()], [old_sign])
    (eid,) = dba(w, "SELECT id FROM credvault.engagements WHERE name = 'acme-2026'")[0]
    setting = _link_after(acme, ml.SET, (1, ml.NO_GRACE), "alice", old_private)
    _append_link(w, eid, len(acme), setting)
    try:
        with member(w, "carol") as carol, pytest.raises(IntegrityError, match="made after") as e:
            carol.credentials.get("acme-2026/db")
        assert e.value.exit_code == 6
        assert f"link {len(acme)} (set): signed by 'alice' with a key the" in str(e.value)
    finally:
        dba(
            w,
            "DELETE FROM credvault.engagement_log WHERE engagement_id = %s AND seq = %s",
            (eid, len(acme)),
        )


def test_a_succeed_link_to_keys_no_certificate_names_is_refused(rekeyed: World) -> None:
    """The DBA appends to acme-2026 a ``succeed`` re-pinning carol (a lead) to keys of its
    own, signed with dave's real admin key (as if it held it), compromised: no certificate
    names the pair, so carol's client refuses the log (exit 6) and seals nothing; signed
    with compromised = 0 it is not dave's to sign (exit 6 too)."""
    w = rekeyed
    dave = _slot(w, "dave").unlock(_pw(w, "dave")).sign_private
    (eid,) = dba(w, "SELECT id FROM credvault.engagements WHERE name = 'acme-2026'")[0]
    chain = [bytes(b) for (b,) in dba(w, "SELECT link FROM credvault.engagement_log WHERE "
                                      "engagement_id = %s ORDER BY seq", (eid,))]  # fmt: skip
    dba_sign, dba_kem = p.ed25519_generate()[1], p.x25519_generate()[1]
    before = dba(w, "SELECT member, key_version, sealed FROM credvault.grants ORDER BY 1, 2")
    for flag, why in ((1, "are not keys an admin certified"), (0, "not on the roster")):
        forged = _link_after(chain, ml.SUCCEED, ("carol", dba_sign, dba_kem, flag), "dave", dave)
        _append_link(w, eid, len(chain), forged)
        try:
            with member(w, "carol") as carol, pytest.raises(IntegrityError, match=why) as e:
                carol.engagements.rotate("acme-2026")
            assert e.value.exit_code == 6
        finally:
            dba(w, "DELETE FROM credvault.engagement_log WHERE engagement_id = %s AND seq = %s",
                (eid, len(chain)))  # fmt: skip
    assert (
        dba(w, "SELECT member, key_version, sealed FROM credvault.grants ORDER BY 1, 2") == before
    )


def test_the_only_lead_re_keys_and_leads_again_without_anyone_granting(rekeyed: World) -> None:
    """erin is the only lead of solo. Her ``passwd --compromised`` keeps her copy of solo's
    key, sealed to her new keys, which her client does not use before they are certified
    (exit 4). dave certifies them: the same transaction re-pins her in solo's log (a
    ``succeed`` he signs), so she rotates and grants again with no one granting her; the
    old X25519 key opens no copy of the new version."""
    w = rekeyed
    with member(w, "alice") as alice:
        alice.engagements.create("solo", "acme", lead="erin")
    with member(w, "erin") as erin:
        erin.credentials.put("solo/db", SECRET)  # her first key, made here
    old_kem_private = _slot(w, "erin").unlock(_pw(w, "erin")).kem_private
    new_pw = w.root / "erin.new.pass"
    new_pw.write_text("erin after the leak, a long passphrase\n")
    with member(w, "erin") as erin:
        erin.members.passwd(Secret(b"erin after the leak, a long passphrase"), compromised=True)
    w.envs["erin"]["CREDVAULT_PASSPHRASE_FILE"] = str(new_pw)
    new = _slot(w, "erin")
    with member(w, "erin") as erin, pytest.raises(AccessDenied, match="not certified") as e:
        erin.credentials.get("solo/db")
    assert e.value.exit_code == 4
    # with psql, dave's login: the server takes only a succeed of erin to the keys being
    # certified, signed by the caller, compromised (a set link, or compromised 0: refused)
    dave = _slot(w, "dave").unlock(_pw(w, "dave")).sign_private
    (eid,) = dba(w, "SELECT id FROM credvault.engagements WHERE name = 'solo'")[0]
    chain = [bytes(b) for (b,) in dba(w, "SELECT link FROM credvault.engagement_log WHERE "
                                      "engagement_id = %s ORDER BY seq", (eid,))]  # fmt: skip
    for kind, fields in ((ml.SET, (1, -1)), (ml.SUCCEED, ("erin", new.sign_pub, new.kem_pub, 0))):
        bad = _link_after(chain, kind, fields, "dave", dave).hex()
        out = psql(w, "dave", "SELECT credvault.certify_keys_logged('erin', 1, "
                   f"'\\x{new.sign_pub.hex()}', '\\x{new.kem_pub.hex()}', '\\x{'11' * 32}', "
                   f"'\\x{'00' * 64}', '\\x00', ARRAY['solo'], ARRAY['\\x{bad}'::bytea])")  # fmt: skip
        assert "not a succeed of erin to the keys certified" in out.stderr, out.stderr
    fp = fingerprint(new.sign_pub)
    assert w.ok("dave", "member", "certify", "erin", "--fingerprint", fp).text == (
        f"certified erin's new keys (fingerprint {fp}); their old keys are revoked (revocation "
        "list version 7); erin keeps their role in acme-2026, solo (the membership log pins "
        "the new keys; each key rotates at a lead's next command)\n"
    )
    with member(w, "erin") as erin:
        assert erin.credentials.get("solo/db").secret.reveal() == SECRET
        version = erin.engagements.rotate("solo")
        erin.engagements.grant("solo", "dave", "reader")
    with member(w, "dave") as dave:
        assert dave.credentials.get("solo/db").secret.reveal() == SECRET
    sealed = dba(w, "SELECT g.member, g.sealed, e.uid, credvault.vault_id() FROM "
                 "credvault.grants g JOIN credvault.engagements e ON e.id = g.engagement_id "
                 "WHERE e.name = 'solo' AND g.key_version = %s", (version,))  # fmt: skip
    assert sorted(r[0] for r in sealed) == ["dave", "erin"]
    for who, copy, uid, vault_id in sealed:
        with pytest.raises(IntegrityError):
            p.hpke_open(old_kem_private, bytes(copy), seal_info(bytes(vault_id), bytes(uid),
                                                                  who, version))  # fmt: skip
