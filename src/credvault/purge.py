"""Purge: destroy every due engagement, leaving a tombstone and a signed receipt.

Destroying means deleting every credential, system and engagement-key copy (the members'
and the recovery key's) with ``secure_delete`` on, then rewriting the file (VACUUM) and
truncating the WAL so that no byte of the engagement's ciphertext or sealed keys remains in
the vault's files. Destroying every copy of the engagement key is the crypto-shred: an old
copy of the file cannot be opened without it. A purge needs no engagement key.

The delete and the receipt commit in one transaction; the rewrite follows. A crash between
them is finished by the next open (the ``needs_vacuum`` flag), so a purge is never half done.

A purge is complete only when ``wal_checkpoint(TRUNCATE)`` succeeds: while another process
holds a read snapshot older than the delete, the old pages stay in the database file and
the WAL, and SQLite cannot remove them. Then ``needs_vacuum`` stays set, the receipt says
``"destruction_complete_at": null`` and the caller is told; the next purge run or open
finishes it and re-signs the receipt with the time the last copy left the files.

Receipts (format 2) are signed over their RFC 8785 (JCS) canonical form, so that a client
can check one with ``openssl`` alone (docs/for-your-client.md); format-1 receipts (Python
``json.dumps`` canonical form) still verify.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import timedelta
from pathlib import Path

from credvault.clock import clock_hold, mark_high_water
from credvault.crypto import primitives as p
from credvault.engagements import Engagements
from credvault.errors import ClockSuspect, IntegrityError, NotFound, RetentionError
from credvault.ledger import receipt_history, receipt_key
from credvault.model import Engagement, iso
from credvault.receipt_keys import LINKS_META, make_link
from credvault.receipts import (
    RECEIPT_FORMAT,
    key_id,
    receipt_message,
    receipt_text,
    verify_receipt,
)
from credvault.results import PurgePlan, Receipt
from credvault.retention import check_confirmation, purge_reason
from credvault.session import Session

__all__ = [
    "REASONS",
    "PurgePlan",
    "Purger",
    "Receipt",
    "new_receipt_key",
    "receipt_history",
    "receipt_key",
    "sign_receipt",
    "succeed_receipt_key",
    "verify_receipt",
    "write_receipt",
]

# How long an explicit purge waits for other readers to move past the delete before it
# reports the destruction as not yet complete (an automatic purge on open does not wait).
CHECKPOINT_WAIT_S = 5.0
_PENDING = '"destruction_complete_at":null'

REASONS = {
    "grace": "grace period expired",
    "hold": "retention hold expired",
    "request": "client request",
    "ledger": "destroyed after this backup was made",
}


def succeed_receipt_key(s: Session, why: str) -> str:
    """A new receipt key, introduced by a link the current one signs (caller's write
    transaction on the re-keyed database, which a former member cannot open). Returns the
    new key's id."""
    history = receipt_history(s)
    old = receipt_key(s)
    new_priv, new_pub = new_receipt_key()
    link = make_link(s.vault_id.hex(), history.next_seq, old, new_pub, s.now())
    s.store.set_meta(LINKS_META, json.dumps([*history.links(), link]))
    s.store.set_meta("receipt_key", new_priv)
    kid = key_id(new_pub)
    s.log("receipt-key", None, None, "ok", f"{why}; key {kid} succeeds {history.current.key_id}")
    return kid


def new_receipt_key() -> tuple[bytes, bytes]:
    """(private, public) of a vault's receipt signing key."""
    return p.ed25519_generate()


def sign_receipt(s: Session, body: dict[str, object]) -> dict[str, object]:
    pub = receipt_history(s).current.public_key
    full = {**body, "public_key": base64.b64encode(pub).decode(), "key_id": key_id(pub)}
    sig = p.sign(receipt_key(s), b"", receipt_message(full))
    return {**full, "signature": base64.b64encode(sig).decode()}


