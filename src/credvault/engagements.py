"""Engagements: their keys, signed grants, rotation, and lifecycle state.

Each engagement has a random 256-bit key, sealed (HPKE) to every member whose role may read
and to the recovery key. Every sealed copy carries a signature by whoever sealed it, and
every grant a signed role certificate; both are only accepted if the signer was entitled
(the admin who created the engagement, for its first lead and the recovery copy; a lead,
through a chain of grants that ends there; or the recovery key). So a copy of an
attacker-chosen key, inserted by direct SQL with only the member's public key, is refused.
"""

from __future__ import annotations

import builtins
import os

from credvault import validate
from credvault.access import KEY_ROLES, Action, Role, parse_role
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    Purged,
    RetentionError,
)
from credvault.items import reencrypt_engagement
from credvault.model import RECOVERY, Engagement, Grant, GrantInfo, NewEngagement, iso
from credvault.retention import purge_due
from credvault.session import Session

__all__ = [
    "RECOVERY",
    "Engagement",
    "Engagements",
    "GrantInfo",
    "recovery_keys",
]


# -- signed messages --------------------------------------------------------------------------
def _creation_message(s: Session, uid: bytes, name: str, client: str, lead: str, by: str) -> bytes:
    return labels.encode("create", s.vault_id, uid, name, client, lead, by)


def _role_message(
    s: Session, eng: Engagement, member: str, role: str, expires: str | None, by: str
) -> bytes:
    return labels.encode("role", s.vault_id, eng.uid, member, role, expires or "", by)


def _copy_message(
    s: Session, eng: Engagement, member: str, version: int, sealed: bytes, key: bytes, by: str
) -> bytes:
    return labels.encode(
        "copy",
        s.vault_id,
        eng.uid,
        member,
        version,
        p.digest(sealed),
        p.fingerprint(key),
        by,
    )


def _seal_info(s: Session, eng_uid: bytes, member: str, version: int) -> bytes:
    return labels.encode(labels.SEAL_ENGAGEMENT_KEY, s.vault_id, eng_uid, member, version)


def recovery_keys(seed: bytes) -> tuple[bytes, bytes]:
    """(X25519 private, Ed25519 private) of the recovery key, from its 32-byte seed."""
    return (
        p.hkdf(seed, labels.RECOVERY_X25519),
        p.hkdf(seed, labels.RECOVERY_ED25519),
    )


