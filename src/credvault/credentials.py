"""Credentials: put, get, list, remove. Every value is its own envelope; reads fail closed.

A read returns its secret only after the audit entry for it has committed: if that write
fails (disk full, a trigger, a lock), the caller gets an error and no secret.
"""

from __future__ import annotations

import base64
import builtins
import os
import string
from typing import NamedTuple

from credvault import items, validate
from credvault.access import Action
from credvault.engagements import Engagements
from credvault.errors import AlreadyExists, Conflict, IntegrityError, InvalidInput, NotFound
from credvault.model import CredentialRow, CredentialUpdate, Engagement, NewCredential
from credvault.secret import Secret
from credvault.session import Session

TABLE = "credentials"
_ALPHABET = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~"


class CredentialInfo(NamedTuple):
    """What listing shows: names, kinds and dates, never values."""

    engagement: str
    name: str
    kind: str
    system: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


class Credential(NamedTuple):
    """A decrypted credential; ``secret`` is redacted in ``repr``."""

    engagement: str
    name: str
    kind: str
    secret: Secret
    username: str | None
    system: str | None
    address: str | None
    port: int | None
    url: str | None
    notes: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, object]:
        """Everything, the secret included (for ``get --json`` and client export)."""
        d: dict[str, object] = self._asdict()
        raw = self.secret.reveal()
        try:
            d["secret"] = raw.decode("utf-8")
        except UnicodeDecodeError:  # binary secrets travel as base64, never mangled
            del d["secret"]
            d["secret_base64"] = base64.b64encode(raw).decode()
        return d


def generate(length: int = 32) -> Secret:
    """A random password from a 90-symbol alphabet (about 6.5 bits per character)."""
    import secrets

    if not 8 <= length <= 1024:
        raise InvalidInput("generated length must be 8 to 1024")
    return Secret("".join(secrets.choice(_ALPHABET) for _ in range(length)))


