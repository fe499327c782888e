"""Regenerate ``kat.txt``: credvault's own formats as known-answer vectors.

Run only when a format changes on purpose (and bump its version): ``python make_kat.py``.
Keys, nonces and data keys are fixed here; Ed25519 is deterministic. Every ``success``
vector is also checked by ``tests/crypto/test_kat.py`` against a second implementation
written from docs/format.md alone, so the document, not the code, is the authority.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).parents[4] / "src"))

from credvault import memberlog as ml
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p

OUT = Path(__file__).with_name("kat.txt")


def _h(n: int, byte: int) -> bytes:
    return bytes([byte]) * n


def _seal(place: envelope.Place, pt: bytes, key: bytes, version: int, dek: bytes) -> bytes:
    with mock.patch.object(p, "_nonce", side_effect=[_h(12, 0xA1), _h(12, 0xB2)]):
        return envelope._seal_from_parts(place, pt, key, version, dek)


def main() -> None:
    blocks: list[list[str]] = []
    vault, eng, rec = _h(16, 0x11), _h(16, 0x22), _h(16, 0x33)
    key, dek = _h(32, 0x44), _h(32, 0x55)
    place = envelope.Place(vault, eng, "credentials", rec, "secret")
    pt = b"correct horse battery staple"
    blob = _seal(place, pt, key, 7, dek)
    common = [
        f"vault_id: {vault.hex()}",
        f"engagement_uid: {eng.hex()}",
        "table: credentials",
        f"record_uid: {rec.hex()}",
    ]
    blocks.append(
        [
            "vector: envelope",
            *common,
            "field: secret",
            f"key: {key.hex()}",
            "key_version: 7",
            f"dek: {dek.hex()}",
            f"nonces: {_h(12, 0xA1).hex()} {_h(12, 0xB2).hex()}",
            f"plaintext: {pt.hex()}",
            f"blob: {blob.hex()}",
            "expect: success",
        ]
    )
    bad = {
        "moved to another field": ("field: username", blob),
        "key version edited": ("field: secret", blob[:4] + b"\x08" + blob[5:]),
        "unknown format byte": ("field: secret", b"\x03" + blob[1:]),
        "ciphertext bit flipped": (
            "field: secret",
            blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:],
        ),
        "truncated": ("field: secret", blob[:92]),
    }
    for what, (field, b) in bad.items():
        blocks.append(
            [
                f"vector: envelope ({what})",
                *common,
                field,
                f"key: {key.hex()}",
                f"blob: {b.hex()}",
                "expect: integrity failure",
            ]
        )
    # bound envelopes (format 0x02, §4): a credential's secret and a system's address
    sys_uid = _h(16, 0x5A)
    bound_blocks(blocks, vault, eng, rec, key, dek, sys_uid)
    blocks.append(
        [
            "vector: fingerprint",
            f"key: {key.hex()}",
            f"fingerprint: {p.fingerprint(key)}",
            "expect: success",
        ]
    )
    blocks.append(
        [
            "vector: encode",
            "parts: str:a/b str:c int:-1 hex:00ff",
            f"encoded: {labels.encode('a/b', 'c', -1, bytes([0, 255])).hex()}",
            "expect: success",
        ]
    )
    # membership log: link 0 (create) and link 1 (rotate), fixed keys
    admin_priv, lead_priv = _h(32, 0x66), _h(32, 0x77)
    lead_kem = p.x25519_public(_h(32, 0x88))
    trust = ml.Trust(vault, eng, {"admin": frozenset({p.ed25519_public(admin_priv)})}, _h(32, 0x99))
    t0, t1 = "2026-01-02T03:04:05.000006Z", "2026-01-02T03:04:06.000000Z"
    l0, st = ml.sign_link(
        None,
        trust,
        ml.CREATE,
        ("acme-2026", "acme", "alice", p.ed25519_public(lead_priv), lead_kem),
        "admin",
        admin_priv,
        t0,
    )
    l1, st = ml.sign_link(st, trust, ml.ROTATE, (1, p.fingerprint(key)), "alice", lead_priv, t1)
    head = [
        f"vault_id: {vault.hex()}",
        f"engagement_uid: {eng.hex()}",
        f"admin_sign_private: {admin_priv.hex()}",
        f"lead_sign_private: {lead_priv.hex()}",
        f"lead_kem_public: {lead_kem.hex()}",
    ]
    blocks.append(
        [
            "vector: membership log",
            *head,
            f"link: {l0.hex()}",
            f"link: {l1.hex()}",
            f"head: {st.head.hex()}",
            "key_version: 1",
            "expect: success",
        ]
    )
    flipped = l1[:-1] + bytes([l1[-1] ^ 1])
    for what, links in {
        "signature flipped": [l0, flipped],
        "links swapped": [l1, l0],
        "rotation without creation": [l1],
    }.items():
        blocks.append(
            [
                f"vector: membership log ({what})",
                *head,
                *(f"link: {x.hex()}" for x in links),
                "expect: integrity failure",
            ]
        )
    revocation_blocks(blocks, vault, admin_priv, lead_priv, lead_kem)
    rekey_blocks(blocks, vault, admin_priv, lead_priv, lead_kem)
    text = "# credvault known-answer vectors: generated by make_kat.py; checked by\n"
    text += "# tests/crypto/test_kat.py against credvault and against docs/format.md.\n\n"
    text += "\n\n".join("\n".join(b) for b in blocks) + "\n"
    OUT.write_text(text)


def revocation_blocks(
    blocks: list[list[str]], vault: bytes, admin_priv: bytes, lead_priv: bytes, lead_kem: bytes
) -> None:
    """A team vault's revocation list, version 1 (format.md §19.7): the admin removes
    "alice" (the lead's keys), endorses "bob" again and names one link alice signed
    before (a chain hash, §17) as staying valid."""
    from credvault.team_log import Revocation, revocation_hash

    lead_pub = p.ed25519_public(lead_priv)
    bob = ("bob", p.digest(_h(32, 0xB0)), p.digest(_h(32, 0xB1)))
    r = Revocation(
        vault, 1, ml.ZERO_HASH, "2026-01-02T03:04:07.000000Z", "admin",
        p.ed25519_public(admin_priv), "alice", p.digest(_h(32, 0xA0)),
        ((p.digest(lead_pub), p.digest(lead_kem)),), (bob,), b"", (_h(32, 0xC0),),
    ).signed(admin_priv)  # fmt: skip
    blob = r.to_bytes()
    head = [
        f"vault_id: {vault.hex()}",
        f"admin_sign_private: {admin_priv.hex()}",
        "time: 2026-01-02T03:04:07.000000Z",
        f"ipk: {_h(32, 0xA0).hex()}",
        f"lead_sign_private: {lead_priv.hex()}",
        f"lead_kem_public: {lead_kem.hex()}",
        f"endorsed_sign_public: {_h(32, 0xB0).hex()}",
        f"endorsed_kem_public: {_h(32, 0xB1).hex()}",
        f"link_hash: {_h(32, 0xC0).hex()}",
    ]
    blocks.append(
        [
            "vector: revocation list",
            *head,
            f"statement: {blob.hex()}",
            f"hash: {revocation_hash(blob).hex()}",
            "expect: success",
        ]
    )
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    blocks.append(
        [
            "vector: revocation list (signature flipped)",
            *head,
            f"statement: {flipped.hex()}",
            "expect: integrity failure",
        ]
    )


def rekey_blocks(
    blocks: list[list[str]], vault: bytes, admin_priv: bytes, lead_priv: bytes, lead_kem: bytes
) -> None:
    """A team vault's certificate of new keys (format.md §19.8): the admin certifies the
    keys "alice" made at her first ``passwd --compromised`` (hand-over 1), chained to the
    pair her invitation certified (the lead's keys)."""
    from credvault.team_log import rekey_message

    new_sign, new_kem = _h(32, 0xC0), _h(32, 0xC1)
    admin_pub = p.ed25519_public(admin_priv)
    message = rekey_message(
        vault, "alice", 1, (p.ed25519_public(lead_priv), lead_kem), (new_sign, new_kem),
        "admin", admin_pub,
    )  # fmt: skip
    sig = p.sign(admin_priv, labels.TEAM_REKEY_CERT, message)
    head = [
        f"vault_id: {vault.hex()}",
        f"admin_sign_private: {admin_priv.hex()}",
        f"lead_sign_private: {lead_priv.hex()}",
        f"lead_kem_public: {lead_kem.hex()}",
        f"new_sign_public: {new_sign.hex()}",
        f"new_kem_public: {new_kem.hex()}",
        f"statement: {message.hex()}",
    ]
    blocks.append(
        ["vector: rekey certificate", *head, f"signature: {sig.hex()}", "expect: success"]
    )
    flipped = sig[:-1] + bytes([sig[-1] ^ 1])
    blocks.append(
        [
            "vector: rekey certificate (signature flipped)",
            *head,
            f"signature: {flipped.hex()}",
            "expect: integrity failure",
        ]
    )


def _parts(parts: tuple[bytes | str | int, ...]) -> str:
    """A binding as a `parts` line: str:TEXT, int:N, hex:BYTES (as the encode vector)."""
    return " ".join(
        f"int:{x}" if isinstance(x, int) else f"str:{x}" if isinstance(x, str) else f"hex:{x.hex()}"
        for x in parts
    )


def bound_blocks(
    blocks: list[list[str]],
    vault: bytes,
    eng: bytes,
    rec: bytes,
    key: bytes,
    dek: bytes,
    sys_uid: bytes,
) -> None:
    cases = [
        ("credentials", "secret", ("credential", "prod-root", "password", sys_uid), b"PROD-pw"),
        ("systems", "address", ("system", "prod", 22, "ssh"), b"10.0.0.1"),
        (
            "credential_versions",
            "secret/v3",
            ("credential-version", "prod-root", "password", "prod"),
            b"old-PROD-pw",
        ),
    ]
    edits = {
        "credentials": {
            "renamed": ("credential", "test-root", "password", sys_uid),
            "kind edited": ("credential", "prod-root", "token", sys_uid),
            "linked to another system": ("credential", "prod-root", "password", _h(16, 0x5B)),
            "link removed": ("credential", "prod-root", "password", b""),
        },
        "systems": {
            "port edited": ("system", "prod", 2222, "ssh"),
            "port removed": ("system", "prod", 0, "ssh"),
            "protocol edited": ("system", "prod", 22, "rdp"),
            "renamed": ("system", "test", 22, "ssh"),
        },
        "credential_versions": {
            "system edited": ("credential-version", "prod-root", "password", "test"),
        },
    }
    for table, field, binding, pt in cases:
        place = envelope.Place(vault, eng, table, rec, field, binding)
        blob = _seal(place, pt, key, 7, dek)
        where = [
            f"vault_id: {vault.hex()}",
            f"engagement_uid: {eng.hex()}",
            f"table: {table}",
            f"record_uid: {rec.hex()}",
            f"field: {field}",
        ]
        blocks.append(
            [
                f"vector: bound envelope ({table})",
                *where,
                f"binding: {_parts(binding)}",
                f"key: {key.hex()}",
                "key_version: 7",
                f"dek: {dek.hex()}",
                f"nonces: {_h(12, 0xA1).hex()} {_h(12, 0xB2).hex()}",
                f"plaintext: {pt.hex()}",
                f"blob: {blob.hex()}",
                "expect: success",
            ]
        )
        bad = [(what, b, blob) for what, b in edits[table].items()]
        bad.append(("format byte 0x02 relabelled 0x01", binding, b"\x01" + blob[1:]))
        for what, b, bb in bad:
            blocks.append(
                [
                    f"vector: bound envelope ({table}, {what})",
                    *where,
                    f"binding: {_parts(b)}",
                    f"key: {key.hex()}",
                    f"blob: {bb.hex()}",
                    "expect: integrity failure",
                ]
            )
    # and an unbound envelope (0x01) relabelled 0x02 does not open as bound
    place = envelope.Place(vault, eng, "credentials", rec, "secret")
    relabelled = b"\x02" + _seal(place, b"PROD-pw", key, 7, dek)[1:]
    blocks.append(
        [
            "vector: bound envelope (credentials, format byte 0x01 relabelled 0x02)",
            f"vault_id: {vault.hex()}",
            f"engagement_uid: {eng.hex()}",
            "table: credentials",
            f"record_uid: {rec.hex()}",
            "field: secret",
            f"binding: {_parts(cases[0][2])}",
            f"key: {key.hex()}",
            f"blob: {relabelled.hex()}",
            "expect: integrity failure",
        ]
    )


if __name__ == "__main__":
    main()
