"""``info``, ``receipt-keys`` and ``passwd --compromised`` on a PostgreSQL team vault
(issue 14; docs/team.md, "`info`, `receipt-keys` and `passwd --compromised`").

``info`` answers in :class:`credvault.results.VaultInfo`'s shape, line for line as on
SQLCipher; where a line has no meaning on a team vault it says so in words, as ``status``
does for the keyring and the agent: a team vault has no database key, so no key
generation, and the server keeps its whole audit trail, so no audit retention.

A team vault has no vault-wide receipt key: each member signs the receipts of their own
purges and shreds with their own Ed25519 key. So its receipt key history is **one chain
per member**, in SQLCipher's format (docs/format.md §11.2): key 0 is the key the member's
certificate chain certifies (what ``info --public-key`` printed before any change), and
each later key is introduced by a ``credvault-receipt-key/1`` link signed by the key
before it, made by ``passwd --compromised`` on the member's machine
(``credvault.member_key_links``). A client holding the key it was given follows the links
with openssl alone (docs/verify-receipt-key.sh).

``passwd --compromised`` builds the part that is safe without anyone else (docs/team.md
says what an attacker holding the old key can still do, and what is not built): new keys
made here, the hand-over link signed by the old key, a new login derived from the new key,
and in one server transaction this member's sealed copies dropped and their engagements
flagged for rotation. From then on every client treats the old key as **retired**
(:func:`retire`): it seals nothing to it and certifies nothing by it, whatever the member's
rows say; the new keys are not believed for sealing either until an admin certifies them.

Loaded when used: ``credvault get`` never imports it.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault.retention import SETTINGS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from credvault import memberlog as ml
    from credvault.members import PasswdResult
    from credvault.postgres.store import PgStore
    from credvault.receipt_keys import ReceiptKeys
    from credvault.results import VaultInfo
    from credvault.secret import Secret
    from credvault.team_handle import CertifyingTeam, TeamHandle
    from credvault.team_log import Certs, Revocation

UNUSED = "not used by a team vault"
# settings a team vault keeps in credvault.meta (the others: UNUSED)
TEAM_SETTINGS = {"purge_grace_days", "backup_retention_days", "trash_days"}


def info(store: PgStore, path: str, vault_id: bytes, public_key: str) -> VaultInfo:
    """``credvault info`` on a team vault (:meth:`credvault.Team.info`): ``path`` is the
    connection string you named, ``format`` the team schema version, ``public_key`` your
    own signing key (what signs your receipts, as ``info --public-key``), ``members`` the
    active ones."""
    from credvault.postgres.keys_store import vault_info
    from credvault.results import VaultInfo

    facts = vault_info(store)
    settings: dict[str, int | str] = {
        name: int(facts[key]) if key in TEAM_SETTINGS else UNUSED
        for name, (key, _) in SETTINGS.items()
    }
    created = facts.get("created_at")
    return VaultInfo(
        path=path,
        vault_id=vault_id.hex(),
        format=int(facts["schema"]),
        public_key=public_key,
        created_at=str(created) if created is not None else None,
        members=int(facts["members"]),
        key_generation=UNUSED,
        settings=settings,
    )


def set_setting(t: TeamHandle, name: str, value: str) -> None:
    """``config set`` on a team vault (admins): SQLCipher's names and checks
    (:func:`credvault.retention.parse`); a setting the team vault does not use is refused
    in one line (exit 2), as an unknown one is."""
    from credvault.errors import AccessDenied, InvalidInput
    from credvault.postgres.keys_store import set_setting as store_set
    from credvault.retention import parse

    key, n = parse(name, value)
    if key not in TEAM_SETTINGS:
        raise InvalidInput(f"{name} is {UNUSED}")
    if key == "purge_grace_days":  # purge dates moved: this machine's ledger records them
        from credvault.postgres.lifecycle_store import set_purge_grace
        from credvault.team_ledger import keep_closes

        moved = set_purge_grace(t.store, n)
        if moved is None:
            raise AccessDenied(t.member, "change settings", None, "admin only")
        keep_closes(t, moved)
        return
    if not store_set(t.store, key, name, n):
        raise AccessDenied(t.member, "change settings", None, "admin only")


def history(vault_id: bytes, first: bytes, links: list[str]) -> ReceiptKeys:
    """A member's key history from their certified key ``first``: every stored link must
    follow from the key before it (IntegrityError, exit 6, if one does not)."""
    import json

    from credvault.errors import IntegrityError
    from credvault.receipt_keys import ReceiptKeys

    try:
        parsed = [json.loads(x) for x in links]
    except ValueError:
        raise IntegrityError("receipt key history: a stored link is not JSON") from None
    return ReceiptKeys(vault_id.hex(), first, parsed)


def signer_history(store: PgStore, vault_id: bytes, signer: str | None, key: bytes) -> ReceiptKeys:
    """What a stored receipt is checked against (``credvault receipt NAME``): the signer's
    history from ``key``, their certified key (each link checked, exit 6 if one does not
    follow), so a receipt signed by a key they handed over must predate the hand-over."""
    from credvault.postgres.keys_store import key_links

    return history(vault_id, key, key_links(store).get(signer or "", []))


def receipt_keys(t: TeamHandle, certs: Certs, sign_pub: bytes) -> ReceiptKeys:
    """``receipt-keys`` on a team vault: the history of the key that signs *your*
    receipts, from the key your certificate chain certifies to ``sign_pub``, the one you
    hold. A history that stops short of your key (a link deleted) or does not follow (a
    link forged) is IntegrityError (exit 6)."""
    from credvault.errors import IntegrityError
    from credvault.postgres.keys_store import key_links

    got = history(t.vault_id, certs.sealer(t.member), key_links(t.store).get(t.member, []))
    if got.current.public_key != sign_pub:
        raise IntegrityError(
            "receipt key history: it does not end at the key you hold (a link is missing)"
        )
    return got


def retire(certs: Certs, links: dict[str, list[str]]) -> None:
    """The hook every client applies to the certificates it reads (:meth:`Team.certs`): a
    member with a key link newer than the last admin's certificate of their keys
    (:meth:`Certs.history`, :func:`certify`) has said their certified key is compromised,
    so it is not *current*: :meth:`Certs.keys` answers NotFound for them (no grant, no copy
    sealed at a rotation, ``_current`` false), while the certificate still verifies what
    the old key signed before (copies it sealed, links 0). Decided on the link's presence,
    not its signature: a link the DBA forges can only take a member's access away, which
    the DBA can do anyway; never give a compromised key one more copy. Once certified, the
    old pair is on the admin-signed revocation list (format.md §19.7), which does not
    depend on the link being there."""
    for member, handed in links.items():
        row = certs.rows.get(member)
        certified = max((r.seq for r in certs.rekeys.get(member, ())), default=0)
        if row is not None and row.state == "active" and len(handed) > certified:
            certs.rows[member] = row._replace(state="retired")


def compromised(
    t: TeamHandle, new_passphrase: Secret, led: Sequence[tuple[str, bytes, int, bytes]] = ()
) -> PasswdResult:
    """``passwd --compromised`` on a team vault (:mod:`credvault.team_passwd` for the
    crash-safe slot swap). New keys made here; the old signing key signs the hand-over
    link; the server takes link, new login verifier, drops this member's copies and flags
    their engagements, in one transaction; then the new slot (and the log witness, MACed
    with a key derived from the signing key) replace the old ones. ``led``: (engagement,
    uid, version, key) of each engagement this member leads (:meth:`Team.led_keys`): the
    same transaction keeps their copy of its current key, sealed here to the new X25519
    key (signed with the new key), so that once ``member certify`` pins the new keys in
    its log they can rotate it — even as its only lead. Only the new key opens it, and
    their client uses it only once the log pins the new keys: a thief who runs this first
    gains nothing the old key did not open already."""
    from datetime import UTC, datetime

    from credvault.crypto import primitives as p
    from credvault.errors import InvalidInput
    from credvault.files import write_new_private
    from credvault.layout import team_slot_path
    from credvault.members import PasswdResult
    from credvault.model import iso
    from credvault.postgres.keys_store import key_links, replace_keys
    from credvault.postgres.server import scram_verifier
    from credvault.postgres.slot import TeamSlot, new_slot
    from credvault.receipt_keys import link_text, make_link
    from credvault.team_log import LogWitness
    from credvault.team_passwd import finish_pending, pending_path

    if not new_passphrase.reveal():
        raise InvalidInput("the passphrase is empty")
    path = team_slot_path(t.store.database(), t.member)
    old = TeamSlot.read(path)
    slot, keys = new_slot(old.vault_id, old.database, t.member, new_passphrase, old.kdf)
    slot = slot._replace(anchor=old.anchor, salted_login=True)
    seq = len(key_links(t.store).get(t.member, [])) + 1  # the server checks it too
    link = make_link(
        t.vault_id.hex(), seq, t.keys.sign_private, slot.sign_pub, iso(datetime.now(UTC))
    )
    # the witness of verified logs, MACed again under the new signing key, beside the old
    # one; finish_pending moves it with the slot (here, or at the next open after a crash)
    wpath = LogWitness.path_for(old.database, t.member)
    wnew = pending_path(wpath)
    wnew.unlink(missing_ok=True)
    states = LogWitness(wpath, t.vault_id, t.member, t.keys.sign_private).states
    witness = LogWitness(wnew, t.vault_id, t.member, keys.sign_private)
    for uid, state in states.items():
        witness.keep(uid, state)
    # the hand-overs seen, this one included (it is this member's own history)
    hpath = SeenHandOvers.path_for(old.database, t.member)
    links = key_links(t.store)
    SeenHandOvers(hpath, t.vault_id, t.member, t.keys.sign_private).check(links)
    pending_path(hpath).unlink(missing_ok=True)
    links[t.member] = [*links.get(t.member, []), link_text(link)]
    SeenHandOvers(pending_path(hpath), t.vault_id, t.member, keys.sign_private).keep(links)
    pending = pending_path(path)
    pending.unlink(missing_ok=True)
    write_new_private(pending, slot.to_bytes())
    from credvault.crypto import labels
    from credvault.postgres.client import copy_message, seal_info

    new_kem = p.x25519_public(keys.kem_private)
    kept = []
    for eng, uid, version, key in led:
        copy = p.hpke_seal(new_kem, key, seal_info(t.vault_id, uid, t.member, version))
        signed = copy_message(t.vault_id, uid, t.member, version, copy, key, t.member)
        kept.append((eng, version, copy, p.sign(keys.sign_private, labels.GRANT_SIG, signed)))
    flagged = replace_keys(
        t.store,
        link_text(link),
        slot.sign_pub,
        new_kem,
        scram_verifier(slot.login_password(keys)),
        kept,
    )
    finish_pending(path)  # the witness too
    return PasswdResult(True, [], flagged, 0)


class KeysCertified(NamedTuple):
    """What ``member certify`` did: ``member``'s new keys (signing-key ``fingerprint``, the
    one compared out of band) certified, their old keys named in the revocation list's
    version ``list_version``, and ``engagements``: those whose membership log now pins the
    new keys (a ``succeed`` link this admin signed; the member keeps their role there)."""

    member: str
    fingerprint: str
    list_version: int
    engagements: tuple[str, ...] = ()


def certify(t: CertifyingTeam, name: str, fingerprint: str) -> KeysCertified:
    """``member certify`` (an admin, docs/team.md): certify the keys ``name``'s latest
    ``passwd --compromised`` made, after the admin compared their signing key's
    ``fingerprint`` with ``name`` out of band — the hand-over link alone never suffices,
    whoever holds the old key can sign one. Signed here, chained to the pair certified
    before (format.md §19.8); the same server transaction appends the revocation list's
    next version (§19.7) naming every pair certified for ``name`` before, signed here too,
    so no client seals to the old key again even if the DBA deletes the hand-over link,
    and a ``succeed`` link (compromised) in every membership log whose roster names
    ``name``, re-pinning them to the new pair (:func:`_successions`): they keep their
    role, a sole lead leads again, and the next rotation seals the old key nothing.
    A fingerprint that does not match is InvalidInput (exit 2), nothing signed; a log
    that does not verify gets no link, the rest is done, then IntegrityError names it."""
    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.errors import AccessDenied, IntegrityError, NotFound
    from credvault.postgres.keys_store import certify_keys, key_handover
    from credvault.team_log import fingerprint as fp_of
    from credvault.team_log import rekey_message, revocation_hash

    want = parse_fingerprint(fingerprint)
    if name == t.member:
        raise AccessDenied(
            t.member, "certify keys", None, "not your own: another admin certifies them"
        )
    t.require_certified("certify keys")
    certs = t.certs()
    row = certs.rows.get(name)
    if row is None or row.state not in ("active", "retired"):
        raise NotFound("member", name)
    handover = key_handover(t.store, name)
    done = max((r.seq for r in certs.rekeys.get(name, ())), default=0)
    if handover is None or handover[0] <= done:
        raise NotFound(
            "certify keys", "", f"{name} has no new keys to certify (run after their passwd "
            "--compromised)"
        )  # fmt: skip
    seq, sign_pub, kem_pub = handover
    if fp_of(sign_pub) != want:
        raise _mismatch(name)
    history = certs.history(name)  # every pair certified before: IntegrityError if forged
    prev = history[-1]
    logs = t.store.engagement_logs()
    statement = _retirement(t, certs, name, [links for _, _, links in logs])
    message = rekey_message(
        t.vault_id, name, seq, (prev.sign, prev.kem), (sign_pub, kem_pub), t.member, t.sign_pub
    )
    sig = p.sign(t.keys.sign_private, labels.TEAM_REKEY_CERT, message)
    signed, broken = _successions(t, name, (sign_pub, kem_pub), logs)
    blob = statement.to_bytes()
    version = certify_keys(
        t.store, name, handover, t.sign_pub, sig, blob, [(e, link) for e, link, _, _ in signed]
    )
    t.witness.keep_revocations(version, revocation_hash(blob))
    for _, _, uid, state in signed:
        t.witness.keep(uid, state)
    if broken:
        raise IntegrityError(
            f"certified {name}'s new keys, but these membership logs do not verify and "
            f"were signed nothing (a lead grants {name} again there): {'; '.join(broken)}"
        )
    return KeysCertified(name, want, version, tuple(e for e, _, _, _ in signed))


def _successions(
    t: CertifyingTeam,
    name: str,
    pair: tuple[bytes, bytes],
    logs: list[tuple[bytes, str, list[bytes]]],
) -> tuple[list[tuple[str, bytes, bytes, ml.State]], list[str]]:
    """A ``succeed`` link (``name`` → ``pair``, compromised = 1) signed by this admin in
    every log whose roster names ``name`` with other keys (format.md §17, §19.8), each log
    replayed here first: which engagements name them is the signed history's to say. The
    link is checked as every client will, against the certificate being made (not yet on
    the server). Returns (engagement, link, uid, state after it) for each, and the logs
    that do not verify."""
    from credvault import memberlog as ml
    from credvault.errors import IntegrityError
    from credvault.model import iso

    def certified(member: str, sign: bytes, kem: bytes) -> str | None:
        ok = (member, sign, kem) == (name, *pair)
        return None if ok else "not the keys being certified"

    now = iso(datetime.now(UTC))
    signed: list[tuple[str, bytes, bytes, ml.State]] = []
    broken: list[str] = []
    for uid, eng, links in logs:
        try:
            state = t.replay_all(uid, eng, links)
            m = state.roster.get(name)
            if m is None or (m.sign, m.kem) == pair:
                continue
            trust = t.trust(uid)._replace(successor=certified)
            link, new = ml.sign_link(
                state, trust, ml.SUCCEED, (name, *pair, 1), t.member, t.keys.sign_private, now
            )
        except IntegrityError as e:
            broken.append(f"{eng} ({e})")
            continue
        signed.append((eng, link, uid, new))
    return signed, broken


def _retirement(
    t: CertifyingTeam, certs: Certs, name: str, logs: list[list[bytes]] | None = None
) -> Revocation:
    """The revocation list's next version (format.md §19.7), signed here: every pair
    certified for ``name`` so far is retired (``ipk`` empty: they stay a member), and if
    ``name`` is an admin, what those keys certified is endorsed again. A signing key this
    version revokes first has the links 0, ``revoke`` and ``set`` it signed named
    (:func:`credvault.team_log.links_signed_by`, every log the server shows: one more round
    trip, only then): an admin's links from before the hand-over stay valid, a later one
    by the old key does not, and the server refuses a version that leaves one out (a log
    moved meanwhile: Conflict, read again). What the new pair signs is not on the list:
    it counts through the certificate (:meth:`credvault.team_log.Certs.after_removal`)."""
    from datetime import UTC, datetime

    from credvault.crypto import primitives as p
    from credvault.model import iso
    from credvault.team_log import Revocation, links_signed_by

    pairs = {(k.sign, k.kem) for k in certs.history(name)}
    before = certs.revoked
    row = certs.rows[name]
    endorsed = certs.endorsements(name, {s for s, _ in pairs}) if row.admin else []
    first = {s for s, _ in pairs if p.digest(s) not in before.sign}
    if logs is None or not first:
        logs = [links for _, _, links in t.store.engagement_logs()] if first else []
    return Revocation(
        t.vault_id, before.version + 1, before.head, iso(datetime.now(UTC)), t.member,
        t.sign_pub, name, b"", tuple(sorted((p.digest(s), p.digest(k)) for s, k in pairs)),
        tuple(endorsed), b"", links_signed_by(logs, first),
    ).signed(t.keys.sign_private)  # fmt: skip


def publish_retirements(t: CertifyingTeam, certs: Certs, links: dict[str, list[str]]) -> None:
    """An admin's client that sees a hand-over not certified yet (:func:`retire` made the
    member ``retired``) signs the revocation list's next version naming the pair certified
    for them, unless the list names it already (``retire_keys``, section pgcert): from then
    on the retirement no longer rests on the link, which the DBA can delete, but on an
    admin's signature, for every lead whose client has not seen the link. Only a link
    chain that verifies from the member's certified key counts (whoever signed it holds
    that key: compromised either way); one the DBA forged is left as it was (it only
    denies service). Done quietly: another admin publishing first (Conflict) or a refusal
    leaves the command going on, as before this."""
    from credvault.errors import AccessDenied, AlreadyExists, Conflict, IntegrityError
    from credvault.postgres.keys_store import retire_keys
    from credvault.team_log import revocation_hash

    retired = sorted(m for m, r in certs.rows.items() if r.state == "retired" and m != t.member)
    me = certs.rows.get(t.member)
    if not retired or me is None or not me.admin or me.state != "active":
        return
    try:
        if certs.current(t.member).sign != t.sign_pub:
            return  # this admin's own keys wait for a certificate: they sign nothing
    except IntegrityError:
        return
    for name in retired:
        try:
            pairs = certs.history(name)
            history(t.vault_id, pairs[0].sign, links.get(name, []))  # each link checked
        except IntegrityError:
            continue  # a forged certificate (exit 6 where the keys are needed) or link
        if all(certs.listed(s, k) for s, k in ((c.sign, c.kem) for c in pairs)):
            continue
        statement = _retirement(t, certs, name)
        blob = statement.to_bytes()
        try:
            version = retire_keys(t.store, name, blob)
        except (Conflict, AlreadyExists, AccessDenied):
            return  # the list moved, or the server refused: the next command tries again
        assert version == statement.version
        t.witness.keep_revocations(version, revocation_hash(blob))
        certs.extend_revoked(statement, blob)


def parse_fingerprint(text: str) -> str:
    """A signing-key fingerprint as typed (spaces and colons allowed): 32 hex digits."""
    from credvault.errors import InvalidInput

    fp = "".join(c for c in text.strip().lower() if c not in " :")
    if len(fp) != 32 or any(c not in "0123456789abcdef" for c in fp):
        raise InvalidInput(
            "a fingerprint is 32 hexadecimal digits (what the member's passwd --compromised "
            "printed)"
        )
    return fp


def _mismatch(name: str) -> Exception:
    """The fingerprint the admin compared is not that of the keys the server shows: a typo,
    or someone else's keys (whoever stole the old key can run ``passwd --compromised``
    first). InvalidInput (exit 2); nothing signed."""
    from credvault.errors import InvalidInput

    return InvalidInput(
        f"the fingerprint does not match {name}'s new signing key: nothing certified; compare "
        f"it with {name} again (if {name} did not make these keys, `member rm {name}` and "
        "invite them again)"
    )


class SeenHandOvers:
    """The key hand-overs this member's client has seen, kept MACed beside their log
    witness (``<member>.handovers``; the witness's key, its own MAC input): a hand-over
    link that later vanishes from the server, or changes, is tampering (IntegrityError,
    exit 6), so a DBA who deletes one cannot make a retired key current again for any
    client that saw it retired. A client's first look trusts what the server shows, as a
    new log witness does."""

    FORMAT = "credvault-team-handovers"

    def __init__(self, path: Path, vault_id: bytes, member: str, sign_private: bytes) -> None:
        from credvault.crypto import labels
        from credvault.crypto import primitives as p

        self.path = path
        self.vault_id = vault_id
        self.member = member
        self._key = p.hkdf(sign_private, labels.MEMBER_STATE_MAC)
        self.seen: dict[str, list[str]] = {}
        self._load()

    @staticmethod
    def path_for(database: str, member: str) -> Path:
        from credvault.team_log import LogWitness

        return LogWitness.path_for(database, member).with_suffix(".handovers")

    def _input(self, body: bytes) -> bytes:
        from credvault.crypto import labels

        return labels.encode("handovers", self.vault_id, self.member, body)

    def _load(self) -> None:
        import json

        from credvault.crypto import primitives as p
        from credvault.errors import IntegrityError
        from credvault.jcs import canonical

        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(data)
            if doc.get("format") != self.FORMAT or doc.get("vault_id") != self.vault_id.hex():
                raise ValueError
            seen = doc["seen"]
            tag = bytes.fromhex(doc["mac"])
            if not isinstance(seen, dict) or not all(
                isinstance(v, list) and all(isinstance(h, str) for h in v) for v in seen.values()
            ):
                raise ValueError
        except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
            raise IntegrityError(f"team key hand-over witness {self.path} is corrupt") from None
        p.mac_verify(self._key, self._input(canonical(seen)), tag, "team key hand-over witness")
        self.seen = seen

    def check(self, links: dict[str, list[str]]) -> None:
        """Every hand-over seen before is still there, unchanged (a history only grows)."""
        from credvault.errors import IntegrityError

        now = _hashes(links)
        for member, hashes in self.seen.items():
            if now.get(member, [])[: len(hashes)] != hashes:
                raise IntegrityError(
                    f"the key hand-over of member {member!r} (passwd --compromised) that "
                    "this member saw is gone or altered on the server"
                )

    def keep(self, links: dict[str, list[str]]) -> None:
        import json

        from credvault.crypto import primitives as p
        from credvault.files import atomic_write, make_private_dir
        from credvault.jcs import canonical

        now = _hashes(links)
        if now == self.seen:
            return
        self.seen = now
        doc = {
            "format": self.FORMAT,
            "vault_id": self.vault_id.hex(),
            "seen": now,
            "mac": p.mac(self._key, self._input(canonical(now))).hex(),
        }
        with contextlib.suppress(FileExistsError):
            make_private_dir(self.path.parent)
        atomic_write(self.path, json.dumps(doc, sort_keys=True).encode(), durable=False)


def _hashes(links: dict[str, list[str]]) -> dict[str, list[str]]:
    import hashlib

    return {m: [hashlib.sha256(x.encode()).hexdigest() for x in ls] for m, ls in links.items()}
