"""The hazmat wrappers: HPKE bound to its ``info``, AEAD, MAC and Ed25519, each failing with
:class:`IntegrityError` only (never a raw ``ValueError``/``InvalidTag``: no oracle, exit 6)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError

VAULT = b"\x01" * 16
ENG_A = b"\x0a" * 16
ENG_B = b"\x0b" * 16

# X25519 public keys of small order (RFC 7748 §6.1; libsodium's blocklist, canonical forms):
# a shared secret with any of them is all-zero, so a seal to them protects nothing.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ec" + "ff" * 30 + "7f"),  # p - 1
    bytes.fromhex("ed" + "ff" * 30 + "7f"),  # p
    bytes.fromhex("ee" + "ff" * 30 + "7f"),  # p + 1
]


def _info(engagement: bytes, member: str, version: int = 1) -> bytes:
    return labels.encode(labels.SEAL_ENGAGEMENT_KEY, VAULT, engagement, member, version)


# -- HPKE ------------------------------------------------------------------------------------
@given(plaintext=st.binary(max_size=2048), info=st.binary(max_size=64))
def test_hpke_round_trip(plaintext: bytes, info: bytes) -> None:
    priv, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, plaintext, info)
    assert p.hpke_open(priv, sealed, info) == plaintext


def test_hpke_seals_are_fresh() -> None:
    _priv, pub = p.x25519_generate()
    a = p.hpke_seal(pub, b"key", b"info")
    b = p.hpke_seal(pub, b"key", b"info")
    assert a != b
    assert a[:32] != b[:32]  # a fresh encapsulated key per seal


@pytest.mark.parametrize(
    "other",
    [
        _info(ENG_B, "bob"),  # another engagement's context
        _info(ENG_A, "carol"),  # another member's context
        _info(ENG_A, "bob", 2),  # another key version
        labels.encode(labels.SEAL_DB_KEY, VAULT, "bob", 1),  # another purpose
        labels.encode(labels.SEAL_ENGAGEMENT_KEY, b"\x02" * 16, ENG_A, "bob", 1),  # other vault
        b"",
    ],
)
def test_hpke_open_with_another_info_fails(other: bytes) -> None:
    priv, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, os.urandom(32), _info(ENG_A, "bob"))
    with pytest.raises(IntegrityError):
        p.hpke_open(priv, sealed, other)


@given(a=st.binary(max_size=32), b=st.binary(max_size=32))
def test_hpke_open_with_any_other_info_fails(a: bytes, b: bytes) -> None:
    priv, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, b"engagement key", a)
    if a == b:
        assert p.hpke_open(priv, sealed, b) == b"engagement key"
    else:
        with pytest.raises(IntegrityError):
            p.hpke_open(priv, sealed, b)


def test_hpke_open_with_another_private_key_fails() -> None:
    _, pub = p.x25519_generate()
    other, _ = p.x25519_generate()
    sealed = p.hpke_seal(pub, b"engagement key", b"info")
    with pytest.raises(IntegrityError):
        p.hpke_open(other, sealed, b"info")


@given(data=st.data())
def test_hpke_damage_fails(data: st.DataObject) -> None:
    priv, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, b"engagement key", b"info")
    pos = data.draw(st.integers(0, len(sealed) - 1))
    flipped = bytearray(sealed)
    flipped[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError):
        p.hpke_open(priv, bytes(flipped), b"info")
    with pytest.raises(IntegrityError):
        p.hpke_open(priv, sealed[:pos], b"info")


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda b: b.hex()[:8])
def test_hpke_open_refuses_low_order_encapsulated_key(point: bytes) -> None:
    priv, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, b"engagement key", b"info")
    with pytest.raises(IntegrityError):
        p.hpke_open(priv, point + sealed[32:], b"info")


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda b: b.hex()[:8])
def test_hpke_seal_refuses_low_order_public_key(point: bytes) -> None:
    with pytest.raises(IntegrityError):
        p.hpke_seal(point, b"engagement key", b"info")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_hpke_seal_refuses_malformed_public_key(length: int) -> None:
    with pytest.raises(IntegrityError):
        p.hpke_seal(b"\x09" * length, b"engagement key", b"info")


@pytest.mark.parametrize("length", [0, 31, 33])
def test_hpke_open_with_malformed_private_key_fails(length: int) -> None:
    _, pub = p.x25519_generate()
    sealed = p.hpke_seal(pub, b"engagement key", b"info")
    with pytest.raises(IntegrityError):
        p.hpke_open(b"\x01" * length, sealed, b"info")


def test_x25519_public_matches_generated_pair() -> None:
    priv, pub = p.x25519_generate()
    assert p.x25519_public(priv) == pub
    assert len(priv) == len(pub) == 32


# -- AEAD ------------------------------------------------------------------------------------
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64))
def test_aead_round_trip(plaintext: bytes, aad: bytes) -> None:
    key = p.random_key()
    blob = p.aead_encrypt(key, plaintext, aad)
    assert len(blob) == p.NONCE_LEN + len(plaintext) + p.TAG_LEN
    assert p.aead_decrypt(key, blob, aad) == plaintext


def test_aead_nonces_are_fresh() -> None:
    key = p.random_key()
    nonces = {p.aead_encrypt(key, b"x", b"")[: p.NONCE_LEN] for _ in range(2000)}
    assert len(nonces) == 2000


@given(aad=st.binary(max_size=16), other=st.binary(max_size=16), cut=st.integers(0, 40))
def test_aead_failures_are_integrity_errors(aad: bytes, other: bytes, cut: int) -> None:
    key = p.random_key()
    blob = p.aead_encrypt(key, b"a value", aad)
    if other != aad:
        with pytest.raises(IntegrityError):
            p.aead_decrypt(key, blob, other)
    with pytest.raises(IntegrityError):
        p.aead_decrypt(p.random_key(), blob, aad)
    if cut < len(blob):
        with pytest.raises(IntegrityError):
            p.aead_decrypt(key, blob[:cut], aad)


# -- HKDF, MAC, fingerprints ----------------------------------------------------------------
def test_hkdf_separates_labels_and_contexts() -> None:
    key = p.random_key()
    derived = {p.hkdf(key, label) for label in labels.ALL}
    assert len(derived) == len(labels.ALL)
    assert p.hkdf(key, labels.AUDIT_MAC, b"a") != p.hkdf(key, labels.AUDIT_MAC, b"b")
    assert p.hkdf(key, labels.AUDIT_MAC) == p.hkdf(key, labels.AUDIT_MAC)


@given(data=st.binary(max_size=256), tag=st.binary(max_size=40))
def test_mac_verify(data: bytes, tag: bytes) -> None:
    key = p.random_key()
    p.mac_verify(key, data, p.mac(key, data), "thing")
    if tag != p.mac(key, data):
        with pytest.raises(IntegrityError, match="thing"):
            p.mac_verify(key, data, tag, "thing")
    with pytest.raises(IntegrityError):
        p.mac_verify(p.random_key(), data, p.mac(key, data), "thing")


def test_fingerprint_is_stable_short_and_reveals_nothing() -> None:
    key = p.random_key()
    fp = p.fingerprint(key)
    assert fp == p.fingerprint(key)
    assert len(fp) == 32
    assert fp != p.fingerprint(p.random_key())
    assert fp not in key.hex()
    assert key.hex()[:16] not in fp


# -- Ed25519 ---------------------------------------------------------------------------------
@given(message=st.binary(max_size=512))
def test_sign_verify_round_trip(message: bytes) -> None:
    priv, pub = p.ed25519_generate()
    assert p.ed25519_public(priv) == pub
    sig = p.sign(priv, labels.GRANT_SIG, message)
    p.verify(pub, labels.GRANT_SIG, message, sig, "grant")


def test_verify_failures_are_integrity_errors() -> None:
    priv, pub = p.ed25519_generate()
    _, other_pub = p.ed25519_generate()
    sig = p.sign(priv, labels.GRANT_SIG, b"message")
    bad_sig = bytearray(sig)
    bad_sig[10] ^= 1
    cases = [
        (pub, labels.GRANT_SIG, b"messagE", sig),  # another message
        (pub, labels.RECEIPT_SIG, b"message", sig),  # another label (domain separation)
        (other_pub, labels.GRANT_SIG, b"message", sig),  # another signer
        (pub, labels.GRANT_SIG, b"message", bytes(bad_sig)),  # damaged signature
        (pub, labels.GRANT_SIG, b"message", sig[:63]),  # truncated signature
        (pub, labels.GRANT_SIG, b"message", b""),
        (pub, labels.GRANT_SIG, b"message", bytes(64)),
        (pub[:31], labels.GRANT_SIG, b"message", sig),  # malformed public key
        (b"", labels.GRANT_SIG, b"message", sig),
        (bytes(32), labels.GRANT_SIG, b"message", sig),  # identity point
    ]
    for key, label, msg, signature in cases:
        with pytest.raises(IntegrityError, match="what"):
            p.verify(key, label, msg, signature, "what")


def test_a_signature_under_one_label_fails_under_every_other() -> None:
    priv, pub = p.ed25519_generate()
    for label in labels.ALL:
        sig = p.sign(priv, label, b"x")
        p.verify(pub, label, b"x", sig, "same label")
        for other in labels.ALL:
            if other != label:
                with pytest.raises(IntegrityError):
                    p.verify(pub, other, b"x", sig, "other label")
