"""The backend contract, continued (issue 14): engagement settings and vault-wide commands
(``info``, ``config``, ``check``, ``witness accept``, ``receipt-keys``, ``passwd``), closed
engagements, what a team vault replaces by design, and membership (invite, join, removal).

Same worlds and rules as ``test_contract.py`` (its fixtures, imported here); a separate file
so that the whole suite's processes (tests/shards.py) can run the two halves side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import KDF_ARG
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _all_audit, _machine, _postgresql, one_line


# -- engagement settings, members, set, rotate; client ls (both backends) ------------------------
def test_engagement_settings_members_set_rotate_and_client_ls(world: World) -> None:
    """--require-reason and --grace-days at creation (an admin naming another lead), who may
    list members and change settings, a lead's rotation, client ls: same words, codes and
    audit entries on both backends."""
    world.setup(
        [
            ("alice", ("engagement", "new", "beta-2026", "--client", "acme", "--lead", "bob",
                       "--require-reason", "--grace-days", "3")),
            ("bob", ("grant", "beta-2026", "carol", "reader")),
            ("alice", ("engagement", "new", "gamma-2026", "--client", "gamma")),
        ]
    )  # fmt: skip
    world.ok("bob", "put", "beta-2026/db", input=SECRET + b"\n")
    denied = world.run("carol", "get", "beta-2026/db")
    assert denied.code == 4
    assert one_line(denied) == (
        "credvault: access denied: 'carol' may not get on engagement 'beta-2026' "
        "(this engagement requires --reason)"
    )
    assert world.ok("carol", "get", "beta-2026/db", "--reason", "T-1").out == SECRET + b"\n"
    # an admin without a role: the members, then every client (one set-up process)
    listed = world.setup(
        [("alice", ("engagement", "members", "beta-2026")), ("alice", ("client", "ls"))]
    )
    assert listed == (
        "MEMBER  ROLE    GRANTED_BY  EXPIRES  KEY\n"
        "bob     lead    alice                yes\n"
        "carol   reader  bob                  yes\n"
        "CLIENT  ENGAGEMENTS\n"
        "acme    acme-2026(active), beta-2026(active)\n"
        "gamma   gamma-2026(active)\n"
    )
    as_reader = json.loads(world.ok("carol", "engagement", "members", "beta-2026", "--json").out)
    assert [(g["member"], g["role"], g["granted_by"], g["has_key"]) for g in as_reader] == [
        ("bob", "lead", "alice", True),
        ("carol", "reader", "bob", True),
    ]
    outsider = world.run("carol", "engagement", "members", "acme-2026")
    assert (outsider.code, one_line(outsider)) == (
        4,
        "credvault: access denied: 'carol' may not list members on engagement 'acme-2026' "
        "(no grant)",
    )
    nope = world.run("alice", "engagement", "members", "nope-2026")
    assert (nope.code, one_line(nope)) == (3, "credvault: engagement 'nope-2026' not found")
    refused = world.run("carol", "engagement", "set", "beta-2026", "--no-require-reason")
    assert (refused.code, one_line(refused)) == (
        4,
        "credvault: access denied: 'carol' may not change settings on engagement 'beta-2026' "
        "(role reader)",
    )
    assert world.ok("alice", "engagement", "set", "beta-2026", "--no-require-reason").text == (
        "updated beta-2026\n"
    )
    assert world.ok("carol", "get", "beta-2026/db").out == SECRET + b"\n"
    lead = world.setup(
        [
            ("bob", ("engagement", "set", "beta-2026", "--require-reason")),
            ("bob", ("engagement", "rotate", "beta-2026")),
        ]
    )
    assert lead == "updated beta-2026\nbeta-2026: engagement key rotated to version 2\n"
    not_lead = world.run("carol", "engagement", "rotate", "beta-2026")
    assert (not_lead.code, one_line(not_lead)) == (
        4,
        "credvault: access denied: 'carol' may not rotate on engagement 'beta-2026' (role reader)",
    )
    assert world.ok("carol", "get", "beta-2026/db", "--reason", "T-2").out == SECRET + b"\n"
    assert json.loads(world.ok("carol", "client", "ls", "--json").out) == {
        "acme": ["beta-2026(active)"]
    }
    # audit: an admin reads the whole trail, filtered by time; a lead their engagements
    from credvault.model import parse_iso  # SQLCipher's time form, microseconds

    today = f"{datetime.now(UTC):%Y-%m-%d}"
    sets = world.ok("alice", "audit", "--since", today, "--action", "engagement-set", "--json")
    assert all(parse_iso(e["ts"]).date() == datetime.now(UTC).date() for e in json.loads(sets.out))
    assert [(e["member"], e["detail"]) for e in json.loads(sets.out)] == [
        ("alice", "require-reason=False"),
        ("bob", "require-reason=True"),
    ]
    led = json.loads(world.ok("bob", "audit", "--member", "carol", "--json").out)
    assert [(e["engagement"], e["action"], e["outcome"]) for e in led] == [
        ("beta-2026", "get", "denied"),
        ("beta-2026", "get", "ok"),
        ("beta-2026", "engagement-members", "ok"),
        ("beta-2026", "change settings", "denied"),
        ("beta-2026", "get", "ok"),
        ("beta-2026", "rotate", "denied"),
        ("beta-2026", "get", "ok"),
    ]
    last = world.ok("alice", "audit", "--limit", "1", "--since", "2000-01-01").text.splitlines()
    assert last[0].split() == ["#", "TIME", "(UTC)", "MEMBER", "ACTION", "ENGAGEMENT", "ITEM",
                               "OUTCOME", "DETAIL"]  # fmt: skip
    assert last[1].split()[3:] == ["bob", "audit-read", "ok", f"{len(led)}", "entries"]
    no_audit = world.run("carol", "audit", "--engagement", "beta-2026")
    assert (no_audit.code, one_line(no_audit)) == (
        4,
        "credvault: access denied: 'carol' may not read the audit trail on engagement "
        "'beta-2026' (role reader)",
    )
    acts = ("engagement-set", "change settings", "engagement-members", "list members", "get")
    acts += ("audit-read", "read the audit trail", "rotate", "engagement-new")
    # a rotation's own entries differ by design: a team lead's reads every envelope through
    # an audited request first ("read for rotation"), then the new key ("key version N …")
    rows = [r for r in _all_audit(world, acts) if r[1] != "rotate" or r[4] != "ok"]
    assert rows == [
        ("alice", "engagement-new", "acme-2026", None, "ok", "client acme, lead alice"),
        ("alice", "engagement-new", "beta-2026", None, "ok", "client acme, lead bob"),
        ("alice", "engagement-new", "gamma-2026", None, "ok", "client gamma, lead alice"),
        ("carol", "get", "beta-2026", "db", "denied", "this engagement requires --reason"),
        ("carol", "get", "beta-2026", "db", "ok", "reason: T-1"),
        ("alice", "engagement-members", "beta-2026", None, "ok", "2 members listed"),
        ("carol", "engagement-members", "beta-2026", None, "ok", "2 members listed"),
        ("carol", "list members", "acme-2026", None, "denied", "no grant"),
        ("carol", "change settings", "beta-2026", None, "denied", "role reader"),
        ("alice", "engagement-set", "beta-2026", None, "ok", "require-reason=False"),
        ("carol", "get", "beta-2026", "db", "ok", ""),
        ("bob", "engagement-set", "beta-2026", None, "ok", "require-reason=True"),
        ("carol", "rotate", "beta-2026", None, "denied", "role reader"),
        ("carol", "get", "beta-2026", "db", "ok", "reason: T-2"),
        ("alice", "audit-read", None, None, "ok", "2 entries"),
        ("bob", "audit-read", None, None, "ok", f"{len(led)} entries"),
        ("alice", "audit-read", None, None, "ok", "1 entries"),
        ("carol", "read the audit trail", "beta-2026", None, "denied", "role reader"),
    ]
    if world.backend == "postgresql":
        # The DBA (the new insider) flips --require-reason off in the column the server
        # enforces. The server now releases a read without a reason (on the record), but no
        # client honours the unsigned flip: the log signs True, so every member's command
        # opening its key is exit 6, and no secret is shown.
        _dba(
            world,
            "UPDATE credvault.engagements SET require_reason = false WHERE name = 'beta-2026'",
        )
        flipped = world.run("carol", "get", "beta-2026/db")
        assert (flipped.code, flipped.out) == (6, b"")
        assert one_line(flipped) == (
            "credvault: engagement 'beta-2026': the server's require-reason "
            "setting (False) is not the one its membership log signs (True)"
        )
        assert world.run("bob", "engagement", "rotate", "beta-2026").code == 6
        # and shortens the grace period around the log: close takes the signed 3 days
        _dba(world, "UPDATE credvault.engagements SET require_reason = true, grace_days = 0 "
                    "WHERE name = 'beta-2026'")  # fmt: skip
    closed = world.ok("alice", "engagement", "close", "beta-2026").text  # an admin, no role
    assert closed.startswith("closed beta-2026: closed ")
    assert closed.endswith("(grace 3 days)\n")


def _dba(world: World, sql: str) -> None:
    """Run ``sql`` as the DBA (the cluster's superuser) on the team vault's database."""
    import psycopg

    cluster = world.extra["cluster"]
    assert isinstance(cluster, Cluster)
    with psycopg.connect(
        cluster.conninfo(str(world.extra["db"])), password=cluster.password
    ) as conn:
        conn.execute(sql)


def _dba_sql(world: World, sql: str) -> str:
    """The real psql as the DBA (the cluster's superuser) on the team vault's database."""
    cluster: Cluster = world.extra["cluster"]  # type: ignore[assignment]
    return subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=cluster.env("postgres", cluster.password, str(world.extra["db"])),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def test_info_receipt_keys_and_passwd_compromised(world: World, tmp_path: Path) -> None:
    """``info`` has SQLCipher's keys on both; a line without meaning on a team vault says
    so in words. ``receipt-keys`` is the history of the key that signs your receipts (the
    vault's on SQLCipher, your own on a team vault): after ``passwd --compromised`` bob's
    old key signs the hand-over to his new one, checkable with openssl from the key he
    had. On a team vault, as the DBA: the old slot logs in no more, a lead's rotation seals
    nothing to bob (new or old keys), and a link edited or deleted is exit 6 for every
    client that saw it."""
    alice = json.loads(world.ok("alice", "info").out)
    settings = ("purge-grace-days", "audit-retention-days", "backup-retention-days", "trash-days")
    assert list(alice) == [
        "path", "vault_id", "format", "public_key", "created_at", "members",
        "key_generation", "settings",
    ]  # fmt: skip
    assert list(alice["settings"]) == list(settings)
    assert (alice["path"], alice["members"]) == (world.target, 3)
    assert (len(alice["vault_id"]), alice["created_at"][:2]) == (32, "20")
    unused = "not used by a team vault"
    if world.backend == "sqlcipher":
        assert (alice["format"], alice["key_generation"]) == (3, 1)
        assert alice["settings"] == dict(zip(settings, (7, 365, 30, 30), strict=True))
    else:  # the team schema's version; no database key; the server keeps the whole trail
        assert (alice["format"], alice["key_generation"]) == (2, unused)
        assert alice["settings"] == dict(zip(settings, (7, unused, 35, 30), strict=True))
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.setup(
        [
            ("alice", ("grant", "acme-2026", "bob", "engineer")),
            ("alice", ("grant", "acme-2026", "carol", "reader")),
        ]
    )
    team = world.backend == "postgresql"
    old_key = world.ok("bob", "info", "--public-key").text.strip()
    hist = json.loads(world.ok("bob", "receipt-keys", "--json").out)
    assert (hist["format"], hist["vault_id"]) == ("credvault-receipt-keys/1", alice["vault_id"])
    assert [(k["public_key"], k["link"]) for k in hist["keys"]] == [(old_key, None)]
    # the vault's receipt key on SQLCipher; on a team vault each member's own signing key
    assert (alice["public_key"] == old_key) is not team
    old_cfg = tmp_path / "bob-old-config"
    if team:  # bob's key slot as the attacker copied it
        shutil.copytree(world.envs["bob"]["XDG_CONFIG_HOME"], old_cfg)
    old_pw = world.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]
    new_pw = tmp_path / "bob.new.pass"
    new_pw.write_text("bob-new-passphrase-after-a-leak\n")
    new_pw.chmod(0o600)
    r = world.ok(
        "bob", "passwd", "--compromised", "--passphrase-file", str(new_pw), "--kdf", KDF_ARG
    )
    assert r.text.startswith("passphrase changed; new keys; ")
    assert (
        "rotate at their lead's next command (until then you cannot read them): acme-2026\n"
        in r.text
    )
    world.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"] = str(new_pw)
    new_key = world.ok("bob", "info", "--public-key").text.strip()
    links = world.ok("bob", "receipt-keys", "--links").text.splitlines()
    assert new_key != old_key
    assert len(links) == 1
    link = tmp_path / "link.json"
    link.write_text(links[0] + "\n")
    check = subprocess.run(
        ["sh", str(Path(__file__).parents[2] / "docs" / "verify-receipt-key.sh"), str(link), old_key],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert f"SUCCESSOR: {new_key}" in check.stdout
    # SQLCipher re-seals his copy to the new keys at once (its slot file certifies them);
    # a team vault drops it until an admin certifies them (docs/team.md)
    got = world.run("bob", "get", "acme-2026/db")
    assert got.code == (4 if team else 0)
    if not team:
        return
    # ... and says why; nor does bob sign with keys nobody certified (an invitation here)
    assert "replaced (passwd --compromised) and are not certified yet" in one_line(got)
    r = world.run("bob", "member", "invite", "dave")
    assert (r.code, "not certified yet" in one_line(r)) == (4, True)
    # the old slot with the old passphrase (what the attacker unlocked) logs in no more
    thief = {
        **world.envs["bob"],
        "XDG_CONFIG_HOME": str(old_cfg),
        "CREDVAULT_PASSPHRASE_FILE": old_pw,
    }
    world.envs["thief"] = thief
    assert world.run("thief", "ls", "acme-2026").code == 4
    assert _dba_sql(world, "SELECT action || ' ' || outcome || ' ' || detail FROM credvault.audit "
                    "WHERE action = 'passwd'") == (
        "passwd ok compromised: new keys; old key retired by a signed hand-over; "
        "rotated 0, 1 await a lead"
    )  # fmt: skip
    # alice's rotation (the revoke of carol) seals a copy to nobody but alice, and signs
    # bob, whose certified key is retired, out of the log as it does a removed member
    world.ok("alice", "revoke", "acme-2026", "carol")
    shown = json.loads(world.ok("alice", "engagement", "show", "acme-2026", "--json").out)
    assert [g["member"] for g in shown["members"]] == ["alice"]
    assert _dba_sql(world, "SELECT string_agg(member, ',' ORDER BY member) FROM credvault.grants "
                    "WHERE sealed IS NOT NULL AND revoked_at IS NULL") == "alice"  # fmt: skip
    # the DBA edits bob's link: bob's client, which made it, says so (exit 6); then deletes
    # it, to make bob's old key current again: alice's client saw it and will not go on
    _dba_sql(world, "UPDATE credvault.member_key_links SET link = "
             "replace(link, '\"valid_from\":\"2', '\"valid_from\":\"1')")  # fmt: skip
    r = world.run("bob", "receipt-keys")
    assert (r.code, "is gone or altered on the server" in one_line(r)) == (6, True)
    _dba_sql(world, "DELETE FROM credvault.member_key_links")
    r = world.run("alice", "grant", "acme-2026", "carol", "reader")
    assert (r.code, "key hand-over of member 'bob'" in one_line(r)) == (6, True)


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def test_a_closed_engagement_is_still_read_listed_and_exported(world: World) -> None:
    """Closed is not purged: during the grace period or a retention hold (kept for the
    client's future support) members read, list, search and export it, each read audited."""
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "engagement", "close", "acme-2026")
    assert world.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    assert "acme-2026/db" in world.ok("alice", "ls", "acme-2026").text
    assert world.ok("alice", "find", "db").text.splitlines()[1].split() == [
        "acme-2026",
        "credential",
        "db",
        "name",
    ]
    exported = json.loads(world.ok("alice", "client", "export", "acme").out)
    [eng] = exported["engagements"]
    assert (eng["state"], [c["name"] for c in eng["credentials"]]) == ("closed", ["db"])
    reads = json.loads(
        world.ok("alice", "audit", "--json", "--engagement", "acme-2026", "--action", "get").out
    )
    # a team export reads each secret like `get` (on the record before it leaves the server)
    expected = 2 if world.backend == "postgresql" else 1
    assert [(e["item"], e["outcome"]) for e in reads] == [("db", "ok")] * expected


def test_config_set_moves_purge_dates_and_is_for_admins(world: World) -> None:
    world.ok("alice", "engagement", "close", "acme-2026")  # the vault's grace period
    ledger = (
        Path(world.target) / "purge-ledger.jsonl"
        if world.backend == "sqlcipher"
        else Path(world.envs["alice"]["XDG_STATE_HOME"], "credvault", "team", str(world.extra["db"]),
                  "purge-ledger.jsonl")
    )  # fmt: skip
    before = ledger.read_bytes()  # as another admin's machine keeps it: the close's record
    assert world.ok("alice", "config", "set", "purge-grace-days", "3").text == (
        "purge-grace-days = 3\n"
    )
    # the ledger's close record moves with the date (a restore from before the change gets
    # the new date back), and the next purge keeps it
    assert world.ok("alice", "purge").text == "nothing due\n"
    shown = json.loads(world.ok("alice", "engagement", "show", "acme-2026", "--json").out)
    closed = datetime.fromisoformat(shown["closed_at"])
    due = datetime.fromisoformat(shown["purge_due"])
    assert due - closed == timedelta(days=3)
    records = [json.loads(x) for x in ledger.read_text().splitlines() if "lifecycle-record" in x]
    newest = max((r for r in records if r["engagement"] == "acme-2026"), key=lambda r: r["as_of"])
    assert newest["purge_due"] == shown["purge_due"]
    if world.backend == "postgresql":
        # only the record signed at the close (another admin's ledger): the server knows the
        # change came after it, and the purge does not put the old date back
        ledger.write_bytes(before)
        assert world.ok("alice", "purge").text == "nothing due\n"
    settings = json.loads(world.ok("alice", "config", "get", "--json").out)
    assert settings["purge-grace-days"] == 3
    for name in ("trash-days", "purge-grace-days"):
        denied = world.run("bob", "config", "set", name, "5")
        assert denied.code == 4
        assert one_line(denied) == (
            "credvault: access denied: 'bob' may not change settings (admin only)"
        )
    if world.backend == "postgresql":
        unused = world.run("alice", "config", "set", "audit-retention-days", "9")
        assert unused.code == 2
        assert one_line(unused) == "credvault: audit-retention-days is not used by a team vault"


def test_check_by_an_admin_says_sound_and_a_member_is_denied(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    r = world.ok("alice", "check")
    lines = r.text.splitlines()
    assert lines[-1] == f"{world.target}: sound"
    assert [x for x in lines[:-1] if not x.startswith("ok: ")] == []
    assert any(x.startswith("ok: audit chain: ") for x in lines)
    if world.backend == "postgresql":
        assert "ok: members: 3 certified, each chain to the founder verified" in lines
        assert "ok: membership logs: 1 verified (2 links)" in lines
    denied = world.run("bob", "check")
    assert denied.code == 4
    assert "admins and service identities only" in one_line(denied)


def test_check_names_every_problem_the_dba_made(team: World) -> None:
    """As the DBA: one edited audit row and one engagement's whole membership log deleted
    (the server then lists no log for it, so a replay alone would not miss it): the check
    names both, exit 6, and the audit records the failed check."""
    team.ok("alice", "check")  # alice's witness now holds acme-2026's log
    r = team.run("alice", "check", "team.dump")
    assert r.code == 2
    assert "a team vault is checked where it is" in one_line(r)
    cluster = team.extra["cluster"]
    assert isinstance(cluster, Cluster)
    db = str(team.extra["db"])
    cluster.superuser_sql(
        "UPDATE credvault.audit SET detail = 'edited' WHERE seq = (SELECT min(seq) + 1 FROM "
        "credvault.audit);\n"
        "DELETE FROM credvault.engagement_log WHERE engagement_id = (SELECT id FROM "
        "credvault.engagements WHERE name = 'acme-2026')",
        db,
    )
    r = team.run("alice", "check")
    assert r.code == 6
    problems = [x.removeprefix("credvault: ") for x in r.err.strip().splitlines()]
    assert len(problems) == 2, r.err
    assert problems[0].startswith(f"{team.target}: membership log of acme-2026: this member ")
    assert "no longer lists it, and it was not purged" in problems[0]
    assert problems[1].startswith(f"{team.target}: audit chain: ")
    import psycopg

    with psycopg.connect(cluster.conninfo(db), password=cluster.password) as dba:
        rows = dba.execute(
            "SELECT member, outcome, detail FROM credvault.audit WHERE action = 'check' "
            "ORDER BY seq"
        ).fetchall()
    assert rows == [
        ("alice", "ok", "sound"),
        ("alice", "error", problems[0].removeprefix(f"{team.target}: ")[:120]),
    ]


def test_witness_accept_follows_a_restored_database_for_one_member(team: World) -> None:
    """The database goes back to before bob's grant (the DBA deletes the grant's link, as a
    restore of an older dump would): alice's client refuses (exit 6, naming `witness
    accept`); she accepts for herself, on the record; then her client verifies the log from
    link 0 again and reads as before."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "engineer")
    team.ok("alice", "get", "acme-2026/db")  # her witness: the log up to the grant's link
    team.ok("alice", "member", "rm", "carol")  # and the revocation list at version 1
    cluster = team.extra["cluster"]
    assert isinstance(cluster, Cluster)
    db = str(team.extra["db"])
    cluster.superuser_sql(
        "DELETE FROM credvault.engagement_log WHERE seq = (SELECT max(seq) FROM "
        "credvault.engagement_log);\n"
        "DELETE FROM credvault.revocation_list",
        db,
    )
    r = team.run("alice", "get", "acme-2026/db")
    assert r.code == 6
    assert r.out == b""
    assert "run 'credvault witness accept'" in one_line(r)
    r = team.run("alice", "witness", "accept")  # no terminal, no --yes: nothing changes
    assert r.code == 2
    assert team.run("alice", "get", "acme-2026/db").code == 6
    r = team.run("alice", "witness", "accept", "--yes")
    assert r.code == 0, r.err
    assert r.text.splitlines() == [
        "not in this vault: link 2 is missing of the membership log of engagement acme-2026: "
        "the vault is older than this client last saw (restored from a backup? committed "
        "writes lost?)",
        "not in this vault: version 1 is missing of the revocation list of member keys: the "
        "vault is older than this client last saw (restored from a backup? committed writes "
        "lost?)",
        "accepted: your witness now follows this vault (audited as witness-accept)",
    ]
    assert "until an admin runs `credvault member rm` for each once more" in one_line(r)
    assert team.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    team.ok("alice", "engagement", "rotate", "acme-2026")  # seals: reads the list again
    again = team.ok("alice", "witness", "accept", "--yes").text
    assert again == "nothing to accept: this vault is not behind or forked from what you saw\n"
    import psycopg

    with psycopg.connect(cluster.conninfo(db), password=cluster.password) as dba:
        rows = dba.execute(
            "SELECT member, outcome, detail FROM credvault.audit WHERE action = 'witness-accept'"
        ).fetchall()
    assert rows == [
        (
            "alice",
            "ok",
            "accepted as it is (log:acme-2026 behind: seen 2, vault at 1; revocations behind: "
            "seen 1, vault at none)",
        )
    ]


def test_commands_a_team_vault_replaces_say_what_to_do_instead(team: World) -> None:
    some_file = team.envs["alice"]["CREDVAULT_PASSPHRASE_FILE"]  # read before the vault
    for args, instead in (
        (("member", "add", "dave"), "`credvault member invite NAME`"),
        (("member", "reset", "bob"), "`credvault member rm NAME`, then `member invite NAME`"),
        (
            (
                "recover",
                "acme-2026",
                "--recovery-file",
                some_file,
                "--grant-to",
                "bob",
                "--role",
                "lead",
            ),
            "a team vault has no recovery key",
        ),
        (("backup",), "pg_dump or pgBackRest"),
    ):
        r = team.run("alice", *args)
        assert r.code == 1, (args, r.err)
        line = one_line(r)
        assert line.startswith(f"credvault: `credvault {args[0]}"), line
        assert "is not used on a team vault: " in line, line
        assert instead in line, line


def test_the_key_slot_is_private_and_strictly_read(team: World) -> None:
    slot = Path(team.envs["bob"]["XDG_CONFIG_HOME"]) / "credvault" / "team"
    path = slot / str(team.extra["db"]) / "bob.slot"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"version": 2', b'"version": true'))
    r = team.run("bob", "ls")
    assert r.code == 6
    assert "team key slot is corrupt" in one_line(r)
    path.write_bytes(original)
    assert team.run("bob", "ls").code == 0


def test_join_never_overwrites_and_an_invitation_works_once(team: World, tmp_path: Path) -> None:
    code = tmp_path / "dave.invitation"
    team.ok("alice", "member", "invite", "dave", "--invitation-file", str(code))
    assert code.stat().st_mode & 0o777 == 0o600
    team.envs["dave"] = _machine(tmp_path, "dave", team.target)
    pfile = team.envs["dave"]["CREDVAULT_PASSPHRASE_FILE"]
    join = ("join", "--invitation-file", str(code), "--passphrase-file", pfile, "--kdf", KDF_ARG)
    team.ok("dave", *join)
    again = team.run("dave", *join)
    assert again.code == 1
    assert "not overwritten" in one_line(again)
    # the invitation code no longer logs in: join replaced its password
    import psycopg

    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            cluster.conninfo(str(team.extra["db"]), f"{team.extra['db']}_dave", tcp=True),
            password=code.read_text().strip(),
        )


def test_join_needs_the_code_from_a_file_or_a_terminal(team: World, tmp_path: Path) -> None:
    team.envs["erin"] = _machine(tmp_path, "erin", team.target)
    r = team.run(
        "erin", "join", "--passphrase-file", team.envs["erin"]["CREDVAULT_PASSPHRASE_FILE"]
    )
    assert r.code == 2
    assert "--invitation-file" in one_line(r)


def test_a_removed_member_is_out_at_once(team: World) -> None:
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "engineer")
    team.ok("bob", "get", "acme-2026/db")
    r = team.ok("alice", "member", "rm", "bob")
    assert r.text.startswith("removed member bob; login disabled")
    assert r.text.endswith("; revocation signed in 1 engagement log(s)\n")
    denied = team.run("bob", "get", "acme-2026/db")
    assert denied.code == 4
    assert "login refused" in one_line(denied)


def test_the_server_holds_no_private_key_and_no_secret(team: World) -> None:
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--schema=credvault"],
        env=cluster.env("postgres", cluster.password, str(team.extra["db"])),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert b"acme-2026" in dump
    assert SECRET not in dump
    import json

    from credvault.keyslots import MemberKeys  # noqa: F401 (the blob's plaintext format)

    slot = json.loads(
        (
            Path(team.envs["bob"]["XDG_CONFIG_HOME"])
            / "credvault" / "team" / str(team.extra["db"]) / "bob.slot"
        ).read_text()
    )  # fmt: skip
    assert slot["private"].encode() not in dump  # not even the sealed blob


def _kept_key(team: World, who: str) -> tuple[bytes, bytes, int, bytes]:
    """(engagement uid, key, key version, vault id) of acme-2026 as ``who`` opens it on
    their machine now: the key they keep after they lose access."""
    from credvault import Secret, Team

    pw = Path(team.envs[who]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    old = dict(os.environ)
    os.environ["XDG_CONFIG_HOME"] = team.envs[who]["XDG_CONFIG_HOME"]
    try:
        with Team.open(team.target, who, Secret(pw)) as t:
            eng_uid, key, version = t.engagement_key("acme-2026", "read")
            return eng_uid, key, version, t.vault_id
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_revoke_rotates_the_key_so_a_kept_copy_opens_nothing_new(team: World) -> None:
    """bob keeps the engagement key he had; after the revocation every envelope on the
    server is under a new key he never received (read as the DBA, who sees every row)."""
    from credvault.crypto import envelope
    from credvault.errors import IntegrityError

    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "engineer")
    team.ok("alice", "grant", "acme-2026", "carol", "reader")
    eng_uid, kept_key, version, vault_id = _kept_key(team, "bob")
    assert version == 1
    team.ok("alice", "revoke", "acme-2026", "bob")
    import psycopg

    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]
    with psycopg.connect(
        cluster.conninfo(str(team.extra["db"])), password=cluster.password
    ) as conn:
        uid, kv, env = conn.execute(
            "SELECT uid, key_version, secret_env FROM credvault.credentials WHERE name = 'db'"
        ).fetchone()
        (ev,) = conn.execute(
            "SELECT key_version FROM credvault.engagements WHERE name = 'acme-2026'"
        ).fetchone()
    assert (kv, ev) == (2, 2)
    place = envelope.Place(vault_id, eng_uid, "credentials", bytes(uid), "secret")
    with pytest.raises(IntegrityError):
        envelope.open_(place, bytes(env), kept_key)
    # the members who stayed got the new key: carol (reader) still reads
    assert team.ok("carol", "get", "acme-2026/db").out == SECRET + b"\n"


def test_after_member_rm_a_leads_put_rotates_first_and_another_writer_is_warned(
    team: World,
) -> None:
    """bob keeps the engagement key he held; after ``member rm bob`` the DBA hands him
    the ciphertext of every new secret. carol (an engineer: she cannot rotate) is told
    her write went under that key, and by whom it must be rotated; alice's put (she
    leads) rotates first, so bob's kept key opens nothing she stores."""
    import psycopg

    from credvault.crypto import envelope
    from credvault.errors import IntegrityError
    from credvault.items import credential_binding

    team.setup(
        [
            ("alice", ("grant", "acme-2026", "bob", "engineer")),
            ("alice", ("grant", "acme-2026", "carol", "engineer")),
        ]
    )
    eng_uid, kept_key, version, vault_id = _kept_key(team, "bob")
    assert version == 1
    team.ok("alice", "member", "rm", "bob")
    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]

    def dba(name: str) -> tuple[bytes, int, bytes, int]:
        """What the DBA hands bob: the row's uid, key version and secret envelope."""
        with psycopg.connect(
            cluster.conninfo(str(team.extra["db"])), password=cluster.password
        ) as conn:
            row = conn.execute(
                "SELECT c.uid, c.key_version, c.secret_env, e.key_version FROM "
                "credvault.credentials c JOIN credvault.engagements e ON e.id = c.engagement_id "
                "WHERE c.name = %s",
                (name,),
            ).fetchone()
        assert row is not None
        return bytes(row[0]), int(row[1]), bytes(row[2]), int(row[3])

    def bob_opens(name: str) -> bytes:
        uid, _, env, _ = dba(name)
        place = envelope.Place(
            vault_id, eng_uid, "credentials", uid, "secret",
            credential_binding(name, "password", None),
        )  # fmt: skip
        return envelope.open_(place, env, kept_key)

    r = team.run("carol", "put", "acme-2026/web", input=b"carol-value\n")
    assert (r.code, r.text) == (0, "stored acme-2026/web\n")
    assert r.err == (
        "credvault: warning: acme-2026's key is due for rotation (a member lost access): this "
        "write "
        "is sealed under the current key until a lead (alice) runs `credvault engagement "
        "rotate acme-2026`\n"
    )
    assert dba("web")[1] == 1
    assert bob_opens("web") == b"carol-value"  # what the warning is about: he can
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")  # no warning: rotated
    _, kv, _, ev = dba("db")
    assert (kv, ev) == (2, 2)
    with pytest.raises(IntegrityError):
        bob_opens("db")
    with pytest.raises(IntegrityError):  # carol's, re-sealed by the rotation, too
        bob_opens("web")
    assert team.ok("carol", "get", "acme-2026/db").out == SECRET + b"\n"
