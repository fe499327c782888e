"""The receipt key history (``meta.receipt_key_links``) edited by an insider: a history that
does not parse, or a link to a key of the insider's own that the key before it did not sign,
is an integrity error (exit 6) wherever the history is read; nothing signed by that key
would ever verify. A published history handed to ``verify-receipt`` that is not one, or a
trusted key that is not a key, is refused the same way."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS
from credvault import IntegrityError, InvalidInput, ReceiptKeys, Vault
from credvault.crypto import primitives as p
from credvault.receipt_keys import HISTORY_FORMAT, LINKS_META, key_id, make_link


@pytest.fixture(scope="module")
def vault_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One vault for the module; each test puts the stored history back."""
    path = tmp_path_factory.mktemp("receipt-history") / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    return path


def _open(path: Path) -> Vault:
    return Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF)


def _forged_links(vault_id: str, current: bytes) -> dict[str, list[object]]:
    mine = p.random_key()  # the insider's signing key (32 bytes: an Ed25519 seed)
    successor = p.ed25519_public(p.random_key())
    signed_by_mine = make_link(vault_id, 1, mine, successor, "2030-01-01T00:00:00Z")
    # claim the real key as predecessor, signature still the insider's
    claimed = {**signed_by_mine, "predecessor": key_id(current)}
    bad_base64 = {**claimed, "signature": "not base64!"}
    return {
        "signed-by-another-key": [signed_by_mine],
        "claims-the-real-predecessor": [claimed],
        "signature-not-base64": [bad_base64],
        "missing-field": [{k: v for k, v in claimed.items() if k != "valid_from"}],
    }


@pytest.mark.parametrize(
    "edit",
    ["not-json", "not-a-list", "signed-by-another-key", "claims-the-real-predecessor",
     "signature-not-base64", "missing-field"],
)  # fmt: skip
def test_an_edited_history_is_an_integrity_error(vault_path: Path, edit: str) -> None:
    with _open(vault_path) as v:
        first = v.receipt_keys().current.public_key
        forged = _forged_links(v.vault_id, first)
        stored = {"not-json": "[{", "not-a-list": json.dumps({"seq": 1})}.get(edit)
        before = v._s.store.get_meta(LINKS_META)
        with v._s.store.write():
            v._s.store.set_meta(LINKS_META, stored or json.dumps(forged[edit]))
        try:
            with pytest.raises(IntegrityError, match="receipt key history"):
                v.receipt_keys()
        finally:
            assert before is None  # a new vault: its first receipt key, no links yet
            v._s.store.conn.execute("DELETE FROM meta WHERE key = ?", (LINKS_META,))
        assert v.receipt_keys().current.public_key == first


def test_a_published_history_is_checked_before_it_is_trusted(vault_path: Path) -> None:
    with _open(vault_path) as v:
        history = v.receipt_keys()
        published = history.to_json()
        first = history.current.public_key
    trusted = base64.b64encode(first).decode()
    assert ReceiptKeys.from_json(published, trusted).current.public_key == first
    with pytest.raises(InvalidInput, match="public key: expected base64"):
        ReceiptKeys.from_json(published, "not base64!")
    with pytest.raises(InvalidInput, match="public key: expected 32 bytes"):
        ReceiptKeys.from_json(published, base64.b64encode(first[:16]).decode())
    for not_history in ({"format": "other"}, {"format": HISTORY_FORMAT, "keys": {}}, []):
        with pytest.raises(IntegrityError, match="not a credvault receipt key history"):
            ReceiptKeys.from_json(not_history, trusted)
