"""The membership log on its own (issue 11): honest histories replay to the right roster, key
version and holders; forged, replayed, reordered, truncated and forked logs are refused (or,
for a clean truncation, caught by the witness check); the rules keep a lead and refuse what
an insider would need.

Written as the attacker where it matters: an insider holds every public key and every link
ever written, and the private keys of whoever they are (a member without a grant, a revoked
reader, a lowered lead, the creating admin); they can write any bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credvault import memberlog as ml
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError

VAULT = bytes(range(16))
ENG = bytes(range(16, 32))
OTHER_ENG = bytes(range(32, 48))


class Who(NamedTuple):
    name: str
    sign_priv: bytes
    sign: bytes
    kem: bytes


def _who(name: str) -> Who:
    priv = p.hkdf(name.encode() * 4, b"test-sign")
    kem_priv = p.hkdf(name.encode() * 4, b"test-kem")
    return Who(name, priv, p.ed25519_public(priv), p.x25519_public(kem_priv))


ADMIN = _who("admin")  # creates engagements; holds no grant
ALICE, BOB, CAROL, DAVE, MALLORY = (_who(n) for n in ("alice", "bob", "carol", "dave", "mallory"))
RECOVERY = _who("recovery")
TRUST = ml.Trust(VAULT, ENG, {"admin": frozenset({ADMIN.sign})}, RECOVERY.sign)


def _t(n: int) -> str:
    return f"2026-01-{1 + n // 24:02d}T{n % 24:02d}:00:00.000000Z"


def _fp(tag: str) -> str:
    return p.fingerprint(p.hkdf(tag.encode(), b"test-key"))


class Log:
    """An honest log being written, with its blobs and state."""

    def __init__(self, lead: Who = ALICE, trust: ml.Trust = TRUST) -> None:
        self.trust = trust
        self.blobs: list[bytes] = []
        self.n = 0
        self.state: ml.State | None = None
        self.add(ml.CREATE, ("acme-2026", "acme", lead.name, lead.sign, lead.kem), ADMIN, "admin")

    def add(
        self, kind: str, fields: tuple[str | bytes | int, ...], by: Who, name: str | None = None
    ) -> ml.State:
        blob, self.state = ml.sign_link(
            self.state, self.trust, kind, fields, name or by.name, by.sign_priv, _t(self.n)
        )
        self.n += 1
        self.blobs.append(blob)
        return self.state

    def grant(self, who: Who, role: str, by: Who = ALICE, expires: str = "") -> ml.State:
        return self.add(ml.GRANT, (who.name, role, expires, who.sign, who.kem), by)

    def revoke(self, who: Who, by: Who = ALICE) -> ml.State:
        return self.add(ml.REVOKE, (who.name,), by)

    def rotate(self, tag: str, by: Who = ALICE) -> ml.State:
        assert self.state is not None
        return self.add(ml.ROTATE, (self.state.key_version + 1, _fp(tag)), by)

    @property
    def st(self) -> ml.State:
        assert self.state is not None
        return self.state


def _forge(
    state: ml.State | None,
    kind: str,
    fields: tuple[str | bytes | int, ...],
    signer: str,
    key: Who,
    *,
    seq: int | None = None,
    prev: bytes | None = None,
    time: str = "2026-06-01T00:00:00.000000Z",
    engagement: bytes = ENG,
    vault: bytes = VAULT,
) -> bytes:
    """A link signed by whatever key the attacker has, placed wherever they like."""
    link = ml.Link(
        vault,
        engagement,
        (0 if state is None else state.seq + 1) if seq is None else seq,
        (ml.ZERO_HASH if state is None else state.head) if prev is None else prev,
        time,
        kind,
        signer,
        key.sign,
        fields,
        b"",
    )
    return link.body() + p.sign(key.sign_priv, ml.labels.MEMBER_LOG, link.body())


def _refused(blobs: list[bytes], trust: ml.Trust = TRUST) -> str:
    with pytest.raises(IntegrityError) as e:
        ml.replay(blobs, trust)
    return str(e.value)


def _history() -> Log:
    """alice leads; bob engineer; carol reader; a rotation after carol's revoke."""
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.ENGINEER)
    log.grant(CAROL, ml.READER)
    log.revoke(CAROL)
    log.rotate("k2")
    return log


