"""Server side of the PostgreSQL backend: the versioned schema and its installer.

The schema (``schema.sql`` beside this file: tables, roles, row-level security and the
SECURITY DEFINER functions) is applied only by the database's owner role, inside one
transaction that first takes a transaction-scoped advisory lock, so two installers racing
cannot both create it and a half-applied schema never commits. A client that finds a
version it was not written for refuses with one line rather than guessing
(:mod:`credvault.postgres.version`, re-exported here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from importlib import resources
from typing import Any

from credvault.errors import AccessDenied, InvalidInput

# the version check lives apart so that the read path loads none of this module; re-exported
from credvault.postgres.version import SCHEMA_VERSION as SCHEMA_VERSION
from credvault.postgres.version import check_schema as check_schema
from credvault.postgres.version import installed_version as installed_version
from credvault.postgres.version import unsupported

# pg_advisory_xact_lock key: "credvault" folded to 63 bits; any constant works, this one
# is unlikely to collide with another application's lock in the same database.
ADVISORY_LOCK = int.from_bytes(hashlib.sha256(b"credvault schema").digest()[:8], "big") >> 1
_IDENT = re.compile(r"\A[a-z][a-z0-9_]{0,40}\Z")


_CLOSE_TO_PUBLIC = (
    "REVOKE ALL ON ALL TABLES IN SCHEMA credvault FROM PUBLIC; "
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credvault FROM PUBLIC; "
    "REVOKE ALL ON ALL SEQUENCES IN SCHEMA credvault FROM PUBLIC"
)


def _schema_text(version: int) -> str:
    """The SQL that makes schema ``version``: ``schema.sql`` for 1, ``upgrade-N.sql`` after.

    Each upgrade file is written against the schema before it and never edited once
    released, so a database made by any earlier credvault reaches the same schema as a new
    one by running the files it lacks, in order.
    """
    name = "schema.sql" if version == 1 else f"upgrade-{version}.sql"
    return resources.files("credvault.postgres").joinpath(name).read_text("utf-8")


def bootstrap_sql(database: str, owner: str, verifier: str) -> str:
    """What the DBA (a superuser) runs once: the owner role and its database.

    The owner is deliberately not a superuser: it owns the schema and functions, makes one
    login role per member (CREATEROLE), ends a removed member's sessions
    (pg_signal_backend) and sees how far synchronous standbys have flushed
    (pg_read_all_stats, for ``fetch``). ``verifier`` is a SCRAM verifier, so no password travels.
    """
    for name in (database, owner):
        if not _IDENT.match(name):
            raise InvalidInput(f"not a plain PostgreSQL identifier: {name!r}")
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise InvalidInput("a SCRAM-SHA-256 verifier is required")
    return (
        f'CREATE ROLE "{owner}" LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION '
        f"PASSWORD '{verifier}';\n"
        f'GRANT pg_signal_backend TO "{owner}";\n'
        f'GRANT pg_read_all_stats TO "{owner}";\n'
        f'CREATE DATABASE "{database}" OWNER "{owner}";\n'
    )


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier for ``password`` (RFC 7677), made on this machine.

    Passed to ``CREATE/ALTER ROLE ... PASSWORD`` so the server (and its logs) only ever
    see the verifier, never the password itself.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def apply_schema(conn: Any, *, upto: int = SCHEMA_VERSION) -> bool:
    """Create or upgrade the schema as the database owner; False if it was already current.

    ``conn`` is a psycopg connection of the owner role, not in a transaction. Everything
    happens in one transaction under the advisory lock, so a half-applied upgrade never
    commits and two owners racing apply it once; a superuser is refused so the functions
    never end up owned by one (SECURITY DEFINER would then run as superuser). A database
    newer than this credvault is refused, never downgraded. An upgrade of an existing
    vault appends an ``upgrade`` entry (``schema N -> M``, by the owner role) to the team
    audit trail in the same transaction. ``upto`` exists for tests that
    need a database made by an earlier release.
    """
    row = conn.execute(
        "SELECT rolsuper, pg_get_userbyid(d.datdba) = current_user "
        "FROM pg_roles r, pg_database d WHERE r.rolname = current_user "
        "AND d.datname = current_database()"
    ).fetchone()
    conn.rollback()
    who = str(conn.info.user)
    if row is None or row[0]:
        raise AccessDenied(who, "apply the schema", None, "a superuser may not; use the owner role")
    if not row[1]:
        raise AccessDenied(who, "apply the schema", None, "only the database's owner role may")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        version = installed_version(conn) or 0
        if version > SCHEMA_VERSION:
            raise unsupported(version)
        if version >= upto:
            return False
        for step in range(version + 1, upto + 1):
            conn.execute(_schema_text(step))
            # PostgreSQL lets PUBLIC execute every function it creates, and members may use
            # the schema: whatever an upgrade adds is closed again here, so a member reaches
            # only what an upgrade grants the member group by name.
            conn.execute(_CLOSE_TO_PUBLIC)
            conn.execute("UPDATE credvault.schema_version SET version = %s", (step,))
        if version:  # an upgrade of a vault in use: on its trail, in the same transaction
            conn.execute(
                "SELECT credvault.audit_append(current_user, 'upgrade', NULL, NULL, 'ok', %s)",
                (f"schema {version} -> {upto}",),
            )
    return True


# Tables whose files may hold envelopes or sealed copies: rewritten after a purge.
PURGE_REWRITE = (
    "credvault.credentials",
    "credvault.systems",
    "credvault.grants",
    "credvault.read_requests",
    "credvault.rotation_requests",
    "credvault.engagements",
    # schema 2 (pgcmds): the trash, record read requests, earlier versions
    "credvault.system_trash",
    "credvault.record_requests",
    "credvault.credential_versions",
    "credvault.credential_trash",
    # schema 2 (pgrec): move requests (a credential's name in each engagement)
    "credvault.move_requests",
)


def rewrite_after_purge(owner_conn: Any) -> None:
    """As the owner: ``VACUUM FULL`` the tables a purge deleted from.

    A plain DELETE leaves the tuples' bytes in the table files until vacuumed, and plain
    VACUUM only marks the space reusable; VACUUM FULL writes new files without them. It
    cannot run inside a transaction or a function, so it is this separate step. WAL
    segments, replicas and backups still hold the old bytes until they expire
    (docs/team.md, "Purge").
    """
    if not owner_conn.autocommit:
        raise InvalidInput("VACUUM FULL needs an autocommit connection")
    for table in PURGE_REWRITE:
        owner_conn.execute(f"VACUUM FULL {table}")
