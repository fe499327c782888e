"""Credentials: put, get, list, remove. Every value is its own envelope; reads fail closed.

A read returns its secret only after the audit entry for it has committed: if that write
fails (disk full, a trigger, a lock), the caller gets an error and no secret.
"""

from __future__ import annotations

import base64
import builtins
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from credvault import items, validate
from credvault.access import permits
from credvault.engagement_keys import retried, retrying
from credvault.engagements import Engagements
from credvault.errors import (
    AlreadyExists,
    Conflict,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    NotFound,
)

# what a read returns: defined in credvault.model (a team vault returns them too)
from credvault.model import Credential as Credential
from credvault.model import CredentialInfo as CredentialInfo
from credvault.model import (
    CredentialRow,
    CredentialUpdate,
    Engagement,
    NewCredential,
    NewSystem,
    NewVersion,
    SealedRow,
    iso,
)
from credvault.model import FindHit as FindHit
from credvault.model import FindHits as FindHits
from credvault.model import OtpCode as OtpCode
from credvault.model import TrashInfo as TrashInfo
from credvault.model import VersionInfo as VersionInfo
from credvault.secret import Secret
from credvault.session import Session

if TYPE_CHECKING:
    from credvault.importers import ImportPlan, RawEntry, Skipped

TABLE = "credentials"


EDITABLE = ("username", "url", "notes", "kind", "system")


