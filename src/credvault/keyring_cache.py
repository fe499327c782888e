"""Cache a member's unlocked keys in the OS keyring, wrapped so they die at expiry.

``credvault unlock --keyring`` (the agent is the default). The keyring entry (service
``credvault:<vault id>``, user = member name) holds the member's keys AES-256-GCM-encrypted
under a random wrapping key, with the expiry bound in as associated data. The wrapping key
lives only in the Linux kernel's user keyring with a timeout (``kernel_keys``): at expiry the
kernel refuses to read it and destroys it, whether or not credvault runs again, so the entry
is useless after its expiry even to someone reading it directly (secret-tool, a copy of the
keyring file and its password). ``lock`` deletes both. Without a kernel key store, ``unlock
--keyring`` refuses rather than leave raw keys behind. Entries of the older raw format are
deleted on sight.

The entry holds no passphrase and no database key: the database key is still opened from the
key-slot file on every use, so a removed member's cached keys open nothing. Only real OS
keyrings are used; a plaintext or "fail" backend is refused.

A small marker file (no secret: the expiry only) in ``$XDG_CACHE_HOME/credvault`` tells
commands whether to consult the keyring at all, so users who never ran ``unlock --keyring``
do not pay for importing ``keyring`` (about 60 ms) on every command. The only ``import
keyring``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from credvault import kernel_keys
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput, KeyringUnavailable
from credvault.files import make_private_dir
from credvault.keyslots import KeySlots, MemberKeys
from credvault.layout import (
    SLOTS_NAME,
    keyring_marker,
    keyring_marker_dir,
    team_keyring_marker,
)
from credvault.model import expiry_stamp

if TYPE_CHECKING:
    from credvault.postgres.slot import TeamSlot

ALLOWED_BACKENDS = (
    "keyring.backends.SecretService.Keyring",
    "keyring.backends.libsecret.Keyring",
    "keyring.backends.macOS.Keyring",
    "keyring.backends.Windows.WinVaultKeyring",
    "keyring.backends.kwallet.DBusKeyring",
)
_TTL = re.compile(r"\A(\d{1,5})([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL = timedelta(days=7)


def parse_ttl(text: object) -> timedelta:
    """``30m``, ``8h``, ``2d``…: how long ``unlock`` caches keys (1 second to 7 days)."""
    m = _TTL.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise InvalidInput("invalid --ttl: expected a number and s, m, h or d (e.g. 8h)")
    ttl = timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise InvalidInput("invalid --ttl: between 1s and 7d")
    return ttl


ENTRY_FORMAT = "credvault-keyring-2"
TEAM_ENTRY_FORMAT = "credvault-team-keyring-1"


class _Place(NamedTuple):
    """Where one member's cached keys live and what the entry is bound to: the keyring's
    (service, user), the kernel key's name, the marker file, the entry's format, and the
    associated data before the expiry (the expiry is appended as the last part)."""

    service: str
    user: str
    kernel: str
    marker: Path
    format: str
    aad: bytes

    def bound(self, expires: str) -> bytes:
        return self.aad + labels.encode(expires)


def _service(vault_id: str) -> str:
    return f"credvault:{vault_id}"


def _kernel_name(vault_id: str, member: str) -> str:
    return f"credvault:{vault_id}:{member}"


def _place(vault_id: str, member: str) -> _Place:
    """A SQLCipher vault's entry (service ``credvault:<vault id>``)."""
    return _Place(
        _service(vault_id),
        member,
        _kernel_name(vault_id, member),
        keyring_marker(vault_id, member),
        ENTRY_FORMAT,
        labels.KEYRING_ENTRY + labels.encode(bytes.fromhex(vault_id), member),
    )


