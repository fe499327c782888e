"""A stateful model of spec §3: random members, grants, revokes, recoveries, puts, gets and
removals on one engagement, checked against a small model whose oracle is the role table
(``credvault.access.allowed``) plus "an admin without a grant reads and writes nothing".

Every action the model allows must succeed with the modelled result; every other one must be
AccessDenied. (The oracle is checked against the table of the spec written out here.)
After every step the key copies in the database match the model (a sealed copy
for reading roles only), and key material a member ever held opens no envelope once the model
says they may not read (and the engagement has rotated).

Three paths are left out of the random walk and covered by their own tests instead (they were
bugs when this machine was written, fixed since): a member who once held ``lead`` being given
another role (test_access.py::test_changing_a_leads_role_keeps_what_they_signed), a lead
revoking themselves, now refused
(test_grants_crypto.py::test_the_last_lead_cannot_revoke_themselves_and_recovery_still_works),
and recovery lowering a reading role to auditor
(test_grants_crypto.py::test_recover_lowering_a_reader_to_auditor_rotates).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from conftest import Clock
from credvault import MIN_KDF, AccessDenied, InMemory, IntegrityError, NotFound, Vault
from credvault.access import KEY_ROLES, Action, Role, allowed
from credvault.crypto import envelope
from credvault.keyslots import MemberKeys

ENG = "acme-2026"
ROLES = [r.value for r in Role]
NAMES = ["c0", "c1", "c2"]  # credential names: a small pool, so gets and rms hit and miss
MAX_MEMBERS = 4
NAME_POOL = ["m1", "m2", "m3", "m4", "m5"]

# Spec §3 written out independently; credvault.access.allowed must agree with it everywhere.
SPEC: dict[str | None, set[Action]] = {
    "lead": set(Action),
    "engineer": {Action.LIST, Action.READ, Action.WRITE},
    "reader": {Action.LIST, Action.READ},
    "auditor": {Action.LIST, Action.AUDIT},
    None: set(),
}
ADMIN_WITHOUT_GRANT = {Action.LIST, Action.LIFECYCLE, Action.AUDIT}
KEY_READERS = {r.value for r in KEY_ROLES}
VALUES = st.binary(min_size=1, max_size=24)


class AccessModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="credvault-stateful-"))
        self.path = self.tmp / "vault"
        self.clock = Clock()
        res = Vault.init(self.path, "alice", "alice-pass", kdf=MIN_KDF, clock=self.clock)
        assert res.recovery_key is not None
        self.recovery_key = res.recovery_key
        with Vault.open(self.path, "alice", "alice-pass", kdf=MIN_KDF, clock=self.clock) as v:
            self.keys: dict[str, MemberKeys] = {"alice": v._s.keys}
            v.engagements.create(ENG, "acme")  # alice: admin and first lead
        self.admins = {"alice"}
        self.roles: dict[str, str] = {"alice": "lead"}  # live grants only
        self.ever_lead = {"alice"}
        self.removed: set[str] = set()
        self.secrets: dict[str, bytes] = {}
        self.reads: dict[str, set[str]] = {}  # credentials each member read (for revoke)
        # Engagement keys each member has held, per incarnation (a removed name may come back).
        self.seen: dict[tuple[str, int], set[bytes]] = {}
        self.incarnation: dict[str, int] = {"alice": 0}

    def teardown(self) -> None:
        try:
            with self.open("alice") as v:
                assert v.integrity_check() == []
                assert v.audit_verify() > 0
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------
    def open(self, member: str) -> Vault:
        return Vault.open(
            self.path, member, InMemory(self.keys[member]), kdf=MIN_KDF, clock=self.clock
        )

    def may(self, member: str, action: Action) -> bool:
        role = self.roles.get(member)
        admin = member in self.admins
        expected = action in SPEC[role] or (admin and action in ADMIN_WITHOUT_GRANT)
        oracle = allowed(action, None if role is None else Role(role), admin=admin)
        assert oracle == expected, (role, admin, action)
        return expected

    def remember_keys(self, member: str, v: Vault) -> None:
        who = (member, self.incarnation[member])
        self.seen.setdefault(who, set()).update(v._s.engagement_keys.values())

    def pick(self, data: st.DataObject, label: str) -> str:
        return data.draw(st.sampled_from(sorted(self.keys)), label=label)

    # -- members ----------------------------------------------------------------------------
    @initialize(
        roles=st.lists(st.sampled_from([*ROLES, None]), min_size=2, max_size=MAX_MEMBERS - 1)
    )
    def some_members(self, roles: list[str | None]) -> None:
        for role in roles:
            name = self.add_member()
            if role is not None:
                with self.open("alice") as v:
                    v.engagements.grant(ENG, name, role)
                self.roles[name] = role
                if role == "lead":
                    self.ever_lead.add(name)

    @precondition(lambda self: len(self.keys) < MAX_MEMBERS)
    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        # Sometimes a removed member's name comes back (a new person, or the same one).
        free = [n for n in NAME_POOL if n not in self.keys]
        self.add_member(data.draw(st.sampled_from(free), label="added"))

    def add_member(self, name: str | None = None) -> str:
        if name is None:
            name = next(n for n in NAME_POOL if n not in self.keys and n not in self.removed)
        self.incarnation[name] = self.incarnation.get(name, -1) + 1
        with self.open("alice") as v:
            v.members.add(name, passphrase=b"pw-" + name.encode())
        with Vault.open(
            self.path, name, "pw-" + name, kdf=MIN_KDF, clock=self.clock
        ) as v:  # the one Argon2id per member; later opens use the unlocked keys
            self.keys[name] = v._s.keys
        return name

    @precondition(lambda self: len(self.keys) > 1)
    @rule(data=st.data())
    def remove_member(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(set(self.keys) - {"alice"})), label="removed")
        with self.open("alice") as v:
            dropped = v.members.remove(name)
        assert dropped == (1 if name in self.roles else 0)
        del self.keys[name]
        self.roles.pop(name, None)
        self.removed.add(name)
        with pytest.raises(NotFound):
            Vault.open(self.path, name, "pw-" + name, kdf=MIN_KDF, clock=self.clock)

    # -- grants -----------------------------------------------------------------------------
    @rule(data=st.data(), role=st.sampled_from(ROLES))
    def grant(self, data: st.DataObject, role: str) -> None:
        actor = self.pick(data, "actor")
        if not self.may(actor, Action.GRANT):
            target = self.pick(data, "target")
            with self.open(actor) as v, pytest.raises(AccessDenied):
                v.engagements.grant(ENG, target, role)
            return
        # Known bug, see the module docstring: a former lead is never re-granted.
        eligible = sorted(set(self.keys) - self.ever_lead - {actor})
        if not eligible:
            return
        target = data.draw(st.sampled_from(eligible), label="target")
        with self.open(actor) as v:
            g = v.engagements.grant(ENG, target, role)
            assert (g.member, g.role, g.granted_by) == (target, role, actor)
            assert g.has_key == (role in KEY_ROLES)
        self.roles[target] = role
        if role == "lead":
            self.ever_lead.add(target)

    @rule(data=st.data(), role=st.sampled_from(ROLES))
    def grant_oneself(self, data: st.DataObject, role: str) -> None:
        actor = self.pick(data, "actor")
        with self.open(actor) as v, pytest.raises(AccessDenied):
            v.engagements.grant(ENG, actor, role)

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        actor = self.pick(data, "actor")
        target = self.pick(data, "target")
        with self.open(actor) as v:
            if not self.may(actor, Action.GRANT):
                with pytest.raises(AccessDenied):
                    v.engagements.revoke(ENG, target)
                return
            if target not in self.roles:
                with pytest.raises(NotFound):
                    v.engagements.revoke(ENG, target)
                return
            if target == actor:
                return  # known bug, see the module docstring: never revoke oneself
            before = v.engagements.get(ENG).key_version
            read = v.engagements.revoke(ENG, target)
            # (The revoker made the new key, so it is not recorded as "held" here: a lead who
            # revokes themselves has necessarily seen it.)
            assert v.engagements.get(ENG).key_version == before + 1
        assert read == sorted(self.reads.get(target, set()))
        del self.roles[target]

    @precondition(lambda self: bool(set(self.keys) - self.ever_lead))
    @rule(data=st.data(), role=st.sampled_from(ROLES))
    def recover(self, data: st.DataObject, role: str) -> None:
        # Known bug, see the module docstring: a former lead is never re-granted.
        target = data.draw(st.sampled_from(sorted(set(self.keys) - self.ever_lead)), label="to")
        if role == "auditor" and self.roles.get(target) in KEY_READERS:
            return  # known bug, see the module docstring: no rotation on this downgrade
        with self.open("alice") as v:
            v.recover(ENG, self.recovery_key, target, role)
        self.roles[target] = role
        if role == "lead":
            self.ever_lead.add(target)

    # -- credentials ------------------------------------------------------------------------
    @rule(data=st.data(), name=st.sampled_from(NAMES), value=VALUES)
    def put(self, data: st.DataObject, name: str, value: bytes) -> None:
        actor = self.pick(data, "actor")
        with self.open(actor) as v:
            if not self.may(actor, Action.WRITE):
                with pytest.raises(AccessDenied):
                    v.put(f"{ENG}/{name}", value)
                return
            v.put(f"{ENG}/{name}", value)
            self.remember_keys(actor, v)
        self.secrets[name] = value

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def get(self, data: st.DataObject, name: str) -> None:
        actor = self.pick(data, "actor")
        with self.open(actor) as v:
            if not self.may(actor, Action.READ):
                with pytest.raises(AccessDenied):
                    v.get(f"{ENG}/{name}")
                assert all(k[0] != v.engagements.get(ENG).id for k in v._s.engagement_keys)
                return
            if name not in self.secrets:
                with pytest.raises(NotFound):
                    v.get(f"{ENG}/{name}")
                return
            assert v.get(f"{ENG}/{name}").secret.reveal() == self.secrets[name]
            self.remember_keys(actor, v)
        self.reads.setdefault(actor, set()).add(name)

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def remove_credential(self, data: st.DataObject, name: str) -> None:
        actor = self.pick(data, "actor")
        with self.open(actor) as v:
            if not self.may(actor, Action.WRITE):
                with pytest.raises(AccessDenied):
                    v.credentials.remove(f"{ENG}/{name}")
                return
            if name not in self.secrets:
                with pytest.raises(NotFound):
                    v.credentials.remove(f"{ENG}/{name}")
                return
            v.credentials.remove(f"{ENG}/{name}")
        del self.secrets[name]

    @rule(data=st.data())
    def list_credentials(self, data: st.DataObject) -> None:
        actor = self.pick(data, "actor")
        with self.open(actor) as v:
            if not self.may(actor, Action.LIST):
                with pytest.raises(AccessDenied):
                    v.credentials.list(ENG)
                return
            assert sorted(c.name for c in v.credentials.list(ENG)) == sorted(self.secrets)

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def key_copies_match_the_model(self) -> None:
        with self.open("alice") as v:
            eng = v.engagements.get(ENG)
            rows = {
                r[0]: r[1]
                for r in v._s.store.conn.execute(
                    "SELECT member, sealed FROM grants WHERE engagement_id = ?", (eng.id,)
                ).fetchall()
            }
            assert rows.get("@recovery") is not None
            for member in set(self.keys) | self.removed:
                reads = self.roles.get(member) in KEY_READERS
                assert (rows.get(member) is not None) == reads, (member, self.roles)
            listed = {g.member: g.role for g in v.engagements.members(ENG)}
            assert listed == self.roles
            if eng.needs_rotation:
                return  # a removal's rotation waits for the next lead action
            envelopes = [
                (
                    envelope.Place(v._s.vault_id, eng.uid, "credentials", bytes(uid), "secret"),
                    bytes(blob),
                )
                for uid, blob in v._s.store.conn.execute(
                    "SELECT uid, secret_env FROM credentials WHERE engagement_id = ?", (eng.id,)
                ).fetchall()
            ]
        for (member, inc), keys in self.seen.items():
            current = member in self.keys and self.incarnation[member] == inc
            if not (current and self.may(member, Action.READ)):
                for place, blob in envelopes:
                    for key in keys:
                        with pytest.raises(IntegrityError):
                            envelope.open_(place, blob, key)


TestAccessModel = AccessModel.TestCase
TestAccessModel.settings = settings(
    max_examples=12,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
