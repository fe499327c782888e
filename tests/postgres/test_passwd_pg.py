"""``credvault passwd`` on a team vault (issue 14): the member's own key slot is re-wrapped
on their machine under the new passphrase, and their login changes with it — only the new
SCRAM verifier reaches the server, audited as ``passwd``. The old passphrase opens nothing;
the old login password is refused; a change cut short either way leaves a way in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from credvault import Secret, Team
from credvault.errors import AccessDenied, WrongPassphrase
from credvault.postgres.slot import TeamSlot
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _postgresql, _sqlcipher, one_line


@pytest.fixture(params=["sqlcipher", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlcipher":
        return _sqlcipher(tmp_path)
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return _postgresql(tmp_path, cluster)


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def test_passwd_changes_the_passphrase(world: World, tmp_path: Path) -> None:
    world.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    world.ok("alice", "grant", "acme-2026", "bob", "engineer")
    new = tmp_path / "bob.new"
    new.write_text("bob's new passphrase, long enough\n")
    r = world.ok("bob", "passwd", "--passphrase-file", str(new))
    assert r.text == "passphrase changed\n"
    old = world.run("bob", "get", "acme-2026/db")
    assert old.code == 5
    one_line(old)
    world.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"] = str(new)
    assert world.ok("bob", "get", "acme-2026/db").out == SECRET + b"\n"
    audit = world.ok("alice", "audit", "--engagement", "acme-2026", "--json")
    assert b"bob's new" not in audit.out


@pytest.fixture
def as_bob(team: World) -> Iterator[None]:
    """This process on bob's machine (his XDG_CONFIG_HOME: his key slot)."""
    old = dict(os.environ)
    os.environ["XDG_CONFIG_HOME"] = team.envs["bob"]["XDG_CONFIG_HOME"]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def _slot(team: World) -> Path:
    return (
        Path(team.envs["bob"]["XDG_CONFIG_HOME"]) / "credvault" / "team" / str(team.extra["db"])
        / "bob.slot"
    )  # fmt: skip


def _pw(team: World) -> Secret:
    return Secret(Path(team.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip())


def test_the_old_login_is_refused_and_the_change_is_audited(team: World, as_bob: None) -> None:
    old_slot = TeamSlot.read(_slot(team))
    keys = old_slot.unlock(_pw(team))
    old_login = old_slot.login_password(keys)
    with Team.open(team.target, "bob", _pw(team)) as bob:
        bob.members.passwd(b"a new passphrase for bob")
    new_slot = TeamSlot.read(_slot(team))
    assert new_slot.salted_login
    assert new_slot.version == 3
    assert new_slot.salt != old_slot.salt
    assert new_slot.sign_pub == old_slot.sign_pub  # a plain change keeps the keys
    assert not _slot(team).with_name("bob.slot.new").exists()
    assert _slot(team).stat().st_mode & 0o777 == 0o600
    cluster: Cluster = team.extra["cluster"]  # type: ignore[assignment]
    conninfo = cluster.conninfo(str(team.extra["db"]), f"{team.extra['db']}_bob", tcp=True)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, password=old_login)
    new_login = new_slot.login_password(new_slot.unlock(Secret(b"a new passphrase for bob")))
    assert new_login != old_login
    psycopg.connect(conninfo, password=new_login).close()
    with pytest.raises(WrongPassphrase):
        Team.open(team.target, "bob", _pw(team))
    with psycopg.connect(
        cluster.conninfo(str(team.extra["db"])), password=cluster.password
    ) as conn:
        rows = conn.execute(
            "SELECT member, action, item, outcome FROM credvault.audit WHERE action = 'passwd'"
        ).fetchall()
        verifier = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (f"{team.extra['db']}_bob",),
        ).fetchone()[0]
    assert rows == [("bob", "passwd", "bob", "ok")]
    assert verifier.startswith("SCRAM-SHA-256$")
    assert new_login not in verifier