def _team_place(slot: TeamSlot) -> _Place:
    """A team member's entry (service ``credvault-team:<vault id>``: a migrated team vault
    keeps its SQLCipher vault's id, so the two never share an entry). Bound to the vault,
    its database, the member and the key slot it was unlocked from (public keys and
    Argon2id salt): a changed slot (``passwd``, a new join) makes it fail, and it is deleted
    on sight."""
    vid = slot.vault_id.hex()
    return _Place(
        f"credvault-team:{vid}",
        slot.member,
        f"credvault-team:{vid}:{slot.member}",
        team_keyring_marker(vid, slot.member),
        TEAM_ENTRY_FORMAT,
        labels.TEAM_KEYRING_ENTRY
        + labels.encode(
            slot.vault_id, slot.database, slot.member, slot.kem_pub, slot.sign_pub, slot.salt
        ),
    )


def _vault_id(path: Path) -> str | None:
    try:
        return KeySlots.read(path / SLOTS_NAME).vault_id.hex()
    except Exception:  # noqa: BLE001 - no vault, no cache
        return None


def _backend() -> Any:
    """The usable, allow-listed keyring backend, or raise KeyringUnavailable."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - a declared dependency
        raise KeyringUnavailable("the keyring package is not installed") from None
    try:
        kr = keyring.get_keyring()
    except KeyringError:
        kr = None
    name = f"{type(kr).__module__}.{type(kr).__qualname__}" if kr is not None else "none"
    if name not in ALLOWED_BACKENDS:
        raise KeyringUnavailable(
            f"no usable OS keyring (backend: {name}); use CREDVAULT_PASSPHRASE_FILE or a "
            "service identity file (CREDVAULT_IDENTITY) instead"
        )
    return kr


def cache_keys(vault_id: str, keys: MemberKeys, ttl: timedelta, now: datetime) -> str:
    """Cache a member's unlocked keys until ``now + ttl``; returns the expiry."""
    return _store(_place(vault_id, keys.name), keys.to_bytes(bytes.fromhex(vault_id)), ttl, now)


def cache_team_keys(slot: TeamSlot, keys: MemberKeys, ttl: timedelta, now: datetime) -> str:
    """Cache a team member's keys (unlocked from ``slot``) until ``now + ttl``: what opens
    their key slot and derives their login without the passphrase. Returns the expiry."""
    if keys.name != slot.member:
        raise InvalidInput("the keys are not this slot's member's")
    return _store(_team_place(slot), keys.to_bytes(slot.vault_id), ttl, now)


def _store(place: _Place, data: bytes, ttl: timedelta, now: datetime) -> str:
    kr = _backend()
    expires = expiry_stamp(now + ttl)
    wrap = p.random_key()
    kernel_keys.remove(place.kernel)
    try:
        kernel_keys.add(place.kernel, wrap, max(1, int(ttl.total_seconds())))
    except kernel_keys.KernelKeyError as e:
        raise KeyringUnavailable(
            f"no kernel key store to enforce the expiry ({e.strerror}); use `credvault "
            "unlock` without --keyring (the agent)"
        ) from None
    blob = p.aead_encrypt(wrap, data, place.bound(expires))
    del wrap, data
    payload = json.dumps(
        {"format": place.format, "expires": expires, "keys": base64.b64encode(blob).decode()}
    )
    from keyring.errors import KeyringError

    try:
        kr.set_password(place.service, place.user, payload)
    except KeyringError as e:
        raise KeyringUnavailable(f"the OS keyring refused the entry ({type(e).__name__})") from None
    make_private_dir(keyring_marker_dir())
    with contextlib.suppress(FileNotFoundError):
        place.marker.unlink()
    fd = os.open(place.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, expires.encode())
    finally:
        os.close(fd)
    return expires


def _delete(place: _Place) -> bool:
    removed = kernel_keys.remove(place.kernel)
    with contextlib.suppress(FileNotFoundError):
        place.marker.unlink()
        removed = True
    try:
        kr = _backend()
        from keyring.errors import KeyringError

        try:
            kr.delete_password(place.service, place.user)
            removed = True
        except KeyringError:
            pass
    except KeyringUnavailable:
        pass
    return removed


