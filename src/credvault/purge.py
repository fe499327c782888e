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
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from credvault.access import Action
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.engagements import Engagements
from credvault.errors import ClockSuspect, IntegrityError, InvalidInput, NotFound, RetentionError
from credvault.jcs import canonical
from credvault.model import Engagement, iso, parse_iso
from credvault.retention import check_confirmation, clock_problem
from credvault.session import Session

RECEIPT_FORMAT = "credvault-purge-receipt/2"
OLD_RECEIPT_FORMAT = "credvault-purge-receipt/1"
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


def clock_hold(s: Session, *, restoring: bool = False) -> str | None:
    """Why irreversible work must wait on this session's clock (None: it may run).

    "Behind" is measured against the newest recorded time (any entry before this session,
    or the high-water time); "ahead" only against the high-water time, which moves only when
    a member entitled to destroy ran on a clock that passed these rules, or confirmed one:
    entries written under a wrong clock never vouch for it. A restore (``restoring``)
    accepts a clock ahead of the backup's record, which is what an old backup looks like.
    """
    newest = s.newest_recorded()
    hw = s.store.get_meta("time_high_water") or s.newest_at_open
    return clock_problem(
        s.clock(),
        parse_iso(newest) if newest else None,
        parse_iso(hw) if hw and not restoring else None,
    )


def mark_high_water(s: Session) -> None:
    """This trusted clock passed the rules: later runs measure theirs against it."""
    hw = s.store.get_meta("time_high_water")
    now = s.now()
    if hw is None or now > hw:
        s.store.set_meta("time_high_water", now)


def note_trusted_clock(s: Session) -> None:
    """On an open by a member entitled to destroy whose clock passes the rules, move the
    high-water time (at most one write an hour), so daily use keeps the bound current."""
    hw = s.store.get_meta("time_high_water")
    if hw is not None and s.clock() - parse_iso(hw) < timedelta(hours=1):
        return
    if clock_hold(s) is None:
        with s.store.write():
            mark_high_water(s)


class PurgePlan(NamedTuple):
    engagement: str
    client: str
    due: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "engagement": self.engagement,
            "client": self.client,
            "due": self.due,
            "reason": self.reason,
        }


def receipt_key(s: Session) -> bytes:
    """The receipt signing key. It lives in the database (encrypted by SQLCipher), so any
    process that can open the vault, including an unattended purge, can sign a receipt."""
    blob = s.store.get_meta("receipt_key")
    if blob is None:
        raise IntegrityError("vault has no receipt signing key")
    priv = p.KeyBytes(blob)
    if len(priv) != 32 or p.ed25519_public(priv) != s.slots.receipt_pub:
        raise IntegrityError("receipt signing key does not match the vault's public key")
    return priv


def new_receipt_key() -> tuple[bytes, bytes]:
    """(private, public) of a vault's receipt signing key."""
    return p.ed25519_generate()


def key_id(public_key: bytes) -> str:
    """The name of a receipt key: SHA-256 of the raw 32-byte Ed25519 public key, hex."""
    return hashlib.sha256(public_key).hexdigest()


def receipt_message(body: dict[str, object]) -> bytes:
    """What a format-2 receipt's signature covers: the label, then the JCS form of every
    member but ``signature`` (``public_key`` and ``key_id`` included: a receipt names the
    key that signed it)."""
    return labels.RECEIPT_SIG + canonical(body)


def sign_receipt(s: Session, body: dict[str, object]) -> dict[str, object]:
    pub = s.slots.receipt_pub
    full = {**body, "public_key": base64.b64encode(pub).decode(), "key_id": key_id(pub)}
    sig = p.sign(receipt_key(s), b"", receipt_message(full))
    return {**full, "signature": base64.b64encode(sig).decode()}


def receipt_text(receipt: dict[str, object]) -> str:
    """A receipt as stored and as handed to a client: its JCS form, one line."""
    return canonical(receipt).decode("utf-8")


def verify_receipt(
    receipt: dict[str, object] | str, public_key: bytes | str | None = None
) -> dict[str, object]:
    """Check a purge receipt's signature; returns its body. A client can run this too.

    ``public_key`` is the vault's public key (``credvault info --public-key``), raw or base64;
    without it the key embedded in the receipt is used, which proves integrity but not
    origin (the CLI's ``verify-receipt`` refuses to call that valid). Format-2 receipts
    also name their key (``key_id``) and must be signed by the key they name.
    """
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
    if public_key is None:
        pub = embedded
    elif isinstance(public_key, str):
        try:
            pub = base64.b64decode(public_key.strip(), validate=True)
        except ValueError:
            raise InvalidInput("public key: expected base64") from None
    else:
        pub = public_key
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
    if not old:
        data = {k: v for k, v in data.items() if k not in ("public_key", "key_id")}
    return data


class Purger:
    def __init__(self, s: Session, engagements: Engagements) -> None:
        self.s = s
        self.e = engagements

    def plan(self) -> list[PurgePlan]:
        now = self.s.now()
        return [
            PurgePlan(eng.name, eng.client, eng.purge_due or "", self._reason(eng))
            for eng in self.s.store.due_engagements(now)
        ]

    @staticmethod
    def _reason(eng: Engagement) -> str:
        return "hold" if eng.hold_until and eng.purge_due == eng.hold_until else "grace"

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
        from credvault.backup import default_backup_dir
        from credvault.ledger import write_ledgers

        with contextlib.suppress(OSError):
            write_ledgers(self.s, default_backup_dir(self.s.path))

    def prune_backups(self) -> int:
        """Backups in the default place older than the backup retention leave with the purge."""
        from credvault.backup import clean_leftovers, default_backup_dir, prune

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
        self.e.key(eng, "trash purge", Action.WRITE, name)
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

    def shred(self, name: str) -> dict[str, object]:
        """The client's deletion request: destroy now, whatever the state."""
        s = self.s
        eng = self.e.get(name)
        s.check(Action.LIFECYCLE, self.e.role_of(eng), "shred", eng.name)
        self._destroy(eng, "request", automatic=False)
        self.rewrite()
        self.write_ledgers()
        return self.receipt_of(eng.name)

    def _destroy(
        self, eng: Engagement, reason: str, *, automatic: bool, note: str | None = None
    ) -> dict[str, object]:
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
        s.engagement_keys = {k: v for k, v in s.engagement_keys.items() if k[0] != eng.id}
        return receipt

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

    def receipt_of(self, name: str) -> dict[str, object]:
        eng = self.e.get(name, allow_purged=True)
        if eng.receipt is None:
            raise RetentionError(f"engagement {name!r} has not been purged")
        data: dict[str, object] = json.loads(eng.receipt)
        return data

    def receipt(self, name: str) -> dict[str, object]:
        eng = self.e.get(name, allow_purged=True)
        self.s.check(Action.LIST, self.e.role_of(eng), "read the receipt", eng.name)
        receipt = self.receipt_of(name)
        with self.s.store.write():
            self.s.log("receipt", eng.name, None, "ok", "purge receipt read")
        return receipt


def write_receipt(path: Path, receipt: dict[str, object]) -> None:
    from credvault.files import write_new_private

    write_new_private(path, (receipt_text(receipt) + "\n").encode())
