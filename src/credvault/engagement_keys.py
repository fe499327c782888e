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

from credvault import memberlog as ml
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
        state = self.grants.log_state(eng)
        if state is not None:
            return self._logged_key(eng, state, operation, item)
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

    def _logged_key(
        self, eng: Engagement, state: ml.State, operation: str, item: str | None
    ) -> bytes:
        """The key of a membership-log engagement: the member's role comes from the
        replayed log, and their copy is accepted only for the version the log is at, if the
        log made them a holder of it and the key has the fingerprint the log committed to."""
        s = self.s
        s.check(operation, self.grants.logged_role(eng, state), eng.name, item)
        if state.key_version == 0:
            raise s.refuse(
                operation, eng.name, item, "no key yet: the engagement's lead makes it first"
            )
        cached = s.engagement_keys.get((eng.id, state.key_version))
        if cached is not None and eng.key_version == state.key_version:
            return cached
        key = self.open_logged(eng, state, s.member, s.keys.kem_private)
        s.engagement_keys[(eng.id, state.key_version)] = key
        return key

    def open_logged(self, eng: Engagement, state: ml.State, member: str, private: bytes) -> bytes:
        """Open ``member``'s copy of the current key of a membership-log engagement."""
        version = state.key_version
        if eng.key_version != version:
            raise IntegrityError(
                f"engagement {eng.name!r} claims key version {eng.key_version}, "
                f"its membership log {version}"
            )
        if member != RECOVERY and not state.held(member, version):
            raise IntegrityError(
                f"engagement {eng.name!r}: the membership log gives {member!r} no key"
            )
        g = self.s.store.grant_of(eng.id, member)
        if g is None or g.sealed is None or g.key_version != version:
            raise IntegrityError(f"engagement {eng.name!r}: the key copy of {member!r} is missing")
        key = p.hpke_open(private, g.sealed, seal_info(self.s, eng.uid, member, version))
        state.check_key(version, key)
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
    # -- membership-log engagements ---------------------------------------------------------
    def seal_to_roster(self, eng: Engagement, state: ml.State, key: bytes, signer: str) -> None:
        """Copies of the current key for exactly the log's holders of it who may read now
        and still hold the keys the log pins (plus the recovery key); every other row's
        copy is dropped. Caller's transaction. No row, flag or mark is consulted."""
        s = self.s
        version, now = state.key_version, s.now()
        rows = {g.member: g for g in s.store.grants(eng.id)}
        sealed_to = set()
        for name in sorted(state.holders.get(version, frozenset())):
            if not state.may_read(name, now) or not self.grants.roster.current(state, name):
                continue
            self.mirror(eng, state, name, rows.get(name), signer)
            sealed = p.hpke_seal(state.kem_of(name), key, seal_info(s, eng.uid, name, version))
            s.store.set_copy(eng.id, name, version, sealed, signer)
            sealed_to.add(name)
        if RECOVERY not in rows:
            s.store.put_grant(
                eng.id, Grant(RECOVERY, "recovery", signer, now, None, b"", *[None] * 5)
            )
        s.slots.recovery.verify(s.vault_id, s.keys.admin_sign_pub)
        sealed = p.hpke_seal(
            s.slots.recovery.kem_pub, key, seal_info(s, eng.uid, RECOVERY, version)
        )
        s.store.set_copy(eng.id, RECOVERY, version, sealed, signer)
        for name, g in rows.items():
            if name != RECOVERY and name not in sealed_to and g.sealed is not None:
                s.store.set_copy(eng.id, name, None, None, signer)

    def mirror(
        self,
        eng: Engagement,
        state: ml.State,
        name: str,
        row: Grant | None,
        signer: str,
        *,
        granted: bool = False,
    ) -> None:
        """Make ``name``'s grant row say what the log says (rows are a listing aid only);
        ``granted``: ``signer`` has just granted it (the row names them and now)."""
        m = state.roster[name]
        if (
            not granted
            and row is not None
            and (row.role, row.expires_at, row.revoked_at)
            == (
                m.role,
                m.expires,
                None,
            )
        ):
            return
        g = Grant(name, m.role, signer, self.s.now(), m.expires, b"", None, None, None, None, None)
        self.s.store.put_grant(eng.id, g)
        self.s.verified.pop((eng.id, name), None)

    def tidy(self, eng: Engagement, state: ml.State, signer: str, sign_private: bytes) -> ml.State:
        """Sign out of the log whoever it still names but may no longer be sealed to: an
        expired grant (``expire``), a member who left the vault or was given new keys
        (``revoke``). Caller's transaction; a rotation follows."""
        s = self.s
        now = s.now()
        roster = self.grants.roster
        for name, m in sorted(state.roster.items()):
            if name == signer:
                continue
            if not roster.current(state, name):
                if m.role == Role.LEAD.value and state.leads() == [name]:
                    continue  # the recovery key signs; it grants a lead first
                state = roster.append(eng, state, ml.REVOKE, (name,), signer, sign_private)
            elif m.expires is not None and m.expires <= now:
                state = roster.append(eng, state, ml.EXPIRE, (name,), signer, sign_private)
            else:
                continue
            s.store.revoke_grant(eng.id, name, now)
        return state

    def stale(self, state: ml.State) -> bool:
        """Whether :meth:`tidy` has something to do."""
        now, me = self.s.now(), self.s.member
        return any(
            n != me
            and (not self.grants.roster.current(state, n) or (m.expires and m.expires <= now))
            for n, m in state.roster.items()
        )

    def rotate_logged(
        self,
        eng: Engagement,
        state: ml.State,
        old_key: bytes | None,
        why: str,
        signer: str,
        sign_private: bytes,
        *,
        audit: bool = True,
    ) -> int:
        """A ``rotate`` link committing to a new key's fingerprint, every envelope
        re-encrypted, copies for the log's holders; caller's transaction. ``old_key`` is
        None for the engagement's first key (made by its first lead, never its creator).
        ``audit=False``: the caller's own entry covers it (an engagement's creation)."""
        self.assert_current(eng)
        s = self.s
        new_key = p.random_key()
        fp = p.fingerprint(new_key)
        version = state.key_version + 1
        state = self.grants.roster.append(
            eng, state, ml.ROTATE, (version, fp), signer, sign_private
        )
        if old_key is not None:
            reencrypt_engagement(s, eng, old_key, new_key, version)
        s.store.set_engagement_key(eng.id, version, fp)
        rotated = eng._replace(key_version=version, key_fp=fp)
        self.seal_to_roster(rotated, state, new_key, signer)
        self.forget(eng)
        s.engagement_keys[(eng.id, version)] = new_key
        if audit:
            s.log(
                "rotate", eng.name, None, "ok", f"key version {version} ({why}); fingerprint {fp}"
            )
        return version

    def succeed_member_keys(
        self, new_sign_pub: bytes, new_kem_pub: bytes, compromised: bool
    ) -> int:
        """This member is replacing their key pair (``passwd --compromised``, issue 11
        property 5): in every membership-log engagement whose roster pins their current keys,
        a ``succeed`` link signed with the current key pins the new ones, and their copy of
        the current key is sealed again to the new X25519 key (they are entitled to it).
        With ``compromised`` the log then demands a rotation, which a lead's next command
        makes. Caller's transaction, before the session's keys are replaced; returns the
        number of engagements."""
        s = self.s
        me, n = s.member, 0
        roster = self.grants.roster
        for eng in s.store.engagements():
            if eng.state == "purged":
                continue
            state = self.grants.log_state(eng)
            if state is None or not roster.current(state, me):
                continue
            key = None
            if state.may_read(me, s.now()) and state.held(me, state.key_version):
                with contextlib.suppress(IntegrityError):
                    key = self.open_logged(eng, state, me, s.keys.kem_private)
            fields = (me, new_sign_pub, new_kem_pub, int(compromised))
            state = roster.append(eng, state, ml.SUCCEED, fields, me, s.keys.sign_private)
            if key is not None:
                info = seal_info(s, eng.uid, me, state.key_version)
                s.store.set_copy(
                    eng.id, me, state.key_version, p.hpke_seal(new_kem_pub, key, info), me
                )
            if compromised:
                s.store.mark_needs_rotation(eng.id)  # only makes the lead's work happen
            n += 1
        return n

    def bootstrap(self, eng: Engagement) -> bool:
        """Give an engagement made before the membership log its log (docs/security.md §12):
        its first lead, named in the admin-signed creation record and still a verified lead
        under the pre-log rules, writes ``create`` naming themselves, a ``grant`` for every
        grant that verifies under those rules now, and a ``rotate`` to a key of their own.
        One transaction; audited as ``memberlog-start``. True if it was done."""
        s = self.s
        me = s.member
        if eng.lead != me or eng.state != "active" or self.grants.role_of(eng) is not Role.LEAD:
            return False
        key = self.key(eng, "engagement.rotate")
        roster = self.grants.roster
        with s.store.write():
            self.assert_current(eng)
            if s.store.log_head(eng.id) is not None:
                return False  # another process did it meanwhile
            now = s.now()
            carried = [
                g
                for g in s.store.grants(eng.id)
                if g.member not in (RECOVERY, me)
                and g.member in s.slots.members
                and g.live(now)
                and self.grants.role_valid(eng, g)
            ]
            trust = roster.trust(eng.uid, me, legacy_lead=me)
            priv = s.keys.sign_private
            state = roster.append(
                eng,
                None,
                ml.CREATE,
                (eng.name, eng.client, me, *roster.certified(me)),
                me,
                priv,
                trust,
            )
            for g in carried:
                fields = (g.member, g.role, g.expires_at or "", *roster.certified(g.member))
                state = roster.append(eng, state, ml.GRANT, fields, me, priv)
            self.mirror(eng, state, me, s.store.grant_of(eng.id, me), me)
            self.rotate_logged(eng, state, key, "membership log started", me, priv)
            s.log(
                "memberlog-start",
                eng.name,
                None,
                "ok",
                f"{len(carried) + 1} verified grants carried into the signed log",
            )
        self.grants._legacy.discard(eng.id)
        s.verified.clear()
        return True

    def rotate_if_needed(self, eng: Engagement) -> None:
        """Finish a rotation left pending (an expiry, removal or reset) if this member leads.

        Also the first time a lead other than the creating admin writes: key version 1 was
        made by that admin, who holds no grant and must not know the key the engagement's
        secrets are sealed under (issue 11). The version number and the creator are inside
        signed statements (key copies, the creation record), so no column switches this off.
        """
        state = self.grants.log_state(eng)
        if state is not None:
            self._rotate_logged_if_needed(eng, state)
            return
        if self.bootstrap(eng):
            return
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

    def _rotate_logged_if_needed(self, eng: Engagement, state: ml.State) -> None:
        """The log's own demands (its first key, a signed removal, an expiry by this
        clock, someone left or re-keyed) or a flag (which only makes the work happen)."""
        s = self.s
        if self.grants.role_of(eng) is not Role.LEAD:
            return
        if not (
            state.key_version == 0
            or state.needs_rotation(s.now())
            or eng.needs_rotation
            or self.stale(state)
        ):
            return
        key = self.key(eng, "engagement.rotate") if state.key_version else None
        why = "the first lead's own key" if key is None else "pending rotation"
        with contextlib.suppress(Conflict), s.store.write():
            self.assert_current(eng)
            fresh = self.grants.log_state(eng)
            if fresh is None or fresh.key_version != state.key_version:
                return  # another lead did it first
            fresh = self.tidy(eng, fresh, s.member, s.keys.sign_private)
            self.rotate_logged(eng, fresh, key, why, s.member, s.keys.sign_private)

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
        state = self.grants.log_state(eng)
        if state is not None:
            return self.rotate_logged(eng, state, old_key, why, signer, sign_private)
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
