"""A key whose expiry the Linux kernel enforces (the kernel key retention service, keyctl).

Used by ``credvault unlock --keyring``: the OS keyring entry holds the member's keys encrypted
under a random wrapping key, and the wrapping key lives only here, in the user's kernel
keyring, with a timeout. At expiry the kernel refuses every read and then destroys the key,
whether or not credvault ever runs again; the keyring entry left behind is ciphertext under a
key that no longer exists. Nothing of it is on disk. Readable by processes of the same user
(as the OS keyring entry and the agent socket are). Linux only; elsewhere ``available()`` is
False and ``unlock --keyring`` refuses.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

# syscall numbers: add_key, keyctl
_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219), "arm64": (217, 219)}
KEY_SPEC_USER_KEYRING = -4
KEYCTL_REVOKE = 3
KEYCTL_SETPERM = 5
KEYCTL_UNLINK = 9
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
KEYCTL_SET_TIMEOUT = 15
# possessor: all; user (same uid): view, read, write, search, link, setattr; others: nothing
PERM = 0x3F3F0000
MAX_PAYLOAD = 4096


class KernelKeyError(OSError):
    """The kernel key store is not available or refused the operation."""


def _calls() -> tuple[ctypes.CDLL, int, int]:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or not hasattr(os, "getuid"):
        raise KernelKeyError(errno.ENOSYS, "no kernel key store on this platform")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc, numbers[0], numbers[1]


def _check(result: int, what: str) -> int:
    if result < 0:
        e = ctypes.get_errno()
        raise KernelKeyError(e, f"{what}: {os.strerror(e)}")
    return result


def _search(libc: ctypes.CDLL, keyctl: int, description: str) -> int | None:
    r = libc.syscall(
        ctypes.c_long(keyctl),
        ctypes.c_long(KEYCTL_SEARCH),
        ctypes.c_long(KEY_SPEC_USER_KEYRING),
        ctypes.c_char_p(b"user"),
        ctypes.c_char_p(description.encode()),
        ctypes.c_long(0),
    )
    if r < 0:
        e = ctypes.get_errno()
        if e in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.EACCES):
            return None
        raise KernelKeyError(e, f"keyctl search: {os.strerror(e)}")
    return int(r)


def add(description: str, payload: bytes, timeout: int) -> None:
    """Store ``payload`` under ``description`` in the user keyring, gone after ``timeout`` s."""
    libc, add_key, keyctl = _calls()
    key = _check(
        libc.syscall(
            ctypes.c_long(add_key),
            ctypes.c_char_p(b"user"),
            ctypes.c_char_p(description.encode()),
            ctypes.c_char_p(payload),
            ctypes.c_size_t(len(payload)),
            ctypes.c_long(KEY_SPEC_USER_KEYRING),
        ),
        "add_key",
    )
    try:
        _check(
            libc.syscall(
                ctypes.c_long(keyctl),
                ctypes.c_long(KEYCTL_SET_TIMEOUT),
                ctypes.c_long(key),
                ctypes.c_uint(timeout),
            ),
            "keyctl timeout",
        )
        _check(
            libc.syscall(
                ctypes.c_long(keyctl),
                ctypes.c_long(KEYCTL_SETPERM),
                ctypes.c_long(key),
                ctypes.c_uint(PERM),
            ),
            "keyctl setperm",
        )
    except KernelKeyError:
        libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_REVOKE), ctypes.c_long(key))
        raise


def read(description: str) -> bytes | None:
    """The payload, or None if there is no such key or it expired (or was revoked)."""
    libc, _add, keyctl = _calls()
    key = _search(libc, keyctl, description)
    if key is None:
        return None
    buf = ctypes.create_string_buffer(MAX_PAYLOAD)
    n = libc.syscall(
        ctypes.c_long(keyctl),
        ctypes.c_long(KEYCTL_READ),
        ctypes.c_long(key),
        buf,
        ctypes.c_size_t(MAX_PAYLOAD),
    )
    if n < 0:
        e = ctypes.get_errno()
        if e in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED, errno.EACCES):
            return None
        raise KernelKeyError(e, f"keyctl read: {os.strerror(e)}")
    data = buf.raw[: min(int(n), MAX_PAYLOAD)]
    ctypes.memset(buf, 0, MAX_PAYLOAD)
    return data


def remove(description: str) -> bool:
    """Revoke (unreadable at once) and unlink the key; True if there was one."""
    try:
        libc, _add, keyctl = _calls()
        key = _search(libc, keyctl, description)
    except KernelKeyError:
        return False
    if key is None:
        return False
    libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_REVOKE), ctypes.c_long(key))
    libc.syscall(
        ctypes.c_long(keyctl),
        ctypes.c_long(KEYCTL_UNLINK),
        ctypes.c_long(key),
        ctypes.c_long(KEY_SPEC_USER_KEYRING),
    )
    return True
