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

import base64
import builtins
import functools
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from credvault import items, validate
from credvault.crypto import envelope
from credvault.errors import (
    AccessDenied,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    NotFound,
    RetentionError,
)
from credvault.model import (
    Credential,
    CredentialInfo,
    FindHits,
    TrashInfo,
    VersionInfo,
)
from credvault.systems import System

if TYPE_CHECKING:
    from credvault.access import Role
    from credvault.importers import ImportPlan, RawEntry, Skipped
    from credvault.postgres.store import MoveRow, PgStore, Rebound, RecordRow, RotationRow


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
        self, engagement: str, action: str, version: int | None = None, *, write: bool = False
    ) -> tuple[bytes, bytes, int]: ...

    def before_write(self, engagement: str) -> bool: ...

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
        engagement: str | None = None,
    ) -> bytes: ...

    def logged(self, engagement: str) -> bool: ...

    def sign(self, message: bytes) -> bytes: ...

    def forget_keys(self, engagement: str) -> None: ...


SYSTEMS = "systems"
# the envelope columns of each kind of record, the anchor first (items.ANCHOR)
CRED_FIELDS = ("secret", "username", "url", "notes")
FIELDS = {
    "credentials": CRED_FIELDS,
    "systems": ("address", "details"),
}
# the place (the envelope's table in its AAD) of each server table's rows:
# a removed system, and a credential's earlier version, keep the envelopes they had, sealed
# for their live place
PLACE = {
    "credentials": "credentials",
    "credential_versions": "credentials",
    "credential_trash": "credentials",
    "systems": SYSTEMS,
    "system_trash": SYSTEMS,
}


def _denied(t: Team, verb: str, eng: str) -> CredvaultError:
    return refusal(t, verb, eng)


def refusal(t: Team, verb: str, eng: str, why: str | None = None) -> CredvaultError:
    """What a write the server refused says, in SQLCipher's words (the one place every team
    write maps a refusal): a member who may write, on an engagement that is not active,
    was refused for its state (the server audited it as 'error', "engagement is closed"):
    :func:`_inactive`, exit 1; anyone else was denied (audited 'denied'): the role held,
    or none (or ``why``), exit 4. Asked only after a refusal: no round trip on success."""
    from credvault.access import permits

    role = t.role(eng)
    if permits("credential.put", role, admin=False):
        row = t.store.engagement(eng)
        if row is not None and row.state != "active":
            return _inactive(eng, row.state)
    return AccessDenied(t.member, verb, eng, why or (f"role {role.value}" if role else "no grant"))


def _key_for(t: Team, eng: str, verb: str, blob: bytes) -> tuple[bytes, bytes]:
    """(engagement uid, key) for the key version ``blob`` was sealed under."""
    version = envelope.key_version_of(blob)
    eng_uid, key, got = t.engagement_key(eng, verb, version)
    if got != version:
        from credvault.errors import Conflict

        raise Conflict("the engagement key was rotated meanwhile; run the command again")
    return eng_uid, key


