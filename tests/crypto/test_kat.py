"""credvault's own formats as known-answer vectors (``vectors/credvault/kat.txt``).

Each block ends in ``expect: success`` or ``expect: integrity failure`` (age's testkit
style). A success vector must be reproduced byte for byte twice: by credvault (fixed nonces
through the one seam, ``primitives._nonce``; Ed25519 is deterministic), and by a second,
minimal implementation below written from docs/format.md alone (§4 envelopes and
``encode``, §5 fingerprints, §17 membership-log links). A failure vector must raise
``IntegrityError`` and nothing else. So a change to a byte format breaks this test until
docs/format.md, the vectors and the code agree again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credvault import memberlog as ml
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError

KAT = Path(__file__).parent / "vectors" / "credvault" / "kat.txt"
Block = dict[str, list[str]]


def _blocks() -> list[Block]:
    out: list[Block] = []
    for chunk in KAT.read_text().split("\n\n"):
        block: Block = {}
        for line in chunk.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, _, v = line.partition(": ")
            block.setdefault(k, []).append(v)
        if block:
            out.append(block)
    return out


BLOCKS = _blocks()


def _one(b: Block, k: str) -> str:
    (v,) = b[k]
    return v


def _hex(b: Block, k: str) -> bytes:
    return bytes.fromhex(_one(b, k))


# -- docs/format.md, implemented again ---------------------------------------------------------
def doc_encode(*parts: bytes | str | int) -> bytes:
    """format.md §4: each part as a 4-byte big-endian length and its bytes; str as UTF-8,
    int as 8-byte signed big-endian."""
    out = b""
    for x in parts:
        raw = (
            x.to_bytes(8, "big", signed=True)
            if isinstance(x, int)
            else x.encode()
            if isinstance(x, str)
            else x
        )
        out += len(raw).to_bytes(4, "big") + raw
    return out


def doc_parts(line: str) -> list[bytes | str | int]:
    """A `parts`/`binding` line: str:TEXT, int:N, hex:BYTES separated by spaces."""
    parts: list[bytes | str | int] = []
    for part in line.split():
        typ, _, val = part.partition(":")
        parts.append(val if typ == "str" else int(val) if typ == "int" else bytes.fromhex(val))
    return parts


def doc_envelope(b: Block) -> bytes:
    """format.md §4: FORMAT ‖ u32 version ‖ nonce ‖ GCM(key, DEK, wrap AAD) ‖ nonce ‖ GCM(DEK,
    value, data AAD); with a binding FORMAT is 0x02, the labels are the bound ones and the
    binding's parts follow the key version in both AADs."""
    version = int(_one(b, "key_version"))
    n1, n2 = (bytes.fromhex(x) for x in _one(b, "nonces").split())
    where = (
        _hex(b, "vault_id"),
        _hex(b, "engagement_uid"),
        _one(b, "table"),
        _hex(b, "record_uid"),
        _one(b, "field"),
        version,
    )
    if "binding" in b:
        fmt = b"\x02"
        binding = doc_parts(_one(b, "binding"))
        wrap_aad = doc_encode(b"credvault/v1/bound-envelope-dek-wrap", *where, *binding)
        data_aad = doc_encode(b"credvault/v1/bound-envelope-data", *where, *binding)
    else:
        fmt = b"\x01"
        wrap_aad = doc_encode(b"credvault/v1/envelope-dek-wrap", *where)
        data_aad = doc_encode(b"credvault/v1/envelope-data", *where)
    dek = _hex(b, "dek")
    return (
        fmt
        + version.to_bytes(4, "big")
        + n1
        + AESGCM(_hex(b, "key")).encrypt(n1, dek, wrap_aad)
        + n2
        + AESGCM(dek).encrypt(n2, _hex(b, "plaintext"), data_aad)
    )


def doc_fingerprint(key: bytes) -> str:
    """format.md §5: hex(HKDF-SHA256(key, info = "credvault/v1/key-fingerprint", L = 16))."""
    return (
        HKDF(hashes.SHA256(), 16, salt=None, info=b"credvault/v1/key-fingerprint").derive(key).hex()
    )


def doc_check_link(link: bytes, signer_public: bytes) -> bytes:
    """format.md §17: body ‖ 64-byte Ed25519 signature over the label ‖ body; returns the hash."""
    body, sig = link[:-64], link[-64:]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(signer_public).verify(
        sig, b"credvault/v1/membership-link" + body
    )
    return hashlib.sha256(b"credvault/v1/membership-chain" + link).digest()


