"""A team vault's trust: certified member keys and each engagement's signed membership log.

On PostgreSQL the server (and so its DBA, and the owner role) can write every row. A
member who sealed an engagement key to whatever ``kem_pub`` the server shows would seal it
to the DBA's key the moment the DBA swapped one. So, as on SQLCipher, nothing the server
says decides who is sealed a key (docs/security.md §12, "On a team vault"):

- **Certified keys** (:class:`Certs`). An admin who invites signs an *invitation
  statement* naming the member, the admin flag and the public half of an Ed25519 key
  derived from the invitation code (which only the admin and the invitee ever see). At
  ``join`` the invitee derives the same key from the code and signs their new public keys
  with it (the *join proof*). So a member's keys are certified by a chain of signatures
  that ends at the vault's founder, whose signing-key fingerprint every member pins in their
  own key slot (it travels inside the invitation code). The DBA knows no invitation code
  and no admin's private key: it can delete certificates (denial of service), not make one.
- **The membership log** (:mod:`credvault.memberlog`, byte for byte the SQLCipher links):
  replayed here, link 0 checked against the creator's certified admin key, every later link
  against the keys the log itself pins. Copies are sealed to the log's roster and pinned
  keys only, and a copy is accepted only if the log made this member a holder of that key
  version and the key has the fingerprint the rotating lead signed.
- **A witness** of each log this member verified, kept MACed (a key derived from their
  signing key) in their state directory: a log shorter than, or forked from, what they
  verified before is tampering (exit 6), and only the new links cost a signature check.

Pure client code: the statements go through :class:`credvault.postgres.store.PgStore`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput, NotFound

__all__ = [
    "AdminKeys",
    "CertRow",
    "Certified",
    "Certs",
    "LogWitness",
    "fingerprint",
    "invitation_key",
    "invitation_message",
    "join_message",
    "make_code",
    "parse_code",
    "pre_log_list",
    "pre_log_uids",
]

_FP_LEN = 32
NO_RECOVERY = b""  # a team vault has no recovery key: no link can be signed as "@recovery"


def fingerprint(sign_pub: bytes) -> str:
    """What a member compares out of band, and what an invitation code carries."""
    return p.digest(sign_pub).hex()[:_FP_LEN]


# -- invitations ------------------------------------------------------------------------------
def make_code(anchor_fp: str) -> str:
    """A one-time invitation code: 144 random bits, then the founder's fingerprint.

    The whole code is the one-time login password (the server keeps its SCRAM verifier)
    and the seed of the invitation key; the fingerprint is what the joiner pins."""
    return f"{secrets.token_urlsafe(18)}.{anchor_fp}"


def parse_code(code: str) -> str:
    """The anchor fingerprint an invitation code carries (InvalidInput if it has none)."""
    _, sep, fp = code.strip().rpartition(".")
    if not sep or len(fp) != _FP_LEN or any(c not in "0123456789abcdef" for c in fp):
        raise InvalidInput("the invitation code is malformed (made by an older credvault?)")
    return fp


def invitation_key(code: bytes) -> bytes:
    """The Ed25519 private key both the inviting admin and the invitee derive from the code."""
    return p.hkdf(code, labels.TEAM_INVITE_KEY)


def invitation_message(
    vault_id: bytes, member: str, ipk: bytes, admin: bool, inviter: str
) -> bytes:
    """What the inviting admin signs (docs/format.md §19.4)."""
    return labels.encode("invite", vault_id, member, ipk, int(admin), inviter)


def join_message(vault_id: bytes, member: str, sign_pub: bytes, kem_pub: bytes) -> bytes:
    """What the invitation key signs at join: the keys the invitee made."""
    return labels.encode("join", vault_id, member, sign_pub, kem_pub)


# -- certificates -----------------------------------------------------------------------------
class CertRow(NamedTuple):
    """One row of ``credvault.member_certificates()``: claims, until :class:`Certs` checks."""

    member: str
    inviter: str
    admin: bool
    ipk: bytes
    invitation_sig: bytes
    join_sig: bytes | None
    sign_pub: bytes | None
    kem_pub: bytes | None
    state: str


class Certified(NamedTuple):
    sign: bytes
    kem: bytes
    admin: bool
    active: bool


class Certs:
    """Every member's keys, each believed only through its chain of signatures."""

    def __init__(self, vault_id: bytes, anchor: str | None, rows: Mapping[str, CertRow]) -> None:
        self.vault_id = vault_id
        self.anchor = anchor
        self.rows = dict(rows)
        self._done: dict[str, Certified] = {}

    def keys(self, member: str) -> Certified:
        """The certified keys of an active member: NotFound if not an active member,
        IntegrityError if the published keys are not the ones the chain certifies."""
        row = self.rows.get(member)
        if row is None or row.state != "active":
            raise NotFound("member", member)
        return self._chain(member, frozenset())

    def _chain(self, member: str, seen: frozenset[str]) -> Certified:
        done = self._done.get(member)
        if done is not None:
            return done
        row = self.rows.get(member)
        if row is None or member in seen or len(seen) > len(self.rows):
            raise IntegrityError(f"the keys of member {member!r} are not certified")
        if row.join_sig is None or row.sign_pub is None or row.kem_pub is None:
            raise IntegrityError(f"the keys of member {member!r} are not certified (no join proof)")
        what = f"the keys of member {member!r}"
        p.verify(
            row.ipk,
            labels.TEAM_JOIN_PROOF,
            join_message(self.vault_id, member, row.sign_pub, row.kem_pub),
            row.join_sig,
            what,
        )
        if row.inviter == member:  # the founder: self-invited, pinned by every member
            self._check_anchor(row)
            inviter_key = row.sign_pub
        else:
            inviter = self._chain(row.inviter, seen | {member})
            if not inviter.admin:
                raise IntegrityError(f"{what}: invited by {row.inviter!r}, who is not an admin")
            inviter_key = inviter.sign
        p.verify(
            inviter_key,
            labels.TEAM_INVITE_SIG,
            invitation_message(self.vault_id, member, row.ipk, row.admin, row.inviter),
            row.invitation_sig,
            what,
        )
        got = Certified(row.sign_pub, row.kem_pub, row.admin, row.state == "active")
        self._done[member] = got
        return got

    def _check_anchor(self, row: CertRow) -> None:
        assert row.sign_pub is not None
        if self.anchor is not None:
            if fingerprint(row.sign_pub) != self.anchor:
                raise IntegrityError(
                    f"member {row.member!r} claims to be the vault's founder: not the key "
                    "this member's slot pins"
                )
            return
        # A slot written before certificates pins nothing: trust on first use, and only
        # while there is exactly one founder (docs/security.md §12, "On a team vault").
        founders = [r for r in self.rows.values() if r.inviter == r.member]
        if len(founders) != 1:
            raise IntegrityError("more than one self-certified founder in the team vault")

    def founder(self) -> str:
        """The fingerprint of the one self-certified member (for a slot that pins none)."""
        founders = [r for r in self.rows.values() if r.inviter == r.member and r.sign_pub]
        if len(founders) != 1 or founders[0].sign_pub is None:
            raise IntegrityError("the team vault's founder is not unique")
        return fingerprint(founders[0].sign_pub)

    def founder_key(self) -> bytes:
        """The founder's signing key, its certificate checked against the pinned anchor."""
        fp = self.anchor or self.founder()
        for row in self.rows.values():
            if row.inviter == row.member and row.sign_pub and fingerprint(row.sign_pub) == fp:
                return self._chain(row.member, frozenset()).sign
        raise IntegrityError("the team vault's founder is missing")

    def sealer(self, member: str) -> bytes:
        """The certified signing key of a member, current or removed (who sealed a copy)."""
        return self._chain(member, frozenset()).sign

    def admin_keys(self, member: str) -> frozenset[bytes]:
        """The signing key a creation link by ``member`` must carry (empty: not an admin)."""
        try:
            c = self._chain(member, frozenset())
        except IntegrityError:
            return frozenset()
        return frozenset({c.sign}) if c.admin else frozenset()


