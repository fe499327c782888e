"""An engagement's lifecycle and purge on a team vault (issue 14, requirement 5), beyond the
contract: the automatic purge when an admin opens the vault, the owner's rewrite that
waits for every older snapshot, the bytes leaving the table files, and the insider's
attempts, with the real ``psql`` as a member and as the DBA, to close, hold, purge or
forge a receipt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from credvault import Secret
from credvault.postgres.slot import TeamSlot
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _postgresql, one_line
from postgres.test_contract_lifecycle import ENG, owner_target


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    """alice (admin, lead of acme-2026), bob and carol on a team vault, set up by the CLI."""
    return _postgresql(tmp_path, pg_cluster)


def cluster_of(w: World) -> Cluster:
    c: Cluster = w.extra["cluster"]  # type: ignore[assignment]
    return c


def dba(w: World) -> Any:
    """The DBA: the cluster's superuser, on the vault's database."""
    c = cluster_of(w)
    return psycopg.connect(c.conninfo(str(w.extra["db"])), password=c.password, autocommit=True)


def psql(w: World, who: str, sql: str) -> subprocess.CompletedProcess[str]:
    """The real psql as ``who``'s own login (password derived from their key slot)."""
    slot_path = (
        Path(w.envs[who]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(w.extra["db"])
        / f"{who}.slot"
    )  # fmt: skip
    slot = TeamSlot.read(slot_path)
    pw = Path(w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    password = slot.login_password(slot.unlock(Secret(pw)))  # with the slot's salt, if any
    c = cluster_of(w)
    return subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=c.env(f"{w.extra['db']}_{who}", password, str(w.extra["db"])),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def state(w: World) -> tuple[str, str | None]:
    with dba(w) as conn:
        row = conn.execute(
            "SELECT state, receipt FROM credvault.engagements WHERE name = %s", (ENG,)
        ).fetchone()
    return str(row[0]), row[1]


def receipt_json(w: World) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(w.ok("alice", "receipt", ENG, "--json").out)
    return data


def test_an_admins_command_purges_what_is_due(team: World) -> None:
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "grant", ENG, "bob", "engineer")
    team.ok("alice", "engagement", "close", ENG, "--grace-days", "0")
    team.ok("bob", "ls")  # not an admin: nothing happens
    assert state(team)[0] == "closed"
    team.ok("alice", "member", "ls")  # any admin command but get
    assert state(team)[0] == "purged"
    r = receipt_json(team)
    assert r["purged_by"] == "alice (automatic, on open)"
    assert r["destruction_complete_at"] is None  # the owner has not rewritten yet
    with dba(team) as conn:
        acts = [
            a
            for (a,) in conn.execute(
                "SELECT action FROM credvault.audit WHERE engagement = %s ORDER BY seq", (ENG,)
            ).fetchall()
        ]
    assert acts[-3:] == ["purge", "receipt-sign", "receipt"]


def _files(root: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file())


def test_the_rewrite_waits_for_every_older_snapshot(team: World) -> None:
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    c = cluster_of(team)
    with dba(team) as conn:
        (env,) = conn.execute("SELECT secret_env FROM credvault.credentials").fetchone()
        (dboid,) = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    env = bytes(env)
    files = c.datadir / "base" / str(dboid)
    # a session whose snapshot predates the purge could still read the rows (it holds no
    # lock on the vault's tables: one would make the rewrite wait, then give up)
    old = psycopg.connect(c.conninfo(str(team.extra["db"])), password=c.password)
    old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    old.execute("SELECT count(*) FROM pg_class").fetchone()
    shred = team.run("alice", "engagement", "shred", ENG, "--yes")
    assert shred.code == 1
    assert "purge NOT complete" in one_line(shred)
    rw = team.run("alice", "purge", "--rewrite", "--vault", owner_target(team))
    assert rw.code == 1
    assert rw.out == b"rewrote the table files: 0 purged engagement(s) are out of them\n"
    assert "still visible to an older snapshot" in one_line(rw)
    assert old.execute("SELECT count(*) FROM credvault.credentials").fetchone() == (1,)  # yes
    c.superuser_sql("CHECKPOINT")
    assert env in _files(files)  # VACUUM FULL had to keep it
    assert team.run("alice", "purge").code == 1  # not complete: nothing to sign complete
    assert receipt_json(team)["destruction_complete_at"] is None
    old.close()
    rw = team.ok("alice", "purge", "--rewrite", "--vault", owner_target(team))
    assert rw.text == "rewrote the table files: 1 purged engagement(s) are out of them\n"
    c.superuser_sql("CHECKPOINT")
    assert env not in _files(files)
    assert team.run("alice", "purge").code == 0
    r = receipt_json(team)
    assert r["destruction_complete_at"] is not None
    assert r["destruction_complete_at"] >= r["purged_at"]
    # the horizon: purged_at + backup_retention_days (35 by default)
    from datetime import UTC, datetime, timedelta

    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)

    assert parse(r["backups_expire_at"]) - parse(r["purged_at"]) == timedelta(days=35)
    with dba(team) as conn:
        rows = conn.execute(
            "SELECT member, detail FROM credvault.audit WHERE action = 'purge-rewrite' ORDER BY seq"
        ).fetchall()
    owner = str(team.extra["owner"])
    assert rows == [
        (owner, "0 purged engagements rewritten out of the table files; 1 still seen by an "
                "older snapshot"),
        (owner, "1 purged engagements rewritten out of the table files"),
    ]  # fmt: skip


