"""The signed membership log of one engagement: who may read it, decided by signatures only.

Every member holds the database key, so any member can write any row. Whatever decides who
is sealed an engagement key must therefore be something an insider cannot write: a chain of
signed *links*, each signed by someone the state *before* it entitles, each naming the hash
of the link before it (compare Keybase sigchains, MLS epochs). Replaying the chain from the
start gives the roster (member → role, expiry, keys), the key version with the fingerprint
the rotating lead committed to, who was entitled to hold each key version, and whether the
current key must be rotated. Nothing else — no flag, revocation mark or role column — is
consulted; such columns may at most trigger work.

This module is pure: bytes in, state out; no SQL, no clock, no I/O. The byte format is in
docs/format.md §17, which is the authority; the design is in docs/security.md §12.

Rules (each enforced by :func:`apply`):

- ``create`` is link 0, signed by an admin named in :class:`Trust`; it names the first lead
  and pins that lead's keys. The creator is not in the roster (unless they are the lead) and
  never sees a key: the key does not exist until the first lead's ``rotate``.
- ``grant`` (a new member, or a change of role), ``revoke``, ``expire`` and ``rotate`` are
  signed by a lead of the state before the link with the key the roster pins for them, or by
  the recovery key. A ``revoke`` may also be signed by a vault admin the :class:`Trust`
  names in ``removers`` (a team vault's ``member rm``: the admin takes the member out of
  every log at once; a SQLCipher vault names none, its admin-signed key-slot file does that). Signatures are checked against the state before each link, so nothing is
  ever re-signed and a lowered lead's earlier links stay valid (no cycles).
- ``succeed`` (a member's new key pair) is signed by that member's current key, or by a lead
  or the recovery key; ``compromised = 1`` demands a rotation. On a team vault an admin the
  :class:`Trust` names in ``removers`` may sign one off the roster too, with
  ``compromised = 1`` only (``member certify``: the member's old key is not to be trusted),
  and every ``succeed`` is put to :attr:`Trust.successor` (a team vault's: the new pair
  must be one an admin's certificate certifies for that member).
- ``set`` (the engagement's settings: ``--require-reason``, its own grace period; a team
  vault's) is signed by a lead, or by an admin the :class:`Trust` names in ``removers``.
  A link accepted on an admin's key alone (``create``, or such a ``revoke``, ``set`` or
  ``succeed``)
  is also put to :attr:`Trust.after_removal` (a team vault's revocation list: not signed
  by an admin after their removal).
- After every link at least one lead remains; lead grants carry no expiry (so no lead can
  lapse by the clock); link times never go backwards.
- Removing a member who may hold the current key (revoke, expire, lowering to auditor, a
  compromised key) makes the state demand a rotation; a grant whose expiry has passed counts
  as removed at once for new copies and demands a rotation too.
- A revocation cannot be undone: the only way back is a new, signed grant later in the chain.
  It cannot be replayed either: each link names its position and its predecessor's hash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError

LINK_FORMAT = 1
SIG_LEN = 64
MAX_LINK = 4096  # bytes: a link names a few keys and short names; anything larger is hostile
RECOVERY = "@recovery"
ZERO_HASH = bytes(32)

LEAD, ENGINEER, READER, AUDITOR = "lead", "engineer", "reader", "auditor"
ROLES = (LEAD, ENGINEER, READER, AUDITOR)
READING = frozenset({LEAD, ENGINEER, READER})

CREATE, GRANT, REVOKE, EXPIRE, ROTATE, SUCCEED, SET = (
    "create",
    "grant",
    "revoke",
    "expire",
    "rotate",
    "succeed",
    "set",
)
NO_GRACE = -1  # a ``set`` link's grace_days when the vault's own grace period applies

# Field types of each kind's body, in encoding order: "s" text, "k" 32-byte key, "i" integer.
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    CREATE: (("name", "s"), ("client", "s"), ("lead", "s"), ("sign", "k"), ("kem", "k")),
    GRANT: (("member", "s"), ("role", "s"), ("expires", "s"), ("sign", "k"), ("kem", "k")),
    REVOKE: (("member", "s"),),
    EXPIRE: (("member", "s"),),
    ROTATE: (("version", "i"), ("fingerprint", "s")),
    SUCCEED: (("member", "s"), ("sign", "k"), ("kem", "k"), ("compromised", "i")),
    SET: (("require_reason", "i"), ("grace_days", "i")),
}
_HEADER = ("format", "vault", "engagement", "seq", "prev", "time", "kind", "signer", "signer_key")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
_FP = re.compile(r"[0-9a-f]{32}\Z")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_NO_REMOVERS: Mapping[str, frozenset[bytes]] = MappingProxyType({})


def _never_removed(signer: str, key: bytes, link_hash: bytes) -> str | None:
    return None


def _any_successor(member: str, sign: bytes, kem: bytes) -> str | None:
    return None


class Trust(NamedTuple):
    """What the log is checked against, from outside it.

    ``admins`` maps each admin's name to the signing keys certified for them (current and
    retired), checked by the caller against the admin key the member pins; only ``create``
    uses it. ``recovery`` is the recovery key's certified signing key. ``removers``: the
    admins whose certified signing key may sign a ``revoke`` without being on the roster
    (a team vault's ``member rm``, docs/format.md §19.5); looked up only for a revoke
    link whose signer is not a lead of the state before it, so it may load lazily.
    ``after_removal(signer, key, link hash)``: asked for every link accepted through
    ``admins`` or ``removers`` only; a reason means the admin was removed before signing it
    (a team vault's revocation list, docs/format.md §19.7), and the link is refused.
    ``successor(member, sign, kem)``: asked for every ``succeed`` link; a reason means the
    new pair is not one the vault certifies for ``member`` (a team vault: an admin's
    certificate of new keys, docs/format.md §19.8), and the link is refused. SQLCipher's
    passwd signs its own successors: none is asked there.
    """

    vault_id: bytes
    engagement_uid: bytes
    admins: Mapping[str, frozenset[bytes]]
    recovery: bytes
    removers: Mapping[str, frozenset[bytes]] = _NO_REMOVERS
    after_removal: Callable[[str, bytes, bytes], str | None] = _never_removed
    successor: Callable[[str, bytes, bytes], str | None] = _any_successor


class Link(NamedTuple):
    """One parsed, not yet trusted link."""

    vault_id: bytes
    engagement_uid: bytes
    seq: int
    prev: bytes
    time: str
    kind: str
    signer: str
    signer_key: bytes
    fields: tuple[str | bytes | int, ...]
    signature: bytes

    def body(self) -> bytes:
        return labels.encode(
            LINK_FORMAT,
            self.vault_id,
            self.engagement_uid,
            self.seq,
            self.prev,
            self.time,
            self.kind,
            self.signer,
            self.signer_key,
            *self.fields,
        )

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    def hash(self) -> bytes:
        """What the next link names as ``prev`` and a witness records."""
        return chain_hash(self.to_bytes())

    def field(self, name: str) -> str | bytes | int:
        names = [n for n, _ in FIELDS[self.kind]]
        return self.fields[names.index(name)]

    @classmethod
    def from_bytes(cls, data: bytes) -> Link:
        """Strict parser: exact part count and types, canonical bytes, bounded size."""
        if not SIG_LEN < len(data) <= MAX_LINK:
            raise IntegrityError("membership link malformed (size)")
        body, signature = data[:-SIG_LEN], data[-SIG_LEN:]
        parts = _decode(body)
        if len(parts) < len(_HEADER):
            raise IntegrityError("membership link malformed (header)")
        fmt = _int(parts[0])
        if fmt != LINK_FORMAT:
            raise IntegrityError("membership link of an unknown format")
        kind = _text(parts[6])
        spec = FIELDS.get(kind)
        if spec is None or len(parts) != len(_HEADER) + len(spec):
            raise IntegrityError("membership link malformed (kind or field count)")
        fields: list[str | bytes | int] = []
        for (_, typ), raw in zip(spec, parts[len(_HEADER) :], strict=True):
            fields.append(_int(raw) if typ == "i" else _key(raw) if typ == "k" else _text(raw))
        link = cls(
            vault_id=_exact(parts[1], 16),
            engagement_uid=_exact(parts[2], 16),
            seq=_int(parts[3]),
            prev=_exact(parts[4], 32),
            time=_text(parts[5]),
            kind=kind,
            signer=_text(parts[7]),
            signer_key=_key(parts[8]),
            fields=tuple(fields),
            signature=signature,
        )
        if link.body() != body:  # cannot differ with this encoding; refuses it if it ever can
            raise IntegrityError("membership link is not canonically encoded")
        return link


class Member(NamedTuple):
    """A roster entry: the role and keys the signed history gives a member now."""

    role: str
    expires: str | None
    sign: bytes
    kem: bytes


class Position(NamedTuple):
    """How far a log goes: the last link's seq and hash (``-1`` and zeros for none)."""

    seq: int
    hash: bytes


class State(NamedTuple):
    """The result of replaying a log; every field derived from signed links only."""

    name: str
    client: str
    creator: str
    roster: Mapping[str, Member]
    key_version: int  # 0 until the first lead generated the key
    fingerprints: Mapping[int, str]  # version -> fingerprint the rotating signer committed to
    holders: Mapping[int, frozenset[str]]  # version -> members entitled to hold it, ever
    rotation_due: bool  # someone who may hold the current key lost that right
    seq: int
    head: bytes
    time: str
    # the engagement's settings, from its last ``set`` link (a team vault's engagement new
    # --require-reason/--grace-days and engagement set); defaults where there is none
    require_reason: bool = False
    grace_days: int | None = None

    @property
    def position(self) -> Position:
        return Position(self.seq, self.head)

    def leads(self) -> list[str]:
        return sorted(n for n, m in self.roster.items() if m.role == LEAD)

    def _reads(self, member: str, now: str) -> bool:
        m = self.roster.get(member)
        return m is not None and m.role in READING and (m.expires is None or now < m.expires)

    def may_read(self, member: str, now: str) -> bool:
        """Whether ``member`` may be sealed the current key now (reading role, not expired)."""
        return self.key_version > 0 and self._reads(member, now)

    def readers(self, now: str) -> list[str]:
        """Everyone the current key is to be sealed to at ``now`` (the recovery copy aside)."""
        return sorted(n for n in self.roster if self._reads(n, now))

    def kem_of(self, member: str) -> bytes:
        """The X25519 key the signed history pins for ``member`` (what copies are sealed to)."""
        return self.roster[member].kem

    def needs_rotation(self, now: str) -> bool:
        """True if a rotation is due: signed removals, or a holder's grant expired by ``now``.

        Derived from the log and the reader's own clock; no column can set or clear it.
        """
        if self.key_version == 0:
            return False
        if self.rotation_due:
            return True
        current = self.holders.get(self.key_version, frozenset())
        return any(not self._reads(n, now) for n in current if n in self.roster)

    def held(self, member: str, version: int) -> bool:
        """Whether the signed history ever entitled ``member`` to key ``version``."""
        return member in self.holders.get(version, frozenset())

    def check_key(self, version: int, key: bytes) -> None:
        """A key offered as ``version`` must be the one the log committed to."""
        fp = self.fingerprints.get(version)
        if fp is None or p.fingerprint(key) != fp:
            raise IntegrityError(
                f"engagement key version {version} does not match the membership log"
            )


def chain_hash(blob: bytes) -> bytes:
    """SHA-256 of the chain label and a link's bytes (docs/format.md §17)."""
    return p.digest(labels.MEMBER_LOG_HASH + blob)


def state_to_bytes(state: State) -> bytes:
    """A verified state as canonical JSON, for the member's own cache beside the witness."""
    doc = {
        "name": state.name,
        "client": state.client,
        "creator": state.creator,
        "roster": {
            n: [m.role, m.expires, m.sign.hex(), m.kem.hex()]
            for n, m in sorted(state.roster.items())
        },
        "key_version": state.key_version,
        "fingerprints": {str(v): fp for v, fp in sorted(state.fingerprints.items())},
        "holders": {str(v): sorted(h) for v, h in sorted(state.holders.items())},
        "rotation_due": state.rotation_due,
        "seq": state.seq,
        "head": state.head.hex(),
        "time": state.time,
    }
    if state.require_reason:  # only when set: a state without settings keeps its bytes
        doc["require_reason"] = True
    if state.grace_days is not None:
        doc["grace_days"] = state.grace_days
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def state_from_bytes(data: bytes) -> State:
    """Inverse of :func:`state_to_bytes`; the caller has checked the MAC around it."""
    try:
        d = json.loads(data)
        state = State(
            name=str(d["name"]),
            client=str(d["client"]),
            creator=str(d["creator"]),
            roster={
                str(n): Member(
                    str(r), None if e is None else str(e), bytes.fromhex(sg), bytes.fromhex(k)
                )
                for n, (r, e, sg, k) in d["roster"].items()
            },
            key_version=int(d["key_version"]),
            fingerprints={int(v): str(fp) for v, fp in d["fingerprints"].items()},
            holders={int(v): frozenset(map(str, h)) for v, h in d["holders"].items()},
            rotation_due=bool(d["rotation_due"]),
            seq=int(d["seq"]),
            head=bytes.fromhex(d["head"]),
            time=str(d["time"]),
            require_reason=d.get("require_reason") is True,
            grace_days=None if d.get("grace_days") is None else int(d["grace_days"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise IntegrityError("cached membership state is corrupt") from None
    if state_to_bytes(state) != data:
        raise IntegrityError("cached membership state is not canonical")
    return state


# -- encoding ---------------------------------------------------------------------------------
def _decode(data: bytes) -> list[bytes]:
    """Inverse of :func:`labels.encode` (strict: no trailing bytes)."""
    out, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise IntegrityError("membership link malformed (length prefix)")
        n = int.from_bytes(data[i : i + 4], "big")
        i += 4
        if i + n > len(data):
            raise IntegrityError("membership link malformed (truncated part)")
        out.append(data[i : i + n])
        i += n
    return out


def _int(raw: bytes) -> int:
    if len(raw) != 8:
        raise IntegrityError("membership link malformed (integer)")
    return int.from_bytes(raw, "big", signed=True)


def _exact(raw: bytes, n: int) -> bytes:
    if len(raw) != n:
        raise IntegrityError("membership link malformed (length)")
    return raw


def _key(raw: bytes) -> bytes:
    return _exact(raw, 32)


def _text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError("membership link malformed (text)") from None
    if not text.isprintable():
        raise IntegrityError("membership link malformed (text)")
    return text


# -- replay -----------------------------------------------------------------------------------
def replay(blobs: Iterable[bytes], trust: Trust, start: State | None = None) -> State:
    """Verify a log and return its state; any defect is IntegrityError.

    From link 0, or, with ``start``, from the links after a state this member verified
    before (kept MACed with their witness): the first link must name ``start.head``, so
    only the new links cost a signature check each.
    """
    state: State | None = start
    for blob in blobs:
        state = apply(state, blob, trust)
    if state is None:
        raise IntegrityError("membership log is empty")
    return state


def apply(state: State | None, blob: bytes, trust: Trust) -> State:
    """Check one link against the state before it and return the state after it."""
    link = Link.from_bytes(blob)
    _check_place(state, link, trust)
    _check_signer(state, link, trust)
    p.verify(
        link.signer_key,
        labels.MEMBER_LOG,
        blob[:-SIG_LEN],  # the parser checked these are exactly link.body()
        link.signature,
        f"membership link {link.seq} ({link.kind})",
    )
    if link.kind == SUCCEED:  # a team vault: only to a pair its admins certified
        who, sign, kem = _s(link.field("member")), _k(link.field("sign")), _k(link.field("kem"))
        why = trust.successor(who, sign, kem)
        if why is not None:
            raise IntegrityError(f"membership link {link.seq} (succeed): {why}")
    new = _transition(state, link)
    if not new.leads():
        raise IntegrityError(f"membership link {link.seq} would leave the engagement without lead")
    return new._replace(seq=link.seq, head=chain_hash(blob), time=link.time)


def _check_place(state: State | None, link: Link, trust: Trust) -> None:
    if link.vault_id != trust.vault_id or link.engagement_uid != trust.engagement_uid:
        raise IntegrityError(f"membership link {link.seq} belongs to another vault or engagement")
    want_seq, want_prev = (0, ZERO_HASH) if state is None else (state.seq + 1, state.head)
    if link.seq != want_seq or link.prev != want_prev:
        raise IntegrityError(
            f"membership log broken at link {want_seq}: missing, reordered, replayed or forked"
        )
    if not _TIME.match(link.time) or (state is not None and link.time < state.time):
        raise IntegrityError(f"membership link {link.seq} has a bad or backward time")
    if (link.kind == CREATE) != (state is None):
        raise IntegrityError("membership log must start with exactly one creation link")


def _check_signer(state: State | None, link: Link, trust: Trust) -> None:
    """The signer must be entitled under the state *before* the link, with the pinned key."""
    who, key = link.signer, link.signer_key
    if state is None:  # create
        if key not in trust.admins.get(who, frozenset()):
            raise IntegrityError("engagement creation link not signed by an admin")
        return _check_not_removed(link, trust)
    if who == RECOVERY:
        if key != trust.recovery:
            raise IntegrityError(f"membership link {link.seq}: not the recovery key")
        return
    m = state.roster.get(who)
    on_roster = m is not None and m.sign == key
    if on_roster and m is not None and m.role == LEAD:
        return
    if on_roster and link.kind == SUCCEED and link.field("member") == who:
        return  # a member hands over to their own next key
    if link.kind == REVOKE and key in trust.removers.get(who, frozenset()):
        return _check_not_removed(link, trust)  # an admin removing a member (team vault)
    if link.kind == SET and key in trust.removers.get(who, frozenset()):
        # an admin changing the engagement's settings (a team vault; leads may too)
        return _check_not_removed(link, trust)
    if (
        link.kind == SUCCEED
        and link.field("compromised") == 1
        and key in trust.removers.get(who, frozenset())
    ):
        # an admin re-pinning a member to the keys they certified (a team vault's member
        # certify): only as compromised, so the old key gets no copy of the next version
        return _check_not_removed(link, trust)
    if not on_roster:
        raise IntegrityError(
            f"membership link {link.seq}: signer {who!r} is not on the roster with this key"
        )
    raise IntegrityError(f"membership link {link.seq}: {who!r} is not entitled to sign it")


def _check_not_removed(link: Link, trust: Trust) -> None:
    """A link accepted on an admin's key alone must not postdate that admin's removal."""
    why = trust.after_removal(link.signer, link.signer_key, link.hash())
    if why is not None:
        raise IntegrityError(f"membership link {link.seq} ({link.kind}): {why}")


def _transition(state: State | None, link: Link) -> State:
    f = dict(zip([n for n, _ in FIELDS[link.kind]], link.fields, strict=True))
    if state is None:
        name, client, lead = _s(f["name"]), _s(f["client"]), _s(f["lead"])
        for n in (name, lead):
            _check_name(n, link)
        return State(
            name=name,
            client=client,
            creator=link.signer,
            roster={lead: Member(LEAD, None, _k(f["sign"]), _k(f["kem"]))},
            key_version=0,
            fingerprints={},
            holders={},
            rotation_due=False,
            seq=0,
            head=ZERO_HASH,
            time=link.time,
        )
    roster = dict(state.roster)
    holders = dict(state.holders)
    due = state.rotation_due
    current = holders.get(state.key_version, frozenset())
    if link.kind == GRANT:
        member, role, expires = _s(f["member"]), _s(f["role"]), _s(f["expires"])
        _check_name(member, link)
        if role not in ROLES:
            raise IntegrityError(f"membership link {link.seq}: unknown role {role!r}")
        if expires and not _TIME.match(expires):
            raise IntegrityError(f"membership link {link.seq}: bad expiry")
        if role == LEAD and expires:
            raise IntegrityError(f"membership link {link.seq}: a lead grant cannot expire")
        roster[member] = Member(role, expires or None, _k(f["sign"]), _k(f["kem"]))
        if role in READING and state.key_version > 0 and (not expires or link.time < expires):
            holders[state.key_version] = current | {member}
        elif member in current:
            due = True  # lowered to a role that may not read, or granted already expired
    elif link.kind in (REVOKE, EXPIRE):
        member = _s(f["member"])
        old = roster.pop(member, None)
        if old is None:
            raise IntegrityError(f"membership link {link.seq}: {member!r} holds no grant")
        if link.kind == EXPIRE and (old.expires is None or link.time < old.expires):
            raise IntegrityError(f"membership link {link.seq}: {member!r} has not expired")
        if member in current:
            due = True
    elif link.kind == ROTATE:
        version, fp = _i(f["version"]), _s(f["fingerprint"])
        if version != state.key_version + 1 or not _FP.match(fp):
            raise IntegrityError(f"membership link {link.seq}: bad key version or fingerprint")
        if fp in state.fingerprints.values():
            raise IntegrityError(f"membership link {link.seq}: a rotation must change the key")
        fingerprints = dict(state.fingerprints)
        fingerprints[version] = fp
        holders[version] = frozenset(state.readers(link.time))
        return state._replace(
            roster=roster,
            key_version=version,
            fingerprints=fingerprints,
            holders=holders,
            rotation_due=False,
        )
    elif link.kind == SUCCEED:
        member = _s(f["member"])
        old = roster.get(member)
        if old is None:
            raise IntegrityError(f"membership link {link.seq}: {member!r} holds no grant")
        if _i(f["compromised"]) not in (0, 1):
            raise IntegrityError(f"membership link {link.seq}: bad compromised flag")
        roster[member] = old._replace(sign=_k(f["sign"]), kem=_k(f["kem"]))
        if _i(f["compromised"]) and member in current:
            due = True
    elif link.kind == SET:
        rr, grace = _i(f["require_reason"]), _i(f["grace_days"])
        if rr not in (0, 1) or not (grace == NO_GRACE or 0 <= grace <= 36500):
            raise IntegrityError(f"membership link {link.seq}: bad engagement settings")
        return state._replace(
            require_reason=bool(rr), grace_days=None if grace == NO_GRACE else grace
        )
    return state._replace(roster=roster, holders=holders, rotation_due=due)


def _check_name(name: str, link: Link) -> None:
    if not _NAME.match(name):
        raise IntegrityError(f"membership link {link.seq}: bad name {name!r}")


def _s(v: str | bytes | int) -> str:
    assert isinstance(v, str)  # the parser typed every field by FIELDS
    return v


def _k(v: str | bytes | int) -> bytes:
    assert isinstance(v, bytes)
    return v


def _i(v: str | bytes | int) -> int:
    assert isinstance(v, int)
    return v


# -- writing ----------------------------------------------------------------------------------
def sign_link(
    state: State | None,
    trust: Trust,
    kind: str,
    fields: tuple[str | bytes | int, ...],
    signer: str,
    signer_private: bytes,
    time: str,
) -> tuple[bytes, State]:
    """A new link after ``state``, signed, and the state it leads to.

    The link goes through :func:`apply` before it is returned: a change the rules refuse
    (the last lead revoked, a lead grant with an expiry, an unentitled signer) raises
    :class:`IntegrityError` here, inside the caller's transaction, and is never written.
    """
    link = Link(
        trust.vault_id,
        trust.engagement_uid,
        0 if state is None else state.seq + 1,
        ZERO_HASH if state is None else state.head,
        time if state is None or time >= state.time else state.time,
        kind,
        signer,
        p.ed25519_public(signer_private),
        fields,
        b"",
    )
    body = link.body()
    blob = body + p.sign(signer_private, labels.MEMBER_LOG, body)
    return blob, apply(state, blob, trust)


def position_of(blobs: Iterable[bytes]) -> Position:
    """The position of a log without verifying it (for a witness already checked)."""
    pos = Position(-1, ZERO_HASH)
    for blob in blobs:
        pos = Position(Link.from_bytes(blob).seq, chain_hash(blob))
    return pos


def check_witness(hashes: list[bytes], witnessed: Position) -> None:
    """The log (its link hashes, in order) must contain the witnessed position.

    Shorter is a rollback or truncation; a different hash at that position is a fork.
    """
    if witnessed.seq < 0:
        return
    if witnessed.seq >= len(hashes):
        raise IntegrityError(
            f"membership log ends at link {len(hashes) - 1}, but link {witnessed.seq} was seen "
            "before: the vault was rolled back or links were deleted"
        )
    if hashes[witnessed.seq] != witnessed.hash:
        raise IntegrityError(
            f"membership log differs at link {witnessed.seq} from the one seen before: forked"
        )