class Purger:
    def __init__(self, s: Session, engagements: Engagements) -> None:
        self.s = s
        self.e = engagements

    def plan(self) -> list[PurgePlan]:
        now = self.s.now()
        return [
            PurgePlan(eng.name, eng.client, eng.purge_due or "", purge_reason(eng))
            for eng in self.s.store.due_engagements(now)
        ]

    def run_due(
        self, *, automatic: bool, confirm_clock: str | None = None, restoring: bool = False
    ) -> list[PurgePlan]:
        """Purge everything due, expire grants, prune the audit trail and old backups.

        Never on a suspect clock (:mod:`credvault.retention`): an automatic run then does
        nothing (it waits for an explicit one), an explicit run raises :class:`ClockSuspect`
        unless ``confirm_clock`` names the clock's date (admins and service identities; the
        confirmation is audited). A restore (``restoring``) accepts a clock ahead of the
        backup's last purge, which is what an old backup looks like, but not one behind it.
        A purge left incomplete by an earlier run (a reader held an old snapshot) is
        finished first, whatever the clock; :attr:`complete` tells whether every destroyed
        copy has left the files when this returns. No engagement key is needed.
        """
        s = self.s
        if s.store.get_meta("needs_vacuum"):
            self.rewrite(wait_s=0 if automatic else None)
        problem = clock_hold(s, restoring=restoring)
        if confirm_clock is not None:
            self.confirm_clock(confirm_clock, problem)
        elif problem:
            if automatic:
                return []
            raise ClockSuspect(
                f"purge, grant expiry and pruning held: {problem}; if the date is right, "
                f"run `credvault purge --confirm-clock {s.clock():%Y-%m-%d}`"
            )
        done = self.plan()
        for item in done:
            eng = self.e.get(item.engagement)
            self._destroy(eng, item.reason, automatic=automatic)
        self.expire_grants()
        self.prune_audit()
        if self.expire_trash() or done:
            self.rewrite(wait_s=0 if automatic else None)
        if done:
            self.write_ledgers()
        self.prune_backups()
        with s.store.write():
            mark_high_water(s)
        return done

    def confirm_clock(self, date: str, problem: str | None) -> None:
        """An admin or service identity vouches for the clock's date: audited, and the
        vault's high-water time moves to now (also backwards, undoing a wrong one)."""
        s = self.s
        if not s.may_destroy:
            raise s.deny("confirm the clock", None, None, "admins and service identities only")
        check_confirmation(s.clock(), date)
        with s.store.write():
            s.log(
                "clock-confirm",
                None,
                None,
                "ok",
                f"acting on {s.now()}; {problem or 'no doubt'}"[:200],
            )
            s.store.set_meta("time_high_water", s.now())

    @property
    def complete(self) -> bool:
        """No purge of this vault is waiting for its file rewrite."""
        return not self.s.store.get_meta("needs_vacuum")

    def write_ledgers(self) -> None:
        """The record of what was destroyed, outside the database (:mod:`credvault.ledger`):
        in the vault directory and beside the default backups. Best effort: the receipts
        stay in the database, and the next purge or backup writes them again."""
        from credvault.layout import default_backup_dir
        from credvault.ledger import write_ledgers

        with contextlib.suppress(OSError):
            write_ledgers(self.s, default_backup_dir(self.s.path))

    def prune_backups(self) -> int:
        """Backups in the default place older than the backup retention leave with the purge."""
        from credvault.backup import clean_leftovers, prune
        from credvault.layout import default_backup_dir

        s = self.s
        directory = default_backup_dir(s.path)
        if not directory.is_dir():
            return 0
        clean_leftovers(directory, s.vault_id.hex())  # crash leftovers hold full copies
        if clock_hold(s):
            return 0
        days = s.setting("backup-retention-days")
        n = prune(directory, s.vault_id.hex(), s.clock() - timedelta(days=days))
        if n:
            with s.store.write():
                s.log("backup-prune", None, None, "ok", f"{n} backups older than {days} days")
        return n

    def expire_grants(self) -> int:
        s = self.s
        expired = s.store.expired_grants(s.now())
        if not expired:
            return 0
        names = {e.id: e.name for e in self.e.list()}
        with s.store.write():
            for eng_id, member in s.store.expired_grants(s.now()):
                s.store.revoke_grant(eng_id, member, s.now())
                s.store.mark_needs_rotation(eng_id)
                name = names.get(eng_id)
                s.log("grant-expired", name, member, "ok", "key copy deleted; rotation pending")
        s.verified.clear()
        return len(expired)

    def expire_trash(self) -> int:
        """Destroy what has been in the trash past its recovery period. No key needed."""
        s = self.s
        now = s.now()
        if not s.store.anything_in_trash_due(now):
            return 0
        with s.store.write():
            creds, systems = s.store.expired_trash(now)
            for trash_id, uid in creds:
                s.store.destroy_trashed_credential(trash_id, uid)
            for trash_id in systems:
                s.store.destroy_trashed_system(trash_id)
            n = len(creds) + len(systems)
            s.log(
                "trash-expire",
                None,
                None,
                "ok",
                f"{len(creds)} credentials and {len(systems)} systems destroyed",
            )
            s.store.set_meta("needs_vacuum", 1)
        return n

    def destroy_trashed(self, ref: str, *, system: bool = False) -> None:
        """Destroy now the most recently removed credential (or system) of that name in the
        trash, with its history, instead of waiting for its expiry. Writing roles; audited."""
        from credvault import validate

        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.key(eng, "trash.purge", name)
        kind = "system" if system else "credential"
        with s.store.write():
            hit = next((t for t in s.store.trash(eng.id) if t[0] == kind and t[2] == name), None)
            if hit is None:
                raise NotFound(kind, ref, f"{ref} is not in the trash")
            if system:
                s.store.destroy_trashed_system(int(hit[1]))
            else:
                s.store.destroy_trashed_credential(int(hit[1]), bytes(hit[3]))
            s.log("trash-purge", eng.name, name, "ok", f"{kind} removed {hit[4]} destroyed")
            s.store.set_meta("needs_vacuum", 1)
        self.rewrite()

    def prune_audit(self) -> int:
        s = self.s
        cutoff = iso(s.clock() - timedelta(days=s.setting("audit-retention-days")))
        oldest = s.store.audit_oldest_ts()
        if oldest is None or oldest >= cutoff:
            return 0
        with s.store.write():
            return s.audit.prune_before(cutoff, s.now(), s.member)

    def shred(self, name: str) -> Receipt:
        """The client's deletion request: destroy now, whatever the state."""
        s = self.s
        eng = self.e.get(name)
        s.check("engagement.shred", self.e.role_of(eng), eng.name)
        self._destroy(eng, "request", automatic=False)
        self.rewrite()
        self.write_ledgers()
        return self.receipt_of(eng.name)

    def destroy_recorded(self, eng: Engagement, *, note: str) -> Receipt:
        """Destroy ``eng`` at once because a purge ledger records its destruction after the
        backup this vault was restored from (``restore``; no role needed, like a due purge)."""
        return self._destroy(eng, "ledger", automatic=True, note=note)

    def _destroy(
        self, eng: Engagement, reason: str, *, automatic: bool, note: str | None = None
    ) -> Receipt:
        s = self.s
        if eng.state == "purged":
            raise RetentionError(f"engagement {eng.name!r} is already purged")
        now = s.now()
        with s.store.write():
            current = self.e.get(eng.name, allow_purged=True)  # under the lock: purge once
            if current.state == "purged":
                raise RetentionError(f"engagement {eng.name!r} is already purged")
            creds, systems = s.store.count_engagement_items(eng.id)
            versions, t_creds, t_systems = s.store.count_engagement_history(eng.id)
            copies = sum(1 for g in s.store.grants(eng.id) if g.sealed is not None)
            by = f"{s.member} (automatic, on open)" if automatic else s.member
            seq = s.log(
                "purge",
                eng.name,
                None,
                "ok",
                f"{REASONS[reason]}; {creds} credentials, {systems} systems, "
                f"{copies} key copies destroyed"
                + (
                    f"; {versions} earlier versions, {t_creds + t_systems} items in the trash"
                    if versions or t_creds or t_systems
                    else ""
                )
                + (f"; {note}" if note else ""),
            )
            body: dict[str, object] = {
                "format": RECEIPT_FORMAT,
                "vault_id": s.vault_id.hex(),
                "engagement": eng.name,
                "client": eng.client,
                "created_at": eng.created_at,
                "closed_at": eng.closed_at,
                "purged_at": now,
                "reason": REASONS[reason],
                "purged_by": by,
                "destroyed": {
                    "credentials": creds,
                    "systems": systems,
                    "credential_versions": versions,
                    "trashed_credentials": t_creds,
                    "trashed_systems": t_systems,
                    "key_copies": copies,
                    "key_version": eng.key_version,
                    "key_fingerprints": [eng.key_fp],
                },
                "hold": {"until": eng.hold_until, "reason": eng.hold_reason, "by": eng.hold_by}
                if eng.hold_until
                else None,
                "audit_position": seq,
                # set (and the receipt re-signed) once no copy remains in the files
                "destruction_complete_at": None,
                "client_exports": s.store.export_digests(eng.name),
            }
            receipt = sign_receipt(s, body)
            s.store.destroy_engagement_contents(eng.id)
            s.store.mark_purged(eng.id, now, receipt_text(receipt))
            s.store.set_meta("needs_vacuum", 1)
        self.e.keys.forget(eng)
        return Receipt.from_json(receipt)

    def rewrite(self, *, wait_s: float | None = None) -> bool:
        """Reclaim freed pages and truncate the WAL: deleted data and old frames leave the files.

        Deleted rows were zeroed by secure_delete; the checkpoint writes those zeroed pages
        over the old ones in the main file and empties the WAL that held the old frames.
        That first ``TRUNCATE`` checkpoint is the moment of destruction: if another process
        holds a snapshot older than the delete it cannot happen (SQLite reports "busy"), and
        this returns False leaving ``needs_vacuum`` set. After it, the incremental vacuum (a
        full VACUUM on a vault created without auto_vacuum) hands freed pages back, the
        pending receipts are re-signed with the time of destruction, and a last checkpoint
        moves those writes, which hold nothing destroyed, into the file.
        """
        s = self.s
        wait_s = CHECKPOINT_WAIT_S if wait_s is None else wait_s
        if not s.store.checkpoint_truncate(wait_s):
            return False
        done_at = s.now()
        if s.store.auto_vacuum() == 2:  # INCREMENTAL
            s.store.release_free_pages()
        else:
            s.store.vacuum()
        with s.store.write():
            for eng_id, text in s.store.receipts_matching(_PENDING):
                receipt = json.loads(text)
                body = {
                    k: v
                    for k, v in receipt.items()
                    if k not in ("signature", "key_id", "public_key")
                }
                body["destruction_complete_at"] = done_at
                s.store.replace_receipt(eng_id, receipt_text(sign_receipt(s, body)))
            s.store.set_meta("needs_vacuum", 0)
        s.store.checkpoint_truncate(wait_s)
        return True

    def receipt_of(self, name: str) -> Receipt:
        eng = self.e.get(name, allow_purged=True)
        if eng.receipt is None:
            raise RetentionError(f"engagement {name!r} has not been purged")
        try:
            return Receipt.from_json(json.loads(eng.receipt))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"the stored receipt of {name!r} is malformed") from None

    def receipt(self, name: str) -> Receipt:
        eng = self.e.get(name, allow_purged=True)
        self.s.check("engagement.receipt", self.e.role_of(eng), eng.name)
        receipt = self.receipt_of(name)
        with self.s.store.write():
            self.s.log("receipt", eng.name, None, "ok", "purge receipt read")
        return receipt


def write_receipt(path: Path, receipt: Receipt | dict[str, object]) -> None:
    """Write ``receipt`` to a new 0600 file, as the JSON document that was signed."""
    from credvault.files import write_new_private

    if isinstance(receipt, Receipt):
        receipt = receipt.to_json()

    write_new_private(path, (receipt_text(receipt) + "\n").encode())
