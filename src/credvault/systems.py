"""Systems (hosts) of an engagement: address and details in envelopes, port and protocol not.

Name, port and protocol are clear columns bound in the AAD of the address envelope (the
system's anchor, :mod:`credvault.items`); the credentials linked to a system are bound to
its uid, so removing or restoring the system seals their anchors again.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import NamedTuple

from credvault import items, validate
from credvault.engagement_keys import retried
from credvault.engagements import Engagements
from credvault.errors import AlreadyExists, InvalidInput, NotFound
from credvault.model import Engagement, NewSystem, SystemRow
from credvault.session import Session

TABLE = "systems"


class System(NamedTuple):
    engagement: str
    name: str
    address: str | None  # None in listings (only reading roles see it)
    port: int | None
    protocol: str | None
    details: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, object]:
        return self._asdict()


def clean_changes(changes: Mapping[str, object]) -> dict[str, object]:
    """``system set``'s fields checked and normalised, always in the order address, port,
    protocol, details (the audit's "changed …" follows it); one home for both backends (the
    team vault's ``system set`` calls it too)."""
    unknown = sorted(set(changes) - {"address", "port", "protocol", "details"})
    if unknown:
        raise InvalidInput(f"unknown system field {unknown[0]!r}")
    if not changes:
        raise InvalidInput("nothing to change")
    clean: dict[str, object] = {}
    if "address" in changes:
        clean["address"] = validate.address(changes["address"])
    if "port" in changes:
        clean["port"] = validate.port(changes["port"])  # type: ignore[arg-type]
    if "protocol" in changes:
        proto = validate.text(changes["protocol"], "protocol", max_len=32, multiline=False)  # type: ignore[arg-type]
        clean["protocol"] = None if proto is None else validate.name(proto, "protocol")
    if "details" in changes:
        clean["details"] = validate.text(changes["details"], "details")  # type: ignore[arg-type]
    return clean


class Systems:
    def __init__(self, s: Session, engagements: Engagements) -> None:
        self.s = s
        self.e = engagements

    def add(
        self,
        ref: str,
        address: str,
        *,
        port: int | str | None = None,
        protocol: str | None = None,
        details: str | None = None,
    ) -> System:
        """Create a system; on an existing one, change only what is given (see :meth:`set`)."""
        given = (("port", port), ("protocol", protocol), ("details", details))
        changes: dict[str, object] = {"address": address} | {
            k: v for k, v in given if v is not None
        }
        return self.set(ref, changes, create=True)

    @retried
    def set(self, ref: str, changes: Mapping[str, object], *, create: bool = False) -> System:
        """Change a system field by field: address, port, protocol, details (None clears
        all but the address). What is not named keeps its value."""
        s = self.s
        eng_name, name = validate.ref(ref)
        clean = clean_changes(changes)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="system.add" if create else "system.set", item=name)
        self.e.rotate_if_needed(eng)  # never seal under a key that is due to go
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "system.add" if create else "system.set", name)
        now = s.now()
        with s.store.write():
            self.e.assert_current(eng)
            row = s.store.system(eng.id, name)
            if row is None and not create:
                s.log("system-set", eng.name, name, "error", "not found")
                raise NotFound("system", ref)
            if row is None:
                uid = os.urandom(16)
                addr = str(clean["address"])
                port_n = clean.get("port")
                protocol = clean.get("protocol")
                details = clean.get("details")
                created = now
            else:
                uid = row.uid
                old_addr = items.open_(
                    s, eng, key, TABLE, uid, "address", row.address_env, _binding(row)
                )
                old_det = items.open_(s, eng, key, TABLE, uid, "details", row.details_env)
                addr = str(clean.get("address", old_addr.decode() if old_addr else ""))
                port_n = clean.get("port", row.port)
                protocol = clean.get("protocol", row.protocol)
                details = clean.get("details", None if old_det is None else old_det.decode())
                created = row.created_at
            record = items.system_binding(name, port_n, protocol)
            address_env = items.seal(s, eng, key, TABLE, uid, "address", addr.encode(), record)
            assert address_env is not None
            details_b = None if details is None else str(details).encode()
            s.store.upsert_system(
                eng.id,
                NewSystem(
                    uid,
                    name,
                    port_n,  # type: ignore[arg-type]
                    protocol,  # type: ignore[arg-type]
                    address_env,
                    items.seal(s, eng, key, TABLE, uid, "details", details_b),
                    created,
                    now,
                ),
            )
            if row is None:
                s.log("system-add", eng.name, name, "ok")
            else:
                s.log(
                    "system-update" if create else "system-set",
                    eng.name,
                    name,
                    "ok",
                    "changed " + ", ".join(clean),
                )
        return System(
            eng.name,
            name,
            addr,
            port_n,  # type: ignore[arg-type]
            protocol,  # type: ignore[arg-type]
            None if details is None else str(details),
            created,
            now,
        )

    def list(self, engagement: str) -> builtins.list[System]:
        eng = self.e.get(engagement)
        self.s.check("system.list", self.e.role_of(eng), eng.name)
        out = [
            System(eng.name, r.name, None, r.port, r.protocol, None, r.created_at, r.updated_at)
            for r in self.s.store.systems(eng.id)
        ]
        with self.s.store.write():
            self.s.log("system-ls", eng.name, None, "ok", f"{len(out)} systems listed")
        return out

    def show(self, ref: str, *, reason: str | None = None) -> System:
        """A system's address and details (client data): audited; with the engagement's
        ``require_reason`` a reason is mandatory, as for ``get``."""
        s = self.s
        eng_name, name = validate.ref(ref)
        reason = validate.reason(reason)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "system.show", name)
        if eng.require_reason and not reason:
            raise s.deny("system-show", eng.name, name, "this engagement requires --reason")
        r = s.store.system(eng.id, name)
        if r is None:
            with s.store.write():  # an attempt that found nothing is on the record too
                s.log("system-show", eng.name, name, "error", "not found")
            raise NotFound("system", ref)
        system = _opened(s, eng, key, r)
        with s.store.write():
            s.log("system-show", eng.name, name, "ok", f"reason: {reason}" if reason else "")
        return system

    def remove(self, ref: str) -> str:
        """Move a system to the trash; returns when it expires. Credentials linked to it
        lose the link, and get it back if the system is restored."""
        import json

        from credvault.credentials import trash_expiry

        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="system.remove", item=name)
        self.e.rotate_if_needed(eng)  # linked credentials are sealed again: the current key
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "system.remove", name)
        expires = trash_expiry(s)
        with s.store.write():
            self.e.assert_current(eng)
            row = s.store.system(eng.id, name)
            if row is not None:
                linked = [u.hex() for u in s.store.credentials_linked_to(row.id)]
                _rebind_links(s, eng, key, row.id, row.uid, None)  # they lose the link
                s.store.trash_system(row.id, s.now(), s.member, expires, json.dumps(linked))
            s.log(
                "system-rm",
                eng.name,
                name,
                "ok" if row else "error",
                f"to the trash until {expires}" if row else "not found",
            )
        if row is None:
            raise NotFound("system", ref)
        return expires

    def restore(self, ref: str) -> None:
        """Bring the most recently removed system of that name back, links included."""
        import json

        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng, operation="system.restore", item=name)
        self.e.rotate_if_needed(eng)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "system.restore", name)
        with s.store.write():
            self.e.assert_current(eng)
            hit = next(
                (t for t in s.store.trash(eng.id) if t.type == "system" and t.name == name), None
            )
            if hit is None:
                raise NotFound("system", ref, f"{ref} is not in the trash")
            if s.store.system(eng.id, name) is not None:
                raise AlreadyExists(f"system {ref} exists")
            sys_id = s.store.untrash_system(hit.id)
            uids = [bytes.fromhex(u) for u in json.loads(hit.linked)]
            relinked = s.store.credentials_by_uid(uids) if uids else []
            for cred_id in relinked:
                s.store.link_credential(cred_id, sys_id)
            if uids:  # and the ones still in the trash: restored later, they come back linked
                s.store.relink_trashed_credentials(uids, sys_id)
            _rebind_links(s, eng, key, sys_id, None, hit.uid)  # bound to the link again
            s.log("system-restore", eng.name, name, "ok", f"{len(relinked)} credentials relinked")

    def export_engagement(self, eng_name: str) -> builtins.list[System]:
        s = self.s
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "client.export")
        return [_opened(s, eng, key, r) for r in s.store.systems(eng.id)]


