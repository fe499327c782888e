"""A PostgreSQL team vault behind the same commands as a SQLCipher vault (issue 14).

:class:`Team` offers the part of :class:`credvault.Vault`'s API that the daily commands use
(``credentials.put/get/fields/list``, ``engagements.create/grant/revoke``,
``members.list/invite/remove``, ``audit.verify/checkpoint/entries``), returning the same
result types, so the CLI's handlers run unchanged on either backend. The cryptography is the
SQLCipher vault's, made and checked on this machine: envelopes (:mod:`credvault.crypto.envelope`
with the record's place as associated data), engagement keys sealed with HPKE to members'
X25519 keys, and the same signed statements (:mod:`credvault.postgres.client`). Access
control and the audit trail are the server's: every read is a committed audit row first
(``request_read``), then the envelope (``fetch``); :class:`~credvault.postgres.store.PgStore`
holds every statement. Systems, history, edit/mv/find, the trash and the rotation of every
record live in :mod:`credvault.team_records` (imported when used). Not covered (one line,
exit 1, :class:`NotOnTeam`): lifecycle, backups, the agent and keyring.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault import validate
from credvault.access import Role, parse_role
from credvault.credentials import (
    Credential,
    CredentialInfo,
    FindHits,
    TrashInfo,
    VersionInfo,
)
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import KdfParams, check
from credvault.errors import (
    AccessDenied,
    AuditChainBroken,
    Conflict,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from credvault.keyslots import MemberKeys
from credvault.layout import team_slot_path
from credvault.model import GrantInfo, iso
from credvault.postgres.client import copy_message, creation_message, role_message, seal_info
from credvault.postgres.server import scram_verifier
from credvault.postgres.slot import TeamSlot, login_password, new_slot
from credvault.postgres.store import Fetched, PgStore, database_of
from credvault.secret import Secret

if TYPE_CHECKING:  # imported where used: `credvault get` on a team vault needs neither
    from credvault.audit import AuditEntry, Checkpoint
    from credvault.members import MemberInfo
    from credvault.team_records import TeamPurger, TeamSystems

TABLE = "credentials"
READING = (Role.LEAD, Role.ENGINEER, Role.READER)


class NotOnTeam(CredvaultError):
    """A command that a PostgreSQL team vault does not offer yet (exit 1, one line)."""

    def __init__(self, command: str) -> None:
        super().__init__(
            f"`credvault {command}` is not available on a PostgreSQL team vault yet "
            "(docs/team.md lists what is)"
        )


class TeamInit(NamedTuple):
    database: str
    vault_id: str
    admin: str
    slot: str


class TeamEngagement(NamedTuple):
    name: str
    client: str
    lead: str


class Invitation(NamedTuple):
    """A one-time code for ``credvault join``: shown once, handed over out of band."""

    member: str
    code: Secret


class Joined(NamedTuple):
    member: str
    slot: str
    fingerprint: str  # of the member's signing key: the admin compares it (member ls --json)


def _fp(sign_pub: bytes) -> str:
    return p.digest(sign_pub).hex()[:32]


def _connect_as(target: str, member: str, password: str) -> PgStore:
    db = database_of(target)
    return PgStore.connect(target, member, user=f"{db}_{member}", password=password)


class Team:
    """One member's open team vault. Use as a context manager."""

    def __init__(self, store: PgStore, keys: MemberKeys, vault_id: bytes, target: str) -> None:
        self.store = store
        self.keys = keys
        self.vault_id = vault_id
        self.path = target
        self.credentials = TeamCredentials(self)
        self.engagements = TeamEngagements(self)
        self.members = TeamMembers(self)
        self.audit = TeamAudit(self)
        self._engagement_keys: dict[tuple[str, int], tuple[bytes, bytes]] = {}

    def __repr__(self) -> str:
        return f"Team(member={self.keys.name!r})"

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def member(self) -> str:
        return self.keys.name

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, target: str, member: str, passphrase: Secret) -> Team:
        """Unlock the member's own key slot and log in with the password derived from it."""
        slot = TeamSlot.read(team_slot_path(database_of(target), member))
        keys = slot.unlock(passphrase)
        store = _connect_as(target, member, login_password(keys, slot.vault_id))
        try:
            vault_id, name = store.opening()
            if vault_id != slot.vault_id:
                raise IntegrityError("the team key slot belongs to another vault")
            if name != member:
                raise AccessDenied(member, "use the team vault", None, "not this member's login")
        except BaseException:
            store.close()
            raise
        return cls(store, keys, vault_id, target)

    @classmethod
    def init(cls, target: str, admin: str, passphrase: Secret, kdf: KdfParams) -> TeamInit:
        """As the database's owner (libpq's own login: ~/.pgpass, a service file): apply the
        schema, make the first admin, and join as them from this machine."""
        from credvault.postgres.server import apply_schema, installed_version

        check(kdf, from_disk=False)
        if not passphrase:
            raise InvalidInput("the passphrase is empty")
        owner = PgStore.connect(target, "owner", check=False)
        try:
            if installed_version(owner.conn) is not None:
                from credvault.errors import AlreadyExists

                raise AlreadyExists("this database already holds a credvault team vault")
            apply_schema(owner.conn)
            vault_id = owner.vault_id()
            db = owner.database()
            path = team_slot_path(db, admin)
            slot, keys = new_slot(vault_id, db, admin, passphrase, kdf)
            slot.write_new(path)
            owner.create_member_role(admin, scram_verifier(login_password(keys, vault_id)), True)
        finally:
            owner.close()
        with _connect_as(target, admin, login_password(keys, vault_id)) as store:
            store.join(slot.sign_pub, slot.kem_pub, scram_verifier(login_password(keys, vault_id)))
        return TeamInit(db, vault_id.hex(), admin, str(path))

    @staticmethod
    def keys_from_vault(path: Path, member: str, passphrase: Secret) -> MemberKeys:
        """A member's keys from their slot of a SQLCipher vault (for ``join --from-vault``
        after ``credvault migrate``): passphrase, certificate and the file's MAC checked."""
        from credvault.keyslots import KeySlots, decrypt_private
        from credvault.layout import SLOTS_NAME

        slots = KeySlots.read(Path(path) / SLOTS_NAME)
        if member not in slots.members:
            raise NotFound("member", member)
        keys = decrypt_private(slots.vault_id, slots.members[member], passphrase)
        slots.verify_mac(slots.open_db_key(keys))
        return keys

    @classmethod
    def join(
        cls,
        target: str,
        member: str,
        invitation: Secret,
        passphrase: Secret,
        kdf: KdfParams,
        *,
        keys: MemberKeys | None = None,
    ) -> Joined:
        """On the new member's own machine: make their keys here, keep the private halves in
        their key slot, publish the public halves, and replace the invitation's password
        with the one derived from the new signing key. Nothing secret leaves this machine."""
        check(kdf, from_disk=False)
        if not passphrase:
            raise InvalidInput("the passphrase is empty")
        db = database_of(target)
        path = team_slot_path(db, member)
        if path.exists():
            from credvault.errors import AlreadyExists

            raise AlreadyExists(f"a team key slot exists already at {path}; not overwritten")
        with PgStore.connect(
            target, member, user=f"{db}_{member}", password=invitation.reveal().decode()
        ) as store:
            vault_id = store.vault_id()
            slot, keys = new_slot(vault_id, db, member, passphrase, kdf, keys=keys)
            slot.write_new(path)
            try:
                store.join(
                    slot.sign_pub, slot.kem_pub, scram_verifier(login_password(keys, vault_id))
                )
            except BaseException:
                path.unlink()  # the keys were never published: a rerun starts clean
                raise
        return Joined(member, str(path), _fp(slot.sign_pub))

    # -- helpers for the sub-objects ------------------------------------------------------
    def engagement_key(
        self, engagement: str, action: str, version: int | None = None
    ) -> tuple[bytes, bytes, int]:
        """(engagement uid, key, version) from the member's own sealed copy: opened with
        their private key, its signature checked against the sealer's published key, and
        the key's fingerprint against the engagement's. With ``version`` (what a fetched
        record says), a key of that version opened earlier in this session is reused
        without asking the server again (the server checked the role at the fetch)."""
        if version is not None:
            hit = self._engagement_keys.get((engagement, version))
            if hit is not None:
                return hit[0], hit[1], version
        eng, g, sealer_pub = self.store.key_copy(engagement)
        if eng is None:
            raise AccessDenied(self.member, action, engagement, "no role on it")
        cached = self._engagement_keys.get((engagement, eng.key_version))
        if cached is not None:
            return cached[0], cached[1], eng.key_version
        if g is None or g.sealed is None or g.key_version is None or g.sealed_by is None:
            raise AccessDenied(self.member, action, engagement, "no key copy")
        if sealer_pub is None:
            raise IntegrityError(f"engagement {engagement!r}: the key copy's sealer is unknown")
        key = p.hpke_open(
            self.keys.kem_private,
            g.sealed,
            seal_info(self.vault_id, eng.uid, self.member, g.key_version),
        )
        p.verify(
            sealer_pub,
            labels.GRANT_SIG,
            copy_message(
                self.vault_id, eng.uid, self.member, g.key_version, g.sealed, key, g.sealed_by
            ),
            g.copy_sig or b"",
            "engagement key copy",
        )
        if g.key_version == eng.key_version and p.fingerprint(key) != eng.key_fp:
            raise IntegrityError(f"engagement {engagement!r}: key does not match its fingerprint")
        self._engagement_keys[(engagement, g.key_version)] = (eng.uid, key)
        return eng.uid, key, g.key_version

    def forget_keys(self, engagement: str) -> None:
        for k in [k for k in self._engagement_keys if k[0] == engagement]:
            del self._engagement_keys[k]

    def place(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        binding: envelope.Binding = (),
        *,
        table: str = TABLE,
    ) -> envelope.Place:
        return envelope.Place(self.vault_id, eng_uid, table, uid, field, binding)

    def seal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        value: bytes,
        key: bytes,
        version: int,
        *,
        table: str = TABLE,
        record: envelope.Binding = (),
    ) -> bytes:
        """The one place a team client makes an envelope (credentials, systems, and what
        is sealed again at a rotation). ``record``: the record's binding, for its anchor
        field (a credential's ``secret``, a system's ``address``; empty for the others).
        Team writes are sealed to their place (format 0x01) until they switch to
        record-bound anchors (0x02, as SQLCipher writes): that switch is made here."""
        del record  # place-bound today; see the docstring
        return envelope.seal(self.place(eng_uid, uid, field, table=table), value, key, version)

    def unseal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        blob: bytes,
        key: bytes,
        *,
        table: str = TABLE,
        record: envelope.Binding = (),
    ) -> bytes:
        """Open an envelope of a record: a record-bound one (0x02) with ``record`` (the
        clear columns as the server shows them: changed ones fail, exit 6), a place-bound
        one with its place alone."""
        if envelope.is_bound(blob) and not record:
            raise IntegrityError("a record-bound envelope without its record")
        bound = record if envelope.is_bound(blob) else ()
        return envelope.open_(self.place(eng_uid, uid, field, bound, table=table), blob, key)

    def role(self, engagement: str) -> Role | None:
        """The member's live role on ``engagement`` as the server's grants say (None:
        none, or the engagement is hidden)."""
        g = self.store.my_grant(engagement)
        return None if g is None else Role(g.role)

    def permits(self, operation: str, engagement: str) -> bool:
        """The client's own check of :mod:`credvault.access`'s table (the server checks
        again with its grants; admins get no write or read without a grant there)."""
        from credvault.access import permits

        return permits(operation, self.role(engagement), admin=False)

    @property
    def purger(self) -> TeamPurger:
        from credvault.team_records import TeamPurger

        return TeamPurger(self)

    @property
    def systems(self) -> TeamSystems:
        from credvault.team_records import TeamSystems

        return TeamSystems(self)

    def binding(
        self, eng: str, uid: bytes, field: str, blob: bytes, known: tuple[str, str, bytes] | None
    ) -> envelope.Binding:
        """The record binding a migrated anchor was sealed with (a SQLCipher vault binds
        each credential's ``secret`` to its name, kind and system link, docs/format.md §4);
        empty for an envelope sealed to its place only (everything a team client writes).
        ``known``: the record's clear columns, looked up here if not given."""
        if field != "secret" or not envelope.is_bound(blob):
            return ()
        if known is None:
            known = self.store.bindings(eng, uid).get(uid)
        if known is None:
            raise IntegrityError(f"engagement {eng!r}: a record-bound envelope without its record")
        return ("credential", *known)

    def sign(self, message: bytes) -> bytes:
        return p.sign(self.keys.sign_private, labels.GRANT_SIG, message)


