"""The record commands (pgcmds) under the membership log (pglog) and the purge (pgops).

A team vault's engagements carry a signed membership log, so every secret is sealed bound
to its record (format 0x02) and an unbound one is refused. These tests check that what the
record commands add keeps to that: a rename or an edit of kind or link seals the secret
again for its new binding, a rotation re-seals every record (the trash and earlier
versions included) under the new key with its log link, and a shred deletes every one of
them. The checks of the rows are made as the database owner (the DBA), who sees them all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pg_cluster import Cluster, running_cluster  # noqa: F401 (the session cluster fixture)
from postgres.test_contract import SECRET, World, _postgresql

ENG = "acme-2026"
ENVELOPES = (
    ("credentials", "secret_env"),
    ("credential_versions", "secret_env"),
    ("credential_trash", "secret_env"),
    ("systems", "address_env"),
    ("system_trash", "address_env"),
)


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def _owner(team: World) -> Any:
    import psycopg

    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]
    return psycopg.connect(cluster.conninfo(str(team.extra["db"])), password=cluster.password)


def _anchors(team: World) -> dict[str, list[tuple[int, int]]]:
    """(format byte, key version in the header) of every anchor envelope, by table."""
    out: dict[str, list[tuple[int, int]]] = {}
    with _owner(team) as conn:
        for table, col in ENVELOPES:
            rows = conn.execute(f"SELECT {col} FROM credvault.{table}").fetchall()  # noqa: S608 (fixed table names)
            out[table] = [(r[0][0], int.from_bytes(r[0][1:5], "big")) for r in rows]
    return out


def test_mv_and_edit_seal_the_secret_again_for_its_new_binding(team: World) -> None:
    team.ok("alice", "system", "add", f"{ENG}/web1", "--address", "10.0.0.7")
    team.ok("alice", "put", f"{ENG}/db", input=b"first\n")
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "mv", f"{ENG}/db", "db-prod")
    assert team.ok("alice", "get", f"{ENG}/db-prod").out == SECRET + b"\n"
    assert team.ok("alice", "get", f"{ENG}/db-prod", "--version", "1").out == b"first\n"
    team.ok("alice", "edit", f"{ENG}/db-prod", "--kind", "token", "--system", "web1")
    assert team.ok("alice", "get", f"{ENG}/db-prod").out == SECRET + b"\n"
    assert team.ok("alice", "get", f"{ENG}/db-prod", "--field", "address").out == b"10.0.0.7\n"
    # a system's removal unlinks it and its restore links it again: re-bound both times
    team.ok("alice", "system", "rm", f"{ENG}/web1")
    assert team.ok("alice", "get", f"{ENG}/db-prod").out == SECRET + b"\n"
    assert team.run("alice", "get", f"{ENG}/db-prod", "--field", "address").code == 3
    team.ok("alice", "trash", "restore", "--system", f"{ENG}/web1")
    assert team.ok("alice", "get", f"{ENG}/db-prod").out == SECRET + b"\n"
    assert team.ok("alice", "get", f"{ENG}/db-prod", "--field", "address").out == b"10.0.0.7\n"
    team.ok("alice", "edit", f"{ENG}/db-prod", "--clear", "system")
    assert team.ok("alice", "get", f"{ENG}/db-prod").out == SECRET + b"\n"
    hist = json.loads(team.ok("alice", "history", f"{ENG}/db-prod", "--json").out)
    # the rename and the system's trip through the trash are no new versions; each edit
    # of kind or link is one
    assert [h["changed"] for h in hist] == ["created", "secret", "kind, system", "system"]
    assert all(fmt == 2 for fmt, _ in _anchors(team)["credentials"])


def test_rotation_reseals_versions_and_the_trash_under_the_log(team: World) -> None:
    team.ok("alice", "system", "add", f"{ENG}/web1", "--address", "10.0.0.5", "--port", "22")
    team.ok("alice", "system", "add", f"{ENG}/old", "--address", "10.0.0.6")
    team.ok("alice", "put", f"{ENG}/db", "--system", "web1", input=b"first\n")
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "put", f"{ENG}/gone", input=b"bye\n")
    team.ok("alice", "rm", f"{ENG}/gone")
    team.ok("alice", "system", "rm", f"{ENG}/old")
    before = _anchors(team)
    assert all(before[t] for t, _ in ENVELOPES), before
    with _owner(team) as conn:
        links = conn.execute("SELECT count(*) FROM credvault.engagement_log").fetchone()[0]
    team.ok("alice", "grant", ENG, "bob", "engineer")
    team.ok("alice", "revoke", ENG, "bob")  # rotates
    after = _anchors(team)
    for table, _ in ENVELOPES:
        assert after[table], table
        assert {kv for _, kv in after[table]} == {2}, (table, after[table])  # nothing under 1
        assert {fmt for fmt, _ in after[table]} == {2}, table  # bound
    with _owner(team) as conn:
        kinds = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT link FROM credvault.engagement_log ORDER BY engagement_id, seq"
            ).fetchall()
        ]
    assert len(kinds) > links  # the grant, the revoke and the rotate links were appended
    assert team.ok("alice", "get", f"{ENG}/db").out == SECRET + b"\n"
    assert team.ok("alice", "get", f"{ENG}/db", "--version", "1").out == b"first\n"
    team.ok("alice", "trash", "restore", f"{ENG}/gone")
    assert team.ok("alice", "get", f"{ENG}/gone").out == b"bye\n"
    team.ok("alice", "trash", "restore", "--system", f"{ENG}/old")
    assert b"10.0.0.6" in team.ok("alice", "system", "show", f"{ENG}/old").out


def test_a_shred_deletes_versions_and_the_trash_and_counts_them(team: World) -> None:
    team.ok("alice", "system", "add", f"{ENG}/old", "--address", "10.0.0.6")
    team.ok("alice", "system", "rm", f"{ENG}/old")
    team.ok("alice", "put", f"{ENG}/db", input=b"first\n")
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "put", f"{ENG}/gone", input=b"bye\n")
    team.ok("alice", "rm", f"{ENG}/gone")
    team.run("alice", "engagement", "shred", ENG, "--yes")  # exit 1 until the rewrite
    with _owner(team) as conn:
        for table in (
            "credentials",
            "systems",
            "credential_versions",
            "credential_trash",
            "system_trash",
            "record_requests",
        ):
            n = conn.execute(f"SELECT count(*) FROM credvault.{table}").fetchone()[0]  # noqa: S608 (fixed table names)
            assert n == 0, table
        facts = conn.execute(
            "SELECT purge_facts FROM credvault.engagements WHERE name = %s", (ENG,)
        ).fetchone()[0]
    destroyed = facts["destroyed"]
    assert destroyed["credentials"] == 1
    assert destroyed["credential_versions"] == 1
    assert destroyed["trashed_credentials"] == 1
    assert destroyed["trashed_systems"] == 1


def test_an_unbound_address_written_by_an_insider_is_refused(team: World) -> None:
    """The DBA (with a key a member once held) replaces a system's bound address with one
    sealed to its place only (format 0x01), which would open if the binding were optional:
    under the membership log the member's client refuses it (exit 6), on show and on the
    next rotation alike."""
    import os

    from credvault import Secret, Team
    from credvault.crypto import envelope

    team.ok("alice", "system", "add", f"{ENG}/web1", "--address", "10.0.0.7")
    pw = Path(team.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    old = dict(os.environ)
    os.environ["XDG_CONFIG_HOME"] = team.envs["alice"]["XDG_CONFIG_HOME"]
    try:
        with Team.open(team.target, "alice", Secret(pw)) as alice:
            eng_uid, key, version = alice.engagement_key(ENG, "read")
            vault_id = alice.vault_id
    finally:
        os.environ.clear()
        os.environ.update(old)
    with _owner(team) as conn:
        (uid,) = conn.execute("SELECT uid FROM credvault.systems WHERE name = 'web1'").fetchone()
        place = envelope.Place(vault_id, eng_uid, "systems", bytes(uid), "address")
        forged = envelope.seal(place, b"203.0.113.66", key, version)
        assert not envelope.is_bound(forged)
        conn.execute("UPDATE credvault.systems SET address_env = %s WHERE name = 'web1'", (forged,))
    shown = team.run("alice", "system", "show", f"{ENG}/web1")
    assert shown.code == 6, shown.err
    assert b"203.0.113.66" not in shown.out
    team.ok("alice", "grant", ENG, "bob", "engineer")
    assert team.run("alice", "revoke", ENG, "bob").code == 6  # the rotation stops too


def test_the_trash_expires_when_an_admin_next_opens_the_vault(team: World) -> None:
    """Expiry (section pgstatus): the DBA moves the recovery period of two removed records
    into the past (what a clock moving on does); a member's command destroys nothing, an
    admin's next command destroys exactly those, their history with them, on the record."""
    team.setup(
        [
            ("alice", ("grant", ENG, "bob", "engineer")),
            ("alice", ("system", "add", f"{ENG}/old", "--address", "10.0.0.6")),
            ("alice", ("system", "rm", f"{ENG}/old")),
            ("alice", ("put", f"{ENG}/gone", "--generate")),
            ("alice", ("put", f"{ENG}/gone", "--generate")),
            ("alice", ("rm", f"{ENG}/gone")),
            ("alice", ("put", f"{ENG}/kept", "--generate")),
            ("alice", ("rm", f"{ENG}/kept")),
        ]
    )
    with _owner(team) as conn:
        n = conn.execute(
            "WITH a AS (UPDATE credvault.credential_trash SET expires_at = now() - interval '1s'"
            " WHERE name = 'gone' RETURNING 1), b AS (UPDATE credvault.system_trash"
            " SET expires_at = now() - interval '1s' WHERE name = 'old' RETURNING 1)"
            " SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)"
        ).fetchone()[0]
        assert n == 2
        assert conn.execute("SELECT count(*) FROM credvault.credential_versions").fetchone()[0] == 1
    before = team.ok("bob", "trash", "ls", ENG).text  # not an admin: nothing expires
    assert ("gone" in before, "kept" in before, "old" in before) == (True, True, True)
    after = team.ok("alice", "trash", "ls", ENG).text
    assert ("gone" in after, "kept" in after, "old" in after) == (False, True, False)
    with _owner(team) as conn:
        left = conn.execute(
            "SELECT (SELECT array_agg(name) FROM credvault.credential_trash),"
            " (SELECT count(*) FROM credvault.system_trash),"
            " (SELECT count(*) FROM credvault.credential_versions)"
        ).fetchone()
        audit = conn.execute(
            "SELECT member, action, engagement, outcome, detail FROM credvault.audit"
            " WHERE action = 'trash-expire'"
        ).fetchall()
    assert left == (["kept"], 0, 0)  # the envelopes are gone from the tables, history too
    assert audit == [("alice", "trash-expire", None, "ok", "1 credentials and 1 systems destroyed")]