def _binding(r: SystemRow) -> items.Binding:
    """What a system's anchor (its address) is bound to: name, port, protocol."""
    return items.system_binding(r.name, r.port, r.protocol)


def _rebind_links(
    s: Session,
    eng: Engagement,
    key: bytes,
    sys_id: int,
    old_uid: bytes | None,
    new_uid: bytes | None,
) -> None:
    """Seal again the anchors of the credentials (live and trashed) linked to ``sys_id``,
    from a link to ``old_uid`` to one to ``new_uid`` (``None``: no link). The caller's
    transaction, before the link changes (a removal) or after (a restore)."""
    from credvault.secret import Secret

    for table, row in s.store.linked_rows(sys_id):
        name, kind, _ = row.meta
        place = "credentials"  # a trashed row keeps its live place
        old = items.credential_binding(name, kind, old_uid)
        value = items.open_(s, eng, key, place, row.uid, "secret", row.blobs[0], old)
        assert value is not None
        wrapped = Secret(value)
        del value
        new = items.credential_binding(name, kind, new_uid)
        blob = items.seal(s, eng, key, place, row.uid, "secret", wrapped.reveal(), new)
        assert blob is not None
        s.store.set_anchor(table, row.id, blob)


def _opened(s: Session, eng: Engagement, key: bytes, r: SystemRow) -> System:
    """A stored system with its address and details decrypted."""
    addr = items.open_(s, eng, key, TABLE, r.uid, "address", r.address_env, _binding(r))
    det = items.open_(s, eng, key, TABLE, r.uid, "details", r.details_env)
    return System(
        eng.name,
        r.name,
        addr.decode() if addr else None,
        r.port,
        r.protocol,
        det.decode() if det is not None else None,
        r.created_at,
        r.updated_at,
    )