# -- honest histories -------------------------------------------------------------------------
def test_creation_has_a_lead_and_no_key_and_not_the_creator() -> None:
    st = Log().st
    assert st.leads() == ["alice"]
    assert st.key_version == 0
    assert st.creator == "admin"
    assert "admin" not in st.roster
    assert st.readers(_t(1)) == ["alice"]
    assert not st.may_read("alice", _t(1))  # no key exists yet: the first lead makes it
    assert not st.needs_rotation(_t(1))


def test_replay_equals_incremental_state() -> None:
    log = _history()
    assert ml.replay(log.blobs, TRUST) == log.st


def test_roster_key_version_and_holders_from_history() -> None:
    st = _history().st
    assert dict(st.roster) == {
        "alice": ml.Member(ml.LEAD, None, ALICE.sign, ALICE.kem),
        "bob": ml.Member(ml.ENGINEER, None, BOB.sign, BOB.kem),
    }
    assert st.key_version == 2
    assert st.fingerprints == {1: _fp("k1"), 2: _fp("k2")}
    assert st.holders == {1: {"alice", "bob", "carol"}, 2: {"alice", "bob"}}
    assert st.held("carol", 1)
    assert not st.held("carol", 2)
    assert not st.held("admin", 1)
    assert not st.held("admin", 2)
    assert st.readers(_t(99)) == ["alice", "bob"]
    assert st.kem_of("bob") == BOB.kem


def test_revoke_demands_rotation_until_rotated() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(CAROL, ml.READER)
    assert not log.st.needs_rotation(_t(50))
    log.revoke(CAROL)
    assert log.st.needs_rotation(_t(50))
    log.rotate("k2")
    assert not log.st.needs_rotation(_t(50))


def test_auditor_never_holds_a_key_and_lowering_to_auditor_rotates() -> None:
    log = Log()
    log.grant(DAVE, ml.AUDITOR)
    log.rotate("k1")
    assert not log.st.held("dave", 1)
    assert not log.st.may_read("dave", _t(50))
    log.grant(BOB, ml.READER)
    log.grant(BOB, ml.AUDITOR)
    assert log.st.needs_rotation(_t(50))


def test_expiry_is_signed_and_counts_by_the_clock() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.ENGINEER, expires=_t(10))
    assert log.st.may_read("bob", _t(9))
    assert not log.st.may_read("bob", _t(10))
    assert not log.st.needs_rotation(_t(9))
    assert log.st.needs_rotation(_t(10))  # the clock alone demands it; no column does
    with pytest.raises(IntegrityError, match="not expired"):
        log.add(ml.EXPIRE, ("bob",), ALICE)  # link time _t(3) < expiry
    while log.n <= 10:
        log.n += 1
    log.add(ml.EXPIRE, ("bob",), ALICE)
    assert "bob" not in log.st.roster
    log.rotate("k2")
    assert not log.st.needs_rotation(_t(40))
    assert log.st.holders[2] == {"alice"}


def test_a_lead_grant_cannot_expire() -> None:
    log = Log()
    with pytest.raises(IntegrityError, match="cannot expire"):
        log.grant(BOB, ml.LEAD, expires=_t(40))


def test_chain_of_leads_lowering_the_first_stays_verifiable() -> None:
    """alice -> bob -> carol, then carol lowers alice: no re-signing, so no cycle."""
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.LEAD)
    log.grant(CAROL, ml.LEAD, by=BOB)
    log.grant(ALICE, ml.READER, by=CAROL)
    st = ml.replay(log.blobs, TRUST)
    assert st.leads() == ["bob", "carol"]
    assert st.roster["alice"].role == ml.READER
    log.revoke(BOB, by=CAROL)
    assert ml.replay(log.blobs, TRUST).leads() == ["carol"]


