"""Issue 11: a vault-level state machine of honest membership commands interleaved with an
insider's edits to every row and column the membership log does not sign.

Honest steps: grant (any role, by a lead the signed history names), revoke, rotate, put, get.
Insider steps (any member, tests/insider.py, a SQL shell with the database key): clear or set
``revoked_at``, rewrite ``role``/``granted_by``/``expires_at``, set ``needs_rotation``, insert
a grant row for themselves, move another row's sealed copy into theirs, garble copy
signatures. The oracle is spec §3 applied to the *signed* history the model keeps (who holds
which role now), and the check is cryptographic: every key a member could ever open from a
copy addressed to them, at any step (they keep copies of old files), plus every key their
own client held, must open no live envelope once the signed history says they may not read.
An honest command by someone the model does not entitle never succeeds; one by someone it
entitles succeeds, or (only after an insider edit) fails as tampering (exit 6), never as
another member's data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import PASSWORDS, Clock
from credvault import MIN_KDF, AccessDenied, InMemory, IntegrityError, NotFound, Vault
from credvault.access import Action, Role, allowed
from credvault.keyslots import MemberKeys
from insider import Insider

ENG = "acme-2026"
OTHERS = ["bob", "carol", "dave"]
MEMBERS = ["alice", *OTHERS]
ROLES = [r.value for r in Role]
READING = {"lead", "engineer", "reader"}
NAMES = ["c0", "c1"]
VALUES = st.binary(min_size=1, max_size=12)
TS = "2026-01-01T00:00:00.000000Z"


class MemberLogVault(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="credvault-memberlog-"))
        self.path = self.tmp / "vault"
        self.clock = Clock()
        Vault.init(self.path, "alice", PASSWORDS["alice"], kdf=MIN_KDF, clock=self.clock)
        with Vault.open(self.path, "alice", PASSWORDS["alice"], kdf=MIN_KDF, clock=self.clock) as v:
            for name in OTHERS:
                v.members.add(name, passphrase=PASSWORDS[name])
            v.engagements.create(ENG, "acme")
        self.insiders = {m: Insider(self.path, m, self.clock) for m in MEMBERS}
        self.keys: dict[str, MemberKeys] = {m: i.keys for m, i in self.insiders.items()}
        self.eid = self.insiders["alice"].engagement(ENG)[0]
        self.roles: dict[str, str] = {"alice": "lead"}  # the signed history, now
        self.secrets: dict[str, bytes] = {}
        self.ever: dict[str, set[bytes]] = {m: set() for m in MEMBERS}  # keys once in reach
        self.tampered = False

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------
    def open(self, member: str) -> Vault:
        return Vault.open(
            self.path, member, InMemory(self.keys[member]), kdf=MIN_KDF, clock=self.clock
        )

    def may(self, member: str, action: Action) -> bool:
        role = self.roles.get(member)
        return allowed(action, None if role is None else Role(role), admin=member == "alice")

    def honest(self, member: str, action: Action, run: object) -> bool:
        """Run an honest command; True if it succeeded. Refused exactly when the signed
        history says so; tampering may only turn an allowed command into exit 6."""
        assert callable(run)
        if not self.may(member, action):
            with pytest.raises((AccessDenied, IntegrityError, NotFound)):
                run()
            return False
        try:
            run()
        except IntegrityError:
            assert self.tampered, "an integrity error without any insider edit"
            return False
        return True

    # -- honest membership commands -----------------------------------------------------------
    @rule(data=st.data(), role=st.sampled_from(ROLES))
    def grant(self, data: st.DataObject, role: str) -> None:
        actor = data.draw(st.sampled_from(MEMBERS), label="actor")
        target = data.draw(st.sampled_from([m for m in OTHERS if m != actor]), label="target")

        def run() -> None:
            with self.open(actor) as v:
                v.engagements.grant(ENG, target, role)

        if self.honest(actor, Action.GRANT, run):
            self.roles[target] = role

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        actor = data.draw(st.sampled_from(MEMBERS), label="actor")
        target = data.draw(st.sampled_from([m for m in OTHERS if m != actor]), label="target")
        if target not in self.roles:
            return

        def run() -> None:
            with self.open(actor) as v:
                v.engagements.revoke(ENG, target)

        if self.honest(actor, Action.GRANT, run):
            del self.roles[target]

    @rule(data=st.data())
    def rotate(self, data: st.DataObject) -> None:
        actor = data.draw(st.sampled_from(MEMBERS), label="actor")

        def run() -> None:
            with self.open(actor) as v:
                v.engagements.rotate(ENG)

        self.honest(actor, Action.GRANT, run)

    @rule(data=st.data(), name=st.sampled_from(NAMES), value=VALUES)
    def put(self, data: st.DataObject, name: str, value: bytes) -> None:
        actor = data.draw(st.sampled_from(MEMBERS), label="actor")

        def run() -> None:
            with self.open(actor) as v:
                v.put(f"{ENG}/{name}", value)
                self.ever[actor] |= set(v._s.engagement_keys.values())

        if self.honest(actor, Action.WRITE, run):
            self.secrets[name] = value

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def get(self, data: st.DataObject, name: str) -> None:
        actor = data.draw(st.sampled_from(MEMBERS), label="actor")
        got: list[bytes] = []

        def run() -> None:
            with self.open(actor) as v:
                try:
                    got.append(v.get(f"{ENG}/{name}").secret.reveal())
                finally:
                    self.ever[actor] |= set(v._s.engagement_keys.values())

        if name not in self.secrets:
            with pytest.raises((AccessDenied, NotFound, IntegrityError)):
                run()
            return
        if self.honest(actor, Action.READ, run):
            assert got == [self.secrets[name]]

    # -- the insider's edits (nothing the log signs) ------------------------------------------
    @rule(data=st.data())
    def insider_edits_a_grant_row(self, data: st.DataObject) -> None:
        ins = self.insiders[data.draw(st.sampled_from(OTHERS), label="insider")]
        row = data.draw(st.sampled_from(MEMBERS), label="row")
        edit = data.draw(
            st.sampled_from(
                [
                    "UPDATE grants SET revoked_at = NULL",
                    "UPDATE grants SET revoked_at = '2026-01-01T00:00:00.000000Z'",
                    "UPDATE grants SET role = 'lead'",
                    "UPDATE grants SET role = 'reader'",
                    "UPDATE grants SET granted_by = 'alice', granted_at = '2026-01-01T00:00:00.000000Z'",
                    "UPDATE grants SET expires_at = NULL",
                    "UPDATE grants SET copy_sig = zeroblob(64), sealed_by = 'alice'",
                ]
            ),
            label="edit",
        )
        ins.sql(f"{edit} WHERE engagement_id = ? AND member = ?", (self.eid, row))
        self.tampered = True

    @rule(data=st.data())
    def insider_inserts_their_own_grant_row(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(OTHERS), label="insider")
        role = data.draw(st.sampled_from(["lead", "engineer", "reader"]), label="role")
        ins = self.insiders[name]
        ins.sql(
            "INSERT OR REPLACE INTO grants (engagement_id, member, role, granted_by, "
            "granted_at, role_sig) VALUES (?, ?, ?, 'alice', ?, zeroblob(64))",
            (self.eid, name, role, TS),
        )
        ins.sql("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (self.eid,))
        self.tampered = True

    @rule(data=st.data())
    def insider_moves_a_copy_into_their_row(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(OTHERS), label="insider")
        source = data.draw(st.sampled_from([*MEMBERS, "@recovery"]), label="from")
        ins = self.insiders[name]
        rows = ins.sql(
            "SELECT sealed, key_version FROM grants WHERE engagement_id = ? AND member = ?",
            (self.eid, source),
        )
        if not rows or rows[0][0] is None:
            return
        ins.sql(
            "UPDATE grants SET sealed = ?, key_version = ? WHERE engagement_id = ? AND member = ?",
            (rows[0][0], rows[0][1], self.eid, name),
        )
        self.tampered = True

    @rule()
    def insider_sets_the_rotation_flag(self) -> None:
        self.insiders["dave"].sql("UPDATE engagements SET needs_rotation = 1")

    # -- the oracle -----------------------------------------------------------------------------
    @invariant()
    def nobody_else_decrypts_anything(self) -> None:
        for m in OTHERS:
            self.ever[m] |= set(self.insiders[m].keys_held())  # they keep old copies too
        for m in OTHERS:
            if self.roles.get(m) in READING:
                continue
            assert self.insiders[m].readable(self.ever[m]) == set(), (m, self.roles)

    @invariant()
    def the_leads_roster_is_the_signed_one(self) -> None:
        with self.open("alice") as v:
            state = v.engagements.grants.log_state(v.engagements.get(ENG))
        assert state is not None
        assert {n: m.role for n, m in state.roster.items()} == self.roles


TestMemberLogVault = MemberLogVault.TestCase
TestMemberLogVault.settings = settings(
    max_examples=8,
    stateful_step_count=14,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