class TeamSystems:
    """``Vault.systems`` on a team vault: add, set, list, show, remove."""

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
        eng_uid, key, version = t.engagement_key(eng, "system add", write=True)
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

    def set(self, ref: str, changes: Mapping[str, object]) -> System:
        """Change a system field by field (``system set``), as
        :meth:`credvault.systems.Systems.set`: address, port, protocol, details (None clears
        all but the address); what is not named keeps its value, on the server. The address
        is the anchor, bound to name, port and protocol: a new port or protocol without a
        new address seals the stored one again, read first through ``request_record``
        (kind ``system``, so on the record as ``system-show`` "reason: system set" before
        it leaves the server). ``set_system`` writes it and audits ``system-set`` as
        SQLCipher does. The System returned carries the address and details only where
        this call knew them (None: kept as they were)."""
        from credvault.systems import clean_changes

        t = self.t
        eng, name = validate.ref(ref)
        clean = clean_changes(changes)  # SQLCipher's order, which its audit detail follows
        changed = list(clean)
        old = t.store.system(eng, name) if t.permits("system.set", eng) else None
        if old is None:  # refused or missing: the server audits which, as SQLCipher would
            got = t.store.set_system(eng, name, None, None, None, None, None, None, True, changed)
            if got == "not found":
                raise NotFound("system", ref)
            raise _denied(t, "system set", eng)
        port_n = clean.get("port", old.port)
        protocol = clean.get("protocol", old.protocol)
        active = t.before_write(eng)  # closed: nothing read here, the server refuses
        eng_uid, key, version = t.engagement_key(eng, "system set")
        addr: str | None = None
        if "address" in clean:
            addr = str(clean["address"])
        elif active and (port_n, protocol) != (old.port, old.protocol):
            _, rec = t.store.record("system", eng, name, "system set")
            if rec is None or rec.uid != old.uid:
                raise _refused(t, "system set", eng)
            addr, _ = _open_system(t, eng, "system set", rec)
        address_env = None
        if addr is not None:
            record = items.system_binding(name, port_n, protocol)
            address_env = t.seal(
                eng_uid, old.uid, "address", addr.encode(), key, version, table=SYSTEMS,
                record=record,
            )  # fmt: skip
        details = clean.get("details")
        details_env = (
            None
            if details is None
            else t.seal(eng_uid, old.uid, "details", str(details).encode(), key, version,
                        table=SYSTEMS)
        )  # fmt: skip
        got = t.store.set_system(
            eng, name, old.uid, version, port_n, protocol,  # type: ignore[arg-type]
            address_env, details_env, "details" not in clean, changed,
        )  # fmt: skip
        if got == "not found":
            raise NotFound("system", ref)
        if got != "ok":
            raise _denied(t, "system set", eng)
        row = t.store.system(eng, name)
        created, updated = (row.created_at, row.updated_at) if row else ("", "")
        return System(
            eng, name, addr, port_n, protocol,  # type: ignore[arg-type]
            None if details is None else str(details), created, updated,
        )  # fmt: skip

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
        req, rec = t.store.record("system", eng, name, reason or "")
        if req is None:
            if t.store.system(eng, name) is None:
                raise NotFound("system", ref)
            raise _refused(t, "system show", eng)
        if rec is None or rec.e1 is None or rec.uid is None or rec.name != name:
            raise NotFound("system", ref)
        address, details = _open_system(t, eng, "system show", rec)
        return System(
            eng, name, address, rec.port, rec.protocol, details, rec.created_at, rec.updated_at
        )

    def restore(self, ref: str) -> None:
        """The latest removal of that name back, with the links it had (system-restore)."""
        restore(self.t, ref, system=True)

    def remove(self, ref: str) -> str:
        """To the trash (system-rm); returns when it leaves it. Linked credentials lose the
        link; a restore gives it back."""
        t = self.t
        eng, name = validate.ref(ref)
        allowed = t.permits("system.remove", eng)
        rebound: dict[bytes, Rebound] = {}
        # a lead rotates first where the log says it is due; closed: the server refuses
        if allowed and t.before_write(eng):
            # linked credentials lose the link: their secrets sealed again without it
            for _, cred, _, _, _, linked in t.store.credentials(eng):
                if linked == name:
                    got = _rebound(t, eng, cred, "edit", system_uid=(None,))
                    if got is not None:
                        rebound[got[0]] = got[1]
        outcome, until = t.store.remove_system(eng, name, rebound)  # a refusal is audited there
        if not allowed or outcome == "denied":
            raise _denied(t, "system rm", eng)
        if outcome == "not found":
            raise NotFound("system", ref)
        return until


def _inactive(eng: str, state: str) -> RetentionError:
    """A closed (or otherwise inactive) engagement takes no changes: SQLCipher's words
    (:func:`credvault.retention.require_active`)."""
    return RetentionError(f"engagement {eng!r} is {state}: it takes no changes")


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
    address = t.unseal(
        eng_uid, rec.uid, "address", rec.e1, key, table=SYSTEMS, record=record, engagement=eng
    )
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
    req, rec = t.store.record("credential-system", eng, name, reason or "")
    if req is None:
        if t.store.engagement(eng) is None:
            raise AccessDenied(t.member, "show", eng, "no role on it")
        if t.store.credential_meta(eng, name) is None:
            raise NotFound("credential", ref)
        raise AccessDenied(t.member, "show", eng, "refused by the server")
    if rec is None:
        raise NotFound("credential", ref)
    if rec.e1 is None:
        return {"address": None, "port": None}
    address, _ = _open_system(t, eng, "show", rec)
    return {"address": address, "port": None if rec.port is None else str(rec.port)}


def reseal(
    t: Team,
    name: str,
    eng_uid: bytes,
    rows: builtins.list[RotationRow],
    old_key: bytes | None,
    old_version: int,
    new_key: bytes,
    *,
    logged: bool,
) -> builtins.list[tuple[str, int, tuple[bytes, bytes | None, bytes | None, bytes | None]]]:
    """A rotation's records (credentials, systems, removed ones, earlier versions: what
    ``rotation_fetch_records`` released), each opened under the old key and sealed under
    the new through :meth:`credvault.team.Team.seal`, its anchor bound to the record's clear
    columns as the server shows them now (a tampered row fails to open: exit 6). An unbound
    anchor is refused where the engagement has a membership log (``logged``); elsewhere it
    leaves bound. The caller (:meth:`credvault.team.TeamEngagements._rotate`) signs the log's
    links and stores everything in one server transaction (``rotate_records``)."""
    version = old_version + 1
    resealed: builtins.list[
        tuple[str, int, tuple[bytes, bytes | None, bytes | None, bytes | None]]
    ] = []
    for r in rows:
        table = PLACE.get(r.table)
        if table is None:
            raise IntegrityError(f"engagement {name!r}: a record of an unknown kind")
        if old_key is None:
            raise IntegrityError(f"engagement {name!r}: a record under an unknown key version")
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
            if i == 0 and logged and not envelope.is_bound(blob):
                raise IntegrityError(f"engagement {name!r}: a record sealed without its binding")
            value = t.unseal(
                eng_uid, r.uid, field, blob, old_key, table=table, record=rec, engagement=name
            )
            out.append(
                t.seal(eng_uid, r.uid, field, value, new_key, version, table=table, record=rec)
            )
            del value
        anchor = out[0]
        if anchor is None:
            raise IntegrityError(f"engagement {name!r}: a record without its anchor")
        resealed.append((r.table, r.id, (anchor, out[1], out[2], out[3])))
    return resealed


