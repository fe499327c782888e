"""Review of section chainheld (upgrade-2.sql; its "Which session" paragraph).

Written as the attacker, bob, a member with psql and as many sessions as he likes. The
chain's waiter follows the holder's wait to its root and ends a stale member session there;
bob arranges the wait so that the walk stops on an honest colleague's session instead.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import psycopg

from killpoints import wait_until

from .test_chain_held_pg import _chain_ok, _ended, _gone, _read, _session, _team, _waiting, conns

__all__ = ["conns"]


def _in_background(conn: Any, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """``sql`` on ``conn`` in a thread; the list gets True, or the exception it raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            conn.execute(sql, args)
            out.append(True)
        except BaseException as e:  # reported to the test
            out.append(e)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_the_walk_never_stops_on_an_honest_waiter_eight_hops_down(
    pg: Any, conns: list[Any]
) -> None:
    """bob chains eight sessions from the chain's holder down to a credential carol (an
    honest client, one autocommit put) waits for, behind bob's ninth session's lock:
    holder -> b2 -> ... -> b8 -> carol -> b9 (idle). chainheld's walk stopped after 8 hops,
    on carol, and ended her session once her put had waited longer than the hold limit.
    Only a session that waits for nothing (bob's b9) may be ended."""
    _team(pg, idle=60, hold=2)
    names = [f"c{k}" for k in range(1, 8)] + ["x"]
    for name in names:
        pg.put("alice", "alpha", name, b"env-" + name.encode())

    def bob() -> Any:
        return _session(conns, pg.connect("bob", autocommit=False))

    def exists(conn: Any, name: str) -> None:  # locks the row, unaudited
        row = conn.execute("SELECT credvault.rename_credential('alpha', %s, 'db')", (name,))
        assert row.fetchone()[0] == "exists"

    root = bob()
    exists(root, "x")
    carol = _session(conns, pg.connect("carol"))
    carol_pid = carol.info.backend_pid
    put = _in_background(
        carol,
        "SELECT credvault.put_credential('alpha', 'x', 'password', %s, 1, 'new')",
        (secrets.token_bytes(16),),
    )
    wait_until(lambda: _waiting(pg, carol_pid), "carol's put to wait for bob's row")
    below = "x"
    waits: list[list[Any]] = []
    for name in reversed(names[:-1]):  # b8 holds c7 and waits for x behind carol, ...
        b = bob()
        exists(b, name)
        waits.append(
            _in_background(b, "SELECT credvault.rename_credential('alpha', %s, 'db')", (below,))
        )
        wait_until(lambda b=b: _waiting(pg, b.info.backend_pid), f"bob's wait for {below}")
        below = name
    holder = bob()  # holds the chain, and waits for c1
    holder.execute("SELECT credvault.request_read('alpha', 'db', '')")
    waits.append(_in_background(holder, "SELECT credvault.rename_credential('alpha', 'c1', 'db')"))
    wait_until(lambda: _waiting(pg, holder.info.backend_pid), "the holder's wait for c1")
    with pg.connect() as dba:  # carol's put has waited longer than the hold limit
        wait_until(
            lambda: bool(
                dba.execute(
                    "SELECT xact_start < clock_timestamp() - interval '2.5 s'"
                    " FROM pg_stat_activity WHERE pid = %s",
                    (carol_pid,),
                ).fetchone()[0]
            ),
            "carol's put to have waited past the hold limit",
        )

    assert _read(pg, "alice") > 0  # the chain comes free ...

    wait_until(lambda: bool(put), "carol's put to end")
    # ... and carol's session was never ended. Her put went through, or (bob's b8 waits for
    # the row she then holds while she waits for the chain bob holds) it was the one the
    # deadlock detector chose, an answer bob could always get her with two sessions.
    assert put == [True] or isinstance(put[0], psycopg.errors.DeadlockDetected), put
    assert not _gone(carol)
    assert _gone(root)
    assert {i for _, i, _ in _ended(pg)} == {"bob"}
    _chain_ok(pg)
    with pg.connect() as dba:  # bob's sessions still waiting on one another: the DBA's turn
        dba.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
            (pg.role("bob"),),
        )
    for w in waits:
        wait_until(lambda w=w: bool(w), "bob's waits to end")


