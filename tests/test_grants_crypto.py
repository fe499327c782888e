"""Access to secrets is decided by who holds the engagement key, not only by a check in code.

These tests work below the library's checks: with the database key and direct SQL (what an
insider who is a vault member has), they show that key material a member does not (or no
longer) legitimately hold fails *cryptographically* (HPKE / AEAD), and that sealed copies
forged or moved by direct SQL are refused and never used to encrypt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import AccessDenied, IntegrityError, InvalidInput, NotFound, Vault
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.engagement_keys import recovery_keys
from credvault.engagement_keys import seal_info as _seal_info
from credvault.grants import copy_message as _copy_message
from credvault.keyslots import MemberKeys
from credvault.model import RECOVERY
from credvault.vault import format_recovery, parse_recovery
from insider import bound_columns

REF = "acme-2026/web1-root"
CRED_FIELDS = ("secret", "username", "url", "notes")
SYS_FIELDS = ("address", "details")


# -- helpers --------------------------------------------------------------------------------
def _envelopes(v: Vault, eng_name: str) -> Iterator[tuple[envelope.Place, bytes]]:
    """Every envelope of the engagement, read by direct SQL, with its place (an anchor's
    with its record's binding, docs/format.md §4)."""
    s = v._s
    conn = s.store.conn
    eng = v.engagements.get(eng_name)
    for table, fields, clear in (
        (
            "credentials",
            CRED_FIELDS,
            "t.name, t.kind, (SELECT uid FROM systems s WHERE s.id = t.system_id)",
        ),
        ("systems", SYS_FIELDS, "t.name, t.port, t.protocol"),
    ):
        cols = ", ".join(f"t.{f}_env" for f in fields)
        for row in conn.execute(
            f"SELECT t.uid, {clear}, {cols} FROM {table} t WHERE t.engagement_id = ?",  # noqa: S608
            (eng.id,),
        ).fetchall():
            binding = bound_columns(table, row[1:4])
            for field, blob in zip(fields, row[4:], strict=True):
                if blob is not None:
                    bound = binding if field == fields[0] and bytes(blob)[0] == 2 else ()
                    yield (
                        envelope.Place(s.vault_id, eng.uid, table, bytes(row[0]), field, bound),
                        bytes(blob),
                    )


def _copies(v: Vault, eng_name: str) -> dict[str, tuple[int | None, bytes | None, str | None]]:
    """member -> (key_version, sealed, sealed_by) of every grant row, by direct SQL."""
    eng = v.engagements.get(eng_name)
    return {
        r[0]: (r[1], None if r[2] is None else bytes(r[2]), r[3])
        for r in v._s.store.conn.execute(
            "SELECT member, key_version, sealed, sealed_by FROM grants WHERE engagement_id = ?",
            (eng.id,),
        ).fetchall()
    }


def _member_keys(vault: VaultFixture, member: str) -> MemberKeys:
    with vault.open(member) as v:
        return v._s.keys


def _current_key(v: Vault, eng_name: str) -> bytes:
    """The engagement key as the (reading) member ``v`` holds it."""
    eng = v.engagements.get(eng_name)
    return v.engagements.key(eng, "engagement.key")


def _assert_nothing_opens(v: Vault, eng_name: str, keys: list[bytes]) -> int:
    n = 0
    for place, blob in _envelopes(v, eng_name):
        n += 1
        for k in keys:
            with pytest.raises(IntegrityError):
                envelope.open_(place, blob, k)
    return n


def _assert_all_open(v: Vault, eng_name: str) -> int:
    key = _current_key(v, eng_name)
    n = 0
    for place, blob in _envelopes(v, eng_name):
        envelope.open_(place, blob, key)
        n += 1
    return n


# -- a member without a grant -----------------------------------------------------------------
def test_never_granted_member_opens_no_copy_and_no_envelope(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open() as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
    dave = _member_keys(vault, "dave")
    owners = {m: _member_keys(vault, m) for m in ("alice", "bob", "carol")}
    rec_kem, _ = recovery_keys(parse_recovery(vault.recovery_key)[1])
    with vault.open() as v:
        s = v._s
        eng = v.engagements.get(engagement)
        copies = _copies(v, engagement)
        assert set(copies) == {"alice", "bob", "carol", RECOVERY}
        real_key = _current_key(v, engagement)
        for member, (version, sealed, _by) in copies.items():
            assert sealed is not None
            assert version is not None
            info = _seal_info(s, eng.uid, member, version)
            # The holder (or the recovery key) opens it: the failures below are not vacuous.
            holder = rec_kem if member == RECOVERY else owners[member].kem_private
            assert p.hpke_open(holder, sealed, info) == real_key
            for claimed in (member, "dave"):
                with pytest.raises(IntegrityError):
                    p.hpke_open(dave.kem_private, sealed, _seal_info(s, eng.uid, claimed, version))
        n = _assert_nothing_opens(
            v, engagement, [dave.kem_private, dave.sign_private, p.hkdf(dave.kem_private, b"x")]
        )
        assert n >= 4  # secret, username, address, details
        assert _assert_all_open(v, engagement) == n
    with vault.open("dave") as v:
        with pytest.raises(AccessDenied):
            v.get(REF)
        assert v._s.engagement_keys == {}


# -- a revoked member ---------------------------------------------------------------------------
def test_material_captured_before_revoke_opens_nothing_after(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open("bob") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"
        bob = v._s.keys
        captured = list(v._s.engagement_keys.values())
        assert len(captured) == 1
        old_copy = _copies(v, engagement)["bob"]
    with vault.open() as v:
        before = v.engagements.get(engagement)
        read = v.engagements.revoke(engagement, "bob")
        assert read == ["web1-root"]
        after = v.engagements.get(engagement)
        assert after.key_version == before.key_version + 1
        assert after.key_fp != before.key_fp
        assert after.key_fp != p.fingerprint(captured[0])
        # Written after the revoke, every field filled.
        v.systems.add(f"{engagement}/db1", "10.0.0.2", details="postgres 16")
        v.put(
            f"{engagement}/db-admin",
            b"after-revoke",
            username="pgadmin",
            url="https://db.example",
            notes="rotated",
            system="db1",
        )
        copies = _copies(v, engagement)
        assert copies["bob"] == (None, None, None)  # bob's copy is gone
        s = v._s
        for member, (version, sealed, _by) in copies.items():
            if sealed is None:
                continue
            assert version == after.key_version
            with pytest.raises(IntegrityError):
                p.hpke_open(bob.kem_private, sealed, _seal_info(s, after.uid, member, version))
        # The old copy still opens with bob's key -- to the old key, which opens nothing now.
        assert old_copy[1] is not None
        assert old_copy[0] is not None
        old_key = p.hpke_open(
            bob.kem_private, old_copy[1], _seal_info(s, after.uid, "bob", old_copy[0])
        )
        assert old_key == captured[0]
        keys = [*captured, bob.kem_private, bob.sign_private]
        n = _assert_nothing_opens(v, engagement, keys)
        assert n >= 10
        assert _assert_all_open(v, engagement) == n
        for _place, blob in _envelopes(v, engagement):
            assert envelope.key_version_of(blob) == after.key_version
    with vault.open("bob") as v:
        with pytest.raises(AccessDenied):
            v.get(REF)
        with pytest.raises(AccessDenied):
            v.put(f"{engagement}/x", b"y")


def test_revoke_returns_what_the_member_read(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(f"{engagement}/api", b"tok", kind="token")
        v.put(f"{engagement}/unread", b"zzz")
    with vault.open("bob") as v:
        v.get(REF)
        v.get(REF)
        v.get(f"{engagement}/api")
        with pytest.raises(NotFound):
            v.get(f"{engagement}/missing")
    with vault.open() as v:
        assert v.engagements.revoke(engagement, "bob") == ["api", "web1-root"]
        assert v.engagements.revoke(engagement, "carol") == []
        entries = v.audit_entries(engagement=engagement, action="revoke")
        assert [(e.item, e.outcome) for e in entries] == [("bob", "ok"), ("carol", "ok")]
        assert "2 credentials" in entries[0].detail
        # Revoking again: no such live grant.
        with pytest.raises(NotFound):
            v.engagements.revoke(engagement, "bob")


def test_revoke_via_cli_lists_reads(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    assert cli_vault("put", "acme-2026/db", input=b"pw\n").code == 0
    assert cli_vault("grant", "acme-2026", "bob", "reader").code == 0
    r = cli_vault("get", "acme-2026/db", env=bob)
    assert (r.code, r.out) == (0, b"pw\n")
    r = cli_vault("revoke", "acme-2026", "bob", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {
        "engagement": "acme-2026",
        "member": "bob",
        "credentials_read": ["db"],
        "records_viewed": [],
    }
    r = cli_vault("get", "acme-2026/db", env=bob)
    assert r.code == 4, r.err
    assert r.out == b""


def test_rotate_changes_version_and_fingerprint(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        before = v.engagements.get(engagement)
        old = _current_key(v, engagement)
        assert p.fingerprint(old) == before.key_fp
        assert v.engagements.rotate(engagement) == before.key_version + 1
        after = v.engagements.get(engagement)
        assert after.key_version == before.key_version + 1
        assert after.key_fp != before.key_fp
        assert p.fingerprint(_current_key(v, engagement)) == after.key_fp
        n = _assert_nothing_opens(v, engagement, [old])
        assert _assert_all_open(v, engagement) == n
        assert {c[0] for c in _copies(v, engagement).values()} == {after.key_version}
        rot = v.audit_entries(engagement=engagement, action="rotate")
        assert rot[-1].outcome == "ok"
        assert after.key_fp in rot[-1].detail
    for member in ("bob", "carol"):
        with vault.open(member) as v:
            assert v.get(REF).secret.reveal() == b"hunter2"
            with pytest.raises(AccessDenied):
                v.engagements.rotate(engagement)


# -- forged and moved copies --------------------------------------------------------------------
def _set_copy(
    v: Vault, eng_id: int, member: str, copy: tuple[bytes, bytes | None, str, int]
) -> None:
    sealed, sig, by, version = copy
    v._s.store.conn.execute(
        "UPDATE grants SET sealed = ?, copy_sig = ?, sealed_by = ?, key_version = ? "
        "WHERE engagement_id = ? AND member = ?",
        (sealed, sig, by, version, eng_id, member),
    )


def _get_copy(v: Vault, eng_id: int, member: str) -> tuple[bytes, bytes | None, str, int]:
    """(sealed, copy signature, sealer, version); no signature on copies the membership log
    vouches for (the log commits to the key's fingerprint instead)."""
    row = v._s.store.conn.execute(
        "SELECT sealed, copy_sig, sealed_by, key_version FROM grants "
        "WHERE engagement_id = ? AND member = ?",
        (eng_id, member),
    ).fetchone()
    return bytes(row[0]), None if row[1] is None else bytes(row[1]), row[2], int(row[3])


@pytest.mark.parametrize("attacker", ["carol", "dave"])
def test_forged_copy_of_attacker_key_is_refused_and_never_used(
    vault: VaultFixture, engagement: str, attacker: str
) -> None:
    """carol (a reader) or dave (no grant), both holding the database key, seal a key of
    their choosing to bob (an engineer) with only bob's public key, and write it in."""
    with vault.open() as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
    attacker_keys: list[bytes] = []
    variants = [
        (by, sig, fp)
        for by, sig in (("self", "own"), ("alice", "own"), ("alice", "garbage"), ("bob", "own"))
        for fp in (True, False)
    ]
    for sealed_by, sig_kind, tamper_fp in variants:
        with vault.open(attacker) as v:
            s = v._s
            eng = v.engagements.get(engagement)
            original = _get_copy(v, eng.id, "bob")
            original_fp = eng.key_fp
            k_attack = p.random_key()
            attacker_keys.append(k_attack)
            by = attacker if sealed_by == "self" else sealed_by
            sealed = p.hpke_seal(
                s.slots.members["bob"].kem_pub,
                k_attack,
                _seal_info(s, eng.uid, "bob", eng.key_version),
            )
            sig = (
                p.sign(
                    s.keys.sign_private,
                    labels.GRANT_SIG,
                    _copy_message(s, eng, "bob", eng.key_version, sealed, k_attack, by),
                )
                if sig_kind == "own"
                else os.urandom(64)
            )
            _set_copy(v, eng.id, "bob", (sealed, sig, by, eng.key_version))
            if tamper_fp:
                s.store.conn.execute(
                    "UPDATE engagements SET key_fp = ? WHERE id = ?",
                    (p.fingerprint(k_attack), eng.id),
                )
        with vault.open("bob") as v:
            with pytest.raises((IntegrityError, AccessDenied)):
                v.get(REF)
            with pytest.raises((IntegrityError, AccessDenied)):
                v.put(f"{engagement}/planted", b"written-after-the-forgery", username="u")
            with pytest.raises((IntegrityError, AccessDenied)):
                v.systems.add(f"{engagement}/planted", "10.9.9.9", details="d")
            # Nothing exists that the attacker's key opens; nothing was added.
            _assert_nothing_opens(v, engagement, attacker_keys)
            assert [c.name for c in v.credentials.list(engagement)] == ["web1-root"]
        with vault.open(attacker) as v:  # undo, to try the next variant on a sound vault
            _set_copy(v, eng.id, "bob", original)
            v._s.store.conn.execute(
                "UPDATE engagements SET key_fp = ? WHERE id = ?", (original_fp, eng.id)
            )
    for member in ("alice", "bob", "carol"):
        with vault.open(member) as v:
            assert v.get(REF).secret.reveal() == b"hunter2"
            assert v.get(REF).address == "10.0.0.1"
    with vault.open() as v:
        n = _assert_nothing_opens(v, engagement, attacker_keys)
        assert _assert_all_open(v, engagement) == n
        assert v.integrity_check() == []
        v.audit_verify()


def test_copy_sealed_with_another_context_is_refused(vault: VaultFixture, engagement: str) -> None:
    """Copies of the *real* key, correctly signed by the lead, but sealed with the HPKE
    ``info`` of another engagement, member or version, or moved from another row."""
    with vault.open() as v:
        v.engagements.create("other-2026", "other")
        v.engagements.grant("other-2026", "bob", "engineer")
        v.credentials.put("other-2026/x", b"other-secret")
    bob = _member_keys(vault, "bob")
    with vault.open() as v:
        s = v._s
        eng = v.engagements.get(engagement)
        other = v.engagements.get("other-2026")
        key = _current_key(v, engagement)
        ver = eng.key_version
        original = _get_copy(v, eng.id, "bob")
        bob_pub = s.slots.members["bob"].kem_pub
        carol_pub = s.slots.members["carol"].kem_pub
        forged: dict[str, tuple[bytes, bytes | None, str, int]] = {}
        for what, pub, info in (
            ("other engagement", bob_pub, _seal_info(s, other.uid, "bob", ver)),
            ("other member", bob_pub, _seal_info(s, eng.uid, "carol", ver)),
            ("other version", bob_pub, _seal_info(s, eng.uid, "bob", ver + 1)),
            ("other vault", bob_pub, _seal_info_vault(os.urandom(16), eng.uid, "bob", ver)),
            ("carol's key", carol_pub, _seal_info(s, eng.uid, "bob", ver)),
        ):
            sealed = p.hpke_seal(pub, key, info)
            sig = p.sign(
                s.keys.sign_private,
                labels.GRANT_SIG,
                _copy_message(s, eng, "bob", ver, sealed, key, "alice"),
            )
            forged[what] = (sealed, sig, "alice", ver)
            # The cryptographic failure itself:
            with pytest.raises(IntegrityError):
                p.hpke_open(bob.kem_private, sealed, _seal_info(s, eng.uid, "bob", ver))
        forged["moved from carol's row"] = _get_copy(v, eng.id, "carol")
        forged["moved from another engagement"] = _get_copy(v, other.id, "bob")
        forged["moved from the recovery row"] = _get_copy(v, eng.id, RECOVERY)
    for what, copy in forged.items():
        with vault.open() as v:
            _set_copy(v, eng.id, "bob", copy)
        with vault.open("bob") as v:
            with pytest.raises(IntegrityError):
                v.get(REF)
            with pytest.raises(IntegrityError):
                v.put(f"{engagement}/planted", b"x")
            assert [c.name for c in v.credentials.list(engagement)] == ["web1-root"], what
    with vault.open() as v:
        _set_copy(v, eng.id, "bob", original)
    with vault.open("bob") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"


def _seal_info_vault(vault_id: bytes, eng_uid: bytes, member: str, version: int) -> bytes:
    return labels.encode(labels.SEAL_ENGAGEMENT_KEY, vault_id, eng_uid, member, version)


def test_recovery_copy_with_wrong_context_is_refused(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        s = v._s
        eng = v.engagements.get(engagement)
        key = _current_key(v, engagement)
        sealed = p.hpke_seal(
            s.slots.recovery.kem_pub, key, _seal_info(s, eng.uid, "alice", eng.key_version)
        )
        sig = p.sign(
            s.keys.sign_private,
            labels.GRANT_SIG,
            _copy_message(s, eng, RECOVERY, eng.key_version, sealed, key, "alice"),
        )
        original = _get_copy(v, eng.id, RECOVERY)
        _set_copy(v, eng.id, RECOVERY, (sealed, sig, "alice", eng.key_version))
        with pytest.raises(IntegrityError):
            v.recover(engagement, vault.recovery_key, "carol", "lead")
        _set_copy(v, eng.id, RECOVERY, original)
        v.recover(engagement, vault.recovery_key, "carol", "lead")
        assert {g.member: g.role for g in v.engagements.members(engagement)}["carol"] == "lead"


# -- recovery ------------------------------------------------------------------------------------
def test_recovery_restores_access_after_every_member_left(vault: VaultFixture) -> None:
    """Every holder removed from the vault; the copies were last sealed by the lead (now a
    former member): the recovery key gives access back."""
    eng = "acme-2026"
    with vault.open() as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
        v.engagements.create(eng, "acme", lead="bob")
    with vault.open("bob") as v:
        v.systems.add(f"{eng}/web1", "10.0.0.1", details="debian")
        v.put(REF, b"hunter2", system="web1")
        v.engagements.grant(eng, "carol", "reader")
        v.engagements.grant(eng, "dave", "engineer")
        v.engagements.revoke(eng, "dave")  # a rotation: the copies are now sealed by bob
    with vault.open("carol") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"
    with vault.open() as v:
        for member in ("bob", "carol", "dave"):
            v.members.remove(member)
        v.members.add("erin", passphrase=b"erin-pass")
        assert v.engagements.members(eng) == []
        with pytest.raises(AccessDenied):
            v.get(REF)
        v.recover(eng, vault.recovery_key, "erin", "lead")
        assert {g.member: (g.role, g.granted_by) for g in v.engagements.members(eng)} == {
            "erin": ("lead", RECOVERY)
        }
        with pytest.raises(AccessDenied):
            v.get(REF)  # recovery granted erin, not the admin
        rec = v.audit_entries(engagement=eng, action="recover")
        assert [(e.member, e.item, e.outcome) for e in rec] == [("alice", "erin", "ok")]
    with Vault.open(vault.path, "erin", "erin-pass", kdf=KDF, clock=vault.clock) as v:
        c = v.get(REF)
        assert c.secret.reveal() == b"hunter2"
        assert c.address == "10.0.0.1"
        v.put(f"{eng}/new", b"after-recovery")
        v.engagements.grant(eng, "alice", "reader")
    with vault.open() as v:
        assert v.get(f"{eng}/new").secret.reveal() == b"after-recovery"
        assert v.audit_verify() > 0


def test_recovery_restores_access_after_grants_were_revoked(vault: VaultFixture) -> None:
    """Holders revoked (still vault members) by a lead who stays: recovery works."""
    eng = "acme-2026"
    with vault.open() as v:
        v.engagements.create(eng, "acme")
        v.engagements.grant(eng, "bob", "lead")
        v.engagements.grant(eng, "carol", "engineer")
        v.put(REF, b"hunter2")
    with vault.open("bob") as v:
        v.engagements.revoke(eng, "carol")
        v.engagements.revoke(eng, "alice")  # copies sealed by bob, who stays lead
    with vault.open() as v:
        with pytest.raises(AccessDenied):
            v.get(REF)
        v.recover(eng, vault.recovery_key, "carol", "engineer")
    with vault.open("carol") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"


def test_the_last_lead_cannot_revoke_themselves_and_recovery_still_works(
    vault: VaultFixture,
) -> None:
    """A lead revoking themselves would leave every key copy under a lapsed seal: refused.
    (Found as a lock-out: the engagement could then not even be recovered.)"""
    eng = "acme-2026"
    with vault.open() as v:
        v.engagements.create(eng, "acme", lead="bob")
    with vault.open("bob") as v:
        v.put(REF, b"hunter2")
        v.engagements.grant(eng, "carol", "reader")
        v.engagements.revoke(eng, "carol")
        with pytest.raises(AccessDenied):
            v.engagements.revoke(eng, "bob")
    with vault.open() as v:
        v.members.remove("bob")  # the way a last lead leaves
        v.recover(eng, vault.recovery_key, "carol", "lead")
    with vault.open("carol") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"


def test_wrong_recovery_key_is_refused(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    vid, _seed = parse_recovery(vault.recovery_key)
    same_vault_wrong_seed = format_recovery(vid, os.urandom(32))
    other = Vault.init(tmp_path / "other", "zed", "zed-pass", kdf=KDF)
    assert other.recovery_key is not None
    with vault.open() as v:
        with pytest.raises(AccessDenied):
            v.recover(engagement, same_vault_wrong_seed, "carol", "lead")
        with pytest.raises(InvalidInput):
            v.recover(engagement, other.recovery_key, "carol", "lead")
        for garbage in ("", "CREDVAULT-RECOVERY-1:zz:zz", vault.recovery_key[:-4]):
            with pytest.raises(InvalidInput):
                v.recover(engagement, garbage, "carol", "lead")
        roles = {g.member: g.role for g in v.engagements.members(engagement)}
        assert roles["carol"] == "reader"
        denied = [e for e in v.audit_entries(action="recover") if e.outcome == "denied"]
        assert len(denied) == 1
        assert not [e for e in v.audit_entries(action="recover") if e.outcome == "ok"]
    # The right key, but not an admin.
    with vault.open("carol") as v, pytest.raises(AccessDenied):
        v.recover(engagement, vault.recovery_key, "carol", "lead")
    with vault.open() as v:
        roles = {g.member: g.role for g in v.engagements.members(engagement)}
        assert roles["carol"] == "reader"


def test_recover_via_cli(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    recovery_file = cli_env["CREDVAULT_VAULT"] + ".recovery"
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    assert cli_vault("put", "acme-2026/db", input=b"pw\n").code == 0
    assert cli_vault("grant", "acme-2026", "bob", "lead").code == 0
    r = cli_vault("revoke", "acme-2026", "alice", env=bob)
    assert r.code == 0, r.err
    r = cli_vault("get", "acme-2026/db")
    assert r.code == 4, r.err
    base = ("recover", "acme-2026", "--recovery-file", recovery_file, "--grant-to", "alice")
    r = cli_vault(*base, "--role", "boss")
    assert r.code == 2, r.err
    r = cli_vault(*base, "--role", "reader", env=bob)  # bob is no admin
    assert r.code == 4, r.err
    r = cli_vault(*base, "--role", "reader")
    assert r.code == 0, r.err
    r = cli_vault("get", "acme-2026/db")
    assert (r.code, r.out) == (0, b"pw\n")
    r = cli_vault("audit", "--action", "recover", "--json")
    assert r.code == 0, r.err
    got = [(e["member"], e["item"], e["outcome"]) for e in json.loads(r.out)]
    assert ("alice", "alice", "ok") in got


# -- a former lead's signature --------------------------------------------------
@pytest.mark.parametrize(
    "how",
    ["revoked", "revoked, rotation flag set"],
)
def test_former_lead_cannot_plant_a_key(vault: VaultFixture, how: str) -> None:
    """A lead who lost the role but stays a vault member (so holds the database key) seals a
    key of their choosing to carol, signs it, and sets the engagement's fingerprint (and,
    since it is just a column, its rotation flag) to match. carol must refuse it."""
    eng = "acme-2026"
    with vault.open() as v:
        v.engagements.create(eng, "acme")
        v.engagements.grant(eng, "bob", "lead")
        v.engagements.grant(eng, "carol", "engineer")
        v.put(REF, b"hunter2")
    with vault.open("bob") as v:
        v.engagements.rotate(eng)  # every copy is now sealed by bob
    with vault.open() as v:
        v.engagements.revoke(eng, "bob")
    k_attack = p.random_key()
    with vault.open("bob") as v:
        s = v._s
        e = v.engagements.get(eng)
        assert v.engagements.role_of(e) is None
        sealed = p.hpke_seal(
            s.slots.members["carol"].kem_pub, k_attack, _seal_info(s, e.uid, "carol", e.key_version)
        )
        sig = p.sign(
            s.keys.sign_private,
            labels.GRANT_SIG,
            _copy_message(s, e, "carol", e.key_version, sealed, k_attack, "bob"),
        )
        _set_copy(v, e.id, "carol", (sealed, sig, "bob", e.key_version))
        s.store.conn.execute(
            "UPDATE engagements SET key_fp = ? WHERE id = ?", (p.fingerprint(k_attack), e.id)
        )
        if how == "revoked, rotation flag set":
            s.store.conn.execute("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (e.id,))
    with vault.open("carol") as v:
        with pytest.raises((IntegrityError, AccessDenied)):
            v.get(REF)
        with pytest.raises((IntegrityError, AccessDenied)):
            v.put(f"{eng}/written-later", b"new-client-password")
    with vault.open() as v:
        _assert_nothing_opens(v, eng, [k_attack])


def test_recover_lowering_a_reader_to_auditor_rotates(vault: VaultFixture, engagement: str) -> None:
    with vault.open("carol") as v:
        v.get(REF)
        carol_keys = list(v._s.engagement_keys.values())
    with vault.open() as v:
        before = v.engagements.get(engagement)
        v.recover(engagement, vault.recovery_key, "carol", "auditor")
        assert {g.member: g.role for g in v.engagements.members(engagement)}["carol"] == "auditor"
        v.put(f"{engagement}/later", b"written-after-the-downgrade")
        assert v.engagements.get(engagement).key_version > before.key_version
        _assert_nothing_opens(v, engagement, carol_keys)
