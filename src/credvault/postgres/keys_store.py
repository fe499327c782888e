"""The SQL of ``info``, ``receipt-keys`` and ``passwd --compromised`` on a team vault
(``upgrade-2.sql``, section pgkeys), beside :mod:`credvault.postgres.store`, whose
connection and error mapping it uses. Each call is one SECURITY DEFINER function; it
decides nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
    store: PgStore,
    link: str,
    sign_pub: bytes,
    kem_pub: bytes,
    verifier: str,
    kept: Sequence[tuple[str, int, bytes, bytes]] = (),
) -> list[str]:
    """``passwd --compromised``: the hand-over link, the new login, this member's copies
    dropped and engagements flagged (one server transaction); returns those engagements.
    ``kept``: (engagement, version, copy, signature) of the copies of the engagements they
    lead, sealed to the new key, put back in the same transaction (section succeed)."""
    row = _one(
        store,
        "SELECT credvault.replace_keys_kept(%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            link, sign_pub, kem_pub, verifier, [k[0] for k in kept], [k[1] for k in kept],
            [k[2] for k in kept], [k[3] for k in kept],
        ),
        "replace your keys",
    )  # fmt: skip
    return [str(x) for x in row[0]]


def rekeys(store: PgStore) -> list[Any]:
    """Every admin's certificate of a member's new keys (``member_rekeys()``, section
    pgcert), as :class:`credvault.team_log.RekeyRow`, unchecked."""
    from credvault.team_log import RekeyRow

    return [
        RekeyRow(str(m), int(s), bytes(sp), bytes(kp), str(c), bytes(ck), bytes(sig))
        for m, s, sp, kp, c, ck, sig in _all(
            store,
            "SELECT member, seq, sign_pub, kem_pub, certifier, certifier_key, signature "
            "FROM credvault.member_rekeys()",
            "read certificates of new keys",
        )
    ]


def key_handover(store: PgStore, member: str) -> tuple[int, bytes, bytes] | None:
    """(seq, sign_pub, kem_pub) of ``member``'s latest hand-over link, or None."""
    row = _one(
        store,
        "SELECT seq, sign_pub, kem_pub FROM credvault.member_key_handover(%s)",
        (member,),
        "read a key hand-over",
    )
    return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))


def certify_keys(
    store: PgStore,
    member: str,
    handover: tuple[int, bytes, bytes],
    certifier_key: bytes,
    signature: bytes,
    revocation: bytes,
    links: Sequence[tuple[str, bytes]] = (),
) -> int:
    """An admin's certificate of ``member``'s new keys, the revocation-list version
    naming the old ones and the ``succeed`` links re-pinning them (engagement, link), in
    one server transaction; returns that list version."""
    seq, sign_pub, kem_pub = handover
    row = _one(
        store,
        "SELECT credvault.certify_keys_logged(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            member, seq, sign_pub, kem_pub, certifier_key, signature, revocation,
            [e for e, _ in links], [link for _, link in links],
        ),
        "certify keys",
    )  # fmt: skip
    return int(row[0])


def retire_keys(store: PgStore, member: str, revocation: bytes) -> int:
    """An admin's client publishes the revocation-list version retiring the keys of a
    member whose hand-over it saw, not certified yet; returns that version."""
    row = _one(
        store,
        "SELECT credvault.retire_keys(%s, %s)",
        (member, revocation),
        "retire keys",
    )
    return int(row[0])