def forget(path: Path, member: str) -> bool:
    """Delete a member's cached keys (``lock``, and after rm / reset / passwd)."""
    vid = _vault_id(path)
    return False if vid is None else _delete(_place(vid, member))


def forget_team(slot: TeamSlot) -> bool:
    """Delete a team member's cached keys (``lock`` on a team vault)."""
    return _delete(_team_place(slot))


def cache_status(path: Path, member: str, now: datetime | None = None) -> dict[str, object]:
    """Whether ``member`` has unlocked keys cached for the vault at ``path``, and until when."""
    vid = _vault_id(path)
    return _marker_status(None if vid is None else keyring_marker(vid, member), now)


def team_cache_status(slot: TeamSlot | None, now: datetime | None = None) -> dict[str, object]:
    """As :func:`cache_status`, for the team member whose key slot is ``slot``."""
    return _marker_status(None if slot is None else _team_place(slot).marker, now)


def _marker_status(marker: Path | None, now: datetime | None) -> dict[str, object]:
    try:
        expires = marker.read_text().strip() if marker else None
    except OSError:
        expires = None
    if not expires:
        return {"unlocked": False, "until": None, "message": "locked (no cached key)"}
    if expires <= expiry_stamp(now or datetime.now(UTC)):
        return {"unlocked": False, "until": expires, "message": f"expired at {expires}"}
    return {"unlocked": True, "until": expires, "message": f"unlocked until {expires} (UTC)"}


def _load(place: _Place, now: datetime | None) -> bytes | None:
    """The cached bytes at ``place`` if present, unexpired and opening under its binding;
    anything else is deleted on sight (None: try the next unlock source)."""
    if not place.marker.exists():
        return None  # never unlocked here: skip importing keyring at all
    stamp = expiry_stamp(now or datetime.now(UTC))
    try:
        kr = _backend()
    except KeyringUnavailable:
        return None
    from keyring.errors import KeyringError

    try:
        raw = kr.get_password(place.service, place.user)
    except KeyringError:
        return None
    if raw is None:
        with contextlib.suppress(FileNotFoundError):
            place.marker.unlink()
        return None
    try:
        entry = json.loads(raw)
        expires = str(entry["expires"])
        blob = base64.b64decode(entry["keys"], validate=True)
        if entry["format"] != place.format:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        _delete(place)  # unreadable, or the old raw format: never use, delete
        return None
    if expires <= stamp:
        _delete(place)  # expired: deleted on sight, fall back to the passphrase
        return None
    try:
        wrap = kernel_keys.read(place.kernel)
    except kernel_keys.KernelKeyError:
        wrap = None
    if wrap is None:
        _delete(place)  # the kernel let the wrapping key expire: the entry is dead
        return None
    try:
        return p.aead_decrypt(wrap, blob, place.bound(expires))
    except IntegrityError:
        _delete(place)  # another vault's, member's or slot's entry, or tampered with
        return None
    finally:
        del wrap


def team_cached_keys(slot: TeamSlot, now: datetime | None = None) -> MemberKeys | None:
    """The team member's keys cached by ``unlock --keyring`` for ``slot``, checked to be
    that slot's (member and public keys), or None."""
    data = _load(_team_place(slot), now)
    if data is None:
        return None
    keys = MemberKeys.from_bytes(data, slot.vault_id)
    del data
    if (
        keys.name != slot.member
        or p.x25519_public(keys.kem_private) != slot.kem_pub
        or p.ed25519_public(keys.sign_private) != slot.sign_pub
    ):
        forget_team(slot)
        return None
    return keys


class KeyringSource:
    """Unlock source: the keys cached by ``credvault unlock``, if present and not expired."""

    def __init__(self, path: Path, now: datetime | None = None) -> None:
        self.path = path
        self.now = now

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        data = _load(_place(slots.vault_id.hex(), member), self.now)
        if data is None:
            return None
        keys = MemberKeys.from_bytes(data, slots.vault_id)
        return keys if keys.name == member else None
