"""The SQL of ``info``, ``receipt-keys`` and ``passwd --compromised`` on a team vault
(``upgrade-2.sql``, section pgkeys), beside :mod:`credvault.postgres.store`, whose
connection and error mapping it uses. Each call is one SECURITY DEFINER function; it
decides nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from credvault.postgres.store import PgStore


@contextlib.contextmanager
def _errors(store: PgStore, action: str) -> Iterator[None]:
    """The store's error mapping (SQLSTATEs as credvault's errors and exit codes)."""
    with store._errors(action):
        yield


def _one(store: PgStore, sql: str, params: tuple[Any, ...], action: str) -> Any:
    with _errors(store, action):
        return store.conn.execute(sql, params).fetchone()


def _all(store: PgStore, sql: str, action: str) -> list[Any]:
    with _errors(store, action):
        return list(store.conn.execute(sql).fetchall())


def vault_info(store: PgStore) -> dict[str, Any]:
    """The server's facts for ``info``: schema, created_at, members, the settings."""
    row = _one(store, "SELECT credvault.vault_info()", (), "read the vault's facts")
    return dict(row[0])


def set_setting(store: PgStore, key: str, label: str, n: int) -> bool:
    """``config set`` (``set_setting``): False when refused (not an admin; audited)."""
    row = _one(store, "SELECT credvault.set_setting(%s, %s, %s)", (key, label, n), "config set")
    return bool(row[0])


def key_links(store: PgStore) -> dict[str, list[str]]:
    """Every member's signing-key links (``member_key_links()``), in order, by member."""
    out: dict[str, list[str]] = {}
    for member, _, link in _all(
        store, "SELECT member, seq, link FROM credvault.member_key_links()", "read key histories"
    ):
        out.setdefault(str(member), []).append(str(link))
    return out


def replace_keys(
    store: PgStore, link: str, sign_pub: bytes, kem_pub: bytes, verifier: str
) -> list[str]:
    """``passwd --compromised``: the hand-over link, the new login, this member's copies
    dropped and engagements flagged (one server transaction); returns those engagements."""
    row = _one(
        store,
        "SELECT credvault.replace_keys(%s, %s, %s, %s)",
        (link, sign_pub, kem_pub, verifier),
        "replace your keys",
    )
    return [str(x) for x in row[0]]
