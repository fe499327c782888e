"""The kernel key store that makes a keyring cache entry die at its expiry
(``credvault.kernel_keys``), against the real Linux user keyring: a payload the kernel
refuses is an error and leaves no key; without a kernel key store (another platform)
adding is refused, and removing or reading finds nothing, never a crash."""

from __future__ import annotations

import errno
import secrets
from collections.abc import Iterator

import pytest

from credvault import kernel_keys


@pytest.fixture
def name() -> Iterator[str]:
    n = f"credvault:test-{secrets.token_hex(8)}:alice"
    yield n
    kernel_keys.remove(n)


def test_round_trip_and_removal(name: str) -> None:
    kernel_keys.add(name, b"wrapping-key", 60)
    assert kernel_keys.read(name) == b"wrapping-key"
    assert kernel_keys.remove(name) is True
    assert kernel_keys.read(name) is None
    assert kernel_keys.remove(name) is False


def test_a_payload_the_kernel_refuses_is_an_error_and_leaves_no_key(name: str) -> None:
    with pytest.raises(kernel_keys.KernelKeyError) as e:
        kernel_keys.add(name, b"x" * 40_000, 60)  # over the user key type's 32 KiB
    assert e.value.errno == errno.EINVAL
    assert str(e.value).startswith("[Errno 22] add_key: ")
    assert kernel_keys.read(name) is None


def test_without_a_kernel_key_store_adding_is_refused(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel_keys.platform, "machine", lambda: "sparc64")
    with pytest.raises(kernel_keys.KernelKeyError, match="no kernel key store on this platform"):
        kernel_keys.add(name, b"k", 60)
    assert kernel_keys.remove(name) is False
    with pytest.raises(kernel_keys.KernelKeyError):
        kernel_keys.read(name)
