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

A PostgreSQL team vault keeps the same file on the machine that signs each team receipt
(:mod:`credvault.team_ledger`): there the database cannot write the ledger whole, so each
signed receipt is appended with a header line of its own (:func:`append_to_ledger`), and
the reader takes the newest ``as_of`` of the vault's headers as it always has.

A ledger also carries one **close record** per closed engagement (``"format":
"credvault-lifecycle-record/1"``): its close date, purge date and retention hold as of the
ledger's writing, signed by the same key under its own label (so it never verifies as a
purge receipt, and a reader that predates it skips it). It is rewritten on every close,
hold, release and change of the vault's grace period. A restore applies the newest record
newer than the backup, so an engagement closed (or held, or released) after the backup
comes back in that state, not active: its purge is not escaped, nor brought forward past
a hold the client asked for.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault.errors import CredvaultError, IntegrityError
from credvault.files import atomic_write
from credvault.jcs import canonical

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.receipt_keys import ReceiptKeys
    from credvault.session import Session

LEDGER_FORMAT = "credvault-purge-ledger/1"
CLOSE_FORMAT = "credvault-lifecycle-record/1"
VAULT_LEDGER = "purge-ledger.jsonl"
MAX_LEDGER_BYTES = 64 * 1024 * 1024


def receipt_history(s: Session) -> ReceiptKeys:
    """The vault's receipt keys: the first from the key-slot file, each later one introduced
    by a link its predecessor signed (``meta.receipt_key_links``, see :mod:`receipt_keys`)."""
    from credvault.receipt_keys import LINKS_META, ReceiptKeys

    return ReceiptKeys.from_meta(
        s.vault_id.hex(), s.slots.receipt_pub, s.store.get_meta(LINKS_META)
    )


def receipt_key(s: Session) -> bytes:
    """The current receipt signing key. It lives in the database (encrypted by SQLCipher),
    so any process that can open the vault, including an unattended purge, can sign a
    receipt (and a close record, below); a member who leaves takes only a key that has a
    successor (:func:`credvault.purge.succeed_receipt_key`)."""
    from credvault.crypto import primitives as p

    blob = s.store.get_meta("receipt_key")
    if blob is None:
        raise IntegrityError("vault has no receipt signing key")
    priv = p.KeyBytes(blob)
    if len(priv) != 32 or p.ed25519_public(priv) != receipt_history(s).current.public_key:
        raise IntegrityError("receipt signing key does not match the vault's public key")
    return priv


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
    lines += close_records(s, head["as_of"])
    return ("\n".join(lines) + "\n").encode()


def close_records(s: Session, as_of: str) -> list[str]:
    """One signed close record (JCS text) per closed engagement, as of ``as_of``."""
    out: list[str] = []
    key: bytes | None = None
    for eng in s.store.engagements():
        if eng.state != "closed" or not eng.closed_at or not eng.purge_due:
            continue
        key = key or receipt_key(s)
        out.append(close_record_text(key, s.vault_id.hex(), eng, as_of))
    return out


def close_record_text(key: bytes, vault_id: str, eng: Engagement, as_of: str) -> str:
    """The closed engagement ``eng``'s close record as of ``as_of``, signed with ``key``
    (the vault's receipt key; on a team vault the closing member's own signing key)."""
    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.receipts import key_id

    body: dict[str, object] = {
        "format": CLOSE_FORMAT,
        "vault_id": vault_id,
        "key_id": key_id(p.ed25519_public(key)),
        "engagement": eng.name,
        "closed_at": eng.closed_at,
        "grace_days": eng.grace_days,
        "purge_due": eng.purge_due,
        "hold_until": eng.hold_until,
        "hold_reason": eng.hold_reason,
        "hold_by": eng.hold_by,
        "as_of": as_of,
    }
    sig = p.sign(key, labels.CLOSE_SIG, canonical(body))
    return canonical({**body, "signature": base64.b64encode(sig).decode()}).decode()


class CloseRecord(NamedTuple):
    """A closed engagement's lifecycle state as a ledger recorded it at ``as_of``."""

    engagement: str
    closed_at: str
    grace_days: int | None
    purge_due: str
    hold_until: str | None
    hold_reason: str | None
    hold_by: str | None
    as_of: str
    source: str


def _close_record(
    item: dict[str, object], vault_id: str, keys: ReceiptKeys, source: str
) -> CloseRecord | None:
    """``item`` as a :class:`CloseRecord` if it is one of this vault's, signed by the receipt
    key it names while that key was current (a retired key, which a former member may
    hold, signs nothing dated after its retirement)."""
    from credvault.crypto import labels
    from credvault.crypto import primitives as p

    body = {k: v for k, v in item.items() if k != "signature"}
    signer = keys.by_id(str(body.get("key_id")))
    if signer is None:
        return None
    try:
        sig = base64.b64decode(str(item["signature"]), validate=True)
        p.verify(signer.public_key, labels.CLOSE_SIG, canonical(body), sig, "close record")
    except (KeyError, ValueError, CredvaultError):
        return None
    as_of = body.get("as_of")
    if signer.valid_until is not None and (
        not isinstance(as_of, str) or as_of >= signer.valid_until
    ):
        return None
    texts = ("engagement", "closed_at", "purge_due", "as_of")
    if body.get("vault_id") != vault_id or not all(isinstance(body.get(k), str) for k in texts):
        return None
    grace = body.get("grace_days")

    def opt(k: str) -> str | None:
        v = body.get(k)
        return v if isinstance(v, str) else None

    return CloseRecord(
        str(body["engagement"]),
        str(body["closed_at"]),
        grace if isinstance(grace, int) and not isinstance(grace, bool) else None,
        str(body["purge_due"]),
        opt("hold_until"),
        opt("hold_reason"),
        opt("hold_by"),
        str(body["as_of"]),
        source,
    )


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
    # when the engagement destroyed was made, as its receipt states: a team vault destroys
    # again only the engagement of that name made then, never a later one of the same name
    created_at: str | None = None


