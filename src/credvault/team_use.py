"""The daily reads of a PostgreSQL team vault that use a secret on the member's behalf:
``otp`` (a TOTP code from a stored seed), ``run`` (secrets into a child's environment)
and ``ssh`` (address, port, user and key or password in one step).

They go through the same library calls as on SQLCipher (:meth:`Credentials.otp`,
:meth:`Credentials.get` and :meth:`Credentials.fields` with ``via``), which
:class:`credvault.team.TeamCredentials` routes here. Every read is two-phase, as ``get``'s:
``request_use`` commits the audit row under the SQLCipher vault's action and detail
(``otp``; ``get`` with "reason: run psql: …", "reason: ssh web1"; ``show``), then
``fetch_use`` releases only what that kind of use needs (``upgrade-2.sql``, section
pgdaily). The credential's linked system comes in the same read, so ``ssh`` gets the
address and port with the key, as on SQLCipher, under one audit entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credvault import items, validate
from credvault.crypto import envelope
from credvault.errors import AccessDenied, Conflict, InvalidInput, NotFound
from credvault.model import Credential, OtpCode
from credvault.secret import Secret

if TYPE_CHECKING:
    from credvault.postgres.store import UseRow
    from credvault.team_records import Team

TABLE = "credentials"
SYSTEMS = "systems"
# the verb of a refusal, as SQLCipher's access table names the operation
_VERB = {"otp": "otp", "get": "get", "show": "show", "show-system": "show"}


def _request(t: Team, kind: str, ref: str, reason: str | None, via: str | None) -> UseRow:
    """Both phases: the audit row commits, then the envelopes the request names."""
    eng, name = validate.ref(ref)
    why = validate.reason(reason) or ""
    verb = _VERB[kind]
    attempts = 0
    while True:
        req = t.store.request_use(kind, eng, name, why, via or "")
        if req is None:  # refused, and audited by the server: say why in SQLCipher's terms
            e = t.store.engagement(eng)
            if e is None:
                raise AccessDenied(t.member, verb, eng, "no role on it")
            if e.require_reason and not why:
                raise AccessDenied(t.member, verb, eng, "this engagement requires --reason")
            if t.store.credential_meta(eng, name) is None:
                raise NotFound("credential", ref)
            role = t.role(eng)
            raise AccessDenied(t.member, verb, eng, f"role {role.value}" if role else "no grant")
        try:
            row = t.store.fetch_use(req, eng)
        except Conflict:
            # the row written between the request and the release: its entry names the
            # earlier value, so ask again under a new one (section pinned); the fifth
            # time, the Conflict stands
            attempts += 1
            if attempts == 5:
                raise
            continue
        if row is None:
            raise NotFound("credential", ref)
        return row


def _open(
    t: Team, eng: str, verb: str, uid: bytes, field: str, blob: bytes | None, **kw: object
) -> bytes | None:
    if blob is None:
        return None
    version = envelope.key_version_of(blob)
    eng_uid, key, got = t.engagement_key(eng, verb, version)
    if got != version:
        raise Conflict("the engagement key was rotated meanwhile; run the command again")
    return t.unseal(eng_uid, uid, field, blob, key, **kw)  # type: ignore[arg-type]


def _address(t: Team, eng: str, verb: str, row: UseRow) -> str | None:
    """The linked system's address, bound to its name, port and protocol."""
    if row.address is None or row.system_uid is None:
        return None
    record = items.system_binding(row.system, row.port, row.protocol)
    got = _open(
        t, eng, verb, row.system_uid, "address", row.address,
        table=SYSTEMS, record=record, engagement=eng,
    )  # fmt: skip
    return None if got is None else got.decode()


def read(t: Team, kind: str, ref: str, reason: str | None, via: str | None) -> Credential:
    """The credential with its secret and linked system (``kind`` ``get`` or ``otp``)."""
    eng, name = validate.ref(ref)
    row = _request(t, kind, ref, reason, via)
    verb = _VERB[kind]
    if row.secret is None:
        raise NotFound("credential", ref)
    # the secret is bound to the record's clear columns as the server shows them: its
    # name, kind and system link (a swapped or edited row fails, exit 6)
    record: envelope.Binding = ("credential", row.name, row.kind, row.system_uid or b"")
    secret = Secret(
        _open(t, eng, verb, row.uid, "secret", row.secret, record=record, engagement=eng) or b""
    )

    def text(field: str, blob: bytes | None) -> str | None:
        got = _open(t, eng, verb, row.uid, field, blob)
        return None if got is None else got.decode()

    return Credential(
        eng,
        name,
        row.kind,
        secret,
        text("username", row.username),
        row.system,
        _address(t, eng, verb, row),
        row.port if row.system is not None else None,
        text("url", row.url),
        text("notes", row.notes),
        row.created_at,
        row.updated_at,
    )


def otp(t: Team, ref: str, reason: str | None, at: float | None) -> OtpCode:
    """The current TOTP code, audited as ``otp``: the seed is used for one HMAC and dropped.
    A credential holding anything else is refused (exit 2); its read is on the trail as
    ``otp`` ``ok`` already, since the envelope left the server (SQLCipher's entry says
    ``error``: there the check runs before the entry is written)."""
    from credvault import totp

    cred = read(t, "otp", ref, reason, None)
    try:
        params = totp.parse_stored(cred.secret)
    except InvalidInput as e:
        raise InvalidInput(f"{ref}: {e}") from None
    return OtpCode(totp.code(params, at), totp.seconds_left(params, at), params.period)


def fields(
    t: Team, ref: str, reason: str | None, via: str, *, system: bool = False
) -> dict[str, str | None]:
    """``run``'s non-secret fields, audited as ``show`` with the command's name ahead of
    the reason, as :meth:`credvault.credentials.Credentials.fields` with ``via``."""
    eng, _ = validate.ref(ref)
    row = _request(t, "show-system" if system else "show", ref, reason, via)
    out: dict[str, str | None] = {"kind": row.kind, "system": row.system}
    for f, blob in (("username", row.username), ("url", row.url), ("notes", row.notes)):
        got = _open(t, eng, "show", row.uid, f, blob)
        out[f] = None if got is None else got.decode()
    keys = ["username", "url", "notes", "kind", "system"]
    if system:  # and the linked system's address and port (``--env H=ENG/NAME:address``)
        out["address"] = _address(t, eng, "show", row)
        out["port"] = None if out["address"] is None or row.port is None else str(row.port)
        keys += ["address", "port"]
    return {k: out[k] for k in keys}