def test_a_member_cannot_change_the_lifecycle_or_purge_with_psql(team: World) -> None:
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "grant", ENG, "bob", "engineer")
    attempts = {
        f"SELECT credvault.close_engagement('{ENG}', 0)": "denied: role engineer",
        f"SELECT credvault.set_hold('{ENG}', now() + interval '1 day', 'x')": (
            "denied: role engineer"
        ),
        f"SELECT credvault.destroy_engagement('{ENG}', 'request', false) IS NULL": "t",
        f"SELECT credvault.destroy_engagement('{ENG}', 'grace', false) IS NULL": "t",
        "SELECT count(*) FROM credvault.due_purges(NULL, false, false)": "0",
    }
    for sql, want in attempts.items():
        out = psql(team, "bob", sql)
        assert out.returncode == 0, (sql, out.stderr)
        assert out.stdout.strip() == want, (sql, out.stdout)
    for sql in (
        f"SELECT credvault.close_engagement('{ENG}')",  # version 1's: closed to members
        "SELECT credvault.rewrite_candidates()",
        "SELECT credvault.record_rewrite(ARRAY['acme-2026'], 0)",
        "UPDATE credvault.engagements SET state = 'closed', purge_due = now()",
        "UPDATE credvault.engagements SET hold_until = NULL",
        "SELECT purge_facts FROM credvault.engagements",
        "SELECT receipt FROM credvault.engagements",
    ):
        out = psql(team, "bob", sql)
        assert out.returncode != 0, sql
        assert "permission denied" in out.stderr or "may not close" in out.stderr, (sql, out)
    assert state(team) == ("active", None)
    # and a lead who is not an admin may close and shred, but never purge a due engagement
    team.ok("alice", "grant", ENG, "carol", "lead")
    assert psql(team, "carol", f"SELECT credvault.close_engagement('{ENG}', 0)").stdout == "ok\n"
    out = psql(team, "carol", f"SELECT credvault.destroy_engagement('{ENG}', 'grace', false)")
    assert out.stdout.strip() == ""  # NULL: denied (admins only), audited
    assert state(team)[0] == "closed"


