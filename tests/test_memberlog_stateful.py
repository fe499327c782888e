"""A state machine over the membership log (issue 11): honest operations interleaved with an
insider's edits to the stored links.

The "database" is the list of stored link rows, which the insider may rewrite at will: add
links signed with their own key, re-append links they saw earlier, delete, reorder,
truncate, or flip bytes. The oracle is the honest history alone: whatever log the vault
would accept (``replay`` succeeds) must never make anyone a holder of a key version whom the
honest history did not, and must commit to the honest key fingerprints; and every log that
is not an extension of what an honest member witnessed fails the witness check.

This is the log on its own; the same interleaving against the vault's rows needs the log
wired into the vault (issue 11 step 2).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from credvault import memberlog as ml
from credvault.errors import IntegrityError
from test_memberlog import ALICE, BOB, CAROL, DAVE, MALLORY, TRUST, Log, Who, _forge, _fp

PEOPLE = {w.name: w for w in (ALICE, BOB, CAROL, DAVE)}
LATE = "2026-12-31T23:00:00.000000Z"  # after every honest link


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.honest = Log()  # what honest members signed, in order
        self.rows: list[bytes] = list(self.honest.blobs)  # what the database holds now
        self.seen: list[bytes] = list(self.honest.blobs)  # every link the insider ever saw
        self.n_rot = 0

    # -- honest members (they act only on a log that verifies and matches their witness) ----
    def _honest_view(self) -> ml.State:
        """An honest client refuses a tampered log; the operator restores the real one."""
        try:
            ml.replay(self.rows, TRUST)
            hashes = [ml.chain_hash(b) for b in self.rows]
            ml.check_witness(hashes, self.honest.st.position)
        except IntegrityError:
            pass
        self.rows = list(self.honest.blobs)
        return self.honest.st

    def _lead(self, st: ml.State) -> Who:
        return PEOPLE[st.leads()[0]]

    def _sign(self, kind: str, fields: tuple[str | bytes | int, ...], by: Who) -> None:
        try:
            self.honest.add(kind, fields, by)
        except IntegrityError:
            return  # the rules refused it (e.g. the last lead): nothing is written
        self.rows = list(self.honest.blobs)
        self.seen.append(self.honest.blobs[-1])

    @rule(who=st.sampled_from(["bob", "carol", "dave"]), role=st.sampled_from(ml.ROLES))
    def grant(self, who: str, role: str) -> None:
        st_ = self._honest_view()
        w = PEOPLE[who]
        self._sign(ml.GRANT, (who, role, "", w.sign, w.kem), self._lead(st_))

    @rule(who=st.sampled_from(["alice", "bob", "carol", "dave"]))
    def revoke(self, who: str) -> None:
        st_ = self._honest_view()
        if who in st_.roster:
            self._sign(ml.REVOKE, (who,), self._lead(st_))

    @rule()
    def rotate(self) -> None:
        st_ = self._honest_view()
        self.n_rot += 1
        self._sign(ml.ROTATE, (st_.key_version + 1, _fp(f"honest-{self.n_rot}")), self._lead(st_))

    # -- the insider ---------------------------------------------------------------------------
    @rule(
        kind=st.sampled_from([ml.GRANT, ml.ROTATE, ml.REVOKE]),
        as_name=st.sampled_from(["mallory", "alice", "bob", "carol"]),
        insider=st.sampled_from(["mallory", "bob", "carol"]),
    )
    def forge(self, kind: str, as_name: str, insider: str) -> None:
        """A link signed with the insider's own key (mallory holds no grant; bob and carol
        may hold any honest role, or none), claiming any name, at the right place."""
        key = MALLORY if insider == "mallory" else PEOPLE[insider]
        if insider != "mallory":
            as_name = insider  # bob or carol signing as themselves, whatever role they hold
            now = self.honest.st.roster.get(insider)
            if now is not None and now.role == ml.LEAD:
                return  # a current lead's signature is authority, not an attack
        try:
            state = ml.replay(self.rows, TRUST)
        except IntegrityError:
            state = self.honest.st
        fields: tuple[str | bytes | int, ...] = {
            ml.GRANT: ("mallory", ml.READER, "", MALLORY.sign, MALLORY.kem),
            ml.ROTATE: (state.key_version + 1, _fp("mallory-chose")),
            ml.REVOKE: ("alice",),
        }[kind]
        self.rows.append(_forge(state, kind, fields, as_name, key, time=LATE))

    @rule(i=st.integers(0, 10_000))
    def replay_old_link(self, i: int) -> None:
        self.rows.append(self.seen[i % len(self.seen)])

    @rule(i=st.integers(0, 10_000))
    def delete_row(self, i: int) -> None:
        if self.rows:
            del self.rows[i % len(self.rows)]

    @rule(i=st.integers(0, 10_000), j=st.integers(0, 10_000))
    def swap_rows(self, i: int, j: int) -> None:
        if self.rows:
            a, b = i % len(self.rows), j % len(self.rows)
            self.rows[a], self.rows[b] = self.rows[b], self.rows[a]

    @rule(i=st.integers(0, 10_000), pos=st.integers(0, 10_000))
    def flip_byte(self, i: int, pos: int) -> None:
        if self.rows:
            k = i % len(self.rows)
            row = bytearray(self.rows[k])
            row[pos % len(row)] ^= 0x01
            self.rows[k] = bytes(row)

    @rule(keep=st.integers(1, 10_000))
    def roll_back(self, keep: int) -> None:
        self.rows = self.rows[: 1 + keep % max(1, len(self.rows))]

    # -- the oracle ----------------------------------------------------------------------------
    @invariant()
    def nobody_else_ever_holds_a_key(self) -> None:
        """A log the vault would accept (it verifies and extends what this member witnessed)
        makes nobody a holder the honest history did not."""
        honest = self.honest.st
        try:
            got = ml.replay(self.rows, TRUST)
            ml.check_witness([ml.chain_hash(b) for b in self.rows], honest.position)
        except IntegrityError:
            return  # refused: nothing is sealed or accepted from this log
        for version, holders in got.holders.items():
            assert holders <= honest.holders.get(version, frozenset()), (version, holders)
            assert got.fingerprints[version] == honest.fingerprints[version]
        assert "mallory" not in got.roster
        assert got.leads()

    @invariant()
    def the_witness_catches_anything_but_an_extension(self) -> None:
        """A log that verifies and matches the witnessed position extends the honest one
        (each link names its predecessor's hash); an extension always passes the witness."""
        hashes = [ml.chain_hash(b) for b in self.rows]
        honest = self.honest.st.position
        extends = len(self.rows) > honest.seq and hashes[: honest.seq + 1] == [
            ml.chain_hash(b) for b in self.honest.blobs[: honest.seq + 1]
        ]
        try:
            ml.replay(self.rows, TRUST)
            ml.check_witness(hashes, honest)
        except IntegrityError:
            if extends:
                ml.check_witness(hashes, honest)  # only the appended part may be refused
            return
        assert extends


LogMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLogMachine = LogMachine.TestCase
