"""The key-slot file: everything needed before the database can be opened.

It holds, per member, the public keys, an admin-signed certificate of them, the private keys
encrypted under an Argon2id-derived key (absent for service identities, whose keys live in an
identity file), and the database key sealed to the member with HPKE. A MAC keyed from the
database key covers the whole file; the certificates, checked against the admin signing key
each member pins inside their own encrypted private blob, stop an insider who holds the
database key from swapping a member's public key. See docs/format.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

from credvault import validate
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import SALT_LEN, KdfParams, check, derive, new_salt
from credvault.errors import IntegrityError, NotAVault, UnsupportedFormat, WrongPassphrase
from credvault.files import atomic_write
from credvault.secret import Secret

FORMAT = "credvault-keyslots"
VERSION = 1
MAX_SIZE = 16 * 1024 * 1024
GENERATION_MAX = 2**32 - 1  # a u32: re-keys are counted, never 2**70
SEALED_KEY_LEN = 32 + 32 + 16  # HPKE enc + a 32-byte key + tag
SUCCESSION_MAX = 64  # former key pairs a slot may chain through (each is one verify per open)
_KDF_INT_MAX = 2**32 - 1  # then passphrase.check bounds the cost of the unlocking slot
_MISSING = object()


def _as_obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise IntegrityError(f"key-slot file is corrupt ({what} is not an object)")
    return v


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    return _as_obj(d.get(key), key)


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    """A JSON integer (not a boolean, not a float, not text) within [lo, hi]."""
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise IntegrityError(f"key-slot file is corrupt ({key} must be an integer in [{lo}, {hi}])")
    return v


def _bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if type(v) is not bool:  # "false" and 0 are not booleans: never truthy by accident
        raise IntegrityError(f"key-slot file is corrupt ({key} must be true or false)")
    return v


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise IntegrityError(f"key-slot file is corrupt ({key} must be text)")
    return v


def _member_name(n: object, where: str) -> str:
    """A member name as ``member add`` accepts it: ``"@x"``, ``""`` or ``"a/b"`` in a
    key-slot file did not come from credvault (``@`` names the recovery key and other
    non-members in signed statements, so a member called ``@recovery`` must never parse)."""
    try:
        return validate.name(n, "member name")
    except ValueError:
        raise IntegrityError(f"key-slot file is corrupt (invalid member name in {where})") from None


def _b64(d: dict[str, Any], key: str, length: int | None = None) -> bytes:
    raw = b64d(d.get(key))
    if length is not None and len(raw) != length:
        raise IntegrityError(f"key-slot file is corrupt ({key} has the wrong length)")
    return raw


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: Any, what: str = "key-slot file") -> bytes:
    if not isinstance(text, str):
        raise IntegrityError(f"{what} is malformed")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise IntegrityError(f"{what} is malformed") from None


class MemberKeys(NamedTuple):
    """An unlocked member: private halves plus the admin signing key they pinned."""

    name: str
    kem_private: bytes
    sign_private: bytes
    admin_sign_pub: bytes

    def __repr__(self) -> str:
        return f"MemberKeys(name={self.name!r}, <private keys redacted>)"

    def to_bytes(self, vault_id: bytes) -> bytes:
        """Serialised form for identity files and the keyring cache (the file is the secret)."""
        return json.dumps(
            {
                "format": "credvault-identity",
                "vault_id": vault_id.hex(),
                "member": self.name,
                "kem": b64e(self.kem_private),
                "sign": b64e(self.sign_private),
                "admin_sign_pub": b64e(self.admin_sign_pub),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, vault_id: bytes) -> MemberKeys:
        try:
            d = json.loads(data)
            ok = d.get("format") == "credvault-identity"
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise WrongPassphrase("not a credvault identity")
        if d.get("vault_id") != vault_id.hex():
            raise WrongPassphrase("the identity belongs to another vault")
        if not all(isinstance(d.get(k), str) for k in ("member", "kem", "sign", "admin_sign_pub")):
            raise WrongPassphrase("the identity is incomplete or corrupt")
        keys = cls(
            name=str(d["member"]),
            kem_private=p.KeyBytes(b64d(d["kem"], "identity")),
            sign_private=p.KeyBytes(b64d(d["sign"], "identity")),
            admin_sign_pub=b64d(d["admin_sign_pub"], "identity"),
        )
        if any(len(k) != 32 for k in (keys.kem_private, keys.sign_private, keys.admin_sign_pub)):
            # else the first use would fail deep in the X25519/Ed25519 code: "internal error"
            raise WrongPassphrase("the identity is incomplete or corrupt")
        return keys


class MemberSlot(NamedTuple):
    """One member's public record in the key-slot file."""

    name: str
    kem_pub: bytes
    sign_pub: bytes
    admin: bool
    service: bool
    created: str
    cert: bytes
    kdf: KdfParams | None
    salt: bytes | None
    private: bytes | None  # AES-GCM(Argon2id key, private keys); None for service identities
    db_key: bytes  # HPKE(database key)
    admin_key: bytes | None  # HPKE(admin signing private key), admins only
    # Former key pairs (X25519 pub, Ed25519 pub, certificate), oldest first, when the member
    # replaced their own keys (``passwd --compromised``) without an admin: the first is
    # admin-certified, each later one (and this slot's) signed by the one before.
    succession: tuple[tuple[bytes, bytes, bytes], ...] = ()

    def cert_message(
        self, vault_id: bytes, kem: bytes | None = None, sign: bytes | None = None
    ) -> bytes:
        return labels.encode(
            vault_id,
            self.name,
            self.kem_pub if kem is None else kem,
            self.sign_pub if sign is None else sign,
            int(self.admin),
            int(self.service),
        )

    def verify_cert(self, vault_id: bytes, admin_sign_pub: bytes) -> None:
        """The slot's public keys are the admin's certified ones, or succeed them: each
        former key pair signed the next (the flags are in every message, so a member cannot
        make themselves admin by succession)."""
        signer, label = admin_sign_pub, labels.MEMBER_CERT
        for kem, sign, cert in self.succession:
            p.verify(
                signer,
                label,
                self.cert_message(vault_id, kem, sign),
                cert,
                f"certificate of a former key of member {self.name!r}",
            )
            signer, label = sign, labels.MEMBER_SUCCESSION
        p.verify(
            signer,
            label,
            self.cert_message(vault_id),
            self.cert,
            f"certificate of member {self.name!r}",
        )


