"""The vault's receipt keys and their history: each key signs its successor forward.

The receipt signing key lives in the database, which every member can read, so a member
who leaves (``member rm``) or whose keys may be known (``passwd --compromised``) could sign
receipts with it for ever. Each such change therefore makes a *successor*: a new Ed25519
key, written only into the re-keyed database (which the former member cannot open), and a
*link* — the JCS text naming the successor, signed by the key it replaces under
:data:`~credvault.crypto.labels.RECEIPT_KEY_SIG`. The first key (``receipt_pub`` in the
key-slot file, what ``credvault info --public-key`` printed before any change) needs no
link: clients were given it. A client who trusts any key of the chain can follow the links
forward with openssl alone (docs/verify-receipt-key.sh) and check every later receipt.

A key is valid from the time its link names until the time its successor's link names;
a receipt verifies only against the key its ``key_id`` names, and only if the facts it
states (``purged_at``, ``destruction_complete_at``) predate that key's end. So a former
member holding an old key can sign only receipts that claim to predate their departure
(docs/security.md says so), never one dated after it.

This module is pure: links in, keys out; no SQL, no clock. Format: docs/format.md §11b.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput
from credvault.jcs import canonical

KEY_FORMAT = "credvault-receipt-key/1"
HISTORY_FORMAT = "credvault-receipt-keys/1"
LINK_FIELDS = frozenset(
    {"format", "vault_id", "seq", "predecessor", "public_key", "key_id", "valid_from", "signature"}
)
LINKS_META = "receipt_key_links"  # where the vault keeps its links: a JSON list in ``meta``
MAX_LINKS = 10_000  # one per member removal: far more than a vault sees


def key_id(public_key: bytes) -> str:
    """The name of a receipt key: SHA-256 of the raw 32-byte Ed25519 public key, hex."""
    return hashlib.sha256(public_key).hexdigest()


class ReceiptKey(NamedTuple):
    """One receipt key: ``valid_from`` None for the first; ``valid_until`` None for the
    current one; ``link`` the signed statement that introduced it (None for the first)."""

    public_key: bytes
    key_id: str
    valid_from: str | None
    valid_until: str | None
    link: dict[str, object] | None

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "link": self.link,
        }


def link_message(body: Mapping[str, object]) -> bytes:
    """What a link's signature covers: the label, then the JCS form of every member but
    ``signature`` (the same construction as a receipt's, so the same openssl steps work)."""
    return labels.RECEIPT_KEY_SIG + canonical(dict(body))


def make_link(
    vault_id: str, seq: int, predecessor_private: bytes, successor_public: bytes, valid_from: str
) -> dict[str, object]:
    """The link by which the key ``predecessor_private`` hands over to ``successor_public``."""
    body: dict[str, object] = {
        "format": KEY_FORMAT,
        "vault_id": vault_id,
        "seq": seq,
        "predecessor": key_id(p.ed25519_public(predecessor_private)),
        "public_key": base64.b64encode(successor_public).decode(),
        "key_id": key_id(successor_public),
        "valid_from": valid_from,
    }
    sig = p.sign(predecessor_private, b"", link_message(body))
    return {**body, "signature": base64.b64encode(sig).decode()}


def link_text(link: Mapping[str, object]) -> str:
    """A link as published: its JCS form, one line (what verify-receipt-key.sh reads)."""
    return canonical(dict(link)).decode("utf-8")


class ReceiptKeys:
    """A verified chain of receipt keys starting at a trusted one."""

    def __init__(
        self, vault_id: str, first: bytes, links: Iterable[object] = (), first_seq: int = 0
    ) -> None:
        """Verify ``links`` forward from ``first`` (the key the holder trusts, at position
        ``first_seq`` of the vault's chain); a link that does not follow is
        :class:`IntegrityError` (use :meth:`extended` to skip them)."""
        self.vault_id = vault_id
        self.first_seq = first_seq
        self.keys: list[ReceiptKey] = [ReceiptKey(bytes(first), key_id(first), None, None, None)]
        for link in links:
            if not self._follow(link):
                raise IntegrityError(
                    f"receipt key history: link {len(self.keys)} is not signed by the key before it"
                )

    @classmethod
    def from_meta(cls, vault_id: str, first: bytes, stored: object) -> ReceiptKeys:
        """The history as stored in the vault (``meta.receipt_key_links``: a JSON list)."""
        if stored is None:
            return cls(vault_id, first)
        try:
            links = json.loads(stored if isinstance(stored, str | bytes) else "")
        except ValueError:
            raise IntegrityError("receipt key history is corrupt") from None
        if not isinstance(links, list) or len(links) > MAX_LINKS:
            raise IntegrityError("receipt key history is corrupt")
        return cls(vault_id, first, links)

    def _follow(self, link: object) -> bool:
        """Append ``link`` if it is the next one, signed by the current key."""
        if not isinstance(link, dict) or set(link) != LINK_FIELDS:
            return False
        cur = self.keys[-1]
        body = {k: v for k, v in link.items() if k != "signature"}
        try:
            sig = base64.b64decode(str(link["signature"]), validate=True)
            pub = base64.b64decode(str(link["public_key"]), validate=True)
            msg = link_message(body)
        except ValueError:
            return False
        frm = link["valid_from"]
        if (
            link["format"] != KEY_FORMAT
            or link["vault_id"] != self.vault_id
            or link["seq"] != self.next_seq
            or link["predecessor"] != cur.key_id
            or len(pub) != 32
            or link["key_id"] != key_id(pub)
            or not isinstance(frm, str)
            or (cur.valid_from is not None and frm < cur.valid_from)
        ):
            return False
        try:
            p.verify(cur.public_key, b"", msg, sig, "receipt key link")
        except IntegrityError:
            return False
        self.keys[-1] = cur._replace(valid_until=frm)
        self.keys.append(ReceiptKey(pub, key_id(pub), frm, None, dict(link)))
        return True

    def extended(self, links: Iterable[object]) -> ReceiptKeys:
        """A copy followed as far as ``links`` (in any order) lead; others are ignored.

        A restore uses this: a ledger written after the backup may hold receipts signed by
        keys the backup never knew, and the links that lead to them from a key it does."""
        out = ReceiptKeys(self.vault_id, self.keys[0].public_key, first_seq=self.first_seq)
        out.keys = list(self.keys)
        pool = [x for x in links if isinstance(x, dict)]
        progress = True
        while progress and pool:
            progress = False
            for link in list(pool):
                if link.get("seq") == out.next_seq and out._follow(link):
                    pool.remove(link)
                    progress = True
        return out

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.keys)

    @property
    def current(self) -> ReceiptKey:
        return self.keys[-1]

    def links(self) -> list[dict[str, object]]:
        return [k.link for k in self.keys if k.link is not None]

    def link_lines(self) -> list[str]:
        """Each link as published: one JCS line (what verify-receipt-key.sh checks)."""
        return [link_text(link) for link in self.links()]

    def by_id(self, kid: str) -> ReceiptKey | None:
        return next((k for k in self.keys if k.key_id == kid), None)

    def check_period(self, kid: str, body: Mapping[str, object]) -> None:
        """The receipt's facts must predate the end of the key that signed it."""
        key = self.by_id(kid)
        if key is None:
            raise IntegrityError("purge receipt: signed by a key not in the vault's history")
        if key.valid_until is None:
            return
        if not isinstance(body.get("purged_at"), str):
            raise IntegrityError(f"purge receipt: undated, signed by retired key {kid[:16]}…")
        for field in ("purged_at", "destruction_complete_at"):
            t = body.get(field)
            if isinstance(t, str) and t >= key.valid_until:
                raise IntegrityError(
                    f"purge receipt: signed by key {kid[:16]}… which was retired at "
                    f"{key.valid_until[:19]}, before its {field}"
                )

    def to_json(self) -> dict[str, object]:
        """The published history (``credvault receipt-keys --json``)."""
        return {
            "format": HISTORY_FORMAT,
            "vault_id": self.vault_id,
            "keys": [k.to_json() for k in self.keys],
        }

    @classmethod
    def from_json(cls, data: object, trusted: bytes | str) -> ReceiptKeys:
        """A published history, followed from ``trusted`` (any key of it the reader trusts,
        raw or base64); links before that key are not needed and links that do not follow
        are ignored."""
        if isinstance(trusted, str):
            try:
                trusted = base64.b64decode(trusted.strip(), validate=True)
            except ValueError:
                raise InvalidInput("public key: expected base64") from None
        if len(trusted) != 32:
            raise InvalidInput("public key: expected 32 bytes")
        if not isinstance(data, dict) or data.get("format") != HISTORY_FORMAT:
            raise IntegrityError("not a credvault receipt key history")
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise IntegrityError("not a credvault receipt key history")
        links = [k.get("link") for k in keys if isinstance(k, dict)]
        start = next(
            (
                lk["seq"]
                for lk in links
                if isinstance(lk, dict)
                and lk.get("key_id") == key_id(trusted)
                and isinstance(lk.get("seq"), int)
            ),
            0,
        )
        assert isinstance(start, int)
        return cls(str(data.get("vault_id")), trusted, first_seq=start).extended(links)
