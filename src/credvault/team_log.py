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
- **The revocation list** (:class:`Revocation`, :func:`replay_revocations`): who is no
  longer a member of the vault, as admins signed it at ``member rm`` (format.md §19.7), not
  as the ``members`` rows say. A key it lists is sealed nothing, whatever the rows say.
- **A witness** of each log this member verified (and of the list's latest version), kept MACed (a key derived from their
  signing key) in their state directory: a log shorter than, or forked from, what they
  verified before is tampering (exit 6), and only the new links cost a signature check.

Pure client code: the statements go through :class:`credvault.postgres.store.PgStore`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError, InvalidInput, NotFound

__all__ = [
    "NOTHING_REVOKED",
    "AdminKeys",
    "CertRow",
    "Certified",
    "Certs",
    "LogWitness",
    "RekeyRow",
    "Revocation",
    "Revoked",
    "fingerprint",
    "invitation_key",
    "invitation_message",
    "join_message",
    "links_signed_by",
    "make_code",
    "parse_code",
    "pre_log_list",
    "pre_log_uids",
    "rekey_message",
    "replay_revocations",
    "revocation_hash",
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
    import secrets  # only here: `credvault get` never invites

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


def rekey_message(
    vault_id: bytes,
    member: str,
    seq: int,
    prev: tuple[bytes, bytes],
    new: tuple[bytes, bytes],
    certifier: str,
    certifier_key: bytes,
) -> bytes:
    """What an admin signs to certify a member's new keys after ``passwd --compromised``
    (docs/format.md §19.8): the hand-over ``seq``, the pair certified before (chaining the
    certificate to the member's history), the new pair, and who signs with which key."""
    return labels.encode("rekey", vault_id, member, seq, *prev, *new, certifier, certifier_key)


# -- certificates -----------------------------------------------------------------------------
# (member, index of a pair in their history): the certifications a check is inside of
_Seen = frozenset[tuple[str, int]]


def _upto(pairs: tuple[Certified, ...], stop: Callable[[bytes], bool]) -> tuple[Certified, ...]:
    """``pairs`` up to the first whose signing key ``stop`` accepts (all if none does)."""
    for i, c in enumerate(pairs):
        if stop(c.sign):
            return pairs[: i + 1]
    return pairs


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


class RekeyRow(NamedTuple):
    """One row of ``credvault.member_rekeys()``: an admin's certificate of the keys a
    member's hand-over ``seq`` named (format.md §19.8); a claim until :meth:`Certs.history`
    checks it."""

    member: str
    seq: int
    sign_pub: bytes
    kem_pub: bytes
    certifier: str
    certifier_key: bytes
    signature: bytes


class Certs:
    """Every member's keys, each believed only through its chain of signatures.

    Two questions, answered differently. *Whose signature was this?* (:meth:`sealer`,
    :meth:`admin_keys`, :meth:`founder_key`): the chain alone, so what a member signed
    before they were removed stays checkable. *Who may be sealed a key now?*
    (:meth:`keys`, :meth:`listed`): the chain and the admin-signed revocation list
    (:class:`Revoked`, format.md §19.7), loaded through ``revoked`` at the first such
    question only, so ``get`` does not read it for the links it verified before. One
    question takes both: was this admin-signed link (link 0, an off-roster ``revoke`` or
    ``set``) made before the admin's removal? (:meth:`after_removal`).

    A member's keys may change (``passwd --compromised``): an admin's certificate of the
    new pair (:class:`RekeyRow`, format.md §19.8) chains it to the pair certified before.
    :meth:`history` is every certified pair, :meth:`current` the last; who may be sealed a
    key is asked of the current pair, and the old pairs are on the revocation list (the
    version retiring them names the links they signed as an admin, so those stay valid
    and the new pair signs what follows)."""

    def __init__(
        self,
        vault_id: bytes,
        anchor: str | None,
        rows: Mapping[str, CertRow],
        revoked: Callable[[Certs], Revoked] | None = None,
        rekeys: Iterable[RekeyRow] = (),
    ) -> None:
        self.vault_id = vault_id
        self.anchor = anchor
        self.rows = dict(rows)
        self._done: dict[str, Certified] = {}
        self._invited_with: dict[str, bytes] = {}
        self._load_revoked = revoked
        self._revoked: Revoked | None = None if revoked else NOTHING_REVOKED
        self.rekeys: dict[str, list[RekeyRow]] = {}
        self._histories: dict[str, tuple[Certified, ...]] = {}
        self._prefix: dict[str, list[Certified]] = {}
        self.set_rekeys(rekeys)

    def set_rekeys(self, rekeys: Iterable[RekeyRow]) -> None:
        """The certificates of new keys the server shows, by member, in ``seq`` order
        (an invitation may be signed with an admin's certified new key: every chain is
        checked again against them)."""
        self.rekeys = {}
        for r in sorted(rekeys, key=lambda r: (r.member, r.seq)):
            self.rekeys.setdefault(r.member, []).append(r)
        self._histories = {}
        self._prefix = {}
        self._done = {}
        self._invited_with = {}

    def history(self, member: str) -> tuple[Certified, ...]:
        """Every pair of keys certified for ``member``, oldest first: the pair the invitation
        chain certifies (:meth:`certified`), then each admin's certificate of new keys, each
        chained to the pair before it and signed by a certified key of an admin who is not
        ``member``. The revocation list is not consulted here (:meth:`keys` does);
        IntegrityError if any certificate does not verify."""
        return self._history(member, frozenset(), None)

    def current(self, member: str) -> Certified:
        """The last pair certified for ``member`` (what is sealed to, list permitting)."""
        return self.history(member)[-1]

    def signing_keys(self, member: str) -> frozenset[bytes]:
        """Every signing key certified for ``member`` (whose signature was this?)."""
        return frozenset(c.sign for c in self.history(member))

    def _history(
        self, member: str, seen: _Seen, stop: Callable[[bytes], bool] | None
    ) -> tuple[Certified, ...]:
        """:meth:`history`, or with ``stop`` only up to the first pair whose signing key it
        accepts (enough to check a signature made with that key; a later certificate need
        not verify). ``seen``: the pairs (member, index) whose certification is being
        checked further up: needing one of them again is a cycle — certificates whose
        certifiers' keys chain back to them — and IntegrityError. A pair is believed only
        through a chain that ends at the founder; each one verified is kept (the prefix),
        so a chain is checked once however many questions walk it."""
        done = self._histories.get(member)
        if done is not None:
            return done if stop is None else _upto(done, stop)
        if len(seen) > len(self.rows) + sum(len(v) for v in self.rekeys.values()):
            raise IntegrityError(f"the keys of member {member!r} are not certified (a cycle)")
        out = self._prefix.setdefault(member, [])
        if not out:
            out.append(self._chain(member, seen))
        certs = self.rekeys.get(member, [])
        while True:
            if stop is not None and any(stop(c.sign) for c in out):
                return _upto(tuple(out), stop)
            if len(out) > len(certs):
                break
            r, prev = certs[len(out) - 1], out[-1]
            what = f"the new keys of member {member!r} (certificate {r.seq})"
            last = certs[len(out) - 2].seq if len(out) > 1 else 0
            if r.seq <= last or r.certifier == member:
                raise IntegrityError(f"{what} do not follow the keys certified before")
            if (member, len(out)) in seen:
                raise IntegrityError(f"{what}: certified through themselves (a cycle)")
            inner = seen | {(member, len(out))}
            try:
                admin = self._chain(r.certifier, inner).admin
                theirs = self._history(r.certifier, inner, r.certifier_key.__eq__)
            except IntegrityError:
                raise IntegrityError(f"{what}: {r.certifier!r} is not certified") from None
            if not admin or theirs[-1].sign != r.certifier_key:
                raise IntegrityError(f"{what}: not signed by a certified admin ({r.certifier!r})")
            p.verify(
                r.certifier_key,
                labels.TEAM_REKEY_CERT,
                rekey_message(
                    self.vault_id,
                    member,
                    r.seq,
                    (prev.sign, prev.kem),
                    (r.sign_pub, r.kem_pub),
                    r.certifier,
                    r.certifier_key,
                ),
                r.signature,
                what,
            )
            out.append(prev._replace(sign=r.sign_pub, kem=r.kem_pub))
        got = tuple(out)
        self._histories[member] = got
        return got

    @property
    def revoked(self) -> Revoked:
        """The verified revocation list (version 0, nobody, where there is none)."""
        if self._revoked is None:
            assert self._load_revoked is not None
            self._revoked = self._load_revoked(self)
        return self._revoked

    def extend_revoked(self, r: Revocation, blob: bytes) -> None:
        """The list's next version, signed and stored by this client (no need to read and
        verify the whole list again)."""
        self._revoked = self.revoked.then(r, blob)

    def keys(self, member: str) -> Certified:
        """The certified keys of an active member: NotFound if not an active member or if
        the revocation list names these keys or their invitation (removed: no copy),
        IntegrityError if the published keys are not the ones the chain certifies, or the
        chain runs through a revoked admin who did not endorse them again."""
        row = self.rows.get(member)
        if row is None or row.state != "active":
            raise NotFound("member", member)
        got = self.current(member)
        r = self.revoked
        if r.names(got.sign, got.kem) or p.digest(row.ipk) in r.ipk:
            raise NotFound("member", member)
        self.check_path(member, r)
        return got

    def listed(self, sign: bytes, kem: bytes) -> bool:
        """Whether the revocation list names either key (a log's pinned keys, say)."""
        return self.revoked.names(sign, kem)

    def after_removal(self, signer: str, key: bytes, link_hash: bytes) -> str | None:
        """Why a link ``signer`` signed with ``key`` as an admin, off the roster (link 0, a
        ``revoke``, a ``set``, a ``succeed``), counts no more (None: it counts). A link a version of the
        revocation list names was there when that admin was removed: it stays. Otherwise
        the signing key must not be revoked, nor the signer's invitation, nor their chain
        run through a revoked admin who did not endorse them again (format.md §19.7).
        Reads the list (a round trip) only when such a link is met."""
        r = self.revoked
        if link_hash in r.links:
            return None
        if p.digest(key) in r.sign:
            return (
                f"signed by {signer!r} with a key the revocation list revokes, and no version "
                "names this link as signed before the removal: it was made after it"
            )
        row = self.rows.get(signer)
        if row is not None and p.digest(row.ipk) in r.ipk:
            return f"signed by {signer!r}, whose invitation the revocation list revokes"
        try:
            self.check_path(signer, r)
        except (IntegrityError, KeyError):
            return f"signed by {signer!r}, whose keys are not certified (an admin was removed)"
        return None

    def successor(self, member: str, sign: bytes, kem: bytes) -> str | None:
        """Why a ``succeed`` link re-pinning ``member`` to (``sign``, ``kem``) counts for
        nothing (None: it counts). The pair must be exactly one an admin's certificate of
        new keys certifies for ``member`` (format.md §19.8; ``member certify`` signs the
        link): a link the DBA wrote with keys of its own, or one the thief of a member's
        old key signed, is refused (IntegrityError at the replay), never sealed to. The
        certificates are read (a round trip) only when such a link is met; a certificate
        that does not verify is IntegrityError here. The invitation chain's pair counts
        too (a vault ``migrate`` carried over holds the succeed links SQLCipher's passwd
        signed, to the keys the member joined with); an old pair is never sealed to
        anyway: sealing asks :meth:`keys`, the current pair, which the list does not
        name."""
        if (sign, kem) in {(c.sign, c.kem) for c in self.history(member)}:
            return None
        return f"the new keys of {member!r} are not keys an admin certified for them"

    def check_path(self, member: str, r: Revoked, _seen: set[str] | None = None) -> None:
        """Every certificate on ``member``'s chain — their invitation, each certificate of
        new keys, and so on up through the admins who signed them — made with a key ``r``
        revokes must be endorsed again in ``r`` (the admin who revokes that key re-endorses
        what it certified); IntegrityError otherwise. Chains already verified. Asked of a
        list version's signer, of a member listed or sealed to, and by
        :meth:`after_removal` of an admin whose link 0, ``revoke`` or ``set`` a log holds:
        an admin's new keys count only while the certificate giving them does."""
        if not r.sign:
            return
        seen = set() if _seen is None else _seen
        if member in seen:
            return
        seen.add(member)
        row = self.rows.get(member)
        if row is None:  # a certifier the DBA named in a certificate of new keys
            raise IntegrityError(f"the keys of member {member!r} are not certified")
        if row.inviter != member:
            mine, theirs = self._chain(member, frozenset()), self._invited_with[member]
            if (
                p.digest(theirs) in r.sign
                and (member, p.digest(mine.sign), p.digest(mine.kem)) not in r.endorsed
            ):
                raise IntegrityError(
                    f"the keys of member {member!r} are not certified: invited by "
                    f"{row.inviter!r}, whose keys are revoked, and not endorsed again"
                )
            self.check_path(row.inviter, r, seen)
        for k in self.rekeys.get(member, ()):
            if (
                p.digest(k.certifier_key) in r.sign
                and (member, p.digest(k.sign_pub), p.digest(k.kem_pub)) not in r.endorsed
            ):
                raise IntegrityError(
                    f"the new keys of member {member!r} are not certified: certified by "
                    f"{k.certifier!r} with a key now revoked, and not endorsed again"
                )
            self.check_path(k.certifier, r, seen)

    def endorsements(self, name: str, revoked: set[bytes]) -> list[tuple[str, bytes, bytes]]:
        """What a list version that revokes ``name``'s signing keys ``revoked`` endorses
        again (format.md §19.7): every other member whose invitation or certificate of new
        keys ``name`` signed with one of them, with the keys it certifies (verified here;
        one that does not verify is left out: invite or certify them again)."""
        out: set[tuple[str, bytes, bytes]] = set()
        for other, r in self.rows.items():
            if other == name:
                continue
            if r.inviter == name:
                try:
                    c = self.certified(other)
                    if self._invited_with[other] in revoked:
                        out.add((other, p.digest(c.sign), p.digest(c.kem)))
                except IntegrityError:
                    pass  # not joined, or not certified
            for k in self.rekeys.get(other, ()):
                if k.certifier == name and k.certifier_key in revoked:
                    try:
                        self.history(other)
                    except IntegrityError:
                        continue
                    out.add((other, p.digest(k.sign_pub), p.digest(k.kem_pub)))
        return sorted(out)

    def _chain(self, member: str, seen: _Seen) -> Certified:
        """The pair ``member``'s invitation chain certifies: their join proof under the
        invitation key, and the invitation under a signing key certified for the inviter,
        an admin (:meth:`_inviter_key`), and so on up to the founder the slot pins. The list
        is not consulted (:meth:`check_path` is)."""
        done = self._done.get(member)
        if done is not None:
            return done
        row = self.rows.get(member)
        if (
            row is None
            or (member, 0) in seen
            or len(seen) > len(self.rows) + sum(len(v) for v in self.rekeys.values())
        ):
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
        statement = invitation_message(self.vault_id, member, row.ipk, row.admin, row.inviter)
        if row.inviter == member:  # the founder: self-invited, pinned by every member
            self._check_anchor(row)
            inviter_key = row.sign_pub
            p.verify(inviter_key, labels.TEAM_INVITE_SIG, statement, row.invitation_sig, what)
        else:
            inviter_key = self._inviter_key(row, statement, seen | {(member, 0)})
        got = Certified(row.sign_pub, row.kem_pub, row.admin, row.state == "active")
        self._done[member] = got
        self._invited_with[member] = inviter_key
        return got

    def _inviter_key(self, row: CertRow, statement: bytes, seen: _Seen) -> bytes:
        """Which of the inviter's certified signing keys signed ``row``'s invitation: the
        pair their own invitation certifies, or one an admin's certificate gave them after
        ``passwd --compromised`` (format.md §19.4, §19.8) — whether that key was revoked
        by then is the list's question (:meth:`check_path`: only a version's endorsement
        keeps what a revoked key certified). IntegrityError if none did, or if the only
        way there runs through ``row``'s member (a cycle)."""
        what = f"the keys of member {row.member!r}"
        inviter = self._chain(row.inviter, seen)
        if not inviter.admin:
            raise IntegrityError(f"{what}: invited by {row.inviter!r}, who is not an admin")

        def signed(key: bytes) -> bool:
            try:
                p.verify(key, labels.TEAM_INVITE_SIG, statement, row.invitation_sig, what)
            except IntegrityError:
                return False
            return True

        if signed(inviter.sign) or not self.rekeys.get(row.inviter):
            p.verify(inviter.sign, labels.TEAM_INVITE_SIG, statement, row.invitation_sig, what)
            return inviter.sign
        try:
            found = self._history(row.inviter, seen, signed)[-1].sign
        except IntegrityError:
            found = b""  # a certificate of the inviter's that does not verify, or a cycle
        if not found or not signed(found):
            raise IntegrityError(f"{what}: signature check failed")
        return found

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

    def certified(self, member: str) -> Certified:
        """The keys a member's chain certifies, current or removed, the list not consulted
        (whose signature was this?); IntegrityError if the chain does not verify."""
        return self._chain(member, frozenset())

    def sealer(self, member: str) -> bytes:
        """The certified signing key of a member, current or removed (who sealed a copy)."""
        return self._chain(member, frozenset()).sign

    def admin_keys(self, member: str) -> frozenset[bytes]:
        """The signing keys a creation link by ``member`` may carry (empty: not an admin):
        each one certified for them (a link signed before ``passwd --compromised`` stays
        checkable; one whose new keys do not verify keeps the first only)."""
        try:
            c = self._chain(member, frozenset())
        except IntegrityError:
            return frozenset()
        if not c.admin:
            return frozenset()
        try:
            return self.signing_keys(member)
        except IntegrityError:
            return frozenset({c.sign})


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


# -- the revocation list of member keys (format.md §19.7) -----------------------------------
LIST_FORMAT = 1
_DIGEST = 32
_MAX_LIST_VERSION = 2**31 - 1


def revocation_hash(blob: bytes) -> bytes:
    """What the next version names as ``prev`` and a witness keeps."""
    return p.digest(labels.TEAM_REVOCATION_HASH + blob)


def _parts(body: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(body):
        if i + 4 > len(body):
            raise IntegrityError("a revocation list version is malformed")
        n = int.from_bytes(body[i : i + 4], "big")
        if i + 4 + n > len(body):
            raise IntegrityError("a revocation list version is malformed")
        out.append(body[i + 4 : i + 4 + n])
        i += 4 + n
    return out


class Revocation(NamedTuple):
    """One parsed, not yet trusted version of the list: ``member`` removed by ``signer``,
    with their invitation key's digest, every pair of keys of theirs the signer knew
    (SHA-256 of the Ed25519 and of the X25519 public key), the members the signer
    endorses again (invited by ``member``, an admin: their chains stay good), and
    ``links``: the chain hash of every link 0, ``revoke``, ``set`` and ``succeed`` link a revoked
    signing key signed in the logs the signer read (:func:`links_signed_by`). Those stay
    valid; any other such link by a revoked key was made after the removal (format.md
    §19.7, "Links a revoked key signed")."""

    vault_id: bytes
    version: int
    prev: bytes
    time: str
    signer: str
    signer_key: bytes
    member: str
    ipk: bytes
    keys: tuple[tuple[bytes, bytes], ...]
    endorsed: tuple[tuple[str, bytes, bytes], ...]
    signature: bytes
    links: tuple[bytes, ...] = ()

    def body(self) -> bytes:
        return labels.encode(
            LIST_FORMAT,
            self.vault_id,
            self.version,
            self.prev,
            self.time,
            self.signer,
            self.signer_key,
            self.member,
            self.ipk,
            len(self.keys),
            *(d for pair in self.keys for d in pair),
            len(self.endorsed),
            *(x for e in self.endorsed for x in e),
            len(self.links),
            *self.links,
        )

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    def signed(self, sign_private: bytes) -> Revocation:
        return self._replace(
            signature=p.sign(sign_private, labels.TEAM_REVOCATION_LIST, self.body())
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> Revocation:
        """Parse (IntegrityError if malformed); trusts nothing."""
        bad = IntegrityError("a revocation list version is malformed")
        if len(blob) < ml.SIG_LEN + 4:
            raise bad
        parts = _parts(blob[: -ml.SIG_LEN])

        def integer(b: bytes) -> int:
            if len(b) != 8:
                raise bad
            return int.from_bytes(b, "big", signed=True)

        def text(b: bytes) -> str:
            try:
                return b.decode()
            except UnicodeDecodeError:
                raise bad from None

        def digest(b: bytes, empty: bool = False) -> bytes:
            if len(b) != _DIGEST and not (empty and not b):
                raise bad
            return b

        if len(parts) < 11 or integer(parts[0]) != LIST_FORMAT or len(parts[1]) != 16:
            raise bad
        if len(parts[3]) != _DIGEST or len(parts[6]) != _DIGEST:
            raise bad
        n = integer(parts[9])
        if n < 0 or len(parts) < 11 + 2 * n:
            raise bad
        keys = tuple((digest(parts[10 + 2 * i]), digest(parts[11 + 2 * i])) for i in range(n))
        at = 10 + 2 * n
        m = integer(parts[at])
        if m < 0 or len(parts) < at + 2 + 3 * m:
            raise bad
        endorsed = tuple(
            (
                text(parts[at + 1 + 3 * i]),
                digest(parts[at + 2 + 3 * i]),
                digest(parts[at + 3 + 3 * i]),
            )
            for i in range(m)
        )
        at += 1 + 3 * m
        h = integer(parts[at])
        if h < 0 or len(parts) != at + 1 + h:
            raise bad
        links = tuple(digest(parts[at + 1 + i]) for i in range(h))
        version = integer(parts[2])
        if not 1 <= version <= _MAX_LIST_VERSION:
            raise bad
        return cls(
            parts[1], version, parts[3], text(parts[4]), text(parts[5]), parts[6],
            text(parts[7]), digest(parts[8], empty=True), keys, endorsed, blob[-ml.SIG_LEN :],
            links,
        )  # fmt: skip


class Revoked(NamedTuple):
    """The list as verified up to ``version`` (0: none), ``head`` its last hash: digests
    of every revoked signing key, X25519 key and invitation key, the re-endorsed
    certificates (member, signing-key digest, X25519-key digest), and the chain hashes of
    the links revoked keys signed before their removal (every version's ``links``)."""

    version: int
    head: bytes
    sign: frozenset[bytes]
    kem: frozenset[bytes]
    ipk: frozenset[bytes]
    endorsed: frozenset[tuple[str, bytes, bytes]]
    members: tuple[str, ...]
    links: frozenset[bytes] = frozenset()

    def names(self, sign: bytes, kem: bytes) -> bool:
        return p.digest(sign) in self.sign or p.digest(kem) in self.kem

    def then(self, r: Revocation, blob: bytes) -> Revoked:
        return Revoked(
            r.version,
            revocation_hash(blob),
            self.sign | {s for s, _ in r.keys},
            self.kem | {k for _, k in r.keys},
            self.ipk | ({r.ipk} if r.ipk else set()),
            self.endorsed | set(r.endorsed),
            (*self.members, r.member),
            self.links | set(r.links),
        )


NOTHING_REVOKED = Revoked(0, ml.ZERO_HASH, frozenset(), frozenset(), frozenset(), frozenset(), ())


# Kinds a link can be accepted as off the roster, by an admin's certified key (format.md
# §19.5): what a version must name to keep valid when it revokes that admin's key.
ADMIN_KINDS = frozenset({ml.CREATE, ml.REVOKE, ml.SET, ml.SUCCEED})


def links_signed_by(logs: Iterable[list[bytes]], sign_keys: Iterable[bytes]) -> tuple[bytes, ...]:
    """The chain hashes of every link 0, ``revoke``, ``set`` and ``succeed`` link signed with one of
    ``sign_keys`` in ``logs`` (each a whole log as the server shows it, verified or not):
    what a version revoking those keys lists (:attr:`Revocation.links`), so that these
    links stay valid and no later one does. Sorted, each once."""
    keys = frozenset(sign_keys)
    out: set[bytes] = set()
    if not keys:
        return ()
    for blobs in logs:
        for blob in blobs:
            try:
                link = ml.Link.from_bytes(blob)
            except IntegrityError:
                continue  # the replay says what is wrong with it; nothing to keep valid
            if link.kind in ADMIN_KINDS and link.signer_key in keys:
                out.add(ml.chain_hash(blob))
    return tuple(sorted(out))


def replay_revocations(
    certs: Certs, versions: list[tuple[int, bytes]], kept: tuple[int, bytes] | None
) -> Revoked:
    """Every version in order, each chained to the one before and signed by an admin the
    certificate chain certifies and the versions before it do not revoke (nor, through
    their inviter, leave unendorsed). ``kept``: the (version, hash) this member verified
    before: the list must reach it with that very hash (else rollback or fork:
    IntegrityError), and the versions up to it are not verified again (the hash chain
    says they are the ones that were)."""
    state = NOTHING_REVOKED
    for number, blob in versions:
        r = Revocation.from_bytes(blob)
        if (
            number != state.version + 1
            or r.version != number
            or r.prev != state.head
            or r.vault_id != certs.vault_id
        ):
            raise IntegrityError(
                f"the revocation list is broken at version {state.version + 1}: missing, "
                "reordered, forked or of another vault"
            )
        if kept is None or number > kept[0]:
            _check_signer(certs, r, state)
        state = state.then(r, blob)
        if kept is not None and number == kept[0] and state.head != kept[1]:
            raise IntegrityError(
                f"the revocation list's version {number} is not the one this member verified "
                "before: replaced or forked"
            )
    if kept is not None and state.version < kept[0]:
        raise IntegrityError(
            f"the revocation list ends at version {state.version}, but this member verified "
            f"version {kept[0]} before: rolled back or versions were deleted"
        )
    return state


def _check_signer(certs: Certs, r: Revocation, before: Revoked) -> None:
    what = f"revocation list version {r.version}"
    try:
        history = certs.history(r.signer)
        row = certs.rows[r.signer]
        certs.check_path(r.signer, before)
    except (IntegrityError, KeyError):
        raise IntegrityError(f"{what}: signer {r.signer!r} is not certified") from None
    c = next((k for k in history if k.sign == r.signer_key), None)
    if c is None or not c.admin:
        raise IntegrityError(f"{what}: not signed by a certified admin's key ({r.signer!r})")
    if before.names(c.sign, c.kem) or p.digest(row.ipk) in before.ipk:
        raise IntegrityError(f"{what}: signed by {r.signer!r}, whose keys were revoked before")
    p.verify(c.sign, labels.TEAM_REVOCATION_LIST, r.body(), r.signature, what)


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
        self.revocations: tuple[int, bytes] | None = None
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
        kept = doc.get("revocations")
        if kept is not None:
            try:
                version, head_hex, tag_hex = kept
                head = bytes.fromhex(head_hex)
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise ValueError
            except (ValueError, TypeError):
                raise IntegrityError(f"team log witness {self.path} is corrupt") from None
            p.mac_verify(
                self._key,
                self._list_mac_input(version, head),
                bytes.fromhex(tag_hex),
                "team log witness",
            )
            self.revocations = (version, head)

    def _list_mac_input(self, version: int, head: bytes) -> bytes:
        return labels.encode(self.vault_id, "revocation-list", self.member, version, head)

    def keep_revocations(self, version: int, head: bytes) -> None:
        """The highest revocation-list version verified and its hash (format.md §19.7): a
        list that ends before it, or differs at it, is tampering from now on."""
        if version < 1 or self.revocations == (version, head):
            return
        self.revocations = (version, head)
        self._save()

    def keep(self, uid: bytes, state: ml.State) -> None:
        if self.states.get(uid) == state:
            return
        self.states[uid] = state
        self._save()

    def forget(self, uids: set[bytes], *, revocations: bool = False) -> None:
        """Drop these logs' states, and with ``revocations`` the list's (``witness
        accept``): the next read verifies them from the start, as a client that never saw
        them does."""
        for uid in uids:
            self.states.pop(uid, None)
        if revocations:
            self.revocations = None
        self._save()

    def _save(self) -> None:
        doc: dict[str, object] = {
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
        if self.revocations is not None:
            version, head = self.revocations
            tag = p.mac(self._key, self._list_mac_input(version, head))
            doc["revocations"] = [version, head.hex(), tag.hex()]
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
