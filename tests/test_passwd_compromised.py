"""``passwd --compromised`` (issue 11, property 5): after it, the old passphrase with an old
key-slot file (every backup holds one) opens nothing in the live vault.

Written as whoever learnt bob's old passphrase and kept an old ``keyslots.json`` (and, worst
case, a current member's database key as well): they get bob's *old* key pair, whose slot's
database key no longer opens ``vault.db``, which the live key-slot file no longer accepts,
which opens no key copy in the live database, and whose signatures the vault no longer
trusts. Also: what a plain ``passwd`` does *not* protect (the same key pair), crash
safety, and the CLI as a subprocess.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import sqlcipher3

from conftest import KDF, KDF_ARG, PASSWORDS, CliRunner, VaultFixture
from credvault import IntegrityError, Vault, WrongPassphrase, rekey
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.keyslots import KeySlots, MemberKeys, decrypt_private
from credvault.secret import Secret
from insider import Insider

ACME, BOBS = "acme-2026", "bobs-2026"
NEW = "bob-new-pass"


def _setup(vault: VaultFixture) -> None:
    """acme-2026: alice leads, bob engineer, carol reader. bobs-2026: bob leads (made by
    alice for him), bob granted carol reader and wrote a secret."""
    with vault.open() as v:
        v.engagements.create(ACME, "acme")
        v.engagements.grant(ACME, "bob", "engineer")
        v.engagements.grant(ACME, "carol", "reader")
        v.put(f"{ACME}/web1-root", b"hunter2")
        v.engagements.create(BOBS, "bobco", lead="bob")
    with vault.open("bob") as v:
        v.engagements.grant(BOBS, "carol", "reader")
        v.put(f"{BOBS}/db", b"bob-secret")


def _old_keys(old_slots: bytes, member: str = "bob") -> tuple[MemberKeys, bytes]:
    """What the old key-slot file and the old passphrase give: keys and database key."""
    slots = KeySlots.from_bytes(old_slots)
    keys = decrypt_private(slots.vault_id, slots.members[member], Secret(PASSWORDS[member]))
    return keys, slots.open_db_key(keys)


def _copies_opened(insider: Insider, keys: MemberKeys) -> list[tuple[str, int]]:
    """Every key copy in the live database that ``keys`` open, whoever it is addressed to."""
    out = []
    for name, uid, member, version, sealed in insider.sql(
        "SELECT e.name, e.uid, g.member, g.key_version, g.sealed FROM grants g "
        "JOIN engagements e ON e.id = g.engagement_id WHERE g.sealed IS NOT NULL"
    ):
        info = labels.encode(
            labels.SEAL_ENGAGEMENT_KEY, insider.vault_id, bytes(uid), member, int(version)
        )
        with contextlib.suppress(IntegrityError):
            p.hpke_open(keys.kem_private, bytes(sealed), info)
            out.append((str(name), int(version)))
    return out


def _versions(insider: Insider) -> dict[str, int]:
    return {str(n): int(v) for n, v in insider.sql("SELECT name, key_version FROM engagements")}


def test_plain_passwd_keeps_the_key_pair_as_documented(vault: VaultFixture) -> None:
    """The documented limit of a plain change: the old file and passphrase still give the
    member's current keys and the live database key (this is what --compromised is for)."""
    _setup(vault)
    old = (vault.path / "keyslots.json").read_bytes()
    with vault.open("bob") as v:
        assert not v.members.passwd(NEW).compromised
    keys, db_key = _old_keys(old)
    live = KeySlots.read(vault.path / "keyslots.json")
    assert live.open_db_key(keys) == db_key


