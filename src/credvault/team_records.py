"""The record commands on a PostgreSQL team vault (issue 14): systems, and the key rotation
that re-seals every record of an engagement.

Split from :mod:`credvault.team` (imported from there only when one of these runs). The
shape is the same: validate here as :mod:`credvault.systems` does, check the member's role
against :mod:`credvault.access` here, make every envelope here through
:meth:`credvault.team.Team.seal` (the one place a team client seals), and let the server
decide again with its own grants and write the audit row under the SQLCipher vault's action
name. Every envelope comes back through a two-phase read: ``request_record`` commits the
audit row, ``fetch_record`` releases what it names (``upgrade-2.sql``, section pgcmds).
"""

from __future__ import annotations

import builtins
import os
from typing import TYPE_CHECKING, Protocol

from credvault import items, validate
from credvault.crypto import envelope
from credvault.crypto import primitives as p
from credvault.errors import AccessDenied, IntegrityError, NotFound
from credvault.postgres.client import copy_message, seal_info
from credvault.systems import System

if TYPE_CHECKING:
    from credvault.access import Role
    from credvault.postgres.store import PgStore, RecordRow


class Team(Protocol):
    """What these commands use of :class:`credvault.team.Team` (which imports this module
    when one of them runs: a Protocol rather than an import keeps the two acyclic)."""

    store: PgStore
    vault_id: bytes

    @property
    def member(self) -> str: ...

    def role(self, engagement: str) -> Role | None: ...

    def permits(self, operation: str, engagement: str) -> bool: ...

    def engagement_key(
        self, engagement: str, action: str, version: int | None = None
    ) -> tuple[bytes, bytes, int]: ...

    def place(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        binding: envelope.Binding = (),
        *,
        table: str = ...,
    ) -> envelope.Place: ...

    def seal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        value: bytes,
        key: bytes,
        version: int,
        *,
        table: str = ...,
        record: envelope.Binding = (),
    ) -> bytes: ...

    def unseal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        blob: bytes,
        key: bytes,
        *,
        table: str = ...,
        record: envelope.Binding = (),
    ) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...

    def forget_keys(self, engagement: str) -> None: ...


SYSTEMS = "systems"
# the envelope columns of each kind of record, the anchor first (items.ANCHOR)
FIELDS = {
    "credentials": ("secret", "username", "url", "notes"),
    "systems": ("address", "details"),
}
# the place (the envelope's table in its AAD) of each server table's rows: a removed system
# keeps the envelopes it had, sealed for its live place
PLACE = {"credentials": "credentials", "systems": SYSTEMS, "system_trash": SYSTEMS}


def _denied(t: Team, verb: str, eng: str) -> AccessDenied:
    """The refusal in SQLCipher's words: the role held, or none."""
    role = t.role(eng)
    return AccessDenied(t.member, verb, eng, f"role {role.value}" if role else "no grant")


def _key_for(t: Team, eng: str, verb: str, blob: bytes) -> tuple[bytes, bytes]:
    """(engagement uid, key) for the key version ``blob`` was sealed under."""
    version = envelope.key_version_of(blob)
    eng_uid, key, got = t.engagement_key(eng, verb, version)
    if got != version:
        from credvault.errors import Conflict

        raise Conflict("the engagement key was rotated meanwhile; run the command again")
    return eng_uid, key