class TeamCredentials:
    def __init__(self, t: Team) -> None:
        self.t = t

    def put(
        self,
        ref: str,
        secret: bytes | str | Secret,
        *,
        username: str | None = None,
        system: str | None = None,
        kind: str | None = None,
        url: str | None = None,
        notes: str | None = None,
    ) -> CredentialInfo:
        """Seal here, store there (leads and engineers; the server decides and audits)."""
        t = self.t
        eng, name = validate.ref(ref)
        if system is not None:
            system = validate.name(system, "system name")
        raw = (
            secret.reveal()
            if isinstance(secret, Secret)
            else (secret.encode() if isinstance(secret, str) else bytes(secret))
        )
        if not raw:
            raise InvalidInput("the secret is empty")
        existing = t.store.credential_meta(eng, name)
        kind_given = kind is not None
        kind = kind or (existing[0] if existing else "password")
        eng_uid, key, version = t.engagement_key(eng, "put")
        uid = os.urandom(16)

        def seal(field: str, value: bytes | None) -> bytes | None:
            if value is None:
                return None
            return t.seal(eng_uid, uid, field, value, key, version)

        envs = (
            t.seal(eng_uid, uid, "secret", raw, key, version),
            seal("username", None if username is None else username.encode()),
            seal("url", None if url is None else url.encode()),
            seal("notes", None if notes is None else notes.encode()),
        )
        del raw
        # what a replace changed, for the history (as SQLCipher names it)
        given = {"username": username, "url": url, "notes": notes, "system": system}
        changed = ", ".join(
            ["secret", *(f for f, v in given.items() if v is not None)]
            + (["kind"] if kind_given else [])
        )
        if not t.store.put_credential_linked(eng, name, kind, uid, version, envs, system, changed):
            raise AccessDenied(t.member, "put", eng, "refused by the server")
        meta = t.store.credential_meta(eng, name)
        created, updated = (meta[1], meta[2]) if meta else ("", "")
        return CredentialInfo(eng, name, kind, system, created, updated)

    def _read(
        self, ref: str, reason: str | None
    ) -> tuple[str, str, dict[str, bytes | None], Fetched]:
        t = self.t
        eng, name = validate.ref(ref)
        req = t.store.request_read(eng, name, reason or "")
        if req is None:
            # refused, and audited by the server; say why in the SQLCipher terms
            if t.store.engagement(eng) is None:
                raise AccessDenied(t.member, "read", eng, "no role on it")
            if t.store.credential_meta(eng, name) is None:
                raise NotFound("credential", ref)
            raise AccessDenied(t.member, "read", eng, "refused by the server")
        f = t.store.fetch(req, eng)
        eng_uid, key, version = t.engagement_key(eng, "read", f.key_version)
        if version != f.key_version:  # rotated between the fetch and the key look-up
            raise Conflict("the engagement key was rotated meanwhile; run the command again")
        values: dict[str, bytes | None] = {}
        for field, blob in (
            ("secret", f.secret_env),
            ("username", f.username_env),
            ("url", f.url_env),
            ("notes", f.notes_env),
        ):
            if blob is None:
                values[field] = None
                continue
            bound = t.binding(eng, f.uid, field, blob, None)
            if bound and (bound[1], bound[2]) != (name, f.kind):
                raise IntegrityError(f"{ref}: the record's clear columns do not match")
            values[field] = envelope.open_(t.place(eng_uid, f.uid, field, bound), blob, key)
        return eng, name, values, f

    def get(self, ref: str, *, reason: str | None = None, version: int | None = None) -> Credential:
        """An audited read: the server commits the audit row, then releases the envelopes.
        ``version``: an earlier one (:func:`credvault.team_records.get_version`)."""
        if version is not None:
            from credvault.team_records import get_version

            got = get_version(self.t, ref, reason, version)
            if got is not None:
                return got
        eng, name, v, f = self._read(ref, reason)

        def text(b: bytes | None) -> str | None:
            return None if b is None else b.decode()

        return Credential(
            eng,
            name,
            f.kind,
            Secret(v["secret"] or b""),
            text(v["username"]),
            None,
            None,
            None,
            text(v["url"]),
            text(v["notes"]),
            f.created_at,
            f.updated_at,
        )

    def fields(
        self,
        ref: str,
        *,
        reason: str | None = None,
        system: bool = False,
        version: int | None = None,
    ) -> dict[str, str | None]:
        """username, url, notes, kind and system, audited as ``show``: the server releases
        them without the secret (request kind ``fields``), as SQLCipher reads them.
        With ``system``: the linked system's address and port instead (``get --field
        address|port``), audited as ``show`` as on SQLCipher: the secret is not released.
        ``version``: that earlier version's, audited as ``show`` (its secret not released)."""
        if system:
            from credvault.team_records import linked_address

            return linked_address(self.t, ref, reason)
        if version is not None:
            from credvault.team_records import version_fields

            return version_fields(self.t, ref, reason, version)
        from credvault.team_records import current_fields

        return current_fields(self.t, ref, reason)

    def edit(self, ref: str, changes: Mapping[str, str | None]) -> CredentialInfo:
        """Fields other than the secret, sealed here; kind and link in the clear."""
        from credvault.team_records import edit

        return edit(self.t, ref, changes)

    def move(self, ref: str, target: str) -> CredentialInfo:
        """A rename within the engagement; into another one: not on a team vault yet."""
        from credvault.team_records import move

        eng, _ = validate.ref(ref)
        if "/" in target and validate.ref(target)[0] != eng:
            raise NotOnTeam("mv to another engagement")
        return move(self.t, ref, target)

    def find(self, text: str, *, fields: bool = True, reason: str | None = None) -> FindHits:
        """Names where the member holds a role; fields where they may read (audited)."""
        from credvault.team_records import find

        return find(self.t, text, fields=fields, reason=reason)

    def remove(self, ref: str) -> str:
        """To the engagement's trash; returns when it leaves it."""
        from credvault.team_records import remove

        return remove(self.t, ref)

    def trash(self, engagement: str) -> builtins.list[TrashInfo]:
        from credvault.team_records import trash

        return trash(self.t, engagement)

    def restore(self, ref: str) -> None:
        """The latest removal of that name back from the trash."""
        from credvault.team_records import restore

        restore(self.t, ref)

    def history(self, ref: str) -> builtins.list[VersionInfo]:
        """Every version, oldest first: who, when, what changed (never a value)."""
        from credvault.team_records import history

        return history(self.t, ref)

    def revert(self, ref: str, version: int) -> CredentialInfo:
        """An earlier version current again, as a new version (done by the server)."""
        from credvault.team_records import revert

        return revert(self.t, ref, version)

    def list(self, engagement: str | None = None) -> builtins.list[CredentialInfo]:
        t = self.t
        if engagement is not None:
            validate.name(engagement, "engagement name")
            if t.store.engagement(engagement) is None:
                raise AccessDenied(t.member, "list", engagement, "no role on it")
        return [
            CredentialInfo(e, n, k, sy, c, u)
            for e, n, k, c, u, sy in t.store.credentials(engagement)
        ]


