"""PostgreSQL team backend (issue 14; docs/team.md).

Everything PostgreSQL lives in this package and imports ``psycopg`` (the optional extra
``credvault[postgres]``) only when a function here is called, so the SQLCipher path —
``credvault get`` above all — never loads it. The names below are loaded on first use
(PEP 562): a team vault's ``get`` imports this package for its libpq binding and the schema
version check, not for the schema installer (:mod:`credvault.postgres.server`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # as in credvault/__init__.py: typing is not imported for this

if TYPE_CHECKING:
    from typing import Any

    from credvault.postgres.server import apply_schema, bootstrap_sql, scram_verifier
    from credvault.postgres.version import SCHEMA_VERSION, check_schema

__all__ = ["SCHEMA_VERSION", "apply_schema", "bootstrap_sql", "check_schema", "scram_verifier"]

# name -> module that defines it
_LAZY = {
    "SCHEMA_VERSION": "credvault.postgres.version",
    "check_schema": "credvault.postgres.version",
    "apply_schema": "credvault.postgres.server",
    "bootstrap_sql": "credvault.postgres.server",
    "scram_verifier": "credvault.postgres.server",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562)."""
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'credvault.postgres' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
