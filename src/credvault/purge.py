"""Purge: destroy every due engagement, leaving a tombstone and a signed receipt.

Destroying means deleting every credential, system and engagement-key copy (the members'
and the recovery key's) with ``secure_delete`` on, then rewriting the file (VACUUM) and
truncating the WAL so that no byte of the engagement's ciphertext or sealed keys remains in
the vault's files. Destroying every copy of the engagement key is the crypto-shred: an old
copy of the file cannot be opened without it. A purge needs no engagement key.

The delete and the receipt commit in one transaction; the rewrite follows. A crash between
them is finished by the next open (the ``needs_vacuum`` flag), so a purge is never half done.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.engagements import Engagements
from credvault.errors import IntegrityError, InvalidInput, NotFound, RetentionError
from credvault.model import Engagement, iso
from credvault.results import PurgePlan, Receipt
from credvault.retention import purge_reason
from credvault.session import Session

__all__ = [
    "REASONS",
    "PurgePlan",
    "Purger",
    "Receipt",
    "new_receipt_key",
    "receipt_key",
    "sign_receipt",
    "verify_receipt",
    "write_receipt",
]

REASONS = {
    "grace": "grace period expired",
    "hold": "retention hold expired",
    "request": "client request",
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


def sign_receipt(s: Session, body: dict[str, object]) -> dict[str, object]:
    msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    sig = p.sign(receipt_key(s), labels.RECEIPT_SIG, msg)
    return {
        **body,
        "signature": base64.b64encode(sig).decode(),
        "public_key": base64.b64encode(s.slots.receipt_pub).decode(),
    }


def verify_receipt(
    receipt: Receipt | dict[str, object] | str, public_key: bytes | str | None = None
) -> dict[str, object]:
    """Check a purge receipt's signature; returns its body. A client can run this too.

    ``public_key`` is the vault's public key (``credvault info --public-key``), raw or base64;
    without it the key embedded in the receipt is used, which proves integrity but not origin.
    """
    if isinstance(receipt, Receipt):
        receipt = receipt.to_json()
    try:
        data = json.loads(receipt) if isinstance(receipt, str) else dict(receipt)
    except (ValueError, TypeError):
        raise IntegrityError("not a signed credvault receipt") from None
    if not isinstance(data, dict):
        raise IntegrityError("not a signed credvault receipt")
    try:
        sig = base64.b64decode(str(data.pop("signature")), validate=True)
        embedded = base64.b64decode(str(data.pop("public_key")), validate=True)
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
    msg = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    p.verify(pub, labels.RECEIPT_SIG, msg, sig, "purge receipt")
    return data


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

    def run_due(self, *, automatic: bool) -> list[PurgePlan]:
        """Purge everything due, expire grants, prune the audit trail. No key needed."""
        done = self.plan()
        for item in done:
            eng = self.e.get(item.engagement)
            self._destroy(eng, item.reason, automatic=automatic)
        self.expire_grants()
        self.prune_audit()
        if self.expire_trash() or done:
            self.rewrite()
        self.prune_backups()
        return done

    def prune_backups(self) -> int:
        """Backups in the default place older than the backup retention leave with the purge."""
        from credvault.backup import prune
        from credvault.layout import default_backup_dir

        s = self.s
        directory = default_backup_dir(s.path)
        if not directory.is_dir():
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
        receipt = self._destroy(eng, "request", automatic=False)
        self.rewrite()
        return receipt

    def _destroy(self, eng: Engagement, reason: str, *, automatic: bool) -> Receipt:
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
                ),
            )
            body: dict[str, object] = {
                "format": "credvault-purge-receipt/1",
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
            }
            receipt = sign_receipt(s, body)
            s.store.destroy_engagement_contents(eng.id)
            s.store.mark_purged(eng.id, now, json.dumps(receipt))
            s.store.set_meta("needs_vacuum", 1)
        self.e.keys.forget(eng)
        return Receipt.from_json(receipt)

    def rewrite(self) -> None:
        """Reclaim freed pages and truncate the WAL: deleted data and old frames leave the files.

        Deleted rows were zeroed by secure_delete; the checkpoint writes those zeroed pages
        over the old ones in the main file; the incremental vacuum (a full VACUUM on a vault
        created without auto_vacuum) hands freed pages back; the final checkpoint empties
        the WAL that held the old frames.
        """
        s = self.s
        s.store.checkpoint_truncate()
        if s.store.auto_vacuum() == 2:  # INCREMENTAL
            s.store.release_free_pages()
        else:
            s.store.vacuum()
        with s.store.write():
            s.store.set_meta("needs_vacuum", 0)
        s.store.checkpoint_truncate()

    def receipt(self, name: str) -> Receipt:
        eng = self.e.get(name, allow_purged=True)
        self.s.check("engagement.receipt", self.e.role_of(eng), eng.name)
        if eng.receipt is None:
            raise RetentionError(f"engagement {name!r} has not been purged")
        try:
            return Receipt.from_json(json.loads(eng.receipt))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"the stored receipt of {name!r} is malformed") from None


def write_receipt(path: Path, receipt: Receipt | dict[str, object]) -> None:
    """Write ``receipt`` to a new 0600 file, as the JSON document that was signed."""
    from credvault.files import write_new_private

    if isinstance(receipt, Receipt):
        receipt = receipt.to_json()

    write_new_private(path, (json.dumps(receipt, indent=1, sort_keys=True) + "\n").encode())
