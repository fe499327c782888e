"""The purge ledger: the signed record of what was destroyed, kept outside the database so
that it outlives it.

A ledger file is one JSON line per purge receipt (the receipt's RFC 8785 text, signed by
the vault's receipt key, see docs/format.md §11), preceded by one header line
``{"format": "credvault-purge-ledger/1", "vault_id": …, "as_of": …}``. Every receipt
stands on its own signature, so a ledger needs no signature of its own: a forged or
altered line is ignored, a missing one is the only loss. Copies are kept

* in the vault directory (``purge-ledger.jsonl``), rewritten after every purge;
* beside the backups (``credvault-ledger-<vault id>.jsonl``), rewritten by every backup
  into that directory and by every purge in the default one;
* inside every backup, as the tombstones of its database.

``restore`` reads all it can find and destroys at once every engagement another record
says was destroyed (:func:`destroyed_elsewhere`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault.errors import CredvaultError
from credvault.files import atomic_write
from credvault.jcs import canonical

if TYPE_CHECKING:
    from credvault.receipt_keys import ReceiptKeys
    from credvault.session import Session

LEDGER_FORMAT = "credvault-purge-ledger/1"
VAULT_LEDGER = "purge-ledger.jsonl"
MAX_LEDGER_BYTES = 64 * 1024 * 1024


def backup_ledger_name(vault_id: str) -> str:
    return f"credvault-ledger-{vault_id}.jsonl"


def ledger_bytes(s: Session) -> bytes:
    """The whole ledger of this vault as of now: the header, the receipt key links (so a
    restored older backup can follow the keys to receipts signed after it), the receipts."""
    from credvault.receipt_keys import LINKS_META, ReceiptKeys, link_text

    head = {"format": LEDGER_FORMAT, "vault_id": s.vault_id.hex(), "as_of": s.now()}
    lines = [canonical(head).decode()]
    keys = ReceiptKeys.from_meta(
        s.vault_id.hex(), s.slots.receipt_pub, s.store.get_meta(LINKS_META)
    )
    lines += [link_text(link) for link in keys.links()]
    lines += [text for _, text in s.store.purged_receipts()]
    return ("\n".join(lines) + "\n").encode()


def write_ledgers(s: Session, *directories: Path) -> None:
    """Rewrite the vault's own ledger and the one in each of ``directories`` that exists
    (best effort for the latter: a backup disk may be away)."""
    data = ledger_bytes(s)
    atomic_write(s.path / VAULT_LEDGER, data)
    for d in directories:
        if d.is_dir():
            try:
                atomic_write(d / backup_ledger_name(s.vault_id.hex()), data)
            except OSError:
                continue


class Record(NamedTuple):
    engagement: str
    purged_at: str
    source: str


def read_ledger(path: Path, vault_id: str, keys: ReceiptKeys) -> tuple[list[Record], str | None]:
    """The verified receipts of ``vault_id`` in the ledger at ``path`` and its ``as_of``;
    lines that do not verify are skipped. Receipt key links in the file extend ``keys``
    (a link counts only if a key already trusted signed it)."""
    from credvault.receipt_keys import KEY_FORMAT
    from credvault.receipts import verify_receipt

    try:
        with path.open("rb") as f:
            data = f.read(MAX_LEDGER_BYTES)
    except OSError:
        return [], None
    out: list[Record] = []
    as_of = None
    items = []
    for raw in data.splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            items.append(item)
    keys = keys.extended(i for i in items if i.get("format") == KEY_FORMAT)
    for item in items:
        if item.get("format") == KEY_FORMAT:
            continue
        if item.get("format") == LEDGER_FORMAT:
            if item.get("vault_id") == vault_id and isinstance(item.get("as_of"), str):
                as_of = max(as_of or "", str(item["as_of"]))
            continue
        try:
            body = verify_receipt(item, keys)
        except CredvaultError:
            continue
        if body.get("vault_id") == vault_id and isinstance(body.get("engagement"), str):
            out.append(Record(str(body["engagement"]), str(body.get("purged_at")), str(path)))
    return out, as_of


class LedgerSearch(NamedTuple):
    """What a restore found: records by engagement, where it looked, and the newest time any
    record speaks for (None: nothing newer than the backup itself)."""

    records: dict[str, Record]
    looked_in: list[str]
    newest: str | None


def search(paths: list[Path], vault_id: str, keys: ReceiptKeys) -> LedgerSearch:
    records: dict[str, Record] = {}
    looked: list[str] = []
    newest: str | None = None
    for p in paths:
        if not p.is_file():
            continue
        looked.append(str(p))
        found, as_of = read_ledger(p, vault_id, keys)
        for r in found:
            records.setdefault(r.engagement, r)
            newest = max(newest or "", r.purged_at)
        if as_of:
            newest = max(newest or "", as_of)
    return LedgerSearch(records, looked, newest)