def export_records(t: Team, eng: str, reason: str) -> dict[str, builtins.list[dict[str, object]]]:
    """A client export's systems, earlier versions and trash of ``eng``, as SQLCipher's
    export gives them (:meth:`credvault.clients.Clients.export`: ``systems``,
    ``earlier_versions``, ``trash``; same keys, order and dates). Released in two phases
    (``request_export_records`` commits an audit row per record, ``fetch_export_records``
    releases what they name) and opened here, each anchor checked against its record's
    clear columns as the rest of the team client does (a tampered row: exit 6)."""
    from credvault.postgres import lifecycle_store as ls

    got = t.store.asked_again(
        lambda: ls.request_export_records(t.store, eng, reason),
        lambda r: ls.fetch_export_records(t.store, r, eng),
    )
    if got is None:
        raise _refused(t, "export", eng)
    out: dict[str, builtins.list[dict[str, object]]] = {
        "systems": [],
        "earlier_versions": [],
        "trash": [],
    }
    for r in got[1]:
        table = PLACE.get(r.table)
        if table is None:  # pragma: no cover - the server names its own tables
            raise IntegrityError(f"engagement {eng!r}: a record of an unknown kind")
        record = (
            items.credential_binding(r.name, r.kind or "", r.system_uid)
            if table == "credentials"
            else items.system_binding(r.name, r.port, r.protocol)
        )
        raw: builtins.list[bytes | None] = []
        for i, (field, blob) in enumerate(zip(FIELDS[table], r.envelopes, strict=False)):
            if blob is None:
                raw.append(None)
                continue
            eng_uid, key = _key_for(t, eng, "export", blob)
            raw.append(t.unseal(
                eng_uid, r.uid, field, blob, key, table=table,
                record=record if i == 0 else (), engagement=eng,
            ))  # fmt: skip
        secret = raw[0]
        if secret is None:
            raise IntegrityError(f"engagement {eng!r}: {r.label} without its anchor")
        values = [None if v is None else v.decode() for v in raw[1:]]
        if r.table == "systems":
            sys_ = System(eng, r.name, secret.decode(), r.port, r.protocol, values[0],
                          r.created_at or "", r.updated_at or "")  # fmt: skip
            out["systems"].append(sys_.to_json())
            continue
        meta: dict[str, object]
        if r.table == "credential_versions":
            meta = {"name": r.label, "version": r.version, "kind": r.kind, "system": r.system,
                    "created_at": r.created_at, "created_by": r.created_by,
                    "changed": r.changed}  # fmt: skip
        else:
            meta = {"type": "system" if r.table == "system_trash" else "credential",
                    "name": r.label, "deleted_at": r.deleted_at, "deleted_by": r.deleted_by,
                    "expires_at": r.expires_at}  # fmt: skip
        if table == SYSTEMS:
            out["trash"].append({**meta, "address": secret.decode(), "details": values[0]})
            continue
        try:  # as SQLCipher's export: a binary secret as base64, never mangled
            meta["secret"] = secret.decode("utf-8")
        except UnicodeDecodeError:
            meta["secret_base64"] = base64.b64encode(secret).decode()
        del secret, raw
        meta.update(username=values[0], url=values[1], notes=values[2])
        out["earlier_versions" if r.table == "credential_versions" else "trash"].append(meta)
    return out


# -- history and revert ----------------------------------------------------------------------
def _positive(version: int) -> None:
    if version < 1:
        raise InvalidInput("version must be a positive number")


def _version_refused(t: Team, ref: str, eng: str, name: str, version: int, reason: str) -> None:
    """Why request_record refused a version (the server audited it): SQLCipher's terms."""
    e = t.store.engagement(eng)
    if e is None:
        raise AccessDenied(t.member, "read", eng, "no role on it")
    if e.require_reason and not reason:
        raise AccessDenied(t.member, "read", eng, "this engagement requires --reason")
    if t.store.current_version(eng, name) is None:
        raise NotFound("credential", ref)
    raise NotFound("version", ref, f"{ref} has no version {version}")


def _said(t: Team, eng: str, why: str, via: str | None) -> str:
    """What the audit detail's reason says, as SQLCipher writes it: the command reading on
    the member's behalf (``via``: ``run psql``, ``ssh web1``), then the member's own reason.
    The command is no reason: without one of the member's own, an engagement that
    requires one gets none (the server refuses and audits it, "requires --reason")."""
    if not via:
        return why
    if not why:
        e = t.store.engagement(eng)
        if e is not None and e.require_reason:
            return ""
    return (f"{via}: {why}" if why else via)[:200]  # validate.reason's limit


