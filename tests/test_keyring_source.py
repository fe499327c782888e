"""The keyring cache's decisions in-process (``credvault.keyring_cache``): an entry that was
tampered with, has the wrong format, outlived its kernel wrapping key, expired or vanished
is never used and is deleted; a keyring that errors or refuses gives the passphrase path,
not a crash. The wrapping key lives in the real kernel keyring; the OS keyring is a
dictionary standing in for the Secret Service (test_keyring_cache.py drives the real one).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from keyring.errors import KeyringError, PasswordDeleteError

from conftest import KDF, PASSWORDS
from credvault import KeyringUnavailable, Vault, kernel_keys
from credvault import keyring_cache as kc
from credvault.errors import InvalidInput
from credvault.keyslots import KeySlots, MemberKeys
from credvault.layout import SLOTS_NAME, keyring_marker

HOUR = timedelta(hours=1)


class DictKeyring:
    """get/set/delete_password as the keyring package's backends have them."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], str] = {}
        self.fail: str | None = None  # the method that raises KeyringError

    def get_password(self, service: str, user: str) -> str | None:
        if self.fail == "get":
            raise KeyringError("locked collection")
        return self.entries.get((service, user))

    def set_password(self, service: str, user: str, value: str) -> None:
        if self.fail == "set":
            raise KeyringError("write refused")
        self.entries[(service, user)] = value

    def delete_password(self, service: str, user: str) -> None:
        if self.entries.pop((service, user), None) is None:
            raise PasswordDeleteError("no such entry")


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MemberKeys]:
    """One vault for the module (nothing here writes to it): its path and alice's keys."""
    path = tmp_path_factory.mktemp("keyring-source") / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        return path, v.member_keys()


class Cached:
    def __init__(self, alice: tuple[Path, MemberKeys], kr: DictKeyring) -> None:
        self.path, self.keys = alice
        self.kr = kr
        self.slots = KeySlots.read(self.path / SLOTS_NAME)
        self.vid = self.slots.vault_id.hex()
        self.now = datetime.now(UTC)
        self.expires = kc.cache_keys(self.vid, self.keys, HOUR, self.now)

    @property
    def entry(self) -> dict[str, Any]:
        return dict(json.loads(self.kr.entries[(f"credvault:{self.vid}", "alice")]))

    @entry.setter
    def entry(self, value: dict[str, Any]) -> None:
        self.kr.entries[(f"credvault:{self.vid}", "alice")] = json.dumps(value)

    def unlock(self, at: datetime | None = None) -> MemberKeys | None:
        return kc.KeyringSource(self.path, at or self.now).unlock(self.slots, "alice")

    def gone(self) -> bool:
        """Entry, marker and kernel wrapping key all deleted."""
        return (
            not self.kr.entries
            and not keyring_marker(self.vid, "alice").exists()
            and kernel_keys.read(f"credvault:{self.vid}:alice") is None
        )


@pytest.fixture
def cached(
    alice: tuple[Path, MemberKeys], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cached]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kr = DictKeyring()
    monkeypatch.setattr(kc, "_backend", lambda: kr)
    c = Cached(alice, kr)
    yield c
    kernel_keys.remove(f"credvault:{c.vid}:alice")


def test_a_fresh_entry_unlocks_and_lock_deletes_it(cached: Cached) -> None:
    keys = cached.unlock()
    assert keys is not None
    assert keys.sign_private == cached.keys.sign_private
    assert kc.cache_status(cached.path, "alice", cached.now)["unlocked"] is True
    assert kc.forget(cached.path, "alice") is True
    assert cached.gone()
    assert cached.unlock() is None


def _flip_blob(c: Cached) -> None:
    e = c.entry
    blob = bytearray(base64.b64decode(e["keys"]))
    blob[-1] ^= 1
    c.entry = {**e, "keys": base64.b64encode(bytes(blob)).decode()}


def _later_expiry(c: Cached) -> None:
    """The attacker moves the stamp a day on: it is bound into the encryption."""
    c.entry = {**c.entry, "expires": kc.expiry_stamp(c.now + 24 * HOUR)}


TAMPERING = {
    "blob-flipped": _flip_blob,
    "expiry-moved": _later_expiry,
    "old-format": lambda c: setattr(c, "entry", {**c.entry, "format": "credvault-keyring-1"}),
    "not-json": lambda c: c.kr.entries.update({(f"credvault:{c.vid}", "alice"): "{raw keys"}),
    "kernel-key-gone": lambda c: kernel_keys.remove(f"credvault:{c.vid}:alice"),
}


@pytest.mark.parametrize("tamper", list(TAMPERING))
def test_an_entry_that_does_not_open_is_deleted_never_used(cached: Cached, tamper: str) -> None:
    TAMPERING[tamper](cached)
    assert cached.unlock() is None
    assert cached.gone()


def test_an_expired_entry_is_deleted_on_sight(cached: Cached) -> None:
    later = cached.now + 2 * HOUR
    status = kc.cache_status(cached.path, "alice", later)
    assert status == {
        "unlocked": False,
        "until": cached.expires,
        "message": f"expired at {cached.expires}",
    }
    assert cached.unlock(later) is None
    assert cached.gone()


def test_an_entry_deleted_outside_credvault_drops_the_marker(cached: Cached) -> None:
    cached.kr.entries.clear()  # secret-tool clear, or the user's keyring manager
    assert cached.unlock() is None
    assert not keyring_marker(cached.vid, "alice").exists()