def read_ledger(path: Path, vault_id: str, keys: ReceiptKeys) -> tuple[list[Record], str | None]:
    """The verified receipts of ``vault_id`` in the ledger at ``path`` and its ``as_of``;
    lines that do not verify are skipped. Receipt key links in the file extend ``keys``
    (a link counts only if a key already trusted signed it)."""
    records, as_of, _ = read_ledger_all(path, vault_id, keys)
    return records, as_of


def read_ledger_all(
    path: Path, vault_id: str, keys: ReceiptKeys
) -> tuple[list[Record], str | None, list[CloseRecord]]:
    """:func:`read_ledger`, and the verified close records."""
    found = read_ledger_checked(path, vault_id, keys)
    return found.records, found.as_of, found.closes


class LedgerRead(NamedTuple):
    """One ledger file as read: what verified, and each line that did not (``FILE:N: why``:
    a forged or edited line is ignored, never silently)."""

    records: list[Record]
    as_of: str | None
    closes: list[CloseRecord]
    rejected: list[str]


def read_ledger_checked(path: Path, vault_id: str, keys: ReceiptKeys) -> LedgerRead:
    """:func:`read_ledger_all`, naming the lines that were ignored: not JSON, or a receipt
    (or close record) whose signature does not verify against ``keys``. Lines of another
    vault, and links that do not follow, are not named (a ledger directory may be shared)."""
    from credvault.receipt_keys import KEY_FORMAT
    from credvault.receipts import verify_receipt

    try:
        with path.open("rb") as f:
            data = f.read(MAX_LEDGER_BYTES)
    except OSError:
        return LedgerRead([], None, [], [])
    out: list[Record] = []
    closes: list[CloseRecord] = []
    rejected: list[str] = []
    as_of = None
    items: list[tuple[int, dict[str, object]]] = []
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            rejected.append(f"{path}:{n}: not a JSON line")
            continue
        if isinstance(item, dict):
            items.append((n, item))
        else:
            rejected.append(f"{path}:{n}: not a JSON object")
    keys = keys.extended(i for _, i in items if i.get("format") == KEY_FORMAT)
    for n, item in items:
        if item.get("format") == KEY_FORMAT:
            continue
        if item.get("format") == LEDGER_FORMAT:
            if item.get("vault_id") == vault_id and isinstance(item.get("as_of"), str):
                as_of = max(as_of or "", str(item["as_of"]))
            continue
        if item.get("format") == CLOSE_FORMAT:
            rec = _close_record(item, vault_id, keys, str(path))
            if rec is not None:
                closes.append(rec)
            elif item.get("vault_id") == vault_id:
                rejected.append(f"{path}:{n}: close record not signed by a trusted key")
            continue
        try:
            body = verify_receipt(item, keys)
        except CredvaultError as e:
            if item.get("vault_id") == vault_id or item.get("vault_id") is None:
                what = item.get("engagement")
                name = f" of {what!r}" if isinstance(what, str) else ""
                rejected.append(f"{path}:{n}: receipt{name} ignored ({e})")
            continue
        if body.get("vault_id") == vault_id and isinstance(body.get("engagement"), str):
            made = body.get("created_at")
            out.append(
                Record(
                    str(body["engagement"]),
                    str(body.get("purged_at")),
                    str(path),
                    made if isinstance(made, str) else None,
                )
            )
    return LedgerRead(out, as_of, closes, rejected)


def append_to_ledger(path: Path, vault_id: str, as_of: str, lines: list[str]) -> None:
    """Append ``lines`` (signed receipts, one JCS line each) to the ledger at ``path``,
    after a header line of their own; the file is made (0600) if missing.

    One ``write`` in ``O_APPEND`` mode, then fsync: processes appending at once (two
    admins' automatic purges on one machine) never interleave inside a line, and nothing
    already in the file is rewritten, so a crash loses at most the lines being added."""
    import os

    from credvault.files import write_all

    head = canonical({"format": LEDGER_FORMAT, "vault_id": vault_id, "as_of": as_of}).decode()
    data = ("\n".join([head, *lines]) + "\n").encode()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class LedgerSearch(NamedTuple):
    """What a restore found: records by engagement, where it looked, and the newest time any
    record speaks for (None: nothing newer than the backup itself)."""

    records: dict[str, Record]
    looked_in: list[str]
    newest: str | None
    closes: dict[str, CloseRecord]  # the newest close record per engagement


def newest_close(closes: dict[str, CloseRecord], rec: CloseRecord) -> None:
    """Keep in ``closes`` the newest record of ``rec``'s engagement."""
    have = closes.get(rec.engagement)
    if have is None or rec.as_of > have.as_of:
        closes[rec.engagement] = rec


def search(paths: list[Path], vault_id: str, keys: ReceiptKeys) -> LedgerSearch:
    records: dict[str, Record] = {}
    closes: dict[str, CloseRecord] = {}
    looked: list[str] = []
    newest: str | None = None
    for p in paths:
        if not p.is_file():
            continue
        looked.append(str(p))
        found, as_of, closed = read_ledger_all(p, vault_id, keys)
        for r in found:
            records.setdefault(r.engagement, r)
            newest = max(newest or "", r.purged_at)
        for c in closed:
            newest_close(closes, c)
        if as_of:
            newest = max(newest or "", as_of)
    return LedgerSearch(records, looked, newest, closes)