def test_old_passphrase_and_old_slot_file_open_nothing_after_compromised_passwd(
    vault: VaultFixture,
) -> None:
    _setup(vault)
    old = (vault.path / "keyslots.json").read_bytes()
    alice = Insider(vault.path, "alice", vault.clock)  # worst case: a live database key too
    keys, old_db_key = _old_keys(old)
    assert _copies_opened(alice, keys)  # before: bob's keys open his copies
    before = _versions(alice)
    with vault.open("bob") as v:
        r = v.members.passwd(NEW, compromised=True)
    assert r.compromised
    assert r.rotated == [BOBS]
    assert r.pending == [ACME]
    assert r.resigned >= 2  # carol's role certificate and copies bob sealed
    # 1. the old slot's database key opens nothing live
    conn = sqlcipher3.connect(str(vault.path / "vault.db"))
    conn.execute(f"PRAGMA key = \"x'{old_db_key.hex()}'\"")
    with pytest.raises(sqlcipher3.DatabaseError):
        conn.execute("SELECT count(*) FROM meta").fetchall()
    conn.close()
    # 2. the live key-slot file gives the old keys nothing
    live = KeySlots.read(vault.path / "keyslots.json")
    with pytest.raises(IntegrityError):
        live.open_db_key(keys)
    assert live.open_pending_db_key(keys) is None
    # 3. no key copy in the live database opens with them, at any version (carol's SQL
    # shell: opening as alice, acme's lead, would finish acme's rotation first)
    carol = Insider(vault.path, "carol", vault.clock)
    assert _copies_opened(carol, keys) == []
    after = _versions(carol)
    assert after[ACME] == before[ACME]  # waits for its lead
    assert after[BOBS] == before[BOBS] + 1  # rotated at once (bob leads it)
    # 4. the old signing key is trusted for nothing: not live, not retired
    assert live.members["bob"].sign_pub != p.ed25519_public(keys.sign_private)
    assert live.retired.get("bob", ()) == ()
    # the old passphrase is refused, the new one works
    with pytest.raises(WrongPassphrase):
        Vault.open(vault.path, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock)
    with Vault.open(vault.path, "bob", NEW, kdf=KDF, clock=vault.clock) as v:
        assert v.get(f"{BOBS}/db").secret.reveal() == b"bob-secret"
        # acme (membership log): the succeed link pinned bob's new keys and his copy of the
        # current key was sealed again to them; the log demands the rotation a lead makes.
        assert v.get(f"{ACME}/web1-root").secret.reveal() == b"hunter2"
    with vault.open("carol") as v:  # bob's grant and copy re-signed by his new key
        assert v.get(f"{BOBS}/db").secret.reveal() == b"bob-secret"
        assert v.get(f"{ACME}/web1-root").secret.reveal() == b"hunter2"
    with vault.open() as v:  # alice's next command rotates acme, sealing bob's new keys
        v.engagements.list()
        v.get(f"{ACME}/web1-root")
        report = v.check()
        entries = v.audit.entries(action="passwd")
    assert report.ok, report.problems
    assert "compromised" in entries[-1].detail
    assert _versions(carol)[ACME] == before[ACME] + 1
    assert _copies_opened(Insider(vault.path, "alice", vault.clock), keys) == []
    with Vault.open(vault.path, "bob", NEW, kdf=KDF, clock=vault.clock) as v:
        assert v.get(f"{ACME}/web1-root").secret.reveal() == b"hunter2"


def test_an_admins_compromised_passwd_keeps_what_they_made_valid(vault: VaultFixture) -> None:
    """alice created both engagements (creation records signed by her old key) and leads
    acme: after her change the records are re-signed, acme rotated, and everyone reads."""
    _setup(vault)
    old = (vault.path / "keyslots.json").read_bytes()
    with vault.open() as v:
        r = v.members.passwd("alice-new", compromised=True)
    assert r.rotated == [ACME]
    keys, _ = _old_keys(old, "alice")
    live = KeySlots.read(vault.path / "keyslots.json")
    assert live.members["alice"].succession == ()  # certified by the admin key itself
    with pytest.raises(IntegrityError):
        live.open_db_key(keys)
    assert _copies_opened(Insider(vault.path, "bob", vault.clock), keys) == []
    for member in ("bob", "carol"):
        with vault.open(member) as v:
            assert v.get(f"{ACME}/web1-root").secret.reveal() == b"hunter2"
            assert member == "bob" or v.get(f"{BOBS}/db").secret.reveal() == b"bob-secret"
    with Vault.open(vault.path, "alice", "alice-new", kdf=KDF, clock=vault.clock) as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"])  # still admin
        assert v.check().ok


def test_a_succession_cannot_make_a_member_admin(vault: VaultFixture) -> None:
    """bob's new keys are certified by his old ones; the flags are inside every signed
    message, so flipping ``admin`` (or swapping the first, admin-certified keys) in the
    file breaks the chain."""
    _setup(vault)
    with vault.open("bob") as v:
        v.members.passwd(NEW, compromised=True)
    slots = KeySlots.read(vault.path / "keyslots.json")
    bob = slots.members["bob"]
    assert len(bob.succession) == 1
    bob.verify_cert(slots.vault_id, slots.admin_sign_pub)
    with pytest.raises(IntegrityError):
        bob._replace(admin=True).verify_cert(slots.vault_id, slots.admin_sign_pub)
    _, attacker = p.ed25519_generate()
    kem, _, cert = bob.succession[0]
    with pytest.raises(IntegrityError):
        bob._replace(succession=((kem, attacker, cert),)).verify_cert(
            slots.vault_id, slots.admin_sign_pub
        )
    with pytest.raises(IntegrityError):
        bob._replace(succession=()).verify_cert(slots.vault_id, slots.admin_sign_pub)
    # and the file round-trips with the succession in it
    assert KeySlots.from_bytes(slots.to_bytes()).members["bob"] == bob


