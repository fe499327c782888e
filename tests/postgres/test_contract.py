"""The backend contract (issue 14): the same CLI behaviour on SQLCipher and on PostgreSQL.

Every test here runs twice, once per backend, through the real ``credvault`` command as a
subprocess. Each person is their own "machine": their own HOME (and XDG config, where a
team member's key slot lives), their own passphrase file, their own process. The team
vault is set up only through the CLI too: the owner's ``init`` (libpq reads the owner's
password from ``~/.pgpass``), ``member invite`` and ``join`` (the set-up commands run the
CLI's own ``main`` one after the other in one process, each in its person's environment;
what a test checks runs as its own process).

What differs by design is asserted as such, never skipped: on PostgreSQL, an engagement a
member holds no role in is hidden by row-level security, so naming one that does not
exist is "access denied" (4) rather than "not found" (3).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import KDF_ARG, CliResult
from pg_cluster import Cluster, running_cluster  # noqa: F401 (the session cluster fixture)

# The set-up runner: each step in its person's environment, through the CLI's own main.
_SETUP = """
import json, os, sys
from credvault.cli import main
for env, args in json.loads(sys.stdin.buffer.read()):
    os.environ.clear()
    os.environ.update(env)
    code = main(args)
    sys.stdout.flush()
    if code:
        sys.exit(f"set-up step {args[:2]} exited {code}")
"""
SECRET = b"CANARY-contract-4e1b-s3cr3t-\xe2\x98\x83"
MEMBERS = ("alice", "bob", "carol")


@dataclass
class World:
    """A vault of either backend with alice (admin, lead of acme-2026), bob and carol."""

    backend: str
    root: Path
    target: str
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def run(self, who: str, *args: str, input: bytes = b"") -> CliResult:
        p = subprocess.run(
            [sys.executable, "-m", "credvault", *args],
            input=input,
            capture_output=True,
            env=self.envs[who],
            timeout=120,
            start_new_session=True,  # no terminal: never prompts
            check=False,
        )
        return CliResult(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))

    def setup(self, steps: Sequence[tuple[str, tuple[str, ...]]]) -> str:
        """Run set-up commands through the real CLI (``credvault.cli.main``), each as its
        person on their machine (their environment), in one process: a world costs one
        interpreter start instead of one per command. Returns what they printed."""
        p = subprocess.run(
            [sys.executable, "-c", _SETUP],
            input=json.dumps([[self.envs[who], list(args)] for who, args in steps]).encode(),
            capture_output=True,
            timeout=240,
            start_new_session=True,
            check=False,
        )
        assert p.returncode == 0, p.stderr.decode("utf-8", errors="replace")
        assert p.stderr == b"", p.stderr
        return p.stdout.decode()

    def ok(self, who: str, *args: str, input: bytes = b"") -> CliResult:
        r = self.run(who, *args, input=input)
        assert r.code == 0, (args, r.err)
        assert r.err == "", r.err
        return r


def _machine(root: Path, who: str, target: str) -> dict[str, str]:
    """One person's machine: HOME, config, data and cache dirs, passphrase file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDVAULT_", "PG"))}
    home = root / f"home-{who}"
    home.mkdir(mode=0o700)
    pw = root / f"{who}.pass"
    pw.write_text(f"{who}-passphrase-{secrets.token_hex(4)}\n")
    pw.chmod(0o600)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
        CREDVAULT_VAULT=target,
        CREDVAULT_MEMBER=who,
        CREDVAULT_PASSPHRASE_FILE=str(pw),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    (home / "run").mkdir(mode=0o700)
    return env


def _sqlcipher(root: Path) -> World:
    root.mkdir(parents=True, exist_ok=True)
    w = World("sqlcipher", root, str(root / "vault"))
    for who in MEMBERS:
        w.envs[who] = _machine(root, who, w.target)
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("alice", ("init", "--kdf", KDF_ARG, "--recovery-file", str(root / "recovery")))
    ]
    for who in ("bob", "carol"):
        pfile = w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]
        steps.append(
            ("alice", ("member", "add", who, "--passphrase-file", pfile, "--kdf", KDF_ARG))
        )
    steps.append(("alice", ("engagement", "new", "acme-2026", "--client", "acme")))
    w.setup(steps)
    return w


_dbs = iter(range(1, 1_000_000))