def _fetch_version(
    t: Team, ref: str, kind: str, reason: str | None, version: int, via: str | None = None
) -> tuple[str, str, RecordRow, builtins.list[bytes | None]]:
    """A version's values, through request_record/fetch_record (``kind`` 'version': the
    secret too; 'version-show': without it), opened at its own place and binding.
    ``via``: the command reading on the member's behalf, named in the audit detail."""
    eng, name = validate.ref(ref)
    why = validate.reason(reason) or ""
    req, rec = t.store.record(kind, eng, name, _said(t, eng, why, via), version)
    if req is None:
        _version_refused(t, ref, eng, name, version, why)
    if rec is None or rec.uid is None or rec.name is None or rec.kind is None:
        raise NotFound("version", ref, f"{ref} has no version {version}")
    blobs = (rec.e1, rec.e2, rec.e3, rec.e4)
    first = next((b for b in blobs if b is not None), None)
    if first is None:
        return eng, name, rec, [None, None, None, None]
    eng_uid, key = _key_for(t, eng, "read", first)
    record = items.credential_binding(rec.name, rec.kind, rec.system_uid)
    values: builtins.list[bytes | None] = []
    for i, (field, blob) in enumerate(zip(CRED_FIELDS, blobs, strict=True)):
        if blob is None:
            values.append(None)
            continue
        if envelope.key_version_of(blob) != envelope.key_version_of(first):
            raise IntegrityError(f"{ref}: version {version} under two key versions")
        rec_b = record if i == 0 else ()
        values.append(t.unseal(eng_uid, rec.uid, field, blob, key, record=rec_b, engagement=eng))
    return eng, name, rec, values


def current_fields(t: Team, ref: str, reason: str | None) -> dict[str, str | None]:
    """``get --field username|url|notes`` and ``edit`` in ``$EDITOR``: the fields without
    the secret, audited as ``show`` (request kind 'fields'; the secret never leaves)."""
    eng, name = validate.ref(ref)
    why = validate.reason(reason) or ""
    req, rec = t.store.record("fields", eng, name, why)
    if req is None:
        e = t.store.engagement(eng)
        if e is None:
            raise AccessDenied(t.member, "show", eng, "no role on it")
        if e.require_reason and not why:
            raise AccessDenied(t.member, "show", eng, "this engagement requires --reason")
        raise NotFound("credential", ref)
    if rec is None or rec.uid is None:
        raise NotFound("credential", ref)
    out: dict[str, str | None] = {"kind": rec.kind, "system": rec.system}
    for f, blob in zip(CRED_FIELDS[1:], (rec.e2, rec.e3, rec.e4), strict=True):
        if blob is None:
            out[f] = None
            continue
        eng_uid, key = _key_for(t, eng, "show", blob)
        out[f] = t.unseal(eng_uid, rec.uid, f, blob, key).decode()
    return {k: out[k] for k in ("username", "url", "notes", "kind", "system")}


def get_version(
    t: Team, ref: str, reason: str | None, version: int, via: str | None = None
) -> Credential | None:
    """``get --version N``: that version, audited as ``get`` ("version N"); None for the
    current version (the caller reads it as any get, as SQLCipher does). ``via``: a command
    reading on the member's behalf (``run``, ``ssh``), named ahead of the reason."""
    from credvault.secret import Secret

    _positive(version)
    eng, name = validate.ref(ref)
    if t.store.current_version(eng, name) == version:
        return None
    eng, name, rec, v = _fetch_version(t, ref, "version", reason, version, via)
    if v[0] is None:
        raise IntegrityError(f"{ref}: version {version} without its secret")
    secret = Secret(v[0])
    v[0] = None

    def text(b: bytes | None) -> str | None:
        return None if b is None else b.decode()

    assert rec.kind is not None
    return Credential(
        eng,
        name,
        rec.kind,
        secret,
        text(v[1]),
        rec.system,
        None,
        None,
        text(v[2]),
        text(v[3]),
        rec.created_at,
        rec.updated_at,
    )


def version_fields(
    t: Team, ref: str, reason: str | None, version: int, via: str | None = None
) -> dict[str, str | None]:
    """``get --version N --field username|url|notes``: audited as ``show``; the server
    releases the version without its secret. ``via`` as for :func:`get_version`."""
    _, _, rec, v = _fetch_version(t, ref, "version-show", reason, version, via)
    out: dict[str, str | None] = {"kind": rec.kind, "system": rec.system}
    for f, b in zip(CRED_FIELDS[1:], v[1:], strict=True):
        out[f] = None if b is None else b.decode()
    return {k: out[k] for k in ("username", "url", "notes", "kind", "system")}


def history(t: Team, ref: str) -> builtins.list[VersionInfo]:
    """Every version, oldest first (the server audits 'history')."""
    eng, name = validate.ref(ref)
    rows = t.store.credential_history(eng, name)
    if not rows:
        if t.store.engagement(eng) is None:
            raise AccessDenied(t.member, "history", eng, "no role on it")
        raise NotFound("credential", ref)
    return [
        VersionInfo(eng, name, r.version, r.kind, r.system, r.by, r.at, r.changed, r.current)
        for r in rows
    ]


