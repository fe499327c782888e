"""The schema version a client supports, and the one check every connection makes.

Split from :mod:`credvault.postgres.server` (the schema's text, its installer, the owner's
bootstrap and SCRAM verifiers) so that ``credvault get`` on a team vault, whose start-up is
a target (issue 14), loads neither ``importlib.resources`` nor the installer: it needs the
version check, not the schema.
"""

from __future__ import annotations

from typing import Any

from credvault.errors import UnsupportedFormat

SCHEMA_VERSION = 2


def installed_version(conn: Any) -> int | None:
    """The schema version in the connected database, or None if there is none yet."""
    row = conn.execute("SELECT to_regclass('credvault.schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    got = conn.execute("SELECT version FROM credvault.schema_version").fetchone()
    return int(got[0]) if got else None


def unsupported(version: int) -> UnsupportedFormat:
    """The one line for a database at ``version`` (another than :data:`SCHEMA_VERSION`)."""
    if version < SCHEMA_VERSION:
        return UnsupportedFormat(
            f"credvault schema version {version} is older than this credvault's "
            f"({SCHEMA_VERSION}): the database owner runs `credvault init --upgrade-schema`"
        )
    return UnsupportedFormat(
        f"credvault schema version {version} is not supported by this credvault "
        f"(supports {SCHEMA_VERSION})"
    )


def check_schema(conn: Any) -> int:
    """Refuse, in one line, a database whose schema this credvault does not support."""
    version = installed_version(conn)
    if version is None:
        raise UnsupportedFormat("no credvault schema in this database (the owner runs setup first)")
    if version != SCHEMA_VERSION:
        raise unsupported(version)
    return version