def _postgresql(root: Path, cluster: Cluster) -> World:
    from credvault.postgres import bootstrap_sql, scram_verifier

    db = f"ct{next(_dbs)}_{secrets.token_hex(3)}"
    owner = f"{db}_owner"
    owner_pw = secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_pw)))  # the DBA
    target = f"postgresql://127.0.0.1:{cluster.port}/{db}"
    w = World("postgresql", root, target)
    for who in MEMBERS:
        w.envs[who] = _machine(root, who, target)
    # alice is also the owner's operator on her machine: libpq reads ~/.pgpass
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{owner_pw}\n")
    pgpass.chmod(0o600)
    owner_target = f"postgresql://{owner}@127.0.0.1:{cluster.port}/{db}"
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("alice", ("init", "--vault", owner_target, "--kdf", KDF_ARG))
    ]
    for who in ("bob", "carol"):
        code = root / f"{who}.invitation"
        steps.append(("alice", ("member", "invite", who, "--invitation-file", str(code))))
        steps.append((who, ("join", "--invitation-file", str(code), "--passphrase-file",
                            w.envs[who]["CREDVAULT_PASSPHRASE_FILE"], "--kdf", KDF_ARG)))  # fmt: skip
    steps.append(("alice", ("engagement", "new", "acme-2026", "--client", "acme")))
    out = w.setup(steps)
    assert f"created team vault {db} (id " in out
    assert "joined as bob; key slot " in out
    assert "joined as carol; key slot " in out
    w.extra.update(db=db, owner=owner, owner_pw=owner_pw, cluster=cluster)
    return w


