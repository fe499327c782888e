"""Review of section rebindpin (upgrade-2.sql): a secret sealed again for a new binding is
stored only over the credential version its rebind read found.

rebind_read(who, kind, cid) asked whether *any* claimed rebind request of the member found
the row at its current version, not whether the request the stored secret came from did.
Another (later) request of the same member satisfied it: a second `mv`/`edit` from
another terminal of that member, or an abandoned one, let a store sealed from a value read
before a colleague's put overwrite that put. Now each store names its request
(rebind_read(who, kind, cid, request)). Also the honest flows the check must not break.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from credvault import Secret

from .test_contract import World, _postgresql
from .test_crl_pg import member

psycopg = pytest.importorskip("psycopg")

KV1 = b"\x02\x00\x00\x00\x01"  # a record-bound envelope under key version 1 (rebound_ok)
UIDQ = (
    "SELECT c.uid FROM credvault.credentials c JOIN credvault.engagements e"
    " ON e.id = c.engagement_id WHERE e.name = 'alpha' AND c.name = 'db'"
)


def _rebind_read(conn: Any, kind: str, eng: str, name: str) -> tuple[int, bytes]:
    """(the claimed request, the secret it released)."""
    from pg_cluster import fetch_as_a_client

    ask = "SELECT credvault.request_record(%s, %s, %s)"
    req = conn.execute(ask, (kind, eng, name)).fetchone()[0]
    assert req is not None
    return int(req), bytes(fetch_as_a_client(conn, req, "e1", "fetch_record")[0])


def _secret(pg: Any, eng: str, name: str) -> bytes:
    with pg.connect() as owner:
        return bytes(
            owner.execute(
                "SELECT c.secret_env FROM credvault.credentials c JOIN credvault.engagements e"
                " ON e.id = c.engagement_id WHERE e.name = %s AND c.name = %s",
                (eng, name),
            ).fetchone()[0]
        )


def _linked_to_web(pg_cluster: Any) -> Any:
    """alice's alpha (tests/postgres/test_insider_pg.py's team) with db, an unbound (0x01)
    value, linked to a new system web."""
    from pg_cluster import new_pg_vault

    from .test_insider_pg import _populate

    pg = _populate(new_pg_vault(pg_cluster))
    pg.put("alice", "alpha", "db", b"\x01" + b"unbound")
    with pg.connect("alice") as a:
        a.execute(
            "SELECT credvault.put_system('alpha', 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (b"w" * 16, b"addr"),
        )
        linked = a.execute(
            "SELECT credvault.edit_credential('alpha', 'db', %s, 1, false, NULL, false,"
            " NULL, false, NULL, NULL, true, 'web', 'system')",
            (a.execute(UIDQ).fetchone()[0],),
        ).fetchone()[0]
    assert linked == "ok"
    return pg


@pytest.mark.parametrize("flow", ["mv", "edit"])
def test_a_store_is_not_vouched_for_by_another_request_of_the_same_member(
    pg_cluster: Any, flow: str
) -> None:
    """alice's first terminal reads db (V1) to seal it again; bob puts V2; alice's second
    terminal reads db again (V2). The first terminal's store, sealed from V1, passed
    rebind_read on the second terminal's request and overwrote bob's V2 (for mv without
    even an earlier version of it). Named with its own request (or none), it is refused,
    as for any other put in between; the second terminal's store, over the version its
    request found, is not."""
    from pg_cluster import new_pg_vault

    from .test_insider_pg import _populate

    pg = _populate(new_pg_vault(pg_cluster))
    pg.put("alice", "alpha", "db", KV1 + b"V1")
    kind = f"rebind-{flow}"
    with pg.connect("alice") as t1, pg.connect("alice") as t2:
        r1, got = _rebind_read(t1, kind, "alpha", "db")
        assert got == KV1 + b"V1"
        pg.put("bob", "alpha", "db", KV1 + b"V2")  # the colleague's put in between
        r2, got = _rebind_read(t2, kind, "alpha", "db")
        assert got == KV1 + b"V2"
        uid = t1.execute(UIDQ).fetchone()[0]
        if flow == "mv":
            sql = "SELECT credvault.rename_credential('alpha', 'db', 'db2', %s, %s)"
        else:
            sql = (
                "SELECT credvault.edit_credential('alpha', 'db', %s, 1, false, NULL, false,"
                " NULL, false, NULL, 'token', false, NULL, 'kind', %s, %s)"
            )

        def args(secret: bytes, req: int | None) -> tuple[Any, ...]:
            return (secret, req) if flow == "mv" else (uid, secret, req)

        for req in (r1, None):
            with pytest.raises(psycopg.errors.SerializationFailure):
                t1.execute(sql, args(KV1 + b"V1-sealed-again", req))
        assert _secret(pg, "alpha", "db") == KV1 + b"V2"
        t2.execute(sql, args(KV1 + b"V2-sealed-again", r2))
    name = "db2" if flow == "mv" else "db"
    assert _secret(pg, "alpha", name) == KV1 + b"V2-sealed-again"


# -- honest flows the check must not break ---------------------------------------------------
@pytest.fixture
def w(tmp_path: Path, pg_cluster: Any) -> World:
    return _postgresql(tmp_path, pg_cluster)


def test_mv_right_after_a_put_in_the_same_session(w: World) -> None:
    with member(w, "alice") as alice:
        alice.credentials.put("acme-2026/db", Secret(b"one"))
        alice.credentials.put("acme-2026/db", Secret(b"two"))
        alice.credentials.move("acme-2026/db", "db2")
        assert alice.credentials.get("acme-2026/db2").secret.reveal() == b"two"


def test_an_edit_of_notes_only_needs_no_rebind_read(w: World) -> None:
    with member(w, "alice") as alice:
        alice.credentials.put("acme-2026/db", Secret(b"one"))
    with member(w, "alice") as colleague:
        colleague.credentials.put("acme-2026/db", Secret(b"two"))
    with member(w, "alice") as alice:
        alice.credentials.edit("acme-2026/db", {"notes": "n"})
        alice.credentials.edit("acme-2026/db", {"kind": "token", "notes": "m"})
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"two"


def test_system_rm_and_restore_with_many_linked_credentials(w: World) -> None:
    names = [f"c{i:02d}" for i in range(25)]
    with member(w, "alice") as alice:
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        for n in names:
            alice.credentials.put(f"acme-2026/{n}", Secret(n.encode()), system="web")
        alice.systems.remove("acme-2026/web")
        alice.systems.restore("acme-2026/web")
        for n in names:
            got = alice.credentials.get(f"acme-2026/{n}")
            assert got.secret.reveal() == n.encode()
        linked = {c[1] for c in alice.store.credentials("acme-2026") if c[5] == "web"}
        assert linked == set(names)


def test_system_rm_of_unbound_envelopes_without_secrets(pg_cluster: Any) -> None:
    """Format 0x01 credentials linked to the system, no secret sent: removed, unchecked."""
    pg = _linked_to_web(pg_cluster)
    with pg.connect("alice") as a:
        removed = a.execute("SELECT outcome FROM credvault.remove_system('alpha', 'web')")
        assert removed.fetchone()[0] == "ok"


def test_system_rm_does_not_unlink_a_bound_value_put_while_it_checked(pg_cluster: Any) -> None:
    """remove_system checked the linked credentials' formats (a 0x02 value needs a secret
    sealed again) before locking them: bob's put, in flight then (a new uid, a 0x02 value
    bound to web), commits while remove_system waits for the row; the uid-keyed checks then
    match nothing (the secret sent is for the old uid), and the value is left bound to a
    link it no longer has. Now the rows are locked before the check: refused."""
    import threading
    import time

    pg = _linked_to_web(pg_cluster)
    pg.put("alice", "alpha", "db", KV1 + b"V1")  # bound to web now, a new uid
    out: list[Any] = []
    with pg.connect("alice") as a, pg.connect("bob", autocommit=False) as b:
        uid = bytes(a.execute(UIDQ).fetchone()[0])
        req, got = _rebind_read(a, "rebind-edit", "alpha", "db")
        assert got == KV1 + b"V1"
        pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        b.execute(
            "SELECT credvault.put_credential('alpha', 'db', 'password', %s, 1, %s)",
            (b"u" * 16, KV1 + b"BOB"),
        )  # uncommitted: db's row locked

        def rm() -> None:
            try:
                out.append(
                    a.execute(
                        "SELECT outcome FROM credvault.remove_system('alpha', 'web',"
                        " %s::bytea[], %s::bytea[], %s::bigint[])",
                        ([uid], [KV1 + b"V1-unlinked"], [req]),
                    ).fetchone()[0]
                )
            except psycopg.Error as e:
                out.append(e)

        th = threading.Thread(target=rm)
        th.start()
        with pg.connect() as owner:
            for _ in range(600):
                waiting = owner.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (pid,),
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("remove_system never waited for the row")
        b.commit()
        th.join(60)
    assert len(out) == 1
    assert isinstance(out[0], psycopg.Error), out
    with pg.connect() as owner:
        linked = owner.execute(
            "SELECT c.system_id IS NOT NULL FROM credvault.credentials c"
            " WHERE c.name = 'db' AND c.engagement_id = (SELECT id FROM credvault.engagements"
            " WHERE name = 'alpha')"
        ).fetchone()[0]
    assert linked  # bob's value, bound to web, still linked to it
