"""Custody of engagement keys: sealing copies to holders, opening one's own, and rotation.

Each engagement has a random 256-bit key, sealed (HPKE) to every member whose role may read
and to the recovery key. Every sealed copy carries a signature by whoever sealed it; a copy
is only opened if that signer was entitled (:meth:`Grants.may_seal`) and the key matches the
engagement's public fingerprint. So a copy of an attacker-chosen key, inserted by direct SQL
with only the member's public key, is refused. Rotation makes a new key, re-encrypts every
envelope (:data:`~credvault.model.SEALED_FIELDS`) and re-seals it to the current holders.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from credvault.access import KEY_ROLES, Role
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import Conflict, IntegrityError
from credvault.grants import Grants, copy_message
from credvault.items import reencrypt_engagement
from credvault.model import RECOVERY, Engagement, Grant
from credvault.session import Session

if TYPE_CHECKING:
    pass


def seal_info(s: Session, eng_uid: bytes, member: str, version: int) -> bytes:
    """The HPKE info of a key copy: binds it to vault, engagement, holder and version."""
    return labels.encode(labels.SEAL_ENGAGEMENT_KEY, s.vault_id, eng_uid, member, version)


def recovery_keys(seed: bytes) -> tuple[bytes, bytes]:
    """(X25519 private, Ed25519 private) of the recovery key, from its 32-byte seed."""
    return (
        p.hkdf(seed, labels.RECOVERY_X25519),
        p.hkdf(seed, labels.RECOVERY_ED25519),
    )


def holds_copy(role: str) -> bool:
    """Whether a grant of ``role`` carries a sealed key copy (reading roles and recovery)."""
    return role in KEY_ROLES or role == "recovery"


class EngagementKeys:
    """Engagement keys for one session (opened keys are cached per key version)."""

    def __init__(self, s: Session, grants: Grants) -> None:
        self.s = s
        self.grants = grants

    # -- opening ----------------------------------------------------------------------------
    def open_copy(self, eng: Engagement, g: Grant, private: bytes) -> bytes:
        """Open ``g``'s key copy with ``private`` and check who sealed it and which key it is."""
        if g.sealed is None or g.copy_sig is None or g.sealed_by is None or g.key_version is None:
            raise self.s.refuse("engagement.key", eng.name, None, "no key held")
        if g.key_version != eng.key_version:
            raise IntegrityError(f"engagement {eng.name!r}: key copy of an old version")
        key = p.hpke_open(private, g.sealed, seal_info(self.s, eng.uid, g.member, g.key_version))
        # The signature covers the key's fingerprint: this commits the copy to one key.
        msg = copy_message(self.s, eng, g.member, g.key_version, g.sealed, key, g.sealed_by)
        status = self.grants.signed_by(g.sealed_by, msg, g.copy_sig)
        if status is None:
            raise IntegrityError(f"key copy of engagement {eng.name!r}: signature check failed")
        if not self.grants.may_seal(eng, g, status):
            raise IntegrityError(
                f"engagement {eng.name!r}: key copy sealed by someone not entitled to grant it"
            )
        if p.fingerprint(key) != eng.key_fp:
            raise IntegrityError(f"engagement {eng.name!r}: key fingerprint mismatch")
        return key

    def key(self, eng: Engagement, operation: str, item: str | None = None) -> bytes:
        """The engagement key, for a member whose verified role allows ``operation``.

        A check that fails while another process rotated the key (the engagement row and the
        grant rows were read on either side of its COMMIT) is :class:`Conflict`, not
        tampering: nothing was done, and running again reads a consistent state."""
        try:
            return self._key(eng, operation, item)
        except IntegrityError:
            now = self.s.store.engagement_by_name(eng.name)
            if now is not None and now.key_version != eng.key_version:
                raise Conflict(
                    f"engagement {eng.name!r} changed keys meanwhile; nothing was done, run again"
                ) from None
            raise

    def _key(self, eng: Engagement, operation: str, item: str | None = None) -> bytes:
        s = self.s
        role = self.grants.role_of(eng)
        if role is None:
            g = s.store.grant_of(eng.id, s.member)
            if g is not None and g.live(s.now()):
                raise IntegrityError(
                    f"the grant of {s.member!r} on {eng.name!r} fails its signature check"
                )
        s.check(operation, role, eng.name, item)
        cached = s.engagement_keys.get((eng.id, eng.key_version))
        if cached is not None:
            return cached
        g = s.store.grant_of(eng.id, s.member)
        if g is None:  # pragma: no cover - role_of found it
            raise s.refuse(operation, eng.name, item, "no grant")
        key = self.open_copy(eng, g, s.keys.kem_private)
        s.engagement_keys[(eng.id, eng.key_version)] = key
        return key

    def assert_current(self, eng: Engagement) -> None:
        """Inside a write transaction: the key read before it is still the engagement's.

        A rotation committed between reading the key and taking the write lock would
        otherwise have us seal a new value under a key a revoked member may hold.
        """
        now = self.s.store.engagement_by_name(eng.name)
        if now is None or now.key_version != eng.key_version:
            raise Conflict(
                f"engagement {eng.name!r} changed keys meanwhile; nothing was stored, run again"
            )

    def forget(self, eng: Engagement) -> None:
        """Drop every cached key of ``eng`` (rotated or destroyed)."""
        s = self.s
        s.engagement_keys = {k: v for k, v in s.engagement_keys.items() if k[0] != eng.id}

    # -- sealing ----------------------------------------------------------------------------
    def seal_copy(
        self,
        eng: Engagement,
        member: str,
        version: int,
        key: bytes,
        signer: str,
        sign_private: bytes,
    ) -> tuple[bytes, bytes]:
        """(sealed copy, sealer's signature) of ``key`` for ``member`` (certified keys only)."""
        s = self.s
        pub = (
            s.slots.recovery.kem_pub  # certified: checked at every open
            if member == RECOVERY
            else s.slots.certified_kem(member, s.keys.admin_sign_pub)
        )
        sealed = p.hpke_seal(pub, key, seal_info(s, eng.uid, member, version))
        msg = copy_message(s, eng, member, version, sealed, key, signer)
        return sealed, p.sign(sign_private, labels.GRANT_SIG, msg)

    def put_grant(
        self,
        eng: Engagement,
        member: str,
        role: str,
        expires: str | None,
        key: bytes | None,
        version: int,
        signer: str,
        sign_private: bytes,
    ) -> None:
        """Write ``member``'s grant: the signed role and, for reading roles, a sealed copy of
        ``key`` (caller's transaction)."""
        s = self.s
        role_sig = self.grants.sign_role(eng, member, role, expires, signer, sign_private)
        sealed = copy_sig = None
        if key is not None and holds_copy(role):
            sealed, copy_sig = self.seal_copy(eng, member, version, key, signer, sign_private)
        s.store.put_grant(
            eng.id,
            Grant(
                member=member,
                role=role,
                granted_by=signer,
                granted_at=s.now(),
                expires_at=expires,
                role_sig=role_sig,
                key_version=version if sealed else None,
                sealed=sealed,
                sealed_by=signer if sealed else None,
                copy_sig=copy_sig,
                revoked_at=None,
            ),
        )
        s.verified.pop((eng.id, member), None)

    # -- rotation ---------------------------------------------------------------------------
    def rotate_if_needed(self, eng: Engagement) -> None:
        """Finish a rotation left pending (an expiry, removal or reset) if this member leads.

        Also the first time a lead other than the creating admin writes: key version 1 was
        made by that admin, who holds no grant and must not know the key the engagement's
        secrets are sealed under (issue 11). The version number and the creator are inside
        signed statements (key copies, the creation record), so no column switches this off.
        """
        first_key_by_admin = eng.key_version == 1 and eng.created_by != self.s.member
        if (eng.needs_rotation or first_key_by_admin) and self.grants.role_of(eng) is Role.LEAD:
            key = self.key(eng, "engagement.rotate")
            why = (
                "the first lead's own key"
                if first_key_by_admin and not eng.needs_rotation
                else "pending rotation"
            )
            # Another lead finishing the same pending rotation first is fine: it is done.
            with contextlib.suppress(Conflict), self.s.store.write():
                self.assert_current(eng)
                self.rotate(eng, key, why)

    def rotate(
        self,
        eng: Engagement,
        old_key: bytes,
        why: str,
        signer: str | None = None,
        sign_private: bytes | None = None,
    ) -> int:
        """New key, every envelope re-encrypted, re-sealed to holders; caller's transaction.

        Refuses (:class:`Conflict`) if ``eng`` is no longer the current key version: the
        envelopes would not open under ``old_key`` (a false integrity error) and copies would
        be sealed to a superseded key."""
        self.assert_current(eng)
        s = self.s
        signer = signer or s.member
        sign_private = sign_private or s.keys.sign_private
        new_key = p.random_key()
        version = eng.key_version + 1
        reencrypt_engagement(s, eng, old_key, new_key, version)  # SEALED_FIELDS and history
        s.store.set_engagement_key(eng.id, version, p.fingerprint(new_key))
        rotated = eng._replace(key_version=version, key_fp=p.fingerprint(new_key))
        for g in s.store.grants(eng.id):
            if (
                g.revoked_at is None
                and holds_copy(g.role)
                and (g.member == RECOVERY or g.member in s.slots.members)
                # A row is a claim, its certificate the decision: a row inserted by SQL with
                # a garbage signature is never sealed to (issue 11).
                and (g.member == RECOVERY or self.grants.role_valid(eng, g))
            ):
                sealed, sig = self.seal_copy(
                    rotated, g.member, version, new_key, signer, sign_private
                )
                s.store.set_key_copy(eng.id, g.member, version, sealed, signer, sig)
        self.forget(eng)
        s.engagement_keys[(eng.id, version)] = new_key
        s.log(
            "rotate",
            eng.name,
            None,
            "ok",
            f"key version {version} ({why}); fingerprint {p.fingerprint(new_key)}",
        )
        return version


_T = TypeVar("_T")
RETRIES = 5


def retrying(s: Session, attempt: Callable[[], _T]) -> _T:
    """Run ``attempt`` again (it re-reads everything) when another process rotated the
    engagement's key meanwhile: such writes serialize instead of failing. Each failed
    attempt rolled back completely, so nothing is stored twice."""
    for i in range(RETRIES):
        try:
            return attempt()
        except Conflict:
            if i == RETRIES - 1:
                raise
            s.engagement_keys.clear()
            s.verified.clear()
    raise AssertionError("unreachable")  # pragma: no cover


class _HasSession(Protocol):
    s: Session


_O = TypeVar("_O", bound=_HasSession)
_P = ParamSpec("_P")


def retried(method: Callable[Concatenate[_O, _P], _T]) -> Callable[Concatenate[_O, _P], _T]:
    """:func:`retrying` as a decorator, for a domain method that reads the engagement (and
    its key) itself and writes in one transaction that checks the key is still current."""

    @functools.wraps(method)
    def again(self: _O, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return retrying(self.s, lambda: method(self, *args, **kwargs))

    return again
