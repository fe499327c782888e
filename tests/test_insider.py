"""Issue 11's attacks, written as the insider: a vault member with a SQL shell on the
database (``tests/insider.py``) and copies of earlier files.

Each test runs the attack from the issue against the real vault, lets the honest members
carry on with ordinary commands, and then asks the cryptographic oracle what the insider can
decrypt (or whether the vault noticed). A test marked ``xfail(strict=True)`` is an attack
that still works on this code: it documents the property as *not yet* holding, and fails the
suite (XPASS) the day the property starts to hold, so the marker must then be removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import pytest

from conftest import VaultFixture
from credvault import AccessDenied, IntegrityError, NotFound, verify_receipt
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.keyslots import KeySlots, decrypt_private
from credvault.model import iso
from credvault.secret import Secret
from insider import Insider

ENG = "acme-2026"
LATER = b"written-after-the-attack"
NOT_YET = "issue 11 step 2/3: the vault does not consult the signed membership log yet"
DidNotRaise = pytest.fail.Exception  # what pytest.raises raises when the attack goes unnoticed


def _setup(vault: VaultFixture) -> None:
    """alice leads acme-2026; bob engineer; carol reader; one secret."""
    with vault.open() as v:
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "engineer")
        v.engagements.grant(ENG, "carol", "reader")
        v.put(f"{ENG}/web1-root", b"hunter2")


def _honest_day(vault: VaultFixture, member: str = "alice") -> None:
    """Ordinary commands by an honest lead: list, read, write a new secret."""
    with vault.open(member) as v:
        v.engagements.list()
        v.get(f"{ENG}/web1-root")
        v.put(f"{ENG}/new-{p.random_key().hex()[:8]}", LATER)


# -- property 1: nobody without a signed reading role is sealed a key -------------------------
def test_member_without_grant_inserts_grant_row_and_rotation_flag(vault: VaultFixture) -> None:
    """Issue 11: insert a grant row for yourself (garbage signature), set needs_rotation;
    the lead's next command rotated and sealed the new key to every unrevoked row. Now a
    row whose certificate does not verify is never sealed to; the flag only makes work."""
    _setup(vault)
    with vault.open() as v:
        v.members.add("dave", passphrase="dave-pass")
    dave = Insider(vault.path, "dave", vault.clock)
    eid, _ = dave.engagement(ENG)
    dave.sql(
        "INSERT INTO grants (engagement_id, member, role, granted_by, granted_at, role_sig) "
        "VALUES (?, 'dave', 'reader', 'alice', '2026-01-01T00:00:00.000000Z', ?)",
        (eid, b"\x00" * 64),
    )
    dave.sql("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (eid,))
    _honest_day(vault)
    ((version,),) = dave.sql("SELECT key_version FROM engagements WHERE id = ?", (eid,))
    assert version == 2  # the flag did trigger a rotation
    assert LATER in Insider(vault.path, "carol", vault.clock).readable()
    assert LATER not in dave.readable()
    assert b"hunter2" not in dave.readable()
    with vault.open("dave") as v, pytest.raises((AccessDenied, IntegrityError)):
        v.get(f"{ENG}/web1-root")


def test_forged_lead_row_is_not_laundered_when_its_claimed_granter_is_lowered(
    vault: VaultFixture,
) -> None:
    """Issue 11: lowering a lead re-signed every grant that lead had made without checking
    it, so a forged "lead" row became a validly signed lead. Now only rows whose certificate
    verified before the change are re-signed."""
    _setup(vault)
    with vault.open() as v:
        v.members.add("dave", passphrase="dave-pass")
        v.engagements.grant(ENG, "bob", "lead")
    with vault.open("bob") as v:
        v.engagements.grant(ENG, "carol", "lead")
    dave = Insider(vault.path, "dave", vault.clock)
    eid, _ = dave.engagement(ENG)
    dave.sql(
        "INSERT INTO grants (engagement_id, member, role, granted_by, granted_at, role_sig) "
        "VALUES (?, 'dave', 'lead', 'bob', '2026-01-01T00:00:00.000000Z', ?)",
        (eid, b"\x01" * 64),
    )
    with vault.open() as v:
        v.engagements.grant(ENG, "bob", "engineer")  # alice lowers bob: his grants re-signed
        v.put(f"{ENG}/after-lowering", LATER)
    with vault.open("carol") as v:  # carol's lead grant, made by bob, was re-signed and holds
        assert v.get(f"{ENG}/after-lowering").secret.reveal() == LATER
    with vault.open("dave") as v:
        assert v.engagements.role_of(v.engagements.get(ENG)) is None
        with pytest.raises((AccessDenied, IntegrityError)):
            v.get(f"{ENG}/web1-root")
    assert LATER not in dave.readable()


def test_member_without_grant_reads_nothing_by_sql_alone(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open() as v:
        v.members.add("dave", passphrase="dave-pass")
    dave = Insider(vault.path, "dave", vault.clock)
    assert dave.readable() == set()
    with vault.open("dave") as v, pytest.raises((AccessDenied, NotFound)):
        v.get(f"{ENG}/web1-root")


# -- property 2: a revocation cannot be undone or replayed -------------------------------------
def test_revoked_reader_clears_revoked_at(vault: VaultFixture) -> None:
    """Issue 11: clear revoked_at (unsigned) and set needs_rotation; after the lead's next
    command the revoked reader is sealed the new key."""
    _setup(vault)
    with vault.open() as v:
        v.engagements.revoke(ENG, "carol")
    carol = Insider(vault.path, "carol", vault.clock)
    eid, _ = carol.engagement(ENG)
    carol.sql(
        "UPDATE grants SET revoked_at = NULL WHERE engagement_id = ? AND member = 'carol'", (eid,)
    )
    carol.sql("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (eid,))
    with contextlib.suppress(IntegrityError):
        _honest_day(vault)
    assert LATER not in carol.readable()


def test_lowered_lead_writes_back_their_saved_lead_row(vault: VaultFixture) -> None:
    """Issue 11: role certificates carry no serial; a lowered lead writes back the row saved
    while lead, and is lead again (then seals the next key to a friend, or reads on)."""
    _setup(vault)
    with vault.open() as v:
        v.engagements.grant(ENG, "bob", "lead")
    bob = Insider(vault.path, "bob", vault.clock)
    eid, _ = bob.engagement(ENG)
    saved = bob.sql("SELECT * FROM grants WHERE engagement_id = ? AND member = 'bob'", (eid,))
    with vault.open() as v:
        v.engagements.grant(ENG, "bob", "auditor")  # lowered: may no longer read
    cols = len(saved[0])
    marks = ", ".join("?" * cols)
    bob.sql(f"INSERT OR REPLACE INTO grants VALUES ({marks})", saved[0])  # noqa: S608
    bob.sql("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (eid,))
    with contextlib.suppress(IntegrityError):
        _honest_day(vault)
    assert LATER not in bob.readable()


# -- property 3: the creating admin never learns the key -----------------------------------------
@pytest.mark.parametrize("first_write", ["put", "system add"])
def test_creating_admin_without_grant_never_learns_the_key(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch, first_write: str
) -> None:
    """Issue 11: the admin generated the first key; an engagement led by someone else was
    then encrypted under a key the admin knows. The key is captured the way a modified
    client would: whatever random key the admin's process makes. Now the first lead's first
    write replaces that key with one of their own."""
    made: list[bytes] = []
    real = p.random_key

    def spy() -> p.KeyBytes:
        k = real()
        made.append(bytes(k))
        return k

    with vault.open() as v:
        monkeypatch.setattr(p, "random_key", spy)
        v.engagements.create(ENG, "acme", lead="bob")
        monkeypatch.setattr(p, "random_key", real)
    assert made == []  # the creating admin's process makes no engagement key at all
    with vault.open() as v:  # nor can it read one: there is none until bob makes it
        assert v.engagements.get(ENG).key_version == 0
    with vault.open("bob") as v:
        if first_write == "put":
            v.put(f"{ENG}/web1-root", b"hunter2")
        else:
            v.systems.add(f"{ENG}/web1", "10.0.0.1", port=22, protocol="ssh", details="hunter2")
        v.put(f"{ENG}/second", LATER)
    alice = Insider(vault.path, "alice", vault.clock)
    assert alice.readable(made) == set()
    assert b"hunter2" in Insider(vault.path, "bob", vault.clock).readable()


def test_planted_first_key_is_replaced_by_the_leads_own(vault: VaultFixture) -> None:
    """Issue 11: while the engagement is at key version 1 the creating admin seals a key of
    their choosing to the lead, signs the copy (the creator may, for version 1) and sets
    key_fp. The lead's first write rotates to a key of the lead's own."""
    with vault.open() as v:
        v.engagements.create(ENG, "acme", lead="bob")
    alice = Insider(vault.path, "alice", vault.clock)
    eid, _ = alice.engagement(ENG)
    planted = p.random_key()
    alice.chosen.append(planted)
    with vault.open() as v:
        s = v._s
        eng = v.engagements.get(ENG)
        sealed, sig = v.engagements.keys.seal_copy(
            eng, "bob", 1, planted, "alice", s.keys.sign_private
        )
    alice.sql(
        "UPDATE grants SET sealed = ?, copy_sig = ?, sealed_by = 'alice' "
        "WHERE engagement_id = ? AND member = 'bob'",
        (sealed, sig, eid),
    )
    alice.sql("UPDATE engagements SET key_fp = ? WHERE id = ?", (p.fingerprint(planted), eid))
    with vault.open("bob") as v:
        v.put(f"{ENG}/web1-root", b"hunter2")
    assert b"hunter2" not in alice.readable()
    assert b"hunter2" in Insider(vault.path, "bob", vault.clock).readable()


# -- property 4: names, kind, system link bound to the envelopes ---------------------------------
def test_swapped_credential_names_give_integrity_error(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open() as v:
        v.put(f"{ENG}/prod-root", b"PROD-secret")
        v.put(f"{ENG}/test-root", b"test-secret")
    bob = Insider(vault.path, "bob", vault.clock)
    eid, _ = bob.engagement(ENG)
    bob.sql(
        "UPDATE credentials SET name = 'tmp' WHERE engagement_id = ? AND name = 'prod-root'", (eid,)
    )
    bob.sql(
        "UPDATE credentials SET name = 'prod-root' WHERE engagement_id = ? AND name = 'test-root'",
        (eid,),
    )
    bob.sql(
        "UPDATE credentials SET name = 'test-root' WHERE engagement_id = ? AND name = 'tmp'", (eid,)
    )
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")


def test_edited_system_port_gives_integrity_error(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open() as v:
        v.systems.add(f"{ENG}/web1", "10.0.0.1", port=22, protocol="ssh")
    bob = Insider(vault.path, "bob", vault.clock)
    bob.sql("UPDATE systems SET port = 2222")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.systems.show(f"{ENG}/web1")


# -- property 7: rollback of the whole directory is detected -------------------------------------
def test_rollback_of_the_vault_directory_is_detected(vault: VaultFixture, tmp_path: Path) -> None:
    _setup(vault)
    carol = Insider(vault.path, "carol", vault.clock)
    old = carol.keep_copy(tmp_path / "old-copy")
    with vault.open() as v:
        v.engagements.revoke(ENG, "carol")
        v.put(f"{ENG}/after-revoke", LATER)
    carol.put_back(old)
    with pytest.raises(IntegrityError):
        vault.open().close()


# -- property 8: no legitimate sequence leaves an engagement without a verifiable lead ----------
def test_chain_of_leads_lowering_the_first_is_not_a_lockout(vault: VaultFixture) -> None:
    """Issue 11: alice -> bob -> carol; carol lowered alice; re-signing made a cycle and every
    lead got an integrity error (only the recovery key repaired it). With the signed log
    nothing is re-signed (each link is checked against the state before it), so the
    lowering is simply allowed and every lead keeps working."""
    with vault.open() as v:
        v.engagements.create(ENG, "acme")
        v.put(f"{ENG}/web1-root", b"hunter2")
        v.engagements.grant(ENG, "bob", "lead")
    with vault.open("bob") as v:
        v.engagements.grant(ENG, "carol", "lead")
    with vault.open("carol") as v:
        v.engagements.grant(ENG, "alice", "engineer")
    for member in ("alice", "bob", "carol"):
        with vault.open(member) as v:
            assert v.get(f"{ENG}/web1-root").secret.reveal() == b"hunter2"
    with vault.open("bob") as v:
        v.put(f"{ENG}/after", LATER)
        roles = {g.member: g.role for g in v.engagements.members(ENG)}
    assert roles == {"alice": "engineer", "bob": "lead", "carol": "lead"}
    assert LATER in Insider(vault.path, "alice", vault.clock).readable()


def test_lowering_the_last_lead_by_recovery_is_refused_inside_the_transaction(
    vault: VaultFixture,
) -> None:
    """Requirement 8: no legitimate command leaves an engagement without a lead. The only
    command that could lower the sole lead (recovery) is refused, audited, nothing written."""
    _setup(vault)
    eid = Insider(vault.path, "alice", vault.clock).engagement(ENG)[0]
    before = Insider(vault.path, "alice", vault.clock).sql(
        "SELECT count(*) FROM member_log WHERE engagement_id = ?", (eid,)
    )
    with vault.open() as v, pytest.raises(AccessDenied, match="without a verifiable lead"):
        v.recover(ENG, vault.recovery_key, "alice", "engineer")
    after = Insider(vault.path, "alice", vault.clock).sql(
        "SELECT count(*) FROM member_log WHERE engagement_id = ?", (eid,)
    )
    assert before == after
    with vault.open() as v:
        assert v.engagements.role_of(v.engagements.get(ENG)) is not None
        assert v.get(f"{ENG}/web1-root").secret.reveal() == b"hunter2"
        denied = [e for e in v.audit_entries(action="recover") if e.outcome == "denied"]
    assert denied


def test_last_lead_cannot_revoke_themselves(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open() as v, pytest.raises(Exception) as e:
        v.engagements.revoke(ENG, "alice")
    assert not isinstance(e.value, IntegrityError)
    with vault.open() as v:
        assert v.get(f"{ENG}/web1-root").secret.reveal() == b"hunter2"


# -- property 5: an old key-slot file and the old passphrase open nothing after a change -------
def test_old_slot_file_and_old_passphrase_open_nothing_after_passwd(
    vault: VaultFixture, tmp_path: Path
) -> None:
    """Every backup holds a key-slot file. Someone who learnt bob's old passphrase and has
    one must not get bob's current keys, nor the live database key, after bob changes it
    because the old one may be known (``passwd --compromised``; a plain change keeps the
    key pair, docs/security.md §12)."""
    _setup(vault)
    old = (vault.path / "keyslots.json").read_bytes()
    with vault.open("bob") as v:
        v.members.passwd("bob-new-pass", compromised=True)
    old_slots = KeySlots.from_bytes(old)
    keys = decrypt_private(old_slots.vault_id, old_slots.members["bob"], Secret("bob-pass"))
    live = KeySlots.read(vault.path / "keyslots.json")
    with pytest.raises(IntegrityError):
        live.open_db_key(keys)


# -- property 6: former members cannot mint receipts ---------------------------------------------
def test_removed_member_cannot_mint_a_receipt_the_vault_key_verifies(
    vault: VaultFixture,
) -> None:
    """bob copies the receipt signing key while a member; after ``member rm`` the vault
    signs with a successor bob never saw, and publishes it (``public_key``, the history).
    Neither accepts what bob signs: not against the current key, and not against the
    history, where bob's key is retired (an undated or later-dated receipt is refused)."""
    _setup(vault)
    bob = Insider(vault.path, "bob", vault.clock)
    ((receipt_key,),) = bob.sql("SELECT value FROM meta WHERE key = 'receipt_key'")
    with vault.open() as v:
        v.members.remove("bob")
        current = base64.b64decode(v.public_key)
        history = v.receipt_keys()
    assert p.ed25519_public(bytes(receipt_key)) != current
    body = {"format": "credvault-purge-receipt/1", "engagement": ENG, "reason": "forged"}
    msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    forged = {
        **body,
        "signature": base64.b64encode(p.sign(bytes(receipt_key), labels.RECEIPT_SIG, msg)).decode(),
        "public_key": base64.b64encode(current).decode(),
    }
    with pytest.raises(IntegrityError):
        verify_receipt(forged, current)
    forged["public_key"] = base64.b64encode(p.ed25519_public(bytes(receipt_key))).decode()
    with pytest.raises(IntegrityError):
        verify_receipt(forged, history)
    for when in (iso(vault.clock()), None):  # dated after bob left, or undated
        body2 = {**body, "purged_at": when}
        msg2 = json.dumps(body2, sort_keys=True, separators=(",", ":")).encode()
        sig2 = p.sign(bytes(receipt_key), labels.RECEIPT_SIG, msg2)
        forged2 = {**body2, "signature": base64.b64encode(sig2).decode()}
        forged2["public_key"] = forged["public_key"]
        with pytest.raises(IntegrityError):
            verify_receipt(forged2, history)