def revert(t: Team, ref: str, version: int) -> CredentialInfo:
    """An earlier version current again, as a new version: the server copies the version's
    envelopes back (they never leave it), keeping the replaced one as a version."""
    eng, name = validate.ref(ref)
    allowed = t.permits("credential.revert", eng)
    if allowed:
        t.before_write(eng)  # not under a key a removed member may hold
    outcome = t.store.revert_credential(eng, name, version)  # refusals audited there
    if not allowed or outcome == "denied":
        raise _denied(t, "revert", eng)
    if outcome == "not found":
        raise NotFound("credential", ref)
    if outcome == "no version":
        raise NotFound("version", ref, f"{ref} has no version {version}")
    meta = t.store.credential_meta(eng, name)
    kind, created, updated = meta if meta else ("", "", "")
    linked = t.store.linked_system(eng, name)
    return CredentialInfo(eng, name, kind, linked[0] if linked else None, created, updated)


# -- edit, mv, find ------------------------------------------------------------------------
def _rebound(
    t: Team,
    eng: str,
    name: str,
    verb: str,
    *,
    new_name: str | None = None,
    kind: str | None = None,
    system_uid: tuple[bytes | None] | None = None,
) -> tuple[bytes, Rebound] | None:
    """(uid, the credential's secret sealed again (through :meth:`credvault.team.Team.seal`)
    bound to its new name (mv), kind or link (edit), with the claimed request it was read
    through: the server stores it only over the version that request found (upgrade-2.sql,
    section rebindpin). As SQLCipher's ``_rebind`` does: a secret is
    bound to those clear columns (and must be, under a membership log), so changing one
    without it would leave a value that no longer opens. Read through request_record /
    fetch_record (kind ``rebind-mv`` / ``rebind-edit``, audited under ``verb``; only for a
    member who may write). None when the server refuses or finds nothing: the write that
    follows says why (and audits it). ``system_uid``: (the new link's uid, or None for
    none,); None keeps the link."""
    req, rec = t.store.record(f"rebind-{verb}", eng, name, "")
    if req is None:
        return None
    if rec is None or rec.e1 is None or rec.uid is None or rec.name is None or rec.kind is None:
        return None
    old = items.credential_binding(rec.name, rec.kind, rec.system_uid)
    eng_uid, key = _key_for(t, eng, verb, rec.e1)
    value = t.unseal(eng_uid, rec.uid, "secret", rec.e1, key, record=old, engagement=eng)
    new = items.credential_binding(
        new_name or rec.name,
        kind or rec.kind,
        rec.system_uid if system_uid is None else system_uid[0],
    )
    version = envelope.key_version_of(rec.e1)
    sealed = t.seal(eng_uid, rec.uid, "secret", value, key, version, record=new)
    del value
    from credvault.postgres.store import Rebound

    return rec.uid, Rebound(sealed, req)


def edit(t: Team, ref: str, changes: Mapping[str, str | None]) -> CredentialInfo:
    """Username, url, notes (sealed here for the row's own uid), kind and system link (in
    the clear) without the secret, as :meth:`credvault.credentials.Credentials.edit`; the
    server keeps the replaced version and audits 'edit'."""
    from credvault.credentials import clean_edits

    eng, name = validate.ref(ref)
    clean = clean_edits(changes)
    changed = ", ".join(clean)
    system = (clean["system"],) if "system" in clean else None
    if not t.permits("credential.edit", eng):
        t.store.edit_credential(eng, name, b"", 0, {}, None, None, changed)  # audited refusal
        raise _denied(t, "edit", eng)
    uid = t.store.credential_uid(eng, name)
    envs: dict[str, bytes | None] = {}
    version = 0
    if uid is not None and not t.before_write(eng):
        uid = None  # closed: nothing read or sealed here, the server refuses (audited)
    if uid is not None:
        eng_uid, key, version = t.engagement_key(eng, "edit")
        for f in ("username", "url", "notes"):
            if f in clean:
                value = clean[f]
                envs[f] = (
                    None if value is None else t.seal(eng_uid, uid, f, value.encode(), key, version)
                )
    secret = None
    new_sys: tuple[bytes | None] | None = None  # (the new link's uid, or None for none,)
    if uid is not None and ("kind" in clean or "system" in clean):
        # the secret is bound to its kind and link: sealed again for the new ones
        if system is not None:
            linked = None if system[0] is None else t.store.system(eng, system[0])
            new_sys = (None if linked is None else linked.uid,)
        if system is None or system[0] is None or new_sys != (None,):
            got = _rebound(t, eng, name, "edit", kind=clean.get("kind"), system_uid=new_sys)
            secret = None if got is None else got[1]
    outcome = t.store.edit_credential(
        eng, name, uid or b"", version, envs, clean.get("kind"), system, changed, secret,
        None if new_sys is None else new_sys[0] or b"",
    )  # fmt: skip
    if outcome == "denied":
        raise _denied(t, "edit", eng)
    if outcome == "not found":
        raise NotFound("credential", ref)
    if outcome == "no system":
        raise NotFound("system", f"{eng}/{clean['system']}")
    return _info(t, eng, name)


