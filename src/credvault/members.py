"""Members: add, list, change passphrase, reset, remove (with a database re-key, see
:mod:`credvault.rekey`).

Removing a member deletes their key slot and key copies, marks their engagements for key
rotation, and re-keys the database: it is copied under a new random key into a new file that
replaces the old one. The key-slot file first gains *pending* slots for the new key, so a
crash at any step leaves a vault every remaining member can open; the next open finishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from credvault import rekey, validate
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import KdfParams
from credvault.errors import AlreadyExists, InvalidInput, NotFound, RetentionError
from credvault.files import write_new_private
from credvault.keyslots import (
    KeySlots,
    encrypt_private,
    make_slot,
    new_member_keys,
    open_admin_key,
    retired_cert_message,
)
from credvault.layout import SLOTS_NAME
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

    def _write_slots(self, slots: KeySlots, db_key: bytes | None = None) -> None:
        sealed = slots.sealed_with(db_key or self.s.db_key)
        sealed.write(self.s.path / SLOTS_NAME)
        self.s.slots = sealed

    def add(
        self,
        name: str,
        *,
        admin: bool = False,
        passphrase: bytes | None = None,
        identity_file: Path | None = None,
    ) -> MemberInfo:
        s = self.s
        validate.name(name, "member name")
        if name.startswith("@"):
            raise InvalidInput("member names cannot start with '@'")
        s.require("member.add")
        if name in s.slots.members:
            raise AlreadyExists(f"member {name!r} already exists")
        service = identity_file is not None
        if not service and not passphrase:
            raise InvalidInput(
                "a new member needs a passphrase (or --service with an identity file)"
            )
        if service and identity_file is not None and identity_file.exists():
            raise AlreadyExists(f"identity file {identity_file} exists; refusing to overwrite")
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
            passphrase=passphrase,
            params=None if service else self.kdf,
        )
        with s.store.write():  # the write lock also serialises key-slot file changes
            s.reload_slots()
            if name in s.slots.members:
                raise AlreadyExists(f"member {name!r} already exists")
            if identity_file is not None:
                write_new_private(identity_file, keys.to_bytes(s.vault_id))
            s.log(
                "member-add",
                None,
                name,
                "ok",
                ("admin " if admin else "") + ("service identity" if service else "member"),
            )
            members = dict(s.slots.members)
            members[name] = slot
            # The key-slot file last: if writing it fails, the audit entry rolls back too.
            self._write_slots(s.slots._replace(members=members))
        return MemberInfo(name, admin, service, slot.created)

    def passwd(self, new_passphrase: bytes) -> None:
        s = self.s
        if s.me.service:
            raise InvalidInput("service identities have no passphrase")
        if not new_passphrase:
            raise InvalidInput("the new passphrase is empty")
        salt, private = encrypt_private(s.vault_id, s.keys, new_passphrase, self.kdf)
        with s.store.write():
            s.reload_slots()
            s.log("passwd", None, s.member, "ok")
            members = dict(s.slots.members)
            members[s.member] = s.me._replace(kdf=self.kdf, salt=salt, private=private)
            self._write_slots(s.slots._replace(members=members))

    def reset(self, name: str, passphrase: bytes) -> MemberInfo:
        """New key pair and passphrase; every grant of the member must be made again."""
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
            passphrase=passphrase,
            params=self.kdf,
        )
        with s.store.write():
            s.reload_slots()
            if name not in s.slots.members:
                raise NotFound("member", name)
            dropped = self._drop_grants(name)
            s.log("member-reset", None, name, "ok", f"new keys; {dropped} grants to re-make")
            members = dict(s.slots.members)
            members[name] = slot
            self._write_slots(
                s.slots._replace(
                    members=members,
                    retired=self._retired_with(name, old.sign_pub, admin_priv),
                )
            )
        return MemberInfo(name, old.admin, False, slot.created)

    def _retired_with(
        self, name: str, sign_pub: bytes, admin_priv: bytes
    ) -> dict[str, tuple[tuple[bytes, bytes], ...]]:
        """Keep a former signing key verifiable, so grants it signed still chain."""
        msg = retired_cert_message(self.s.vault_id, name, sign_pub)
        entry = (sign_pub, p.sign(admin_priv, labels.MEMBER_CERT, msg))
        return {**self.s.slots.retired, name: (*self.s.slots.retired.get(name, ()), entry)}

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
        s.reload_slots()
        if name not in s.slots.members:
            raise NotFound("member", name)
        old = s.slots.members[name]
        members = {k: v for k, v in s.slots.members.items() if k != name}
        retired = self._retired_with(name, old.sign_pub, admin_priv)
        # 1. The member leaves the key-slot file (with pending slots for the new key) first:
        #    from here a crash is completed by the next open, grants included.
        new_key = rekey.stage(s, s.slots._replace(members=members, retired=retired))
        # 2. Their grants go, and the removal is audited.
        with s.store.write():
            dropped = self._drop_grants(name)
            s.log("member-rm", None, name, "ok", f"{dropped} grants dropped; database re-keyed")
        # 3. The database is copied under the new key and swapped in.
        rekey.finish(s, new_key)
        return dropped
