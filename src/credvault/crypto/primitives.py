"""AEAD, HKDF, HMAC, HPKE and Ed25519 wrappers with credvault's single failure type."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credvault.crypto import labels
from credvault.errors import IntegrityError

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class KeyBytes(bytes):
    """Key material: plain bytes to every API, but ``repr`` never shows it.

    Keys sit in local variables; a traceback printed with its locals (``capture_locals``,
    pytest ``--showlocals``) or a debugger's variable view would otherwise show them.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"KeyBytes(<{len(self)} bytes redacted>)"

    __str__ = __repr__


def random_key() -> KeyBytes:
    """A fresh 256-bit key from the OS CSPRNG."""
    return KeyBytes(os.urandom(KEY_LEN))


def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random 96-bit nonce; returns nonce ‖ ciphertext ‖ tag.

    The nonce is never the caller's choice: a repeated nonce under one key reveals the GCM
    hash key. Random nonces are safe far below 2^32 messages per key; credvault's data keys
    encrypt exactly one value each.
    """
    nonce = _nonce()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _nonce() -> bytes:
    """A fresh random nonce. The one seam the known-answer tests replace
    (tests/crypto/test_kat.py): they fix nonces to reproduce docs/format.md's vectors."""
    return os.urandom(NONCE_LEN)


def aead_decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; any failure is :class:`IntegrityError`."""
    if len(blob) < NONCE_LEN + TAG_LEN:
        raise IntegrityError("ciphertext truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except InvalidTag:
        raise IntegrityError("authentication failed: data altered, moved or wrong key") from None


def hkdf(key: bytes, label: bytes, context: bytes = b"", length: int = KEY_LEN) -> KeyBytes:
    """HKDF-SHA256 with credvault's label as ``info`` (one label per use)."""
    return KeyBytes(
        HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label + context).derive(key)
    )


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (the one-shot C implementation: verifying a long audit trail is hot)."""
    return hmac.digest(key, data, "sha256")


def mac_verify(key: bytes, data: bytes, tag: bytes, what: str) -> None:
    """Constant-time MAC check raising :class:`IntegrityError` naming ``what``."""
    if not hmac.compare_digest(mac(key, data), tag):
        raise IntegrityError(f"{what}: MAC check failed (tampered or wrong key)")


def fingerprint(key: bytes) -> str:
    """A short public identifier of a secret key (HKDF, so it reveals nothing of the key)."""
    return hkdf(key, labels.KEY_FINGERPRINT, length=16).hex()


def hpke_seal(public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base mode (X25519, HKDF-SHA256, AES-256-GCM); context bound through ``info``."""
    try:
        pub = X25519PublicKey.from_public_bytes(public)
        return _SUITE.encrypt(plaintext, pub, info=info)
    except ValueError:  # malformed, or a low-order point (all-zero shared secret)
        raise IntegrityError("malformed or low-order public key") from None


def hpke_open(private: bytes, sealed: bytes, info: bytes) -> KeyBytes:
    """Open an HPKE-sealed value; wrong key or wrong context is :class:`IntegrityError`."""
    try:
        # Only keys are ever sealed with HPKE here, so the result is key material.
        return KeyBytes(
            _SUITE.decrypt(sealed, X25519PrivateKey.from_private_bytes(private), info=info)
        )
    except (InvalidTag, ValueError):
        raise IntegrityError("sealed key could not be opened (wrong key or context)") from None


def x25519_generate() -> tuple[bytes, bytes]:
    """(private, public) raw X25519 key bytes."""
    priv = X25519PrivateKey.generate()
    return KeyBytes(priv.private_bytes_raw()), priv.public_key().public_bytes_raw()


def x25519_public(private: bytes) -> bytes:
    """Public half of a raw X25519 private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def ed25519_generate() -> tuple[bytes, bytes]:
    """(private, public) raw Ed25519 key bytes."""
    priv = Ed25519PrivateKey.generate()
    return KeyBytes(priv.private_bytes_raw()), priv.public_key().public_bytes_raw()


def ed25519_public(private: bytes) -> bytes:
    """Public half of a raw Ed25519 private key."""
    return Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def sign(private: bytes, label: bytes, message: bytes) -> bytes:
    """Ed25519 signature over ``label ‖ message`` (domain separated)."""
    return Ed25519PrivateKey.from_private_bytes(private).sign(label + message)


def digest(data: bytes) -> bytes:
    """SHA-256."""
    return hashlib.sha256(data).digest()


@functools.lru_cache(maxsize=1024)
def _signature_ok(public: bytes, label: bytes, message: bytes, signature: bytes) -> bool:
    # A pure function of public data: one process checks each certificate or grant once,
    # however often a session walks the same chain.
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, label + message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(public: bytes, label: bytes, message: bytes, signature: bytes, what: str) -> None:
    """Check an Ed25519 signature; failure is :class:`IntegrityError` naming ``what``."""
    if not _signature_ok(bytes(public), label, message, bytes(signature)):
        raise IntegrityError(f"{what}: signature check failed")
