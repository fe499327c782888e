"""PostgreSQL team backend (issue 14; docs/team.md).

Everything PostgreSQL lives in this package and imports ``psycopg`` (the optional extra
``credvault[postgres]``) only when a function here is called, so the SQLCipher path —
``credvault get`` above all — never loads it.
"""

from __future__ import annotations

from credvault.postgres.server import (
    SCHEMA_VERSION,
    apply_schema,
    bootstrap_sql,
    check_schema,
    scram_verifier,
)

__all__ = ["SCHEMA_VERSION", "apply_schema", "bootstrap_sql", "check_schema", "scram_verifier"]
