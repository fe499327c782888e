"""Engagements: the unit of access, keys and retention — the operations on them.

This module composes the parts: who holds which role (:mod:`credvault.grants`), custody of
the engagement key (:mod:`credvault.engagement_keys`), and the lifecycle
(:mod:`credvault.lifecycle`, rules in :mod:`credvault.retention`). Creating, granting,
revoking and recovering touch all of them in one transaction each.
"""

from __future__ import annotations

import builtins
import os
from functools import cached_property
from typing import TYPE_CHECKING

from credvault import memberlog as ml
from credvault import validate
from credvault.access import KEY_ROLES, OPERATIONS, Role, parse_role, permits
from credvault.crypto import primitives as p
from credvault.engagement_keys import EngagementKeys, recovery_keys, retrying, seal_info
from credvault.errors import AccessDenied, AlreadyExists, IntegrityError, InvalidInput, NotFound
from credvault.grants import Grants
from credvault.model import RECOVERY, Engagement, GrantInfo, iso
from credvault.retention import require_active
from credvault.session import Session

if TYPE_CHECKING:
    from credvault.lifecycle import Lifecycle
    from credvault.results import EngagementView

__all__ = [
    "RECOVERY",
    "Engagement",
    "Engagements",
    "GrantInfo",
    "recovery_keys",
]


class _WouldOrphanLead(Exception):
    """Raised inside a grant's transaction to roll it back (issue 11, property 8)."""


class RevokeReport(builtins.list[str]):
    """What :meth:`Engagements.revoke` found: the credentials whose secret the member read
    (the list: change them on the client's systems) and ``viewed``, the records they only
    viewed without a secret (nothing to rotate, but the client may want to know)."""

    viewed: tuple[str, ...] = ()
    # a team vault's revoke run again after one cut short between the server's revoke and
    # the key rotation: the rotation done now; what they read was listed (if at all) then
    earlier: bool = False