class Credentials:
    def __init__(self, s: Session, engagements: Engagements) -> None:
        self.s = s
        self.e = engagements

    def put(
        self,
        ref: str,
        secret: Secret | bytes | str,
        *,
        username: str | None = None,
        system: str | None = None,
        kind: str | None = None,
        url: str | None = None,
        notes: str | None = None,
    ) -> CredentialInfo:
        """Create or replace a credential (a replace keeps fields not given; new ones are
        of kind ``password`` unless told)."""
        s = self.s
        eng_name, name = validate.ref(ref)
        value = secret if isinstance(secret, Secret) else Secret(secret)
        del secret  # from here on only the redacted wrapper is a local
        validate.secret(value)
        if kind is not None:
            validate.kind(kind)
        username = validate.text(username, "username", max_len=1024, multiline=False)
        url = validate.url(url)
        notes = validate.text(notes, "notes")
        eng = self.e.get(eng_name)
        self.e.require_active(eng)
        self.e._rotate_if_needed(eng)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "put", Action.WRITE, name)
        now = s.now()
        with s.store.write():
            self.e.assert_current(eng)
            sys_id = None
            if system is not None:
                srow = s.store.system(eng.id, validate.name(system, "system name"))
                if srow is None:
                    raise NotFound("system", f"{eng_name}/{system}")
                sys_id = srow.id
            row = s.store.credential(eng.id, name)
            uid = os.urandom(16) if row is None else row.uid

            def seal(field: str, value: bytes | None) -> bytes | None:
                return items.seal(s, eng, key, TABLE, uid, field, value)

            secret_env = seal("secret", value.reveal())
            assert secret_env is not None
            if row is None:
                s.store.insert_credential(
                    eng.id,
                    NewCredential(
                        uid,
                        name,
                        kind or "password",
                        sys_id,
                        secret_env,
                        seal("username", _b(username)),
                        seal("url", _b(url)),
                        seal("notes", _b(notes)),
                        now,
                        now,
                    ),
                )
                action = "put"
            else:  # fields not given keep their stored value
                s.store.update_credential(
                    row.id,
                    CredentialUpdate(
                        now,
                        secret_env,
                        seal("username", _b(username)),
                        seal("url", _b(url)),
                        seal("notes", _b(notes)),
                        sys_id,
                        kind,
                    ),
                )
                action = "update"
            s.log(action, eng.name, name, "ok", f"kind {kind}" if kind else "")
        return self.info(eng, name)

    def put_many(
        self, engagement: str, entries: builtins.list[tuple[str, bytes]], kind: str = "password"
    ) -> int:
        """Bulk insert of new credentials in one transaction (imports, benchmarks)."""
        s = self.s
        eng = self.e.get(engagement)
        self.e.require_active(eng)
        self.e._rotate_if_needed(eng)
        eng = self.e.get(engagement)
        key = self.e.key(eng, "put", Action.WRITE)
        names = [name for name, _ in entries]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise InvalidInput(f"credential {n!r} appears twice in the batch")
            seen.add(n)
        now = s.now()
        rows = []
        for name, value in entries:
            validate.name(name, "item name")
            validate.secret(Secret(value))
            uid = os.urandom(16)
            sealed = items.seal(s, eng, key, TABLE, uid, "secret", value)
            assert sealed is not None
            rows.append(
                NewCredential(
                    uid, name, validate.kind(kind), None, sealed, None, None, None, now, now
                )
            )
        with s.store.write():
            self.e.assert_current(eng)
            taken = s.store.credential_names(eng.id)
            existing = next((n for n in names if n in taken), None)
            if existing is not None:
                raise AlreadyExists(f"credential {eng.name}/{existing} exists already")
            s.store.insert_credentials(eng.id, rows)
            s.log("put", eng.name, None, "ok", f"bulk insert of {len(rows)} credentials")
        return len(rows)

    def info(self, eng: Engagement, name: str) -> CredentialInfo:
        row = self.s.store.credential(eng.id, name)
        if row is None:
            raise NotFound("credential", f"{eng.name}/{name}")
        return _info(eng, row)

    def get(self, ref: str, *, reason: str | None = None) -> Credential:
        """Decrypt a credential. Audited; with ``require_reason`` a reason is mandatory."""
        s = self.s
        eng_name, name = validate.ref(ref)
        reason = validate.reason(reason)
        eng = self.e.get(eng_name)
        if eng.require_reason and not reason:
            raise s.deny("get", eng.name, name, "this engagement requires --reason")
        if eng.needs_rotation and self.e.role_of(eng):
            self.e._rotate_if_needed(eng)
            eng = self.e.get(eng_name)
        key = self.e.key(eng, "get", Action.READ, name)
        row = s.store.credential(eng.id, name)
        if row is None:
            with s.store.write():
                s.log("get", eng.name, name, "error", "not found")
            raise NotFound("credential", ref)
        try:  # decrypted values live only inside Secret wrappers until returned
            secret_value, username, url, notes = [
                _wrap(items.open_(s, eng, key, TABLE, row.uid, f, row.envelope(f)))
                for f in items.CRED_FIELDS
            ]
        except IntegrityError:
            current = self.e.get(eng_name).key_version
            why = "key rotated during the read" if current != eng.key_version else None
            with s.store.write():
                s.log("get", eng.name, name, "error", why or "integrity check failed")
            if why:
                raise Conflict(
                    f"{ref}: the engagement key was rotated meanwhile; run again"
                ) from None
            raise
        address = port = None
        if row.system_id is not None:
            srow = s.store.system_by_id(row.system_id)
            if srow is not None:
                try:
                    a = _wrap(
                        items.open_(s, eng, key, "systems", srow.uid, "address", srow.address_env)
                    )
                except IntegrityError:
                    with s.store.write():
                        s.log("get", eng.name, name, "error", "system address integrity failed")
                    raise
                address, port = (a.reveal_text() if a else None), srow.port
        # Fail closed: the entry commits before the secret leaves this function.
        with s.store.write():
            s.log("get", eng.name, name, "ok", f"reason: {reason}" if reason else "")
        assert secret_value is not None
        return Credential(
            eng.name,
            row.name,
            row.kind,
            secret_value,
            _text(username),
            row.system,
            address,
            port,
            _text(url),
            _text(notes),
            row.created_at,
            row.updated_at,
        )

    def list(self, engagement: str | None = None) -> builtins.list[CredentialInfo]:
        s = self.s
        engs = (
            [self.e.get(engagement)]
            if engagement
            else [e for e in self.e.list() if e.state != "purged"]
        )
        out: builtins.list[CredentialInfo] = []
        for eng in engs:
            role = self.e.role_of(eng)
            if engagement is None and role is None and not s.is_admin:
                continue
            s.check(Action.LIST, role, "list", eng.name)
            out += [_info(eng, r) for r in s.store.credentials(eng.id)]
        with s.store.write():
            s.log("ls", engagement, None, "ok", f"{len(out)} credentials listed")
        return out

    def remove(self, ref: str) -> None:
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng)
        self.e.key(eng, "rm", Action.WRITE, name)
        found = items.remove_audited(
            s, eng, name, "rm", lambda: s.store.credential(eng.id, name), s.store.delete_credential
        )
        if not found:
            raise NotFound("credential", ref)

    def export_engagement(self, eng: Engagement) -> builtins.list[Credential]:
        """Every credential decrypted, for a client export (audit entry by the caller)."""
        s = self.s
        key = self.e.key(eng, "export", Action.READ)
        out = []
        for row in s.store.credentials(eng.id):
            secret, username, url, notes = [
                items.open_(s, eng, key, TABLE, row.uid, n, row.envelope(n))
                for n in items.CRED_FIELDS
            ]
            assert secret is not None
            out.append(
                Credential(
                    eng.name,
                    row.name,
                    row.kind,
                    Secret(secret),
                    _s(username),
                    row.system,
                    None,
                    None,
                    _s(url),
                    _s(notes),
                    row.created_at,
                    row.updated_at,
                )
            )
        return out


def _info(eng: Engagement, row: CredentialRow) -> CredentialInfo:
    return CredentialInfo(eng.name, row.name, row.kind, row.system, row.created_at, row.updated_at)


def _b(v: str | None) -> bytes | None:
    return None if v is None else v.encode()


def _wrap(v: bytes | None) -> Secret | None:
    return None if v is None else Secret(v)


def _text(v: Secret | None) -> str | None:
    return None if v is None else v.reveal_text()


def _s(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", errors="replace")