def _info(t: Team, eng: str, name: str) -> CredentialInfo:
    meta = t.store.credential_meta(eng, name)
    kind, created, updated = meta if meta else ("", "", "")
    linked = t.store.linked_system(eng, name)
    return CredentialInfo(eng, name, kind, linked[0] if linked else None, created, updated)


def move(t: Team, ref: str, target: str) -> CredentialInfo:
    """A rename within the engagement (done by the server: the name is a clear column).
    Moving into another engagement is :func:`move_across`."""
    from credvault.errors import AlreadyExists

    eng, name = validate.ref(ref)
    if "/" in target:
        _, t_name = validate.ref(target)
    else:
        t_name = validate.name(target, "item name")
    allowed = t.permits("credential.move", eng)
    secret = None
    # the rebound secret: not under a key a removed member may hold (a lead rotates first);
    # closed: nothing read here, the server refuses
    if (
        allowed
        and t.before_write(eng)
        and t_name != name
        and t.store.credential_meta(eng, t_name) is None
    ):
        # the secret is bound to its name: sealed again for the new one
        got = _rebound(t, eng, name, "mv", new_name=t_name)
        secret = None if got is None else got[1]
    outcome = t.store.rename_credential(eng, name, t_name, secret)  # refusals audited there
    if not allowed or outcome == "denied":
        raise _denied(t, "mv", eng)
    if outcome == "not found":
        raise NotFound("credential", ref)
    if outcome == "exists":
        raise AlreadyExists(f"credential {eng}/{t_name} exists already")
    return _info(t, eng, t_name)


def move_across(t: Team, ref: str, target: str) -> CredentialInfo:
    """``mv ENG/NAME ENG2/NEW``, as :meth:`credvault.credentials.Credentials.move`: a writing
    role on both engagements; the credential and every earlier version re-sealed here under
    ENG2's key (the secret bound to its new name, without the link: the system stays
    behind) and moved in one server transaction, audited 'mv' on both. The values come
    through a two-phase read (``request_move`` commits a 'rebind' audit row on ENG,
    ``fetch_move`` releases them); ``move_credential`` takes only that fetched request
    (``upgrade-2.sql``, section pgrec). A failure changes nothing."""
    from credvault.errors import AlreadyExists

    eng, name = validate.ref(ref)
    t_eng, t_name = validate.ref(target)
    t.before_write(t_eng)  # before the request: the target's key is what it is sealed under

    def ask() -> int:
        outcome, req = t.store.request_move(eng, name, t_eng, t_name)
        if outcome == "denied":  # audited there, on the engagement that refused (ENG first)
            raise _denied(t, "mv", eng if not t.permits("credential.move", eng) else t_eng)
        if outcome.startswith("inactive "):  # closed: audited there as an error
            _, state, which = outcome.split(" ", 2)
            raise _inactive(which, state)
        if outcome == "not found":
            raise NotFound("credential", ref)
        if outcome == "exists":
            raise AlreadyExists(f"credential {t_eng}/{t_name} exists already")
        assert req is not None
        return req

    target_key: builtins.list[tuple[bytes, bytes, int]] = []

    def fetch(req: int) -> builtins.list[MoveRow]:
        if not target_key:
            # ENG2's key first (a lead's first use makes it): nothing is released for a
            # move that could not be sealed
            target_key.append(t.engagement_key(t_eng, "mv"))
        return t.store.fetch_move(req, eng)

    # asked again (a new 'rebind' entry) if the credential is written in between
    asked = t.store.asked_again(ask, fetch)
    assert asked is not None
    req, rows = asked
    t_uid, t_key, t_version = target_key[0]
    current = next((r for r in rows if r.table == "credentials"), None)
    if current is None:
        raise NotFound("credential", ref)
    moved: builtins.list[tuple[int, tuple[bytes, bytes | None, bytes | None, bytes | None]]] = []
    for r in rows:
        old = items.credential_binding(r.name, r.kind, r.system_uid)
        new = items.credential_binding(t_name, r.kind, None)  # the link stays behind
        out: builtins.list[bytes | None] = []
        for i, (field, blob) in enumerate(zip(CRED_FIELDS, r.envelopes, strict=True)):
            if blob is None:
                out.append(None)
                continue
            eng_uid, key = _key_for(t, eng, "mv", blob)
            value = t.unseal(
                eng_uid, r.uid, field, blob, key, record=old if i == 0 else (), engagement=eng
            )
            out.append(
                t.seal(t_uid, r.uid, field, value, t_key, t_version, record=new if i == 0 else ())
            )
            del value
        anchor = out[0]
        if anchor is None:
            raise IntegrityError(f"{ref}: a credential without its secret")
        moved.append((r.id, (anchor, out[1], out[2], out[3])))
    # (ids of two tables: told apart by the row's table, never by the id alone)
    envs = next(m[1] for m, r in zip(moved, rows, strict=True) if r.table == "credentials")
    versions = [m for m, r in zip(moved, rows, strict=True) if r.table == "credential_versions"]
    if len(versions) + 1 != len(rows):
        raise IntegrityError(f"{ref}: a record of an unknown kind")
    got = t.store.move_credential(req, current.uid, current.version, t_version, envs, versions)
    if got == "denied":  # a writing role lost since the fetch (audited there)
        raise _denied(t, "mv", eng if not t.permits("credential.move", eng) else t_eng)
    if got == "exists":
        raise AlreadyExists(f"credential {t_eng}/{t_name} exists already")
    return _info(t, t_eng, t_name)


