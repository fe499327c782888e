"""An insider's toolkit: what any vault member can do with a SQL shell (issue 11).

Every member holds the database key (that is how they open the vault), so every member can
open ``vault.db`` directly and write any row, and keep copies of any file. This module does
exactly that and nothing more: it gets the insider's own keys the legitimate way (by
unlocking as them), then works on the raw SQLCipher connection. Its oracle,
:meth:`Insider.readable`, decides what the insider can decrypt *cryptographically*, using
only key copies sealed to them and keys they chose themselves: no library check is trusted.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlcipher3

from conftest import KDF, PASSWORDS, Clock
from credvault import Vault
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError
from credvault.keyslots import MemberKeys

ENVELOPE_COLUMNS = {
    "credentials": ("secret", "username", "url", "notes"),
    "systems": ("address", "details"),
}


class Insider:
    """A vault member at a SQL shell."""

    def __init__(self, path: Path, member: str, clock: Clock) -> None:
        self.path = path
        self.member = member
        with Vault.open(path, member, PASSWORDS[member], kdf=KDF, clock=clock) as v:
            self.db_key = bytes(v._s.db_key)
            self.keys: MemberKeys = v._s.keys
            self.vault_id = bytes(v._s.vault_id)
        self.chosen: list[bytes] = []  # keys the insider picked (planted) themselves

    # -- the SQL shell -----------------------------------------------------------------------
    def sql(self, query: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlcipher3.connect(str(self.path / "vault.db"))
        try:
            conn.execute(f"PRAGMA key = \"x'{self.db_key.hex()}'\"")
            rows = conn.execute(query, tuple(params)).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def engagement(self, name: str) -> tuple[int, bytes]:
        ((eid, uid),) = self.sql("SELECT id, uid FROM engagements WHERE name = ?", (name,))
        return int(eid), bytes(uid)

    # -- files -------------------------------------------------------------------------------
    def keep_copy(self, to: Path) -> Path:
        """A copy of the whole vault directory, as anyone with file access can keep."""
        shutil.copytree(self.path, to)
        return to

    def put_back(self, copy: Path) -> None:
        """Replace the live vault directory with an earlier copy (a rollback)."""
        for f in self.path.iterdir():
            if f.is_file():
                f.unlink()
        for f in copy.iterdir():
            shutil.copy2(f, self.path / f.name)

    # -- the oracle ----------------------------------------------------------------------------
    def keys_held(self) -> list[bytes]:
        """Every engagement key the insider can open from any copy addressed to them, at any
        version, plus the keys they chose."""
        out = list(self.chosen)
        for uid, version, sealed in self.sql(
            "SELECT e.uid, g.key_version, g.sealed FROM grants g "
            "JOIN engagements e ON e.id = g.engagement_id "
            "WHERE g.member = ? AND g.sealed IS NOT NULL",
            (self.member,),
        ):
            info = labels.encode(
                labels.SEAL_ENGAGEMENT_KEY, self.vault_id, bytes(uid), self.member, int(version)
            )
            with contextlib.suppress(IntegrityError):
                out.append(p.hpke_open(self.keys.kem_private, bytes(sealed), info))
        return out

    def readable(self, extra_keys: Iterable[bytes] = ()) -> set[bytes]:
        """Every envelope plaintext in the live database the insider can decrypt.

        An anchor envelope (format 0x02: a credential's secret, a system's address) is bound
        to its record's clear columns, which the insider reads from the same row
        (docs/format.md §4): built here from the document, not by the library."""
        keys = [*self.keys_held(), *extra_keys]
        found: set[bytes] = set()
        for table, fields in ENVELOPE_COLUMNS.items():
            cols = ", ".join(f"t.{f}_env" for f in fields)
            clear = (
                "t.name, t.kind, (SELECT uid FROM systems s WHERE s.id = t.system_id)"
                if table == "credentials"
                else "t.name, t.port, t.protocol"
            )
            for row in self.sql(
                f"SELECT e.uid, t.uid, {clear}, {cols} FROM {table} t "  # noqa: S608 - fixed names
                "JOIN engagements e ON e.id = t.engagement_id"
            ):
                eng_uid, rec_uid = bytes(row[0]), bytes(row[1])
                binding = bound_columns(table, row[2:5])
                for field, blob in zip(fields, row[5:], strict=True):
                    if blob is None:
                        continue
                    anchor = field == fields[0]
                    place = envelope.Place(
                        self.vault_id,
                        eng_uid,
                        table,
                        rec_uid,
                        field,
                        binding if anchor and bytes(blob)[:1] == b"\x02" else (),
                    )
                    for key in keys:
                        try:
                            found.add(envelope.open_(place, bytes(blob), key))
                        except IntegrityError:
                            continue
        return found


def bound_columns(table: str, clear: tuple[Any, ...]) -> tuple[bytes | str | int, ...]:
    """docs/format.md §4: the binding of a credential (name, kind, linked system's uid or
    empty) or of a system (name, port or 0, protocol or empty)."""
    if table == "credentials":
        name, kind, system_uid = clear
        return ("credential", name, kind, b"" if system_uid is None else bytes(system_uid))
    name, port, protocol = clear
    return ("system", name, 0 if port is None else port, protocol or "")
