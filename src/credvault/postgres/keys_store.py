"""The SQL of ``info`` and ``receipt-keys`` on a team vault (``upgrade-2.sql``, section
pgkeys), beside :mod:`credvault.postgres.store`, whose connection and error mapping it uses.
Each call is one SECURITY DEFINER function; it decides nothing.
"""

from __future__ import annotations

from typing import Any

from credvault.postgres.store import PgStore


def vault_info(store: PgStore) -> dict[str, Any]:
    """The server's facts for ``info``: schema, created_at, members, the settings."""
    row = store._one("SELECT credvault.vault_info()", action="read the vault's facts")
    return dict(row[0])
