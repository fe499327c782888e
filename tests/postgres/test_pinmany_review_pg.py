"""Review of section pinmany: what else stores, re-sealed, a value read earlier without
asking whether the row was written since (docs/team.md "Reading a secret").

The rebind flows (``mv`` within an engagement, ``edit`` of kind or link) read the secret
through request_record/fetch_record (section pinned), seal it again for the new binding on
the member's machine, and store it with rename_credential / edit_credential. Those check
only the envelope's format and key version (rebound_ok): a ``put`` of a new value landing
between the read and the store is overwritten by the old value, and keep_version makes no
earlier version of it (the write is a "rebinding"): the new value is gone without a trace.
The same lost update section pinmany fixed for a rotation. Now refused (section
rebindpin): Conflict, "run the command again", and the new value stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from credvault import Secret
from credvault.errors import Conflict
from credvault.postgres.store import PgStore

from .test_contract import World, _postgresql
from .test_crl_pg import member


@pytest.fixture
def w(tmp_path: Path, pg_cluster: Any) -> World:
    """alice (admin, lead of acme-2026); acme-2026 holds the credential db."""
    w = _postgresql(tmp_path, pg_cluster)
    with member(w, "alice") as alice:
        alice.credentials.put("acme-2026/db", Secret(b"db-before"))
    return w


def _put_after_rebind_read(w: World, monkeypatch: pytest.MonkeyPatch, kind: str) -> list[bool]:
    """After the rebind read (request_record + fetch_record of ``kind``) a colleague puts a
    new value of db (another session), once."""
    real = PgStore.record
    fired: list[bool] = []

    def write_between(self: PgStore, k: str, *args: Any, **kw: Any) -> Any:
        got = real(self, k, *args, **kw)
        if not fired and k == kind:
            fired.append(True)
            with member(w, "alice") as colleague:
                colleague.credentials.put("acme-2026/db", Secret(b"db-written-meanwhile"))
        return got

    monkeypatch.setattr(PgStore, "record", write_between)
    return fired


def test_a_rename_does_not_undo_a_put_made_while_it_read(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mv acme-2026/db db2`` re-seals the secret it read for the new name; a put landing
    between that read and rename_credential must not be undone: refused (Conflict), the new
    value kept."""
    fired = _put_after_rebind_read(w, monkeypatch, "rebind-mv")
    with member(w, "alice") as alice, pytest.raises(Conflict, match="changed meanwhile"):
        alice.credentials.move("acme-2026/db", "db2")
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-written-meanwhile"


def test_an_edit_of_kind_does_not_undo_a_put_made_while_it_read(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``edit --kind`` re-seals the secret it read for the new kind: the same lost update."""
    fired = _put_after_rebind_read(w, monkeypatch, "rebind-edit")
    with member(w, "alice") as alice, pytest.raises(Conflict, match="changed meanwhile"):
        alice.credentials.edit("acme-2026/db", {"kind": "token"})
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-written-meanwhile"


def test_a_system_removal_does_not_undo_a_put_made_while_it_read(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``system rm`` re-seals each linked credential's secret without the link
    (remove_system's c_secrets, checked only by uid and rebound_ok): the same lost update,
    and the put's value is not even kept as an earlier version (a "rebinding")."""
    with member(w, "alice") as alice:
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        alice.credentials.put("acme-2026/db", Secret(b"db-before"), system="web")
    fired = _put_after_rebind_read(w, monkeypatch, "rebind-edit")
    with member(w, "alice") as alice, pytest.raises(Conflict, match="changed meanwhile"):
        alice.systems.remove("acme-2026/web")
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-written-meanwhile"


def test_a_system_restore_does_not_undo_a_put_made_while_it_read(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``system restore`` re-seals each credential it links again (restore_trashed's
    c_secrets): the same lost update."""
    with member(w, "alice") as alice:
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        alice.credentials.put("acme-2026/db", Secret(b"db-before"), system="web")
        alice.systems.remove("acme-2026/web")
    fired = _put_after_rebind_read(w, monkeypatch, "rebind-edit")
    with member(w, "alice") as alice, pytest.raises(Conflict, match="changed meanwhile"):
        alice.systems.restore("acme-2026/web")
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-written-meanwhile"
        alice.systems.restore("acme-2026/web")  # run again: the links back, the value kept
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-written-meanwhile"


def test_a_move_of_a_credential_removed_meanwhile_releases_no_earlier_version(
    pg_cluster: Any,
) -> None:
    """bob asks to move alpha/db (two versions); alice removes it before bob's fetch_move.
    The move cannot happen (the client says not found), and nothing is released: before,
    the earlier version's envelopes (its secret) came back without the credential row."""
    from pg_cluster import fetch_as_a_client, new_pg_vault

    from .test_insider_pg import _populate

    pg = _populate(new_pg_vault(pg_cluster))
    pg.grant("alice", "beta", "bob", "engineer")
    pg.put("alice", "alpha", "db", b"V2")
    with pg.connect("bob") as conn:
        req = conn.execute(
            "SELECT request FROM credvault.request_move('alpha', 'db', 'beta', 'db')"
        ).fetchone()[0]
        with pg.connect("alice") as alice:
            alice.execute("SELECT credvault.remove_credential('alpha', 'db')")
        got = fetch_as_a_client(conn, req, "count(*)", "fetch_move")
    assert got[0] == 0