def test_a_keyring_that_errors_or_is_unavailable_falls_back(
    cached: Cached, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached.kr.fail = "get"
    assert cached.unlock() is None
    assert cached.kr.entries  # an error is not a verdict on the entry: kept
    cached.kr.fail = None

    def unavailable() -> None:
        raise KeyringUnavailable("no usable OS keyring")

    monkeypatch.setattr(kc, "_backend", unavailable)
    assert cached.unlock() is None
    assert kc.forget(cached.path, "alice") is True  # the kernel key and marker still go


def test_caching_refused_by_the_keyring_or_the_kernel_is_one_clear_error(
    cached: Cached, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached.kr.fail = "set"
    with pytest.raises(KeyringUnavailable, match=r"refused the entry \(KeyringError\)"):
        kc.cache_keys(cached.vid, cached.keys, HOUR, cached.now)

    def no_kernel(*_: object) -> None:
        raise kernel_keys.KernelKeyError(38, "Function not implemented")

    monkeypatch.setattr(kernel_keys, "add", no_kernel)
    cached.kr.fail = None
    with pytest.raises(KeyringUnavailable, match="no kernel key store to enforce the expiry"):
        kc.cache_keys(cached.vid, cached.keys, HOUR, cached.now)


def test_a_keyring_backend_that_cannot_load_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    def broken() -> None:
        raise KeyringError("no backend")

    monkeypatch.setattr(keyring, "get_keyring", broken)
    with pytest.raises(KeyringUnavailable, match=r"no usable OS keyring \(backend: none\)"):
        kc._backend()


@pytest.mark.parametrize("text", ["0s", "8d", "200h"])
def test_a_ttl_outside_one_second_to_seven_days_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="between 1s and 7d"):
        kc.parse_ttl(text)


# -- a team member's entry (PostgreSQL team vault, issue 14) ----------------------------------
def test_a_team_entry_opens_only_for_its_vault_member_and_key_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an attacker on the same account can do with a team member's entry: copy it to
    another team vault (same member name), to another member, or keep it past a passphrase
    change. None of them opens; each is deleted on sight, kernel key and marker with it."""
    import os

    from credvault import MIN_KDF, Secret
    from credvault.layout import team_keyring_marker
    from credvault.postgres.slot import TeamSlot, new_slot

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kr = DictKeyring()
    monkeypatch.setattr(kc, "_backend", lambda: kr)
    pw = Secret(b"bob's passphrase")
    slot, keys = new_slot(os.urandom(16), "team", "bob", pw, MIN_KDF)
    now = datetime.now(UTC)
    expires = kc.cache_team_keys(slot, keys, HOUR, now)
    vid = slot.vault_id.hex()
    service, kernel = f"credvault-team:{vid}", f"credvault-team:{vid}:bob"
    assert set(kr.entries) == {(service, "bob")}  # never SQLCipher's `credvault:<id>` entry
    assert json.loads(kr.entries[(service, "bob")])["format"] == "credvault-team-keyring-1"
    got = kc.team_cached_keys(slot, now)
    assert got is not None
    assert got.sign_private == keys.sign_private
    assert kc.team_cache_status(slot, now)["message"] == f"unlocked until {expires} (UTC)"
    wrap = kernel_keys.read(kernel)
    assert wrap is not None
    entry = kr.entries[(service, "bob")]

    def plant(target_slot: TeamSlot, member: str) -> None:
        """Bob's entry, wrapping key and marker under another vault's or member's names."""
        tvid = target_slot.vault_id.hex()
        kr.entries[(f"credvault-team:{tvid}", member)] = entry
        kernel_keys.remove(f"credvault-team:{tvid}:{member}")
        kernel_keys.add(f"credvault-team:{tvid}:{member}", wrap, 3600)
        team_keyring_marker(tvid, member).write_text(expires)

    def gone(target_slot: TeamSlot, member: str) -> bool:
        tvid = target_slot.vault_id.hex()
        return (
            (f"credvault-team:{tvid}", member) not in kr.entries
            and not team_keyring_marker(tvid, member).exists()
            and kernel_keys.read(f"credvault-team:{tvid}:{member}") is None
        )

    try:
        # another team vault where bob's name is also a member (same keys, even)
        other, _ = new_slot(os.urandom(16), "team2", "bob", pw, MIN_KDF, keys=keys)
        plant(other, "bob")
        assert kc.team_cached_keys(other, now) is None
        assert gone(other, "bob")
        # another member of the same vault
        carol, _ = new_slot(slot.vault_id, "team", "carol", Secret(b"c"), MIN_KDF)
        plant(carol, "carol")
        assert kc.team_cached_keys(carol, now) is None
        assert gone(carol, "carol")
        # bob's own vault, after a passphrase change (new salt): the old entry is dead
        assert kc.team_cached_keys(slot, now) is not None
        changed = slot._replace(salt=os.urandom(len(slot.salt)), salted_login=True)
        assert kc.team_cached_keys(changed, now) is None
        assert gone(slot, "bob")
        assert kc.team_cache_status(slot, now)["unlocked"] is False
    finally:
        for name in (kernel, f"credvault-team:{vid}:carol"):
            kernel_keys.remove(name)