class Engagements:
    """Engagement operations for one session (``vault.engagements``)."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.grants = Grants(s)
        self.keys = EngagementKeys(s, self.grants)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """Closing, holds and settings (imported on first use: not on the ``get`` path)."""
        from credvault.lifecycle import Lifecycle

        return Lifecycle(self.s, self.grants)

    # -- lookup -----------------------------------------------------------------------------
    def get(self, name: str, *, allow_purged: bool = False) -> Engagement:
        return self.s.engagement(name, allow_purged=allow_purged)

    def list(self, client: str | None = None) -> builtins.list[Engagement]:
        """Every engagement (internal use: no role check)."""
        return self.s.store.engagements(client)

    def visible_quietly(self, client: str | None = None) -> builtins.list[Engagement]:
        """:meth:`visible` without its audit entry (for status lines)."""
        engs = self.list(client)
        if permits("engagement.list-all", None, admin=self.s.is_admin):
            return engs
        return [
            e
            for e in engs
            if e.state != "purged" and permits("engagement.list", self.role_of(e), admin=False)
        ]

    def visible(self, client: str | None = None) -> builtins.list[Engagement]:
        """The engagements this member may list: all for admins, else those they hold a role
        on (names of other clients' engagements are not everyone's business)."""
        if client is not None:
            validate.name(client, "client name")
        engs = self.visible_quietly(client)
        with self.s.store.write():
            self.s.log("engagement-ls", None, client, "ok", f"{len(engs)} engagements listed")
        return engs

    # -- roles and keys (see grants.py and engagement_keys.py) ------------------------------
    def role_of(self, eng: Engagement, member: str | None = None) -> Role | None:
        """The member's current, verified role (None without a valid, unexpired grant)."""
        return self.grants.role_of(eng, member)

    def members(self, name: str) -> builtins.list[GrantInfo]:
        """Who holds which role on ``name`` (audited as ``engagement-members``)."""
        out = self.members_quietly(name)
        with self.s.store.write():  # who may see whom is member data: on the record
            self.s.log("engagement-members", name, None, "ok", f"{len(out)} members listed")
        return out

    def members_quietly(self, name: str) -> builtins.list[GrantInfo]:
        """:meth:`members` for callers that record their own entry (grant, recover, show)."""
        eng = self.get(name)
        self.s.check("engagement.members", self.role_of(eng), eng.name)
        return self.grants.listing(eng)

    def key(self, eng: Engagement, operation: str, item: str | None = None) -> bytes:
        """The engagement key, for a member whose verified role allows ``operation``
        (a name of :data:`~credvault.access.OPERATIONS`)."""
        return self.keys.key(eng, operation, item)

    def assert_current(self, eng: Engagement) -> None:
        """Inside a write transaction: ``eng``'s key is still current (else :class:`Conflict`)."""
        self.keys.assert_current(eng)

    def require_active(
        self,
        eng: Engagement,
        verb: str | None = None,
        *,
        operation: str | None = None,
        item: str | None = None,
    ) -> None:
        """Closed and purged engagements take no changes (their data awaits destruction).

        With ``operation`` (a name of :data:`~credvault.access.OPERATIONS`) the role is
        checked first: a member who may not do it at all is denied (exit 4, audited as
        denied) rather than told about the state, and a member who may is refused for the
        state with an ``error`` entry, so every refusal is on the record.
        """
        if eng.state == "active" or operation is None:
            require_active(eng, verb)
            return
        s = self.s
        s.check(operation, self.role_of(eng), eng.name, item)
        with s.store.write():
            s.log(OPERATIONS[operation].verb, eng.name, item, "error", f"engagement is {eng.state}")
        require_active(eng, verb)

    def rotate_if_needed(self, eng: Engagement) -> None:
        """Finish a rotation left pending (expiry, removal, reset) if this member leads."""
        self.keys.rotate_if_needed(eng)

    def rotate(self, name: str) -> int:
        """Rotate now; retried (from a fresh read) if another rotation lands first."""
        return retrying(self.s, lambda: self._rotate_now(name))

    def _rotate_now(self, name: str) -> int:
        s = self.s
        eng = self.get(name)
        key = self.key(eng, "engagement.rotate")
        with s.store.write():
            version = self.keys.rotate(eng, key, "on request")
        return version

    # -- creation and grants ----------------------------------------------------------------
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
        s.require("engagement.create")
        if lead not in s.slots.members:
            raise NotFound("member", lead)
        if s.store.engagement_by_name(name) is not None:
            raise AlreadyExists(f"engagement {name!r} already exists")
        from credvault.model import NewEngagement

        uid = os.urandom(16)
        now = s.now()
        roster = self.grants.roster
        with s.store.write():
            # Link 0, signed by this admin, names the first lead and pins their keys. No key
            # exists yet: the first lead's ``rotate`` makes it (now, if that is us), so the
            # creating admin never knows a key the engagement's secrets are sealed under.
            blob, first = ml.sign_link(
                None,
                roster.new_trust(uid),
                ml.CREATE,
                (name, client, lead, *roster.certified(lead)),
                s.member,
                s.keys.sign_private,
                now,
            )
            eng_id = s.store.insert_engagement(
                NewEngagement(
                    uid,
                    name,
                    client,
                    "",  # no key yet
                    require_reason,
                    grace_days,
                    now,
                    s.member,
                    lead,
                    blob[-ml.SIG_LEN :],  # not a pre-log creation record: the log is required
                )
            )
            s.store.append_link(eng_id, 0, blob)
            eng = self.get(name)
            self.keys.mirror(eng, first, lead, None, s.member)
            s.log("engagement-new", name, None, "ok", f"client {client}, lead {lead}")
            if lead == s.member:
                self.keys.rotate_logged(
                    eng,
                    first,
                    None,
                    "the first lead's own key",
                    s.member,
                    s.keys.sign_private,
                    audit=False,  # engagement-new records it (one entry per command)
                )
        return self.get(name)

    def grant(self, name: str, member: str, role: str, until: str | None = None) -> GrantInfo:
        """Grant ``role``; retried (from a fresh read) if a rotation lands in between."""
        return retrying(self.s, lambda: self._grant(name, member, role, until))

    def _grant(self, name: str, member: str, role: str, until: str | None) -> GrantInfo:
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
        self.require_active(eng, "grant", operation="engagement.grant", item=member)
        if member not in s.slots.members:
            raise NotFound("member", member)
        if member == s.member:
            raise s.refuse("engagement.grant", eng.name, member, "members cannot grant themselves")
        self.keys.rotate_if_needed(eng)
        eng = self.get(name)
        if self.grants.log_state(eng) is not None:
            return self._grant_logged(eng, member, r, expires)
        key = self.key(eng, "engagement.grant", member)
        previous = self.role_of(eng, member)
        mine = s.store.grant_of(eng.id, s.member)
        if previous is Role.LEAD and r is not Role.LEAD and mine and mine.granted_by == member:
            # Our own lead grant chains through theirs: lowering them would void it.
            raise s.refuse(
                "engagement.grant", eng.name, member, "they granted your lead role; ask another"
            )
        lowering_lead = previous is Role.LEAD and r is not Role.LEAD
        if lowering_lead:
            to_resign = self.grants.valid_grants_by(eng, member)
            leads_before = self.grants.valid_leads(eng) - {member}
        try:
            with s.store.write():
                self.keys.assert_current(eng)  # never seal a copy of a superseded key version
                self.keys.put_grant(
                    eng,
                    member,
                    r.value,
                    expires,
                    key,
                    eng.key_version,
                    s.member,
                    s.keys.sign_private,
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
                if lowering_lead:
                    self.grants.resign_grants_of(
                        eng, member, s.member, s.keys.sign_private, to_resign
                    )
                    if not leads_before <= self.grants.valid_leads(eng):
                        raise _WouldOrphanLead  # rolls the whole change back
                if (previous in KEY_ROLES and r not in KEY_ROLES) or lowering_lead:
                    self.keys.rotate(eng, key, "role lowered")
                # Read inside the transaction: another process may revoke it right after.
                mine_now = next(g for g in self.grants.listing(eng) if g.member == member)
        except _WouldOrphanLead:
            s.verified.clear()
            self.keys.forget(eng)
            raise s.refuse(
                "engagement.grant",
                eng.name,
                member,
                "lowering them would leave a lead whose grant no longer verifies; "
                "ask a lead whose grant does not pass through theirs",
            ) from None
        return mine_now

    def _refuse_if_leaderless(
        self,
        eng: Engagement,
        state: ml.State,
        member: str,
        role: str | None,
        op: str,
        *,
        in_transaction: bool = False,
    ) -> None:
        """Requirement 8: a change that would leave no lead whose keys are current is
        refused (audited, exit 4) before anything is written. Inside a transaction it
        raises :class:`_WouldOrphanLead` (rolling it back); :meth:`_leaderless_guard`
        turns that into the audited refusal afterwards."""
        roster = self.grants.roster
        before = {n for n in state.leads() if roster.current(state, n)}
        after = before - {member}
        if role == Role.LEAD.value:
            after.add(member)
        if after or not before:  # (none before: the lead left the vault; recovery repairs)
            return
        if in_transaction:
            raise _WouldOrphanLead(op, eng.name, member)
        raise self.s.refuse(
            op, eng.name, member, "the engagement would be left without a verifiable lead"
        )

    def _leaderless_guard(self, e: _WouldOrphanLead) -> AccessDenied:
        self.s.verified.clear()
        op, name, member = e.args
        return self.s.refuse(
            op, name, member, "the engagement would be left without a verifiable lead"
        )

    def _grant_logged(
        self, eng: Engagement, member: str, r: Role, expires: str | None
    ) -> GrantInfo:
        """A ``grant`` link (new member or change of role) in the same transaction as the
        row and the copy; a rotation if the log then demands one."""
        s = self.s
        state = self.grants.log_state(eng)
        assert state is not None
        key = self.key(eng, "engagement.grant", member) if state.key_version else None
        if key is None:
            s.check("engagement.grant", self.role_of(eng), eng.name, member)
        self._refuse_if_leaderless(eng, state, member, r.value, "engagement.grant")
        try:
            return self._grant_logged_write(eng, member, r, expires, key)
        except _WouldOrphanLead as e:
            raise self._leaderless_guard(e) from None

    def _grant_logged_write(
        self, eng: Engagement, member: str, r: Role, expires: str | None, key: bytes | None
    ) -> GrantInfo:
        s = self.s
        roster = self.grants.roster
        with s.store.write():
            self.keys.assert_current(eng)
            state = self.grants.log_state(eng)
            assert state is not None
            self._refuse_if_leaderless(
                eng, state, member, r.value, "engagement.grant", in_transaction=True
            )
            fields = (member, r.value, expires or "", *roster.certified(member))
            state = roster.append(eng, state, ml.GRANT, fields, s.member, s.keys.sign_private)
            self.keys.mirror(eng, state, member, None, s.member, granted=True)
            copy = None
            if key is not None and state.may_read(member, s.now()):
                copy = p.hpke_seal(
                    state.kem_of(member),
                    key,
                    seal_info(s, eng.uid, member, state.key_version),
                )
            s.store.set_copy(eng.id, member, state.key_version if copy else None, copy, s.member)
            s.log(
                "grant",
                eng.name,
                member,
                "ok",
                f"role {r.value}" + (f" until {expires[:16]}" if expires else ""),
            )
            if key is not None and state.needs_rotation(s.now()):
                self.keys.rotate_logged(
                    eng, state, key, "role lowered", s.member, s.keys.sign_private
                )
            mine_now = next(g for g in self.grants.listing(eng) if g.member == member)
        return mine_now

    def revoke(self, name: str, member: str) -> RevokeReport:
        """Revoke and rotate; returns the credentials whose secret the member read (to
        change them), with ``.viewed``: the records they only viewed (a credential's other
        fields, a system's address and details), which need no rotation.
        Retried (from a fresh read) if another rotation lands first."""
        return retrying(self.s, lambda: self._revoke(name, member))

    def _revoke(self, name: str, member: str) -> RevokeReport:
        s = self.s
        eng = self.get(name)
        key = self.key(eng, "engagement.revoke", member)
        if member == s.member:
            # The rotation would carry the seal of a lead who is no longer one.
            raise s.refuse("engagement.revoke", eng.name, member, "leads cannot revoke themselves")
        state = self.grants.log_state(eng)
        if state is not None:
            if member not in state.roster:
                raise NotFound("grant", f"{member} on {name}")
            self._refuse_if_leaderless(eng, state, member, None, "engagement.revoke")
        else:
            row = s.store.grant_of(eng.id, member)
            if row is None or row.revoked_at is not None or member == RECOVERY:
                raise NotFound("grant", f"{member} on {name}")
        try:
            return self._revoke_write(eng, member, key, state is not None)
        except _WouldOrphanLead as e:
            raise self._leaderless_guard(e) from None

    def _revoke_write(self, eng: Engagement, member: str, key: bytes, logged: bool) -> RevokeReport:
        s = self.s
        with s.store.write():
            if logged:
                self.keys.assert_current(eng)
                state = self.grants.log_state(eng)
                assert state is not None
                if member not in state.roster:
                    raise NotFound("grant", f"{member} on {eng.name}")
                self._refuse_if_leaderless(
                    eng, state, member, None, "engagement.revoke", in_transaction=True
                )
                self.grants.roster.append(
                    eng, state, ml.REVOKE, (member,), s.member, s.keys.sign_private
                )
            s.store.revoke_grant(eng.id, member, s.now())
            s.verified.clear()
            self.keys.rotate(eng, key, f"revoked {member}")
            read = s.store.audit_reads_by(member, eng.name)
            viewed = s.store.audit_reads_by(member, eng.name, views=True)
            if s.store.exported_by(member, eng.name):  # a client export read everything
                read = sorted(
                    set(read)
                    | set(s.store.names("credentials", eng.id))
                    | set(s.store.names("systems", eng.id))
                )
            seen = sorted(set(viewed) - set(read))
            s.log(
                "revoke",
                eng.name,
                member,
                "ok",
                f"{len(read)} credentials to change" + (f"; {len(seen)} viewed" if seen else ""),
            )
        report = RevokeReport(read)
        report.viewed = tuple(seen)
        return report

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, name: str, recovery_seed: bytes, grant_to: str, role: str) -> GrantInfo:
        s = self.s
        r = parse_role(role)
        s.require("engagement.recover-key")
        eng = self.get(name)
        if grant_to not in s.slots.members:
            raise NotFound("member", grant_to)
        kem_priv, sign_priv = recovery_keys(recovery_seed)
        if p.x25519_public(kem_priv) != s.slots.recovery.kem_pub:
            raise s.refuse(
                "engagement.recover-key", eng.name, grant_to, "not this vault's recovery key"
            )
        if self.grants.log_state(eng) is not None:
            return self._recover_logged(eng, kem_priv, sign_priv, grant_to, r)
        row = s.store.grant_of(eng.id, RECOVERY)
        if row is None:
            raise IntegrityError(f"engagement {name!r} has no recovery copy")
        key = self.keys.open_copy(eng, row, kem_priv)
        previous = self.role_of(eng, grant_to)
        to_resign = self.grants.valid_grants_by(eng, grant_to)
        with s.store.write():
            self.keys.put_grant(
                eng, grant_to, r.value, None, key, eng.key_version, RECOVERY, sign_priv
            )
            s.log("recover", eng.name, grant_to, "ok", f"recovery key used; granted {r.value}")
            if previous is Role.LEAD and r is not Role.LEAD:
                self.grants.resign_grants_of(eng, grant_to, RECOVERY, sign_priv, to_resign)
            if (previous in KEY_ROLES and r not in KEY_ROLES) or previous is Role.LEAD:
                self.keys.rotate(eng, key, "role changed by recovery", RECOVERY, sign_priv)
        return next(g for g in self.members_quietly(name) if g.member == grant_to)

    def _recover_logged(
        self, eng: Engagement, kem_priv: bytes, sign_priv: bytes, grant_to: str, r: Role
    ) -> GrantInfo:
        """The recovery key signs the ``grant`` link (it is entitled under every state) and
        opens its own copy, accepted only with the fingerprint the log committed to."""
        state = self.grants.log_state(eng)
        assert state is not None
        self._refuse_if_leaderless(eng, state, grant_to, r.value, "engagement.recover-key")
        try:
            return self._recover_logged_write(eng, kem_priv, sign_priv, grant_to, r)
        except _WouldOrphanLead as e:
            raise self._leaderless_guard(e) from None

    def _recover_logged_write(
        self, eng: Engagement, kem_priv: bytes, sign_priv: bytes, grant_to: str, r: Role
    ) -> GrantInfo:
        s = self.s
        roster = self.grants.roster
        with s.store.write():
            state = self.grants.log_state(eng)
            assert state is not None
            self._refuse_if_leaderless(
                eng, state, grant_to, r.value, "engagement.recover-key", in_transaction=True
            )
            key = (
                self.keys.open_logged(eng, state, RECOVERY, kem_priv) if state.key_version else None
            )
            fields = (grant_to, r.value, "", *roster.certified(grant_to))
            state = roster.append(eng, state, ml.GRANT, fields, RECOVERY, sign_priv)
            self.keys.mirror(eng, state, grant_to, None, RECOVERY, granted=True)
            s.log("recover", eng.name, grant_to, "ok", f"recovery key used; granted {r.value}")
            if key is None:
                pass  # no key yet: the lead's next command makes it
            elif state.needs_rotation(s.now()) or self.keys.stale(state):
                state = self.keys.tidy(eng, state, RECOVERY, sign_priv)
                self.keys.rotate_logged(
                    eng, state, key, "role changed by recovery", RECOVERY, sign_priv
                )
            elif state.may_read(grant_to, s.now()):
                copy = p.hpke_seal(
                    state.kem_of(grant_to), key, seal_info(s, eng.uid, grant_to, state.key_version)
                )
                s.store.set_copy(eng.id, grant_to, state.key_version, copy, RECOVERY)
        s.verified.clear()
        return next(g for g in self.members_quietly(eng.name) if g.member == grant_to)

    # -- lifecycle (see lifecycle.py) -------------------------------------------------------
    def set_options(self, name: str, *, require_reason: bool | None = None) -> Engagement:
        return self.lifecycle.set_options(name, require_reason=require_reason)

    def grace_days(self, eng: Engagement) -> int:
        return self.lifecycle.grace_days(eng)

    def close(self, name: str, grace_days: int | None = None) -> Engagement:
        return self.lifecycle.close(name, grace_days)

    def retain(self, name: str, until: str, reason: str) -> Engagement:
        return self.lifecycle.retain(name, until, reason)

    def release(self, name: str) -> Engagement:
        return self.lifecycle.release(name)

    def purge_status(self, eng: Engagement) -> str:
        """When the purge is due and why, in words (``engagement show``)."""
        return self.lifecycle.purge_status(eng)

    def show(self, name: str) -> EngagementView:
        """The engagement, its purge in words, your role and its members (audited)."""
        from credvault.results import EngagementView

        eng = self.get(name, allow_purged=True)
        self.s.check("engagement.show", self.role_of(eng), eng.name)
        purge = self.purge_status(eng)
        role = self.role_of(eng)
        members = self.members_quietly(name) if eng.state != "purged" else []
        with self.s.store.write():
            self.s.log("engagement-show", eng.name, None, "ok")
        return EngagementView(
            **eng.to_json(),  # type: ignore[arg-type]
            purge=purge,
            your_role=role.value if role else None,
            members=members,
        )
