"""Outside test vectors run through credvault's own crypto wrappers (issue 11).

Vendored under ``tests/crypto/vectors/`` with their licences and sources:

- Wycheproof (C2SP, Apache-2.0): AES-GCM through ``aead_decrypt``, X25519 low-order and
  zero-shared-secret points refused by ``hpke_seal``, HKDF-SHA256 through ``hkdf``, Ed25519
  through ``verify``;
- RFC 9180 Appendix A (from ``cryptography-vectors``): HPKE base mode with credvault's suite
  through ``hpke_open`` and ``x25519_public``;
- RFC 9106 / reference Argon2id vectors (from ``cryptography-vectors``) through
  ``passphrase.derive``.

A wrapper that swapped an argument, dropped the AAD, accepted a bad tag or signature, or
computed a different KDF fails here against numbers nobody in this project chose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credvault.crypto import passphrase
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError
from credvault.secret import Secret

VECTORS = Path(__file__).parent / "vectors"


def _wycheproof(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    doc = json.loads((VECTORS / "wycheproof" / f"{name}.json").read_text())
    return [(g, t) for g in doc["testGroups"] for t in g["tests"]]


def _id(case: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return f"tc{case[1]['tcId']}"


# -- AES-256-GCM (the cipher of envelopes, private blobs, HPKE) --------------------------------
AES_GCM = [
    c
    for c in _wycheproof("aes_gcm_test")
    if c[0]["keySize"] == 256 and c[0]["ivSize"] == 96 and c[0]["tagSize"] == 128
]


def test_aes_gcm_vector_selection_is_not_empty() -> None:
    assert len(AES_GCM) > 40
    assert {t["result"] for _, t in AES_GCM} == {"valid", "invalid"}


@pytest.mark.parametrize("case", AES_GCM, ids=_id)
def test_wycheproof_aes_gcm_through_aead_decrypt(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, t = case
    key, iv, aad = (bytes.fromhex(t[k]) for k in ("key", "iv", "aad"))
    blob = iv + bytes.fromhex(t["ct"]) + bytes.fromhex(t["tag"])
    if t["result"] == "valid":
        assert p.aead_decrypt(key, blob, aad) == bytes.fromhex(t["msg"])
        with pytest.raises(IntegrityError):  # the AAD is bound
            p.aead_decrypt(key, blob, aad + b"x")
    else:
        with pytest.raises(IntegrityError):
            p.aead_decrypt(key, blob, aad)


# -- X25519: low-order points and zero shared secrets are refused -----------------------------
X25519 = _wycheproof("x25519_test")
ZERO = bytes(32)
LOW_ORDER = [c for c in X25519 if bytes.fromhex(c[1]["shared"]) == ZERO]
NONZERO = [c for c in X25519 if bytes.fromhex(c[1]["shared"]) != ZERO]


def test_x25519_selection() -> None:
    assert len(LOW_ORDER) >= 10
    assert all(t["result"] == "acceptable" for _, t in LOW_ORDER)


@pytest.mark.parametrize("case", LOW_ORDER, ids=_id)
def test_wycheproof_x25519_low_order_public_key_is_refused(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Sealing a key to a low-order point would give every observer the shared secret."""
    with pytest.raises(IntegrityError):
        p.hpke_seal(bytes.fromhex(case[1]["public"]), b"k" * 32, b"info")


