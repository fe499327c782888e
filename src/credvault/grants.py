"""Who holds which role on an engagement, decided from signatures.

A grant row is a role certificate signed by whoever granted it, and for reading roles also a
sealed copy of the engagement key (custody is :mod:`credvault.engagement_keys`). A
certificate counts only if its signer was entitled: the admin who signed the engagement's
creation record (for its first lead and the recovery copy), a lead whose own grant chains
back there, or the recovery key. The grant row is read on every check, so a revoke or an
expiry by another process counts at once; only the signature chain is remembered.
"""

from __future__ import annotations

from credvault import memberlog as ml
from credvault.access import Role
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError
from credvault.model import RECOVERY, Engagement, Grant, GrantInfo
from credvault.roster import Roster
from credvault.session import Session


# -- signed statements -------------------------------------------------------------------
def creation_message(s: Session, uid: bytes, name: str, client: str, lead: str, by: str) -> bytes:
    """What an admin signs when creating an engagement with its first lead."""
    return labels.encode(labels.GRANT_CREATION, s.vault_id, uid, name, client, lead, by)


def role_message(
    s: Session, eng: Engagement, member: str, role: str, expires: str | None, by: str
) -> bytes:
    """What a role certificate signs."""
    return labels.encode(labels.GRANT_ROLE, s.vault_id, eng.uid, member, role, expires or "", by)


def copy_message(
    s: Session, eng: Engagement, member: str, version: int, sealed: bytes, key: bytes, by: str
) -> bytes:
    """What the sealer of a key copy signs: it names the key by fingerprint, so a copy is
    committed to one key."""
    return copy_message_fp(s, eng, member, version, sealed, p.fingerprint(key), by)


def copy_message_fp(
    s: Session, eng: Engagement, member: str, version: int, sealed: bytes, fp: str, by: str
) -> bytes:
    """:func:`copy_message` given the key's fingerprint (to re-sign a copy one cannot open)."""
    return labels.encode(
        labels.GRANT_COPY, s.vault_id, eng.uid, member, version, p.digest(sealed), fp, by
    )