def import_entries(
    t: Team, engagement: str, entries: Iterable[RawEntry | Skipped], *, dry_run: bool = False
) -> ImportPlan:
    """``import``, as :meth:`credvault.credentials.Credentials.import_entries`: a writing
    role; names checked against the engagement as it is (existing ones skipped), a host
    equal to an existing system linked to it (the systems' addresses read first through
    ``request_import``/``fetch_import``, on the record as 'import-read'); everything sealed
    here and stored in one server transaction (``import_credentials``, audited 'import'
    with SQLCipher's summary; a dry run stores nothing and audits "dry run: …")."""
    from credvault.errors import AlreadyExists
    from credvault.importers import build_plan

    eng = validate.name(engagement, "engagement name")
    if not t.permits("credential.import", eng):
        t.store.request_import(eng)  # the server refuses too, on the record
        raise _denied(t, "import", eng)
    row = t.store.engagement(eng)
    if row is not None and row.state != "active":
        t.store.request_import(eng)  # refused for its state, on the record
        raise _inactive(eng, row.state)
    existing: dict[str, tuple[str, int | None, str | None]] = {}
    uids: dict[str, bytes] = {}
    if t.store.systems(eng):
        asked = t.store.asked_again(
            lambda: t.store.request_import(eng), lambda r: t.store.fetch_import(r, eng)
        )
        if asked is None:
            raise _denied(t, "import", eng)
        for uid, name, port, protocol, blob in asked[1]:
            eng_uid, key = _key_for(t, eng, "import", blob)
            record = items.system_binding(name, port, protocol)
            address = t.unseal(
                eng_uid, uid, "address", blob, key, table=SYSTEMS, record=record, engagement=eng
            )
            existing[name] = (address.decode(), port, protocol)
            uids[name] = uid
    names = [c[1] for c in t.store.credentials(eng)]
    plan = build_plan(entries, existing_credentials=names, existing_systems=existing)
    if dry_run:
        got = t.store.import_credentials(
            eng, dry=True, key_version=0, skipped=len(plan.skipped),
            systems=[(s.name, b"", None, None, b"") for s in plan.systems],
            credentials=[
                (i.name, i.kind, b"", None, b"", None, None, None, None) for i in plan.items
            ],
        )  # fmt: skip
        if got == "denied":
            raise _denied(t, "import", eng)
        return plan
    eng_uid, key, version = t.engagement_key(eng, "import", write=True)
    systems = []
    for sp in plan.systems:
        uid = os.urandom(16)
        uids[sp.name] = uid
        record = items.system_binding(sp.name, sp.port, sp.protocol)
        env = t.seal(
            eng_uid, uid, "address", sp.address.encode(), key, version, table=SYSTEMS,
            record=record,
        )  # fmt: skip
        systems.append((sp.name, uid, sp.port, sp.protocol, env))
    creds = []
    for it in plan.items:
        uid = os.urandom(16)
        link = uids[it.system] if it.system else None
        record = items.credential_binding(it.name, it.kind, link)

        def seal(field: str, value: str | None, uid: bytes = uid) -> bytes | None:
            if value is None:
                return None
            return t.seal(eng_uid, uid, field, value.encode(), key, version)

        secret = t.seal(eng_uid, uid, "secret", it.secret.reveal(), key, version, record=record)
        creds.append(
            (it.name, it.kind, uid, it.system, secret,
             seal("username", it.username), seal("url", it.url), seal("notes", it.notes),
             link)
        )  # fmt: skip
    got = t.store.import_credentials(
        eng, dry=False, key_version=version, skipped=len(plan.skipped), systems=systems,
        credentials=creds,
    )  # fmt: skip
    if got == "denied":
        raise _denied(t, "import", eng)
    if got != "ok":
        kind, _, name = got.partition(" ")
        raise AlreadyExists(f"{kind} {eng}/{name} was created meanwhile")
    return plan


