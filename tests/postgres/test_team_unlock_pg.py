"""Unlock once on a team vault (issue 14): ``unlock --keyring`` against a real Secret Service,
and the agent, against a real cluster, asserting what SQLCipher's keyring and agent tests
assert (tests/test_keyring_cache.py, tests/test_agent.py, tests/test_agent_cli.py).

The world is the backend contract's (tests/postgres/test_contract.py: alice admin and lead
of acme-2026, bob and carol, each on their own "machine"); bob is an engineer of acme-2026.
Every command under test is a ``credvault`` process; "no passphrase" means the passphrase
file is unset and there is no terminal, so only a cache or the agent can answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CliResult
from keyring_daemon import READ_ENTRY
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _all_audit, _postgresql, one_line

NO_PASSPHRASE = {"CREDVAULT_PASSPHRASE_FILE": ""}


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster, runtime_dir: Path) -> World:
    """The contract's team world, bob an engineer holding acme-2026/db; bob's runtime
    directory short (the agent's socket lives there) and his own."""
    w = _postgresql(tmp_path, pg_cluster)
    w.setup([("alice", ("grant", "acme-2026", "bob", "engineer"))])
    w.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    w.envs["bob"]["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return w


def run(w: World, who: str, *args: str, input: bytes = b"", **env: str) -> CliResult:
    saved = w.envs[who]
    w.envs[who] = {**saved, **env}
    try:
        return w.run(who, *args, input=input)
    finally:
        w.envs[who] = saved


def _vault_id(w: World) -> str:
    slot = Path(w.envs["bob"]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(w.extra["db"])
    return str(json.loads((slot / "bob.slot").read_text())["vault_id"])


def _gets(w: World, member: str) -> list[tuple[object, ...]]:
    return [r for r in _all_audit(w, ("get",)) if r[0] == member]


# -- the OS keyring ---------------------------------------------------------------------------
@pytest.mark.keyring_real
def test_keyring_unlock_get_status_lock_and_the_binding(
    team: World, service_env: dict[str, str]
) -> None:
    kenv = {k: service_env[k] for k in ("DBUS_SESSION_BUS_ADDRESS",)}
    for who in ("alice", "bob"):
        team.envs[who].pop("PYTHON_KEYRING_BACKEND", None)
        team.envs[who].update(kenv)
    bob = team.envs["bob"]
    vid = _vault_id(team)

    def entry(user: str = "bob") -> str:
        p = subprocess.run(
            [sys.executable, "-c", READ_ENTRY, f"credvault-team:{vid}", user],
            env=bob,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return p.stdout.strip()

    locked = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (locked.code, locked.out) == (5, b"")
    r = team.ok("bob", "unlock", "--keyring", "--ttl", "1h")
    assert r.text.startswith("unlocked bob on this vault until ")
    assert r.text.endswith(" (UTC); `credvault lock` to forget\n")
    # Unlocked: the keys come from the keyring, the login password is derived from them
    r = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (r.code, r.out, r.err) == (0, SECRET + b"\n", "")
    status = json.loads(run(team, "bob", "status", "--json", **NO_PASSPHRASE).out)
    assert status["keyring"]["unlocked"] is True
    assert status["keyring"]["message"] == f"unlocked until {status['keyring']['until']} (UTC)"
    # still the server's audited read, under bob's name (the locked attempt reached nothing)
    assert [g[1:5] for g in _gets(team, "bob")] == [("get", "acme-2026", "db", "ok")]

    # The entry: wrapped keys only, bound to this vault, member and key slot.
    raw = entry()
    assert set(json.loads(raw)) == {"format", "expires", "keys"}
    assert json.loads(raw)["format"] == "credvault-team-keyring-1"
    assert SECRET not in raw.encode()
    import base64

    blob = base64.b64decode(json.loads(raw)["keys"])
    forms = _key_forms(team)
    for form in forms:
        assert form not in raw.encode()
        assert form not in blob
    # Another member on the same OS account: bob's unlock is not carol's (nor alice's)…
    r = run(team, "bob", "get", "acme-2026/db", "--as", "carol", **NO_PASSPHRASE)
    assert r.code == 5, r.err
    assert r.out == b""
    # … even with carol's slot beside bob's and bob's entry relabelled for her, wrapping key
    # and marker included (what an attacker on the shared account can do): it does not open
    # under carol's binding, and is deleted on sight.
    from credvault import kernel_keys

    slots = Path(bob["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(team.extra["db"])
    carol_slot = Path(team.envs["carol"]["XDG_CONFIG_HOME"]).joinpath(
        "credvault", "team", str(team.extra["db"]), "carol.slot"
    )
    shutil.copy2(carol_slot, slots / "carol.slot")
    wrap = kernel_keys.read(f"credvault-team:{vid}:bob")
    assert wrap is not None
    kernel_keys.add(f"credvault-team:{vid}:carol", wrap, 3600)
    write = "import keyring, sys; keyring.set_password(sys.argv[1], 'carol', sys.argv[2])"
    subprocess.run([sys.executable, "-c", write, f"credvault-team:{vid}", raw], env=bob, check=True)
    marker = Path(bob["XDG_CACHE_HOME"]) / "credvault"
    (marker / f"team-unlocked-{vid}-carol").write_text(json.loads(raw)["expires"])
    r = run(team, "bob", "get", "acme-2026/db", "--as", "carol", **NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b""), r.err
    assert entry("carol") == "NONE"
    assert kernel_keys.read(f"credvault-team:{vid}:carol") is None
    # nobody read as carol; bob's own entry untouched
    assert _gets(team, "carol") == []
    assert entry() == raw
    # Another OS user cannot read the kernel-held wrapping key (nor reach bob's keyring)
    if os.geteuid() == 0:
        assert _kernel_key_as_nobody(f"credvault-team:{vid}:bob") == "NONE"

    # lock removes the entry, the marker and the wrapping key; then locked again
    r = team.ok("bob", "lock")
    assert r.text == "locked\n"
    assert entry() == "NONE"
    assert kernel_keys.read(f"credvault-team:{vid}:bob") is None
    assert not (marker / f"team-unlocked-{vid}-bob").exists()
    assert run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE).code == 5
    assert team.ok("bob", "lock").text == "nothing cached; already locked\n"
    # no file of bob's machine or of the keyring daemon holds his keys (the slot holds them
    # only sealed under the passphrase)
    for root in (Path(bob["HOME"]), Path(service_env["XDG_DATA_HOME"])):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                data = f.read_bytes()
                assert not [form for form in forms[1:] if form in data], f

    # A new passphrase makes a new slot (salt, login): the entry bound to the old one is
    # refused and deleted, never used
    team.ok("bob", "unlock", "--keyring")
    new = Path(team.root) / "bob.new-pass"
    new.write_text("a new passphrase for bob\n")
    team.ok("bob", "passwd", "--passphrase-file", str(new))
    r = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b""), r.err
    assert entry() == "NONE"
    # The refusal on a machine with no usable keyring: one line, exit 1, as on SQLCipher
    r = run(
        team, "alice", "unlock", "--keyring", PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring"
    )
    assert r.code == 1
    assert "no usable OS keyring" in one_line(r)


def _key_forms(w: World) -> list[bytes]:
    """bob's private keys (raw, hex, base64) and his passphrase, from his own slot."""
    import base64

    from credvault import Secret
    from credvault.postgres.slot import TeamSlot

    slot = Path(w.envs["bob"]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(w.extra["db"])
    pw = Path(w.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().rstrip(b"\n")
    keys = TeamSlot.read(slot / "bob.slot").unlock(Secret(pw))
    forms = [pw]
    for secret in (keys.kem_private, keys.sign_private):
        forms += [secret, secret.hex().encode(), base64.b64encode(secret)]
    return forms


def _sessions(w: World, member: str) -> list[object]:
    """The member's open sessions on the server (as the DBA sees them)."""
    import psycopg

    cluster = w.extra["cluster"]
    assert isinstance(cluster, Cluster)
    with psycopg.connect(cluster.conninfo(str(w.extra["db"])), password=cluster.password) as c:
        return c.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s", (f"{w.extra['db']}_{member}",)
        ).fetchall()


def served_get(w: World) -> bytes:
    r = run(w, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert r.code == 0, r.err
    return r.out


def _kernel_key_as_nobody(name: str) -> str:
    """Look the kernel key up from a child that dropped to uid/gid 65534 (nobody)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            from credvault import kernel_keys

            try:
                found = kernel_keys.read(name)
                answer = b"NONE" if found is None else b"FOUND"
            except kernel_keys.KernelKeyError:
                answer = b"NONE"
            os.write(write_end, answer)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer


# -- the agent --------------------------------------------------------------------------------
def test_agent_serves_get_audited_reconnects_and_drops_a_removed_member(
    team: World, runtime_dir: Path
) -> None:
    from credvault.agent import client

    sock = runtime_dir / "credvault" / "agent.sock"
    r = team.ok("bob", "unlock", "--ttl", "1h", "--idle", "10m")
    assert r.text.startswith("unlocked bob on this vault until ")
    assert " (UTC) in the agent (pid " in r.text
    assert sock.stat().st_mode & 0o777 == 0o600
    st = client.status(sock)
    assert st is not None
    assert [(e["vault"], e["member"]) for e in st["entries"]] == [(team.target, "bob")]

    def served() -> int:
        now = client.status(sock)
        assert now is not None
        return int(now["served"])

    # get without a passphrase: answered by the agent, each one the server's audited read
    r = run(team, "bob", "get", "acme-2026/db", "--reason", "T-1", **NO_PASSPHRASE)
    assert (r.code, r.out, r.err) == (0, SECRET + b"\n", "")
    r = run(team, "bob", "get", "acme-2026/db", "--field", "secret", **NO_PASSPHRASE)
    assert (r.code, r.out) == (0, SECRET + b"\n")
    assert served() == 2
    assert [g[1:6] for g in _gets(team, "bob")] == [
        ("get", "acme-2026", "db", "ok", "reason: T-1"),
        ("get", "acme-2026", "db", "ok", ""),
    ]
    # the same exit code and line as without the agent
    r = run(team, "bob", "get", "acme-2026/nope", **NO_PASSPHRASE)
    assert r.code == 3
    assert "nope" in one_line(r)
    assert served() == 3
    # What else it serves on SQLCipher, as far as a team vault offers it: the same output
    r = run(team, "bob", "ls", "acme-2026", **NO_PASSPHRASE)
    assert served() == 4
    normal = run(team, "bob", "ls", "acme-2026", CREDVAULT_NO_AGENT="1")
    assert (r.code, r.out, r.err) == (normal.code, normal.out, normal.err)
    assert (r.code, r.err) == (0, "")
    assert b"acme-2026/db" in r.out
    r = run(team, "bob", "put", "acme-2026/new", input=b"n3w\n", **NO_PASSPHRASE)
    assert (r.code, r.out, r.err) == (0, b"stored acme-2026/new\n", "")
    assert _all_audit(team, ("put",))[-1][:5] == ("bob", "put", "acme-2026", "new", "ok")
    assert run(team, "bob", "get", "acme-2026/new", **NO_PASSPHRASE).out == b"n3w\n"
    # what a team vault replaces takes the normal path, which refuses it in one line
    s0 = served()
    r = run(team, "bob", "member", "add", "dave", **NO_PASSPHRASE)
    assert r.code == 1
    assert "is not used on a team vault: " in one_line(r)
    assert served() == s0
    # another member on the same account: bob's unlock is never theirs
    r = run(team, "bob", "get", "acme-2026/db", "--as", "alice", **NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b""), r.err
    assert served() == s0
    assert len(_sessions(team, "bob")) == 1  # one connection, kept between requests
    # status tells the truth on a team vault too
    lines = team.ok("bob", "status").text.splitlines()
    assert lines[2] == "keyring: locked (no cached key)"
    assert lines[3].startswith("agent:   unlocked until ")

    # The server ends the agent's session (restart, failover, a DBA): the next get logs in
    # again, with the same checks, and is served
    cluster = team.extra["cluster"]
    assert isinstance(cluster, Cluster)
    db = str(team.extra["db"])
    cluster.superuser_sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{db}_bob'"  # noqa: S608
    )
    before = len(_gets(team, "bob"))
    r = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (r.code, r.out, r.err) == (0, SECRET + b"\n", "")
    assert len(_gets(team, "bob")) == before + 1
    assert served() == s0 + 1

    # Memory only: no form of bob's keys or passphrase in the agent's environment or argv
    pid = int(st["pid"])
    exposed = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
    for form in _key_forms(team):
        assert form not in exposed
    assert b"CREDVAULT_PASSPHRASE_FILE" not in exposed
    # Another OS user is refused, even with the modes loosened (as tests/test_agent.py)
    if os.geteuid() == 0:
        from test_agent import _as_other_user

        request = {
            "op": "run",
            "argv": ["get", "acme-2026/db"],
            "cwd": "/",
            "env": {"CREDVAULT_VAULT": team.target, "CREDVAULT_MEMBER": "bob"},
        }
        modes = [(p, p.stat().st_mode & 0o777) for p in (runtime_dir, sock.parent, sock)]
        for p, _ in modes:
            p.chmod(0o777)
        try:
            reply = _as_other_user(sock, request)
        finally:
            for p, mode in modes:
                p.chmod(mode)
        assert reply["ok"] is False
        assert reply["error"] == "denied"
        assert served() == s0 + 1

    # lock ends the agent and everything it held
    assert team.ok("bob", "lock").text == "locked\n"
    assert run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE).code == 5
    assert client.status(sock) is None

    # The lifetime ends: keys and connection dropped, the agent exits (observed, not slept)
    team.ok("bob", "unlock", "--ttl", "1s")
    deadline = time.monotonic() + 60
    while client.status(sock) is not None:
        assert time.monotonic() < deadline, "the agent outlived its keys' lifetime"
        time.sleep(0.05)
    assert run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE).code == 5
    while _sessions(team, "bob"):  # its connection closed (the backend exits after it)
        assert time.monotonic() < deadline, "the agent's connection outlived its keys"
        time.sleep(0.05)

    # A passphrase change (a new slot file) drops the keys before the next request
    team.ok("bob", "unlock")
    new = Path(team.root) / "bob.new-pass"
    new.write_text("a new passphrase for bob\n")
    team.ok("bob", "passwd", "--passphrase-file", str(new))
    shutil.copy(new, team.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"])
    r = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b""), r.err
    assert client.status(sock) is None  # nothing left to hold: the agent ended

    # Removed: login off, sessions ended; the agent cannot log in again and drops the keys
    team.ok("bob", "unlock")
    assert served_get(team) == SECRET + b"\n"
    team.ok("alice", "member", "rm", "bob")
    r = run(team, "bob", "get", "acme-2026/db", **NO_PASSPHRASE)
    assert (r.code, r.out) == (5, b""), r.err  # keys dropped: the normal path, no passphrase
    st = client.status(sock)
    assert st is None or st["entries"] == []
