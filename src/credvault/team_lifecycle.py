"""Operations on a PostgreSQL team vault beyond the daily commands (issue 14): the owner's
schema upgrade, and (below) an engagement's lifecycle and purge with its receipt.

Imported lazily by :class:`credvault.team.Team` (never by ``credvault get``), so the
SQLCipher path stays free of psycopg. Like :mod:`credvault.team`, it decides nothing the
server does not check again: the SECURITY DEFINER functions of ``upgrade-2.sql`` check the
caller's role and write the audit rows; this module makes and checks what must be made on
the member's machine (the purge receipt's signature above all).
"""

from __future__ import annotations

from typing import NamedTuple

from credvault.errors import UnsupportedFormat
from credvault.postgres.store import PgStore


class SchemaUpgrade(NamedTuple):
    """What ``credvault init --upgrade-schema`` did: the version before and after."""

    database: str
    before: int
    after: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade_schema(target: str) -> SchemaUpgrade:
    """As the database's owner (libpq's own login, as for ``init``): apply the upgrade
    files this database lacks, in one transaction under the advisory lock, audited on the
    team trail (``upgrade``). Refuses a database without a vault (run ``init``), a newer
    schema, a superuser and any role but the owner (exit 4)."""
    from credvault.postgres.server import SCHEMA_VERSION, apply_schema, installed_version

    owner = PgStore.connect(target, "owner", check=False)
    try:
        before = installed_version(owner.conn)
        owner.conn.rollback()
        if before is None:
            raise UnsupportedFormat(
                "no credvault schema in this database: make the vault with `credvault init`"
            )
        apply_schema(owner.conn)
        return SchemaUpgrade(owner.database(), before, SCHEMA_VERSION)
    finally:
        owner.close()
