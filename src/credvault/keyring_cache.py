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
from typing import Any

from credvault import kernel_keys
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput, KeyringUnavailable
from credvault.files import make_private_dir
from credvault.keyslots import KeySlots, MemberKeys
from credvault.layout import SLOTS_NAME, keyring_marker, keyring_marker_dir
from credvault.model import expiry_stamp

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


def _service(vault_id: str) -> str:
    return f"credvault:{vault_id}"


def _kernel_name(vault_id: str, member: str) -> str:
    return f"credvault:{vault_id}:{member}"


def _aad(vault_id: str, member: str, expires: str) -> bytes:
    return labels.encode(bytes.fromhex(vault_id), member, expires)


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
    kr = _backend()
    expires = expiry_stamp(now + ttl)
    wrap = p.random_key()
    name = _kernel_name(vault_id, keys.name)
    kernel_keys.remove(name)
    try:
        kernel_keys.add(name, wrap, max(1, int(ttl.total_seconds())))
    except kernel_keys.KernelKeyError as e:
        raise KeyringUnavailable(
            f"no kernel key store to enforce the expiry ({e.strerror}); use `credvault "
            "unlock` without --keyring (the agent)"
        ) from None
    blob = p.aead_encrypt(
        wrap,
        keys.to_bytes(bytes.fromhex(vault_id)),
        labels.KEYRING_ENTRY + _aad(vault_id, keys.name, expires),
    )
    del wrap
    payload = json.dumps(
        {"format": ENTRY_FORMAT, "expires": expires, "keys": base64.b64encode(blob).decode()}
    )
    from keyring.errors import KeyringError

    try:
        kr.set_password(_service(vault_id), keys.name, payload)
    except KeyringError as e:
        raise KeyringUnavailable(f"the OS keyring refused the entry ({type(e).__name__})") from None
    make_private_dir(keyring_marker_dir())
    marker = keyring_marker(vault_id, keys.name)
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, expires.encode())
    finally:
        os.close(fd)
    return expires


def _delete(vault_id: str, member: str) -> bool:
    removed = kernel_keys.remove(_kernel_name(vault_id, member))
    with contextlib.suppress(FileNotFoundError):
        keyring_marker(vault_id, member).unlink()
        removed = True
    try:
        kr = _backend()
        from keyring.errors import KeyringError

        try:
            kr.delete_password(_service(vault_id), member)
            removed = True
        except KeyringError:
            pass
    except KeyringUnavailable:
        pass
    return removed


def forget(path: Path, member: str) -> bool:
    """Delete a member's cached keys (``lock``, and after rm / reset / passwd)."""
    vid = _vault_id(path)
    return False if vid is None else _delete(vid, member)


def cache_status(path: Path, member: str, now: datetime | None = None) -> dict[str, object]:
    """Whether ``member`` has unlocked keys cached for the vault at ``path``, and until when."""
    vid = _vault_id(path)
    marker = None if vid is None else keyring_marker(vid, member)
    try:
        expires = marker.read_text().strip() if marker else None
    except OSError:
        expires = None
    if not expires:
        return {"unlocked": False, "until": None, "message": "locked (no cached key)"}
    if expires <= expiry_stamp(now or datetime.now(UTC)):
        return {"unlocked": False, "until": expires, "message": f"expired at {expires}"}
    return {"unlocked": True, "until": expires, "message": f"unlocked until {expires} (UTC)"}


class KeyringSource:
    """Unlock source: the keys cached by ``credvault unlock``, if present and not expired."""

    def __init__(self, path: Path, now: datetime | None = None) -> None:
        self.path = path
        self.now = now

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        vid = slots.vault_id.hex()
        marker = keyring_marker(vid, member)
        if not marker.exists():
            return None  # never unlocked here: skip importing keyring at all
        now = expiry_stamp(self.now or datetime.now(UTC))
        try:
            kr = _backend()
        except KeyringUnavailable:
            return None
        from keyring.errors import KeyringError

        try:
            raw = kr.get_password(_service(vid), member)
        except KeyringError:
            return None
        if raw is None:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
            return None
        try:
            entry = json.loads(raw)
            expires = str(entry["expires"])
            blob = base64.b64decode(entry["keys"], validate=True)
            if entry["format"] != ENTRY_FORMAT:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            _delete(vid, member)  # unreadable, or the old raw format: never use, delete
            return None
        if expires <= now:
            _delete(vid, member)  # expired: deleted on sight, fall back to the passphrase
            return None
        try:
            wrap = kernel_keys.read(_kernel_name(vid, member))
        except kernel_keys.KernelKeyError:
            wrap = None
        if wrap is None:
            _delete(vid, member)  # the kernel let the wrapping key expire: the entry is dead
            return None
        try:
            data = p.aead_decrypt(wrap, blob, labels.KEYRING_ENTRY + _aad(vid, member, expires))
        except IntegrityError:
            _delete(vid, member)
            return None
        finally:
            del wrap
        keys = MemberKeys.from_bytes(data, slots.vault_id)
        return keys if keys.name == member else None
