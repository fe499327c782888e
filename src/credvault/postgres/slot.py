"""A team member's own key slot: their private keys, on their machine only (issue 14).

On a SQLCipher vault a member's private keys live in their slot of the vault's key-slot file
(``members.<name>.private``, AES-256-GCM under an Argon2id key of the passphrase). A team
vault's server must never hold them, so each member keeps that same slot in a file of their
own, ``$XDG_CONFIG_HOME/credvault/team/<database>/<member>.slot`` (mode 0600): the same
private blob (the ``credvault-identity`` JSON, the same associated data
``labels.encode(MEMBER_PRIVATE, vault_id, name)``), the same ``kdf`` object, the public keys
beside it, and the same strict reader (exact JSON types, bounded integers, exact lengths;
anything else is corruption, exit 6). docs/format.md, "Team key slot".

The member's PostgreSQL password is not a second secret: it is derived from the unlocked
signing key (:func:`login_password`), so one passphrase unlocks both, and the server only
ever stores its SCRAM verifier.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, NamedTuple

from credvault.crypto import primitives as p
from credvault.crypto.passphrase import SALT_LEN, KdfParams
from credvault.errors import AlreadyExists, IntegrityError, NotAVault, UnsupportedFormat
from credvault.files import make_private_dir, write_new_private
from credvault.keyslots import (
    MemberKeys,
    MemberSlot,
    b64e,
    decrypt_private,
    encrypt_private,
)
from credvault.secret import Secret

FORMAT = "credvault-team-slot"
# 1: the first format; 2 adds "anchor", the founder's signing-key fingerprint; 3 (written by
# `passwd`) derives the login password from the slot's Argon2id salt too, so a new
# passphrase brings a new login, and keeps "anchor" if the slot it replaces had one
# (format.md §19.1).
VERSION = 3
MAX_SIZE = 64 * 1024
_KDF_INT_MAX = 2**32 - 1
_FIELDS = frozenset(
    {"format", "version", "vault_id", "member", "database", "kem", "sign", "kdf", "private"}
)
_FIELDS_V2 = _FIELDS | {"anchor"}
# HKDF label of the login password (not in crypto.labels: it keys no stored data)
LOGIN_LABEL = b"credvault/v1/team-login-password"


def _bad(what: str) -> IntegrityError:
    return IntegrityError(f"team key slot is corrupt ({what})")


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise _bad(f"{key} must be text")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if type(v) is not int or not 1 <= v <= _KDF_INT_MAX:
        raise _bad(f"{key} must be an integer in [1, {_KDF_INT_MAX}]")
    return v


def _b64(d: dict[str, Any], key: str, length: int | None = None) -> bytes:
    v = d.get(key)
    if not isinstance(v, str):
        raise _bad(f"{key} must be base64 text")
    try:
        raw = base64.b64decode(v, validate=True)
    except ValueError:
        raise _bad(f"{key} is not base64") from None
    if length is not None and len(raw) != length:
        raise _bad(f"{key} has the wrong length")
    return raw


class TeamSlot(NamedTuple):
    """The parsed file: public keys and the passphrase-protected private blob."""

    vault_id: bytes
    member: str
    database: str
    kem_pub: bytes
    sign_pub: bytes
    kdf: KdfParams
    salt: bytes
    private: bytes
    anchor: str | None = None  # None: a version-1 slot, made before member certificates
    salted_login: bool = False  # version 3: the login is bound to ``salt`` (``passwd``)

    @property
    def version(self) -> int:
        """The format version this slot is written in (its fields decide it)."""
        return 3 if self.salted_login else 2 if self.anchor is not None else 1

    def login_password(self, keys: MemberKeys) -> str:
        """The member's PostgreSQL password for this slot (:func:`login_password`)."""
        return login_password(keys, self.vault_id, self.salt if self.salted_login else None)

    def __repr__(self) -> str:
        return f"TeamSlot(member={self.member!r}, database={self.database!r})"

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "vault_id": self.vault_id.hex(),
            "member": self.member,
            "database": self.database,
            "kem": b64e(self.kem_pub),
            "sign": b64e(self.sign_pub),
            "kdf": {
                "m": self.kdf.memory_kib,
                "t": self.kdf.iterations,
                "p": self.kdf.lanes,
                "salt": b64e(self.salt),
            },
            "private": b64e(self.private),
        }
        if self.anchor is not None:
            body["anchor"] = self.anchor
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TeamSlot:
        """Strict reader: the file is hostile until the passphrase opens its blob."""
        try:
            d = json.loads(data)
        except (ValueError, RecursionError):
            raise _bad("not JSON") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise _bad("not a credvault team key slot")
        version = d.get("version")
        if type(version) is not int or version < 1:
            raise _bad("bad version")
        if version > VERSION:
            raise UnsupportedFormat(
                f"team key slot format {version} is newer than this credvault supports "
                f"({VERSION}); upgrade credvault"
            )
        allowed = (
            (_FIELDS,) if version == 1 else (_FIELDS_V2,) if version == 2 else (_FIELDS, _FIELDS_V2)
        )
        if frozenset(d) not in allowed:
            raise _bad("unexpected or missing fields")
        anchor = None
        if "anchor" in d:
            anchor = _str(d, "anchor")
            if len(anchor) != 32 or any(c not in "0123456789abcdef" for c in anchor):
                raise _bad("anchor")
        kdf = d.get("kdf")
        if not isinstance(kdf, dict) or set(kdf) != {"m", "t", "p", "salt"}:
            raise _bad("kdf")
        vault_id = _str(d, "vault_id")
        if len(vault_id) != 32 or vault_id != vault_id.lower():
            raise _bad("vault id")
        try:
            vid = bytes.fromhex(vault_id)
        except ValueError:
            raise _bad("vault id") from None
        return cls(
            vault_id=vid,
            member=_str(d, "member"),
            database=_str(d, "database"),
            kem_pub=_b64(d, "kem", 32),
            sign_pub=_b64(d, "sign", 32),
            kdf=KdfParams(_int(kdf, "m"), _int(kdf, "t"), _int(kdf, "p")),
            salt=_b64(kdf, "salt", SALT_LEN),
            private=_b64(d, "private"),
            anchor=anchor,
            salted_login=version >= 3,
        )

    def _member_slot(self) -> MemberSlot:
        """The SQLCipher slot shape of this file, for the one decrypt function."""
        return MemberSlot(
            self.member,
            self.kem_pub,
            self.sign_pub,
            False,
            False,
            "",
            b"",
            self.kdf,
            self.salt,
            self.private,
            b"",
            None,
        )

    def unlock(self, passphrase: Secret) -> MemberKeys:
        """The private keys (wrong passphrase: exit 5), checked against the public halves."""
        keys = decrypt_private(self.vault_id, self._member_slot(), passphrase)
        if (
            p.x25519_public(keys.kem_private) != self.kem_pub
            or p.ed25519_public(keys.sign_private) != self.sign_pub
        ):
            raise _bad("private keys do not match the public keys")
        return keys

    @classmethod
    def read(cls, path: Path) -> TeamSlot:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            raise NotAVault(
                f"no team key slot at {path}: join the team vault first (`credvault join`)"
            ) from None
        if len(data) > MAX_SIZE:
            raise _bad("too large")
        return cls.from_bytes(data)

    def write_new(self, path: Path) -> None:
        """Write the slot (0600, in a 0700 directory); never over an existing one."""
        if path.exists():
            raise AlreadyExists(f"a team key slot exists already at {path}; not overwritten")
        make_private_dir(path.parent)
        write_new_private(path, self.to_bytes())