@pytest.fixture(params=["sqlcipher", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlcipher":
        return _sqlcipher(tmp_path)
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return _postgresql(tmp_path, cluster)


def one_line(r: CliResult) -> str:
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("credvault: "), r.err
    assert "Traceback" not in r.err
    return lines[0]


# -- the contract ---------------------------------------------------------------------------
def test_put_then_get_round_trips(world: World) -> None:
    put = world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    assert put.text == "stored acme-2026/db\n"
    assert world.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    assert world.ok("alice", "get", "-n", "acme-2026/db").out == SECRET


def test_replacing_a_value_keeps_the_latest(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=b"first\n")
    world.ok("alice", "put", "acme-2026/db", input=b"second\n")
    assert world.ok("alice", "get", "acme-2026/db").out == b"second\n"


def test_fields_are_sealed_and_read_back(world: World, tmp_path: Path) -> None:
    fields = tmp_path / "fields.json"
    fields.write_text('{"username": "root", "notes": "rotate quarterly"}')
    world.ok("alice", "put", "acme-2026/web", "--fields-from", str(fields), input=SECRET + b"\n")
    assert world.ok("alice", "get", "acme-2026/web", "--field", "username").out == b"root\n"
    assert world.ok("alice", "get", "acme-2026/web", "--field", "notes").out == (
        b"rotate quarterly\n"
    )
    assert world.run("alice", "get", "acme-2026/web", "--field", "url").code == 3


def test_missing_credential_is_not_found(world: World) -> None:
    r = world.run("alice", "get", "acme-2026/nope")
    assert r.code == 3
    assert "nope" in one_line(r)
    assert r.out == b""


def test_member_without_a_role_is_denied(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    r = world.run("carol", "get", "acme-2026/db")
    assert r.code == 4
    assert "access denied" in one_line(r)
    assert SECRET not in r.out


def test_unknown_engagement(world: World) -> None:
    r = world.run("alice", "get", "no-such-eng/db")
    # SQLCipher says it does not exist; PostgreSQL's row-level security cannot tell a
    # member "absent" from "hidden from you", and says denied
    assert r.code == (3 if world.backend == "sqlcipher" else 4)
    one_line(r)


def test_grant_lets_an_engineer_read_and_write(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    g = world.ok("alice", "grant", "acme-2026", "bob", "engineer")
    assert g.text == "granted engineer on acme-2026 to bob\n"
    assert world.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    world.ok("bob", "put", "acme-2026/api", input=b"token\n")
    assert world.ok("alice", "get", "acme-2026/api").out == b"token\n"


def test_a_reader_cannot_write(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "grant", "acme-2026", "bob", "reader")
    assert world.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    r = world.run("bob", "put", "acme-2026/db", input=b"overwritten\n")
    assert r.code == 4
    one_line(r)
    assert world.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"


def test_only_a_lead_grants(world: World) -> None:
    world.ok("alice", "grant", "acme-2026", "bob", "engineer")
    r = world.run("bob", "grant", "acme-2026", "carol", "engineer")
    assert r.code == 4
    one_line(r)
    assert world.run("carol", "get", "acme-2026/db").code == 4


def test_revoke_lists_what_was_read_and_ends_access(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "put", "acme-2026/unread", input=b"x\n")
    world.ok("alice", "grant", "acme-2026", "bob", "engineer")
    world.ok("bob", "get", "acme-2026/db")
    r = world.ok("alice", "revoke", "acme-2026", "bob")
    lines = r.text.splitlines()
    assert lines[0] == "revoked bob on acme-2026; engagement key rotated"
    assert lines[1:] == ["bob read these; change them on the client's systems:", "  acme-2026/db"]
    denied = world.run("bob", "get", "acme-2026/db")
    assert denied.code == 4
    assert SECRET not in denied.out
    # the lead still reads everything after the rotation
    assert world.ok("alice", "get", "acme-2026/db").out == SECRET + b"\n"
    assert world.ok("alice", "get", "acme-2026/unread").out == b"x\n"


def test_revoking_someone_without_a_role(world: World) -> None:
    r = world.run("alice", "revoke", "acme-2026", "carol")
    assert r.code == 3
    one_line(r)


def test_ls_lists_names_never_values(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "put", "acme-2026/api", "--kind", "token", input=b"t\n")
    r = world.ok("alice", "ls", "--json")
    import json

    got = [(c["engagement"], c["name"], c["kind"]) for c in json.loads(r.out)]
    assert got == [("acme-2026", "api", "token"), ("acme-2026", "db", "password")]
    table = world.ok("alice", "ls", "acme-2026").text
    assert "acme-2026/db" in table
    assert "acme-2026/api" in table
    assert SECRET not in r.out
    assert world.run("carol", "ls", "acme-2026").code == 4


def test_member_ls(world: World) -> None:
    import json

    r = world.ok("alice", "member", "ls", "--json")
    got = {m["name"]: m["admin"] for m in json.loads(r.out)}
    assert got == {"alice": True, "bob": False, "carol": False}


def test_wrong_passphrase_is_exit_5(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pass"
    bad.write_text("not bob's\n")
    env = {**world.envs["bob"], "CREDVAULT_PASSPHRASE_FILE": str(bad)}
    world.envs["mallory"] = env
    r = world.run("mallory", "ls")
    assert r.code == 5
    one_line(r)


def test_audit_records_reads_and_verifies_against_a_checkpoint(world: World) -> None:
    import json

    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "grant", "acme-2026", "bob", "engineer")
    cp = world.ok("alice", "audit", "checkpoint").text.strip()
    world.ok("bob", "get", "acme-2026/db", "--reason", "TICKET-7")
    r = world.ok("alice", "audit", "--engagement", "acme-2026", "--json")
    reads = [e for e in json.loads(r.out) if e["action"] == "get" and e["member"] == "bob"]
    assert len(reads) == 1
    assert reads[0]["outcome"] == "ok"
    assert "TICKET-7" in reads[0]["detail"]
    assert SECRET not in r.out
    v = world.ok("alice", "audit", "verify", "--checkpoint", cp)
    assert v.text.startswith("audit trail intact: ")
    assert f"consistent with checkpoint {cp.split(':')[0]}" in v.text
    forged = cp.split(":")[0] + ":" + "00" * 32
    bad = world.run("alice", "audit", "verify", "--checkpoint", forged)
    assert bad.code == 6
    one_line(bad)


def test_denied_reads_are_audited(world: World) -> None:
    import json

    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    assert world.run("carol", "get", "acme-2026/db").code == 4
    r = world.ok("alice", "audit", "--engagement", "acme-2026", "--json")
    denied = [e for e in json.loads(r.out) if e["member"] == "carol"]
    assert [e["outcome"] for e in denied] == ["denied"]


def test_the_secret_never_reaches_argv_env_or_stderr(world: World) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    r = world.ok("alice", "get", "acme-2026/db")
    assert SECRET not in r.err.encode()
    for env in world.envs.values():
        assert all(SECRET.decode() not in v for v in env.values())


# -- PostgreSQL only: the team's own flow ---------------------------------------------------
Runner = Callable[..., CliResult]


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def test_commands_not_yet_on_a_team_vault_say_so_in_one_line(team: World) -> None:
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    for args in (
        ("history", "acme-2026/db"),
        ("system", "ls", "acme-2026"),
        ("backup",),
        ("check",),
        ("status",),
    ):
        r = team.run("alice", *args)
        assert r.code == 1, (args, r.err)
        assert "not available on a PostgreSQL team vault" in one_line(r)


def test_the_key_slot_is_private_and_strictly_read(team: World) -> None:
    slot = Path(team.envs["bob"]["XDG_CONFIG_HOME"]) / "credvault" / "team"
    path = slot / str(team.extra["db"]) / "bob.slot"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"version": 1', b'"version": true'))
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


def test_revoke_rotates_the_key_so_a_kept_copy_opens_nothing_new(team: World) -> None:
    """bob keeps the engagement key he had; after the revocation every envelope on the
    server is under a new key he never received (read as the DBA, who sees every row)."""
    from credvault import Secret, Team
    from credvault.crypto import envelope
    from credvault.errors import IntegrityError

    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.ok("alice", "grant", "acme-2026", "bob", "engineer")
    team.ok("alice", "grant", "acme-2026", "carol", "reader")
    pw = Path(team.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    old = dict(os.environ)
    os.environ["XDG_CONFIG_HOME"] = team.envs["bob"]["XDG_CONFIG_HOME"]
    try:
        with Team.open(team.target, "bob", Secret(pw)) as bob:
            eng_uid, kept_key, version = bob.engagement_key("acme-2026", "read")
            vault_id = bob.vault_id
    finally:
        os.environ.clear()
        os.environ.update(old)
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