# -- no engagement without a lead (property 8) -------------------------------------------------
def test_last_lead_cannot_be_revoked_or_lowered() -> None:
    log = Log()
    log.rotate("k1")
    before = list(log.blobs)
    with pytest.raises(IntegrityError, match="without lead"):
        log.revoke(ALICE)
    with pytest.raises(IntegrityError, match="without lead"):
        log.grant(ALICE, ml.ENGINEER)
    assert log.blobs == before
    log.grant(BOB, ml.LEAD)
    log.revoke(ALICE, by=BOB)  # fine: bob still leads
    assert log.st.leads() == ["bob"]


def test_forged_link_leaving_no_lead_is_refused() -> None:
    log = Log()
    blob = _forge(log.st, ml.REVOKE, ("alice",), "alice", ALICE)
    assert "without lead" in _refused([*log.blobs, blob])


# -- forged links ------------------------------------------------------------------------------
def test_member_without_grant_cannot_grant_themselves() -> None:
    log = _history()
    for signer, key in (("mallory", MALLORY), ("alice", MALLORY), ("bob", BOB)):
        blob = _forge(
            log.st, ml.GRANT, ("mallory", ml.READER, "", MALLORY.sign, MALLORY.kem), signer, key
        )
        assert _refused([*log.blobs, blob])


def test_engineer_cannot_grant_revoke_or_rotate() -> None:
    log = _history()
    for kind, fields in (
        (ml.GRANT, ("carol", ml.READER, "", CAROL.sign, CAROL.kem)),
        (ml.REVOKE, ("alice",)),
        (ml.ROTATE, (3, _fp("bob-chose"))),
    ):
        assert "not entitled" in _refused([*log.blobs, _forge(log.st, kind, fields, "bob", BOB)])


def test_creating_admin_cannot_plant_or_learn_the_key() -> None:
    """The admin who created the engagement can neither rotate to a key of their choosing,
    nor grant themselves, nor is ever a holder."""
    log = Log()
    for kind, fields in (
        (ml.ROTATE, (1, _fp("admin-chose"))),
        (ml.GRANT, ("admin", ml.READER, "", ADMIN.sign, ADMIN.kem)),
    ):
        assert "not on the roster" in _refused(
            [*log.blobs, _forge(log.st, kind, fields, "admin", ADMIN)]
        )
    st = _history().st
    assert all("admin" not in h for h in st.holders.values())


def test_creation_must_be_signed_by_an_admin() -> None:
    fields = ("acme-2026", "acme", "mallory", MALLORY.sign, MALLORY.kem)
    assert "not signed by an admin" in _refused([_forge(None, ml.CREATE, fields, "admin", MALLORY)])
    assert "not signed by an admin" in _refused(
        [_forge(None, ml.CREATE, fields, "mallory", MALLORY)]
    )


def test_flipped_signature_or_body_byte_is_refused() -> None:
    log = _history()
    for i in (3, -1):
        blob = bytearray(log.blobs[i])
        blob[-5] ^= 1
        assert _refused([*log.blobs[:i], bytes(blob), *log.blobs[i + 1 :]][: len(log.blobs)])


def test_every_single_byte_flip_anywhere_is_refused() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.READER)
    for i, blob in enumerate(log.blobs):
        for pos in range(len(blob)):
            bad = bytearray(blob)
            bad[pos] ^= 0x40
            blobs = list(log.blobs)
            blobs[i] = bytes(bad)
            _refused(blobs)


def test_recovery_key_is_entitled_and_an_impostor_is_not() -> None:
    log = _history()
    good = _forge(
        log.st, ml.GRANT, ("dave", ml.LEAD, "", DAVE.sign, DAVE.kem), "@recovery", RECOVERY
    )
    assert ml.replay([*log.blobs, good], TRUST).leads() == ["alice", "dave"]
    bad = _forge(log.st, ml.GRANT, ("dave", ml.LEAD, "", DAVE.sign, DAVE.kem), "@recovery", DAVE)
    assert "recovery" in _refused([*log.blobs, bad])