class TeamSystems:
    """``Vault.systems`` on a team vault: add, list, show, remove."""

    def __init__(self, t: Team) -> None:
        self.t = t

    def add(
        self,
        ref: str,
        address: str,
        *,
        port: int | str | None = None,
        protocol: str | None = None,
        details: str | None = None,
    ) -> System:
        """Create a system, or change what is given (the address always; port, protocol and
        details only when given), as :meth:`credvault.systems.Systems.add`."""
        t = self.t
        eng, name = validate.ref(ref)
        addr = validate.address(address)
        port_n = None if port is None else validate.port(port)
        if protocol is not None:
            proto = validate.text(protocol, "protocol", max_len=32, multiline=False)
            protocol = None if proto is None else validate.name(proto, "protocol")
        details = validate.text(details, "details")
        given = {"address": addr, "port": port, "protocol": protocol, "details": details}
        changed = [k for k, v in given.items() if v is not None]  # the audit's "changed …"
        if not t.permits("system.add", eng):
            # the server refuses too, and puts the refusal on the record
            t.store.put_system(eng, name, None, None, None, None, None, None, True, [])
            raise _denied(t, "system add", eng)
        old = t.store.system(eng, name)
        uid = os.urandom(16) if old is None else old.uid
        if old is not None:
            port_n = old.port if port is None else port_n
            protocol = old.protocol if protocol is None else protocol
        eng_uid, key, version = t.engagement_key(eng, "system add")
        record = items.system_binding(name, port_n, protocol)
        address_env = t.seal(
            eng_uid, uid, "address", addr.encode(), key, version, table=SYSTEMS, record=record
        )
        details_env = (
            None
            if details is None
            else t.seal(eng_uid, uid, "details", details.encode(), key, version, table=SYSTEMS)
        )
        action = t.store.put_system(
            eng,
            name,
            uid,
            version,
            port_n,
            protocol,
            address_env,
            details_env,
            details is None,
            changed,
        )
        if action is None:
            raise _denied(t, "system add", eng)
        row = t.store.system(eng, name)
        created, updated = (row.created_at, row.updated_at) if row else ("", "")
        return System(eng, name, addr, port_n, protocol, details, created, updated)

    def list(self, engagement: str) -> builtins.list[System]:
        """Names, ports, protocols and dates (row-level security: engagements with a role)."""
        t = self.t
        validate.name(engagement, "engagement name")
        rows = t.store.systems(engagement)
        if not rows and t.store.engagement(engagement) is None:
            raise AccessDenied(t.member, "list systems", engagement, "no role on it")
        return [
            System(engagement, r.name, None, r.port, r.protocol, None, r.created_at, r.updated_at)
            for r in rows
        ]

    def show(self, ref: str, *, reason: str | None = None) -> System:
        """Address and details: on the record (system-show) before they leave the server."""
        t = self.t
        eng, name = validate.ref(ref)
        reason = validate.reason(reason)
        if not t.permits("system.show", eng):
            t.store.request_record("system", eng, name, reason or "")  # audited refusal
            raise _denied(t, "system show", eng)
        req = t.store.request_record("system", eng, name, reason or "")
        if req is None:
            if t.store.system(eng, name) is None:
                raise NotFound("system", ref)
            raise _refused(t, "system show", eng)
        rec = t.store.fetch_record(req, eng)
        if rec is None or rec.e1 is None or rec.uid is None or rec.name != name:
            raise NotFound("system", ref)
        address, details = _open_system(t, eng, "system show", rec)
        return System(
            eng, name, address, rec.port, rec.protocol, details, rec.created_at, rec.updated_at
        )

    def remove(self, ref: str) -> str:
        """To the trash (system-rm); returns when it leaves it. Linked credentials lose the
        link; a restore gives it back."""
        t = self.t
        eng, name = validate.ref(ref)
        allowed = t.permits("system.remove", eng)
        outcome, until = t.store.remove_system(eng, name)  # a refusal is audited there
        if not allowed or outcome == "denied":
            raise _denied(t, "system rm", eng)
        if outcome == "not found":
            raise NotFound("system", ref)
        return until


def _refused(t: Team, verb: str, eng: str) -> AccessDenied:
    if t.store.engagement(eng) is None:
        return AccessDenied(t.member, verb, eng, "no role on it")
    return AccessDenied(t.member, verb, eng, "refused by the server")


def _open_system(t: Team, eng: str, verb: str, rec: RecordRow) -> tuple[str, str | None]:
    """A fetched system's address (its anchor: bound to name, port and protocol when sealed
    bound) and details."""
    if rec.e1 is None or rec.uid is None or rec.name is None:
        raise IntegrityError(f"engagement {eng!r}: a system without its address")
    eng_uid, key = _key_for(t, eng, verb, rec.e1)
    record = items.system_binding(rec.name, rec.port, rec.protocol)
    address = t.unseal(eng_uid, rec.uid, "address", rec.e1, key, table=SYSTEMS, record=record)
    details = (
        None
        if rec.e2 is None
        else t.unseal(eng_uid, rec.uid, "details", rec.e2, key, table=SYSTEMS)
    )
    return address.decode(), None if details is None else details.decode()