def test_a_session_level_advisory_lock_does_not_hold_the_chain_for_ever(
    pg: Any, conns: list[Any]
) -> None:
    """bob's session b2 locks alpha/db (an unaudited rename onto a name that exists) and
    waits for an advisory lock his keeper took at session level (pg_advisory_lock, which
    every role may call); then his holder takes the chain and waits for alpha/db. The
    keeper is the root, but out of any transaction between its statements and never idle
    for long (SELECT 1 every 0.2 s): chainheld judged roots by their transaction, so
    nothing was ever ended. A root someone has waited for an advisory lock for longer than
    the hold limit is ended, and it goes first: that wait is older than the holder's
    transaction. Then b2 and the holder, each open past the limit, oldest first."""
    _team(pg, idle=60, hold=2)
    pg.put("alice", "alpha", "db2", b"db2-envelope")
    keeper = _session(conns, pg.connect("bob"))
    keeper.execute("SELECT pg_advisory_lock(4242)")
    stop = threading.Event()

    def busy() -> None:  # never idle for a second, never in a transaction for long
        try:
            while not stop.wait(0.2):
                keeper.execute("SELECT 1")
        except psycopg.OperationalError:
            pass  # ended

    threading.Thread(target=busy, daemon=True).start()
    b2 = _session(conns, pg.connect("bob", autocommit=False))
    assert b2.execute("SELECT credvault.rename_credential('alpha', 'db', 'db2')").fetchone()[0] == (
        "exists"
    )
    _in_background(b2, "SELECT pg_advisory_lock(4242)")
    with pg.connect() as dba:  # b2 has waited past the hold limit before the holder starts
        wait_until(
            lambda: bool(
                dba.execute(
                    "SELECT coalesce(bool_or(waitstart < clock_timestamp() - interval '2.5 s'),"
                    " false) FROM pg_locks WHERE pid = %s AND NOT granted",
                    (b2.info.backend_pid,),
                ).fetchone()[0]
            ),
            "b2's wait for the advisory lock to pass the hold limit",
        )
    holder = _session(conns, pg.connect("bob", autocommit=False))
    holder.execute("SELECT credvault.request_read('alpha', 'db', 'left waiting')")
    _in_background(holder, "SELECT credvault.rename_credential('alpha', 'db', 'db2')")
    wait_until(lambda: _waiting(pg, holder.info.backend_pid), "bob's holder to wait")
    try:
        with pg.connect("alice") as alice:
            alice.execute("SET statement_timeout = '30s'")
            row = alice.execute("SELECT credvault.request_read('alpha', 'db', '')").fetchone()
            assert int(row[0]) > 0
    finally:
        stop.set()
    assert _gone(keeper)
    assert _gone(b2)
    assert _gone(holder)
    ended = _ended(pg)
    assert [(m, i) for m, i, _ in ended] == [("alice", "bob")] * 3
    assert ended[0][2].startswith("a lock it held for")  # the keeper, first
    assert all(d.startswith("its transaction open for") for _, _, d in ended[1:])
    _chain_ok(pg)


def test_fresh_share_lockers_relayed_do_not_hold_the_chain_for_ever(
    pg: Any, conns: list[Any]
) -> None:
    """bob's holder (an open transaction that called request_read) asks for alpha's
    engagement row FOR UPDATE (revoke_grant_logged locks it before it checks the role).
    bob's other sessions each hold the row FOR SHARE (open_for_write, from a rename of a
    credential that does not exist: 'not found', unaudited); a new one joins every 0.5 s,
    which a share lock may do past a waiting FOR UPDATE. Each is ended once stale, but the
    holder then waits for the next, fresh one: judged only at roots, the holder never was,
    and the chain was held as long as bob kept relaying. The holder itself, open past the
    hold limit, is ended now, waiting or not."""
    _team(pg, idle=60, hold=2)
    stop = threading.Event()

    relayed: list[int] = []

    def relay() -> None:
        while not stop.is_set():
            try:
                r = _session(conns, pg.connect("bob", autocommit=False))
                r.execute("SELECT credvault.rename_credential('alpha', 'nope', 'zz')")
                relayed.append(r.info.backend_pid)
            except psycopg.Error:
                pass
            stop.wait(0.5)

    relayer = threading.Thread(target=relay, daemon=True)
    relayer.start()
    wait_until(lambda: bool(relayed), "the first relayed FOR SHARE")
    holder = _session(conns, pg.connect("bob", autocommit=False))
    holder.execute("SELECT credvault.request_read('alpha', 'db', 'relay')")
    _in_background(holder, "SELECT credvault.revoke_grant_logged('alpha', 'carol', '\\x00')")
    wait_until(lambda: _waiting(pg, holder.info.backend_pid), "bob's holder to wait")
    try:
        with pg.connect("alice") as alice:
            alice.execute("SET statement_timeout = '12s'")
            row = alice.execute("SELECT credvault.request_read('alpha', 'db', '')").fetchone()
            assert int(row[0]) > 0
    finally:
        stop.set()
        relayer.join(30)  # no session of bob's opened after the fixture closes them
