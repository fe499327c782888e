"""The signed membership log of each engagement, as the vault keeps and reads it.

:mod:`credvault.memberlog` is the pure format and verifier; this module stores the links
(table ``member_log``, all SQL in :mod:`credvault.store`), says what each log is checked
against (:class:`~credvault.memberlog.Trust`: the admins' and the recovery key's certified
signing keys from the key-slot file), replays it and appends to it inside the caller's
transaction. What the replayed :class:`~credvault.memberlog.State` says is the only thing
that decides who is sealed an engagement key and whose copy is accepted
(docs/security.md §12); grant rows only mirror it.

Replaying costs one Ed25519 check per link, so the state is kept per session, keyed by the
hash of the log's last link: a ``get`` reads one row and hashes it; only new links are
verified (each must name the hash the kept state ends with).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import CredvaultError, IntegrityError
from credvault.keyslots import MemberSlot, Recovery
from credvault.model import Engagement
from credvault.session import Session
from credvault.store import Store

__all__ = ["SNAPSHOT_AFTER", "Roster", "memberlog_positions"]

SNAPSHOT_AFTER = 32  # links verified in one replay before this member keeps the result


def memberlog_positions(store: Store) -> dict[str, ml.Position]:
    """Each engagement log's head position, by engagement uid (hex), for the witness.

    Not verified here: the witness compares positions it recorded after a verified open
    (docs/format.md §18); an engagement without a log (made before format 3) is absent.
    """
    return {
        uid.hex(): ml.Position(seq, ml.chain_hash(link)) for uid, seq, link in store.log_heads()
    }


class Roster:
    """Membership logs for one session: replay (cached by head hash) and append."""

    def __init__(self, s: Session, pre_log_record: Callable[[Engagement], bool]) -> None:
        """``pre_log_record(eng)``: whether ``eng``'s admin-signed creation record is one
        made before the log (:meth:`credvault.grants.Grants.creation_valid`)."""
        self.s = s
        self.pre_log_record = pre_log_record
        self._states: dict[int, ml.State] = {}
        self._certified: dict[str, tuple[MemberSlot, tuple[bytes, bytes]]] = {}
        self._recovery_checked: Recovery | None = None

    # -- trust ------------------------------------------------------------------------------
    def trust(self, uid: bytes, creator: str, legacy_lead: str | None = None) -> ml.Trust:
        """What ``eng``'s log is checked against, from the key-slot file's certificates.

        ``creator`` is the signer link 0 names: accepted with a certified key if they are an
        admin now, or with a key certified as theirs before they left, were reset or
        replaced their keys after a compromise (the
        certificate carries no admin flag then; an engagement's log is written once, and a
        replaced log is what the witness catches). ``legacy_lead``: for an engagement made
        before the log, the first lead its admin-signed creation record names may write
        link 0 too (the bootstrap, docs/security.md §12).
        """
        s = self.s
        pinned = s.keys.admin_sign_pub
        keys: set[bytes] = set(s.slots.retired_keys(creator, pinned))
        slot = s.slots.members.get(creator)
        if slot is not None and (slot.admin or creator == legacy_lead):
            keys.add(self.certified(creator)[0])  # the admin flag is inside the certificate
            # Keys the creator replaced themselves (``passwd --compromised`` without an
            # admin), verified as a chain with the certificate: link 0 was signed once, before.
            keys.update(sign for _, sign, _ in slot.succession)
        return ml.Trust(s.vault_id, uid, {creator: frozenset(keys)}, self._recovery())

    def new_trust(self, uid: bytes) -> ml.Trust:
        """The trust for a log this session starts (its own link 0)."""
        return self.trust(uid, self.s.member, self.s.member)

    # -- reading ----------------------------------------------------------------------------
    def state(self, eng: Engagement) -> ml.State | None:
        """The verified state of ``eng``'s log, or None if it has none (IntegrityError for
        a log that does not verify). Fresh: the last link is read every time."""
        head = self.s.store.log_head(eng.id)
        if head is None:
            self._states.pop(eng.id, None)
            return None
        seq, link = head
        kept = self._states.get(eng.id)
        if kept is not None and kept.seq == seq and kept.head == ml.chain_hash(link):
            return kept
        if kept is None or kept.seq >= seq:
            kept = self._snapshot(eng, seq)
        if kept is not None and kept.seq < seq:
            # Only the new links: the first must name the kept head (a fork fails here).
            new = self.s.store.log_links(eng.id, kept.seq)
            state = ml.replay(new, self._trust_of(eng, kept), kept)
        elif kept is not None and kept.seq == seq and kept.head == ml.chain_hash(link):
            state, new = kept, []
        else:
            new = self.s.store.log_links(eng.id)
            state = ml.replay(new, self._trust_for_links(eng, new))
        if len(new) >= SNAPSHOT_AFTER:
            self._keep(eng, state)
        self._states[eng.id] = state
        return state

    # -- the member's own verified state, kept across processes -----------------------------
    def _mac_input(self, eng: Engagement, blob: bytes) -> bytes:
        return labels.encode(self.s.vault_id, eng.uid, self.s.member, blob)

    def _mac_key(self) -> bytes:
        return p.hkdf(self.s.keys.sign_private, labels.MEMBER_STATE_MAC)

    def _snapshot(self, eng: Engagement, head_seq: int) -> ml.State | None:
        """The state this member verified before, if its MAC (a key only they hold) checks.

        It only saves work: the links after it are verified from it, and the first must name
        its head. One that a log shorter than it cannot contain is a rollback or deletion.
        """
        kept = self.s.store.member_state(self.s.member, eng.id)
        if kept is None:
            return None
        blob, tag = kept
        try:
            p.mac_verify(self._mac_key(), self._mac_input(eng, blob), tag, "kept state")
        except IntegrityError:
            return None  # keys replaced (a reset) or someone else's: replay from the start
        state = ml.state_from_bytes(blob)
        if state.seq > head_seq:
            raise IntegrityError(
                f"membership log of {eng.name!r} ends at link {head_seq}, but this member "
                f"verified link {state.seq} before: rolled back or links were deleted"
            )
        return state

    def _keep(self, eng: Engagement, state: ml.State) -> None:
        if self.s.store.in_transaction:
            return  # never inside someone's transaction: the next use outside one keeps it
        blob = ml.state_to_bytes(state)
        tag = p.mac(self._mac_key(), self._mac_input(eng, blob))
        with contextlib.suppress(CredvaultError):  # a cache: a busy or read-only vault skips it
            self.s.store.put_member_state(self.s.member, eng.id, blob, tag)

    def _trust_of(self, eng: Engagement, state: ml.State) -> ml.Trust:
        return ml.Trust(self.s.vault_id, eng.uid, {}, self._recovery())

    def _recovery(self) -> bytes:
        """The recovery key's Ed25519 key, its certificate checked once per key-slot read."""
        rec = self.s.slots.recovery
        if self._recovery_checked != rec:
            rec.verify(self.s.vault_id, self.s.keys.admin_sign_pub)
            self._recovery_checked = rec
        return rec.sign_pub

    def _trust_for_links(self, eng: Engagement, links: list[bytes]) -> ml.Trust:
        if not links:
            raise IntegrityError(f"membership log of {eng.name!r} is empty")
        signer = ml.Link.from_bytes(links[0]).signer
        legacy_lead = None
        if signer == eng.lead and self.pre_log_record(eng):
            legacy_lead = eng.lead  # a bootstrap: only the admin-signed record may say so
        return self.trust(eng.uid, signer, legacy_lead)

    # -- writing (caller's transaction) -----------------------------------------------------
    def append(
        self,
        eng: Engagement,
        state: ml.State | None,
        kind: str,
        fields: tuple[str | bytes | int, ...],
        signer: str,
        sign_private: bytes,
        trust: ml.Trust | None = None,
    ) -> ml.State:
        """Sign a link after ``state``, check it under the log's rules, store it.

        A change the rules refuse raises :class:`IntegrityError` before anything is stored;
        callers check the rules they turn into refusals (the last lead) first.
        """
        if trust is None:
            trust = self._trust_of(eng, state) if state is not None else self.new_trust(eng.uid)
        blob, new = ml.sign_link(state, trust, kind, fields, signer, sign_private, self.s.now())
        self.s.store.append_link(eng.id, new.seq, blob)
        self._states[eng.id] = new
        return new

    # -- keys the roster pins ---------------------------------------------------------------
    def certified(self, member: str) -> tuple[bytes, bytes]:
        """(Ed25519, X25519) public keys of a current member, certified by the admin key."""
        s = self.s
        slot = s.slots.members[member]
        seen = self._certified.get(member)
        if seen is not None and seen[0] == slot:
            return seen[1]
        pinned = s.keys.admin_sign_pub
        kem = s.slots.certified_kem(member, pinned)
        sign = s.slots.signing_key(member, pinned)
        assert sign is not None  # certified_kem found the member
        self._certified[member] = (slot, (sign, kem))  # checked once per slot as read
        return sign, kem

    def current(self, state: ml.State, member: str) -> bool:
        """Whether the keys the log pins for ``member`` are the ones they hold now.

        False for someone who left the vault or was given new keys (reset): nothing is
        sealed to them and they act on nothing until a lead grants them again."""
        m = state.roster.get(member)
        if m is None:
            return False
        if member == self.s.member:
            me = self.s.me
            return (m.sign, m.kem) == (me.sign_pub, me.kem_pub)
        if member not in self.s.slots.members:
            return False
        try:
            return (m.sign, m.kem) == self.certified(member)
        except IntegrityError:
            return False
