"""The schema's functions after every upgrade: what ``CREATE OR REPLACE`` in upgrade-2.sql
must not lose (issue 14). A replaced function keeps its owner and grants only if written
with the same signature, and keeps SECURITY DEFINER and its pinned ``search_path`` only if
the new text says so again; a slip there would hand a member's ``search_path`` to code that
runs as the owner. The insider tests check behaviour; these check the attributes."""

from __future__ import annotations

from typing import Any

# the read path's helpers that upgrade-2 rewrites in PL/pgSQL (pgspeed), with fetch, and the
# one-call read's claim and release (readclaim)
READ_PATH = (
    "vault_id",
    "is_admin",
    "role_in",
    "my_engagement_ids",
    "my_grant",
    "fetch",
    "claim_read",
    "release",
)


def _functions(pg: Any) -> list[tuple[str, bool, list[str] | None, str, str]]:
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner), l.lanname "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "JOIN pg_language l ON l.oid = p.prolang WHERE n.nspname = 'credvault'"
        ).fetchall()
    return [(str(r[0]), bool(r[1]), r[2], str(r[3]), str(r[4])) for r in rows]


def test_every_definer_function_pins_its_search_path_and_is_the_owners(pg: Any) -> None:
    functions = _functions(pg)
    assert {f[0] for f in functions} >= set(READ_PATH)
    for name, definer, config, owner, _ in functions:
        assert owner == pg.owner, name
        if definer:
            # fetch_export_records is planned anew at every call (section pinmany);
            # audit_append waits for the chain a second at a time (section chainheld)
            extra = {
                "fetch_export_records": ["plan_cache_mode=force_custom_plan"],
                "audit_append": ["lock_timeout=1s"],
            }.get(name, [])
            assert config == ["search_path=credvault, pg_temp", *extra], name


def test_the_read_path_helpers_stay_definer_functions_members_may_call(pg: Any) -> None:
    by_name = {f[0]: f for f in _functions(pg)}
    for name in READ_PATH:
        assert by_name[name][1] is True, name  # SECURITY DEFINER
        assert by_name[name][4] == "plpgsql", name  # plans kept per session
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT p.proname, has_function_privilege(%s, p.oid, 'EXECUTE'), "
            "has_function_privilege('public', p.oid, 'EXECUTE') FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'credvault' AND p.proname = ANY(%s)",
            (pg.role("alice"), list(READ_PATH)),
        ).fetchall()
    assert {r[0] for r in rows} == set(READ_PATH)
    for name, member_may, public_may in rows:
        assert member_may is True, name
        assert public_may is False, name
    # and they still answer as before for a member
    with pg.connect("alice") as conn:
        assert conn.execute("SELECT credvault.is_admin()").fetchone() == (True,)
        assert len(conn.execute("SELECT credvault.vault_id()").fetchone()[0]) == 16
        assert conn.execute("SELECT count(*) FROM credvault.my_engagement_ids()").fetchone() == (0,)
        assert conn.execute("SELECT credvault.role_in(1)").fetchone() == (None,)
        assert conn.execute("SELECT * FROM credvault.my_grant('nope')").fetchone() is None


def test_the_one_call_read_is_an_invoker_procedure_members_may_call(pg: Any) -> None:
    """``credvault.read`` commits between its steps, which PostgreSQL allows only in a
    SECURITY INVOKER procedure without a SET clause: it must hold no rule, and it runs with
    the member's own rights (each step it calls is a definer function that checks)."""
    with pg.connect() as conn:
        row = conn.execute(
            "SELECT p.prokind, p.prosecdef, p.proconfig, has_function_privilege(%s, p.oid, "
            "'EXECUTE'), has_function_privilege('public', p.oid, 'EXECUTE') FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'credvault' AND p.proname = 'read'",
            (pg.role("alice"),),
        ).fetchall()
    assert row == [("p", False, None, True, False)]