def test_a_crash_after_the_commit_is_finished_by_the_next_open(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(vault)
    old = (vault.path / "keyslots.json").read_bytes()
    _, old_db_key = _old_keys(old)

    def crash(*_: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(rekey, "finish", crash)
    with vault.open("bob") as v, pytest.raises(RuntimeError):
        v.members.passwd(NEW, compromised=True)
    monkeypatch.undo()
    with pytest.raises(WrongPassphrase):
        Vault.open(vault.path, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock)
    with Vault.open(vault.path, "bob", NEW, kdf=KDF, clock=vault.clock) as v:
        assert v.get(f"{BOBS}/db").secret.reveal() == b"bob-secret"
        assert len(v.receipt_keys().keys) == 2
    conn = sqlcipher3.connect(str(vault.path / "vault.db"))
    conn.execute(f"PRAGMA key = \"x'{old_db_key.hex()}'\"")
    with pytest.raises(sqlcipher3.DatabaseError):
        conn.execute("SELECT count(*) FROM meta").fetchall()
    conn.close()


@pytest.mark.cli
def test_cli_passwd_compromised(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    vault = Path(cli_env["CREDVAULT_VAULT"])
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    assert cli("grant", "acme-2026", "bob", "engineer").code == 0
    old_slots = (vault / "keyslots.json").read_bytes()
    inode = (vault / "vault.db").stat().st_ino
    new = tmp_path / "bob-new.pass"
    new.write_text(NEW + "\n")
    new.chmod(0o600)
    r = cli("passwd", "--compromised", "--passphrase-file", str(new), "--kdf", KDF_ARG, env=bob)
    assert r.code == 0, r.err
    out = r.out.decode()
    assert "new keys" in out
    assert "acme-2026" in out  # awaits its lead's rotation
    assert NEW not in out + r.err
    assert (vault / "vault.db").stat().st_ino != inode  # re-keyed: a new file
    assert (vault / "keyslots.json").read_bytes() != old_slots
    assert cli("ls", env=bob).code == 5  # the old passphrase
    bob_new = {**bob, "CREDVAULT_PASSPHRASE_FILE": str(new)}
    assert cli("ls", env=bob_new).code == 0
    assert cli("audit", "verify").code == 0
    entries = json.loads(cli("audit", "--action", "passwd", "--json").out)
    assert "compromised" in entries[-1]["detail"]
    # a plain change still prints what it always did
    again = tmp_path / "again.pass"
    again.write_text("bob-third\n")
    r = cli("passwd", "--passphrase-file", str(again), "--kdf", KDF_ARG, env=bob_new)
    assert r.code == 0, r.err
    assert r.out.decode() == "passphrase changed\n"


def test_a_tampered_copy_of_a_led_engagement_does_not_block_the_change(
    vault: VaultFixture,
) -> None:
    """An insider spoils bob's own copy of bobs-2026 (which he leads): the change still
    goes through, and that engagement waits for a rotation instead of being rotated."""
    _setup(vault)
    carol = Insider(vault.path, "carol", vault.clock)
    carol.sql(
        "UPDATE grants SET sealed = zeroblob(80) WHERE member = 'bob' AND engagement_id = "
        "(SELECT id FROM engagements WHERE name = ?)",
        (BOBS,),
    )
    with vault.open("bob") as v:
        r = v.members.passwd(NEW, compromised=True)
    assert r.rotated == []
    assert sorted(r.pending) == [ACME, BOBS]
    keys, _ = _old_keys_after(vault)
    assert keys is None  # the old passphrase no longer opens anything
    with Vault.open(vault.path, "bob", NEW, kdf=KDF, clock=vault.clock) as v:
        assert v.members.list()  # bob opens with the new passphrase
    with vault.open() as v:
        assert v.check().ok


def _old_keys_after(vault: VaultFixture) -> tuple[MemberKeys | None, None]:
    try:
        Vault.open(vault.path, "bob", PASSWORDS["bob"], kdf=KDF, clock=vault.clock).close()
    except WrongPassphrase:
        return None, None
    raise AssertionError("the old passphrase still opens the vault")


def test_the_agent_drops_the_old_keys(vault: VaultFixture) -> None:
    """An agent holding bob's old keys must not keep serving them after the change."""
    from credvault.agent.server import Agent
    from test_agent import Tick, add, out, run

    _setup(vault)
    agent = Agent(clock=Tick())
    add(agent, vault, "bob")
    assert out(run(agent, vault, "bob", "get", f"{BOBS}/db")) == b"bob-secret\n"
    with vault.open("bob") as v:
        v.members.passwd(NEW, compromised=True)
    assert run(agent, vault, "bob", "get", f"{BOBS}/db")["error"] == "fallback"
    assert agent.entries == {}