def new_slot(
    vault_id: bytes,
    database: str,
    member: str,
    passphrase: Secret,
    params: KdfParams,
    *,
    keys: MemberKeys | None = None,
    anchor: str | None = None,
) -> tuple[TeamSlot, MemberKeys]:
    """Fresh X25519 and Ed25519 key pairs made here (or ``keys`` carried over from a
    migrated SQLCipher vault), sealed under the passphrase."""
    if keys is None:
        kem, _ = p.x25519_generate()
        sign, _ = p.ed25519_generate()
        # a team vault has no vault-wide admin signing key: the pin is the member's own key
        keys = MemberKeys(member, kem, sign, p.ed25519_public(sign))
    elif keys.name != member:
        raise IntegrityError("the carried-over keys belong to another member")
    salt, private = encrypt_private(vault_id, keys, passphrase, params)
    slot = TeamSlot(
        vault_id,
        member,
        database,
        p.x25519_public(keys.kem_private),
        p.ed25519_public(keys.sign_private),
        params,
        salt,
        private,
        anchor,
    )
    return slot, keys


def login_password(keys: MemberKeys, vault_id: bytes, salt: bytes | None = None) -> str:
    """The member's PostgreSQL password: HKDF of their signing key (never stored), bound
    to the slot's Argon2id ``salt`` in a version-3 slot (:meth:`TeamSlot.login_password`)."""
    raw = p.hkdf(keys.sign_private, LOGIN_LABEL, vault_id + (salt or b""))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