class AdminKeys(Mapping[str, frozenset[bytes]]):
    """Every certified admin's signing key (current or removed, as :meth:`Certs.admin_keys`
    checks it): who may sign a ``revoke`` link off the roster (``member rm``).

    Loaded at the first lookup only: a replay asks for it only at a revoke link an admin
    who does not lead signed, so ``get`` reads no certificate for the links it verifies."""

    def __init__(self, certs: Callable[[], Certs]) -> None:
        self._certs = certs
        self._keys: dict[str, frozenset[bytes]] | None = None

    def _load(self) -> dict[str, frozenset[bytes]]:
        if self._keys is None:
            certs = self._certs()
            admins = (n for n, r in certs.rows.items() if r.admin)
            self._keys = {n: k for n in admins if (k := certs.admin_keys(n))}
        return self._keys

    def __getitem__(self, name: str) -> frozenset[bytes]:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# -- engagements carried over without a log -------------------------------------------------
def pre_log_list(vault_id: bytes, uids: list[bytes], sign_private: bytes) -> bytes:
    """The founder's signed list of engagements ``migrate`` carried without a log
    (docs/format.md §19.6): signature ‖ encode(vault id, uid…)."""
    body = labels.encode(vault_id, *uids)
    return p.sign(sign_private, labels.TEAM_PRE_LOG, body) + body