class Recovery(NamedTuple):
    kem_pub: bytes
    sign_pub: bytes
    cert: bytes

    def verify(self, vault_id: bytes, admin_sign_pub: bytes) -> None:
        p.verify(
            admin_sign_pub,
            labels.MEMBER_CERT,
            labels.encode(vault_id, "@recovery", self.kem_pub, self.sign_pub),
            self.cert,
            "certificate of the recovery key",
        )


class KeySlots(NamedTuple):
    """The parsed key-slot file. Untrusted until :meth:`verify_mac` has passed."""

    vault_id: bytes
    generation: int
    admin_sign_pub: bytes
    receipt_pub: bytes
    recovery: Recovery
    members: dict[str, MemberSlot]
    pending: dict[str, bytes] | None = None  # next-generation db-key slots during a re-key
    # name: (sign pub, cert) of former members. Never mutated in place (always _replace'd).
    retired: dict[str, tuple[tuple[bytes, bytes], ...]] = {}  # noqa: RUF012
    mac: bytes = b""

    # -- serialisation -------------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        def slot(m: MemberSlot) -> dict[str, Any]:
            return {
                "kem": b64e(m.kem_pub),
                "sign": b64e(m.sign_pub),
                "admin": m.admin,
                "service": m.service,
                "created": m.created,
                "cert": b64e(m.cert),
                "kdf": None
                if m.kdf is None
                else {
                    "m": m.kdf.memory_kib,
                    "t": m.kdf.iterations,
                    "p": m.kdf.lanes,
                    "salt": b64e(m.salt or b""),
                },
                "private": None if m.private is None else b64e(m.private),
                "db_key": b64e(m.db_key),
                "admin_key": None if m.admin_key is None else b64e(m.admin_key),
            } | (  # only when present: files without it stay byte for byte
                {
                    "succession": [
                        {"kem": b64e(k), "sign": b64e(s), "cert": b64e(c)}
                        for k, s, c in m.succession
                    ]
                }
                if m.succession
                else {}
            )

        return {
            "format": FORMAT,
            "version": VERSION,
            "vault_id": self.vault_id.hex(),
            "generation": self.generation,
            "admin_sign_pub": b64e(self.admin_sign_pub),
            "receipt_pub": b64e(self.receipt_pub),
            "recovery": {
                "kem": b64e(self.recovery.kem_pub),
                "sign": b64e(self.recovery.sign_pub),
                "cert": b64e(self.recovery.cert),
            },
            "members": {n: slot(m) for n, m in sorted(self.members.items())},
            "pending": None
            if self.pending is None
            else {n: b64e(s) for n, s in sorted(self.pending.items())},
            "retired": {
                n: [{"sign": b64e(k), "cert": b64e(c)} for k, c in keys]
                for n, keys in sorted(self.retired.items())
            },
        }

    def _canonical(self) -> bytes:
        return json.dumps(self._body(), sort_keys=True, separators=(",", ":")).encode()

    def membership_digest(self) -> str:
        """SHA-256 (hex) of everything in the file except how the database key is sealed.

        The database records this digest in the same transaction as the audit entry of every
        membership or passphrase change, which makes that COMMIT the moment the change takes
        effect (see :mod:`credvault.slotfile`). Re-keying changes only the sealed database key
        (``db_key`` slots, ``pending``, ``generation``) and the MAC, so it leaves the digest
        alone: which key is current is proved by the database file itself.
        """
        body = self._body()
        for key in ("generation", "pending"):
            del body[key]
        for slot in body["members"].values():
            del slot["db_key"]
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(data).hexdigest()

    def sealed_with(self, db_key: bytes) -> KeySlots:
        """This file with its MAC computed under ``db_key``."""
        return self._replace(mac=p.mac(p.hkdf(db_key, labels.KEYSLOTS_MAC), self._canonical()))

    def verify_mac(self, db_key: bytes) -> None:
        p.mac_verify(
            p.hkdf(db_key, labels.KEYSLOTS_MAC), self._canonical(), self.mac, "key-slot file"
        )

    def to_bytes(self) -> bytes:
        body = self._body()
        body["mac"] = b64e(self.mac)
        return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeySlots:
        try:
            d = json.loads(data)
        except (ValueError, RecursionError):
            raise IntegrityError("key-slot file is corrupt (not JSON)") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise IntegrityError("key-slot file is corrupt or not a credvault key-slot file")
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            # The MAC covers the format as written by this version; an edited number is
            # corruption, not a format we might read.
            raise IntegrityError("key-slot file is corrupt (bad version)")
        if version > VERSION:
            raise UnsupportedFormat(
                f"this vault's key-slot format {d.get('version')!r} is newer than this credvault "
                f"supports ({VERSION}); upgrade credvault"
            )
        try:
            return cls._parse(d)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            # Every check in _parse raises IntegrityError itself; these catch what a strict
            # reader might still have missed, so a hostile file is never "internal error".
            raise IntegrityError("key-slot file is corrupt (missing or malformed fields)") from None

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> KeySlots:
        """Strict reader: exact JSON types, bounded integers, exact key and blob lengths.

        The file is read before anything authenticates it (its MAC key comes from the slot
        it holds), so every field is hostile until checked: ``"admin": "false"`` is not true,
        ``generation = 2**70`` is corruption (exit 6), not an overflow deep inside.
        """
        members = {}
        for name, m in _obj(d, "members").items():
            _member_name(name, "members")
            m = _as_obj(m, f"member {name!r}")
            kdf = m.get("kdf", _MISSING)
            if kdf is _MISSING:
                raise IntegrityError(f"key-slot file is corrupt (member {name!r}: kdf missing)")
            params = salt = None
            if kdf is not None:
                kdf = _as_obj(kdf, f"member {name!r} kdf")
                params = KdfParams(
                    _int(kdf, "m", 1, _KDF_INT_MAX),
                    _int(kdf, "t", 1, _KDF_INT_MAX),
                    _int(kdf, "p", 1, _KDF_INT_MAX),
                )
                salt = _b64(kdf, "salt", SALT_LEN)
            private = m.get("private", _MISSING)
            admin_key = m.get("admin_key", _MISSING)
            if private is _MISSING or admin_key is _MISSING:
                raise IntegrityError(f"key-slot file is corrupt (member {name!r}: field missing)")
            succession: tuple[tuple[bytes, bytes, bytes], ...] = ()
            if "succession" in m:
                steps = m["succession"]
                if not isinstance(steps, list) or not 0 < len(steps) <= SUCCESSION_MAX:
                    raise IntegrityError(f"key-slot file is corrupt (member {name!r}: succession)")
                succession = tuple(
                    (_b64(st, "kem", 32), _b64(st, "sign", 32), _b64(st, "cert", 64))
                    for st in (_as_obj(x, "succession step") for x in steps)
                )
            members[name] = MemberSlot(
                name=name,
                kem_pub=_b64(m, "kem", 32),
                sign_pub=_b64(m, "sign", 32),
                admin=_bool(m, "admin"),
                service=_bool(m, "service"),
                created=_str(m, "created"),
                cert=_b64(m, "cert", 64),
                kdf=params,
                salt=salt,
                private=None if private is None else _b64(m, "private"),
                db_key=_b64(m, "db_key", SEALED_KEY_LEN),
                admin_key=None if admin_key is None else _b64(m, "admin_key", SEALED_KEY_LEN),
                succession=succession,
            )
        rec = _obj(d, "recovery")
        pending = d.get("pending", _MISSING)
        if pending is _MISSING:
            raise IntegrityError("key-slot file is corrupt (pending missing)")
        retired: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
        for n, keys in _obj(d, "retired").items():
            _member_name(n, "retired")
            if not isinstance(keys, list):
                raise IntegrityError("key-slot file is corrupt (retired keys)")
            retired[n] = tuple(
                (_b64(_as_obj(r, "retired key"), "sign", 32), _b64(r, "cert", 64)) for r in keys
            )
        vault_id = _str(d, "vault_id")
        if len(vault_id) != 32 or vault_id != vault_id.lower():
            raise IntegrityError("key-slot file is corrupt (vault id)")
        return cls(
            vault_id=bytes.fromhex(vault_id),
            generation=_int(d, "generation", 1, GENERATION_MAX),
            admin_sign_pub=_b64(d, "admin_sign_pub", 32),
            receipt_pub=_b64(d, "receipt_pub", 32),
            recovery=Recovery(_b64(rec, "kem", 32), _b64(rec, "sign", 32), _b64(rec, "cert", 64)),
            members=members,
            pending=None
            if pending is None
            else {
                _member_name(n, "pending"): _b64(_as_obj(pending, "pending"), n, SEALED_KEY_LEN)
                for n in _as_obj(pending, "pending")
            },
            retired=retired,
            mac=_b64(d, "mac", 32),
        )

    # -- files ------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: Path) -> KeySlots:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            raise NotAVault(f"{path.parent} is not a credvault vault (no key-slot file)") from None
        if len(data) > MAX_SIZE:
            raise IntegrityError("key-slot file is too large")
        return cls.from_bytes(data)

    def write(self, path: Path) -> None:
        atomic_write(path, self.to_bytes())

    # -- member keys ----------------------------------------------------------------------
    def db_key_info(self, name: str, generation: int | None = None) -> bytes:
        gen = self.generation if generation is None else generation
        return labels.encode(labels.SEAL_DB_KEY, self.vault_id, name, gen)

    def open_db_key(self, keys: MemberKeys) -> bytes:
        """The database key from the member's slot, after checking their certificate."""
        slot = self.members[keys.name]
        self.check_member_keys(slot, keys)
        return p.hpke_open(keys.kem_private, slot.db_key, self.db_key_info(keys.name))

    def open_pending_db_key(self, keys: MemberKeys) -> bytes | None:
        if not self.pending or keys.name not in self.pending:
            return None
        return p.hpke_open(
            keys.kem_private,
            self.pending[keys.name],
            self.db_key_info(keys.name, self.generation + 1),
        )

    def certified_kem(self, name: str, admin_sign_pub: bytes) -> bytes:
        """A member's X25519 public key after checking its admin-signed certificate.

        Everything sealed to a member goes through here: the key-slot MAC is keyed from the
        database key, which insiders hold, so only the certificate stops a swapped key.
        """
        slot = self.members[name]
        slot.verify_cert(self.vault_id, admin_sign_pub)
        return slot.kem_pub

    def signing_key(self, name: str, admin_sign_pub: bytes) -> bytes | None:
        """A current member's certified Ed25519 public key, else None."""
        slot = self.members.get(name)
        if slot is None:
            return None
        slot.verify_cert(self.vault_id, admin_sign_pub)
        return slot.sign_pub

    def retired_keys(self, name: str, admin_sign_pub: bytes) -> list[bytes]:
        """The certified signing keys ``name`` held before leaving or being reset."""
        out = []
        for pub, cert in self.retired.get(name, ()):
            p.verify(
                admin_sign_pub,
                labels.MEMBER_CERT,
                retired_cert_message(self.vault_id, name, pub),
                cert,
                f"certificate of former key of {name!r}",
            )
            out.append(pub)
        return out

    def check_member_keys(self, slot: MemberSlot, keys: MemberKeys) -> None:
        """The slot's public keys must be certified and match the unlocked private keys."""
        slot.verify_cert(self.vault_id, keys.admin_sign_pub)
        if (
            p.x25519_public(keys.kem_private) != slot.kem_pub
            or p.ed25519_public(keys.sign_private) != slot.sign_pub
        ):
            raise IntegrityError(f"key slot of {slot.name!r} does not match the member's keys")
        self.recovery.verify(self.vault_id, keys.admin_sign_pub)


