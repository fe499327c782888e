"""Review of section putbind (upgrade-2.sql): a bound secret is stored only under the link it
was sealed for.

- ``import`` links an entry to an existing system by name and seals its secret for the uid
  its read released (fetch_import); import_credentials looked the system up by name only:
  `system rm web` + `system add web` (a new uid) between the read and the store left a
  value bound to the old web in a row linked to the new one (never opens: exit 6).
- edit_credential locked the credential, then the system named FOR KEY SHARE (new in
  putbind); remove_system locks the system, then its linked credentials: `edit --system web`
  of a credential already linked to web beside `system rm web` deadlocked (40P01, a bare
  StoreError, not "run again"). The system is now held before the credential, as put does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from credvault import Secret
from credvault.errors import Conflict
from credvault.importers import RawEntry
from pg_cluster import Cluster

from .test_bound_link_pg import _before
from .test_contract import World, _postgresql
from .test_crl_pg import member
from .test_rebindpin_review_pg import UIDQ, _linked_to_web

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def w(tmp_path: Path, pg_cluster: Cluster) -> World:
    """alice (admin, lead of acme-2026), bob (engineer there); the system web (10.0.0.1)."""
    w = _postgresql(tmp_path, pg_cluster)
    with member(w, "alice") as alice:
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        alice.engagements.grant("acme-2026", "bob", "engineer")
    return w


def test_an_import_is_not_linked_to_a_system_made_again_while_it_sealed(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice imports root for host 10.0.0.1 (web: sealed for web's uid); bob removes web
    and adds it again (a new uid) before the store: refused (Conflict), nothing stored."""

    def made_again() -> None:
        with member(w, "bob") as bob:
            bob.systems.remove("acme-2026/web")
            bob.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")

    _before(monkeypatch, "import_credentials", made_again)
    entry = RawEntry("line 1", "root", Secret(b"imported"), host="10.0.0.1", port=22,
                     protocol="ssh")  # fmt: skip
    with member(w, "alice") as alice, pytest.raises(Conflict, match="changed meanwhile"):
        alice.credentials.import_entries("acme-2026", [entry])
    monkeypatch.undo()
    with member(w, "alice") as alice:  # nothing stored; run again, it opens
        assert "root" not in [c.name for c in alice.credentials.list("acme-2026")]
        alice.credentials.import_entries("acme-2026", [entry])
        assert alice.credentials.get("acme-2026/root").secret.reveal() == b"imported"


def test_edit_system_holds_the_system_before_the_credential(pg_cluster: Any) -> None:
    """remove_system's order is system, then its linked credentials. An `edit --system web`
    of db (linked to web) waiting for web must not hold db meanwhile, or the two deadlock."""
    pg = _linked_to_web(pg_cluster)
    with pg.connect(autocommit=False) as rm:  # as remove_system: web first
        rm.execute("SELECT 1 FROM credvault.systems WHERE name = 'web' FOR UPDATE")
        errors: list[BaseException] = []

        def edit() -> None:
            try:
                with pg.connect("alice") as a:
                    a.execute(
                        "SELECT credvault.edit_credential('alpha', 'db', %s, 1, false, NULL,"
                        " false, NULL, false, NULL, NULL, true, 'web', 'system')",
                        (a.execute(UIDQ).fetchone()[0],),
                    )
            except BaseException as e:
                errors.append(e)

        th = threading.Thread(target=edit)
        th.start()
        try:
            probe = pg.connect()
            for _ in range(600):  # until the edit waits for a lock (up to 30 s under load)
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
                    " AND datname = %s AND wait_event_type = 'Lock'",
                    (pg.role("alice"), pg.db),
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting
            try:  # then its linked credentials: db is free
                probe.execute(
                    "SELECT 1 FROM credvault.credentials WHERE name = 'db' FOR UPDATE NOWAIT"
                )
                held = False
            except psycopg.errors.LockNotAvailable:
                held = True
            probe.close()
        finally:
            rm.rollback()
            th.join(10)
        assert not held, "edit_credential held db while it waited for web"
        assert not errors
