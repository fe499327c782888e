"""``credvault check``: a full integrity check of a live vault or of a backup file.

What is checked, each independently so one report names every problem found:

* the key-slot file: parsed, and its MAC under the database key;
* every page of the database: SQLCipher's ``cipher_integrity_check`` (the HMAC of each page,
  free pages included, so damage in a page no command reads is found too);
* SQLite's ``integrity_check`` (b-trees, indexes, free list);
* the audit chain, from its anchor to its head;
* every purge receipt held in the vault, against the vault's receipt key.

A backup file is checked on a private temporary copy (nothing in the backup changes); the
checking member must be able to unlock it (an admin or a service identity at the time of
the backup). Problems are integrity problems: the CLI exits 6 listing them.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, NamedTuple

from credvault.errors import CredvaultError

if TYPE_CHECKING:
    from credvault.session import Session


class CheckReport(NamedTuple):
    """What was checked (``checked``, human-readable lines) and what is wrong (``problems``;
    empty when the vault or backup is sound)."""

    target: str
    checked: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_session(s: Session, *, label: str | None = None) -> CheckReport:
    """Check an open vault (admins and service identities); the check is audited."""
    from credvault.keyslots import KeySlots
    from credvault.receipts import verify_receipt
    from credvault.session import SLOTS_NAME

    if not (s.is_admin or s.me.service):
        raise s.deny("check", None, None, "admins and service identities only")
    checked: list[str] = []
    problems: list[str] = []
    try:
        slots = KeySlots.read(s.path / SLOTS_NAME)
        slots.verify_mac(s.db_key)
        checked.append(f"key-slot file: MAC verified ({len(slots.members)} members)")
    except CredvaultError as e:
        problems.append(f"key-slot file: {e}")
    store = s.store
    found = store.integrity_check()
    if found:
        problems += [f"database: {p}" for p in found]
    else:
        checked.append(f"database: {store.page_count()} pages authenticated; SQLite integrity ok")
    try:
        n = s.audit.verify()
        checked.append(f"audit chain: {n} entries verified")
    except CredvaultError as e:
        problems.append(f"audit chain: {e}")
    from credvault.purge import receipt_history

    receipts = 0
    try:
        rows = store.purged_receipts()
        history = receipt_history(s)
        checked.append(f"receipt keys: {len(history.keys)} verified, each signed by the one before")
    except CredvaultError as e:
        problems.append(f"receipts: {e}")
        rows = []
    for name, text in rows:
        try:
            verify_receipt(json.loads(text), history)
            receipts += 1
        except (CredvaultError, ValueError) as e:
            problems.append(f"receipt of {name}: {e}")
    checked.append(f"purge receipts: {receipts} verified")
    with contextlib.suppress(CredvaultError), store.write():
        s.log(
            "check",
            None,
            None,
            "ok" if not problems else "error",
            (f"{label}: " if label else "") + (problems[0][:120] if problems else "sound"),
        )
    return CheckReport(label or str(s.path), checked, problems)
