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
from typing import NamedTuple

from credvault.access import Action
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.engagements import Engagement, Engagements
from credvault.errors import IntegrityError, InvalidInput, RetentionError
from credvault.session import Session, iso

REASONS = {
    "grace": "grace period expired",
    "hold": "retention hold expired",
    "request": "client request",
}


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


def sign_receipt(s: Session, body: dict[str, object]) -> dict[str, object]:
    msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    sig = p.sign(receipt_key(s), labels.RECEIPT_SIG, msg)
    return {
        **body,
        "signature": base64.b64encode(sig).decode(),
        "public_key": base64.b64encode(s.slots.receipt_pub).decode(),
    }


def verify_receipt(
    receipt: dict[str, object] | str, public_key: bytes | str | None = None
) -> dict[str, object]:
    """Check a purge receipt's signature; returns its body. A client can run this too.

    ``public_key`` is the vault's public key (``credvault info --public-key``), raw or base64;
    without it the key embedded in the receipt is used, which proves integrity but not origin.
    """
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
        out = []
        for r in self.s.store.due_engagements(now):
            eng = Engagement.from_row(r)
            out.append(PurgePlan(eng.name, eng.client, eng.purge_due or "", self._reason(eng)))
        return out

    @staticmethod
    def _reason(eng: Engagement) -> str:
        return "hold" if eng.hold_until and eng.purge_due == eng.hold_until else "grace"

    def run_due(self, *, automatic: bool) -> list[PurgePlan]:
        """Purge everything due, expire grants, prune the audit trail. No key needed."""
        done = self.plan()
        for item in done:
            eng = self.e.get(item.engagement)
            self._destroy(eng, item.reason, automatic=automatic)
        self.expire_grants()
        self.prune_audit()
        if done:
            self.rewrite()
        self.prune_backups()
        return done

    def prune_backups(self) -> int:
        """Backups in the default place older than the backup retention leave with the purge."""
        from credvault.backup import clean_leftovers, default_backup_dir, prune

        s = self.s
        directory = default_backup_dir(s.path)
        if not directory.is_dir():
            return 0
        clean_leftovers(directory, s.vault_id.hex())  # crash leftovers hold full copies
        days = int(s.store.get_meta("backup_retention_days") or 30)
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
                s.store.update_engagement(eng_id, {"needs_rotation": 1})
                name = names.get(eng_id)
                s.log("grant-expired", name, member, "ok", "key copy deleted; rotation pending")
        s.verified.clear()
        return len(expired)

    def prune_audit(self) -> int:
        s = self.s
        days = s.store.get_meta("audit_retention_days")
        cutoff = iso(s.clock() - timedelta(days=int(days) if days is not None else 365))
        first = s.store.audit_iter(0, batch=1)
        row = next(first, None)
        if row is None or row[1] >= cutoff:
            return 0
        with s.store.write():
            return s.audit.prune_before(cutoff, s.now(), s.member)

    def shred(self, name: str) -> dict[str, object]:
        """The client's deletion request: destroy now, whatever the state."""
        s = self.s
        eng = self.e.get(name)
        s.check(Action.LIFECYCLE, self.e.role_of(eng), "shred", eng.name)
        receipt = self._destroy(eng, "request", automatic=False)
        self.rewrite()
        return receipt

    def _destroy(self, eng: Engagement, reason: str, *, automatic: bool) -> dict[str, object]:
        s = self.s
        if eng.state == "purged":
            raise RetentionError(f"engagement {eng.name!r} is already purged")
        now = s.now()
        with s.store.write():
            current = self.e.get(eng.name, allow_purged=True)  # under the lock: purge once
            if current.state == "purged":
                raise RetentionError(f"engagement {eng.name!r} is already purged")
            creds, systems = s.store.count_engagement_items(eng.id)
            copies = sum(1 for g in s.store.grants(eng.id) if g[7] is not None)
            by = f"{s.member} (automatic, on open)" if automatic else s.member
            seq = s.log(
                "purge",
                eng.name,
                None,
                "ok",
                f"{REASONS[reason]}; {creds} credentials, {systems} systems, "
                f"{copies} key copies destroyed",
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
            s.store.update_engagement(
                eng.id,
                {
                    "state": "purged",
                    "purged_at": now,
                    "receipt": json.dumps(receipt),
                    "purge_due": None,
                    "needs_rotation": 0,
                },
            )
            s.store.set_meta("needs_vacuum", 1)
        s.engagement_keys = {k: v for k, v in s.engagement_keys.items() if k[0] != eng.id}
        return receipt

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

    def receipt(self, name: str) -> dict[str, object]:
        eng = self.e.get(name, allow_purged=True)
        self.s.check(Action.LIST, self.e.role_of(eng), "read the receipt", eng.name)
        if eng.receipt is None:
            raise RetentionError(f"engagement {name!r} has not been purged")
        data: dict[str, object] = json.loads(eng.receipt)
        return data


def write_receipt(path: Path, receipt: dict[str, object]) -> None:
    from credvault.files import write_new_private

    write_new_private(path, (json.dumps(receipt, indent=1, sort_keys=True) + "\n").encode())