def clean_edits(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    """``edit``'s fields checked and normalised, in the order given (the audit names them in
    that order); one home for both backends (the team vault's edit calls it too)."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise InvalidInput(f"cannot edit {unknown[0]!r}: editable are {', '.join(EDITABLE)}")
    clean: dict[str, str | None] = {}
    for f, val in changes.items():
        if f == "kind":
            if val is None:
                raise InvalidInput("kind cannot be cleared")
            clean[f] = validate.kind(val)
        elif f == "system":
            clean[f] = None if val is None else validate.name(val, "system name")
        elif f == "notes":
            clean[f] = validate.text(val, "notes")
        else:
            max_len = 1024 if f == "username" else 4096
            what = "URL" if f == "url" else f
            clean[f] = validate.text(val, what, max_len=max_len, multiline=False)
    if not clean:
        raise InvalidInput("nothing to change")
    return clean


def trash_expiry(s: Session) -> str:
    """When something removed now leaves the trash for good (vault setting trash-days)."""
    from datetime import timedelta

    return iso(s.clock() + timedelta(days=s.setting("trash-days")))  # the one settings reader


def generate(length: int = 32) -> Secret:
    """A random password safe in URLs and shells (see :func:`credvault.generators.password`)."""
    from credvault.generators import password

    return password(length).secret


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
        of kind ``password`` unless told). Retried from a fresh read if another process
        rotates the engagement's key meanwhile (nothing is stored twice)."""
        value = secret if isinstance(secret, Secret) else Secret(secret)
        del secret  # from here on only the redacted wrapper is a local
        return retrying(
            self.s,
            lambda: self._put(
                ref, value, username=username, system=system, kind=kind, url=url, notes=notes
            ),
        )

    def _put(
        self,
        ref: str,
        value: Secret,
        *,
        username: str | None,
        system: str | None,
        kind: str | None,
        url: str | None,
        notes: str | None,
    ) -> CredentialInfo:
        s = self.s
        eng_name, name = validate.ref(ref)
        validate.secret(value)
        if kind is not None:
            validate.kind(kind)
        username = validate.text(username, "username", max_len=1024, multiline=False)
        url = validate.url(url)
        notes = validate.text(notes, "notes")
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.put", item=name)
        self.e.rotate_if_needed(eng)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "credential.put", name)
        now = s.now()
        with s.store.write():
            self.e.assert_current(eng)
            sys_id = sys_uid = None
            if system is not None:
                srow = s.store.system(eng.id, validate.name(system, "system name"))
                if srow is None:
                    raise NotFound("system", f"{eng_name}/{system}")
                sys_id, sys_uid = srow.id, srow.uid
            row = s.store.credential(eng.id, name)
            uid = os.urandom(16) if row is None else row.uid
            # What the row will say (a replace keeps the kind and link not given).
            record = items.credential_binding(
                name,
                kind or ("password" if row is None else row.kind),
                sys_uid if system is not None or row is None else row.system_uid,
            )

            def seal(field: str, value: bytes | None) -> bytes | None:
                return items.seal(s, eng, key, TABLE, uid, field, value, record)

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
                        s.member,
                    ),
                )
                action = "put"
            else:  # fields not given keep their stored value; the old version is kept
                given = {"username": username, "url": url, "notes": notes, "system": system}
                changed = ["secret", *(f for f, v in given.items() if v is not None)]
                if kind is not None:
                    changed.append("kind")
                self._snapshot(eng, key, row, changed)
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
        """Bulk insert of new credentials in one transaction (imports, benchmarks). Like
        :meth:`put`, retried from a fresh read if another process rotates the engagement's
        key meanwhile: each attempt seals anew and rolled back whole, so nothing is stored
        twice and nothing is sealed to a superseded key version."""
        # Wrapped first: neither the list nor a loop variable holds a plain secret afterwards.
        wrapped = [(name, Secret(value)) for name, value in entries]
        del entries
        return retrying(self.s, lambda: self._put_many(engagement, wrapped, kind))

    def _put_many(
        self, engagement: str, wrapped: builtins.list[tuple[str, Secret]], kind: str
    ) -> int:
        s = self.s
        eng = self.e.get(engagement)
        self.e.require_active(eng, operation="credential.put")
        self.e.rotate_if_needed(eng)
        eng = self.e.get(engagement)
        key = self.e.key(eng, "credential.put")
        names = [name for name, _ in wrapped]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise InvalidInput(f"credential {n!r} appears twice in the batch")
            seen.add(n)
        now = s.now()
        rows = []
        for name, secret in wrapped:
            validate.name(name, "item name")
            validate.secret(secret)
            uid = os.urandom(16)
            record = items.credential_binding(name, kind, None)
            sealed = items.seal(s, eng, key, TABLE, uid, "secret", secret.reveal(), record)
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

    def get(
        self,
        ref: str,
        *,
        reason: str | None = None,
        version: int | None = None,
        via: str | None = None,
    ) -> Credential:
        """Decrypt a credential (or an earlier ``version`` of it, see :meth:`history`).

        Audited; with ``require_reason`` a reason is mandatory. ``via`` names a command
        reading on the member's behalf (``run psql``): it heads the audit detail, but it is
        not a reason and does not satisfy ``require_reason``.
        """
        # Retried from a fresh read if the key was rotated during this one (audited).
        return retrying(self.s, lambda: self._read(ref, reason, "get", version=version, via=via))

    @retried
    def otp(self, ref: str, *, reason: str | None = None, at: float | None = None) -> OtpCode:
        """The current TOTP code of a credential holding an ``otpauth://totp/`` URI, audited as
        ``otp`` (not ``get``). The seed is decrypted, used for one HMAC and dropped: only the
        code leaves. A credential holding anything else is refused (and that is audited).
        """
        from credvault import totp

        cred = self._read(ref, reason, "otp", check=totp.parse_stored)
        params = totp.parse_stored(cred.secret)
        return OtpCode(totp.code(params, at), totp.seconds_left(params, at), params.period)

    def _read(
        self,
        ref: str,
        reason: str | None,
        action: str,
        check: Callable[[Secret], object] | None = None,
        *,
        version: int | None = None,
        via: str | None = None,
    ) -> Credential:
        s = self.s
        eng_name, name = validate.ref(ref)
        reason = validate.reason(reason)
        if version is not None and version < 1:
            raise InvalidInput("version must be a positive number")
        eng = self.e.get(eng_name)
        s.require_reason(eng, f"credential.{action}", name, reason)
        if via:  # what the audit detail says: the command, then the member's own reason
            reason = (f"{via}: {reason}" if reason else via)[:200]  # validate.reason's limit
        if eng.needs_rotation and self.e.role_of(eng):
            self.e.rotate_if_needed(eng)
            eng = self.e.get(eng_name)
        key = self.e.key(eng, f"credential.{action}", name)
        row = s.store.credential(eng.id, name)
        if row is None:
            with s.store.write():
                s.log(action, eng.name, name, "error", "not found")
            raise NotFound("credential", ref)
        if version is not None and version != row.version:
            return self._get_version(eng, key, row, version, reason)
        try:  # decrypted values live only inside Secret wrappers until returned
            record = _binding(row)  # name, kind and system link: checked by the secret's AAD
            secret_value, username, url, notes = [
                _wrap(items.open_(s, eng, key, TABLE, row.uid, f, row.envelope(f), record))
                for f in items.CRED_FIELDS
            ]
        except IntegrityError:
            current = self.e.get(eng_name).key_version
            why = "key rotated during the read" if current != eng.key_version else None
            with s.store.write():
                s.log(action, eng.name, name, "error", why or "integrity check failed")
            if why:
                raise Conflict(
                    f"{ref}: the engagement key was rotated meanwhile; run again"
                ) from None
            raise
        address = port = None
        if row.system_id is not None:
            srow = s.store.system_by_id(row.system_id)
            if srow is not None:
                try:  # the address's AAD binds the system's name, port and protocol
                    a = _wrap(
                        items.open_(
                            s, eng, key, "systems", srow.uid, "address", srow.address_env,
                            items.system_binding(srow.name, srow.port, srow.protocol),
                        )
                    )  # fmt: skip
                except IntegrityError:
                    with s.store.write():
                        s.log(action, eng.name, name, "error", "system address integrity failed")
                    raise
                address, port = (a.reveal_text() if a else None), srow.port
        if check is not None:
            assert secret_value is not None
            try:
                check(secret_value)
            except InvalidInput as e:
                with s.store.write():
                    s.log(action, eng.name, name, "error", str(e))
                raise InvalidInput(f"{ref}: {e}") from None
        # Fail closed: the entry commits before the secret leaves this function.
        with s.store.write():
            s.log(action, eng.name, name, "ok", f"reason: {reason}" if reason else "")
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
            if engagement is None and not permits("credential.list", role, admin=s.is_admin):
                continue
            s.check("credential.list", role, eng.name)
            out += [_info(eng, r) for r in s.store.credentials(eng.id)]
        with s.store.write():
            s.log("ls", engagement, None, "ok", f"{len(out)} credentials listed")
        return out

    def remove(self, ref: str) -> str:
        """Move a credential to the trash (with its history); returns when it expires.

        Recoverable with :meth:`restore` until then (vault setting ``trash-days``, default
        30), destroyed earlier by the engagement's purge.
        """
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.remove", item=name)
        self.e.key(eng, "credential.remove", name)
        expires = trash_expiry(s)
        with s.store.write():
            row = s.store.credential(eng.id, name)
            if row is not None:
                s.store.trash_credential(row.id, s.now(), s.member, expires)
            s.log(
                "rm",
                eng.name,
                name,
                "ok" if row else "error",
                f"to the trash until {expires}" if row else "not found",
            )
        if row is None:
            raise NotFound("credential", ref)
        return expires

    # -- history ------------------------------------------------------------------------------
    def _snapshot(
        self, eng: Engagement, key: bytes, row: CredentialRow, changed: Iterable[str]
    ) -> None:
        """Keep the live ``row`` as an earlier version and number the next one.

        The old values are re-sealed at the version's own place (``items.version_place``);
        they pass through this process only inside :class:`Secret` wrappers. Caller's
        transaction, before the live row is changed.
        """
        s = self.s
        n = row.version
        record = _binding(row)
        old = [
            _wrap(items.open_(s, eng, key, TABLE, row.uid, f, row.envelope(f), record))
            for f in items.CRED_FIELDS
        ]
        vrecord = items.version_binding(row.name, row.kind, row.system)
        envs = [
            items.seal_version(s, eng, key, row.uid, f, n, _rv(v), vrecord)
            for f, v in zip(items.CRED_FIELDS, old, strict=True)
        ]
        del old
        secret_env = envs[0]
        assert secret_env is not None
        s.store.insert_version(
            eng.id,
            NewVersion(
                row.uid, n, row.name, row.kind, row.system, secret_env, envs[1], envs[2],
                envs[3], row.updated_at, row.updated_by, row.changed,
            ),
        )  # fmt: skip
        s.store.set_credential_version(
            row.id, n + 1, s.member, ", ".join(dict.fromkeys(changed)) or "nothing"
        )

    def history(self, ref: str) -> builtins.list[VersionInfo]:
        """Every version of a credential, oldest first: who, when, what changed. No values."""
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        s.check("credential.history", self.e.role_of(eng), eng.name, name)
        row = s.store.credential(eng.id, name)
        if row is None:
            with s.store.write():  # an attempt that found nothing is on the record too
                s.log("history", eng.name, name, "error", "not found")
            raise NotFound("credential", ref)
        out = [
            VersionInfo(
                eng.name, v.name, v.version, v.kind, v.system, v.created_by, v.created_at,
                v.changed, False,
            )
            for v in s.store.versions(row.uid)
        ]  # fmt: skip
        out.append(
            VersionInfo(
                eng.name, row.name, row.version, row.kind, row.system, row.updated_by,
                row.updated_at, row.changed, True,
            )
        )  # fmt: skip
        with s.store.write():
            s.log("history", eng.name, name, "ok", f"{len(out)} versions")
        return out

    def _get_version(
        self, eng: Engagement, key: bytes, row: CredentialRow, version: int, reason: str | None
    ) -> Credential:
        s = self.s
        ref = f"{eng.name}/{row.name}"
        v = s.store.version(row.uid, version)
        if v is None:
            with s.store.write():
                s.log("get", eng.name, row.name, "error", f"no version {version}")
            raise NotFound("version", ref, f"{ref} has no version {version}")
        try:
            vrecord = items.version_binding(v.name, v.kind, v.system)
            secret_value, username, url, notes = [
                _wrap(items.open_version(s, eng, key, row.uid, f, version, v.envelope(f), vrecord))
                for f in items.CRED_FIELDS
            ]
        except IntegrityError:
            with s.store.write():
                s.log("get", eng.name, row.name, "error", f"version {version}: integrity failed")
            raise
        detail = f"version {version}" + (f"; reason: {reason}" if reason else "")
        with s.store.write():  # fail closed, as for the current version
            s.log("get", eng.name, row.name, "ok", detail)
        assert secret_value is not None
        return Credential(
            eng.name, row.name, v.kind, secret_value, _text(username), v.system, None, None,
            _text(url), _text(notes), row.created_at, v.created_at,
        )  # fmt: skip

    @retried
    def revert(self, ref: str, version: int) -> CredentialInfo:
        """Make an earlier version current again (as a new version: nothing is lost)."""
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.revert", item=name)
        self.e.rotate_if_needed(eng)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "credential.revert", name)
        with s.store.write():
            self.e.assert_current(eng)
            row = s.store.credential(eng.id, name)
            if row is None:
                raise NotFound("credential", ref)
            v = s.store.version(row.uid, version)
            if v is None:
                raise NotFound("version", ref, f"{ref} has no version {version}")
            vrecord = items.version_binding(v.name, v.kind, v.system)
            values = [
                _wrap(items.open_version(s, eng, key, row.uid, f, version, v.envelope(f), vrecord))
                for f in items.CRED_FIELDS
            ]
            srow = s.store.system(eng.id, v.system) if v.system else None
            record = items.credential_binding(row.name, v.kind, srow.uid if srow else None)
            envs = {
                f: items.seal(s, eng, key, TABLE, row.uid, f, _rv(val), record)
                for f, val in zip(items.CRED_FIELDS, values, strict=True)
            }
            del values
            self._snapshot(eng, key, row, [f"revert to version {version}"])
            s.store.set_credential_fields(row.id, s.now(), v.kind, srow.id if srow else None, envs)
            s.log("revert", eng.name, name, "ok", f"to version {version}")
        return self.info(eng, name)

    # -- edit without revealing ---------------------------------------------------------------
    @retried
    def edit(self, ref: str, changes: Mapping[str, str | None]) -> CredentialInfo:
        """Change username, url, notes, kind or system (None clears) without the secret.

        The secret is neither returned nor asked for: the audit trail records an ``edit``
        naming the fields, never a read. The previous version is kept (:meth:`history`).
        """
        s = self.s
        eng_name, name = validate.ref(ref)
        clean = clean_edits(changes)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.edit", item=name)
        self.e.rotate_if_needed(eng)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "credential.edit", name)
        with s.store.write():
            self.e.assert_current(eng)
            row = s.store.credential(eng.id, name)
            if row is None:
                s.log("edit", eng.name, name, "error", "not found")
                raise NotFound("credential", ref)
            kind = clean.get("kind") or row.kind
            sys_id, sys_uid = row.system_id, row.system_uid
            if "system" in clean:
                sys_id = sys_uid = None
                if clean["system"] is not None:
                    srow = s.store.system(eng.id, clean["system"])
                    if srow is None:
                        raise NotFound("system", f"{eng.name}/{clean['system']}")
                    sys_id, sys_uid = srow.id, srow.uid
            record = items.credential_binding(row.name, kind, sys_uid)
            envs: dict[str, bytes | None] = {
                f: items.seal(s, eng, key, TABLE, row.uid, f, _b(clean[f]))
                for f in ("username", "url", "notes")
                if f in clean
            }
            # The secret is the anchor: re-sealed for the new kind and link (never returned).
            envs["secret"] = _rebind(
                s, eng, key, TABLE, row.uid, row.secret_env, _binding(row), record
            )
            self._snapshot(eng, key, row, clean)
            s.store.set_credential_fields(row.id, s.now(), kind, sys_id, envs)
            s.log("edit", eng.name, name, "ok", "changed " + ", ".join(clean))
        return self.info(eng, name)

    def fields(
        self,
        ref: str,
        *,
        reason: str | None = None,
        system: bool = False,
        via: str | None = None,
        version: int | None = None,
    ) -> dict[str, str | None]:
        """The non-secret fields (``credvault edit``, ``get --field username|url|notes``):
        audited as ``show``, not ``get``, so ``revoke`` does not ask to rotate a secret the
        member never saw; ``reason`` as for ``get``. With ``system`` the linked system's
        ``address`` and ``port`` come too (``get --field address|port``), audited the same
        way: the secret was not read. ``via`` as for :meth:`get` (``run``). ``version``: the
        fields of that earlier version (``get --version N --field username``)."""
        s = self.s
        eng_name, name = validate.ref(ref)
        reason = validate.reason(reason)
        eng = self.e.get(eng_name)
        s.require_reason(eng, "credential.show", name, reason)
        if via:  # what the audit detail says: the command, then the member's own reason
            reason = (f"{via}: {reason}" if reason else via)[:200]
        key = self.e.key(eng, "credential.show", name)
        row = s.store.credential(eng.id, name)
        if row is None:
            with s.store.write():
                s.log("show", eng.name, name, "error", "not found")
            raise NotFound("credential", ref)
        out: dict[str, str | None] = {"kind": row.kind, "system": row.system}
        what = "fields without the secret"
        if version is not None:
            v = s.store.version(row.uid, version)
            if v is None:
                with s.store.write():
                    s.log("show", eng.name, name, "error", f"no version {version}")
                raise NotFound("version", ref, f"{ref} has no version {version}")
            out = {"kind": v.kind, "system": v.system}
            vrecord = items.version_binding(v.name, v.kind, v.system)
            # the version's anchor (its secret) vouches for its clear columns: opened for
            # that alone, kept in its wrapper and dropped
            for f in items.CRED_FIELDS:
                value = items.open_version(s, eng, key, row.uid, f, version, v.envelope(f), vrecord)
                if f == "secret":
                    _wrap(value)  # never a plain local past this line
                else:
                    out[f] = _s(value)
                del value
            what = f"version {version}: fields without the secret"
        else:
            # kind and system are clear columns: the anchor (the secret) vouches for them.
            # It is opened for that alone, kept in its wrapper and dropped.
            _wrap(items.open_(s, eng, key, TABLE, row.uid, "secret", row.secret_env, _binding(row)))
            for f in items.CRED_FIELDS[1:]:
                out[f] = _s(items.open_(s, eng, key, TABLE, row.uid, f, row.envelope(f)))
        if system:
            out["address"] = out["port"] = None
            srow = s.store.system_by_id(row.system_id) if row.system_id is not None else None
            if srow is not None:
                # the address's AAD binds the system's name, port and protocol
                rec = items.system_binding(srow.name, srow.port, srow.protocol)
                out["address"] = _s(
                    items.open_(s, eng, key, "systems", srow.uid, "address", srow.address_env, rec)
                )
                out["port"] = None if srow.port is None else str(srow.port)
            what = "system address and port, without the secret"
        with s.store.write():
            s.log("show", eng.name, name, "ok", what + (f"; reason: {reason}" if reason else ""))
        return {k: out[k] for k in (*EDITABLE, *(("address", "port") if system else ()))}

    # -- trash --------------------------------------------------------------------------------
    def restore(self, ref: str) -> CredentialInfo:
        """Bring the most recently removed credential of that name back from the trash."""
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.restore", item=name)
        self.e.key(eng, "credential.restore", name)
        with s.store.write():
            hit = next(
                (t for t in s.store.trash(eng.id) if t.type == "credential" and t.name == name),
                None,
            )
            if hit is None:
                raise NotFound("credential", ref, f"{ref} is not in the trash")
            if s.store.credential(eng.id, name) is not None:
                raise AlreadyExists(f"credential {ref} exists; rename it first (credvault mv)")
            s.store.untrash_credential(hit.id)
            s.log("restore", eng.name, name, "ok", f"removed {hit.deleted_at} by {hit.deleted_by}")
        return self.info(eng, name)

    def trash(self, engagement: str) -> builtins.list[TrashInfo]:
        """What is in an engagement's trash (names and dates) and until when."""
        s = self.s
        eng = self.e.get(engagement)
        s.check("credential.trash", self.e.role_of(eng), eng.name)
        out = [
            TrashInfo(eng.name, t.type, t.name, t.deleted_at, t.deleted_by, t.expires_at)
            for t in s.store.trash(eng.id)
        ]
        with s.store.write():
            s.log("trash", eng.name, None, "ok", f"{len(out)} items in the trash")
        return out

    # -- rename and move ------------------------------------------------------------------------
    @retried
    def move(self, ref: str, target: str) -> CredentialInfo:
        """Rename within an engagement (``NEW``) or move into another (``ENG2/NEW``).

        A move needs write roles on both; the credential, its history included, is
        re-sealed under the target engagement's key and both trails record it. The link
        to a system does not travel (systems belong to one engagement).
        """
        s = self.s
        eng_name, name = validate.ref(ref)
        if "/" in target:
            t_eng_name, t_name = validate.ref(target)
        else:
            t_eng_name, t_name = eng_name, validate.name(target, "item name")
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="credential.move", item=name)
        if t_eng_name == eng_name:
            self.e.rotate_if_needed(eng)  # the name is bound: the secret is sealed again
            eng = self.e.get(eng_name)
            key = self.e.key(eng, "credential.move", name)
            with s.store.write():
                self.e.assert_current(eng)
                row = s.store.credential(eng.id, name)
                if row is None:
                    raise NotFound("credential", ref)
                if s.store.credential(eng.id, t_name) is not None:
                    raise AlreadyExists(f"credential {eng.name}/{t_name} exists already")
                renamed = items.credential_binding(t_name, row.kind, row.system_uid)
                anchor = _rebind(
                    s, eng, key, TABLE, row.uid, row.secret_env, _binding(row), renamed
                )
                s.store.rename_credential(row.id, t_name, s.now())
                s.store.set_anchor(TABLE, row.id, anchor)
                s.log("mv", eng.name, name, "ok", f"renamed to {t_name}")
            return self.info(eng, t_name)
        teng = self.e.get(t_eng_name)
        self.e.require_active(teng, operation="credential.move", item=t_name)
        for e in (eng, teng):
            self.e.rotate_if_needed(e)
        eng, teng = self.e.get(eng_name), self.e.get(t_eng_name)
        key = self.e.key(eng, "credential.move", name)
        tkey = self.e.key(teng, "credential.move", t_name)
        with s.store.write():
            self.e.assert_current(eng)
            self.e.assert_current(teng)
            row = s.store.credential(eng.id, name)
            if row is None:
                raise NotFound("credential", ref)
            if s.store.credential(teng.id, t_name) is not None:
                raise AlreadyExists(f"credential {teng.name}/{t_name} exists already")
            uid = row.uid
            record = _binding(row)
            live = [
                _wrap(items.open_(s, eng, key, TABLE, uid, f, row.envelope(f), record))
                for f in items.CRED_FIELDS
            ]
            moved_record = items.credential_binding(t_name, row.kind, None)  # link stays behind
            envs = [
                items.seal(s, teng, tkey, TABLE, uid, f, _rv(v), moved_record)
                for f, v in zip(items.CRED_FIELDS, live, strict=True)
            ]
            del live
            vrows = []
            for v in s.store.versions(uid):
                vrecord = items.version_binding(v.name, v.kind, v.system)
                old = [
                    _wrap(
                        items.open_version(s, eng, key, uid, f, v.version, v.envelope(f), vrecord)
                    )
                    for f in items.CRED_FIELDS
                ]
                vmoved = items.version_binding(t_name, v.kind, None)  # as move_versions writes
                new = tuple(
                    items.seal_version(s, teng, tkey, uid, f, v.version, _rv(o), vmoved)
                    for f, o in zip(items.CRED_FIELDS, old, strict=True)
                )
                del old
                vrows.append(SealedRow(v.id, uid, new))
            secret_env = envs[0]
            assert secret_env is not None
            s.store.delete_credential(row.id)
            s.store.insert_credential(
                teng.id,
                NewCredential(
                    uid, t_name, row.kind, None, secret_env, envs[1], envs[2], envs[3],
                    row.created_at, s.now(), row.updated_by,
                ),
            )  # fmt: skip
            moved = s.store.credential(teng.id, t_name)
            assert moved is not None
            s.store.set_credential_version(moved.id, row.version, row.updated_by, row.changed)
            s.store.move_versions(uid, teng.id, t_name)
            s.store.set_sealed_rows(items.VERSIONS, vrows)
            s.log("mv", eng.name, name, "ok", f"moved to {teng.name}/{t_name}")
            s.log("mv", teng.name, t_name, "ok", f"moved from {eng.name}/{name}")
        return self.info(teng, t_name)

    # -- search -------------------------------------------------------------------------------
    def find(self, text: str, *, fields: bool = True, reason: str | None = None) -> FindHits:
        """Credentials and systems matching ``text`` (case-insensitive substring).

        Names in every engagement the member may list; usernames, URLs, notes, addresses and
        details only where the member may read (decrypted here, never sent anywhere) and,
        in an engagement that requires a reason for reads, only given ``reason``. Each
        engagement whose fields were searched gets a ``find`` entry before results return.
        Hits name the field that matched, never its value.
        """
        s = self.s
        needle = validate.text(text, "search text", max_len=256, multiline=False)
        reason = validate.reason(reason)
        if not needle or not needle.strip():
            raise InvalidInput("the search text is empty")
        low = needle.lower()
        listable: dict[int, Engagement] = {}
        readable: builtins.list[Engagement] = []
        skipped: builtins.list[str] = []
        for eng in self.e.list():
            if eng.state == "purged":
                continue
            role = self.e.role_of(eng)
            if not permits("credential.list", role, admin=s.is_admin):
                continue
            listable[eng.id] = eng
            if fields and permits("credential.find", role, admin=False):
                if s.lacks_reason(eng, reason):
                    skipped.append(eng.name)  # names only: a field search is a read (an oracle)
                    continue
                readable.append(eng)
        hits: builtins.list[FindHit] = [
            FindHit(listable[eid].name, typ, name, "name")
            for eid, typ, name in s.store.search_names(builtins.list(listable), low)
        ]
        seen = {(h.engagement, h.type, h.name) for h in hits}
        searched = []
        for eng in readable:
            try:
                key = self.e.key(eng, "credential.find")
            except CredvaultError:
                continue
            searched.append(eng)
            for r in s.store.credentials(eng.id):
                if (eng.name, "credential", r.name) in seen:
                    continue
                for f in items.CRED_FIELDS[1:]:
                    val = _wrap(items.open_(s, eng, key, TABLE, r.uid, f, r.envelope(f)))
                    if val is not None and low in val.reveal_text().lower():
                        hits.append(FindHit(eng.name, "credential", r.name, f))
                        break
            for sr in s.store.systems(eng.id):
                if (eng.name, "system", sr.name) in seen:
                    continue
                srec = items.system_binding(sr.name, sr.port, sr.protocol)
                for f, blob in (("address", sr.address_env), ("details", sr.details_env)):
                    val = _wrap(items.open_(s, eng, key, "systems", sr.uid, f, blob, srec))
                    if val is not None and low in val.reveal_text().lower():
                        hits.append(FindHit(eng.name, "system", sr.name, f))
                        break
        counts: dict[str, int] = {}
        for h in hits:
            counts[h.engagement] = counts.get(h.engagement, 0) + 1
        with s.store.write():  # fail closed: the searches are on record before results leave
            for eng in searched:
                n = counts.get(eng.name, 0)
                why = f"; reason: {reason}" if reason else ""
                s.log("find", eng.name, None, "ok", f"fields searched; {n} matches{why}")
            s.log("find", None, None, "ok", f"{len(hits)} matches in {len(listable)} engagements")
        hits.sort(key=lambda h: (h.engagement, h.type, h.name))
        result = FindHits(hits)
        result.skipped = tuple(skipped)
        return result

    # -- import -------------------------------------------------------------------------------
    def import_entries(
        self,
        engagement: str,
        entries: Iterable[RawEntry | Skipped],
        *,
        dry_run: bool = False,
    ) -> ImportPlan:
        """Store what an import source holds (see :mod:`credvault.importers`), all or nothing.

        Names are checked against the engagement as it is (existing ones are skipped, never
        overwritten), hosts that match an existing system link to it. With ``dry_run`` the
        plan is returned and nothing is written but an audit entry.
        """
        from credvault.importers import build_plan

        s = self.s
        eng = self.e.get(engagement)
        self.e.require_active(eng, operation="credential.import")
        self.e.rotate_if_needed(eng)
        eng = self.e.get(engagement)
        key = self.e.key(eng, "credential.import")
        existing_sys: dict[str, tuple[str, int | None, str | None]] = {}
        for sr in s.store.systems(eng.id):
            addr = items.open_(
                s, eng, key, "systems", sr.uid, "address", sr.address_env,
                items.system_binding(sr.name, sr.port, sr.protocol),
            )  # fmt: skip
            existing_sys[sr.name] = (addr.decode() if addr else "", sr.port, sr.protocol)
        plan = build_plan(
            entries,
            existing_credentials=s.store.credential_names(eng.id),
            existing_systems=existing_sys,
        )
        summary = (
            f"{len(plan.items)} credentials, {len(plan.systems)} systems, "
            f"{len(plan.skipped)} skipped"
        )
        if dry_run:
            with s.store.write():
                s.log("import", eng.name, None, "ok", f"dry run: {summary}")
            return plan
        now = s.now()
        with s.store.write():
            self.e.assert_current(eng)
            taken = s.store.credential_names(eng.id)
            clash = next((i.name for i in plan.items if i.name in taken), None)
            if clash is not None:
                raise AlreadyExists(f"credential {eng.name}/{clash} was created meanwhile")
            for sysp in plan.systems:
                if s.store.system(eng.id, sysp.name) is not None:
                    raise AlreadyExists(f"system {eng.name}/{sysp.name} was created meanwhile")
                suid = os.urandom(16)
                addr_env = items.seal(
                    s, eng, key, "systems", suid, "address", sysp.address.encode(),
                    items.system_binding(sysp.name, sysp.port, sysp.protocol),
                )  # fmt: skip
                assert addr_env is not None
                s.store.upsert_system(
                    eng.id,
                    NewSystem(suid, sysp.name, sysp.port, sysp.protocol, addr_env, None, now, now),
                )
            sys_ids = {
                n: (srow.id, srow.uid)
                for n in {i.system for i in plan.items if i.system}
                if (srow := s.store.system(eng.id, n)) is not None
            }
            rows = []
            for it in plan.items:
                uid = os.urandom(16)
                link = sys_ids.get(it.system) if it.system else None
                record = items.credential_binding(it.name, it.kind, link[1] if link else None)

                def seal(
                    field: str,
                    value: bytes | None,
                    uid: bytes = uid,
                    record: items.Binding = record,
                ) -> bytes | None:
                    return items.seal(s, eng, key, TABLE, uid, field, value, record)

                secret_env = seal("secret", it.secret.reveal())
                assert secret_env is not None
                rows.append(
                    NewCredential(
                        uid, it.name, it.kind, link[0] if link else None,
                        secret_env, seal("username", _b(it.username)), seal("url", _b(it.url)),
                        seal("notes", _b(it.notes)), now, now, s.member,
                    )
                )  # fmt: skip
            s.store.insert_credentials(eng.id, rows)
            s.log("import", eng.name, None, "ok", summary)
        return plan

    def export_history(self, eng: Engagement) -> dict[str, builtins.list[dict[str, object]]]:
        """Earlier versions and the trash of ``eng``, decrypted, for a client export: what
        the vault holds about the client includes them (audit entry by the caller)."""
        s = self.s
        key = self.e.key(eng, "client.export")

        def record(values: builtins.list[bytes | None], **meta: object) -> dict[str, object]:
            secret, username, url, notes = values
            assert secret is not None
            d = dict(meta)
            try:
                d["secret"] = secret.decode("utf-8")
            except UnicodeDecodeError:
                d["secret_base64"] = base64.b64encode(secret).decode()
            d.update(username=_s(username), url=_s(url), notes=_s(notes))
            return d

        names = {r.uid: r.name for r in s.store.credentials(eng.id)}
        versions = [
            record(
                [
                    items.open_version(
                        s, eng, key, v.credential_uid, f, v.version, v.envelope(f),
                        items.version_binding(v.name, v.kind, v.system),
                    )
                    for f in items.CRED_FIELDS
                ],
                name=names.get(v.credential_uid, v.name), version=v.version, kind=v.kind,
                system=v.system, created_at=v.created_at, created_by=v.created_by,
                changed=v.changed,
            )
            for v in s.store.engagement_versions(eng.id)
        ]  # fmt: skip
        trash = []
        for t in s.store.trash(eng.id):
            trashed = "credential_trash" if t.type == "credential" else "system_trash"
            row = s.store.sealed_row(trashed, t.id)
            if row is None:  # pragma: no cover - listed in the same transaction
                raise IntegrityError("trash entry vanished")
            fields = items.CRED_FIELDS if t.type == "credential" else items.SYS_FIELDS
            table = "credentials" if t.type == "credential" else "systems"
            bound = items.binding_of(trashed, row.meta)  # trashed rows keep their bindings
            values = [
                items.open_(s, eng, key, table, t.uid, f, b, bound)
                for f, b in zip(fields, row.blobs, strict=True)
            ]
            meta = {"type": t.type, "name": t.name, "deleted_at": t.deleted_at,
                    "deleted_by": t.deleted_by, "expires_at": t.expires_at}  # fmt: skip
            if t.type == "credential":
                trash.append(record(values, **meta))
            else:
                addr, det = values
                trash.append({**meta, "address": _s(addr), "details": _s(det)})
        return {"earlier_versions": versions, "trash": trash}

    def export_engagement(self, eng: Engagement) -> builtins.list[Credential]:
        """Every credential decrypted, for a client export (audit entry by the caller)."""
        s = self.s
        key = self.e.key(eng, "client.export")
        out = []
        for row in s.store.credentials(eng.id):
            record = _binding(row)
            secret, username, url, notes = [
                items.open_(s, eng, key, TABLE, row.uid, n, row.envelope(n), record)
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


def _binding(row: CredentialRow) -> items.Binding:
    """What a live credential's anchor (its secret) is bound to: name, kind, system link."""
    return items.credential_binding(row.name, row.kind, row.system_uid)


def _rebind(
    s: Session,
    eng: Engagement,
    key: bytes,
    table: str,
    uid: bytes,
    blob: bytes,
    old: items.Binding,
    new: items.Binding,
) -> bytes:
    """The anchor ``blob`` opened under its ``old`` binding and sealed again under ``new``
    (a rename, a new kind or link): the value stays inside a :class:`Secret`."""
    value = _wrap(items.open_(s, eng, key, table, uid, "secret", blob, old))
    sealed = items.seal(s, eng, key, table, uid, "secret", _rv(value), new)
    del value
    assert sealed is not None
    return sealed


def _info(eng: Engagement, row: CredentialRow) -> CredentialInfo:
    return CredentialInfo(eng.name, row.name, row.kind, row.system, row.created_at, row.updated_at)


def _b(v: str | None) -> bytes | None:
    return None if v is None else v.encode()


def _rv(v: Secret | None) -> bytes | None:
    return None if v is None else v.reveal()


def _wrap(v: bytes | None) -> Secret | None:
    return None if v is None else Secret(v)


def _text(v: Secret | None) -> str | None:
    return None if v is None else v.reveal_text()


def _s(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", errors="replace")