class TeamEngagements:
    def __init__(self, t: Team) -> None:
        self.t = t

    def create(
        self,
        name: str,
        client: str,
        lead: str | None = None,
        *,
        require_reason: bool = False,
        grace_days: int | None = None,
    ) -> TeamEngagement:
        """An admin creates the engagement: key made here, sealed to the lead, signed."""
        t = self.t
        validate.name(name, "engagement name")
        validate.name(client, "client name")
        lead = validate.name(lead or t.member, "member name")
        if require_reason or grace_days is not None:
            raise NotOnTeam("engagement new --require-reason/--grace-days")
        key = p.random_key()
        uid = os.urandom(16)
        sig = t.sign(creation_message(t.vault_id, uid, name, client, lead, t.member))
        t.store.create_engagement(uid, name, client, p.fingerprint(key), sig, lead)
        self._put(name, uid, lead, Role.LEAD, None, key, 1)
        return TeamEngagement(name, client, lead)

    def _put(
        self,
        eng: str,
        eng_uid: bytes,
        member: str,
        role: Role,
        expires: str | None,
        key: bytes,
        version: int,
    ) -> None:
        t = self.t
        role_sig = t.sign(role_message(t.vault_id, eng_uid, member, role.value, expires, t.member))
        sealed = sig = None
        if role in READING:
            _, kem_pub = t.store.member_keys(member)
            sealed = p.hpke_seal(kem_pub, key, seal_info(t.vault_id, eng_uid, member, version))
            sig = t.sign(copy_message(t.vault_id, eng_uid, member, version, sealed, key, t.member))
        ok = t.store.put_grant(
            eng, member, role.value, role_sig, version if sealed else None, sealed, sig, expires
        )
        if not ok:
            raise AccessDenied(t.member, "grant", eng, "refused by the server")

    def grant(self, name: str, member: str, role: str, until: str | None = None) -> GrantInfo:
        """A lead (or admin) grants a role; reading roles get a key copy sealed here."""
        t = self.t
        r = parse_role(role)
        validate.name(member, "member name")
        expires = None
        if until is not None:
            if r is Role.LEAD:
                raise InvalidInput("a lead grant cannot expire: grant engineer or reader --until")
            dt = validate.when(until, "expiry")
            if dt <= datetime.now(UTC):
                raise InvalidInput("the expiry is in the past")
            expires = iso(dt)
        if member == t.member:
            raise AccessDenied(t.member, "grant", name, "members cannot grant themselves")
        eng = t.store.engagement(name)
        if eng is not None and eng.needs_rotation:  # a revocation's rotation was cut short
            self.rotate(name)
        eng_uid, key, version = t.engagement_key(name, "grant")
        t.store.member_keys(member)  # NotFound before anything is sealed
        self._put(name, eng_uid, member, r, expires, key, version)
        return GrantInfo(member, r.value, t.member, iso(datetime.now(UTC)), expires, r in READING)

    def revoke(self, name: str, member: str) -> builtins.list[str]:
        """Revoked at once on the server (copy dropped, reads refused from this moment);
        returns the credentials the member read, from the server's audit rows."""
        t = self.t
        validate.name(name, "engagement name")
        validate.name(member, "member name")
        if member == t.member:
            raise AccessDenied(t.member, "revoke", name, "leads cannot revoke themselves")
        read = t.store.revoke_grant(name, member)
        if read is None:
            raise AccessDenied(t.member, "revoke", name, "refused by the server")
        self.rotate(name)
        return read

    def rotate(self, name: str) -> int:
        """A new engagement key made here: every envelope re-sealed under it, a copy sealed
        to each member still holding a reading role; stored in one server transaction.
        Retried from a fresh read when a write lands in between (Conflict)."""
        for attempt in range(3):
            try:
                return self._rotate(name)
            except Conflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _rotate(self, name: str) -> int:
        from credvault.team_records import rotate

        return rotate(self.t, name)


