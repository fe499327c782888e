"""Backups of a team vault cannot bring destroyed data back unnoticed (issue 14, points 5 and
8; docs/team.md "Backups"): the real ``pg_dump -Fc`` and ``pg_restore --clean`` as the
database owner, a dump made before a shred restored over the live database (the attack:
the engagement, its envelopes and sealed copies are back), then an admin's ``credvault
purge`` reads the purge ledger kept on the machine that signed the receipt and destroys it
again with the server's own destruction; forged and edited ledger lines are ignored and
named; a second run is a no-op; without a ledger it warns."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from credvault.crypto import primitives as p
from credvault.keyslots import MemberKeys
from credvault.team_lifecycle import sign_receipt
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _postgresql, one_line
from postgres.test_contract_lifecycle import ENG, owner_target

OTHER = "beta-2026"
MOVED = "gamma-2026"  # closed before the dump; its purge date moved after it


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def _owner_tool(w: World, tool: str, *args: str) -> None:
    """``pg_dump``/``pg_restore`` from the cluster's bindir, as the vault's owner role."""
    c: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    env = c.env(str(w.extra["owner"]), str(w.extra["owner_pw"]), str(w.extra["db"]))
    env["PGHOST"] = "127.0.0.1"
    r = subprocess.run(
        [str(c.bindir / tool), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr


def _dba(w: World) -> Any:
    c: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    return psycopg.connect(c.conninfo(str(w.extra["db"])), password=c.password, autocommit=True)


def _what_is_left(w: World, eng: str) -> tuple[str, int, int, int]:
    """(state, credentials, sealed copies, earlier versions) of ``eng``, as the DBA sees it."""
    with _dba(w) as conn:
        row = conn.execute(
            "SELECT e.state,"
            " (SELECT count(*) FROM credvault.credentials c WHERE c.engagement_id = e.id),"
            " (SELECT count(*) FROM credvault.grants g"
            "   WHERE g.engagement_id = e.id AND g.sealed IS NOT NULL),"
            " (SELECT count(*) FROM credvault.credential_versions v"
            "   WHERE v.engagement_id = e.id)"
            " FROM credvault.engagements e WHERE e.name = %s",
            (eng,),
        ).fetchone()
    return str(row[0]), int(row[1]), int(row[2]), int(row[3])


def _lifecycle(w: World, eng: str) -> tuple[str, str, str, str]:
    """(state, closed_at, hold_until, purge_due) of ``eng``, as the DBA sees it."""
    with _dba(w) as conn:
        row = conn.execute(
            "SELECT state, closed_at::text, hold_until::text, purge_due::text"
            " FROM credvault.engagements WHERE name = %s",
            (eng,),
        ).fetchone()
    return str(row[0]), str(row[1]), str(row[2]), str(row[3])


def _purges(w: World, eng: str) -> int:
    with _dba(w) as conn:
        row = conn.execute(
            "SELECT count(*) FROM credvault.audit WHERE action = 'purge' AND engagement = %s "
            "AND outcome = 'ok'",
            (eng,),
        ).fetchone()
    return int(row[0])


def _forged_ledger(w: World, real: Path, out: Path) -> None:
    """Two lines aimed at OTHER: alice's real receipt edited to name it, and a receipt of it
    signed by a key nobody pinned (as an insider with a key of their own would make)."""
    vid = json.loads(real.read_text().splitlines()[0])["vault_id"]
    lines = real.read_text().splitlines()
    receipt = next(json.loads(x) for x in lines if "credvault-purge-receipt/2" in x)
    edited = {**receipt, "engagement": OTHER}
    facts = {k: v for k, v in receipt.items() if k not in ("signature", "public_key", "key_id")}
    facts.pop("destruction_complete_at")
    facts["engagement"] = OTHER
    stranger = MemberKeys("mallory", os.urandom(32), p.KeyBytes(os.urandom(32)), b"")
    forged = sign_receipt(stranger, facts, None)
    head = {"format": "credvault-purge-ledger/1", "vault_id": vid, "as_of": "2099-01-01"}
    out.write_text("\n".join(json.dumps(x) for x in (head, edited)) + "\n" + forged + "\n")


def test_a_restored_dump_cannot_bring_a_purged_engagement_back(team: World, tmp_path: Path) -> None:
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.setup(
        [
            ("alice", ("grant", ENG, "bob", "engineer")),
            ("alice", ("engagement", "new", OTHER, "--client", "beta")),
            ("alice", ("engagement", "new", MOVED, "--client", "gamma")),
            ("alice", ("engagement", "close", MOVED)),
        ]
    )
    team.ok("alice", "put", f"{OTHER}/db", input=b"other\n")
    dump = tmp_path / "team.dump"
    _owner_tool(team, "pg_dump", "-Fc", "-f", str(dump), str(team.extra["db"]))

    shred = team.run("alice", "engagement", "shred", ENG, "--yes")
    assert shred.code == 1  # "purge NOT complete" until the owner's rewrite
    assert "purge NOT complete" in shred.err
    assert _what_is_left(team, ENG) == ("purged", 0, 0, 0)
    # closed and held after the dump too: the close record is signed into the same ledger
    team.setup(
        [
            ("alice", ("engagement", "close", OTHER)),
            ("alice", ("engagement", "retain", OTHER, "--until", "2099-01-01", "--reason", "x")),
            # the vault's grace period changed: MOVED's close record, with its new date too
            ("alice", ("config", "set", "purge-grace-days", "30")),
        ]
    )
    moved = _lifecycle(team, MOVED)
    held = _lifecycle(team, OTHER)
    assert held[0] == "closed"
    assert held[2].startswith("2099-01-01")
    state_dir = Path(team.envs["alice"]["XDG_STATE_HOME"]) / "credvault" / "team"
    ledger = state_dir / str(team.extra["db"]) / "purge-ledger.jsonl"
    assert ledger.stat().st_mode & 0o777 == 0o600
    assert f'"engagement":"{ENG}"' in ledger.read_text()  # kept on the machine that signed

    # the attack: the owner (or anyone who can) restores the dump made before the shred
    _owner_tool(
        team, "pg_restore", "--clean", "--if-exists", "-d", str(team.extra["db"]), str(dump)
    )
    assert _what_is_left(team, ENG) == ("active", 1, 2, 0)  # envelopes and sealed copies back
    assert team.ok("bob", "get", f"{ENG}/db").out == SECRET + b"\n"

    forged = tmp_path / "forged.jsonl"
    _forged_ledger(team, ledger, forged)
    r = team.run("alice", "purge", "--ledger", str(forged))
    assert r.code == 1, r.err  # destroyed again; the owner's rewrite is pending again
    assert r.text.splitlines() == [
        f"destroyed after this backup was made, destroyed again now: {ENG}",
        f"closed after this backup was made, closed again now (purged when due): {OTHER}, {MOVED}",
        f"records of destruction consulted: {ledger}, {forged}",
        "nothing due",
    ]
    err = r.err.splitlines()
    assert err[0] == (
        f"credvault: warning: ignored {forged}:2: receipt of '{OTHER}' ignored "
        "(purge receipt: signature check failed)"
    ), err
    assert err[1].startswith(
        f"credvault: warning: ignored {forged}:3: receipt of '{OTHER}' ignored ("
    )
    assert "not in the vault's key history" in err[1]
    assert err[2].startswith("credvault: purge NOT complete")
    assert len(err) == 3
    assert _what_is_left(team, ENG) == ("purged", 0, 0, 0)  # every envelope and copy gone
    assert _purges(team, ENG) == 1
    assert _what_is_left(team, OTHER) == ("closed", 1, 1, 0)  # the forgeries destroyed nothing
    assert _lifecycle(team, OTHER) == held  # closed and held as recorded, not active
    assert _lifecycle(team, MOVED) == moved  # due as the grace period change moved it
    closed, due = (datetime.fromisoformat(moved[k]) for k in (1, 3))
    assert due - closed == timedelta(days=30)
    with _dba(team) as conn:
        (reclosed,) = conn.execute(
            "SELECT detail FROM credvault.audit WHERE action = 'close' AND engagement = %s "
            "AND outcome = 'ok' ORDER BY seq DESC LIMIT 1",
            (OTHER,),
        ).fetchone()
    assert reclosed.startswith("as recorded after the backup (purge-ledger.jsonl): closed ")
    assert reclosed.endswith(", purge due 2099-01-01T23:59; held until 2099-01-01T23:59")
    assert team.run("bob", "get", f"{ENG}/db").code != 0
    with _dba(team) as conn:
        detail = conn.execute(
            "SELECT member, detail FROM credvault.audit WHERE action = 'purge' "
            "AND engagement = %s ORDER BY seq DESC LIMIT 1",
            (ENG,),
        ).fetchone()
    assert detail[0] == "alice"
    assert detail[1].startswith("destroyed after this backup was made; 1 credentials, 0 systems")
    # the new receipt, signed again on alice's machine, is in her ledger too
    assert ledger.read_text().count(f'"engagement":"{ENG}"') == 2

    rw = team.ok("alice", "purge", "--rewrite", "--vault", owner_target(team))
    assert rw.text.startswith("rewrote the table files: 1 ")
    again = team.ok("alice", "purge", "--ledger", str(ledger))  # twice: a no-op
    assert again.text == f"records of destruction consulted: {ledger}\nnothing due\n"
    assert _purges(team, ENG) == 1  # the shred's own entry went with the restore
    assert _what_is_left(team, ENG) == ("purged", 0, 0, 0)
    receipt = json.loads(team.ok("alice", "receipt", ENG, "--json").out)
    assert receipt["reason"] == "destroyed after this backup was made"
    pub = base64.b64decode(team.ok("alice", "info", "--public-key").text.split()[-1])
    assert base64.b64decode(receipt["public_key"]) == pub

    # no ledger at all (another machine, or it was lost): one warning, nothing destroyed
    ledger.unlink()
    bare = team.run("alice", "purge", "--ledger", str(tmp_path / "missing.jsonl"))
    assert bare.code == 0, bare.err
    assert bare.text == "records of destruction consulted: none\nnothing due\n"
    assert bare.err.splitlines() == [
        f"credvault: warning: ignored {tmp_path / 'missing.jsonl'}: no such file",
        "credvault: warning: no signed record of destruction was found: anything destroyed after the "
        "dump this database was restored from may have come back; pass --ledger FILE (the "
        'purging machine\'s purge-ledger.jsonl, docs/team.md "Backups")',
    ]

    # `credvault backup`/`restore` on a team vault: one line pointing to the owner's tools
    for args in (("backup",), ("restore", str(dump))):
        refused = team.run("alice", *args)
        assert refused.code == 1
        assert one_line(refused) == (
            f"credvault: `credvault {args[0]}` is not used on a team vault: the owner backs "
            "the database up with pg_dump or pgBackRest and restores it with their restore; "
            "an admin's `credvault purge --ledger FILE` then destroys again what was purged "
            'since (docs/team.md, "Backups")'
        )
