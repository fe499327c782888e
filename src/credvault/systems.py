"""Systems (hosts) of an engagement: address and details in envelopes, port and protocol not."""

from __future__ import annotations

import builtins
import os
from typing import NamedTuple

from credvault import items, validate
from credvault.access import Action
from credvault.engagements import Engagements
from credvault.errors import NotFound
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
        s = self.s
        eng_name, name = validate.ref(ref)
        addr = validate.address(address)
        port_n = validate.port(port)
        protocol = validate.text(protocol, "protocol", max_len=32, multiline=False)
        if protocol is not None:
            validate.name(protocol, "protocol")
        details = validate.text(details, "details")
        eng = self.e.get(eng_name)
        self.e.require_active(eng)
        key = self.e.key(eng, "system add", Action.WRITE, name)
        now = s.now()
        with s.store.write():
            self.e.assert_current(eng)
            row = s.store.system(eng.id, name)
            uid = os.urandom(16) if row is None else row.uid
            address_env = items.seal(s, eng, key, TABLE, uid, "address", addr.encode())
            assert address_env is not None
            details_b = details.encode() if details is not None else None
            s.store.upsert_system(
                eng.id,
                NewSystem(
                    uid,
                    name,
                    port_n,
                    protocol,
                    address_env,
                    items.seal(s, eng, key, TABLE, uid, "details", details_b),
                    now,
                    now,
                ),
            )
            s.log("system-add" if row is None else "system-update", eng.name, name, "ok")
        return System(eng.name, name, addr, port_n, protocol, details, now, now)

    def list(self, engagement: str) -> builtins.list[System]:
        eng = self.e.get(engagement)
        self.s.check(Action.LIST, self.e.role_of(eng), "list systems", eng.name)
        out = [
            System(eng.name, r.name, None, r.port, r.protocol, None, r.created_at, r.updated_at)
            for r in self.s.store.systems(eng.id)
        ]
        with self.s.store.write():
            self.s.log("system-ls", eng.name, None, "ok", f"{len(out)} systems listed")
        return out

    def show(self, ref: str) -> System:
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "system show", Action.READ, name)
        r = s.store.system(eng.id, name)
        if r is None:
            raise NotFound("system", ref)
        system = _opened(s, eng, key, r)
        with s.store.write():
            s.log("system-show", eng.name, name, "ok")
        return system

    def remove(self, ref: str) -> None:
        s = self.s
        eng_name, name = validate.ref(ref)
        eng = self.e.get(eng_name)
        self.e.require_active(eng)
        self.e.key(eng, "system rm", Action.WRITE, name)
        found = items.remove_audited(
            s, eng, name, "system-rm", lambda: s.store.system(eng.id, name), s.store.delete_system
        )
        if not found:
            raise NotFound("system", ref)

    def export_engagement(self, eng_name: str) -> builtins.list[System]:
        s = self.s
        eng = self.e.get(eng_name)
        key = self.e.key(eng, "export", Action.READ)
        return [_opened(s, eng, key, r) for r in s.store.systems(eng.id)]


def _opened(s: Session, eng: Engagement, key: bytes, r: SystemRow) -> System:
    """A stored system with its address and details decrypted."""
    addr = items.open_(s, eng, key, TABLE, r.uid, "address", r.address_env)
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
