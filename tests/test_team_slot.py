"""A team member's own key slot (issue 14; docs/format.md §19.1), read by a strict parser:
the file is hostile until the passphrase opens it. No PostgreSQL needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from credvault import MIN_KDF, Secret
from credvault.crypto import primitives as p
from credvault.errors import (
    AlreadyExists,
    IntegrityError,
    NotAVault,
    UnsupportedFormat,
    WrongPassphrase,
)
from credvault.postgres.slot import TeamSlot, login_password, new_slot

VAULT_ID = bytes(range(16))


def _slot() -> tuple[TeamSlot, bytes]:
    slot, keys = new_slot(VAULT_ID, "team", "bob", Secret(b"bob-pass"), MIN_KDF)
    return slot, keys.sign_private


def test_round_trip_and_unlock() -> None:
    slot, sign = _slot()
    again = TeamSlot.from_bytes(slot.to_bytes())
    assert again == slot
    keys = again.unlock(Secret(b"bob-pass"))
    assert keys.sign_private == sign
    assert p.ed25519_public(keys.sign_private) == slot.sign_pub
    assert "private" not in repr(slot)
    assert b"bob-pass" not in slot.to_bytes()


def test_wrong_passphrase_is_exit_5() -> None:
    slot, _ = _slot()
    with pytest.raises(WrongPassphrase) as e:
        slot.unlock(Secret(b"nope"))
    assert e.value.exit_code == 5


def test_the_private_blob_is_bound_to_vault_and_member() -> None:
    slot, _ = _slot()
    for moved in (slot._replace(vault_id=bytes(16)), slot._replace(member="eve")):
        with pytest.raises((WrongPassphrase, IntegrityError)):
            moved.unlock(Secret(b"bob-pass"))


def test_public_keys_swapped_in_the_file_are_caught() -> None:
    slot, _ = _slot()
    other = p.x25519_public(p.x25519_generate()[0])
    with pytest.raises(IntegrityError, match="do not match"):
        slot._replace(kem_pub=other).unlock(Secret(b"bob-pass"))


def _edit(data: bytes, **changes: object) -> bytes:
    d = json.loads(data)
    for k, v in changes.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    "changes",
    [
        {"version": True},
        {"version": "1"},
        {"version": 0},
        {"kem": "AAAA"},
        {"sign": 5},
        {"vault_id": "ABCDEF" * 5 + "00"},
        {"vault_id": "zz" * 16},
        {"kdf": {"m": 2**40, "t": 2, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="}},
        {"kdf": {"m": 19456, "t": False, "p": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="}},
        {"kdf": {"m": 19456, "t": 2, "p": 1}},
        {"private": None},
        {"extra": "field"},
        {"member": KeyError},
        {"format": "credvault-keyslots"},
    ],
)
def test_strict_reader_refuses_as_corruption(changes: dict[str, object]) -> None:
    slot, _ = _slot()
    with pytest.raises(IntegrityError) as e:
        TeamSlot.from_bytes(_edit(slot.to_bytes(), **changes))
    assert e.value.exit_code == 6


def test_not_json_and_a_newer_version() -> None:
    slot, _ = _slot()
    with pytest.raises(IntegrityError):
        TeamSlot.from_bytes(b"\xff not json")
    with pytest.raises(UnsupportedFormat, match="newer"):
        TeamSlot.from_bytes(_edit(slot.to_bytes(), version=4))


def test_version_2_pins_the_founder_and_version_1_still_reads() -> None:
    """Version 2 adds ``anchor`` (the founder's fingerprint, from the invitation code);
    a version-1 slot (no anchor) still reads, an anchor that is not 32 hex digits or a
    version-2 slot without one is corrupt."""
    slot, _ = _slot()
    assert slot.anchor is None
    assert b'"version": 1' in slot.to_bytes()
    pinned = slot._replace(anchor="ab" * 16)
    data = pinned.to_bytes()
    assert b'"version": 2' in data
    assert TeamSlot.from_bytes(data) == pinned
    with pytest.raises(IntegrityError, match="anchor"):
        TeamSlot.from_bytes(_edit(data, anchor="AB" * 16))
    with pytest.raises(IntegrityError, match="fields"):
        TeamSlot.from_bytes(_edit(slot.to_bytes(), version=2))


def test_version_3_binds_the_login_to_the_salt() -> None:
    """`passwd` writes version 3: the same keys give another login with another salt,
    and versions 1 and 2 keep the login they always had; version 3 keeps an anchor."""
    slot, keys = new_slot(VAULT_ID, "team", "bob", Secret(b"bob-pass"), MIN_KDF)
    assert slot.version == 1
    assert slot.login_password(keys) == login_password(keys, slot.vault_id)
    v2 = TeamSlot.from_bytes(slot._replace(salted_login=True).to_bytes())
    assert v2.version == 3
    anchored = slot._replace(anchor="ab" * 16, salted_login=True)
    assert TeamSlot.from_bytes(anchored.to_bytes()) == anchored
    assert anchored.login_password(keys) == v2.login_password(keys)
    assert v2.login_password(keys) != slot.login_password(keys)
    other = v2._replace(salt=bytes(16))
    assert other.login_password(keys) != v2.login_password(keys)


def test_written_once_private(tmp_path: Path) -> None:
    slot, _ = _slot()
    path = tmp_path / "team" / "bob.slot"
    slot.write_new(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    with pytest.raises(AlreadyExists):
        slot.write_new(path)
    assert TeamSlot.read(path) == slot
    with pytest.raises(NotAVault, match="credvault join"):
        TeamSlot.read(tmp_path / "missing.slot")


def test_login_password_is_derived_not_stored() -> None:
    slot, _ = _slot()
    keys = slot.unlock(Secret(b"bob-pass"))
    pw = login_password(keys, VAULT_ID)
    assert pw == login_password(keys, VAULT_ID)
    assert pw != login_password(keys, bytes(16))  # per vault
    assert len(pw) == 43
    assert pw.encode() not in slot.to_bytes()