def test_a_remover_admin_may_sign_a_revoke_and_nothing_else() -> None:
    """A team vault's ``member rm``: an admin the trust names in ``removers`` signs a
    member out without being on the roster; the state then demands a rotation. That admin
    still may not grant, rotate or remove the last lead; another key under their name, or
    a trust without removers (a SQLCipher vault), refuses the same link."""
    log = _history()
    team = TRUST._replace(removers={"admin": frozenset({ADMIN.sign})})
    out = _forge(log.st, ml.REVOKE, ("bob",), "admin", ADMIN)
    st = ml.replay([*log.blobs, out], team)
    assert "bob" not in st.roster
    assert st.needs_rotation(_t(99))
    assert "not on the roster" in _refused([*log.blobs, out])  # SQLCipher: no removers
    assert "not on the roster" in _refused(
        [*log.blobs, _forge(log.st, ml.REVOKE, ("bob",), "admin", MALLORY)], team
    )
    for kind, fields in (
        (ml.GRANT, ("admin", ml.READER, "", ADMIN.sign, ADMIN.kem)),
        (ml.ROTATE, (3, _fp("admin-chose"))),
    ):
        assert "not on the roster" in _refused(
            [*log.blobs, _forge(log.st, kind, fields, "admin", ADMIN)], team
        )
    last = _forge(st, ml.REVOKE, ("alice",), "admin", ADMIN)
    assert "without lead" in _refused([*log.blobs, out, last], team)


def test_a_remover_admin_may_re_pin_a_member_only_as_compromised_to_certified_keys() -> None:
    """A team vault's ``member certify``: an admin the trust names in ``removers`` signs a
    ``succeed`` off the roster re-pinning alice (the sole lead) to her new keys, with
    compromised = 1 (a rotation is due and the old key holds no right to the next
    version); alice then leads with the new key and the old one signs nothing. Refused:
    compromised = 0, another key under the admin's name, a trust without removers, the
    trust's ``successor`` refusing the pair (keys no certificate names), and the
    ``after_removal`` bound (an admin removed before signing it)."""
    log = _history()
    new = _who("alice-after-the-leak")
    team = TRUST._replace(removers={"admin": frozenset({ADMIN.sign})})
    link = _forge(log.st, ml.SUCCEED, ("alice", new.sign, new.kem, 1), "admin", ADMIN)
    st = ml.replay([*log.blobs, link], team)
    assert (st.roster["alice"].role, st.roster["alice"].sign) == (ml.LEAD, new.sign)
    assert st.kem_of("alice") == new.kem
    assert st.needs_rotation(_t(99))
    rot = _forge(st, ml.ROTATE, (3, _fp("k3")), "alice", new)
    after = ml.replay([*log.blobs, link, rot], team)
    assert after.held("alice", 3)
    old = _forge(st, ml.ROTATE, (3, _fp("k3")), "alice", ALICE)
    assert "not on the roster" in _refused([*log.blobs, link, old], team)
    mild = _forge(log.st, ml.SUCCEED, ("alice", new.sign, new.kem, 0), "admin", ADMIN)
    assert "not on the roster" in _refused([*log.blobs, mild], team)
    assert "not on the roster" in _refused([*log.blobs, link])  # SQLCipher: no removers
    other = _forge(log.st, ml.SUCCEED, ("alice", new.sign, new.kem, 1), "admin", MALLORY)
    assert "not on the roster" in _refused([*log.blobs, other], team)
    picky = team._replace(
        successor=lambda m, s, k: None if (m, s, k) == ("alice", new.sign, new.kem) else "no"
    )
    assert ml.replay([*log.blobs, link], picky) == st
    wrong = _forge(log.st, ml.SUCCEED, ("alice", MALLORY.sign, MALLORY.kem, 1), "admin", ADMIN)
    assert "(succeed): no" in _refused([*log.blobs, wrong], picky)
    own = _forge(log.st, ml.SUCCEED, ("bob", MALLORY.sign, MALLORY.kem, 0), "bob", BOB)
    assert "(succeed): no" in _refused([*log.blobs, own], picky)  # the old key's thief
    gone = team._replace(after_removal=lambda who, key, h: "removed before")
    assert "removed before" in _refused([*log.blobs, link], gone)


