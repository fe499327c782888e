"""The key-slot file (spec §4.2): a MAC keyed from the database key over everything, member
keys certified by the admin signing key (so an insider who holds the database key and can
recompute the MAC still cannot swap a member's public key), strict parsing, a format
version, and atomic replacement."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, Clock, VaultFixture
from credvault import Vault
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, NotAVault, UnsupportedFormat
from credvault.files import atomic_write
from credvault.keyslots import KeySlots

SLOTS = "keyslots.json"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """conftest's ``vault`` (alice admin, bob, carol), built once and copied per test."""
    path = tmp_path_factory.mktemp("template") / "vault"
    clock = Clock()
    res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    assert res.recovery_key is not None
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
    return path, res.recovery_key


@pytest.fixture
def vault(template: tuple[Path, str], tmp_path: Path) -> VaultFixture:
    shutil.copytree(template[0], tmp_path / "vault")
    return VaultFixture(tmp_path / "vault", Clock(), template[1])


def _read(path: Path) -> Json:
    d: Json = json.loads((path / SLOTS).read_text())
    return d


def _write(path: Path, d: Json) -> None:
    (path / SLOTS).write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")


def _reseal(path: Path, d: Json, db_key: bytes) -> None:
    """What an insider holding the database key can do: edit, recompute the MAC, and record
    the edited version in the database as the one in force (so the certificates must stop it)."""
    import sqlcipher3

    slots = KeySlots.from_bytes(json.dumps(d).encode()).sealed_with(db_key)
    slots.write(path / SLOTS)
    conn = sqlcipher3.connect(str(path / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'keyslots_digest'", (slots.membership_digest(),)
        )
        conn.commit()
    finally:
        conn.close()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _db_key(vault: VaultFixture, member: str = "alice") -> bytes:
    with vault.open(member) as v:
        return bytes(v._s.db_key)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


# -- the MAC ---------------------------------------------------------------------------------
def _new_kem(d: Json) -> None:
    d["members"]["bob"]["kem"] = _b64(p.x25519_generate()[1])


def _new_sign(d: Json) -> None:
    d["members"]["bob"]["sign"] = _b64(p.ed25519_generate()[1])


def _make_admin(d: Json) -> None:
    d["members"]["bob"]["admin"] = True


def _make_service(d: Json) -> None:
    d["members"]["carol"]["service"] = True


def _generation(d: Json) -> None:
    d["generation"] += 1


def _add_member(d: Json) -> None:
    d["members"]["mallory"] = copy.deepcopy(d["members"]["bob"])


def _drop_member(d: Json) -> None:
    del d["members"]["carol"]


def _receipt_key(d: Json) -> None:
    d["receipt_pub"] = _b64(p.ed25519_generate()[1])


def _recovery_key(d: Json) -> None:
    d["recovery"]["kem"] = _b64(p.x25519_generate()[1])


def _created(d: Json) -> None:
    d["members"]["bob"]["created"] = "2001-01-01T00:00:00.000000Z"


def _swap_db_slots(d: Json) -> None:
    m = d["members"]
    m["bob"]["db_key"], m["carol"]["db_key"] = m["carol"]["db_key"], m["bob"]["db_key"]


def _retire(d: Json) -> None:
    d["retired"]["mallory"] = {
        "sign": d["members"]["bob"]["sign"],
        "cert": d["members"]["bob"]["cert"],
    }


def _pending(d: Json) -> None:
    d["pending"] = {"alice": d["members"]["alice"]["db_key"]}


def _bob_kdf(d: Json) -> None:
    d["members"]["bob"]["kdf"]["t"] += 1


def _mac(d: Json) -> None:
    mac = bytearray(base64.b64decode(d["mac"]))
    mac[0] ^= 1
    d["mac"] = _b64(bytes(mac))


EDITS: list[Callable[[Json], None]] = [
    _new_kem,
    _new_sign,
    _make_admin,
    _make_service,
    _generation,
    _add_member,
    _drop_member,
    _receipt_key,
    _recovery_key,
    _created,
    _swap_db_slots,
    _retire,
    _pending,
    _bob_kdf,
    _mac,
]


@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__.strip("_"))
def test_mac_detects_edits(vault: VaultFixture, edit: Callable[[Json], None]) -> None:
    d = _read(vault.path)
    edit(d)
    _write(vault.path, d)
    before = _snapshot(vault.path)
    with pytest.raises(IntegrityError):
        vault.open("alice")
    assert _snapshot(vault.path) == before  # nothing repaired, nothing rewritten


def test_reformatting_alone_is_not_an_edit(vault: VaultFixture) -> None:
    d = _read(vault.path)
    (vault.path / SLOTS).write_text(json.dumps(d, separators=(",", ":")))
    with vault.open("alice") as v:
        assert v.member == "alice"


@pytest.mark.parametrize("version", [0, -1])
def test_mac_detects_edited_version(vault: VaultFixture, version: int) -> None:
    d = _read(vault.path)
    d["version"] = version
    _write(vault.path, d)
    with pytest.raises(IntegrityError):
        vault.open("alice")


