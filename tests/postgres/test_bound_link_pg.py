"""A secret is sealed bound to its record's clear columns, its system link among them
(format 0x02): a put or an edit must not store it under a link other than the one it was
sealed for, or it never opens again and every read fails as tampering (exit 6) with no
tampering done (upgrade-2.sql, section putbind).

The races, each driven by a colleague's command landing between the client's sealing and
its store (through a wrapper around the store call, so no timing is involved): a put that
keeps the credential's link while an `edit --system` changes it, and an `edit --system X`
while X is removed and made again (same name, new uid).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from credvault import Secret
from credvault.errors import Conflict
from credvault.postgres.store import PgStore
from pg_cluster import Cluster

from .test_contract import World, _postgresql
from .test_crl_pg import member


@pytest.fixture
def w(tmp_path: Path, pg_cluster: Cluster) -> World:
    """alice (admin, lead of acme-2026), bob (engineer there); db linked to web; the
    system other beside it."""
    w = _postgresql(tmp_path, pg_cluster)
    with member(w, "alice") as alice:
        alice.systems.add("acme-2026/web", "10.0.0.1", port=22, protocol="ssh")
        alice.systems.add("acme-2026/other", "10.0.0.2", port=22, protocol="ssh")
        alice.credentials.put("acme-2026/db", Secret(b"db-before"), system="web")
        alice.engagements.grant("acme-2026", "bob", "engineer")
    return w


def _before(
    monkeypatch: pytest.MonkeyPatch, method: str, colleague: Callable[[], None]
) -> list[bool]:
    """``colleague`` runs once, right before the first call of PgStore.``method``."""
    real = getattr(PgStore, method)
    fired: list[bool] = []

    def wrapped(self: PgStore, *args: Any, **kw: Any) -> Any:
        if not fired:
            fired.append(True)
            colleague()
        return real(self, *args, **kw)

    monkeypatch.setattr(PgStore, method, wrapped)
    return fired


def test_a_put_is_not_stored_under_a_link_changed_while_it_sealed(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice puts a new value of db (keeping its link: sealed for web); bob's `edit
    --system other` lands first. Stored, the value would be bound to web in a row linked to
    other: refused (Conflict), and db still opens, linked to other."""

    def relink() -> None:
        with member(w, "bob") as bob:
            bob.credentials.edit("acme-2026/db", {"system": "other"})

    fired = _before(monkeypatch, "put_credential_linked", relink)
    with member(w, "alice") as alice, pytest.raises(Conflict, match="system changed meanwhile"):
        alice.credentials.put("acme-2026/db", Secret(b"db-after"))
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        got = alice.credentials.get("acme-2026/db")
        assert (got.secret.reveal(), got.system) == (b"db-before", "other")
        # and run again, the put stores
        alice.credentials.put("acme-2026/db", Secret(b"db-after"))
        assert alice.credentials.get("acme-2026/db").secret.reveal() == b"db-after"


def test_an_edit_is_not_stored_under_a_system_made_again_while_it_sealed(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice links db to other (its secret sealed again for other's uid); bob removes other
    and adds a system of the same name first (a new uid). Stored, db would be linked to the
    new other with a value bound to the old one: refused, and db still opens."""

    def made_again() -> None:
        with member(w, "bob") as bob:
            bob.systems.remove("acme-2026/other")
            bob.systems.add("acme-2026/other", "10.0.0.3", port=22, protocol="ssh")

    fired = _before(monkeypatch, "edit_credential", made_again)
    with member(w, "alice") as alice, pytest.raises(Conflict, match="system changed meanwhile"):
        alice.credentials.edit("acme-2026/db", {"system": "other"})
    assert fired
    monkeypatch.undo()
    with member(w, "alice") as alice:
        got = alice.credentials.get("acme-2026/db")
        assert (got.secret.reveal(), got.system) == (b"db-before", "web")
