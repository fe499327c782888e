"""A team vault's purge ledger: every receipt signed on this machine, kept outside the
database, and what an admin's purge destroys again after the database was restored from a
dump made before a purge (issue 14; docs/team.md, "Backups").

The SQLCipher vault writes its ledger from its own database (:mod:`credvault.ledger`). A
team vault's database is exactly what a restore rolls back, so the record lives where the
receipt is signed: every purge, shred or completion receipt this machine signs and stores
is also appended (:func:`credvault.ledger.append_to_ledger`, the same file format) to

* ``$XDG_STATE_HOME/credvault/team/<database>/purge-ledger.jsonl`` (else
  ``~/.local/state/…``), beside the member's log witness: always; a failure to write it
  fails the command (exit 1), after the destruction it records;
* ``$CREDVAULT_LEDGER_DIR/credvault-ledger-<vault id>.jsonl`` if that variable names a
  directory (the one the dumps go to, say): best effort, as SQLCipher's copy beside the
  backups (the disk may be away).

Every ``credvault purge`` by an admin reads those copies, and ``purge --ledger FILE`` the
files named too; a receipt counts only if it verifies against a signing key this client
trusts without the database's word: the admin's own key (their slot), or an active
admin's key certified by the chain that ends at the founder their slot pins. An engagement
a verified receipt names that the database shows alive is destroyed again by the server's
own destruction (``destroy_engagement(name, 'ledger')``), with a new receipt, audited.

Every close, hold, release and ``config set purge-grace-days`` (for each engagement whose
purge date it moves) likewise appends a close record (SQLCipher's, signed with the
member's own key): the purge gives each engagement the state of its newest record through
the server's ``reapply_close``, which applies it only if the database knows no lifecycle
change at or after the record's time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault.receipt_keys import ReceiptKey, ReceiptKeys, key_id

if TYPE_CHECKING:
    from credvault.ledger import CloseRecord
    from credvault.model import Engagement
    from credvault.team_handle import TeamHandle

LEDGER_DIR_ENV = "CREDVAULT_LEDGER_DIR"
LEDGER_NAME = "purge-ledger.jsonl"

__all__ = ["LEDGER_DIR_ENV", "LedgerRestore", "PinnedKeys", "destroy_again", "keep", "own_ledgers"]


class PinnedKeys(ReceiptKeys):
    """Signing keys trusted each on its own (no chain of links between them): what a team
    receipt in a ledger must be signed by. None is ever retired, so none has a period."""

    def __init__(self, vault_id: str, keys: Iterable[bytes]) -> None:
        ordered = list(dict.fromkeys(bytes(k) for k in keys))
        super().__init__(vault_id, ordered[0])
        self.keys += [ReceiptKey(k, key_id(k), None, None, None) for k in ordered[1:]]

    def extended(self, links: Iterable[object]) -> ReceiptKeys:
        """A team vault has no receipt key history: links in a ledger add nothing."""
        return self


class LedgerRestore(NamedTuple):
    """What an admin's purge found in the ledgers: engagements destroyed again now, the files
    read, the lines ignored (``FILE:N: why``), how many receipts verified, and the
    engagements given back the state a newer close record states (closed, held, released
    after the dump)."""

    destroyed_again: list[str]
    looked_in: list[str]
    ignored: list[str]
    receipts: int
    closed_again: list[str]


def state_ledger(database: str) -> Path:
    """This machine's ledger of ``database`` (beside the member's log witness)."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "credvault" / "team" / database / LEDGER_NAME


def named_copy(vault_id: str) -> Path | None:
    """The copy in the directory ``$CREDVAULT_LEDGER_DIR`` names, if it names one."""
    from credvault.ledger import backup_ledger_name

    d = os.environ.get(LEDGER_DIR_ENV)
    return Path(d) / backup_ledger_name(vault_id) if d else None


def own_ledgers(database: str, vault_id: str) -> list[Path]:
    """Every copy this machine keeps of the vault's ledger."""
    extra = named_copy(vault_id)
    return [state_ledger(database), *([extra] if extra is not None else [])]


def keep_close(t: TeamHandle, eng: Engagement) -> None:
    """Sign the closed engagement ``eng``'s state (after a close, hold or release) as a
    close record with this member's own key, and append it to this machine's ledger."""
    from credvault.ledger import close_record_text
    from credvault.model import iso

    if eng.state != "closed" or not eng.closed_at or not eng.purge_due:
        return
    now = iso(datetime.now(UTC))
    keep(t, close_record_text(t.keys.sign_private, t.vault_id.hex(), eng, now), now)


