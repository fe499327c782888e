"""A team member's signing-key history (credvault.team_keys, docs/team.md "info,
receipt-keys and passwd --compromised"), in-process and without a server: a receipt signed
by a key its member handed over verifies only if it predates the hand-over, a link the DBA
edits stops the history, and a member with a stored link is never *current* for sealing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, NotFound
from credvault.keyslots import MemberKeys
from credvault.receipt_keys import link_text, make_link
from credvault.receipts import verify_receipt
from credvault.team_keys import SeenHandOvers, history, retire
from credvault.team_lifecycle import sign_receipt
from credvault.team_log import CertRow, Certs

VID = bytes(range(16))
HANDED_OVER = "2026-11-30T08:00:00.000000Z"


def _keys() -> MemberKeys:
    sign, _ = p.ed25519_generate()
    kem, _ = p.x25519_generate()
    return MemberKeys("bob", kem, sign, p.ed25519_public(sign))


def _facts(purged_at: str) -> dict[str, object]:
    return {"format": "credvault-purge-receipt/2", "vault_id": VID.hex(), "engagement": "e",
            "purged_at": purged_at}  # fmt: skip


def test_a_handed_over_key_signs_nothing_dated_after_the_hand_over() -> None:
    old, new = _keys(), _keys()
    old_pub = p.ed25519_public(old.sign_private)
    link = link_text(
        make_link(VID.hex(), 1, old.sign_private, p.ed25519_public(new.sign_private), HANDED_OVER)
    )
    hist = history(VID, old_pub, [link])  # fmt: skip
    assert [k.public_key for k in hist.keys] == [old_pub, p.ed25519_public(new.sign_private)]
    verify_receipt(sign_receipt(old, _facts("2026-11-29T00:00:00.000000Z"), None), hist)
    verify_receipt(sign_receipt(new, _facts("2026-12-01T00:00:00.000000Z"), None), hist)
    # the attacker holding the old key dates a receipt after the hand-over
    with pytest.raises(IntegrityError, match="retired"):
        verify_receipt(sign_receipt(old, _facts("2026-12-01T00:00:00.000000Z"), None), hist)
    # the DBA edits the link (its time moved back): the history stops there
    with pytest.raises(IntegrityError, match="not signed by the key before it"):
        history(VID, old_pub, [link.replace(HANDED_OVER, "2026-01-01T00:00:00.000000Z")])
    with pytest.raises(IntegrityError, match="not JSON"):
        history(VID, old_pub, ["{"])


def test_a_member_with_a_key_link_is_not_current() -> None:
    row = CertRow(
        "bob", "alice", False, b"i" * 32, b"s" * 64, b"j" * 64, b"k" * 32, b"m" * 32, "active"
    )
    certs = Certs(VID, None, {"bob": row})  # fmt: skip
    retire(certs, {"bob": ["any link, even one the DBA forged"], "nobody": ["x"]})
    with pytest.raises(NotFound):
        certs.keys("bob")
    assert certs.rows["bob"].state == "retired"
    assert "nobody" not in certs.rows


def test_a_hand_over_seen_cannot_vanish_or_change(tmp_path: Path) -> None:
    path = tmp_path / "alice.handovers"
    sign, _ = p.ed25519_generate()
    seen = SeenHandOvers(path, VID, "alice", sign)
    seen.check({})  # a first look trusts the server
    seen.keep({"bob": ["link 1"]})
    again = SeenHandOvers(path, VID, "alice", sign)
    again.check({"bob": ["link 1", "link 2"], "carol": ["link 1"]})  # histories only grow
    for shown in ({}, {"bob": []}, {"bob": ["link 1 edited"]}):
        with pytest.raises(IntegrityError, match="key hand-over of member 'bob'"):
            again.check(shown)
    # the file is MACed under a key from alice's signing key: an edit, or another key, fails
    path.write_text(path.read_text().replace('"bob"', '"bub"'))
    with pytest.raises(IntegrityError):
        SeenHandOvers(path, VID, "alice", sign)


def _member(
    name: str, inviter: str, inviter_priv: bytes, admin: bool
) -> tuple[CertRow, bytes, bytes]:
    """A certified member: (certificate row, signing private key, X25519 public key); the
    founder is self-invited (``inviter == name``, ``ipk`` their own signing key)."""
    from credvault.crypto import labels
    from credvault.team_log import invitation_message, join_message

    sign, _ = p.ed25519_generate()
    kem = p.x25519_public(p.x25519_generate()[0])
    sign_pub = p.ed25519_public(sign)
    seed = sign if inviter == name else p.ed25519_generate()[0]
    ipk = p.ed25519_public(seed)
    by = sign if inviter == name else inviter_priv
    inv = p.sign(by, labels.TEAM_INVITE_SIG, invitation_message(VID, name, ipk, admin, inviter))
    proof = p.sign(seed, labels.TEAM_JOIN_PROOF, join_message(VID, name, sign_pub, kem))
    return CertRow(name, inviter, admin, ipk, inv, proof, sign_pub, kem, "active"), sign, kem


def test_new_keys_count_only_through_an_admins_chained_certificate() -> None:
    """format.md §19.8 without a server: an admin's certificate chained to the pair before
    makes the new pair current; one by the member themselves, by a member who is not an
    admin, over another previous pair or with a key not the certifier's is exit 6; a hand-
    over newer than the last certificate retires the member again."""
    from credvault.crypto import labels
    from credvault.team_log import RekeyRow, rekey_message

    alice, a_priv, _ = _member("alice", "alice", b"", True)
    bob, b_priv, b_kem = _member("bob", "alice", a_priv, False)
    carol, c_priv, _ = _member("carol", "alice", a_priv, False)
    rows = {"alice": alice, "bob": bob, "carol": carol}
    new_sign, new_kem = p.ed25519_public(p.ed25519_generate()[0]), b"n" * 32
    assert bob.sign_pub is not None

    def cert(by: str, priv: bytes, prev: tuple[bytes, bytes] = (bob.sign_pub, b_kem)) -> RekeyRow:
        key = p.ed25519_public(priv)
        msg = rekey_message(VID, "bob", 1, prev, (new_sign, new_kem), by, key)
        return RekeyRow("bob", 1, new_sign, new_kem, by, key,
                        p.sign(priv, labels.TEAM_REKEY_CERT, msg))  # fmt: skip

    good = Certs(VID, None, rows, rekeys=[cert("alice", a_priv)])
    assert good.current("bob").sign == new_sign
    assert good.keys("bob").kem == new_kem
    assert [c.sign for c in good.history("bob")] == [bob.sign_pub, new_sign]
    assert good.sealer("bob") == bob.sign_pub  # key 0 of his receipt-key history
    retire(good, {"bob": ["link 1"]})
    assert good.rows["bob"].state == "active"  # certified: current
    retire(good, {"bob": ["link 1", "link 2"]})
    with pytest.raises(NotFound):
        good.keys("bob")  # a newer hand-over: retired until certified again
    for bad in (
        cert("bob", b_priv),  # by himself (his old key may be the thief's)
        cert("carol", c_priv),  # not an admin
        cert("alice", a_priv, prev=(new_sign, b_kem)),  # not chained to his certified pair
        cert("alice", c_priv),  # carol's key in alice's name
    ):
        with pytest.raises(IntegrityError):
            Certs(VID, None, rows, rekeys=[bad]).keys("bob")


def test_an_admins_certified_new_key_invites_and_a_cycle_certifies_nothing() -> None:
    """format.md §19.4 with §19.8, without a server: alice (the founder) re-keyed, her new
    pair certified by dave; what her new key invites is certified, and what her old key
    invites after the list revoked it is not (the chain verifies, the list refuses: no
    version endorses it), nor what a key no certificate gives her invites. Two admins who
    re-key in turn, each certified by the other's newer key, are a chain (it ends at the
    founder); an admin invited by a key certified by that admin's own signature is a cycle:
    exit 6, not a recursion without end."""
    from credvault.crypto import labels
    from credvault.team_log import NOTHING_REVOKED, RekeyRow, Revocation, rekey_message

    alice, a0, a0_kem = _member("alice", "alice", b"", True)
    dave, d0, d0_kem = _member("dave", "alice", a0, True)
    pairs = {"alice": [(a0, a0_kem)], "dave": [(d0, d0_kem)]}

    def rekey(who: str, by: str, seq: int, new: tuple[bytes, bytes] | None = None) -> RekeyRow:
        """``who``'s next pair (``new``, or one made here), certified by ``by``'s latest."""
        prev, certifier = pairs[who][-1], pairs[by][-1][0]
        new = new or (p.ed25519_generate()[0], p.x25519_public(p.x25519_generate()[0]))
        pairs[who].append(new)
        old_pub, new_pub = p.ed25519_public(prev[0]), p.ed25519_public(new[0])
        key = p.ed25519_public(certifier)
        msg = rekey_message(VID, who, seq, (old_pub, prev[1]), (new_pub, new[1]), by, key)
        return RekeyRow(who, seq, new_pub, new[1], by, key,
                        p.sign(certifier, labels.TEAM_REKEY_CERT, msg))  # fmt: skip

    rekeys = [rekey("alice", "dave", 1)]
    a1 = pairs["alice"][1][0]
    erin = _member("erin", "alice", a1, False)[0]  # her new key invites
    mal = _member("mal", "alice", a0, False)[0]  # the thief of her old key invites
    eve = _member("eve", "alice", p.ed25519_generate()[0], False)[0]  # a key never certified
    rows = {"alice": alice, "dave": dave, "erin": erin, "mal": mal, "eve": eve}
    a0_pub = p.ed25519_public(a0)  # what it certified before the list retires it: dave
    before = Certs(VID, None, {"alice": alice, "dave": dave}, rekeys=rekeys)
    endorsed = tuple(before.endorsements("alice", {a0_pub}))
    assert [e[0] for e in endorsed] == ["dave"]
    retired = Revocation(
        VID, 1, bytes(32), HANDED_OVER, "dave", p.ed25519_public(d0), "alice", b"",
        ((p.digest(a0_pub), p.digest(a0_kem)),), endorsed, b"",
    ).signed(d0)  # fmt: skip
    listed = NOTHING_REVOKED.then(retired, retired.to_bytes())
    certs = Certs(VID, None, rows, lambda _: listed, rekeys)
    assert certs.keys("erin").sign == erin.sign_pub  # invitation by alice's certified new key
    with pytest.raises(IntegrityError, match="whose keys are revoked, and not endorsed"):
        certs.keys("mal")
    assert certs.certified("mal").sign == mal.sign_pub  # the chain alone: the old key signed
    with pytest.raises(IntegrityError, match="signature check failed"):
        certs.certified("eve")
    assert Certs(VID, None, rows).keys("mal").sign == mal.sign_pub  # before the list: still good
    with pytest.raises(IntegrityError):  # before her certificate: the new key is nobody's
        Certs(VID, None, rows).certified("erin")

    # alice and dave re-key in turn, each certified by the other's latest pair
    rekeys += [rekey("dave", "alice", 1), rekey("alice", "dave", 2)]
    fay = _member("fay", "alice", pairs["alice"][2][0], False)[0]
    turns = Certs(VID, None, {**rows, "fay": fay}, rekeys=rekeys)
    assert [c.sign for c in turns.history("alice")] == [
        p.ed25519_public(k) for k, _ in pairs["alice"]
    ]
    assert turns.keys("fay").sign == fay.sign_pub

    # a cycle: gus, an admin invited by alice's new key, which gus himself certified
    alice_new = (p.ed25519_generate()[0], p.x25519_public(p.x25519_generate()[0]))
    gus, g0, g0_kem = _member("gus", "alice", alice_new[0], True)
    pairs["alice"], pairs["gus"] = [(a0, a0_kem)], [(g0, g0_kem)]
    loop = Certs(
        VID, None, {"alice": alice, "gus": gus}, rekeys=[rekey("alice", "gus", 1, alice_new)]
    )
    with pytest.raises(IntegrityError, match="'gus': signature check failed"):
        loop.certified("gus")
    with pytest.raises(IntegrityError, match="'gus' is not certified"):
        loop.history("alice")