class Grants:
    """Role decisions for one session."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.roster = Roster(s, self.creation_valid)
        self._legacy: set[int] = set()

    def log_state(self, eng: Engagement) -> ml.State | None:
        """The verified membership-log state of ``eng``; None for an engagement made before
        the log (format 3) that has not been given one yet, whose admin-signed creation
        record still verifies (§4's rules apply to it until its first lead's next command).

        An engagement whose log is missing but whose creation record is not a pre-log one
        (every engagement made since) is tampering: deleting a log never brings back the
        old rules.
        """
        state = self.roster.state(eng)
        if state is not None:
            return state
        if eng.id in self._legacy:
            return None
        if not self.creation_valid(eng):
            raise IntegrityError(f"engagement {eng.name!r}: its membership log is missing")
        self._legacy.add(eng.id)
        return None

    def signed_by(self, name: str, message: bytes, signature: bytes) -> str | None:
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

    def sign_creation(
        self, uid: bytes, name: str, client: str, lead: str, sign_private: bytes
    ) -> bytes:
        msg = creation_message(self.s, uid, name, client, lead, self.s.member)
        return p.sign(sign_private, labels.GRANT_SIG, msg)

    def sign_role(
        self,
        eng: Engagement,
        member: str,
        role: str,
        expires: str | None,
        signer: str,
        sign_private: bytes,
    ) -> bytes:
        msg = role_message(self.s, eng, member, role, expires, signer)
        return p.sign(sign_private, labels.GRANT_SIG, msg)

    def creation_valid(self, eng: Engagement) -> bool:
        msg = creation_message(self.s, eng.uid, eng.name, eng.client, eng.lead, eng.created_by)
        return self.signed_by(eng.created_by, msg, eng.creation_sig) is not None

    def role_valid(self, eng: Engagement, g: Grant, seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``g``'s role certificate chains to the creation record or recovery.

        Grants made by a lead stay valid after that lead leaves: the chain is historical.
        """
        msg = role_message(self.s, eng, g.member, g.role, g.expires_at, g.granted_by)
        if self.signed_by(g.granted_by, msg, g.role_sig) is None:
            return False
        if g.granted_by == RECOVERY:
            return True
        if g.granted_by == eng.created_by and (g.member, g.role) in (
            (eng.lead, Role.LEAD.value),
            (RECOVERY, "recovery"),
        ):
            return self.creation_valid(eng)
        if g.granted_by in seen | {g.member}:
            return False  # a cycle: nobody may certify themselves
        lead = self.s.store.grant_of(eng.id, g.granted_by)
        if lead is None:
            return False
        return lead.role == Role.LEAD.value and self.role_valid(eng, lead, seen | {g.member})

    def may_seal(self, eng: Engagement, g: Grant, status: str) -> bool:
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
            and self.creation_valid(eng)
        ):
            return True
        lead = self.s.store.grant_of(eng.id, signer or "")
        if lead is None:
            return False
        # A retired key (its holder left, or was given new keys) signs nothing legitimate any
        # more, so what it signed while entitled stands; a live key must belong to a live lead.
        departed = status == "retired"
        return (
            lead.role == Role.LEAD.value
            and (lead.live(self.s.now()) or departed)
            and self.role_valid(eng, lead)
        )

    def role_of(self, eng: Engagement, member: str | None = None) -> Role | None:
        """The member's current, verified role (None without a valid, unexpired grant)."""
        who = member or self.s.member
        if eng.state == "purged":
            return None  # the grants went with the data; the log stays as its history
        state = self.log_state(eng)
        if state is not None:
            return self.logged_role(eng, state, who)
        # The grant row is read every time (one indexed lookup), so a revoke or an expiry
        # by another process counts at once; only the signature chain check is cached.
        g = self.s.store.grant_of(eng.id, who)
        if g is None:
            return None
        checked, valid = self.s.verified.get((eng.id, who), (None, False))
        if checked != g:
            valid = g.role != "recovery" and self.role_valid(eng, g)
            self.s.verified[(eng.id, who)] = (g, valid)
        return Role(g.role) if g.live(self.s.now()) and valid else None

    def logged_role(
        self, eng: Engagement, state: ml.State, member: str | None = None
    ) -> Role | None:
        """:meth:`role_of` for a membership-log engagement whose verified ``state`` the
        caller has just read (the read path: the log's head is not read twice)."""
        who = member or self.s.member
        if eng.state == "purged":
            return None
        m = state.roster.get(who)
        if m is None or (m.expires is not None and m.expires <= self.s.now()):
            return None
        return Role(m.role) if self.roster.current(state, who) else None

    def listing(self, eng: Engagement) -> list[GrantInfo]:
        """Who holds which role (no permission check: the caller's)."""
        state = self.log_state(eng)
        if state is not None:  # the signed roster; rows only add who granted and when
            rows = {g.member: g for g in self.s.store.grants(eng.id)}
            out = []
            for name, m in sorted(state.roster.items()):
                g = rows.get(name)
                if not self.roster.current(state, name) or (
                    m.expires is not None
                    and m.expires <= self.s.now()
                    and (g is None or g.revoked_at is not None)
                ):
                    continue  # left, given new keys, or expired (and the purge run saw it)
                out.append(
                    GrantInfo(
                        name,
                        m.role,
                        g.granted_by if g else "",
                        g.granted_at if g else state.time,
                        m.expires,
                        g is not None
                        and g.sealed is not None
                        and g.key_version == state.key_version
                        and state.held(name, state.key_version),
                    )
                )
            return out
        # Before the log: a row is a claim, its certificate the decision (as for access and
        # rotation), so a row an insider inserted is not listed as a member.
        return [
            GrantInfo(
                g.member, g.role, g.granted_by, g.granted_at, g.expires_at, g.sealed is not None
            )
            for g in self.s.store.grants(eng.id)
            if g.revoked_at is None and g.member != RECOVERY and self.role_valid(eng, g)
        ]

    def valid_grants_by(self, eng: Engagement, lead: str) -> frozenset[str]:
        """Members whose role certificate ``lead`` signed and which verifies now.

        Taken *before* ``lead`` is lowered: only these are re-signed, so a row an insider
        inserted with a forged or garbage signature is never laundered into a valid one.
        """
        return frozenset(
            g.member
            for g in self.s.store.grants(eng.id)
            if g.granted_by == lead and self.role_valid(eng, g)
        )

    def valid_leads(self, eng: Engagement) -> frozenset[str]:
        """Unrevoked lead grants whose certificate chain verifies (no cache: for checks
        inside a write transaction)."""
        return frozenset(
            g.member
            for g in self.s.store.grants(eng.id)
            if g.role == Role.LEAD.value and g.revoked_at is None and self.role_valid(eng, g)
        )

    def resign_grants_of(
        self,
        eng: Engagement,
        former_lead: str,
        signer: str,
        sign_private: bytes,
        only: frozenset[str],
    ) -> None:
        """Re-sign the role certificates ``former_lead`` signed (those in ``only``, which
        verified before the change), so they keep chaining once that member is no longer a
        lead (caller's transaction)."""
        for g in self.s.store.grants(eng.id):
            if (
                g.member in only
                and g.granted_by == former_lead
                and g.member not in (former_lead, signer)
            ):
                sig = self.sign_role(eng, g.member, g.role, g.expires_at, signer, sign_private)
                self.s.store.set_role_sig(eng.id, g.member, signer, sig)
        self.s.verified.clear()