def linked_address(t: Team, ref: str, reason: str | None) -> dict[str, str | None]:
    """``get --field address|port``: the linked system's address and port, audited as
    ``show`` (the secret is not released), through request_record/fetch_record."""
    eng, name = validate.ref(ref)
    reason = validate.reason(reason)
    req = t.store.request_record("credential-system", eng, name, reason or "")
    if req is None:
        if t.store.engagement(eng) is None:
            raise AccessDenied(t.member, "show", eng, "no role on it")
        if t.store.credential_meta(eng, name) is None:
            raise NotFound("credential", ref)
        raise AccessDenied(t.member, "show", eng, "refused by the server")
    rec = t.store.fetch_record(req, eng)
    if rec is None:
        raise NotFound("credential", ref)
    if rec.e1 is None:
        return {"address": None, "port": None}
    address, _ = _open_system(t, eng, "show", rec)
    return {"address": address, "port": None if rec.port is None else str(rec.port)}


def rotate(t: Team, name: str) -> int:
    """A new engagement key made here: every record (credentials, systems, removed systems)
    read through one audited rotation request, sealed again under it (a record-bound anchor
    stays bound), a copy sealed to each member still holding a reading role, and all stored
    in one server transaction."""
    eng_uid, old_key, old_version = t.engagement_key(name, "rotate")
    req = t.store.request_rotation(name)
    if req is None:
        raise AccessDenied(t.member, "rotate", name, "refused by the server")
    rows = t.store.rotation_fetch_records(req, name)
    grantees = t.store.rotation_grantees(name)
    new_key = p.random_key()
    version = old_version + 1
    resealed: builtins.list[
        tuple[str, int, tuple[bytes, bytes | None, bytes | None, bytes | None]]
    ] = []
    for r in rows:
        table = PLACE.get(r.table)
        if table is None:
            raise IntegrityError(f"engagement {name!r}: a record of an unknown kind")
        record = (
            items.credential_binding(r.name, r.kind, r.system_uid)
            if table == "credentials"
            else items.system_binding(r.name, r.port, r.protocol)
        )
        out: builtins.list[bytes | None] = []
        for i, blob in enumerate(r.envelopes):
            if blob is None:
                out.append(None)
                continue
            if i >= len(FIELDS[table]):
                raise IntegrityError(f"engagement {name!r}: an envelope where none belongs")
            if envelope.key_version_of(blob) != old_version:
                raise IntegrityError(f"engagement {name!r}: a record under an unknown key version")
            field = FIELDS[table][i]
            rec = record if i == 0 else ()
            value = t.unseal(eng_uid, r.uid, field, blob, old_key, table=table, record=rec)
            if envelope.is_bound(blob):  # bound stays bound
                out.append(
                    envelope.seal(
                        t.place(eng_uid, r.uid, field, rec, table=table), value, new_key, version
                    )
                )
            else:
                out.append(
                    t.seal(eng_uid, r.uid, field, value, new_key, version, table=table, record=rec)
                )
            del value
        anchor = out[0]
        if anchor is None:
            raise IntegrityError(f"engagement {name!r}: a record without its anchor")
        resealed.append((r.table, r.id, (anchor, out[1], out[2], out[3])))
    copies = []
    for member, _role in grantees:
        _, kem_pub = t.store.member_keys(member)
        copy = p.hpke_seal(kem_pub, new_key, seal_info(t.vault_id, eng_uid, member, version))
        sig = t.sign(copy_message(t.vault_id, eng_uid, member, version, copy, new_key, t.member))
        copies.append((member, copy, sig))
    stored = t.store.rotate_records(name, old_version, p.fingerprint(new_key), resealed, copies)
    t.forget_keys(name)
    return stored


__all__ = ["TeamSystems", "linked_address", "rotate"]