def retired_cert_message(vault_id: bytes, name: str, sign_pub: bytes) -> bytes:
    return labels.encode(vault_id, "@retired", name, sign_pub)


def private_aad(vault_id: bytes, name: str) -> bytes:
    return labels.encode(labels.MEMBER_PRIVATE, vault_id, name)


def encrypt_private(
    vault_id: bytes, keys: MemberKeys, passphrase: Secret, params: KdfParams
) -> tuple[bytes, bytes]:
    """(salt, blob): the member's private keys under an Argon2id-derived key."""
    check(params, from_disk=False)
    salt = new_salt()
    kek = derive(passphrase, salt, params)
    return salt, p.aead_encrypt(kek, keys.to_bytes(vault_id), private_aad(vault_id, keys.name))


def decrypt_private(vault_id: bytes, slot: MemberSlot, passphrase: Secret) -> MemberKeys:
    """Argon2id + AES-GCM; a wrong passphrase is :class:`WrongPassphrase`.

    The passphrase arrives as a :class:`Secret` and the derived key is dropped before any
    error is raised, so a traceback printed with its locals shows neither.
    """
    if slot.private is None or slot.kdf is None or slot.salt is None:
        raise WrongPassphrase(f"member {slot.name!r} is a service identity: use its identity file")
    check(slot.kdf, from_disk=True)
    kek = derive(passphrase, slot.salt, slot.kdf)
    try:
        data: bytes | None = p.aead_decrypt(kek, slot.private, private_aad(vault_id, slot.name))
    except IntegrityError:
        data = None
    del kek
    if data is None:
        raise WrongPassphrase(f"wrong passphrase for member {slot.name!r}")
    keys = MemberKeys.from_bytes(data, vault_id)
    if keys.name != slot.name:
        raise IntegrityError("key slot belongs to another member")
    return keys