def keep_closes(t: TeamHandle, engs: Sequence[Engagement]) -> None:
    """:func:`keep_close` for each of ``engs`` whose purge date ``config set
    purge-grace-days`` just moved, as of one time, appended at once (as SQLCipher rewrites
    its ledgers after the change: lifecycle.record_state)."""
    from credvault.ledger import close_record_text
    from credvault.model import iso

    now = iso(datetime.now(UTC))
    texts = [
        close_record_text(t.keys.sign_private, t.vault_id.hex(), eng, now)
        for eng in engs
        if eng.state == "closed" and eng.closed_at and eng.purge_due
    ]
    if texts:
        keep_all(t, texts, now)


def keep(t: TeamHandle, text: str, now: str | None = None) -> None:
    """Append the receipt (or close record) ``text`` just made to this machine's ledger
    copies."""
    keep_all(t, [text], now)


def keep_all(t: TeamHandle, texts: list[str], now: str | None = None) -> None:
    """:func:`keep` for several lines, after one header."""
    from credvault.files import make_private_dir, named
    from credvault.ledger import append_to_ledger
    from credvault.model import iso

    vid = t.vault_id.hex()
    now = now or iso(datetime.now(UTC))
    own = state_ledger(t.database)
    try:
        make_private_dir(own.parent)
        append_to_ledger(own, vid, now, texts)
    except OSError as e:
        raise named(e, own) from None
    extra = named_copy(vid)
    if extra is not None and extra.parent.is_dir():
        with contextlib.suppress(OSError):  # best effort, as the copy beside the backups
            append_to_ledger(extra, vid, now, texts)


class Destroyer(NamedTuple):
    """What :func:`destroy_again` needs of the team vault, given by ``team.py``."""

    # (state, created_at) of the engagement of that name; None: not in this database
    lifecycle_state: Callable[[str], tuple[str, str] | None]
    destroy: Callable[[str], object]  # the purge's destruction, reason "ledger"
    # the state a close record gives back: 'ok' when changed (server: reapply_close)
    reclose: Callable[[CloseRecord], str]


def destroy_again(
    t: TeamHandle,
    destroyer: Destroyer,
    trusted: Callable[[], list[bytes]],
    ledgers: Sequence[Path] = (),
) -> LedgerRestore:
    """Destroy again every engagement a verified receipt in this machine's ledgers or in
    ``ledgers`` names and the database shows alive (not purged)."""
    from credvault.ledger import Record, newest_close, read_ledger_checked

    vid = t.vault_id.hex()
    paths = [*own_ledgers(t.database, vid), *(Path(p) for p in ledgers)]
    looked: list[str] = []
    ignored: list[str] = []
    records: dict[str, Record] = {}
    closes: dict[str, CloseRecord] = {}
    n = 0
    keys: PinnedKeys | None = None
    explicit = {Path(p) for p in ledgers}
    for path in dict.fromkeys(paths):
        if not path.is_file():
            if path in explicit:
                ignored.append(f"{path}: no such file")
            continue
        keys = keys or PinnedKeys(vid, trusted())
        read = read_ledger_checked(path, vid, keys)
        looked.append(str(path))
        ignored += read.rejected
        n += len(read.records)
        for rec in read.records:
            records.setdefault(rec.engagement, rec)
        for c in read.closes:
            newest_close(closes, c)
    destroyed: list[str] = []
    for name in sorted(records):
        found = destroyer.lifecycle_state(name)
        if found is None or found[0] == "purged":
            continue
        rec = records[name]
        if rec.created_at is not None and rec.created_at != found[1]:
            # made again under that name after the restore: not the engagement destroyed
            ignored.append(
                f"{rec.source}: receipt of {name!r} is of the engagement made "
                f"{rec.created_at[:19]}, not of the one of that name made {found[1][:19]}: "
                "not destroyed"
            )
            continue
        destroyer.destroy(name)
        destroyed.append(name)
    reclosed = [
        name
        for name in sorted(closes)
        if name not in records and destroyer.reclose(closes[name]) == "ok"
    ]
    return LedgerRestore(destroyed, looked, ignored, n, reclosed)
