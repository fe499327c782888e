"""Client side of the PostgreSQL backend: connection settings and the member's own crypto.

Everything secret is made and checked here, on the member's machine, with the same
primitives as the SQLCipher vault: envelopes (:mod:`credvault.crypto.envelope`, the
value's place as associated data), engagement keys sealed to members' X25519 keys with
HPKE, Ed25519 signatures over every sealed copy. The server only stores and releases
bytes; it never sees an engagement key or a secret in clear.

:class:`TeamVault` is the minimal library client the server tests drive; the product path
(``Vault``-shaped, behind the CLI) is :mod:`credvault.team` over
:class:`credvault.postgres.store.PgStore`. Both use the statements of
:mod:`credvault.postgres.statements` (re-exported here), which are the SQLCipher vault's own
(:mod:`credvault.grants`), so a migrated signature verifies unchanged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.errors import AccessDenied, Conflict, InvalidInput, NotFound
from credvault.layout import is_team_target
from credvault.postgres.statements import copy_message as copy_message
from credvault.postgres.statements import creation_message as creation_message
from credvault.postgres.statements import role_message as role_message
from credvault.postgres.statements import seal_info as seal_info
from credvault.postgres.version import check_schema

TABLE = "credentials"


def is_postgres_target(target: str) -> bool:
    """Whether a ``--vault``/``CREDVAULT_VAULT`` value names a PostgreSQL vault
    (:func:`credvault.layout.is_team_target`)."""
    return is_team_target(target)


def connect(target: str, **kw: Any) -> Any:
    """Connect (libpq resolves PGSERVICE, ~/.pgpass, PGSSLMODE…), check the schema version.

    psycopg is imported here, never at module import, so nothing on the SQLCipher path
    pulls it in.
    """
    if not is_postgres_target(target):
        raise InvalidInput(f"not a PostgreSQL connection string: {target!r}")
    import psycopg

    kw.setdefault("autocommit", True)
    conn = psycopg.connect(target, **kw)
    try:
        check_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(frozen=True)
class Member:
    """A member's own keys, which live on their machine only."""

    name: str
    kem_private: bytes
    sign_private: bytes

    def __repr__(self) -> str:
        return f"Member({self.name!r})"  # never the keys


