"""A member's open transaction does not hold the audit chain for ever (upgrade-2.sql section
chainheld; docs/team.md "What members can and cannot touch").

Written as the attacker: bob, a member with psql, calls an audited function inside a
transaction and leaves it open (or keeps it running), which holds the one lock every
audited action of every member needs. The colleague's audited action must go through,
bob's session ended and his uncommitted entry gone, the end on the trail, the chain
intact. Sessions that are not a member's (the owner's here) are never ended: the waiter
waits, as before. The limits are shortened through ``meta`` (the owner's to set); every
wait below is for an observed state of the server, never a fixed sleep.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from killpoints import wait_until


@pytest.fixture
def conns() -> Iterator[list[Any]]:
    """The test's own sessions, closed at its end (ended ones included)."""
    opened: list[Any] = []
    yield opened
    for c in opened:
        c.close()


def _session(conns: list[Any], conn: Any) -> Any:
    conns.append(conn)
    return conn


def _team(pg: Any, *, idle: int = 1, hold: int = 60) -> Any:
    """alice (admin, lead of alpha), bob and carol (engineers); alpha/db; the chain's limits."""
    pg.add("bob")
    pg.add("carol")
    pg.engagement("alpha")
    pg.grant("alice", "alpha", "bob", "engineer")
    pg.grant("alice", "alpha", "carol", "engineer")
    pg.put("alice", "alpha", "db", b"db-envelope")
    with pg.connect() as owner:
        for key, value in (("chain_idle_seconds", idle), ("chain_hold_seconds", hold)):
            owner.execute(
                "UPDATE credvault.meta SET value = convert_to(%s, 'UTF8') WHERE key = %s",
                (str(value), key),
            )
    return pg


def _holds_chain(pg: Any, pid: int) -> bool:
    with pg.connect() as owner:
        return bool(
            owner.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND granted"
                " AND relation = 'credvault.audit_head'::regclass"
                " AND mode <> 'AccessShareLock')",
                (pid,),
            ).fetchone()[0]
        )


def _waiting(pg: Any, pid: int) -> bool:
    with pg.connect() as owner:
        row = owner.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        return row is not None and row[0] == "Lock"


def _read(pg: Any, member: str) -> int:
    """``member``'s audited read request (the colleague's honest action), bounded so a
    regression fails the test instead of hanging the suite."""
    with pg.connect(member) as conn:
        conn.execute("SET statement_timeout = '60s'")
        row = conn.execute("SELECT credvault.request_read('alpha', 'db', '')").fetchone()
        return int(row[0])


def _ended(pg: Any) -> list[tuple[str, str, str]]:
    with pg.connect() as owner:
        return [
            (str(r[0]), str(r[1]), str(r[2]))
            for r in owner.execute(
                "SELECT member, item, detail FROM credvault.audit WHERE action = 'session-end'"
                " ORDER BY seq"
            ).fetchall()
        ]


def _chain_ok(pg: Any) -> None:
    with pg.connect("alice") as alice:
        assert alice.execute("SELECT credvault.audit_verify()").fetchone()[0] is None


def _gone(conn: Any) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_an_idle_transaction_holding_the_chain_is_ended_and_the_colleague_reads(
    pg: Any, conns: list[Any]
) -> None:
    _team(pg)
    bob = _session(conns, pg.connect("bob", autocommit=False))
    bob.execute("SELECT credvault.request_read('alpha', 'db', 'left open')")  # and nothing more
    assert _holds_chain(pg, bob.info.backend_pid)

    assert _read(pg, "alice") > 0  # waited for bob, then went through

    assert _gone(bob)  # bob's session was ended ...
    ended = _ended(pg)
    assert [(m, i) for m, i, _ in ended] == [("alice", "bob")]  # ... on the trail, once
    assert "idle for" in ended[0][2]
    assert "session ended" in ended[0][2]
    with pg.connect() as owner:  # his entry rolled back with his transaction
        assert (
            owner.execute(
                "SELECT count(*) FROM credvault.audit WHERE member = 'bob' AND action = 'get'"
            ).fetchone()[0]
            == 0
        )
    _chain_ok(pg)
    assert _read(pg, "bob") > 0  # a member again at once: only the session was ended


