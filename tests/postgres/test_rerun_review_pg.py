"""Review of the "run it again to finish" fixes (rev6): what a member or the DBA can make
of them.

- ``join`` sets a key slot aside only because the invitation code still logs in. Whether it
  does is the server's word (the DBA's ``ALTER ROLE``, a ``trust`` or ``cert`` line in
  pg_hba.conf): a join the server then refuses must leave the slot where it was, and a slot
  set aside earlier is never overwritten.
- ``member invite`` of a member still invited replaces the invitation: a session that
  logged in with the old code before is ended with it (it could otherwise still join).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from conftest import KDF_ARG
from credvault import Secret
from credvault.postgres import scram_verifier
from credvault.postgres.slot import TeamSlot
from killpoints import wait_until
from pg_cluster import Cluster
from postgres.test_contract import World, _machine, _postgresql


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    return _postgresql(tmp_path, pg_cluster)


def _slot(w: World, who: str) -> Path:
    db = str(w.extra["db"])
    return Path(w.envs[who]["XDG_CONFIG_HOME"]) / "credvault" / "team" / db / f"{who}.slot"


def _join(w: World, who: str, code: Path) -> tuple[str, ...]:
    pw = w.envs[who]["CREDVAULT_PASSPHRASE_FILE"]
    return ("join", "--invitation-file", str(code), "--passphrase-file", pw, "--kdf", KDF_ARG)


def test_a_join_the_server_refuses_leaves_the_joined_slot_where_it_was(team: World) -> None:
    """bob joined; his invitation code logs in again (the DBA set it back as his role's
    password: what a ``trust`` or ``cert`` pg_hba line does for any code). ``join`` again
    is refused by the server (bob is active): failed, so bob's slot must be where it was,
    and bob must still read."""
    w = team
    cluster = w.extra["cluster"]
    assert isinstance(cluster, Cluster)
    code = Path(w.root) / "bob.invitation"
    slot = _slot(w, "bob")
    before = slot.read_bytes()
    role = f"{w.extra['db']}_bob"
    # the DBA: the old code logs in again
    cluster.superuser_sql(
        f"ALTER ROLE \"{role}\" PASSWORD '{scram_verifier(code.read_text().strip())}'"
    )
    r = w.run("bob", *_join(w, "bob", code))
    assert r.code != 0
    assert slot.exists(), r.err
    assert slot.read_bytes() == before
    # the DBA's meddling undone: bob's own login (derived from his slot) back
    ours = TeamSlot.read(slot)
    pw = Secret(Path(w.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip())
    login = ours.login_password(ours.unlock(pw))
    cluster.superuser_sql(f"ALTER ROLE \"{role}\" PASSWORD '{scram_verifier(login)}'")
    assert w.run("bob", "member", "ls").code == 0


def test_a_slot_set_aside_before_is_never_overwritten(team: World) -> None:
    """A slot set aside once (``<member>.slot.old``) is not replaced by the next one set
    aside: nothing a server says makes a join destroy a key slot."""
    w = team
    w.envs["erin"] = _machine(Path(w.root), "erin", w.target)
    code = Path(w.root) / "erin.invitation"
    assert w.run("alice", "member", "invite", "erin", "--invitation-file", str(code)).code == 0
    slot = _slot(w, "erin")
    slot.parent.mkdir(parents=True, exist_ok=True)
    old = slot.with_name(slot.name + ".old")
    old.write_bytes(b"an earlier slot of erin's")
    slot.write_bytes(b"a slot the server never took")
    r = w.run("erin", *_join(w, "erin", code))
    assert r.code == 0, r.err
    assert old.read_bytes() == b"an earlier slot of erin's"
    kept = [p.read_bytes() for p in slot.parent.iterdir() if p.name.startswith("erin.slot.")]
    assert b"a slot the server never took" in kept


def test_a_session_of_the_replaced_invitation_cannot_join(team: World) -> None:
    """dave's first code logs in (a session left open); alice invites dave again (the first
    code lost, or leaked): the old session must not outlive the code and join."""
    w = team
    cluster = w.extra["cluster"]
    assert isinstance(cluster, Cluster)
    w.envs["dave"] = _machine(Path(w.root), "dave", w.target)
    code = Path(w.root) / "dave.invitation"
    assert w.run("alice", "member", "invite", "dave", "--invitation-file", str(code)).code == 0
    old_code = code.read_text().strip()
    stale = psycopg.connect(
        cluster.conninfo(str(w.extra["db"]), f"{w.extra['db']}_dave", tcp=True),
        password=old_code,
        autocommit=True,
    )
    try:
        code.unlink()
        assert w.run("alice", "member", "invite", "dave", "--invitation-file", str(code)).code == 0
        with pytest.raises(psycopg.Error):
            stale.execute(
                "SELECT credvault.join_vault_proved(%s, %s, %s, %s)",
                (b"\x01" * 32, b"\x02" * 32, scram_verifier("the old code's holder"), b"\x03" * 64),
            )
    finally:
        stale.close()
    r = w.run("dave", *_join(w, "dave", code))
    assert r.code == 0, r.err


def test_a_database_dressed_as_this_vaults_migration_gets_no_migrate_entry(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """The DBA gives a database holding another vault's migration this vault's id (the
    vault id is no secret): ``migrate`` of this vault into it is refused, and writes no
    ``migrate`` entry into this vault's trail (it was never migrated)."""
    from postgres.test_contract import _library, _sqlcipher
    from postgres.test_migrate_pg import _target_db

    # two vaults with one id (the test worlds are copies of one; the DBA could copy an id
    # into any database), their trails apart from here
    other = _sqlcipher(tmp_path / "other")
    other.ok("alice", "put", "acme-2026/other", input=b"other\n")
    db, owner_target, owner_pw = _target_db(pg_cluster, other)
    inv = str(tmp_path / "inv-other")
    assert other.run("alice", "migrate", "--to", owner_target, "--invitations", inv).code == 0
    old = _sqlcipher(tmp_path / "old")
    old.ok("alice", "put", "acme-2026/this", input=b"this\n")
    vid = _library(old, "alice", "print(v.vault_id)").strip()
    pgpass = Path(old.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_cluster.port}:{db}:{db}_owner:{owner_pw}\n")
    pgpass.chmod(0o600)
    # the DBA
    pg_cluster.superuser_sql(
        f"UPDATE credvault.meta SET value = '\\x{vid}'::bytea WHERE key = 'vault_id'",  # noqa: S608
        db,
    )
    r = old.run("alice", "migrate", "--to", owner_target, "--invitations", str(tmp_path / "i2"))
    assert r.code != 0
    assert "recorded now" not in r.err
    trail = old.ok("alice", "audit", "--json").out.decode()
    assert '"migrate"' not in trail