def test_settings_are_signed_by_a_lead_or_a_remover_admin_only() -> None:
    """A team vault's engagement settings (``set``: --require-reason, its grace period):
    a lead signs them, or an admin the trust names in ``removers``; never an engineer, an
    admin without that trust (a SQLCipher vault) or another key. Values are bounded; the
    last ``set`` decides; a state without settings keeps the bytes it had (old caches)."""
    log = _history()
    plain = ml.state_to_bytes(log.st)
    assert b"require_reason" not in plain
    assert b"grace_days" not in plain
    before = log.st
    st = log.add(ml.SET, (1, 3), ALICE)
    assert (st.require_reason, st.grace_days) == (True, 3)
    assert (st.roster, st.key_version, st.holders) == (
        before.roster,
        before.key_version,
        before.holders,
    )
    assert ml.state_from_bytes(ml.state_to_bytes(st)) == st
    assert ml.replay(log.blobs, TRUST) == st
    team = TRUST._replace(removers={"admin": frozenset({ADMIN.sign})})
    off = _forge(st, ml.SET, (0, ml.NO_GRACE), "admin", ADMIN)
    after = ml.replay([*log.blobs, off], team)
    assert (after.require_reason, after.grace_days) == (False, None)
    assert "not on the roster" in _refused([*log.blobs, off])  # no removers
    assert "not on the roster" in _refused(
        [*log.blobs, _forge(st, ml.SET, (0, -1), "admin", MALLORY)], team
    )
    assert "not entitled" in _refused([*log.blobs, _forge(st, ml.SET, (0, -1), "bob", BOB)])
    for bad in ((2, -1), (1, -2), (0, 36501)):
        assert "bad engagement settings" in _refused(
            [*log.blobs, _forge(st, ml.SET, bad, "alice", ALICE)]
        )
    explicit = plain.replace(b'"head"', b'"grace_days":null,"head"')
    with pytest.raises(IntegrityError):
        ml.state_from_bytes(explicit)


# -- replayed, reordered, truncated, forked -----------------------------------------------------
def test_revoke_cannot_be_undone_by_deleting_it() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(CAROL, ml.READER)
    log.revoke(CAROL)
    log.rotate("k2")
    without = [b for i, b in enumerate(log.blobs) if i != 3]
    assert "broken at link 3" in _refused(without)


def test_revoke_cannot_be_undone_by_replaying_the_old_grant() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(CAROL, ml.READER)
    old_grant = log.blobs[-1]
    log.revoke(CAROL)
    log.rotate("k2")
    assert "broken" in _refused([*log.blobs, old_grant])


def test_lowered_lead_cannot_replay_their_lead_grant() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.LEAD)
    bob_lead = log.blobs[-1]
    log.grant(BOB, ml.ENGINEER)
    assert "broken" in _refused([*log.blobs, bob_lead])
    # nor re-signed by bob himself at the right place: he is no lead any more
    again = _forge(log.st, ml.GRANT, ("bob", ml.LEAD, "", BOB.sign, BOB.kem), "bob", BOB)
    assert "not entitled" in _refused([*log.blobs, again])


def test_reordered_links_are_refused() -> None:
    log = _history()
    blobs = list(log.blobs)
    blobs[2], blobs[3] = blobs[3], blobs[2]
    assert "broken at link 2" in _refused(blobs)


def test_link_of_another_engagement_or_vault_is_refused() -> None:
    log = _history()
    other = Log(trust=TRUST._replace(engagement_uid=OTHER_ENG))
    assert "another vault or engagement" in _refused(other.blobs)
    st = log.st
    for kw in ({"engagement": OTHER_ENG}, {"vault": bytes(16)}):
        blob = _forge(st, ml.ROTATE, (3, _fp("x")), "alice", ALICE, **kw)  # type: ignore[arg-type]
        assert "another vault or engagement" in _refused([*log.blobs, blob])


def test_backward_time_is_refused() -> None:
    log = _history()
    blob = _forge(log.st, ml.ROTATE, (3, _fp("k3")), "alice", ALICE, time=_t(0))
    assert "backward" in _refused([*log.blobs, blob])