def new_member_keys(name: str, admin_sign_pub: bytes) -> MemberKeys:
    kem, _ = p.x25519_generate()
    sign, _ = p.ed25519_generate()
    return MemberKeys(name, kem, sign, admin_sign_pub)


def make_slot(
    slots_vault_id: bytes,
    generation: int,
    keys: MemberKeys,
    *,
    admin: bool,
    service: bool,
    created: str,
    admin_sign_private: bytes,
    db_key: bytes,
    passphrase: Secret | None,
    params: KdfParams | None,
) -> MemberSlot:
    """A certified slot for ``keys`` (passphrase-protected unless ``service``)."""
    kem_pub = p.x25519_public(keys.kem_private)
    sign_pub = p.ed25519_public(keys.sign_private)
    draft = MemberSlot(
        keys.name, kem_pub, sign_pub, admin, service, created, b"", None, None, None, b"", None
    )
    cert = p.sign(admin_sign_private, labels.MEMBER_CERT, draft.cert_message(slots_vault_id))
    salt = private = None
    if not service:
        assert passphrase is not None
        assert params is not None
        salt, private = encrypt_private(slots_vault_id, keys, passphrase, params)
    db_slot = p.hpke_seal(
        kem_pub, db_key, labels.encode(labels.SEAL_DB_KEY, slots_vault_id, keys.name, generation)
    )
    admin_key = (
        p.hpke_seal(
            kem_pub,
            admin_sign_private,
            labels.encode(labels.SEAL_ADMIN_KEY, slots_vault_id, keys.name),
        )
        if admin
        else None
    )
    return draft._replace(
        cert=cert,
        kdf=None if service else params,
        salt=salt,
        private=private,
        db_key=db_slot,
        admin_key=admin_key,
    )