def find(t: Team, text: str, *, fields: bool = True, reason: str | None = None) -> FindHits:
    """Names in every engagement the member holds a role in (the clear columns); usernames,
    URLs, notes, addresses and details where they may read, each engagement's envelopes
    released against its own audited request ('find'), opened here. Hits name the field
    that matched, never its value (:meth:`credvault.credentials.Credentials.find`)."""
    from credvault.access import permits
    from credvault.model import FindHit

    needle = validate.text(text, "search text", max_len=256, multiline=False)
    why = validate.reason(reason) or ""
    if not needle or not needle.strip():
        raise InvalidInput("the search text is empty")
    low = needle.lower()
    hits = [FindHit(e, typ, n, "name") for e, typ, n in t.store.search_names(low)]
    seen = {(h.engagement, h.type, h.name) for h in hits}
    skipped: builtins.list[str] = []
    for e in t.store.engagements() if fields else []:
        if e.state != "active" or not permits("credential.find", t.role(e.name), admin=False):
            continue
        if e.require_reason and not why:
            skipped.append(e.name)  # names only: a field search is a read (an oracle)
            continue
        got = t.store.asked_again(
            functools.partial(t.store.request_find, e.name, why),
            functools.partial(t.store.fetch_find, engagement=e.name),
        )
        if got is None:
            continue
        for r in got[1]:
            typ = "credential" if r.table == "credentials" else "system"
            if (e.name, typ, r.name) in seen:
                continue
            names = CRED_FIELDS[1:] if typ == "credential" else FIELDS[SYSTEMS]
            table = "credentials" if typ == "credential" else SYSTEMS
            for i, (f, blob) in enumerate(zip(names, r.envelopes, strict=False)):
                if blob is None:
                    continue
                eng_uid, key = _key_for(t, e.name, "find", blob)
                record = (
                    items.system_binding(r.name, r.port, r.protocol)
                    if typ == "system" and i == 0
                    else ()
                )
                value = t.unseal(
                    eng_uid, r.uid, f, blob, key, table=table, record=record, engagement=e.name
                )
                found = low in value.decode("utf-8", errors="replace").lower()
                del value
                if found:
                    hits.append(FindHit(e.name, typ, r.name, f))
                    break
    hits.sort(key=lambda h: (h.engagement, h.type, h.name))
    result = FindHits(hits)
    result.skipped = tuple(skipped)
    return result


# -- the trash ---------------------------------------------------------------------------------
def remove(t: Team, ref: str) -> str:
    """``rm``: to the trash (the server moves it, envelopes and versions included); returns
    when it leaves the trash."""
    eng, name = validate.ref(ref)
    allowed = t.permits("credential.remove", eng)
    outcome, until = t.store.remove_credential(eng, name)  # refusals audited there
    if not allowed or outcome == "denied":
        raise _denied(t, "rm", eng)
    if outcome == "not found":
        raise NotFound("credential", ref)
    return until


def trash(t: Team, engagement: str) -> builtins.list[TrashInfo]:
    """What is in an engagement's trash (audited 'trash' by the server)."""
    validate.name(engagement, "engagement name")
    rows = t.store.trash_list(engagement)
    if not rows and t.store.engagement(engagement) is None:
        raise AccessDenied(t.member, "trash", engagement, "no role on it")
    return [TrashInfo(engagement, *r) for r in rows]


def restore(t: Team, ref: str, *, system: bool = False) -> None:
    """The latest removal of that name back from the trash (a system with its links)."""
    from credvault.errors import AlreadyExists

    eng, name = validate.ref(ref)
    kind = "system" if system else "credential"
    allowed = t.permits("system.restore" if system else "credential.restore", eng)
    rebound: dict[bytes, Rebound] = {}
    # what comes back is under the current key: rotated first if due; closed: nothing read
    if allowed and t.before_write(eng) and system:
        # the credentials it links again: their secrets sealed again for the link
        for cred, sys_uid in t.store.trashed_system_links(eng, name):
            got = _rebound(t, eng, cred, "edit", system_uid=(sys_uid,))
            if got is not None:
                rebound[got[0]] = got[1]
    outcome = t.store.restore_trashed(eng, name, system, rebound)  # refusals audited there
    if not allowed or outcome == "denied":
        raise _denied(t, "system restore" if system else "restore", eng)
    if outcome == "not found":
        raise NotFound(kind, ref, f"{ref} is not in the trash")
    if outcome == "exists":
        raise AlreadyExists(
            f"system {ref} exists"
            if system
            else f"credential {ref} exists; rename it first (credvault mv)"
        )


class TeamTrash:
    """``trash purge`` on a team vault (destroy one removal now; ``Vault.purger`` calls it). The
    engagement's own purge is the server's (docs/team.md, "Purge")."""

    def __init__(self, t: Team) -> None:
        self.t = t

    def destroy_trashed(self, ref: str, *, system: bool = False) -> None:
        t = self.t
        eng, name = validate.ref(ref)
        kind = "system" if system else "credential"
        allowed = t.permits("trash.purge", eng)
        outcome = t.store.destroy_trashed(eng, name, system)  # refusals audited there
        if not allowed or outcome == "denied":
            raise _denied(t, "trash purge", eng)
        if outcome == "not found":
            raise NotFound(kind, ref, f"{ref} is not in the trash")


__all__ = [
    "TeamSystems",
    "TeamTrash",
    "current_fields",
    "edit",
    "find",
    "get_version",
    "history",
    "import_entries",
    "linked_address",
    "move",
    "move_across",
    "remove",
    "reseal",
    "restore",
    "revert",
    "trash",
    "version_fields",
]
