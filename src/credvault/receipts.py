"""Purge receipts without a vault: their canonical form (RFC 8785), the name of the key that
signs them, and their verification (what a client runs; format 1 receipts still verify).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput
from credvault.jcs import canonical
from credvault.receipt_keys import key_id
from credvault.results import Receipt

if TYPE_CHECKING:
    from credvault.receipt_keys import ReceiptKeys

RECEIPT_FORMAT = "credvault-purge-receipt/2"
OLD_RECEIPT_FORMAT = "credvault-purge-receipt/1"

__all__ = [
    "OLD_RECEIPT_FORMAT",
    "RECEIPT_FORMAT",
    "key_id",
    "receipt_message",
    "receipt_text",
    "verify_receipt",
]


def receipt_message(body: dict[str, object]) -> bytes:
    """What a format-2 receipt's signature covers: the label, then the JCS form of every
    member but ``signature`` (``public_key`` and ``key_id`` included: a receipt names the
    key that signed it)."""
    return labels.RECEIPT_SIG + canonical(body)


def receipt_text(receipt: dict[str, object]) -> str:
    """A receipt as stored and as handed to a client: its JCS form, one line."""
    return canonical(receipt).decode("utf-8")


def verify_receipt(
    receipt: Receipt | dict[str, object] | str,
    public_key: bytes | str | ReceiptKeys | None = None,
) -> dict[str, object]:
    """Check a purge receipt's signature; returns its body. A client can run this too.

    ``public_key`` is the vault's public key (``credvault info --public-key``), raw or base64,
    or the vault's receipt key history (:class:`~credvault.receipt_keys.ReceiptKeys`): then
    the receipt must be signed by the key of the history it names, and its facts must
    predate that key's retirement. Without it the key embedded in the receipt is used,
    which proves integrity but not origin (the CLI's ``verify-receipt`` refuses to call
    that valid). Format-2 receipts also name their key (``key_id``) and must be signed by
    the key they name.
    """
    if isinstance(receipt, Receipt):
        receipt = receipt.to_json()
    try:
        data = json.loads(receipt) if isinstance(receipt, str) else dict(receipt)
    except (ValueError, TypeError):
        raise IntegrityError("not a signed credvault receipt") from None
    if not isinstance(data, dict):
        raise IntegrityError("not a signed credvault receipt")
    old = data.get("format") in (OLD_RECEIPT_FORMAT, None)
    try:
        sig = base64.b64decode(str(data.pop("signature")), validate=True)
        embedded_text = data.pop("public_key") if old else data["public_key"]
        embedded = base64.b64decode(str(embedded_text), validate=True)
    except (KeyError, ValueError):
        raise IntegrityError("not a signed credvault receipt") from None
    history = None
    if public_key is None:
        pub = embedded
    elif not isinstance(public_key, str | bytes | bytearray | memoryview):
        history = public_key
        known = history.by_id(key_id(embedded))
        if known is None:
            raise IntegrityError("purge receipt: signed by a key not in the vault's key history")
        pub = known.public_key
    elif isinstance(public_key, str):
        try:
            pub = base64.b64decode(public_key.strip(), validate=True)
        except ValueError:
            raise InvalidInput("public key: expected base64") from None
    else:
        pub = bytes(public_key)
    if old:
        msg = labels.RECEIPT_SIG + json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    else:
        if data.get("key_id") != key_id(embedded) or embedded != bytes(pub):
            raise IntegrityError("purge receipt: signed by another key than the one given")
        try:
            msg = receipt_message(data)
        except ValueError:
            raise IntegrityError("purge receipt: not canonical JSON") from None
    p.verify(pub, b"", msg, sig, "purge receipt")
    if history is not None:
        history.check_period(key_id(embedded), data)
    if not old:
        data = {k: v for k, v in data.items() if k not in ("public_key", "key_id")}
    return data
