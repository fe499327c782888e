"""The backend contract for an engagement's lifecycle (issue 14): close, retention holds,
shred, purge and receipts give the same output, exit codes and audit actions on SQLCipher
and on PostgreSQL, through the real ``credvault`` command. Each test runs once per backend
(the ``world`` fixture of test_contract.py).

The one difference by design is asserted as such: on PostgreSQL a purge deletes from the
live rows at once, but the table files keep the old rows until the database owner rewrites
them (``purge --rewrite``), so until then the command says "purge NOT complete" (exit 1),
as a SQLCipher purge does while another process holds an old snapshot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, one_line

VERIFY_SH = Path(__file__).resolve().parents[2] / "docs" / "verify-receipt.sh"
ENG = "acme-2026"


def finish(world: World, r_code: int, err: str) -> None:
    """A purge's exit: 0 on SQLCipher; on PostgreSQL 1 with one line until the owner's
    rewrite (then done here, so the test goes on with a complete purge)."""
    if world.backend == "sqlcipher":
        assert r_code == 0, err
        assert err == ""
        return
    assert r_code == 1
    assert err.startswith("credvault: purge NOT complete: deleted from the live rows"), err
    assert len(err.strip().splitlines()) == 1
    rw = world.ok("alice", "purge", "--rewrite", "--vault", owner_target(world))
    assert rw.text == "rewrote the table files: 1 purged engagement(s) are out of them\n"
    world.ok("alice", "purge")  # signs the receipt complete


def owner_target(world: World) -> str:
    cluster: Cluster = world.extra["cluster"]  # type: ignore[assignment]
    return f"postgresql://{world.extra['owner']}@127.0.0.1:{cluster.port}/{world.extra['db']}"


def audit(world: World) -> list[dict[str, object]]:
    r = world.ok("alice", "audit", "--engagement", ENG, "--json")
    rows: list[dict[str, object]] = json.loads(r.out)
    return rows


def test_close_schedules_the_purge_after_the_grace_period(world: World) -> None:
    r = world.ok("alice", "engagement", "close", ENG)
    assert re.fullmatch(
        rf"closed {ENG}: closed \d{{4}}-\d\d-\d\dT\d\d:\d\d; purge due "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d \(grace 7 days\)\n",
        r.text,
    ), r.text
    again = world.run("alice", "engagement", "close", ENG)
    assert again.code == 1
    assert one_line(again) == f"credvault: engagement '{ENG}' is closed: cannot close"
    closes = [(e["outcome"], e["detail"]) for e in audit(world) if e["action"] == "close"]
    assert closes[0][0] == "ok"
    assert str(closes[0][1]).startswith("purge due ")
    assert closes[1] == ("error", "engagement is closed")


def test_close_with_its_own_grace_period(world: World) -> None:
    bad = world.run("alice", "engagement", "close", "acme-2026", "--grace-days", "-1")
    assert bad.code == 2
    one_line(bad)
    r = world.ok("alice", "engagement", "close", ENG, "--grace-days", "30")
    assert r.text.endswith("(grace 30 days)\n")


def test_only_its_lead_or_an_admin_changes_the_lifecycle(world: World) -> None:
    # bob reads db and only views web; carol exports the client (so read everything)
    world.setup(
        [
            ("alice", ("grant", ENG, "bob", "engineer")),
            ("alice", ("grant", ENG, "carol", "reader")),
            ("alice", ("put", f"{ENG}/db"), SECRET + b"\n"),
            ("alice", ("put", f"{ENG}/api"), b"tok\n"),
            ("alice", ("system", "add", f"{ENG}/web", "--address", "10.0.0.5")),
            ("bob", ("get", f"{ENG}/db")),
            ("bob", ("system", "show", f"{ENG}/web")),
            ("carol", ("client", "export", "acme")),
        ]
    )
    for args in (
        ("engagement", "close", ENG),
        ("engagement", "shred", ENG, "--yes"),
    ):
        r = world.run("bob", *args)
        assert r.code == 4, (args, r.err)
        assert "access denied: 'bob' may not" in one_line(r)
    world.ok("alice", "engagement", "close", ENG)
    for args in (
        ("engagement", "retain", ENG, "--until", "2099-01-01", "--reason", "support"),
        ("engagement", "release", ENG),
    ):
        r = world.run("bob", *args)
        assert r.code == 4, (args, r.err)
        one_line(r)
    # its lead still revokes on a closed engagement, and the key rotates, on both backends
    r = world.ok("alice", "revoke", ENG, "bob")
    assert r.text == (
        f"revoked bob on {ENG}; engagement key rotated\n"
        "bob read these; change them on the client's systems:\n"
        f"  {ENG}/db\n"
        "bob only viewed these (no secret read; nothing to change):\n"
        f"  {ENG}/web\n"
    )
    r = world.ok("alice", "revoke", ENG, "carol")
    assert r.text == (
        f"revoked carol on {ENG}; engagement key rotated\n"
        "carol read these; change them on the client's systems:\n"
        f"  {ENG}/api\n  {ENG}/db\n  {ENG}/web\n"
    )
    rot = world.ok("alice", "engagement", "rotate", ENG)  # a rotation of its own too
    assert rot.text == f"{ENG}: engagement key rotated to version 4\n"
    trail = audit(world)
    denied = [(e["member"], e["action"]) for e in trail if e["outcome"] == "denied"]
    assert ("bob", "close") in denied
    assert ("bob", "shred") in denied
    assert ("bob", "set a retention hold") in denied
    assert ("bob", "release the hold") in denied
    ok = [(e["action"], e["item"], str(e["detail"])) for e in trail if e["outcome"] == "ok"]
    # the same details, whole, on both backends (but for the new keys' fingerprints)
    assert [(i, d) for a, i, d in ok if a == "revoke"] == [
        ("bob", "1 credentials to change; 1 viewed"),
        ("carol", "3 credentials to change"),
    ]
    rotations = [d for a, _, d in ok if a == "rotate" and d.startswith("key version")][-3:]
    fp = r"; fingerprint [0-9a-f:]{16,}$"
    assert [re.sub(fp, "; fingerprint FP", d) for d in rotations] == [
        "key version 2 (revoked bob); fingerprint FP",
        "key version 3 (revoked carol); fingerprint FP",
        "key version 4 (on request); fingerprint FP",
    ]  # (a team's first key has an entry of its own before these)
    assert len({d.rsplit(" ", 1)[1] for d in rotations}) == 3  # three keys
    # nothing else changed: alice still reads the engagement's state as closed, not purged
    assert world.run("alice", "engagement", "close", ENG).code == 1


def test_a_hold_postpones_the_purge_and_release_lifts_it(world: World) -> None:
    early = world.run("alice", "engagement", "retain", ENG, "--until", "2099-01-01",
                      "--reason", "support")  # fmt: skip
    assert early.code == 1
    assert "only a closed engagement can be held" in one_line(early)
    world.ok("alice", "engagement", "close", ENG, "--grace-days", "1")
    past = world.run("alice", "engagement", "retain", ENG, "--until", "2001-01-01",
                     "--reason", "support")  # fmt: skip
    assert past.code == 2
    assert "in the past" in one_line(past)
    held = world.ok("alice", "engagement", "retain", ENG, "--until", "2099-01-01",
                    "--reason", "support contract")  # fmt: skip
    assert held.text == (
        f"{ENG}: held until 2099-01-01T23:59 (support contract, by alice); "
        "purged when the hold ends\n"
    )
    assert world.ok("alice", "purge", "--dry-run").text == "nothing due\n"
    assert world.ok("alice", "purge").text == "nothing due\n"
    rel = world.ok("alice", "engagement", "release", ENG)
    assert re.fullmatch(rf"{ENG}: closed .*; purge due .* \(grace 1 days\)\n", rel.text), rel.text
    again = world.run("alice", "engagement", "release", ENG)
    assert again.code == 1
    assert one_line(again) == f"credvault: engagement '{ENG}' has no retention hold"
    acts = [(e["action"], e["outcome"]) for e in audit(world)]
    assert ("retain", "ok") in acts
    assert ("release", "ok") in acts
    assert ("release", "error") in acts
    details = [e["detail"] for e in audit(world) if e["action"] == "retain"]
    assert "held until 2099-01-01T23:59: support contract" in details


def test_purge_destroys_what_is_due_with_a_signed_receipt(world: World, tmp_path: Path) -> None:
    world.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    world.ok("alice", "engagement", "close", ENG, "--grace-days", "0")
    dry = world.ok("alice", "purge", "--dry-run")
    assert dry.text == f"due: {ENG} (acme), grace\n"
    denied = world.run("bob", "purge")
    assert denied.code == 4
    assert "may not purge" in one_line(denied)
    r = world.run("alice", "purge")
    assert r.text == f"purged: {ENG} (acme), grace\n"
    finish(world, r.code, r.err)
    gone = world.run("alice", "get", f"{ENG}/db")
    assert gone.code in (3, 4)  # SQLCipher: purged (not found); team: no live role
    assert SECRET not in gone.out
    rec = json.loads(world.ok("alice", "receipt", ENG, "--json").out)
    assert rec["engagement"] == ENG
    assert rec["reason"] == "grace period expired"
    assert rec["purged_by"] == "alice"
    assert rec["destroyed"]["credentials"] == 1
    assert rec["destruction_complete_at"] is not None
    out = tmp_path / "receipt.json"
    world.ok("alice", "receipt", ENG, "--output", str(out))
    key = world.ok("alice", "info", "--public-key").text.strip()
    v = world.ok("alice", "verify-receipt", str(out), "--public-key", key)
    assert v.text.startswith(f"valid receipt: {ENG} purged ")
    if shutil.which("openssl"):
        sh = subprocess.run(["sh", str(VERIFY_SH), str(out), key], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
        assert sh.returncode == 0, sh.stderr
        assert "VERIFIED" in sh.stdout
        assert "NOT YET" not in sh.stdout
    if world.backend == "postgresql":
        assert "backups_expire_at" in rec
        show = world.ok("alice", "receipt", ENG).text
        assert "backups until:" in show
    else:  # a SQLCipher vault's ledger is read by restore (team: test_restore_pg.py)
        led = world.run("alice", "purge", "--ledger", str(tmp_path / "ledger.jsonl"))
        assert led.code == 2
        assert one_line(led) == (
            "credvault: --ledger is for a PostgreSQL team vault restored from a dump; a "
            "SQLCipher vault's `credvault restore FILE --ledger LEDGER` reads it"
        )
    acts = [e["action"] for e in audit(world)]
    assert "purge" in acts
    assert "receipt" in acts


def test_shred_destroys_now_and_the_receipt_verifies(world: World, tmp_path: Path) -> None:
    world.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    r = world.run("alice", "engagement", "shred", ENG, "--yes")
    assert re.fullmatch(
        rf"shredded {ENG}; receipt at audit position \d+ \(`credvault receipt {ENG}`\)\n",
        r.out.decode(),
    ), r.out
    finish(world, r.code, r.err)
    again = world.run("alice", "engagement", "shred", ENG, "--yes")
    assert again.code in (1, 3)
    one_line(again)
    out = tmp_path / "r.json"
    world.ok("alice", "receipt", ENG, "--output", str(out))
    data = json.loads(out.read_text())
    assert data["reason"] == "client request"
    key = world.ok("alice", "info", "--public-key").text.strip()
    assert world.ok("alice", "verify-receipt", str(out), "--public-key", key).code == 0
    forged = tmp_path / "forged.json"
    forged.write_text(out.read_text().replace('"client request"', '"grace period expired"'))
    bad = world.run("alice", "verify-receipt", str(forged), "--public-key", key)
    assert bad.code == 6
    one_line(bad)


@pytest.mark.parametrize("cmd", ["purge", "receipt"])
def test_no_receipt_before_the_purge(world: World, cmd: str) -> None:
    if cmd == "receipt":
        r = world.run("alice", "receipt", ENG)
        assert r.code == 1
        assert "has not been purged" in one_line(r)
    else:
        assert world.ok("alice", "purge").text == "nothing due\n"


def test_client_shred_destroys_every_engagement_or_none(world: World, tmp_path: Path) -> None:
    """All or nothing: a lead of one of the client's engagements destroys nothing; an admin
    shreds them all, each with a receipt openssl verifies; then nothing is left."""
    world.setup(
        [
            ("alice", ("engagement", "new", "beta-2026", "--client", "acme", "--lead", "bob")),
            ("alice", ("grant", ENG, "bob", "reader")),
            ("alice", ("engagement", "new", "other-2026", "--client", "other")),
        ]
    )
    world.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    refused = world.run("bob", "client", "shred", "acme", "--yes")
    assert (refused.code, one_line(refused)) == (
        4,
        f"credvault: access denied: 'bob' may not shred on engagement '{ENG}' (role reader)",
    )
    if world.backend == "postgresql":  # row-level security: a name carol may not see
        hidden = world.run("carol", "client", "shred", "other", "--yes")
        assert (hidden.code, one_line(hidden)) == (
            4,
            (
                "credvault: access denied: 'carol' may not shred (an engagement of 'other' you "
                "hold no role in)"
            ),
        )
    r = world.run("alice", "client", "shred", "acme", "--yes")
    assert r.text == f"shredded {ENG}\nshredded beta-2026\n"
    if world.backend == "postgresql":  # the owner's rewrite finishes it (test_contract_lifecycle)
        assert r.code == 1
        assert one_line(r).startswith("credvault: purge NOT complete: deleted from the live")
        rw = world.ok("alice", "purge", "--rewrite", "--vault", owner_target(world))
        assert rw.text == "rewrote the table files: 2 purged engagement(s) are out of them\n"
        world.ok("alice", "purge")
    else:
        assert (r.code, r.err) == (0, "")
    again = world.run("alice", "client", "shred", "acme", "--yes")
    assert (again.code, one_line(again)) == (
        3,
        "credvault: client 'acme' has nothing left to shred",
    )
    assert world.run("bob", "get", f"{ENG}/db").out == b""
    out = tmp_path / "beta.json"
    world.ok("alice", "receipt", "beta-2026", "--output", str(out))
    rec = json.loads(out.read_text())
    assert (rec["engagement"], rec["reason"], rec["purged_by"]) == (
        "beta-2026",
        "client request",
        "alice",
    )
    key = world.ok("alice", "info", "--public-key").text.strip()
    sh = subprocess.run(["sh", str(VERIFY_SH), str(out), key], capture_output=True,
                        text=True, timeout=60, check=False)  # fmt: skip
    assert sh.returncode == 0, sh.stderr
    assert "VERIFIED" in sh.stdout
    trail = [
        (e["member"], e["action"], e["engagement"], e["outcome"], e["detail"])
        for e in json.loads(world.ok("alice", "audit", "--json").out)
        if e["action"] in ("shred", "purge")
    ]
    assert trail[0] == ("bob", "shred", ENG, "denied", "role reader")
    if world.backend == "postgresql":  # the hidden one's refusal names it on the record
        assert trail[1] == ("carol", "shred", "other-2026", "denied", "no grant")
    assert [(m, a, e, o, d.split(";")[0]) for m, a, e, o, d in trail[-2:]] == [
        ("alice", "purge", ENG, "ok", "client request"),
        ("alice", "purge", "beta-2026", "ok", "client request"),
    ]