def test_truncation_is_a_valid_prefix_but_the_witness_catches_it() -> None:
    log = _history()
    seen = log.st.position
    short = log.blobs[:-2]
    st = ml.replay(short, TRUST)  # a prefix is a valid log: only a witness can tell
    assert st.key_version == 1
    hashes = [ml.Link.from_bytes(b).hash() for b in short]
    with pytest.raises(IntegrityError, match="rolled back"):
        ml.check_witness(hashes, seen)
    full = [ml.Link.from_bytes(b).hash() for b in log.blobs]
    ml.check_witness(full, seen)
    ml.check_witness(full, ml.Position(2, full[2]))
    ml.check_witness(full, ml.Position(-1, ml.ZERO_HASH))


def test_fork_is_caught_by_the_witness() -> None:
    a = Log()
    a.rotate("k1")
    b = Log()
    b.rotate("other")
    assert a.blobs[0] == b.blobs[0]
    hashes_b = [ml.Link.from_bytes(x).hash() for x in b.blobs]
    ml.replay(b.blobs, TRUST)  # each fork verifies on its own
    with pytest.raises(IntegrityError, match="forked"):
        ml.check_witness(hashes_b, a.st.position)


def test_links_of_two_forks_cannot_be_spliced() -> None:
    """Each link names its predecessor's hash: a valid link of one fork does not continue
    another, even at the right position and signed by an entitled lead."""
    a = Log()
    a.rotate("k1")
    a.grant(BOB, ml.READER)
    b = Log()
    b.rotate("k1-other")
    b.grant(CAROL, ml.READER)
    assert a.blobs[0] == b.blobs[0]
    assert "broken at link 2" in _refused([*a.blobs[:2], b.blobs[2]])
    assert "broken at link 2" in _refused([a.blobs[0], b.blobs[1], a.blobs[2]])


def test_position_of_matches_replay() -> None:
    log = _history()
    assert ml.position_of(log.blobs) == log.st.position
    assert ml.position_of([]) == ml.Position(-1, ml.ZERO_HASH)


def test_resuming_from_a_cached_state_equals_a_full_replay() -> None:
    log = _history()
    for cut in range(len(log.blobs)):
        start = ml.replay(log.blobs[: cut + 1], TRUST)
        cached = ml.state_from_bytes(ml.state_to_bytes(start))
        assert cached == start
        assert ml.replay(log.blobs[cut + 1 :], TRUST, start=cached) == log.st


def test_resuming_needs_the_links_right_after_the_cached_state() -> None:
    log = _history()
    start = ml.replay(log.blobs[:3], TRUST)
    assert "broken at link 3" in str(_raises(lambda: ml.replay(log.blobs[4:], TRUST, start=start)))
    other = Log()
    other.rotate("elsewhere")
    forked = ml.replay(other.blobs, TRUST)
    assert "broken" in str(_raises(lambda: ml.replay(log.blobs[2:], TRUST, start=forked)))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.replace(b'"key_version":2', b'"key_version":"2"'),
        lambda d: d.replace(b'"head":"', b'"head":"zz'),
        lambda d: d[:-1],
        lambda d: d.replace(b'"rotation_due":false', b'"rotation_due":0'),
        lambda d: b"[]",
    ],
)
def test_cached_state_must_be_canonical(edit: Callable[[bytes], bytes]) -> None:
    data = ml.state_to_bytes(_history().st)
    assert edit(data) != data
    with pytest.raises(IntegrityError):
        ml.state_from_bytes(edit(data))


def _raises(fn: Callable[[], object]) -> IntegrityError:
    with pytest.raises(IntegrityError) as e:
        fn()
    return e.value


def test_empty_log_and_second_creation_are_refused() -> None:
    assert "empty" in _refused([])
    log = Log()
    again = _forge(
        log.st,
        ml.CREATE,
        ("acme-2026", "acme", "mallory", MALLORY.sign, MALLORY.kem),
        "admin",
        ADMIN,
    )
    assert "exactly one creation" in _refused([*log.blobs, again])


# -- keys ----------------------------------------------------------------------------------------
def test_rotation_must_step_by_one_and_change_the_key() -> None:
    log = Log()
    log.rotate("k1")
    for fields in ((3, _fp("k3")), (1, _fp("k1b")), (2, _fp("k1")), (2, "XYZ"), (2, "ab" * 15)):
        assert _refused([*log.blobs, _forge(log.st, ml.ROTATE, fields, "alice", ALICE)])