def pre_log_uids(vault_id: bytes, blob: bytes | None, founder: bytes) -> frozenset[bytes]:
    """The uids the founder listed (empty for a vault made new); IntegrityError if forged."""
    if blob is None:
        return frozenset()
    sig, body = blob[: ml.SIG_LEN], blob[ml.SIG_LEN :]
    p.verify(founder, labels.TEAM_PRE_LOG, body, sig, "the list of migrated engagements")
    parts, i = [], 0
    while i + 4 <= len(body):
        n = int.from_bytes(body[i : i + 4], "big")
        parts.append(body[i + 4 : i + 4 + n])
        i += 4 + n
    if i != len(body) or not parts or parts[0] != vault_id:
        raise IntegrityError("the list of migrated engagements is malformed")
    return frozenset(parts[1:])


# -- the member's witness of the logs they verified ------------------------------------------
class LogWitness:
    """Verified log states of one member, MACed with a key only they hold, in their state
    directory (``$XDG_STATE_HOME/credvault/team/<database>/<member>.logs``).

    It saves work (only new links are verified) and it is the rollback detector: a server
    log that ends before, or differs from, a state verified here is tampering."""

    FORMAT = "credvault-team-logs"

    def __init__(self, path: Path, vault_id: bytes, member: str, sign_private: bytes) -> None:
        self.path = path
        self.vault_id = vault_id
        self.member = member
        self._key = p.hkdf(sign_private, labels.MEMBER_STATE_MAC)
        self.states: dict[bytes, ml.State] = {}
        self._load()

    @staticmethod
    def path_for(database: str, member: str) -> Path:
        base = os.environ.get("XDG_STATE_HOME")
        root = Path(base) if base else Path.home() / ".local" / "state"
        return root / "credvault" / "team" / database / f"{member}.logs"

    def _mac_input(self, uid: bytes, blob: bytes) -> bytes:
        return labels.encode(self.vault_id, uid, self.member, blob)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(data)
            if doc.get("format") != self.FORMAT or doc.get("vault_id") != self.vault_id.hex():
                raise ValueError
            entries = doc["states"].items()
        except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
            raise IntegrityError(f"team log witness {self.path} is corrupt") from None
        for uid_hex, (blob_b64, tag_hex) in entries:
            uid = bytes.fromhex(uid_hex)
            blob = base64.b64decode(blob_b64)
            p.mac_verify(
                self._key, self._mac_input(uid, blob), bytes.fromhex(tag_hex), "team log witness"
            )
            self.states[uid] = ml.state_from_bytes(blob)

    def keep(self, uid: bytes, state: ml.State) -> None:
        if self.states.get(uid) == state:
            return
        self.states[uid] = state
        self._save()

    def forget(self, uids: set[bytes]) -> None:
        """Drop these logs' states (``witness accept``): the next view verifies them from
        link 0, as a client that never saw them does."""
        for uid in uids:
            self.states.pop(uid, None)
        self._save()

    def _save(self) -> None:
        doc = {
            "format": self.FORMAT,
            "vault_id": self.vault_id.hex(),
            "states": {
                u.hex(): [
                    base64.b64encode(b := ml.state_to_bytes(s)).decode(),
                    p.mac(self._key, self._mac_input(u, b)).hex(),
                ]
                for u, s in sorted(self.states.items())
            },
        }
        from credvault.files import atomic_write, make_private_dir

        with contextlib.suppress(FileExistsError):
            make_private_dir(self.path.parent)
        atomic_write(self.path, json.dumps(doc, sort_keys=True).encode(), durable=False)

    def by_name(self, name: str) -> tuple[bytes, ml.State] | None:
        """The state verified for the engagement that was called ``name`` (a hint for
        asking the server only for newer links; the uid is checked on the answer)."""
        for uid, s in self.states.items():
            if s.name == name:
                return uid, s
        return None