def test_a_change_cut_short_leaves_a_way_in(
    team: World, as_bob: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credvault import team_passwd
    from credvault.postgres import lifecycle_store

    new = Secret(b"bob's next passphrase")
    pending = team_passwd.pending_path(_slot(team))

    # killed before the server took the verifier: the old passphrase still works, and the
    # new one is refused (nothing changed on the server)
    def killed(*a: object) -> None:
        raise KeyboardInterrupt

    with Team.open(team.target, "bob", _pw(team)) as bob:
        monkeypatch.setattr(lifecycle_store, "change_login", killed)
        with pytest.raises(KeyboardInterrupt):
            bob.members.passwd(new)
        monkeypatch.undo()
    assert pending.exists()
    with pytest.raises(AccessDenied):
        Team.open(team.target, "bob", new)
    Team.open(team.target, "bob", _pw(team)).close()
    assert not TeamSlot.read(_slot(team)).salted_login

    # killed after the server took it, before the move: the new passphrase finishes it
    with Team.open(team.target, "bob", _pw(team)) as bob:
        monkeypatch.setattr(team_passwd, "finish_pending", killed)
        with pytest.raises(KeyboardInterrupt):
            bob.members.passwd(new)
        monkeypatch.undo()
    assert pending.exists()
    with pytest.raises(WrongPassphrase):  # the old slot's login is gone: the new one rules
        Team.open(team.target, "bob", _pw(team))
    with Team.open(team.target, "bob", new) as bob:
        assert bob.member == "bob"
    assert not pending.exists()
    assert TeamSlot.read(_slot(team)).salted_login
    Team.open(team.target, "bob", new).close()


def test_a_member_cannot_write_or_forge_a_key_hand_over(
    team: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """passwd --compromised's server side (section pgkeys), as bob with psql: the links
    table is closed to members, and replace_keys takes only the next link of bob's own
    history, for the key it names; a refusal changes nothing (his login still works).
    Then, in-process, a change killed after the server took it: the old passphrase opens
    nothing, the new one finishes it, slot and log witness (MACed under the new key)."""
    from credvault import team_passwd
    from postgres.test_lifecycle_pg import psql

    key = "'\\x" + "11" * 32 + "'::bytea"
    good_shape = '\'{"format":"credvault-receipt-key/1","seq":1,"predecessor":"00"}\''
    for sql, why in (
        ("SELECT * FROM credvault.member_key_links", "permission denied"),
        ("INSERT INTO credvault.member_key_links VALUES ('bob', 1, '{}', "  # noqa: S608
         f"{key}, {key})", "permission denied"),
        (f"SELECT credvault.replace_keys({good_shape}, {key}, {key}, 'SCRAM-SHA-256$4096:x')",
         "not the next link of your key history"),
        (f"SELECT credvault.replace_keys('not json', {key}, {key}, 'plain')",
         "SCRAM verifier"),
    ):  # fmt: skip
        out = psql(team, "bob", sql)
        assert out.returncode != 0, sql
        assert why in out.stderr, out.stderr
    assert psql(team, "bob", "SELECT count(*) FROM credvault.member_key_links()").stdout == "0\n"
    assert team.ok("bob", "ls").code == 0  # nothing changed: the old login still works

    team.ok("alice", "grant", "acme-2026", "bob", "engineer")
    home = Path(team.envs["bob"]["HOME"])
    monkeypatch.setenv("XDG_CONFIG_HOME", team.envs["bob"]["XDG_CONFIG_HOME"])
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    witness = home / "state" / "credvault" / "team" / str(team.extra["db"]) / "bob.logs"
    with Team.open(team.target, "bob", _pw(team)) as bob:
        bob.view("acme-2026")  # bob verifies the log: his witness keeps it
        old_key = bob.sign_pub
    assert witness.exists()
    new = Secret(b"bob after the leak")

    def killed(*a: object) -> None:
        raise KeyboardInterrupt

    with Team.open(team.target, "bob", _pw(team)) as bob:
        monkeypatch.setattr(team_passwd, "finish_pending", killed)
        with pytest.raises(KeyboardInterrupt):
            bob.members.passwd(new, compromised=True)
        monkeypatch.undo()
    monkeypatch.setenv("XDG_CONFIG_HOME", team.envs["bob"]["XDG_CONFIG_HOME"])
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    handovers = witness.with_suffix(".handovers")
    assert team_passwd.pending_path(witness).exists()
    assert team_passwd.pending_path(handovers).exists()
    with pytest.raises(WrongPassphrase):  # the old slot's login is gone
        Team.open(team.target, "bob", _pw(team))
    with Team.open(team.target, "bob", new) as bob:
        assert not team_passwd.pending_path(witness).exists()
        assert not team_passwd.pending_path(handovers).exists()
        assert bob.sign_pub != old_key
        assert bob.view("acme-2026").state is not None  # the witness opens under the new key
        keys = bob.receipt_keys().keys  # its own hand-over is in the witness, new key's MAC
        assert [k.public_key for k in keys] == [old_key, bob.sign_pub]
    assert handovers.exists()


def test_a_member_changes_only_their_own_login(team: World) -> None:
    from postgres.test_lifecycle_pg import psql

    db = team.extra["db"]
    for sql in (
        f"ALTER ROLE {db}_alice PASSWORD 'SCRAM-SHA-256$4096:x'",
        "SELECT credvault.change_login('plain-password')",
    ):
        out = psql(team, "bob", sql)
        assert out.returncode != 0, sql
        assert "permission denied" in out.stderr or "SCRAM verifier" in out.stderr, out.stderr
    team.ok("alice", "ls")  # alice's login untouched
    team.ok("bob", "member", "ls")
    # PostgreSQL lets any role set its own password with a plain ALTER ROLE (no audit row,
    # and the password travels): credvault cannot forbid it; bob's own credvault then no
    # longer logs in (docs/team.md says so)
    assert psql(team, "bob", f"ALTER ROLE {db}_bob PASSWORD 'plain'").returncode == 0
    r = team.run("bob", "ls")
    assert r.code == 4
    assert "login refused" in one_line(r)