def _place(b: Block) -> envelope.Place:
    return envelope.Place(
        _hex(b, "vault_id"),
        _hex(b, "engagement_uid"),
        _one(b, "table"),
        _hex(b, "record_uid"),
        _one(b, "field"),
        tuple(doc_parts(_one(b, "binding"))) if "binding" in b else (),
    )


# -- the vectors ---------------------------------------------------------------------------------
def test_every_kind_is_present() -> None:
    kinds = {(_one(b, "vector").split(" (")[0], _one(b, "expect")) for b in BLOCKS}
    assert kinds >= {
        ("envelope", "success"),
        ("envelope", "integrity failure"),
        ("bound envelope", "success"),
        ("bound envelope", "integrity failure"),
        ("fingerprint", "success"),
        ("encode", "success"),
        ("membership log", "success"),
        ("membership log", "integrity failure"),
        ("revocation list", "success"),
        ("revocation list", "integrity failure"),
        ("rekey certificate", "success"),
        ("rekey certificate", "integrity failure"),
    }


def _ids(b: Block) -> str:
    return _one(b, "vector")


def _success(b: Block) -> bool:
    return _one(b, "vector").split(" (")[0] in ("envelope", "bound envelope") and (
        _one(b, "expect") == "success"
    )


@pytest.mark.parametrize("b", [b for b in BLOCKS if _success(b)], ids=_ids)
def test_envelope_success(b: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    nonces: Iterator[bytes] = iter(bytes.fromhex(x) for x in _one(b, "nonces").split())
    monkeypatch.setattr(p, "_nonce", lambda: next(nonces))
    version = int(_one(b, "key_version"))
    ours = envelope._seal_from_parts(
        _place(b), _hex(b, "plaintext"), _hex(b, "key"), version, _hex(b, "dek")
    )
    assert ours == _hex(b, "blob")
    assert doc_envelope(b) == _hex(b, "blob")
    assert envelope.open_(_place(b), _hex(b, "blob"), _hex(b, "key")) == _hex(b, "plaintext")


@pytest.mark.parametrize(
    "b",
    [
        b
        for b in BLOCKS
        if _one(b, "vector").split(" (")[0] in ("envelope", "bound envelope")
        and _one(b, "expect") != "success"
    ],
    ids=_ids,
)
def test_envelope_failure(b: Block) -> None:
    assert _one(b, "expect") == "integrity failure"
    with pytest.raises(IntegrityError):
        envelope.open_(_place(b), _hex(b, "blob"), _hex(b, "key"))


def test_fingerprint_and_encode() -> None:
    (fp,) = [b for b in BLOCKS if _one(b, "vector") == "fingerprint"]
    assert p.fingerprint(_hex(fp, "key")) == _one(fp, "fingerprint")
    assert doc_fingerprint(_hex(fp, "key")) == _one(fp, "fingerprint")
    (enc,) = [b for b in BLOCKS if _one(b, "vector") == "encode"]
    parts = doc_parts(_one(enc, "parts"))
    assert labels.encode(*parts) == _hex(enc, "encoded")
    assert doc_encode(*parts) == _hex(enc, "encoded")


def _trust(b: Block) -> tuple[ml.Trust, bytes, bytes]:
    admin_pub = p.ed25519_public(_hex(b, "admin_sign_private"))
    lead_pub = p.ed25519_public(_hex(b, "lead_sign_private"))
    trust = ml.Trust(
        _hex(b, "vault_id"),
        _hex(b, "engagement_uid"),
        {"admin": frozenset({admin_pub})},
        b"\x99" * 32,
    )
    return trust, admin_pub, lead_pub


@pytest.mark.parametrize(
    "b", [b for b in BLOCKS if _one(b, "vector") == "membership log"], ids=_ids
)
def test_membership_log_success(b: Block) -> None:
    trust, admin_pub, lead_pub = _trust(b)
    links = [bytes.fromhex(x) for x in b["link"]]
    state = ml.replay(links, trust)
    assert state.head == _hex(b, "head")
    assert state.key_version == int(_one(b, "key_version"))
    # from the document: link 0 by the admin, link 1 by the lead, each naming the previous hash
    h0 = doc_check_link(links[0], admin_pub)
    h1 = doc_check_link(links[1], lead_pub)
    assert h1 == _hex(b, "head")
    assert h0 in links[1]
    assert links[0].startswith(doc_encode(1, trust.vault_id, trust.engagement_uid, 0, bytes(32)))
    assert links[1].startswith(doc_encode(1, trust.vault_id, trust.engagement_uid, 1, h0))
    # and re-signing the same body with the same key gives the same bytes (deterministic)
    body = links[1][:-64]
    sig = Ed25519PrivateKey.from_private_bytes(_hex(b, "lead_sign_private")).sign(
        b"credvault/v1/membership-link" + body
    )
    assert body + sig == links[1]


@pytest.mark.parametrize(
    "b", [b for b in BLOCKS if _one(b, "vector").startswith("membership log (")], ids=_ids
)
def test_membership_log_failure(b: Block) -> None:
    assert _one(b, "expect") == "integrity failure"
    trust, _, _ = _trust(b)
    with pytest.raises(IntegrityError):
        ml.replay([bytes.fromhex(x) for x in b["link"]], trust)


def _revocation_doc(b: Block) -> bytes:
    """format.md §19.7 from the document: the body of version 1."""
    admin_pub = Ed25519PrivateKey.from_private_bytes(_hex(b, "admin_sign_private")).public_key()
    lead_pub = Ed25519PrivateKey.from_private_bytes(_hex(b, "lead_sign_private")).public_key()
    from cryptography.hazmat.primitives import serialization

    def raw(k: object) -> bytes:
        return k.public_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    sha = lambda x: hashlib.sha256(x).digest()  # noqa: E731
    return doc_encode(
        1, _hex(b, "vault_id"), 1, bytes(32), _one(b, "time"), "admin", raw(admin_pub),
        "alice", sha(_hex(b, "ipk")), 1, sha(raw(lead_pub)), sha(_hex(b, "lead_kem_public")),
        1, "bob", sha(_hex(b, "endorsed_sign_public")), sha(_hex(b, "endorsed_kem_public")),
        1, _hex(b, "link_hash"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "b", [b for b in BLOCKS if _one(b, "vector").startswith("revocation list")], ids=_ids
)
def test_revocation_list(b: Block) -> None:
    from credvault.team_log import Revocation, revocation_hash

    blob = _hex(b, "statement")
    r = Revocation.from_bytes(blob)
    admin = p.ed25519_public(_hex(b, "admin_sign_private"))
    assert r.body() == _revocation_doc(b) == blob[:-64]
    assert (r.version, r.signer, r.member, r.endorsed[0][0]) == (1, "admin", "alice", "bob")
    assert r.links == (_hex(b, "link_hash"),)
    if _one(b, "expect") == "success":
        p.verify(admin, labels.TEAM_REVOCATION_LIST, r.body(), r.signature, "kat")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(admin).verify(
            blob[-64:], b"credvault/v1/team-revocation-list" + blob[:-64]
        )
        want = hashlib.sha256(b"credvault/v1/team-revocation-chain" + blob).digest()
        assert revocation_hash(blob) == want == _hex(b, "hash")
    else:
        assert _one(b, "expect") == "integrity failure"
        with pytest.raises(IntegrityError):
            p.verify(admin, labels.TEAM_REVOCATION_LIST, r.body(), r.signature, "kat")


@pytest.mark.parametrize(
    "b", [b for b in BLOCKS if _one(b, "vector").startswith("rekey certificate")], ids=_ids
)
def test_rekey_certificate(b: Block) -> None:
    """format.md §19.8 from the document: the statement, and the admin's signature over
    the label and it (checked with the cryptography package directly)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from credvault.team_log import rekey_message

    def public(k: str) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(_hex(b, k)).public_key()
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    admin, lead = public("admin_sign_private"), public("lead_sign_private")
    new = (_hex(b, "new_sign_public"), _hex(b, "new_kem_public"))
    doc = doc_encode(
        "rekey", _hex(b, "vault_id"), "alice", 1, lead, _hex(b, "lead_kem_public"), *new,
        "admin", admin,
    )  # fmt: skip
    statement = _hex(b, "statement")
    assert doc == statement
    assert (
        rekey_message(
            _hex(b, "vault_id"), "alice", 1, (lead, _hex(b, "lead_kem_public")), new, "admin", admin
        )
        == statement
    )
    sig = _hex(b, "signature")
    if _one(b, "expect") == "success":
        Ed25519PublicKey.from_public_bytes(admin).verify(
            sig, b"credvault/v1/team-rekey-certificate" + statement
        )
        p.verify(admin, labels.TEAM_REKEY_CERT, statement, sig, "kat")
    else:
        assert _one(b, "expect") == "integrity failure"
        with pytest.raises(IntegrityError):
            p.verify(admin, labels.TEAM_REKEY_CERT, statement, sig, "kat")


def test_the_generator_reproduces_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kat.txt is exactly what make_kat.py writes with today's code (no hand edits)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_kat", KAT.with_name("make_kat.py"))
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "OUT", tmp_path / "kat.txt")
    mod.main()
    assert (tmp_path / "kat.txt").read_text() == KAT.read_text()