class TeamMembers:
    def __init__(self, t: Team) -> None:
        self.t = t

    def list(self) -> builtins.list[MemberInfo]:
        from credvault.members import MemberInfo

        return [
            MemberInfo(m.name, m.admin, False, m.created_at)
            for m in self.t.store.members()
            if m.state == "active"
        ]

    def fingerprints(self) -> dict[str, str]:
        """Signing-key fingerprints as published at join, for comparing out of band."""
        return {m.name: _fp(m.sign_pub) for m in self.t.store.members() if m.sign_pub}

    def invite(self, name: str, *, admin: bool = False) -> Invitation:
        """An admin invites: a one-time code whose SCRAM verifier goes to the server."""
        import secrets

        code = Secret(secrets.token_urlsafe(18).encode())
        self.t.store.add_member(name, scram_verifier(code.reveal().decode()), admin)
        return Invitation(name, code)

    def remove(self, name: str) -> int:
        """Immediate: login disabled, sessions ended, grants and copies dropped."""
        return self.t.store.remove_member(name)


class TeamAudit:
    def __init__(self, t: Team) -> None:
        self.t = t

    def verify(self, checkpoint: str | None = None) -> int:
        """The server-side chain, and (given one) the entry at an off-server checkpoint."""
        from credvault.audit import Checkpoint

        t = self.t
        cp = Checkpoint.parse(checkpoint) if checkpoint else None
        bad = t.store.audit_verify()
        if bad is not None:
            raise AuditChainBroken(bad, "hash does not follow")
        n, _ = t.store.audit_head()
        if cp is not None:
            if cp.position > n:
                raise AuditChainBroken(n, "the trail is shorter than the checkpoint")
            at = t.store.audit_hash_at(cp.position)
            if at is None or at.hex() != cp.mac:
                raise AuditChainBroken(cp.position, "does not match the checkpoint")
        return n

    def checkpoint(self) -> Checkpoint:
        from credvault.audit import Checkpoint

        n, h = self.t.store.audit_head()
        return Checkpoint(n, h.hex())

    def entries(
        self,
        *,
        engagement: str | None = None,
        member: str | None = None,
        action: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[AuditEntry]:
        if engagement is None or since is not None:
            raise NotOnTeam("audit without --engagement, or with --since")
        from credvault.audit import AuditEntry

        rows = [
            AuditEntry(seq, ts, m, a, engagement, item or None, outcome, detail)
            for seq, ts, m, a, item, outcome, detail in self.t.store.audit_rows(engagement)
            if (member is None or m == member) and (action is None or a == action)
        ]
        return rows[-limit:] if limit else rows