# -- certificates against an insider holding the database key -------------------------------
def test_swapped_public_key_with_recomputed_mac_is_refused_to_its_owner(
    vault: VaultFixture,
) -> None:
    d = _read(vault.path)
    d["members"]["carol"]["kem"] = _b64(p.x25519_generate()[1])
    _reseal(vault.path, d, _db_key(vault))
    with pytest.raises(IntegrityError):
        vault.open("carol")


def test_self_promotion_to_admin_with_recomputed_mac_is_refused(vault: VaultFixture) -> None:
    """bob holds the database key; making himself admin breaks his certificate."""
    d = _read(vault.path)
    d["members"]["bob"]["admin"] = True
    _reseal(vault.path, d, _db_key(vault, "bob"))
    with pytest.raises(IntegrityError):
        vault.open("bob")


def _swap_kem_to_attacker(vault: VaultFixture, member: str) -> bytes:
    """Replace ``member``'s sealing key by the attacker's, MAC recomputed; the attacker's
    private key is returned."""
    attacker_priv, attacker_pub = p.x25519_generate()
    d = _read(vault.path)
    d["members"][member]["kem"] = _b64(attacker_pub)
    _reseal(vault.path, d, _db_key(vault, "bob"))
    return attacker_priv


def _attacker_opens_any_copy(vault: VaultFixture, member: str, attacker_priv: bytes) -> bool:
    """Can the attacker open any engagement-key copy stored for ``member``?"""
    import sqlcipher3

    conn = sqlcipher3.connect(str(vault.path / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{_db_key(vault).hex()}'\"")
        vault_id = bytes.fromhex(_read(vault.path)["vault_id"])
        rows = conn.execute(
            "SELECT g.sealed, e.uid, g.key_version FROM grants g "
            "JOIN engagements e ON e.id = g.engagement_id "
            "WHERE g.member = ? AND g.sealed IS NOT NULL",
            (member,),
        ).fetchall()
    finally:
        conn.close()
    for sealed, uid, version in rows:
        info = labels.encode(labels.SEAL_ENGAGEMENT_KEY, vault_id, bytes(uid), member, version)
        try:
            p.hpke_open(attacker_priv, bytes(sealed), info)
        except IntegrityError:
            continue
        return True
    return False


def test_grant_refuses_member_with_swapped_key(vault: VaultFixture, engagement: str) -> None:
    attacker = _swap_kem_to_attacker(vault, "carol")
    with vault.open("alice") as v, pytest.raises(IntegrityError):
        v.engagements.grant(engagement, "carol", "engineer")
    assert not _attacker_opens_any_copy(vault, "carol", attacker)


def test_rotation_refuses_member_with_swapped_key(vault: VaultFixture, engagement: str) -> None:
    attacker = _swap_kem_to_attacker(vault, "bob")
    with vault.open("alice") as v, contextlib.suppress(IntegrityError):
        v.engagements.rotate(engagement)
    assert not _attacker_opens_any_copy(vault, "bob", attacker)


def test_database_rekey_refuses_member_with_swapped_key(vault: VaultFixture) -> None:
    """bob (an insider with the database key) swaps carol's key, then is removed."""
    attacker = _swap_kem_to_attacker(vault, "carol")
    with vault.open("alice") as v, contextlib.suppress(IntegrityError):
        v.members.remove("bob")
    d = _read(vault.path)
    info = labels.encode(labels.SEAL_DB_KEY, bytes.fromhex(d["vault_id"]), "carol", d["generation"])
    with pytest.raises(IntegrityError):
        p.hpke_open(attacker, base64.b64decode(d["members"]["carol"]["db_key"]), info)


# -- parsing ---------------------------------------------------------------------------------
def _corruptions(text: str) -> dict[str, bytes]:
    d = json.loads(text)
    out = {
        "empty": b"",
        "not-json": b"\x00\xff garbage",
        "list": b"[]",
        "string": b'"credvault-keyslots"',
        "truncated-10": text[:10].encode(),
        "truncated-half": text[: len(text) // 2].encode(),
        "truncated-last-byte": text[:-2].encode(),
    }

    def variant(name: str, f: Callable[[Json], None]) -> None:
        e = copy.deepcopy(d)
        f(e)
        out[name] = json.dumps(e).encode()

    variant("no-format", lambda e: e.pop("format"))
    variant("other-format", lambda e: e.update(format="credvault-identity"))
    variant("no-members", lambda e: e.pop("members"))
    variant("members-list", lambda e: e.update(members=[]))
    variant("no-mac", lambda e: e.pop("mac"))
    variant("mac-not-base64", lambda e: e.update(mac="***"))
    variant("mac-number", lambda e: e.update(mac=7))
    variant("vault-id-not-hex", lambda e: e.update(vault_id="zz"))
    variant("kem-not-base64", lambda e: e["members"]["alice"].update(kem="%%%"))
    variant("kdf-m-text", lambda e: e["members"]["alice"]["kdf"].update(m="lots"))
    variant("kdf-null-salt", lambda e: e["members"]["alice"]["kdf"].update(salt=None))
    variant("slot-missing-db-key", lambda e: e["members"]["alice"].pop("db_key"))
    variant("recovery-null", lambda e: e.update(recovery=None))
    variant("retired-list", lambda e: e.update(retired=[1]))
    return out


def test_corrupt_files_are_integrity_errors(vault: VaultFixture) -> None:
    original = (vault.path / SLOTS).read_text()
    db = (vault.path / "vault.db").read_bytes()
    for name, data in _corruptions(original).items():
        (vault.path / SLOTS).write_bytes(data)
        with pytest.raises(IntegrityError):
            vault.open("alice")
        assert (vault.path / SLOTS).read_bytes() == data, name
        assert (vault.path / "vault.db").read_bytes() == db, name


@pytest.mark.parametrize("case", ["generation-inf", "kdf-m-inf", "generation-1e400", "nested"])
def test_hostile_json_is_an_integrity_error(vault: VaultFixture, case: str) -> None:
    text = (vault.path / SLOTS).read_text()
    d = _read(vault.path)
    alice_m = f'"m": {d["members"]["alice"]["kdf"]["m"]}'
    replaced = {
        "generation-inf": text.replace(
            f'"generation": {d["generation"]}', '"generation": Infinity'
        ),
        "kdf-m-inf": text.replace(alice_m, '"m": Infinity', 1),
        "generation-1e400": text.replace(f'"generation": {d["generation"]}', '"generation": 1e400'),
        "nested": "[" * 100_000 + "]" * 100_000,
    }[case]
    assert replaced != text
    (vault.path / SLOTS).write_text(replaced)
    with pytest.raises(IntegrityError):
        vault.open("alice")


@pytest.mark.parametrize("version", ["1", None])
def test_non_integer_version_is_corruption(vault: VaultFixture, version: object) -> None:
    d = _read(vault.path)
    d["version"] = version
    _write(vault.path, d)
    with pytest.raises(IntegrityError):
        vault.open("alice")


def test_oversized_file_is_refused(vault: VaultFixture) -> None:
    (vault.path / SLOTS).write_bytes(b" " * (16 * 1024 * 1024 + 1))
    with pytest.raises(IntegrityError):
        vault.open("alice")


def test_missing_file_is_not_a_vault(vault: VaultFixture) -> None:
    (vault.path / SLOTS).unlink()
    with pytest.raises(NotAVault):
        vault.open("alice")


@pytest.mark.parametrize("version", [2, 99])
def test_newer_version_is_unsupported(vault: VaultFixture, version: int) -> None:
    d = _read(vault.path)
    d["version"] = version
    _write(vault.path, d)
    with pytest.raises(UnsupportedFormat, match="newer"):
        vault.open("alice")


@pytest.mark.cli
def test_cli_exit_codes_for_key_slot_files(cli: CliRunner, vault: VaultFixture) -> None:
    path = vault.path

    def cli_vault(*args: str) -> Any:
        return cli(*args, "--vault", str(path))

    good = (path / SLOTS).read_text()
    (path / SLOTS).write_text(good[: len(good) // 2])
    r = cli_vault("ls", "--no-keyring")
    assert r.code == 6, r.err
    assert r.err.startswith("credvault: ")
    assert r.err.count("\n") == 1

    d = json.loads(good)
    d["version"] = 2
    (path / SLOTS).write_text(json.dumps(d))
    r = cli_vault("ls", "--no-keyring")
    assert r.code == 1, r.err
    assert "newer" in r.err
    assert "Traceback" not in r.err

    d = json.loads(good)
    d["members"]["bob"]["admin"] = True
    (path / SLOTS).write_text(json.dumps(d))
    r = cli_vault("ls", "--no-keyring")
    assert r.code == 6, r.err

    (path / SLOTS).write_text(good)
    assert cli_vault("ls", "--no-keyring").code == 0


# -- atomic replacement ----------------------------------------------------------------------
EXPECTED = {SLOTS, "vault.db", "vault.lock"}


def test_rewrites_leave_no_temporary_files(vault: VaultFixture) -> None:
    with vault.open("alice") as v:
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
        v.members.passwd(b"alice-new-pass")
        v.members.reset("dave", b"dave-new-pass")
        v.members.remove("carol")
    names = {f.name for f in vault.path.iterdir()}
    assert names <= EXPECTED | {"vault.db-wal", "vault.db-shm"}, names
    assert not [n for n in names if n.startswith(".") or n.endswith((".tmp", ".next"))]
    slots = KeySlots.read(vault.path / SLOTS)
    assert set(slots.members) == {"alice", "bob", "dave"}
    with Vault.open(vault.path, "dave", "dave-new-pass", kdf=KDF, clock=vault.clock) as v:
        assert v.member == "dave"


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new content" * 1000)
    assert target.read_bytes() == b"new content" * 1000
    assert [f.name for f in tmp_path.iterdir()] == ["f.json"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_atomic_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    from credvault.errors import StoreError

    with pytest.raises(StoreError, match=f"disk full: cannot write {target}"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.json"]  # no temporary file left