class Engagements:
    """Engagement operations for one session."""

    def __init__(self, s: Session) -> None:
        self.s = s

    # -- lookup -----------------------------------------------------------------------------
    def get(self, name: str, *, allow_purged: bool = False) -> Engagement:
        eng = self.s.store.engagement_by_name(validate.name(name, "engagement name"))
        if eng is None:
            raise NotFound("engagement", name)
        if eng.state == "purged" and not allow_purged:
            raise Purged(eng.name, eng.purged_at or "")
        return eng

    def list(self, client: str | None = None) -> builtins.list[Engagement]:
        """Every engagement (internal use: no role check)."""
        return self.s.store.engagements(client)

    def visible_quietly(self, client: str | None = None) -> builtins.list[Engagement]:
        """:meth:`visible` without its audit entry (for status lines)."""
        engs = self.list(client)
        if self.s.is_admin:
            return engs
        return [e for e in engs if e.state != "purged" and self.role_of(e) is not None]

    def visible(self, client: str | None = None) -> builtins.list[Engagement]:
        """The engagements this member may list: all for admins, else those they hold a role
        on (names of other clients' engagements are not everyone's business)."""
        if client is not None:
            validate.name(client, "client name")
        engs = self.visible_quietly(client)
        with self.s.store.write():
            self.s.log("engagement-ls", None, client, "ok", f"{len(engs)} engagements listed")
        return engs

    # -- signatures and roles ---------------------------------------------------------------
    def _signed_by(self, name: str, message: bytes, signature: bytes) -> str | None:
        """``"live"`` if ``name``'s current certified key made ``signature``, ``"retired"``
        if a key ``name`` held before leaving (or being reset) did, else None.

        A retired key can no longer act in the vault (a removed member's database access
        ended with the re-key), so what it signed while entitled stays valid.
        """
        slots, pinned = self.s.slots, self.s.keys.admin_sign_pub
        if name == RECOVERY:
            candidates = [(slots.recovery.sign_pub, "live")]
        else:
            candidates = []
            if name in slots.members:
                candidates.append((slots.signing_key(name, pinned) or b"", "live"))
            candidates += [(pub, "retired") for pub in slots.retired_keys(name, pinned)]
        for pub, status in candidates:
            try:
                p.verify(pub, labels.GRANT_SIG, message, signature, "signature")
            except IntegrityError:
                continue
            return status
        return None

    def _creation_valid(self, eng: Engagement) -> bool:
        msg = _creation_message(self.s, eng.uid, eng.name, eng.client, eng.lead, eng.created_by)
        return self._signed_by(eng.created_by, msg, eng.creation_sig) is not None

    def _role_valid(self, eng: Engagement, g: Grant, seen: frozenset[str]) -> bool:
        """Whether ``g``'s role certificate chains to the creation record or recovery.

        Grants made by a lead stay valid after that lead leaves: the chain is historical.
        """
        msg = _role_message(self.s, eng, g.member, g.role, g.expires_at, g.granted_by)
        if self._signed_by(g.granted_by, msg, g.role_sig) is None:
            return False
        if g.granted_by == RECOVERY:
            return True
        if g.granted_by == eng.created_by and (g.member, g.role) in (
            (eng.lead, Role.LEAD.value),
            (RECOVERY, "recovery"),
        ):
            return self._creation_valid(eng)
        if g.granted_by in seen | {g.member}:
            return False  # a cycle: nobody may certify themselves
        row = self.s.store.grant_of(eng.id, g.granted_by)
        if row is None:
            return False
        lead = row
        return lead.role == Role.LEAD.value and self._role_valid(eng, lead, seen | {g.member})

    def _may_seal(self, eng: Engagement, g: Grant, status: str) -> bool:
        """Was ``g.sealed_by`` entitled to seal this copy?

        The recovery key; the creating admin for the first lead's and the recovery copy of
        key version 1; a lead whose grant chains validly and is still live (not revoked). A
        lead who is no longer live still counts only for what their retired key signed: they
        left the vault (the database was re-keyed) or were given new keys. Every way a lead
        stops being one in place rotates at once under another seal (revoke by another lead,
        lowering by another lead, recovery); lead grants cannot expire, and a lead cannot
        revoke themselves — so no live key copy ever depends on a lapsed seal.
        """
        signer = g.sealed_by
        if signer == RECOVERY:
            return True
        if (
            signer == eng.created_by
            and g.key_version == 1
            and g.member in (eng.lead, RECOVERY)
            and self._creation_valid(eng)
        ):
            return True
        row = self.s.store.grant_of(eng.id, signer or "")
        if row is None:
            return False
        lead = row
        live = lead.revoked_at is None and (
            lead.expires_at is None or lead.expires_at > self.s.now()
        )
        # A retired key (its holder left, or was given new keys) signs nothing legitimate any
        # more, so what it signed while entitled stands; a live key must belong to a live lead.
        departed = status == "retired"
        return (
            lead.role == Role.LEAD.value
            and (live or departed)
            and self._role_valid(eng, lead, frozenset())
        )

    def role_of(self, eng: Engagement, member: str | None = None) -> Role | None:
        """The member's current, verified role (None without a valid, unexpired grant)."""
        who = member or self.s.member
        # The grant row is read every time (one indexed lookup), so a revoke or an expiry
        # by another process counts at once; only the signature chain check is cached.
        row = self.s.store.grant_of(eng.id, who)
        if row is None:
            return None
        g = row
        checked, valid = self.s.verified.get((eng.id, who), (None, False))
        if checked != row:
            valid = g.role != "recovery" and self._role_valid(eng, g, frozenset())
            self.s.verified[(eng.id, who)] = (row, valid)
        live = g.revoked_at is None and (g.expires_at is None or g.expires_at > self.s.now())
        return Role(g.role) if live and valid else None

    def members(self, name: str) -> builtins.list[GrantInfo]:
        """Who holds which role on ``name`` (audited as ``engagement-members``)."""
        out = self.members_quietly(name)
        with self.s.store.write():  # who may see whom is member data: on the record
            self.s.log("engagement-members", name, None, "ok", f"{len(out)} members listed")
        return out

    def members_quietly(self, name: str) -> builtins.list[GrantInfo]:
        """:meth:`members` for callers that record their own entry (grant, recover, show)."""
        eng = self.get(name)
        self.s.check(Action.LIST, self.role_of(eng), "list members", eng.name)
        out = []
        for r in self.s.store.grants(eng.id):
            g = r
            if g.revoked_at is None and g.member != RECOVERY:
                out.append(
                    GrantInfo(
                        g.member,
                        g.role,
                        g.granted_by,
                        g.granted_at,
                        g.expires_at,
                        g.sealed is not None,
                    )
                )
        return out

    # -- the engagement key -----------------------------------------------------------------
    def _open_copy(self, eng: Engagement, g: Grant, private: bytes) -> bytes:
        if g.sealed is None or g.copy_sig is None or g.sealed_by is None or g.key_version is None:
            raise self.s.deny("read", eng.name, None, "no key held")
        if g.key_version != eng.key_version:
            raise IntegrityError(f"engagement {eng.name!r}: key copy of an old version")
        key = p.hpke_open(private, g.sealed, _seal_info(self.s, eng.uid, g.member, g.key_version))
        # The signature covers the key's fingerprint: this commits the copy to one key.
        msg = _copy_message(self.s, eng, g.member, g.key_version, g.sealed, key, g.sealed_by)
        status = self._signed_by(g.sealed_by, msg, g.copy_sig)
        if status is None:
            raise IntegrityError(f"key copy of engagement {eng.name!r}: signature check failed")
        if not self._may_seal(eng, g, status):
            raise IntegrityError(
                f"engagement {eng.name!r}: key copy sealed by someone not entitled to grant it"
            )
        if p.fingerprint(key) != eng.key_fp:
            raise IntegrityError(f"engagement {eng.name!r}: key fingerprint mismatch")
        return key

    def key(
        self, eng: Engagement, verb: str, action: Action = Action.READ, item: str | None = None
    ) -> bytes:
        """The engagement key, for a member whose verified role allows ``action``."""
        role = self.role_of(eng)
        if role is None:
            row = self.s.store.grant_of(eng.id, self.s.member)
            if row is not None and row.revoked_at is None:
                g = row
                if g.expires_at is None or g.expires_at > self.s.now():
                    raise IntegrityError(
                        f"the grant of {self.s.member!r} on {eng.name!r} fails its signature check"
                    )
        self.s.check(action, role, verb, eng.name, item)
        cached = self.s.engagement_keys.get((eng.id, eng.key_version))
        if cached is not None:
            return cached
        row = self.s.store.grant_of(eng.id, self.s.member)
        if row is None:  # pragma: no cover - role_of found it
            raise self.s.deny(verb, eng.name, item, "no grant")
        key = self._open_copy(eng, row, self.s.keys.kem_private)
        self.s.engagement_keys[(eng.id, eng.key_version)] = key
        return key

    def _seal_copy(
        self,
        eng: Engagement,
        member: str,
        version: int,
        key: bytes,
        signer: str,
        sign_private: bytes,
    ) -> tuple[bytes, bytes]:
        pub = (
            self.s.slots.recovery.kem_pub  # certified: checked at every open
            if member == RECOVERY
            else self.s.slots.certified_kem(member, self.s.keys.admin_sign_pub)
        )
        sealed = p.hpke_seal(pub, key, _seal_info(self.s, eng.uid, member, version))
        sig = p.sign(
            sign_private,
            labels.GRANT_SIG,
            _copy_message(self.s, eng, member, version, sealed, key, signer),
        )
        return sealed, sig

    # -- creation ---------------------------------------------------------------------------
    def create(
        self,
        name: str,
        client: str,
        lead: str | None = None,
        *,
        require_reason: bool = False,
        grace_days: int | None = None,
    ) -> Engagement:
        s = self.s
        validate.name(name, "engagement name")
        validate.name(client, "client name")
        lead = validate.name(lead or s.member, "member name")
        if grace_days is not None:
            grace_days = validate.days(grace_days, "grace period")
        s.require_admin("create engagements")
        if lead not in s.slots.members:
            raise NotFound("member", lead)
        if s.store.engagement_by_name(name) is not None:
            raise AlreadyExists(f"engagement {name!r} already exists")
        key = p.random_key()
        uid = os.urandom(16)
        now = s.now()
        creation_sig = p.sign(
            s.keys.sign_private,
            labels.GRANT_SIG,
            _creation_message(s, uid, name, client, lead, s.member),
        )
        with s.store.write():
            s.store.insert_engagement(
                NewEngagement(
                    uid,
                    name,
                    client,
                    p.fingerprint(key),
                    require_reason,
                    grace_days,
                    now,
                    s.member,
                    lead,
                    creation_sig,
                )
            )
            eng = self.get(name)
            for member, role in ((lead, Role.LEAD.value), (RECOVERY, "recovery")):
                self._put_grant(eng, member, role, None, key, 1, s.member, s.keys.sign_private)
            s.log("engagement-new", name, None, "ok", f"client {client}, lead {lead}")
        return self.get(name)

    def _put_grant(
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
        role_sig = p.sign(
            sign_private,
            labels.GRANT_SIG,
            _role_message(self.s, eng, member, role, expires, signer),
        )
        sealed = copy_sig = None
        if key is not None and (role in KEY_ROLES or role == "recovery"):
            sealed, copy_sig = self._seal_copy(eng, member, version, key, signer, sign_private)
        self.s.store.put_grant(
            eng.id,
            Grant(
                member=member,
                role=role,
                granted_by=signer,
                granted_at=self.s.now(),
                expires_at=expires,
                role_sig=role_sig,
                key_version=version if sealed else None,
                sealed=sealed,
                sealed_by=signer if sealed else None,
                copy_sig=copy_sig,
                revoked_at=None,
            ),
        )
        self.s.verified.pop((eng.id, member), None)

    # -- grants -----------------------------------------------------------------------------
    def grant(self, name: str, member: str, role: str, until: str | None = None) -> GrantInfo:
        s = self.s
        r = parse_role(role)
        validate.name(member, "member name")
        expires = None
        if until is not None:
            if r is Role.LEAD:
                # Key copies carry a lead's seal; one that lapsed on its own would void them.
                raise InvalidInput("a lead grant cannot expire: grant engineer or reader --until")
            dt = validate.when(until, "expiry")
            if dt <= s.clock():
                raise InvalidInput("the expiry is in the past")
            expires = iso(dt)
        eng = self.get(name)
        self.require_active(eng, "grant", Action.GRANT)
        if member not in s.slots.members:
            raise NotFound("member", member)
        if member == s.member:
            raise s.deny("grant", eng.name, member, "members cannot grant themselves")
        self._rotate_if_needed(eng)
        eng = self.get(name)
        key = self.key(eng, "grant", Action.GRANT, member)
        previous = self.role_of(eng, member)
        mine = s.store.grant_of(eng.id, s.member)
        if previous is Role.LEAD and r is not Role.LEAD and mine and mine.granted_by == member:
            # Our own lead grant chains through theirs: lowering them would void it.
            raise s.deny("grant", eng.name, member, "they granted your lead role; ask another")
        with s.store.write():
            self._put_grant(
                eng, member, r.value, expires, key, eng.key_version, s.member, s.keys.sign_private
            )
            s.log(
                "grant",
                eng.name,
                member,
                "ok",
                f"role {r.value}" + (f" until {expires[:16]}" if expires else ""),
            )
            # Losing read access, or losing the lead role (whose seal the key copies may
            # carry), rotates at once: the new copies carry the granting lead's seal.
            if previous is Role.LEAD and r is not Role.LEAD:
                self._resign_grants_of(eng, member, s.member, s.keys.sign_private)
            if (previous in KEY_ROLES and r not in KEY_ROLES) or (
                previous is Role.LEAD and r is not Role.LEAD
            ):
                self._rotate(eng, key, "role lowered")
        return next(g for g in self.members_quietly(name) if g.member == member)

    def revoke(self, name: str, member: str) -> builtins.list[str]:
        """Revoke and rotate; returns the credentials the member read (to change them)."""
        s = self.s
        eng = self.get(name)
        key = self.key(eng, "revoke", Action.GRANT, member)
        if member == s.member:
            # The rotation would carry the seal of a lead who is no longer one.
            raise s.deny("revoke", eng.name, member, "leads cannot revoke themselves")
        row = s.store.grant_of(eng.id, member)
        if row is None or row.revoked_at is not None or member == RECOVERY:
            raise NotFound("grant", f"{member} on {name}")
        with s.store.write():
            s.store.revoke_grant(eng.id, member, s.now())
            s.verified.clear()
            self._rotate(eng, key, f"revoked {member}")
            read = s.store.audit_reads_by(member, eng.name)
            if s.store.exported_by(member, eng.name):  # a client export read everything
                read = sorted(
                    set(read)
                    | set(s.store.names("credentials", eng.id))
                    | set(s.store.names("systems", eng.id))
                )
            s.log("revoke", eng.name, member, "ok", f"{len(read)} credentials to change")
        return read

    def _resign_grants_of(
        self, eng: Engagement, former_lead: str, signer: str, sign_private: bytes
    ) -> None:
        """Re-sign the role certificates ``former_lead`` signed, so they keep chaining once
        that member is no longer a lead (caller's transaction)."""
        for r in self.s.store.grants(eng.id):
            g = r
            if g.granted_by == former_lead and g.member not in (former_lead, signer):
                sig = p.sign(
                    sign_private,
                    labels.GRANT_SIG,
                    _role_message(self.s, eng, g.member, g.role, g.expires_at, signer),
                )
                self.s.store.set_role_sig(eng.id, g.member, signer, sig)
        self.s.verified.clear()

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

    def require_active(
        self, eng: Engagement, verb: str | None = None, action: Action = Action.WRITE
    ) -> None:
        """Closed and purged engagements take no changes (their data awaits destruction).

        The role check comes first, so a member without the right is denied (and audited as
        such) whatever the state; a refusal for the state is on the record too.
        """
        if eng.state != "active":
            self.s.check(action, self.role_of(eng), verb or "change", eng.name)
            what = f"cannot {verb}" if verb else "it takes no changes"
            with self.s.store.write():
                self.s.log(verb or "change", eng.name, None, "error", f"engagement is {eng.state}")
            raise RetentionError(f"engagement {eng.name!r} is {eng.state}: {what}")

    # -- rotation ---------------------------------------------------------------------------
    def rotate(self, name: str) -> int:
        s = self.s
        eng = self.get(name)
        key = self.key(eng, "rotate", Action.GRANT)
        with s.store.write():
            version = self._rotate(eng, key, "on request")
        return version

    def _rotate_if_needed(self, eng: Engagement) -> None:
        if eng.needs_rotation and self.role_of(eng) is Role.LEAD:
            key = self.key(eng, "rotate", Action.GRANT)
            with self.s.store.write():
                self._rotate(eng, key, "pending rotation")

    def _rotate(
        self,
        eng: Engagement,
        old_key: bytes,
        why: str,
        signer: str | None = None,
        sign_private: bytes | None = None,
    ) -> int:
        """New key, every envelope re-encrypted, re-sealed to holders; caller's transaction."""
        s = self.s
        signer = signer or s.member
        sign_private = sign_private or s.keys.sign_private
        new_key = p.random_key()
        version = eng.key_version + 1
        reencrypt_engagement(s, eng, old_key, new_key, version)
        s.store.set_engagement_key(eng.id, version, p.fingerprint(new_key))
        rotated = eng._replace(key_version=version, key_fp=p.fingerprint(new_key))
        for r in s.store.grants(eng.id):
            g = r
            if (
                g.revoked_at is None
                and (g.role in KEY_ROLES or g.role == "recovery")
                and (g.member == RECOVERY or g.member in s.slots.members)
            ):
                sealed, sig = self._seal_copy(
                    rotated, g.member, version, new_key, signer, sign_private
                )
                s.store.set_key_copy(eng.id, g.member, version, sealed, signer, sig)
        s.engagement_keys = {k: v for k, v in s.engagement_keys.items() if k[0] != eng.id}
        s.engagement_keys[(eng.id, version)] = new_key
        s.log(
            "rotate",
            eng.name,
            None,
            "ok",
            f"key version {version} ({why}); fingerprint {p.fingerprint(new_key)}",
        )
        return version

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, name: str, recovery_seed: bytes, grant_to: str, role: str) -> GrantInfo:
        s = self.s
        r = parse_role(role)
        s.require_admin("use the recovery key")
        eng = self.get(name)
        if grant_to not in s.slots.members:
            raise NotFound("member", grant_to)
        kem_priv, sign_priv = recovery_keys(recovery_seed)
        if p.x25519_public(kem_priv) != s.slots.recovery.kem_pub:
            raise s.deny("recover", eng.name, grant_to, "not this vault's recovery key")
        row = s.store.grant_of(eng.id, RECOVERY)
        if row is None:
            raise IntegrityError(f"engagement {name!r} has no recovery copy")
        key = self._open_copy(eng, row, kem_priv)
        previous = self.role_of(eng, grant_to)
        with s.store.write():
            self._put_grant(eng, grant_to, r.value, None, key, eng.key_version, RECOVERY, sign_priv)
            s.log("recover", eng.name, grant_to, "ok", f"recovery key used; granted {r.value}")
            if previous is Role.LEAD and r is not Role.LEAD:
                self._resign_grants_of(eng, grant_to, RECOVERY, sign_priv)
            if (previous in KEY_ROLES and r not in KEY_ROLES) or previous is Role.LEAD:
                self._rotate(eng, key, "role changed by recovery", RECOVERY, sign_priv)
        return next(g for g in self.members_quietly(name) if g.member == grant_to)

    # -- settings and lifecycle -------------------------------------------------------------
    def set_options(self, name: str, *, require_reason: bool | None = None) -> Engagement:
        s = self.s
        eng = self.get(name)
        s.check(Action.LIFECYCLE, self.role_of(eng), "change settings", eng.name)
        with s.store.write():
            if require_reason is not None:
                s.store.set_require_reason(eng.id, require_reason)
            s.log("engagement-set", eng.name, None, "ok", f"require-reason={require_reason}")
        return self.get(name)

    def grace_days(self, eng: Engagement) -> int:
        if eng.grace_days is not None:
            return eng.grace_days
        return self.s.setting("purge-grace-days")

    def _due(self, closed_at: str, grace: int, hold: str | None) -> str:
        return purge_due(closed_at, grace, hold)

    def close(self, name: str, grace_days: int | None = None) -> Engagement:
        s = self.s
        eng = self.get(name)
        s.check(Action.LIFECYCLE, self.role_of(eng), "close", eng.name)
        self.require_active(eng, "close", Action.LIFECYCLE)
        if grace_days is not None:
            grace_days = validate.days(grace_days, "grace period")
        # A clock behind the record would shorten the grace period: never close "earlier".
        now = max(s.now(), s.newest_recorded() or "")
        with s.store.write():
            grace = grace_days if grace_days is not None else self.grace_days(eng)
            due = purge_due(now, grace, None)
            s.store.close_engagement(eng.id, now, grace_days, due)
            s.log("close", eng.name, None, "ok", f"purge due {due[:16]}")
        return self.get(name)

    def retain(self, name: str, until: str, reason: str) -> Engagement:
        s = self.s
        eng = self.get(name)
        s.check(Action.LIFECYCLE, self.role_of(eng), "set a retention hold", eng.name)
        dt = validate.when(until, "hold end date")
        why = validate.reason(reason)
        if not why:
            raise InvalidInput("a retention hold needs a reason")
        if dt <= s.clock():
            raise InvalidInput("the hold end date is in the past")
        if eng.state != "closed":
            raise RetentionError(
                f"engagement {name!r} is {eng.state}: only a closed engagement can be held"
            )
        hold = iso(dt)
        with s.store.write():
            due = purge_due(eng.closed_at or s.now(), self.grace_days(eng), hold)
            s.store.set_hold(eng.id, hold, why, s.member, due)
            s.log("retain", eng.name, None, "ok", f"held until {hold[:16]}: {why}")
        return self.get(name)

    def release(self, name: str) -> Engagement:
        s = self.s
        eng = self.get(name)
        s.check(Action.LIFECYCLE, self.role_of(eng), "release the hold", eng.name)
        if eng.hold_until is None:
            raise RetentionError(f"engagement {name!r} has no retention hold")
        with s.store.write():
            due = purge_due(eng.closed_at or s.now(), self.grace_days(eng), None)
            s.store.set_hold(eng.id, None, None, None, due)
            s.log("release", eng.name, None, "ok", "hold lifted")
        return self.get(name)

    def purge_status(self, eng: Engagement) -> str:
        """When the purge is due and why, in words (``engagement show``)."""
        if eng.state == "purged":
            return f"purged on {(eng.purged_at or '')[:10]}"
        if eng.state == "active":
            return f"active; purge {self.grace_days(eng)} days after close"
        if eng.hold_until and eng.purge_due == eng.hold_until:
            return (
                f"held until {eng.hold_until[:16]} ({eng.hold_reason}, by {eng.hold_by}); "
                "purged when the hold ends"
            )
        return (
            f"closed {(eng.closed_at or '')[:16]}; purge due {(eng.purge_due or '')[:16]} "
            f"(grace {self.grace_days(eng)} days)"
        )

    def show(self, name: str) -> dict[str, object]:
        eng = self.get(name, allow_purged=True)
        self.s.check(Action.LIST, self.role_of(eng), "show", eng.name)
        d = eng.to_json()
        d["purge"] = self.purge_status(eng)
        role = self.role_of(eng)
        d["your_role"] = role.value if role else None
        d["members"] = (
            [g.to_json() for g in self.members_quietly(name)] if eng.state != "purged" else []
        )
        with self.s.store.write():
            self.s.log("engagement-show", eng.name, None, "ok")
        return d
