"""The team vault's revocation list of member keys, tried as the DBA (docs/format.md §19.7).

One world for the module (a fresh database costs seconds): alice (admin) invites erin (an
admin), erin invites fay, alice invites gus and hal; then alice removes erin (list version
1, which names erin's keys and endorses fay again), gus (version 2) and hal, who never
joined (version 3: his invitation key). Each test then acts as the
DBA with ``psql`` (its own connection as the superuser) against the list, checks what a
member's client does — in this process, on that member's machine (their HOME: key slot and
witness) — and puts the rows back as they were, so the tests do not depend on each other's
order. One CLI process checks the exit code of the refusal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from credvault import MIN_KDF, Secret, Team
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import AlreadyExists, Conflict, IntegrityError, NotFound
from credvault.postgres.slot import TeamSlot
from credvault.team_log import (
    LogWitness,
    Revocation,
    invitation_key,
    invitation_message,
    join_message,
    replay_revocations,
)
from pg_cluster import Cluster

from .test_contract import SECRET, World, _machine, _postgresql, one_line
from .test_memberlog_pg import dba

_PREV = "SELECT version, statement, hash, signer, member FROM credvault.revocation_list ORDER BY 1"


@contextlib.contextmanager
def machine(w: World, who: str) -> Iterator[None]:
    """This process on ``who``'s machine: their key slot and their witness, where their CLI
    commands keep it (the world's environment names ``XDG_STATE_HOME`` only if the process
    that made it had one: then there, else under their HOME)."""
    old = dict(os.environ)
    os.environ.pop("XDG_STATE_HOME", None)
    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        if k in w.envs[who]:
            os.environ[k] = w.envs[who][k]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def _pw(w: World, who: str) -> Secret:
    return Secret(Path(w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip())


@contextlib.contextmanager
def member(w: World, who: str) -> Iterator[Team]:
    with machine(w, who), Team.open(w.target, who, _pw(w, who)) as t:
        yield t


def _join(w: World, inviter: str, who: str, *, admin: bool = False) -> None:
    if who not in w.envs:
        w.envs[who] = _machine(w.root, who, w.target)
    with member(w, inviter) as t:
        code = t.members.invite(who, admin=admin).code
    with machine(w, who):
        Team.join(w.target, who, code, _pw(w, who), MIN_KDF)


def _keys(w: World, who: str) -> tuple[bytes, bytes, bytes]:
    """(signing private, signing public, X25519 public) from ``who``'s key slot."""
    slot = TeamSlot.read(
        Path(w.envs[who]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(w.extra["db"])
        / f"{who}.slot"
    )  # fmt: skip
    keys = slot.unlock(_pw(w, who))
    return keys.sign_private, slot.sign_pub, slot.kem_pub


@pytest.fixture(scope="module")
def crl(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster) -> World:
    w = _postgresql(tmp_path_factory.mktemp("crl"), pg_cluster)
    _join(w, "alice", "erin", admin=True)
    _join(w, "erin", "fay")
    _join(w, "alice", "gus")
    w.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    w.extra["erin"] = _keys(w, "erin")
    w.extra["gus"] = _keys(w, "gus")
    with member(w, "alice") as alice:
        w.extra["hal"] = alice.members.invite("hal").code
        alice.members.remove("erin")
        alice.members.remove("gus")
        alice.members.remove("hal")
    return w


def dba_raw(w: World, sql: str, params: tuple[object, ...] = ()) -> None:
    """The DBA writing around the server's triggers (``session_replication_role``): the
    check that a version names the removed admin's links guards an honest removal's race,
    not the DBA, who can drop it."""
    import psycopg

    cluster: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    with psycopg.connect(
        cluster.conninfo(str(w.extra["db"])),
        password=cluster.password,
        autocommit=True,
        options="-c session_replication_role=replica",
    ) as conn:
        conn.execute(sql, params)


@contextlib.contextmanager
def restored(w: World) -> Iterator[list[tuple[object, ...]]]:
    """The list's rows as they are now, put back after the test (the DBA can)."""
    rows = dba(w, _PREV)
    try:
        yield rows
    finally:
        dba(w, "DELETE FROM credvault.revocation_list")
        for r in rows:
            dba_raw(
                w,
                "INSERT INTO credvault.revocation_list (version, statement, hash, signer, member) "
                "VALUES (%s, %s, %s, %s, %s)",
                r,
            )


def _statement(w: World, version: int) -> Revocation:
    (row,) = dba(
        w, "SELECT statement FROM credvault.revocation_list WHERE version = %s", (version,)
    )
    return Revocation.from_bytes(bytes(row[0]))


def _append(w: World, stmt: Revocation) -> None:
    blob = stmt.to_bytes()
    dba_raw(
        w,
        "INSERT INTO credvault.revocation_list (version, statement, hash, signer, member) "
        "VALUES (%s, %s, sha256(convert_to('credvault/v1/team-revocation-chain', 'UTF8') || %s), "
        "%s, %s)",
        (stmt.version, blob, blob, stmt.signer, stmt.member),
    )


def _forge(w: World, signer: str, sign_private: bytes, cut_off: str) -> Revocation:
    """Version 4, chained after version 3, signed by ``signer``'s key, naming ``cut_off``'s keys."""
    last = _statement(w, 3)
    _, spub, kpub = _keys(w, cut_off)
    return Revocation(
        last.vault_id, 4, p.digest(labels.TEAM_REVOCATION_HASH + last.to_bytes()), last.time,
        signer, p.ed25519_public(sign_private), cut_off, b"", ((p.digest(spub), p.digest(kpub)),),
        (), b"",
    ).signed(sign_private)  # fmt: skip


def test_member_rm_signs_a_version_naming_the_keys(crl: World) -> None:
    """Each removal is one version, chained, signed by the removing admin, naming the removed
    member's invitation and keys; removing an admin endorses again whom they invited (fay),
    so fay can still be granted while erin's keys cannot."""
    rows = dba(crl, _PREV)
    assert [(r[0], r[3], r[4]) for r in rows] == [
        (1, "alice", "erin"),
        (2, "alice", "gus"),
        (3, "alice", "hal"),
    ]
    one, two, three = _statement(crl, 1), _statement(crl, 2), _statement(crl, 3)
    assert (three.keys, len(three.ipk)) == ((), 32)  # hal never joined: his invitation
    _, erin_sign, erin_kem = crl.extra["erin"]  # type: ignore[misc]
    assert one.keys == ((p.digest(erin_sign), p.digest(erin_kem)),)
    _, fay_sign, fay_kem = _keys(crl, "fay")
    assert one.endorsed == (("fay", p.digest(fay_sign), p.digest(fay_kem)),)
    assert two.prev == bytes(rows[0][2])
    assert two.endorsed == ()
    _, alice_sign, _ = _keys(crl, "alice")
    p.verify(alice_sign, labels.TEAM_REVOCATION_LIST, one.body(), one.signature, "v1")
    with member(crl, "alice") as alice:
        certs = alice.certs()
        assert certs.revoked.version == 3
        assert certs.listed(erin_sign, erin_kem)
        assert certs.keys("fay").kem == fay_kem
    # the DBA puts erin back as active: still not a member anyone seals to
    dba(crl, "UPDATE credvault.members SET state = 'active' WHERE name = 'erin'")
    try:
        with member(crl, "alice") as alice, pytest.raises(NotFound):
            alice.engagements.grant("acme-2026", "erin", "reader")
    finally:
        dba(crl, "UPDATE credvault.members SET state = 'removed' WHERE name = 'erin'")


def test_a_member_the_removed_admin_invites_afterwards_is_refused(crl: World) -> None:
    """erin (removed) and the DBA plant mal, certified by erin's invitation and a join proof:
    the chain verifies, but it runs through a revoked key and the list does not endorse mal."""
    erin_priv = crl.extra["erin"][0]  # type: ignore[index]
    vault_id = bytes(dba(crl, "SELECT credvault.vault_id()")[0][0])
    seed = invitation_key(b"the DBA's own code")
    ipk = p.ed25519_public(seed)
    sign_pub, kem_pub = p.ed25519_generate()[1], p.x25519_generate()[1]
    inv = p.sign(
        erin_priv, labels.TEAM_INVITE_SIG, invitation_message(vault_id, "mal", ipk, False, "erin")
    )
    proof = p.sign(seed, labels.TEAM_JOIN_PROOF, join_message(vault_id, "mal", sign_pub, kem_pub))
    dba(
        crl,
        "INSERT INTO credvault.members (name, role_name, admin, state, sign_pub, kem_pub) "
        "VALUES ('mal', %s, false, 'active', %s, %s)",
        (f"{crl.extra['db']}_mal", sign_pub, kem_pub),
    )
    dba(
        crl,
        "INSERT INTO credvault.member_certs VALUES ('mal', 'erin', false, %s, %s, %s)",
        (ipk, inv, proof),
    )
    try:
        with (
            member(crl, "alice") as alice,
            pytest.raises(IntegrityError, match="whose keys are revoked"),
        ):
            alice.engagements.grant("acme-2026", "mal", "reader")
    finally:
        dba(crl, "DELETE FROM credvault.member_certs WHERE member = 'mal'")
        dba(crl, "DELETE FROM credvault.members WHERE name = 'mal'")


def test_member_ls_shows_the_list_not_the_rows(crl: World) -> None:
    """The DBA marks erin (a removed admin) active again and makes bob an admin in the
    rows: `member ls` still does not list her, and lists bob as what his
    certificate signs; fay, whom erin invited, stays (endorsed again). A row whose
    certificate the DBA altered is exit 6 naming it."""
    rows = "UPDATE credvault.members SET state = %s WHERE name = 'erin'"
    dba(crl, rows, ("active",))
    dba(crl, "UPDATE credvault.members SET admin = true WHERE name = 'bob'")
    try:
        with member(crl, "alice") as alice:  # (carol must not see the list: a later test)
            got = {m.name: m.admin for m in alice.members.list()}
        assert "erin" not in got
        assert {"alice": True, "bob": False, "carol": False, "fay": False}.items() <= got.items()
        _, sign, _ = _keys(crl, "fay")
        dba(crl, "UPDATE credvault.members SET sign_pub = %s WHERE name = 'fay'", (bytes(32),))
        try:
            r = crl.run("alice", "member", "ls")
            assert r.code == 6, r.err
            assert "the keys of member 'fay'" in one_line(r)
        finally:
            dba(crl, "UPDATE credvault.members SET sign_pub = %s WHERE name = 'fay'", (sign,))
    finally:
        dba(crl, rows, ("removed",))
        dba(crl, "UPDATE credvault.members SET admin = false WHERE name = 'bob'")


def test_the_dba_deletes_the_list(crl: World) -> None:
    """alice verified version 3: no list at all is a rollback for her (exit 6); a member who
    never saw one (carol) reads "nobody revoked", as on a vault made before the list."""
    with restored(crl):
        dba(crl, "DELETE FROM credvault.revocation_list")
        r = crl.run("alice", "grant", "acme-2026", "carol", "reader")
        assert r.code == 6, r.err
        assert "verified version 3 before: rolled back" in one_line(r)
        with member(crl, "carol") as carol:
            assert carol.certs().revoked.version == 0
    assert dba(crl, "SELECT count(*) FROM credvault.grants WHERE member = 'carol'") == [(0,)]


def test_the_dba_serves_an_older_or_altered_version(crl: World) -> None:
    """Version 3 deleted (the list rolled back to 2), then replaced by version 2's bytes,
    then altered by a byte: each is IntegrityError for alice, who verified version 3; the
    altered one also for carol, who verifies it from scratch (its signature fails)."""
    with restored(crl) as rows:
        dba(crl, "DELETE FROM credvault.revocation_list WHERE version = 3")
        with member(crl, "alice") as alice, pytest.raises(IntegrityError, match="rolled back"):
            alice.certs().keys("carol")
        dba(
            crl,
            "INSERT INTO credvault.revocation_list SELECT 3, statement, hash, signer, member "
            "FROM credvault.revocation_list WHERE version = 2",
        )
        with member(crl, "alice") as alice, pytest.raises(IntegrityError, match="broken"):
            alice.certs().keys("carol")
        three = bytearray(bytes(rows[2][1]))
        three[-1] ^= 1  # the signature's last byte: it still parses
        dba(crl, "UPDATE credvault.revocation_list SET statement = %s WHERE version = 3", (three,))
        with member(crl, "alice") as alice, pytest.raises(IntegrityError, match="not the one"):
            alice.certs().keys("carol")
    with member(crl, "carol") as carol:
        certs = carol.certs()
        with pytest.raises(IntegrityError):
            replay_revocations(
                certs, [(1, bytes(rows[0][1])), (2, bytes(rows[1][1])), (3, bytes(three))], None
            )
        assert certs.revoked.version == 3  # and the real list verifies from scratch


def test_a_version_signed_by_a_member_who_is_not_an_admin(crl: World) -> None:
    """bob (no admin) and the DBA append version 4 cutting alice off, signed by bob's key:
    refused by alice (past her witness) and by carol (from scratch)."""
    bob_priv = _keys(crl, "bob")[0]
    with restored(crl):
        _append(crl, _forge(crl, "bob", bob_priv, "alice"))
        for who in ("alice", "carol"):
            with member(crl, who) as t, pytest.raises(IntegrityError, match="certified admin"):
                t.certs().keys("alice")


def test_a_version_signed_by_an_admin_removed_before(crl: World) -> None:
    """erin, removed in version 1, signs version 4 cutting alice off (with the DBA): her key
    verifies, her certificate chain too, but version 1 revoked it."""
    with restored(crl):
        _append(crl, _forge(crl, "erin", crl.extra["erin"][0], "alice"))  # type: ignore[index]
        for who in ("alice", "carol"):
            with member(crl, who) as t, pytest.raises(IntegrityError, match="revoked before"):
                t.certs().keys("alice")


def test_a_removed_member_is_invited_again_under_the_same_name(crl: World) -> None:
    """gus (removed, version 2) is invited again and joins with new keys: granted and
    reading again; his old keys stay listed. A removed admin (erin) is not re-invited
    under her name (her signatures are checked against it)."""
    _, old_sign, old_kem = crl.extra["gus"]  # type: ignore[misc]
    slot = Path(crl.envs["gus"]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(crl.extra["db"])
    (slot / "gus.slot").unlink()  # his new machine
    _join(crl, "alice", "gus")
    _, new_sign, new_kem = _keys(crl, "gus")
    assert (new_sign, new_kem) != (old_sign, old_kem)
    with member(crl, "alice") as alice:
        alice.engagements.grant("acme-2026", "gus", "reader")
        assert alice.certs().listed(old_sign, old_kem)
        with pytest.raises(AlreadyExists):
            alice.members.invite("erin")
    with member(crl, "gus") as gus:  # his first read checks link 0's creator on the list
        assert gus.credentials.get("acme-2026/db").secret.reveal() == SECRET
    with member(crl, "gus") as gus:

        def never() -> list[tuple[int, bytes]]:
            raise AssertionError("get read the revocation list")

        gus.store.revocation_list = never  # type: ignore[method-assign]
        assert gus.credentials.get("acme-2026/db").secret.reveal() == SECRET


def test_a_member_removed_before_joining_cannot_join_later(crl: World) -> None:
    """hal, removed while only invited, still has his code; the DBA puts his invitation back
    (row, login with the code's verifier) and hal joins with keys of his own making: the
    chain verifies, but version 3 revoked his invitation key, so nobody seals to him."""
    from credvault.postgres import scram_verifier

    code = crl.extra["hal"]
    assert isinstance(code, Secret)
    crl.envs["hal"] = _machine(crl.root, "hal", crl.target)
    role = f"{crl.extra['db']}_hal"
    dba(crl, "UPDATE credvault.members SET state = 'invited' WHERE name = 'hal'")
    dba(crl, f"ALTER ROLE {role} LOGIN PASSWORD '{scram_verifier(code.reveal().decode())}'")
    try:
        with machine(crl, "hal"):
            Team.join(crl.target, "hal", code, _pw(crl, "hal"), MIN_KDF)
        with member(crl, "alice") as alice, pytest.raises(NotFound):
            alice.engagements.grant("acme-2026", "hal", "reader")
    finally:
        dba(crl, f"ALTER ROLE {role} NOLOGIN PASSWORD NULL")
        dba(crl, "UPDATE credvault.members SET state = 'removed' WHERE name = 'hal'")


def test_a_certificate_the_dba_altered_before_member_rm(crl: World) -> None:
    """The DBA swaps ivy's published keys just before alice removes her: the removal goes
    on (exit 6 naming the certificate), and the version names her invitation key, so after
    the DBA puts her real keys and her row back (which the version does not name), nobody
    seals to her."""
    _join(crl, "alice", "ivy")
    _, sign, kem = _keys(crl, "ivy")
    with machine(crl, "alice"):  # where her witness is (LogWitness.path_for)
        witness = LogWitness.path_for(str(crl.extra["db"]), "alice")
    kept = witness.read_bytes()
    with restored(crl):
        swap = "UPDATE credvault.members SET sign_pub = %s, kem_pub = %s WHERE name = 'ivy'"
        dba(crl, swap, (bytes(32), bytes(32)))
        with (
            member(crl, "alice") as alice,
            pytest.raises(IntegrityError, match="removed member ivy, but the certificate of ivy"),
        ):
            alice.members.remove("ivy")
        four = _statement(crl, 4)
        assert four.member == "ivy"
        assert all(p.digest(sign) != s and p.digest(kem) != k for s, k in four.keys)
        dba(crl, swap, (sign, kem))
        dba(crl, "UPDATE credvault.members SET state = 'active' WHERE name = 'ivy'")
        try:
            with member(crl, "alice") as alice, pytest.raises(NotFound):
                alice.engagements.grant("acme-2026", "ivy", "reader")
        finally:
            witness.write_bytes(kept)  # alice as she was: the list goes back to version 3
            dba(crl, "UPDATE credvault.members SET state = 'removed' WHERE name = 'ivy'")


def test_a_removed_admins_receipt_destroys_nothing(
    crl: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """erin (an admin, removed: the list names her keys) signs a purge receipt for the live
    acme-2026; the DBA marks her row active again. alice's `purge --ledger` must not trust
    her key for what it destroys: the line is named as ignored, the engagement stays."""
    from types import SimpleNamespace

    from credvault.crypto import primitives as p
    from credvault.keyslots import MemberKeys
    from credvault.postgres import lifecycle_store as ls
    from credvault.team_ledger import keep, state_ledger
    from credvault.team_lifecycle import sign_receipt

    with member(crl, "alice") as alice:
        lc = ls.lifecycle(alice.store, "acme-2026")
        assert lc is not None
        vid = alice.vault_id
    erin = MemberKeys("erin", crl.extra["erin"][0], p.KeyBytes(os.urandom(32)), b"")
    facts: dict[str, object] = {
        "format": "credvault-purge-receipt/2",
        "vault_id": vid.hex(),
        "engagement": "acme-2026",
        "created_at": lc.engagement.created_at,
        "purged_at": "2026-06-01T00:00:00.000000Z",
        "reason": "client request",
    }
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("CREDVAULT_LEDGER_DIR", raising=False)
    keep(SimpleNamespace(vault_id=vid, database="forged", keys=erin, member="erin"),
         sign_receipt(erin, facts, None))  # fmt: skip
    forged = state_ledger("forged")
    dba(crl, "UPDATE credvault.members SET state = 'active' WHERE name = 'erin'")
    try:
        with member(crl, "alice") as alice:
            got = alice.destroy_recorded([forged])
            assert got.destroyed_again == []
            assert [line for line in got.ignored if "not in the vault's key history" in line]
            after = ls.lifecycle(alice.store, "acme-2026")
            assert after is not None
            assert after.engagement.state == "active"
    finally:
        dba(crl, "UPDATE credvault.members SET state = 'removed' WHERE name = 'erin'")


def _link_after(chain: list[bytes], kind: str, fields: tuple[object, ...], who: str,
                priv: bytes) -> bytes:  # fmt: skip
    """The next link of ``chain`` as ``who`` signs it with ``priv`` (no rule checked)."""
    from credvault import memberlog as ml

    head = ml.Link.from_bytes(chain[-1])
    link = ml.Link(
        head.vault_id, head.engagement_uid, head.seq + 1, ml.chain_hash(chain[-1]), head.time,
        kind, who, p.ed25519_public(priv), fields, b"",  # type: ignore[arg-type]
    )  # fmt: skip
    return link.body() + p.sign(priv, labels.MEMBER_LOG, link.body())


def test_a_removed_admins_links_count_only_if_made_before_her_removal(crl: World) -> None:
    """kim (an admin who leads nothing) signs zeta's settings and creates kim-eng, both off
    the roster, then alice removes her: version 4 names those two links, and fay, who never
    saw them, replays both. Then the DBA, with kim's real key, appends to zeta a revoke of
    fay and a `set`, and writes an engagement whose link 0 kim signed: each is exit 6 (one
    line) for the member it is shown to, never a denial of fay or a new engagement. A
    removal whose client read the logs before kim's last links is refused by the server
    (Conflict), so no link she signed before her removal is left out of the version."""
    from credvault import memberlog as ml

    _join(crl, "alice", "kim", admin=True)
    with member(crl, "alice") as alice:
        alice.engagements.create("zeta", "z")
        alice.engagements.grant("zeta", "fay", "reader")
        alice.credentials.put("zeta/db", SECRET)
    with member(crl, "alice") as alice:
        stale = alice.store.engagement_logs()
    with member(crl, "kim") as kim:
        kim.engagements.set_options("zeta", require_reason=False)
        kim.engagements.create("kim-eng", "k", lead="alice")
    kim_priv, kim_sign, kim_kem = _keys(crl, "kim")
    rows = dba(crl, "SELECT name, id, uid FROM credvault.engagements")
    ids = {str(n): int(i) for n, i, _ in rows}
    uids = {str(n): bytes(u) for n, _, u in rows}
    before = {e: [bytes(r[0]) for r in _log(crl, ids[e])] for e in ("zeta", "kim-eng")}
    by_kim = sorted(
        ml.chain_hash(b)
        for chain in before.values()
        for b in chain
        if ml.Link.from_bytes(b).signer_key == kim_sign
    )
    assert len(by_kim) == 2
    with machine(crl, "alice"):
        witness = LogWitness.path_for(str(crl.extra["db"]), "alice")
    kept = witness.read_bytes()
    uid = os.urandom(16)
    with restored(crl):
        with member(crl, "alice") as alice:
            # her client read the logs before kim's last links: the server refuses a version
            # that would leave them out (an honest race), and nothing happens
            alice.store.engagement_logs = lambda: stale  # type: ignore[method-assign]
            with pytest.raises(Conflict, match="a membership log moved meanwhile"):
                alice.members.remove("kim")
        assert dba(crl, "SELECT state FROM credvault.members WHERE name = 'kim'") == [("active",)]
        assert len(dba(crl, _PREV)) == 3
        with member(crl, "alice") as alice:
            alice.members.remove("kim")
        four = _statement(crl, 4)
        assert (four.member, sorted(four.links)) == ("kim", by_kim)
        try:
            with member(crl, "fay") as fay:  # from link 0, the list read: kim's links stand
                assert fay.credentials.get("zeta/db").secret.reveal() == SECRET
                fay.replay_all(uids["kim-eng"], "kim-eng", before["kim-eng"])
            # the DBA appends kim's revoke of fay: fay's client says tampering, not "denied"
            revoke = _link_after(before["zeta"], ml.REVOKE, ("fay",), "kim", kim_priv)
            _append_link(crl, ids["zeta"], len(before["zeta"]), revoke)
            r = crl.run("fay", "get", "zeta/db")
            assert r.code == 6, r.err
            assert "(revoke): signed by 'kim' with a key the revocation list revokes" in (
                one_line(r)
            )
            with member(crl, "alice") as alice, pytest.raises(IntegrityError, match="made after"):
                alice.engagements.show("zeta")  # past her witness
            # the DBA marks kim active with another published X25519 key, and alice removes
            # her again: version 5 names the new key pair, and not the link kim's signing
            # key signed after version 4 (that would make it count)
            dba(crl, "UPDATE credvault.members SET state = 'active', kem_pub = %s "
                "WHERE name = 'kim'", (bytes(32),))  # fmt: skip
            with member(crl, "alice") as alice, pytest.raises(IntegrityError, match="kim"):
                alice.members.remove("kim")
            five = _statement(crl, 5)
            assert (five.member, five.links) == ("kim", ())
            assert (p.digest(kim_sign), p.digest(bytes(32))) in five.keys
            dba(crl, "UPDATE credvault.members SET kem_pub = %s WHERE name = 'kim'", (kim_kem,))
            with member(crl, "fay") as fay, pytest.raises(IntegrityError, match="made after"):
                fay.credentials.get("zeta/db")
            # a `set` instead
            dba(crl, "DELETE FROM credvault.engagement_log WHERE engagement_id = %s AND seq = %s",
                (ids["zeta"], len(before["zeta"])))  # fmt: skip
            setting = _link_after(before["zeta"], ml.SET, (1, ml.NO_GRACE), "kim", kim_priv)
            _append_link(crl, ids["zeta"], len(before["zeta"]), setting)
            with member(crl, "fay") as fay, pytest.raises(IntegrityError, match=r"\(set\)"):
                fay.credentials.get("zeta/db")
            # an engagement kim creates after her removal, alice its lead
            _, a_sign, a_kem = _keys(crl, "alice")
            vid = bytes(dba(crl, "SELECT credvault.vault_id()")[0][0])
            body = ml.Link(
                vid, uid, 0, ml.ZERO_HASH, "2026-11-30T00:00:00.000000Z", ml.CREATE, "kim",
                kim_sign, ("late", "z", "alice", a_sign, a_kem), b"",
            ).body()  # fmt: skip
            link0 = body + p.sign(kim_priv, labels.MEMBER_LOG, body)
            (eid,) = dba(
                crl,
                "INSERT INTO credvault.engagements (uid, name, client, state, key_version, "
                "key_fp, created_by, lead, creation_sig) VALUES (%s, 'late', 'z', 'active', 0, "
                "'', 'kim', 'alice', %s) RETURNING id",
                (uid, link0[-64:]),
            )[0]
            dba(crl, "INSERT INTO credvault.grants (engagement_id, member, role, granted_by, "
                "role_sig) VALUES (%s, 'alice', 'lead', 'kim', '')", (eid,))  # fmt: skip
            _append_link(crl, eid, 0, link0)
            with member(crl, "alice") as alice, pytest.raises(IntegrityError, match=r"\(create\)"):
                alice.engagements.show("late")
        finally:
            dba(crl, "DELETE FROM credvault.engagement_log WHERE engagement_id = %s AND seq = %s",
                (ids["zeta"], len(before["zeta"])))  # fmt: skip
            dba(crl, "DELETE FROM credvault.engagements WHERE name = 'late'")
            dba(crl, "UPDATE credvault.members SET state = 'removed', kem_pub = %s "
                "WHERE name = 'kim'", (kim_kem,))  # fmt: skip
            witness.write_bytes(kept)  # alice as she was: the list goes back to version 3


def _log(w: World, eid: int) -> list[tuple[object, ...]]:
    return dba(
        w, "SELECT link FROM credvault.engagement_log WHERE engagement_id = %s ORDER BY seq", (eid,)
    )


def _append_link(w: World, eid: int, seq: int, link: bytes) -> None:
    """The DBA writes a link into a log (the server's own checks bypassed: a superuser)."""
    from credvault import memberlog as ml

    dba(
        w,
        "INSERT INTO credvault.engagement_log (engagement_id, seq, link, hash) "
        "VALUES (%s, %s, %s, %s)",
        (eid, seq, link, ml.chain_hash(link)),
    )
