"""Every way a member reads ciphertext from the team vault, interleaved with colleagues'
writes and with the attacker's fetch-then-ROLLBACK (upgrade-2.sql, sections pinned and
pinmany), as a hypothesis state machine.

The invariant, for every read path: what a phase two releases is what was stored when its
request committed its audit entry, never a value written after it; it is refused
(40001, "changed since the read request") exactly when one of the rows the request covers
has been written since, and released otherwise; a request claimed once is not claimed
again. The paths: `get` (request_read, then fetch; or claim_read, then release, which may
be called again), `otp`/`run`/`ssh` (request_use/fetch_use), `system show`
(request_record/fetch_record), a field search (request_find/fetch_find), a client export
(request_export_records/fetch_export_records), import's read of the addresses
(request_import/fetch_import) and a rotation's read (request_rotation/
rotation_fetch_records, the lead's). The envelopes are opaque bytes to the server, so the
writers store marked bytes and the reader compares them.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from pg_cluster import Cluster, fetch_as_a_client, fetch_rolled_back, new_pg_vault

psycopg = pytest.importorskip("psycopg")

CHANGED = "changed since the read request"


class Path(NamedTuple):
    """One read path: the member who reads, the phase one (``{eng}`` filled in), the phase
    two, the columns whose bytes are compared, and which writes it covers (a write of the
    credential db: 'put'; of the system web's address: 'address')."""

    who: str
    ask: str
    fetch: str
    columns: str
    secret: bool  # the columns give db's secret (else web's address)
    covers: frozenset[str]


AGG = "string_agg({0}, ''::bytea) FILTER (WHERE tbl = '{1}')"
PATHS = {
    "get": Path(
        "bob", "SELECT credvault.request_read('{eng}', 'db')", "fetch", "secret_env", True,
        frozenset({"put"}),
    ),
    "use": Path(
        "bob", "SELECT credvault.request_use('get', '{eng}', 'db', '', 'run')", "fetch_use",
        "secret_env", True, frozenset({"put"}),
    ),
    "system": Path(
        "bob", "SELECT credvault.request_record('system', '{eng}', 'web')", "fetch_record", "e1",
        False, frozenset({"address"}),
    ),
    "find": Path(
        "bob", "SELECT credvault.request_find('{eng}')", "fetch_find", AGG.format("e1", "systems"),
        False, frozenset({"put", "address"}),
    ),
    "export": Path(
        "bob", "SELECT credvault.request_export_records('{eng}', 'T-1')", "fetch_export_records",
        AGG.format("e1", "systems"), False, frozenset({"address"}),
    ),
    "import": Path(
        "bob", "SELECT credvault.request_import('{eng}')", "fetch_import",
        "string_agg(address_env, ''::bytea)", False, frozenset({"address"}),
    ),
    "rotation": Path(
        "alice", "SELECT credvault.request_rotation('{eng}')", "rotation_fetch_records",
        AGG.format("e1", "credentials"), True, frozenset({"put", "address"}),
    ),
}  # fmt: skip


class Request:
    """A request as the machine made it: its path, id, the value it must release, whether
    a write it covers has landed since, and whether its claim has committed."""

    def __init__(self, path: str, req: int, value: bytes) -> None:
        self.path, self.req, self.value = path, req, value
        self.stale = False
        self.used = False
        self.claimed = False  # claim_read committed: release may be called again

    def __repr__(self) -> str:
        return f"Request({self.path}, {self.req})"


_engagements = itertools.count(1)


class Reads(RuleBasedStateMachine):
    pg: Any = None
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        pg = self.pg
        self.eng = f"sm{next(_engagements)}_{secrets.token_hex(2)}"
        pg.engagement(self.eng)
        pg.grant("alice", self.eng, "bob", "engineer")
        self.conns = {who: pg.connect(who) for who in ("alice", "bob")}
        # the invariant's reader, the DBA: neither members nor the owner read envelopes
        self.conns["dba"] = psycopg.connect(
            pg.cluster.conninfo(pg.db), password=pg.cluster.password, autocommit=True
        )
        alice = self.conns["alice"]
        self.secret = b"SECRET-0"
        self.address = b"ADDRESS-0"
        alice.execute(
            "SELECT credvault.put_credential(%s, 'db', 'password', %s, 1, %s)",
            (self.eng, secrets.token_bytes(16), self.secret),
        )
        self.web = secrets.token_bytes(16)
        alice.execute(
            "SELECT credvault.put_system(%s, 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (self.eng, self.web, self.address),
        )
        self.writes = itertools.count(1)
        self.live: list[Request] = []

    def teardown(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def _wrote(self, what: str) -> None:
        for r in self.live:
            if what in PATHS[r.path].covers:
                r.stale = True

    @rule()
    def put(self) -> None:
        """alice stores a new value of db."""
        self.secret = b"SECRET-%d" % next(self.writes)
        self.conns["alice"].execute(
            "SELECT credvault.put_credential(%s, 'db', 'password', %s, 1, %s)",
            (self.eng, secrets.token_bytes(16), self.secret),
        )
        self._wrote("put")

    @rule()
    def set_address(self) -> None:
        """alice changes web's address (system set)."""
        self.address = b"ADDRESS-%d" % next(self.writes)
        self.conns["alice"].execute(
            "SELECT credvault.set_system(%s, 'web', %s, 1, 22, 'ssh', %s, NULL, true,"
            " ARRAY['address'])",
            (self.eng, self.web, self.address),
        )
        self._wrote("address")

    @rule(target=requests, path=st.sampled_from(sorted(PATHS)))
    def request(self, path: str) -> Request:
        p = PATHS[path]
        req = self.conns[p.who].execute(p.ask.format(eng=self.eng)).fetchone()[0]
        assert req is not None, path
        r = Request(path, int(req), self.secret if p.secret else self.address)
        self.live.append(r)
        return r

    def _check(self, r: Request, got: Any) -> None:
        """A release: only of the value the request's entry covers, and only while none of
        its rows was written since."""
        assert not r.stale, f"{r}: released after a write it covers"
        assert got is not None, r
        assert bytes(got[0]) == r.value, (r, got)

    def _refused(self, r: Request, e: Exception) -> None:
        if isinstance(e, psycopg.errors.SerializationFailure):
            assert CHANGED in str(e), (r, e)
            assert r.stale, (r, e)
        else:
            assert r.used, (r, e)
            assert "already used" in str(e), (r, e)

    @rule(r=requests)
    def fetch_and_roll_back(self, r: Request) -> None:
        """The attacker's fetch: inside a transaction that is then rolled back."""
        p = PATHS[r.path]
        conn = self.conns[p.who]
        try:
            got = fetch_rolled_back(conn, r.req, p.columns, p.fetch)
        except (psycopg.errors.SerializationFailure, psycopg.errors.InsufficientPrivilege) as e:
            self._refused(r, e)
        else:
            assert not r.used, r
            self._check(r, got)

    @rule(r=consumes(requests))
    def fetch(self, r: Request) -> None:
        """The client's fetch: committed, so the request is used."""
        p = PATHS[r.path]
        try:
            got = fetch_as_a_client(self.conns[p.who], r.req, p.columns, p.fetch)
        except (psycopg.errors.SerializationFailure, psycopg.errors.InsufficientPrivilege) as e:
            self._refused(r, e)
        else:
            assert not r.used, r
            self._check(r, got)
            r.used = True
        self.live.remove(r)

    @rule(r=requests)
    def claim_and_release(self, r: Request) -> None:
        """`get`'s one call in two: claim_read commits the claim, release returns the row
        and may be called again within the minute (read-only)."""
        if r.path != "get":
            return
        bob = self.conns["bob"]
        if not r.claimed:
            try:
                bob.execute("SELECT credvault.claim_read(%s)", (r.req,))
            except psycopg.errors.InsufficientPrivilege as e:
                refused = str(e)
            else:
                refused = ""
            if refused:
                assert r.used, (r, refused)
                assert "already used" in refused, (r, refused)
                return
            r.used = r.claimed = True
        try:
            got = fetch_as_a_client(bob, r.req, "secret_env", "release")
        except psycopg.errors.SerializationFailure as e:
            self._refused(r, e)
        else:
            self._check(r, got)

    @invariant()
    def nothing_stored_changed_under_the_readers(self) -> None:
        """The reads wrote nothing but their claims: the values are the writers'."""
        if not hasattr(self, "conns"):
            return
        row = (
            self.conns["dba"]
            .execute(
                "SELECT c.secret_env, s.address_env FROM credvault.credentials c,"
                " credvault.systems s WHERE c.engagement_id = s.engagement_id AND c.name = 'db'"
                " AND s.name = 'web' AND c.engagement_id = (SELECT id FROM credvault.engagements"
                " WHERE name = %s)",
                (self.eng,),
            )
            .fetchone()
        )
        assert (bytes(row[0]), bytes(row[1])) == (self.secret, self.address)


def test_reads_release_only_what_their_entry_covers(pg_cluster: Cluster) -> None:
    Reads.pg = new_pg_vault(pg_cluster)
    Reads.pg.add("bob")
    run_state_machine_as_test(
        Reads,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            derandomize=True,
            database=None,
        ),
    )