@pytest.mark.parametrize("case", NONZERO[:: max(1, len(NONZERO) // 60)], ids=_id)
def test_wycheproof_x25519_ordinary_public_key_is_accepted(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    sealed = p.hpke_seal(bytes.fromhex(case[1]["public"]), b"k" * 32, b"info")
    assert len(sealed) == 32 + 32 + 16


# -- HKDF-SHA256 (credvault uses no salt: RFC 5869 treats it as HashLen zero bytes) -----------
HKDF = [c for c in _wycheproof("hkdf_sha256_test") if c[1]["salt"] in ("", "00" * 32)]


def test_hkdf_selection() -> None:
    assert len(HKDF) >= 5
    assert any(t["result"] == "valid" for _, t in HKDF)


@pytest.mark.parametrize("case", HKDF, ids=_id)
def test_wycheproof_hkdf_through_hkdf(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, t = case
    ikm, info = bytes.fromhex(t["ikm"]), bytes.fromhex(t["info"])
    if t["result"] == "valid":
        # credvault's hkdf takes info as label ‖ context; split it anywhere.
        half = len(info) // 2
        assert p.hkdf(ikm, info[:half], info[half:], t["size"]) == bytes.fromhex(t["okm"])
    else:
        with pytest.raises(ValueError):
            p.hkdf(ikm, info, b"", t["size"])


# -- Ed25519 (certificates, grants, membership links, receipts) -------------------------------
ED25519 = _wycheproof("ed25519_test")


@pytest.mark.parametrize("case", ED25519, ids=_id)
def test_wycheproof_ed25519_through_verify(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    g, t = case
    pub, msg, sig = bytes.fromhex(g["publicKey"]["pk"]), bytes.fromhex(t["msg"]), t["sig"]
    sig_b = bytes.fromhex(sig)
    # credvault signs label ‖ message: an empty label makes it plain Ed25519.
    if t["result"] == "valid":
        p.verify(pub, b"", msg, sig_b, "vector")
        with pytest.raises(IntegrityError):
            p.verify(pub, b"credvault/", msg, sig_b, "vector")
    else:
        with pytest.raises(IntegrityError):
            p.verify(pub, b"", msg, sig_b, "vector")


# -- RFC 9180 HPKE base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM -----------
HPKE = json.loads((VECTORS / "pyca" / "hpke_base_x25519_sha256_aes256gcm.json").read_text())


def test_rfc9180_vector_is_credvaults_suite() -> None:
    assert len(HPKE) == 1
    v = HPKE[0]
    assert (v["mode"], v["kem_id"], v["kdf_id"], v["aead_id"]) == (0, 0x20, 1, 2)


def test_rfc9180_hpke_open_derives_the_rfc_key_and_nonce() -> None:
    """credvault's single-shot HPKE has no AAD, and the RFC's encryptions all carry one. So a
    ciphertext is made with the RFC's own ``key`` and ``base_nonce`` (what the key schedule
    must derive from ``skRm``, ``enc`` and ``info``) and no AAD; ``hpke_open`` must open it.
    The RFC's own ciphertexts (with their AAD) must not open without it."""
    v = HPKE[0]
    sk, pk, enc, info = (bytes.fromhex(v[k]) for k in ("skRm", "pkRm", "enc", "info"))
    assert p.x25519_public(sk) == pk
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["base_nonce"])
    first = v["encryptions"][0]
    pt = bytes.fromhex(first["pt"])
    ours = AESGCM(key).encrypt(nonce, pt, b"")
    assert p.hpke_open(sk, enc + ours, info) == pt
    with pytest.raises(IntegrityError):
        p.hpke_open(sk, enc + ours, info + b"x")
    # the RFC's ciphertext is pt under the same key and nonce with AAD "Count-0"
    assert AESGCM(key).decrypt(nonce, bytes.fromhex(first["ct"]), bytes.fromhex(first["aad"])) == pt
    with pytest.raises(IntegrityError):
        p.hpke_open(sk, enc + bytes.fromhex(first["ct"]), info)


def test_hpke_seal_round_trips_to_the_rfc_recipient() -> None:
    v = HPKE[0]
    sk, pk, info = (bytes.fromhex(v[k]) for k in ("skRm", "pkRm", "info"))
    sealed = p.hpke_seal(pk, b"k" * 32, info)
    assert p.hpke_open(sk, sealed, info) == b"k" * 32


# -- Argon2id (RFC 9106 parameters; reference tool vectors) -------------------------------------
def _argon2_cases() -> list[dict[str, str]]:
    cases, cur = [], {}
    for line in (VECTORS / "pyca" / "argon2id.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, _, val = (x.strip() for x in line.partition("="))
        if k == "COUNT" and cur:
            cases.append(cur)
            cur = {}
        cur[k] = val
    if cur:
        cases.append(cur)
    return cases


ARGON2 = _argon2_cases()
# derive() fixes a 16-byte salt, a 32-byte output, no secret and no associated data.
DERIVABLE = [
    c
    for c in ARGON2
    if "secret" not in c and "ad" not in c and len(c["salt"]) == 32 and c["length"] == "32"
]


def test_argon2_selection() -> None:
    assert len(ARGON2) >= 5
    assert len(DERIVABLE) >= 2


@pytest.mark.parametrize("case", DERIVABLE, ids=lambda c: f"count{c['COUNT']}")
def test_argon2id_vectors_through_derive(case: dict[str, str]) -> None:
    params = passphrase.KdfParams(int(case["memcost"]), int(case["iter"]), int(case["lanes"]))
    got = passphrase.derive(
        Secret(bytes.fromhex(case.get("pass", ""))), bytes.fromhex(case["salt"]), params
    )
    assert got == bytes.fromhex(case["output"])


@pytest.mark.parametrize(
    "case", [c for c in ARGON2 if len(c["salt"]) != 32], ids=lambda c: f"count{c['COUNT']}"
)
def test_argon2id_short_salt_vectors_are_refused_by_derive(case: dict[str, str]) -> None:
    """credvault writes 16-byte salts only; a shorter one in a key-slot file is tampering."""
    params = passphrase.KdfParams(int(case["memcost"]), int(case["iter"]), int(case["lanes"]))
    with pytest.raises(IntegrityError):
        passphrase.derive(
            Secret(bytes.fromhex(case.get("pass", ""))), bytes.fromhex(case["salt"]), params
        )