def test_nobody_forges_a_receipt(team: World, tmp_path: Path) -> None:
    import base64

    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.jcs import canonical
    from credvault.receipts import key_id

    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    team.ok("alice", "grant", ENG, "bob", "engineer")
    key = team.ok("alice", "info", "--public-key").text.strip()
    r = team.run("alice", "engagement", "shred", ENG, "--yes")
    assert r.code == 1  # rewrite pending
    good = state(team)[1]
    assert good is not None
    # a member cannot store one, and the admin cannot replace a signed one
    out = psql(team, "bob", f"SELECT credvault.store_receipt('{ENG}', '{{}}')")
    assert "may not sign the receipt" in out.stderr
    forged = json.loads(good)
    forged["destroyed"]["credentials"] = 0
    out = psql(team, "alice", f"SELECT credvault.store_receipt('{ENG}', '{json.dumps(forged)}')")
    assert "signed already" in out.stderr
    # the DBA edits the stored receipt: every reader checks the signature
    with dba(team) as conn:
        conn.execute(
            "UPDATE credvault.engagements SET receipt = %s WHERE name = %s",
            (json.dumps(forged), ENG),
        )
    bad = team.run("alice", "receipt", ENG)
    assert bad.code == 6
    one_line(bad)
    # ... or re-signs it with a key of their own, named inside: no member holds that key
    priv, pub = p.ed25519_generate()
    body = {k: v for k, v in json.loads(good).items() if k != "signature"}
    body["reason"] = "grace period expired"
    body["public_key"] = base64.b64encode(pub).decode()
    body["key_id"] = key_id(pub)
    sig = p.sign(priv, labels.RECEIPT_SIG, canonical(body))
    resigned = canonical({**body, "signature": base64.b64encode(sig).decode()}).decode()
    with dba(team) as conn:
        conn.execute(
            "UPDATE credvault.engagements SET receipt = %s WHERE name = %s", (resigned, ENG)
        )
    bad = team.run("alice", "receipt", ENG)
    assert bad.code == 6
    assert "names a key no admin or purging member has" in one_line(bad)
    # ... and also swaps alice's published key for theirs: the server now vouches for the
    # forgery, but the client checks against the key it was given before
    with dba(team) as conn:
        conn.execute("UPDATE credvault.members SET sign_pub = %s WHERE name = 'alice'", (pub,))
    shown = team.run("alice", "receipt", ENG, "--output", str(tmp_path / "f.json"))
    assert shown.code == 0
    v = team.run("alice", "verify-receipt", str(tmp_path / "f.json"), "--public-key", key)
    assert v.code == 6
    assert "valid receipt" not in v.text
    with dba(team) as conn:
        conn.execute("UPDATE credvault.engagements SET receipt = %s WHERE name = %s", (good, ENG))
        conn.execute(
            "UPDATE credvault.members SET sign_pub = %s WHERE name = 'alice'",
            (base64.b64decode(key),),
        )
    team.ok("alice", "receipt", ENG, "--output", str(tmp_path / "g.json"))
    assert team.ok("alice", "verify-receipt", str(tmp_path / "g.json"), "--public-key", key)


def test_the_server_checks_what_a_receipt_states(team: World) -> None:
    """A purging member killed before storing the receipt: the facts wait on the server,
    the next `credvault purge` signs them, and a receipt stating other facts is refused."""
    team.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    out = psql(team, "alice", f"SELECT credvault.destroy_engagement('{ENG}', 'request', false)")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["destroyed"]["credentials"] == 1
    assert state(team) == ("purged", None)
    lie = {**facts, "destroyed": {**facts["destroyed"], "credentials": 0}}
    out = psql(team, "alice", f"SELECT credvault.store_receipt('{ENG}', '{json.dumps(lie)}')")
    assert "does not state the purge's facts" in out.stderr
    early = {**facts, "destruction_complete_at": facts["purged_at"]}
    out = psql(team, "alice", f"SELECT credvault.store_receipt('{ENG}', '{json.dumps(early)}')")
    assert "does not state the purge's facts" in out.stderr
    r = team.run("alice", "receipt", ENG)
    assert r.code == 1
    assert "not signed yet" in one_line(r)
    assert team.run("alice", "purge").code == 1  # signs it; the rewrite is still pending
    rec = receipt_json(team)
    assert rec["destroyed"]["credentials"] == 1
    assert rec["purged_by"] == "alice"