def successor_slot(
    vault_id: bytes,
    generation: int,
    old: MemberSlot,
    old_keys: MemberKeys,
    keys: MemberKeys,
    *,
    db_key: bytes,
    passphrase: Secret,
    params: KdfParams,
) -> MemberSlot:
    """``old``'s member with the new key pair ``keys``, certified by the old one (no admin
    needed): ``passwd --compromised`` by a member who is not an admin. Admins re-certify
    with the admin key instead (:func:`make_slot`), keeping no succession."""
    if len(old.succession) >= SUCCESSION_MAX:
        raise IntegrityError(
            f"member {old.name!r} replaced their keys {SUCCESSION_MAX} times: ask an admin "
            "to reset them (member reset) instead"
        )
    draft = old._replace(
        kem_pub=p.x25519_public(keys.kem_private),
        sign_pub=p.ed25519_public(keys.sign_private),
        succession=(*old.succession, (old.kem_pub, old.sign_pub, old.cert)),
        admin_key=None,
    )
    cert = p.sign(old_keys.sign_private, labels.MEMBER_SUCCESSION, draft.cert_message(vault_id))
    salt, private = encrypt_private(vault_id, keys, passphrase, params)
    db_slot = p.hpke_seal(
        draft.kem_pub, db_key, labels.encode(labels.SEAL_DB_KEY, vault_id, keys.name, generation)
    )
    return draft._replace(cert=cert, kdf=params, salt=salt, private=private, db_key=db_slot)


def open_admin_key(vault_id: bytes, slot: MemberSlot, keys: MemberKeys) -> bytes:
    """The admin signing private key, checked against the member's pinned public half."""
    if slot.admin_key is None:
        raise IntegrityError("no admin key in slot")
    priv = p.hpke_open(
        keys.kem_private, slot.admin_key, labels.encode(labels.SEAL_ADMIN_KEY, vault_id, slot.name)
    )
    if p.ed25519_public(priv) != keys.admin_sign_pub:
        raise IntegrityError("admin signing key in the key-slot file is not the pinned one")
    return priv