def test_check_key_accepts_only_the_committed_key() -> None:
    log = Log()
    log.rotate("k1")
    log.st.check_key(1, p.hkdf(b"k1", b"test-key"))
    for version, key in ((1, p.hkdf(b"k2", b"test-key")), (2, p.hkdf(b"k1", b"test-key"))):
        with pytest.raises(IntegrityError, match="does not match"):
            log.st.check_key(version, key)


def test_member_key_succession() -> None:
    log = Log()
    log.rotate("k1")
    log.grant(BOB, ml.ENGINEER)
    new = _who("bob-2")
    log.add(ml.SUCCEED, ("bob", new.sign, new.kem, 0), BOB)
    assert log.st.roster["bob"].sign == new.sign
    assert log.st.kem_of("bob") == new.kem
    assert not log.st.needs_rotation(_t(50))
    # bob's old key signs nothing any more; his new one signs his next succession
    old = _forge(log.st, ml.SUCCEED, ("bob", BOB.sign, BOB.kem, 0), "bob", BOB)
    assert "not on the roster with this key" in _refused([*log.blobs, old])
    third = _who("bob-3")
    log.add(ml.SUCCEED, ("bob", third.sign, third.kem, 1), new, "bob")
    assert log.st.needs_rotation(_t(50))  # compromised: the key he held must go


def test_a_member_cannot_succeed_someone_else() -> None:
    log = Log()
    log.grant(BOB, ml.ENGINEER)
    blob = _forge(log.st, ml.SUCCEED, ("alice", MALLORY.sign, MALLORY.kem, 0), "bob", BOB)
    assert "not entitled" in _refused([*log.blobs, blob])


# -- strict parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],
        lambda b: b + b"\x00",
        lambda b: b[:10],
        lambda b: b"",
        lambda b: b"\x00" * 5000,
        lambda b: b[:4] + b"\xff\xff\xff\xff" + b[8:],
    ],
)
def test_malformed_link_bytes_are_refused(mangle: Callable[[bytes], bytes]) -> None:
    log = Log()
    with pytest.raises(IntegrityError):
        ml.replay([mangle(log.blobs[0])], TRUST)


def test_bad_names_and_roles_are_refused() -> None:
    log = Log()
    for fields in (
        ("@recovery", ml.READER, "", DAVE.sign, DAVE.kem),
        ("da ve", ml.READER, "", DAVE.sign, DAVE.kem),
        ("dave", "owner", "", DAVE.sign, DAVE.kem),
        ("dave", ml.READER, "tomorrow", DAVE.sign, DAVE.kem),
    ):
        assert _refused([*log.blobs, _forge(log.st, ml.GRANT, fields, "alice", ALICE)])


# -- random histories ----------------------------------------------------------------------------
PEOPLE = [ALICE, BOB, CAROL, DAVE, MALLORY, RECOVERY]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(0, 4)), max_size=25))
def test_random_attempts_keep_the_invariants(steps: list[tuple[int, int, int]]) -> None:
    """Any actor attempts any operation; whatever the rules accept keeps a lead, replays to
    the same state, and only ever makes roster readers holders of a new key version."""
    log = Log()
    for op, actor, target in steps:
        by, who = PEOPLE[actor], PEOPLE[target]
        signer = "@recovery" if by is RECOVERY else by.name
        kind, fields = [
            (ml.GRANT, (who.name, ml.ROLES[actor % 4], "", who.sign, who.kem)),
            (ml.REVOKE, (who.name,)),
            (ml.ROTATE, (log.st.key_version + 1, _fp(f"r{log.n}"))),
            (ml.GRANT, (who.name, ml.READER, _t(log.n + 2), who.sign, who.kem)),
            (ml.SUCCEED, (who.name, who.sign, who.kem, 1)),
        ][op]
        before = log.st
        try:
            log.add(kind, fields, by, signer)
        except IntegrityError:
            assert log.st == before
            continue
        assert log.st.leads()
        if kind == ml.ROTATE:
            assert log.st.holders[log.st.key_version] == set(before.readers(_t(log.n - 1)))
            assert not log.st.needs_rotation(_t(log.n - 1))
    assert ml.replay(log.blobs, TRUST) == log.st