def test_a_transaction_kept_running_with_the_chain_is_ended_after_the_hold_limit(
    pg: Any, conns: list[Any]
) -> None:
    _team(pg, idle=60, hold=2)
    bob = _session(conns, pg.connect("bob"))
    pid = bob.info.backend_pid
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            bob.execute("SELECT credvault.request_read('alpha', 'db', ''), pg_sleep(600)")
        except BaseException as e:  # the end of his session, expected
            failed.append(e)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    wait_until(lambda: _holds_chain(pg, pid), "bob's statement to hold the chain")

    assert _read(pg, "carol") > 0

    t.join(60)
    assert not t.is_alive()
    assert isinstance(failed[0], psycopg.OperationalError)
    ended = _ended(pg)
    assert [(m, i) for m, i, _ in ended] == [("carol", "bob")]
    assert "open for" in ended[0][2]
    _chain_ok(pg)


def test_the_member_at_the_root_of_the_wait_is_ended_not_the_honest_holder(
    pg: Any, conns: list[Any]
) -> None:
    """bob's open transaction keeps alpha/db locked without holding the chain (a rename
    onto a name that exists answers 'exists', unaudited, after locking the row); carol
    holds the chain and waits for that row. Ending carol would punish the honest one:
    bob's session is the one ended, and carol's put then commits."""
    _team(pg)
    pg.put("alice", "alpha", "db2", b"db2-envelope")
    bob = _session(conns, pg.connect("bob", autocommit=False))
    assert (
        bob.execute("SELECT credvault.rename_credential('alpha', 'db', 'db2')").fetchone()[0]
        == "exists"
    )
    assert not _holds_chain(pg, bob.info.backend_pid)
    carol = _session(conns, pg.connect("carol", autocommit=False))
    carol_pid = carol.info.backend_pid
    carol.execute("SELECT credvault.request_read('alpha', 'db', '')")  # holds the chain
    done: list[Any] = []

    def put() -> None:  # waits for bob's row lock, then commits at once
        carol.execute(
            "SELECT credvault.put_credential('alpha', 'db', 'password', %s, 1, 'new')",
            (secrets.token_bytes(16),),
        )
        carol.commit()
        done.append(True)

    t = threading.Thread(target=put, daemon=True)
    t.start()
    wait_until(lambda: _waiting(pg, carol_pid), "carol's put to wait for bob's row")

    assert _read(pg, "alice") > 0

    t.join(60)
    assert done == [True]  # carol's work went through
    assert _gone(bob)
    assert not carol.closed
    assert [(m, i) for m, i, _ in _ended(pg)] == [("alice", "bob")]
    _chain_ok(pg)


def test_a_session_that_is_not_a_members_is_never_ended(pg: Any, conns: list[Any]) -> None:
    """The owner (a migration, a maintenance session) holding the chain longer than the
    limits: the member waits, as before, and nothing is ended."""
    _team(pg, idle=1, hold=1)
    owner = _session(conns, pg.connect(autocommit=False))
    owner.execute("SELECT credvault.audit_append('alice', 'note', NULL, NULL, 'ok', 'maintenance')")
    alice = _session(conns, pg.connect("alice"))
    alice_pid = alice.info.backend_pid
    got: list[int] = []
    t = threading.Thread(
        target=lambda: got.append(
            int(alice.execute("SELECT credvault.request_read('alpha', 'db', '')").fetchone()[0])
        ),
        daemon=True,
    )
    t.start()
    wait_until(lambda: _waiting(pg, alice_pid), "alice's read to wait for the chain")
    with pg.connect() as dba:  # waited through two of the function's 1 s lock timeouts ...
        wait_until(
            lambda: bool(
                dba.execute(
                    "SELECT query_start < clock_timestamp() - interval '2.5 s'"
                    " FROM pg_stat_activity WHERE pid = %s",
                    (alice_pid,),
                ).fetchone()[0]
            ),
            "alice's read to have waited past the limits",
        )
    assert _waiting(pg, alice_pid)
    assert not _gone(owner)
    owner.commit()
    t.join(60)
    assert got
    assert got[0] > 0
    assert _ended(pg) == []
    _chain_ok(pg)