class TeamVault:
    """One member's connection to a team vault."""

    def __init__(self, conn: Any, me: Member) -> None:
        self.conn = conn
        self.me = me
        row = conn.execute("SELECT credvault.vault_id()").fetchone()
        self.vault_id = bytes(row[0])
        # opened engagement keys of this session, by engagement: a read then costs one
        # round trip; the server still checks the role at every release
        self._keys: dict[str, tuple[bytes, bytes, int]] = {}
        # the read's own cursor: its statement prepared once and results in binary (no hex
        # for the envelope on either side); ~20 % less client CPU per read than a new cursor
        # per statement (benchmarks/results/issue14-readpath-2026-11-30.txt)
        self._read = conn.cursor(binary=True)

    def __repr__(self) -> str:
        return f"TeamVault({self.me.name!r})"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TeamVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _engagement(self, name: str) -> tuple[bytes, int]:
        row = self.conn.execute(
            "SELECT uid, key_version FROM credvault.engagements WHERE name = %s", (name,)
        ).fetchone()
        if row is None:  # absent, or row-level security hides it: the same to a member
            raise NotFound("engagement", name)
        return bytes(row[0]), int(row[1])

    def _sign_pub(self, member: str) -> bytes:
        row = self.conn.execute(
            "SELECT sign_pub FROM credvault.members WHERE name = %s AND state = 'active'",
            (member,),
        ).fetchone()
        if row is None or row[0] is None:
            raise NotFound("member", member)
        return bytes(row[0])

    def engagement_key(self, name: str) -> tuple[bytes, bytes, int]:
        """(engagement uid, key, version): the caller's sealed copy, its signature checked
        against the sealer's published key, opened with the caller's private key."""
        uid, _ = self._engagement(name)
        row = self.conn.execute(
            "SELECT key_version, sealed, sealed_by, copy_sig FROM credvault.my_grant(%s)",
            (name,),
        ).fetchone()
        if row is None or row[1] is None:
            raise AccessDenied(self.me.name, "read", name, "no key copy")
        version, sealed, sealed_by, sig = int(row[0]), bytes(row[1]), str(row[2]), bytes(row[3])
        key = p.hpke_open(
            self.me.kem_private, sealed, seal_info(self.vault_id, uid, self.me.name, version)
        )
        p.verify(
            self._sign_pub(sealed_by),
            labels.GRANT_SIG,
            copy_message(self.vault_id, uid, self.me.name, version, sealed, key, sealed_by),
            sig,
            "engagement key copy",
        )
        return uid, key, version

    def seal_copy(
        self, eng_uid: bytes, member: str, version: int, key: bytes
    ) -> tuple[bytes, bytes]:
        """Seal ``key`` to ``member``'s published X25519 key and sign the copy."""
        row = self.conn.execute(
            "SELECT kem_pub FROM credvault.members WHERE name = %s AND state = 'active'",
            (member,),
        ).fetchone()
        if row is None or row[0] is None:
            raise NotFound("member", member)
        sealed = p.hpke_seal(bytes(row[0]), key, seal_info(self.vault_id, eng_uid, member, version))
        sig = p.sign(
            self.me.sign_private,
            labels.GRANT_SIG,
            copy_message(self.vault_id, eng_uid, member, version, sealed, key, self.me.name),
        )
        return sealed, sig

    def put(self, engagement: str, name: str, secret: bytes, kind: str = "password") -> None:
        """Seal ``secret`` here and store the envelope."""
        eng_uid, key, version = self.engagement_key(engagement)
        uid = os.urandom(16)
        env = envelope.seal(
            envelope.Place(self.vault_id, eng_uid, TABLE, uid, "secret"), secret, key, version
        )
        row = self.conn.execute(
            "SELECT credvault.put_credential(%s, %s, %s, %s, %s, %s)",
            (engagement, name, kind, uid, version, env),
        ).fetchone()
        if not row[0]:
            raise AccessDenied(self.me.name, "put", engagement, "refused by the server")

    def get(self, engagement: str, name: str, reason: str = "") -> bytes:
        """An audited read (``CALL credvault.read``: request, claim, release; the audit row
        committed and durable before the envelope leaves), opened here."""
        import psycopg

        for attempt in range(5):
            try:
                row = self._read.execute(
                    "CALL credvault.read(%s, %s, %s)", (engagement, name, reason), prepare=True
                ).fetchone()
                break
            except psycopg.errors.ObjectNotInPrerequisiteState:
                # the claim committed but not yet flushed on a synchronous standby (release
                # waited ~0.5 s): ask again, a new request
                time.sleep(0.005 * attempt)
            except psycopg.errors.SerializationFailure as e:
                # the row written since the request (section pinned): ask again, a new
                # request; the last time, say so
                if attempt == 4:
                    raise Conflict(f"{engagement}/{name} changed during the read: {e}") from None
                time.sleep(0.005 * attempt)
        else:
            raise AccessDenied(self.me.name, "read", engagement, "audit entry not durable")
        if row[0] is None:
            raise AccessDenied(self.me.name, "read", engagement, "refused by the server")
        row = (row[1], row[6], row[5])  # secret_env, uid, key_version
        cached = self._keys.get(engagement)
        if cached is None or cached[2] != int(row[2]):
            cached = self._keys[engagement] = self.engagement_key(engagement)
        eng_uid, key, _ = cached
        return envelope.open_(
            envelope.Place(self.vault_id, eng_uid, TABLE, bytes(row[1]), "secret"),
            bytes(row[0]),
            key,
        )
