"""Members: add, list, change passphrase, reset, remove (with a database re-key, see
:mod:`credvault.rekey`).

Every change here goes through :func:`credvault.slotfile.change`: the key-slot file and the
database (grants, audit entry) change in one COMMIT, so a fault leaves either both or neither.

Removing a member deletes their key slot and key copies, marks their engagements for key
rotation, and re-keys the database: it is copied under a new random key into a new file that
replaces the old one. The COMMIT that removes the member also gives the key-slot file
*pending* slots for the new key, so a crash at any later step leaves a vault every remaining
member can open, and the next open finishes the re-key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

from credvault import rekey, slotfile, validate
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import KdfParams
from credvault.errors import (
    AlreadyExists,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    NotFound,
    RetentionError,
)
from credvault.files import write_new_private
from credvault.keyslots import (
    KeySlots,
    MemberKeys,
    encrypt_private,
    make_slot,
    new_member_keys,
    open_admin_key,
    retired_cert_message,
    successor_slot,
)
from credvault.secret import Secret
from credvault.session import Session


class MemberInfo(NamedTuple):
    name: str
    admin: bool
    service: bool
    created: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Members:
    def __init__(self, s: Session, kdf: KdfParams) -> None:
        self.s = s
        self.kdf = kdf

    def list(self) -> list[MemberInfo]:
        out = [
            MemberInfo(m.name, m.admin, m.service, m.created)
            for m in sorted(self.s.slots.members.values(), key=lambda m: m.name)
        ]
        with self.s.store.write():  # member data: on the record
            self.s.log("member-ls", None, None, "ok", f"{len(out)} members listed")
        return out

    def add(
        self,
        name: str,
        *,
        admin: bool = False,
        passphrase: bytes | str | Secret | None = None,
        identity_file: Path | None = None,
    ) -> MemberInfo:
        pw = _wrap(passphrase)
        del passphrase  # only the redacted wrapper stays a local
        s = self.s
        validate.name(name, "member name")
        if name.startswith("@"):
            raise InvalidInput("member names cannot start with '@'")
        s.require("member.add")
        if name in s.slots.members:
            raise AlreadyExists(f"member {name!r} already exists")
        service = identity_file is not None
        if not service and not pw:
            raise InvalidInput(
                "a new member needs a passphrase (or --service with an identity file)"
            )
        if service and identity_file is not None and identity_file.exists():
            if not _orphan_identity(identity_file, s.vault_id, name):
                raise AlreadyExists(f"identity file {identity_file} exists; refusing to overwrite")
            identity_file.unlink()  # left by an add that was interrupted before it took effect
        admin_priv = open_admin_key(s.vault_id, s.me, s.keys)
        keys = new_member_keys(name, s.keys.admin_sign_pub)
        slot = make_slot(
            s.vault_id,
            s.slots.generation,
            keys,
            admin=admin,
            service=service,
            created=s.now(),
            admin_sign_private=admin_priv,
            db_key=s.db_key,
            passphrase=pw,
            params=None if service else self.kdf,
        )
        wrote_identity = False

        def build(cur: KeySlots) -> KeySlots:
            if name in cur.members:
                raise AlreadyExists(f"member {name!r} already exists")
            return cur._replace(members={**cur.members, name: slot})

        def db_work(cur: KeySlots) -> None:
            nonlocal wrote_identity
            if identity_file is not None:
                write_new_private(identity_file, keys.to_bytes(s.vault_id))
                wrote_identity = True
            s.log(
                "member-add",
                None,
                name,
                "ok",
                ("admin " if admin else "") + ("service identity" if service else "member"),
            )

        try:
            slotfile.change(s, build, db_work)
        except BaseException:
            if wrote_identity and identity_file is not None and name not in s.slots.members:
                with contextlib.suppress(OSError):
                    identity_file.unlink()  # the member was not added: no orphan identity
            raise
        return MemberInfo(name, admin, service, slot.created)

    def passwd(
        self, new_passphrase: bytes | str | Secret, *, compromised: bool = False
    ) -> PasswdResult:
        """Change your own passphrase.

        A plain change re-encrypts the *same* private keys under the new passphrase: it
        protects against someone who learns the new one's predecessor only from now on
        (a key-slot file written from now on), not against one who already knew the old
        passphrase and kept a key-slot file (every backup holds one) — that opens the same
        keys. After a suspected compromise use ``compromised=True``: a new key pair, the
        database re-keyed (the old slot's database key opens nothing live), the receipt
        and audit MAC keys succeeded, the engagement keys you held rotated (at once where
        you lead; elsewhere your old copy is dropped and a lead's next command rotates),
        and what your old signing key signed re-signed by the new one (docs/security.md).
        """
        pw = _wrap(new_passphrase)
        del new_passphrase
        s = self.s
        if s.me.service:
            raise InvalidInput("service identities have no passphrase")
        if not pw:
            raise InvalidInput("the new passphrase is empty")
        if compromised:
            return self._replace_keys(pw)
        salt, private = encrypt_private(s.vault_id, s.keys, pw, self.kdf)
        me = s.member

        def build(cur: KeySlots) -> KeySlots:
            slot = cur.members[me]._replace(kdf=self.kdf, salt=salt, private=private)
            return cur._replace(members={**cur.members, me: slot})

        def db_work(cur: KeySlots) -> None:
            s.log("passwd", None, me, "ok")

        slotfile.change(s, build, db_work)
        return PasswdResult(False, [], [], 0)

    def _replace_keys(self, pw: Secret) -> PasswdResult:
        """``passwd --compromised``: new keys, re-key, successors, rotations (see passwd).

        One COMMIT (as ``member rm``'s) makes the new slot current with pending slots for a
        new database key, re-signs what the old signing key signed, rotates the engagements
        this member leads and drops their old copies elsewhere; the copy under the new key
        and the key successions follow (:func:`rekey.finish`), finished by the next open
        after a crash.
        """
        s = self.s
        me = s.member
        old_keys = s.keys
        admin_priv = open_admin_key(s.vault_id, s.me, old_keys) if s.me.admin else None
        s.exclusive()  # the database file is about to be replaced
        keys = new_member_keys(me, old_keys.admin_sign_pub)
        new_db_key = p.random_key()
        result = PasswdResult(True, [], [], 0)
        staged: list[KeySlots] = []

        def build(cur: KeySlots) -> KeySlots:
            old = cur.members[me]
            if admin_priv is not None:
                slot = make_slot(
                    s.vault_id,
                    cur.generation,
                    keys,
                    admin=True,
                    service=False,
                    created=old.created,
                    admin_sign_private=admin_priv,
                    db_key=s.db_key,
                    passphrase=pw,
                    params=self.kdf,
                )
            else:
                slot = successor_slot(
                    s.vault_id,
                    cur.generation,
                    old,
                    old_keys,
                    keys,
                    db_key=s.db_key,
                    passphrase=pw,
                    params=self.kdf,
                )
            new = cur._replace(members={**cur.members, me: slot})
            if admin_priv is not None:
                # The old key stays certified as a former key of this admin: links 0 they
                # signed (engagements they created) must keep verifying.
                new = new._replace(retired=self._retired_with(cur, me, old.sign_pub, admin_priv))
            staged.append(new)
            return rekey.with_pending(new, new_db_key, old_keys.admin_sign_pub)

        def db_work(cur: KeySlots) -> None:
            nonlocal result
            result = result._replace(resigned=self._hand_over(old_keys, keys, staged[-1], result))
            rekey.mark_succession_due(s, f"keys of {me} replaced (compromised)")
            s.log(
                "passwd",
                None,
                me,
                "ok",
                f"compromised: new keys; database re-keyed; {result.resigned} signatures "
                f"moved to the new key; rotated {len(result.rotated)}, "
                f"{len(result.pending)} await a lead",
            )

        try:
            slotfile.change(s, build, db_work)
        except BaseException:
            s.keys = old_keys
            s.verified.clear()
            s.engagement_keys.clear()
            raise
        rekey.finish(s, new_db_key)
        return result

    def _hand_over(
        self, old: MemberKeys, new: MemberKeys, new_slots: KeySlots, result: PasswdResult
    ) -> int:
        """Inside the COMMIT of ``passwd --compromised`` (old keys still current on entry).

        1. Under the old keys: open the key of every engagement this member validly leads,
           and collect every statement the old signing key made that verifies (creation
           records, role certificates, key copies of the current version).
        2. Switch the session to the new slot and keys; re-sign those statements (the same
           statements: nothing new is asserted, and the old key is trusted for nothing
           after this), rotate the engagements led, and drop this member's copies sealed
           to the old key elsewhere, marking those engagements for rotation.
        """
        from credvault.access import Role
        from credvault.engagements import Engagements
        from credvault.grants import copy_message_fp, creation_message, role_message

        s = self.s
        me = s.member
        e = Engagements(s)
        old_pub = p.ed25519_public(old.sign_private)
        mine = {eng_id for eng_id, _ in s.store.grants_of_member(me)}
        led: dict[int, bytes] = {}
        creations: list[tuple[int, bytes]] = []
        roles: list[tuple[int, str, bytes]] = []
        copies: list[tuple[int, str, int, bytes, bytes]] = []
        engs = {x.id: x for x in s.store.engagements() if x.state != "purged"}
        for eng in engs.values():
            held = s.store.grant_of(eng.id, me) if eng.id in mine else None
            if held is not None and held.sealed is not None and e.role_of(eng) is Role.LEAD:
                # A copy that does not open (tampered) must not block this change: that
                # engagement then waits for another lead's rotation like the others.
                with contextlib.suppress(IntegrityError):
                    led[eng.id] = e.keys.key(eng, "engagement.rotate")
            if eng.created_by == me:
                msg = creation_message(s, eng.uid, eng.name, eng.client, eng.lead, me)
                if _signed(old_pub, msg, eng.creation_sig):
                    creations.append((eng.id, msg))
            for g in s.store.grants(eng.id):
                if g.granted_by == me:
                    msg = role_message(s, eng, g.member, g.role, g.expires_at, me)
                    if _signed(old_pub, msg, g.role_sig):
                        roles.append((eng.id, g.member, msg))
                if (
                    g.sealed_by == me
                    and g.sealed is not None
                    and g.copy_sig is not None
                    and g.key_version == eng.key_version
                ):
                    msg = copy_message_fp(
                        s, eng, g.member, eng.key_version, g.sealed, eng.key_fp, me
                    )
                    if _signed(old_pub, msg, g.copy_sig):
                        copies.append((eng.id, g.member, eng.key_version, g.sealed, msg))
        # In every engagement with a membership log, a ``succeed`` link signed by the old key
        # pins the new keys (compromised: the log then demands a rotation); the statements
        # re-signed below are those of engagements made before the log.
        succeeded = e.keys.succeed_member_keys(
            p.ed25519_public(new.sign_private), p.x25519_public(new.kem_private), compromised=True
        )
        # 2. From here on the session is the new key pair's.
        s.slots, s.keys = new_slots, new
        s.verified.clear()
        s.engagement_keys.clear()
        e = Engagements(s)  # nothing cached about the old keys' certificates

        def sign(msg: bytes) -> bytes:
            return p.sign(new.sign_private, labels.GRANT_SIG, msg)

        for eng_id, msg in creations:
            s.store.set_creation_sig(eng_id, sign(msg))
        for eng_id, member, msg in roles:
            s.store.set_role_sig(eng_id, member, me, sign(msg))
        for eng_id, member, version, sealed, msg in copies:
            s.store.set_key_copy(eng_id, member, version, sealed, me, sign(msg))
        s.verified.clear()
        engs = {x.id: x for x in s.store.engagements()}  # re-read: creation records re-signed
        for eng_id in sorted(mine):
            if eng_id not in engs or engs[eng_id].state == "purged":
                continue
            eng = engs[eng_id]
            if eng_id in led:
                e.keys.rotate(eng, led[eng_id], f"{me} replaced their keys (compromised)")
                result.rotated.append(eng.name)
            else:
                if s.store.log_head(eng_id) is None:  # an engagement made before the log
                    s.store.drop_key_copy(eng_id, me)
                # With a log, the ``succeed`` link above already demands the rotation and
                # the copy was sealed again to the new key (the same key version, which the
                # old private key opened anyway); the flag only prompts the lead's work.
                s.store.mark_needs_rotation(eng_id)
                result.pending.append(eng.name)
        return succeeded + len(creations) + len(roles) + len(copies)

    def reset(self, name: str, passphrase: bytes | str | Secret) -> MemberInfo:
        """New key pair and passphrase; every grant of the member must be made again."""
        pw = _wrap(passphrase)
        del passphrase
        s = self.s
        s.require("member.reset")
        old = s.slots.members.get(name)
        if old is None:
            raise NotFound("member", name)
        if old.service:
            raise InvalidInput("reset a service identity by removing and adding it again")
        admin_priv = open_admin_key(s.vault_id, s.me, s.keys)
        keys = new_member_keys(name, s.keys.admin_sign_pub)
        slot = make_slot(
            s.vault_id,
            s.slots.generation,
            keys,
            admin=old.admin,
            service=False,
            created=s.now(),
            admin_sign_private=admin_priv,
            db_key=s.db_key,
            passphrase=pw,
            params=self.kdf,
        )
        dropped = 0

        def build(cur: KeySlots) -> KeySlots:
            if name not in cur.members:
                raise NotFound("member", name)
            was = cur.members[name]
            return cur._replace(
                members={**cur.members, name: slot},
                retired=self._retired_with(cur, name, was.sign_pub, admin_priv),
            )

        def db_work(cur: KeySlots) -> None:
            nonlocal dropped
            dropped = self._drop_grants(name)
            s.log("member-reset", None, name, "ok", f"new keys; {dropped} grants to re-make")

        slotfile.change(s, build, db_work)
        return MemberInfo(name, old.admin, False, slot.created)

    def _retired_with(
        self, cur: KeySlots, name: str, sign_pub: bytes, admin_priv: bytes
    ) -> dict[str, tuple[tuple[bytes, bytes], ...]]:
        """Keep a former signing key verifiable, so grants it signed still chain."""
        msg = retired_cert_message(cur.vault_id, name, sign_pub)
        entry = (sign_pub, p.sign(admin_priv, labels.MEMBER_CERT, msg))
        return {**cur.retired, name: (*cur.retired.get(name, ()), entry)}

    def _drop_grants(self, name: str) -> int:
        s = self.s
        held = s.store.grants_of_member(name)
        for eng_id, _role in held:
            s.store.revoke_grant(eng_id, name, s.now())
            s.store.mark_needs_rotation(eng_id)
        s.verified.clear()
        s.engagement_keys.clear()
        return len(held)

    def remove(self, name: str) -> int:
        """Remove a member and re-key the database. Returns the grants dropped."""
        s = self.s
        s.require("member.remove")
        old = s.slots.members.get(name)
        if old is None:
            raise NotFound("member", name)
        if name == s.member:
            raise RetentionError("you cannot remove yourself; ask another admin")
        if old.admin and sum(1 for m in s.slots.members.values() if m.admin) == 1:
            raise RetentionError("cannot remove the last admin")
        admin_priv = open_admin_key(s.vault_id, s.me, s.keys)
        s.exclusive()  # the database file is about to be replaced: nobody else may hold it
        new_key = p.random_key()
        dropped = 0

        def build(cur: KeySlots) -> KeySlots:
            if name not in cur.members:
                raise NotFound("member", name)
            leaving = cur.members[name]
            members = {k: v for k, v in cur.members.items() if k != name}
            retired = self._retired_with(cur, name, leaving.sign_pub, admin_priv)
            return rekey.with_pending(
                cur._replace(members=members, retired=retired), new_key, s.keys.admin_sign_pub
            )

        def db_work(cur: KeySlots) -> None:
            nonlocal dropped
            dropped = self._drop_grants(name)
            rekey.mark_succession_due(s, f"member {name} removed")
            s.log("member-rm", None, name, "ok", f"{dropped} grants dropped; database re-keyed")

        # 1. One COMMIT removes the member: key-slot file (with pending slots sealing a new
        #    database key), grants and audit entry together.
        slotfile.change(s, build, db_work)
        # 2. The database is copied under the new key and swapped in; a fault from here on is
        #    finished by the next open (the pending slots say how).
        rekey.finish(s, new_key)
        return dropped


class PasswdResult(NamedTuple):
    """What ``passwd`` did: ``compromised`` (new keys, re-key), the engagements whose keys
    were rotated at once (``rotated``: those you lead), those that rotate at a lead's next
    command (``pending``; your copy was dropped until then), and the statements re-signed
    by the new key (``resigned``)."""

    compromised: bool
    rotated: list[str]
    pending: list[str]
    resigned: int

    def to_json(self) -> dict[str, object]:
        return self._asdict()


def _signed(pub: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        p.verify(pub, labels.GRANT_SIG, msg, sig, "signature")
    except CredvaultError:
        return False
    return True


def _wrap(passphrase: bytes | str | Secret | None) -> Secret | None:
    """The passphrase as a redacted :class:`Secret` (``None`` stays ``None``)."""
    if passphrase is None or isinstance(passphrase, Secret):
        return passphrase
    return Secret(passphrase)


def _orphan_identity(path: Path, vault_id: bytes, name: str) -> bool:
    """Is ``path`` this vault's identity for ``name``, who is not a member (an add that was
    interrupted before its COMMIT wrote it)? The caller checked ``name`` is not a member."""
    try:
        keys = MemberKeys.from_bytes(path.read_bytes()[:65536], vault_id)
    except (OSError, CredvaultError):
        return False
    return keys.name == name