@pytest.mark.parametrize("server_took_them", [True, False])
def test_a_join_whose_answer_is_lost_keeps_the_slot_the_server_took(
    team: World, monkeypatch: pytest.MonkeyPatch, server_took_them: bool
) -> None:
    """The connection drops during ``join``: an error, but not a refusal. Where the server
    committed the join and only its answer was lost, the slot holds the keys it took and
    the invitation code logs in no more; deleting the slot (as any error did) locked the
    member out for good. The slot is kept exactly when the keys' own login logs in; where
    the server never took them, it goes and a rerun starts clean."""
    from credvault import MIN_KDF, Team
    from credvault.errors import StoreError
    from credvault.postgres.store import PgStore

    w = team
    w.envs["erin"] = _machine(Path(w.root), "erin", w.target)
    code = Path(w.root) / "erin.invitation"
    assert w.run("alice", "member", "invite", "erin", "--invitation-file", str(code)).code == 0
    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(k, w.envs["erin"][k])
    real = PgStore.join_proved

    def cut_off(self: PgStore, *a: object) -> None:
        if server_took_them:
            real(self, *a)  # type: ignore[arg-type]
        raise StoreError("team vault: server closed the connection unexpectedly")

    monkeypatch.setattr(PgStore, "join_proved", cut_off)
    pw = Path(w.envs["erin"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    invitation = Secret(code.read_bytes().strip())
    slot = _slot(w, "erin")
    if server_took_them:  # joined: only the answer was lost
        Team.join(w.target, "erin", invitation, Secret(pw), MIN_KDF)
        assert slot.exists()
    else:
        with pytest.raises(StoreError):
            Team.join(w.target, "erin", invitation, Secret(pw), MIN_KDF)
        assert not slot.exists()
    monkeypatch.setattr(PgStore, "join_proved", real)
    r = w.run("erin", *_join(w, "erin", code))
    if server_took_them:  # the code logs in no more: the slot is hers, and it works
        assert r.code != 0
        assert "exists already" in r.err
    else:
        assert r.code == 0, r.err
    assert w.run("erin", "member", "ls").code == 0


def test_a_join_cut_off_while_the_server_still_works_on_it_keeps_the_keys(
    team: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rev8: the connection drops while the server's join still waits (here on a lock an
    admin's transaction holds on the members table; a slow server, a proxy's timeout do the
    same). The probe logs in before the join commits, so it is refused with the invitation
    still the password; the join then commits. The keys the server took must still be on
    this machine (the slot, or a slot set aside): deleting them locked erin out for good.
    No DBA needed; a DBA who commits the join and then changes the password gets the same
    refusal on purpose."""
    import threading

    from credvault import MIN_KDF, Team
    from credvault.errors import StoreError
    from credvault.postgres.store import PgStore

    w = team
    cluster = w.extra["cluster"]
    assert isinstance(cluster, Cluster)
    db = str(w.extra["db"])
    w.envs["erin"] = _machine(Path(w.root), "erin", w.target)
    code = Path(w.root) / "erin.invitation"
    assert w.run("alice", "member", "invite", "erin", "--invitation-file", str(code)).code == 0
    for k in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(k, w.envs["erin"][k])
    real = PgStore.join_proved
    su = cluster.conninfo(db)
    locker = psycopg.connect(su, password=cluster.password)
    locker.execute("SELECT 1 FROM credvault.members WHERE name = 'erin' FOR UPDATE")
    worker: list[threading.Thread] = []

    def cut_off(self: PgStore, *a: object) -> None:
        t = threading.Thread(target=lambda: _swallow(real, self, *a), daemon=True)
        t.start()
        worker.append(t)
        with psycopg.connect(su, password=cluster.password, autocommit=True) as c:
            q = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            wait_until(lambda: bool(c.execute(q).fetchone()[0]), "the server's join to wait")
        raise StoreError("team vault: server closed the connection unexpectedly")

    monkeypatch.setattr(PgStore, "join_proved", cut_off)
    pw = Path(w.envs["erin"]["CREDVAULT_PASSPHRASE_FILE"]).read_bytes().strip()
    invitation = Secret(code.read_bytes().strip())
    slot = _slot(w, "erin")
    try:
        with pytest.raises(StoreError):
            Team.join(w.target, "erin", invitation, Secret(pw), MIN_KDF)
    finally:
        locker.rollback()  # the admin's transaction ends: the server's join commits
        locker.close()
        for t in worker:
            t.join(30)
    with psycopg.connect(su, password=cluster.password) as c:
        row = c.execute("SELECT state, sign_pub FROM credvault.members WHERE name = 'erin'")
        state, taken = row.fetchone() or (None, None)
    assert state == "active"  # the server took the keys
    kept = [TeamSlot.read(f).sign_pub for f in slot.parent.glob("erin.slot*")]
    assert bytes(taken) in kept, "the keys the server took are gone from this machine"


def _swallow(f: object, *a: object) -> None:
    import contextlib

    with contextlib.suppress(Exception):  # the cut connection's end of it
        f(*a)  # type: ignore[operator]
