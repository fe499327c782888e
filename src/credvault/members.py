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
from credvault.errors import AlreadyExists, CredvaultError, InvalidInput, NotFound, RetentionError
from credvault.files import write_new_private
from credvault.keyslots import (
    KeySlots,
    MemberKeys,
    encrypt_private,
    make_slot,
    new_member_keys,
    open_admin_key,
    retired_cert_message,
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

    def passwd(self, new_passphrase: bytes | str | Secret) -> None:
        pw = _wrap(new_passphrase)
        del new_passphrase
        s = self.s
        if s.me.service:
            raise InvalidInput("service identities have no passphrase")
        if not pw:
            raise InvalidInput("the new passphrase is empty")
        salt, private = encrypt_private(s.vault_id, s.keys, pw, self.kdf)
        me = s.member

        def build(cur: KeySlots) -> KeySlots:
            slot = cur.members[me]._replace(kdf=self.kdf, salt=salt, private=private)
            return cur._replace(members={**cur.members, me: slot})

        def db_work(cur: KeySlots) -> None:
            s.log("passwd", None, me, "ok")

        slotfile.change(s, build, db_work)

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
