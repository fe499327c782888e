"""The membership log as the vault keeps it (issue 11, requirements 1-3 and 8): every
membership event writes its link in the change's transaction, and only the replayed, verified
log decides who is sealed a key. Attacks are written as the insider (tests/insider.py)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import PASSWORDS, CliRunner, Clock, VaultFixture
from credvault import AccessDenied, IntegrityError, witness
from credvault import memberlog as ml
from credvault.crypto import primitives as p
from credvault.engagement_keys import seal_info
from credvault.keyslots import new_member_keys
from credvault.roster import memberlog_positions
from insider import Insider

ENG = "acme-2026"
LATER = b"written-after-the-attack"


def _kinds(vault: VaultFixture, name: str = ENG) -> list[tuple[str, str]]:
    """(kind, signer) of every link of ``name``'s log, read by SQL."""
    ins = Insider(vault.path, "alice", vault.clock)
    eid, _ = ins.engagement(name)
    rows = ins.sql("SELECT link FROM member_log WHERE engagement_id = ? ORDER BY seq", (eid,))
    links = [ml.Link.from_bytes(bytes(r[0])) for r in rows]
    assert [link.seq for link in links] == list(range(len(links)))
    return [(link.kind, link.signer) for link in links]


def test_every_membership_event_writes_its_link(vault: VaultFixture) -> None:
    with vault.open() as v:
        v.engagements.create(ENG, "acme")
        assert _kinds(vault) == [("create", "alice"), ("rotate", "alice")]
        v.engagements.grant(ENG, "bob", "engineer")
        until = (vault.clock() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
        v.engagements.grant(ENG, "carol", "reader", until=until)
        v.put(f"{ENG}/web1-root", b"hunter2")
        v.engagements.grant(ENG, "bob", "auditor")  # lowered: may no longer read
        v.engagements.revoke(ENG, "bob")
    assert _kinds(vault)[2:] == [
        ("grant", "alice"),
        ("grant", "alice"),
        ("grant", "alice"),
        ("rotate", "alice"),
        ("revoke", "alice"),
        ("rotate", "alice"),
    ]
    vault.clock.advance(days=3)
    with vault.open() as v:
        v.put(f"{ENG}/later", LATER)  # the lead's next write signs carol's expiry out first
        state = v.engagements.grants.log_state(v.engagements.get(ENG))
        assert state is not None
        assert set(state.roster) == {"alice"}
    assert _kinds(vault)[-2:] == [("expire", "alice"), ("rotate", "alice")]
    assert LATER not in Insider(vault.path, "carol", vault.clock).readable()
    assert LATER not in Insider(vault.path, "bob", vault.clock).readable()


def test_engagement_for_another_lead_has_no_key_until_that_lead_makes_it(
    vault: VaultFixture,
) -> None:
    with vault.open() as v:
        v.engagements.create(ENG, "acme", lead="bob")
        assert v.engagements.get(ENG).key_version == 0
    assert _kinds(vault) == [("create", "alice")]
    with vault.open("bob") as v:
        v.put(f"{ENG}/web1-root", b"hunter2")
        v.engagements.grant(ENG, "carol", "reader")
    assert _kinds(vault) == [("create", "alice"), ("rotate", "bob"), ("grant", "bob")]
    assert b"hunter2" in Insider(vault.path, "carol", vault.clock).readable()
    assert Insider(vault.path, "alice", vault.clock).readable() == set()


def test_positions_for_the_witness_are_the_verified_heads(vault: VaultFixture) -> None:
    with vault.open() as v:
        v.engagements.create(ENG, "acme")
        v.engagements.create("other-2026", "other", lead="bob")
        v.engagements.grant(ENG, "carol", "reader")
        positions = memberlog_positions(v._s.store)
        expect = {}
        for name in (ENG, "other-2026"):
            eng = v.engagements.get(name)
            state = v.engagements.grants.log_state(eng)
            assert state is not None
            expect[eng.uid.hex()] = state.position
    assert positions == expect
    assert positions[next(iter(positions))].seq >= 1


def test_a_tampered_link_is_an_integrity_error(vault: VaultFixture, engagement: str) -> None:
    alice = Insider(vault.path, "alice", vault.clock)
    eid, _ = alice.engagement(engagement)
    ((blob,),) = alice.sql(
        "SELECT link FROM member_log WHERE engagement_id = ? AND seq = 2", (eid,)
    )
    bad = bytearray(blob)
    bad[-70] ^= 1
    alice.sql(
        "UPDATE member_log SET link = ? WHERE engagement_id = ? AND seq = 2", (bytes(bad), eid)
    )
    for member in ("alice", "bob"):
        with vault.open(member) as v, pytest.raises(IntegrityError):
            v.get(f"{engagement}/web1-root")


def test_a_deleted_log_is_an_integrity_error_not_the_old_rules(
    vault: VaultFixture, engagement: str
) -> None:
    carol = Insider(vault.path, "carol", vault.clock)
    eid, _ = carol.engagement(engagement)
    carol.sql("DELETE FROM member_log WHERE engagement_id = ?", (eid,))
    # A client that saw the log refuses the vault at open (its witness) ...
    with pytest.raises(IntegrityError, match=r"membership log of engagement .* all missing"):
        vault.open()
    # ... and one that never saw it (a new machine: no witness) refuses the engagement.
    shutil.rmtree(witness.state_dir())
    with vault.open() as v, pytest.raises(IntegrityError, match="membership log is missing"):
        v.get(f"{engagement}/web1-root")


def test_member_appends_a_link_granting_a_friend_lead(vault: VaultFixture, engagement: str) -> None:
    """carol (reader) signs a grant link making dave lead with her own key and appends it:
    the link does not verify (she is not a lead), so the log is refused (exit 6, a denial of
    service) and nobody seals anything to dave."""
    with vault.open() as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"])
        eng = v.engagements.get(engagement)
        state = v.engagements.grants.log_state(eng)
        assert state is not None
        dave = v._s.slots.members["dave"]
    carol = Insider(vault.path, "carol", vault.clock)
    eid, uid = carol.engagement(engagement)
    link = ml.Link(
        carol.vault_id,
        uid,
        state.seq + 1,
        state.head,
        state.time,
        ml.GRANT,
        "carol",
        p.ed25519_public(carol.keys.sign_private),
        ("dave", "lead", "", dave.sign_pub, dave.kem_pub),
        b"",
    )
    body = link.body()
    blob = body + p.sign(carol.keys.sign_private, ml.labels.MEMBER_LOG, body)
    carol.sql(
        "INSERT INTO member_log (engagement_id, seq, link) VALUES (?, ?, ?)",
        (eid, state.seq + 1, blob),
    )
    carol.sql("UPDATE grants SET role = 'lead' WHERE member = 'carol'")
    carol.sql("UPDATE engagements SET needs_rotation = 1")
    with vault.open() as v, pytest.raises(IntegrityError):
        v.put(f"{engagement}/x", LATER)
    assert Insider(vault.path, "dave", vault.clock).readable() == set()


def test_unsigned_role_columns_decide_nothing(vault: VaultFixture, engagement: str) -> None:
    """carol (reader) makes her row say lead and bob's say revoked: she still may not
    grant, bob still reads, and the next rotation seals to the log's readers only."""
    carol = Insider(vault.path, "carol", vault.clock)
    carol.sql("UPDATE grants SET role = 'lead' WHERE member = 'carol'")
    carol.sql("UPDATE grants SET revoked_at = '2026-01-01T00:00:00.000000Z' WHERE member = 'bob'")
    with vault.open("carol") as v:
        with pytest.raises(AccessDenied):
            v.engagements.grant(engagement, "bob", "lead")
        assert v.engagements.role_of(v.engagements.get(engagement)).value == "reader"
    with vault.open() as v:
        v.engagements.rotate(engagement)
        v.put(f"{engagement}/after", LATER)
    with vault.open("bob") as v:
        assert v.get(f"{engagement}/after").secret.reveal() == LATER


def test_reset_member_is_signed_out_by_the_leads_next_command(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open() as v:
        v.members.reset("bob", b"bob-new-pass")
    with vault.open() as v:
        v.put(f"{engagement}/after", LATER)
        roster = v.engagements.grants.log_state(v.engagements.get(engagement))
        assert roster is not None
        assert "bob" not in roster.roster
    assert ("revoke", "alice") in _kinds(vault, engagement)


def test_key_succession_pins_new_keys_and_reseals_the_members_copy(
    vault: VaultFixture, engagement: str
) -> None:
    """``succeed`` (for ``passwd --compromised``): the member's own current key signs the
    link; their copy is sealed again to the new key; compromised demands a rotation, which
    the lead's next command makes, sealed to the new key only."""
    with vault.open() as v:
        admin_pub = v._s.keys.admin_sign_pub
    new = new_member_keys("bob", admin_pub)
    new_sign, new_kem = p.ed25519_public(new.sign_private), p.x25519_public(new.kem_private)
    with vault.open("bob") as v:
        with v._s.store.write():
            assert v.engagements.keys.succeed_member_keys(new_sign, new_kem, True) == 1
        eng = v.engagements.get(engagement)
        state = v.engagements.grants.log_state(eng)
        assert state is not None
        assert (state.roster["bob"].sign, state.roster["bob"].kem) == (new_sign, new_kem)
        assert state.needs_rotation(v._s.now())
        row = v._s.store.grant_of(eng.id, "bob")
        assert row is not None
        assert row.sealed is not None
        key = p.hpke_open(
            new.kem_private, row.sealed, seal_info(v._s, eng.uid, "bob", state.key_version)
        )
        state.check_key(state.key_version, key)
    kinds = _kinds(vault, engagement)  # (opening as alice, the lead, makes the rotation)
    at = kinds.index(("succeed", "bob"))
    assert ("rotate", "alice") in kinds[at:]


def _long_log(vault: VaultFixture, engagement: str, n: int = 40) -> None:
    with vault.open() as v:
        for i in range(n):  # role changes of bob that need no rotation: n grant links
            v.engagements.grant(engagement, "bob", "reader" if i % 2 else "engineer")


def test_a_member_keeps_a_long_replay_and_verifies_only_new_links(
    vault: VaultFixture, engagement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _long_log(vault, engagement)
    with vault.open("carol") as v:  # a fresh session: the whole log, then kept
        v.get(f"{engagement}/web1-root")
    with vault.open() as v:
        v.engagements.grant(engagement, "bob", "reader")  # one more link
    checked: list[bytes] = []
    real = ml.apply

    def counting(state: ml.State | None, blob: bytes, trust: ml.Trust) -> ml.State:
        checked.append(blob)
        return real(state, blob, trust)

    monkeypatch.setattr(ml, "apply", counting)
    with vault.open("carol") as v:
        assert v.get(f"{engagement}/web1-root").secret.reveal() == b"hunter2"
    assert len(checked) == 1  # only the link after carol's kept state


def test_a_forged_kept_state_is_ignored_and_a_truncated_log_refused(
    vault: VaultFixture, engagement: str
) -> None:
    _long_log(vault, engagement)
    with vault.open("carol") as v:
        v.get(f"{engagement}/web1-root")
    bob = Insider(vault.path, "bob", vault.clock)
    eid, _ = bob.engagement(engagement)
    ((blob, mac),) = bob.sql(
        "SELECT state, mac FROM member_state WHERE member = 'carol' AND engagement_id = ?",
        (eid,),
    )
    # bob rewrites carol's kept state to make himself lead: without carol's key the MAC
    # fails, the state is ignored, and the log says what it says.
    forged = bytes(blob).replace(b'"bob":["reader"', b'"bob":["lead"')
    assert forged != bytes(blob)
    bob.sql("UPDATE member_state SET state = ? WHERE member = 'carol'", (forged,))
    with vault.open("carol") as v:
        state = v.engagements.grants.log_state(v.engagements.get(engagement))
        assert state is not None
        assert state.roster["bob"].role != "lead"
    bob.sql("UPDATE member_state SET state = ?, mac = ? WHERE member = 'carol'", (blob, mac))
    # The log cut back below what carol verified: refused, naming it.
    bob.sql("DELETE FROM member_log WHERE engagement_id = ? AND seq > 10", (eid,))
    # carol's witness refuses the vault at open ...
    with pytest.raises(IntegrityError, match=r"links 11–\d+ are missing"):
        vault.open("carol")
    # ... and without it (a new machine) her kept state still does, at the first read.
    shutil.rmtree(witness.state_dir())
    with vault.open("carol") as v, pytest.raises(IntegrityError, match="rolled back"):
        v.get(f"{engagement}/web1-root")


def test_cli_a_forged_link_is_exit_6_with_one_line(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    """The insider's forged link reaches the user as tampering: exit 6, one line, no data."""
    assert cli_vault("put", "acme-2026/db", input=b"pw\n").code == 0
    path = Path(cli_env["CREDVAULT_VAULT"])
    ins = Insider(path, "bob", Clock())
    eid, _ = ins.engagement("acme-2026")
    ((seq, blob),) = ins.sql(
        "SELECT seq, link FROM member_log WHERE engagement_id = ? ORDER BY seq DESC LIMIT 1",
        (eid,),
    )
    bad = bytearray(blob)
    bad[-1] ^= 1  # the signature no longer verifies
    ins.sql(
        "UPDATE member_log SET link = ? WHERE engagement_id = ? AND seq = ?", (bytes(bad), eid, seq)
    )
    r = cli_vault("get", "acme-2026/db")
    assert r.code == 6, r.err
    assert r.out == b""
    assert len(r.err.strip().splitlines()) == 1
