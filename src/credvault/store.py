"""The SQLCipher store: the only module with SQL and the only ``import sqlcipher3``.

Opens the database with a validated raw 256-bit key, sets and then *checks* the pragmas the
design relies on (refusing to run otherwise), starts every write with ``BEGIN IMMEDIATE``
(a deferred read lock upgraded to a write lock fails at once with "database is locked",
whatever the busy timeout), and turns SQLCipher's errors into credvault's without echoing
SQL text, which could carry the key.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlcipher3

from credvault.errors import CredvaultError, IntegrityError, NotAVault, StoreError
from credvault.model import (
    HISTORY_SEALED,
    SEALED_FIELDS,
    AuditRow,
    CredentialRow,
    CredentialUpdate,
    Engagement,
    Grant,
    NewCredential,
    NewEngagement,
    NewSystem,
    NewVersion,
    SealedRow,
    SystemRow,
    TrashEntry,
    VersionRow,
)
from credvault.validate import KINDS

FORMAT_VERSION = 3
BUSY_TIMEOUT_S = 30.0
MIN_DB_SIZE = 1024  # a real vault database is several 4 KiB pages
_RAW_KEY = re.compile(r"\A[0-9a-f]{64}\Z")

Row = tuple[Any, ...]

__all__ = [
    "BUSY_TIMEOUT_S",
    "FORMAT_VERSION",
    "MIGRATIONS",
    "MIN_DB_SIZE",
    "Row",
    "Store",
    "StoreError",  # defined in errors; re-exported for existing importers
    "translate",
]


# Format upgrades, the one place the schema changes after format 1 (schema.sql): the DDL
# that turns format N-1 into format N. ``init`` applies them all after schema.sql; opening
# an older vault applies the missing ones in one transaction (``Vault`` takes a backup
# first and audits it). Never edit a released step: add the next one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Format 2: credential history and the trash (docs/format.md).
    2: (
        # The live row's version number, who wrote it and what that write changed.
        "ALTER TABLE credentials ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE credentials ADD COLUMN updated_by TEXT",
        "ALTER TABLE credentials ADD COLUMN changed TEXT NOT NULL DEFAULT 'created'",
        # Earlier versions of a credential, each sealed at its own place
        # (credential_versions, credential uid, "field/vN"), rotated and purged with the
        # engagement. Keyed by the credential's uid so they follow it into the trash.
        """CREATE TABLE credential_versions (
            id             INTEGER PRIMARY KEY,
            engagement_id  INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
            credential_uid BLOB NOT NULL,
            version        INTEGER NOT NULL,
            name           TEXT NOT NULL,
            kind           TEXT NOT NULL,
            system         TEXT,
            secret_env     BLOB NOT NULL,
            username_env   BLOB,
            url_env        BLOB,
            notes_env      BLOB,
            created_at     TEXT NOT NULL,
            created_by     TEXT,
            changed        TEXT NOT NULL,
            UNIQUE (credential_uid, version)
        )""",
        "CREATE INDEX credential_versions_engagement ON credential_versions (engagement_id)",
        # Removed credentials and systems, recoverable until expires_at (or the purge).
        # Same columns and envelopes as the live rows (whose places they keep: a row is
        # either live or here, never both).
        """CREATE TABLE credential_trash (
            id            INTEGER PRIMARY KEY,
            uid           BLOB NOT NULL UNIQUE,
            engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
            name          TEXT NOT NULL,
            kind          TEXT NOT NULL,
            system_id     INTEGER REFERENCES systems (id) ON DELETE SET NULL,
            secret_env    BLOB NOT NULL,
            username_env  BLOB,
            url_env       BLOB,
            notes_env     BLOB,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL,
            version       INTEGER NOT NULL,
            updated_by    TEXT,
            changed       TEXT NOT NULL,
            deleted_at    TEXT NOT NULL,
            deleted_by    TEXT NOT NULL,
            expires_at    TEXT NOT NULL
        )""",
        "CREATE INDEX credential_trash_name ON credential_trash (engagement_id, name)",
        "CREATE INDEX credential_trash_expiry ON credential_trash (expires_at)",
        """CREATE TABLE system_trash (
            id            INTEGER PRIMARY KEY,
            uid           BLOB NOT NULL UNIQUE,
            engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
            name          TEXT NOT NULL,
            port          INTEGER,
            protocol      TEXT,
            address_env   BLOB NOT NULL,
            details_env   BLOB,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL,
            linked        TEXT NOT NULL DEFAULT '[]',
            deleted_at    TEXT NOT NULL,
            deleted_by    TEXT NOT NULL,
            expires_at    TEXT NOT NULL
        )""",
        "CREATE INDEX system_trash_name ON system_trash (engagement_id, name)",
        "CREATE INDEX system_trash_expiry ON system_trash (expires_at)",
    ),
    # Format 3 (issue 11): record binding and the signed membership logs. Record binding:
    # envelopes of format 0x02 bind a record's clear columns (names, kind, system link,
    # port, protocol) in the AAD of its anchor envelope;
    # records of an upgraded vault are bound at their next write or their engagement's next
    # key rotation, which records here the key version from which every record is bound
    # (docs/format.md §4). No envelope changes here (the upgrade needs no engagement key):
    # every engagement is marked for rotation instead, which the next lead to open the
    # vault carries out, binding all its records.
    3: (
        """CREATE TABLE record_binding (
            engagement_id INTEGER PRIMARY KEY REFERENCES engagements (id) ON DELETE CASCADE,
            key_version   INTEGER NOT NULL
        )""",
        "UPDATE engagements SET needs_rotation = 1 WHERE state != 'purged'",
        # The signed membership log of each engagement (docs/format.md §17).
        # Link ``seq`` of the engagement's log, exactly as signed. Kept after a purge (the
        # tombstone's history of who could read); nothing but an append ever writes here.
        """CREATE TABLE member_log (
            engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
            seq           INTEGER NOT NULL CHECK (seq >= 0),
            link          BLOB NOT NULL,
            PRIMARY KEY (engagement_id, seq)
        ) WITHOUT ROWID""",
        # A member's own verified replay of a long log, MACed under a key only they hold
        # (docs/format.md §17): a fresh process verifies only the links after it.
        """CREATE TABLE member_state (
            member        TEXT NOT NULL,
            engagement_id INTEGER NOT NULL REFERENCES engagements (id) ON DELETE CASCADE,
            state         BLOB NOT NULL,
            mac           BLOB NOT NULL,
            PRIMARY KEY (member, engagement_id)
        ) WITHOUT ROWID""",
    ),
}


# The clear columns each table's anchor envelope is bound to (items.binding_of), and
# the join that gives a credential's link as the system's uid.
_BOUND_COLS: dict[str, tuple[str, str]] = {
    "credentials": ("t.name, t.kind, s.uid", "LEFT JOIN systems s ON s.id = t.system_id"),
    "credential_trash": ("t.name, t.kind, s.uid", "LEFT JOIN systems s ON s.id = t.system_id"),
    "systems": ("t.name, t.port, t.protocol", ""),
    "system_trash": ("t.name, t.port, t.protocol", ""),
}


def _sealed(table: str) -> tuple[str, ...]:
    if table in SEALED_FIELDS:
        return SEALED_FIELDS[table]
    return HISTORY_SEALED[table]


def _key_literal(key: bytes) -> str:
    """``x'<64 hex>'``: anything else SQLCipher would silently treat as a passphrase."""
    if len(key) != 32:
        raise ValueError("database key must be 32 bytes")
    hexkey = key.hex()
    if not _RAW_KEY.match(hexkey):  # pragma: no cover - bytes.hex() always matches
        raise ValueError("malformed raw key")
    return f"PRAGMA key = \"x'{hexkey}'\""


#: Free space below which an unexplained "disk I/O error" is taken to be a full disk. SQLite
#: writes a page (or, growing its shared-memory index, one byte per 4 KiB) at a time, so a
#: write that hit ENOSPC leaves well under this free; a real I/O error on a disk with more
#: room stays an I/O error, however large the vault.
NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(path: Path | None) -> bool:
    """Is the file system holding ``path`` (about) out of space for this process?

    SQLite reports ENOSPC as SQLITE_FULL only from its page writes; when growing the
    shared-memory index, a size hint or a sync hits it, the error is a bare "disk I/O error"
    (this build gives no extended code or errno). The free space of the file system the
    file lives on (its nearest existing directory: ``statvfs``) tells a full disk from a
    failing one. Root may use the blocks reserved for it, so for root those count as free.
    """
    if path is None:
        return False
    where = path.parent
    while not where.is_dir() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < NEARLY_FULL_BYTES


def translate(
    exc: BaseException, what: str = "database", path: Path | None = None
) -> CredvaultError:
    """Map a SQLCipher error to credvault's, without its text when that may hold SQL."""
    msg = str(exc)
    if isinstance(exc, sqlcipher3.IntegrityError):
        return StoreError(f"{what}: constraint failed")
    if "file is not a database" in msg or "malformed" in msg or "HMAC" in msg:
        return IntegrityError(f"{what} is corrupt, tampered with, or the key does not match")
    if ("disk" in msg and "full" in msg) or (msg == "disk I/O error" and _nearly_full(path)):
        # SQLite reports a write that found no space as "disk I/O error" when it was the
        # shared-memory index or a sync that failed: the free space tells the two apart
        # (a full disk is never "corrupt": exit 6 means tampering or corruption only).
        where = f" (no space left for {path} and its journal)" if path is not None else ""
        return StoreError(f"{what}: disk full{where}")
    if msg == "disk I/O error":
        return StoreError(f"{what}: I/O error" + (f" on {path}" if path is not None else ""))
    if "locked" in msg or "busy" in msg:
        return StoreError(f"{what} is busy (locked by another process for too long)")
    if "readonly" in msg or "read-only" in msg:
        return StoreError(f"{what} is read-only")
    if "unable to open" in msg:
        return NotAVault(f"cannot open {what}")
    # Trigger/raise messages are ours or the test's; other texts may embed SQL: hide them.
    return StoreError(f"{what} error ({type(exc).__name__})")


_CREATE_TABLE = re.compile(r"\s*CREATE TABLE (\w+)")


def _whole(value: object) -> int:
    """An INTEGER column's value, strictly (SQLite would hand back text or a real)."""
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


class Store:
    """An open vault database."""

    def __init__(self, conn: Any, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.damaged = False  # a page failed its MAC on this connection
        self._batch = 0  # > 0 inside batch(): write() nests as a savepoint
        # Called after each top-level COMMIT (the member's witness advances there: a
        # position is recorded only once it is durable in the database).
        self.on_commit: Callable[[], None] | None = None
        # What the open write transaction did, for ``on_commit`` (the witness): the last
        # audit entry it appended, and whether it changed anything else a witness follows
        # (a membership-log link, an audit prune). Reset at every BEGIN.
        self.tx_audit_head: tuple[int, bytes] | None = None
        self.tx_other_chains = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, key: bytes, *, create: bool = False) -> Store:
        if not create:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise NotAVault(f"{path.parent} is not a credvault vault (no database)") from None
            if size < MIN_DB_SIZE:  # SQLite would silently start an empty database here
                raise IntegrityError("the vault database is truncated or empty")
        try:
            conn = sqlcipher3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlcipher3.Error as e:
            raise translate(e, path=path) from None
        try:
            conn.execute("PRAGMA cipher_log_level = NONE")  # no SQLCipher noise on stderr
            conn.execute(_key_literal(key))
            if create:  # only before the file's first page is written does this take effect
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # First page access: a wrong key or a damaged page 1 fails here.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            if not create and path.stat().st_size % page:
                raise IntegrityError("the vault database is truncated (partial page)")
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")
            store = cls(conn, path)
            store._check_pragmas(mode)
        except sqlcipher3.Error as e:
            conn.close()
            raise translate(e, path=path) from None
        except BaseException:
            conn.close()
            raise
        return store

    def _check_pragmas(self, mode: str) -> None:
        """Refuse to run with a weaker configuration than the design assumes."""
        want = {
            "synchronous": 2,
            "secure_delete": 1,
            "foreign_keys": 1,
            "temp_store": 2,
            "cipher_use_hmac": "1",
            "cipher_plaintext_header_size": "0",
        }
        for pragma, expected in want.items():
            got = self.conn.execute(f"PRAGMA {pragma}").fetchone()
            if got is None or got[0] != expected:
                raise StoreError(f"refusing to run: PRAGMA {pragma} is not {expected}")
        if mode != "wal":
            raise StoreError("refusing to run: the database is not in WAL mode")

    def close(self) -> None:
        self.conn.close()

    # -- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around several operations' writes: one commit (one fsync) for all.

        The agent's group commit. Inside, each :meth:`write` is a savepoint: it undoes its own
        changes if it fails, and nothing is durable before the batch commits, so results must
        not leave the process before this returns.
        """
        with self.write():
            self._batch += 1
            try:
                yield
            finally:
                self._batch -= 1

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        name = f"w{self._batch}"
        self._batch += 1
        try:
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlcipher3.Error):
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                raise
            self.conn.execute(f"RELEASE {name}")
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        finally:
            self._batch -= 1

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction, ``BEGIN IMMEDIATE`` so it waits rather than failing."""
        if self._batch:
            with self._savepoint():
                yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        self.tx_audit_head, self.tx_other_chains = None, False
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlcipher3.Error):
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlcipher3.Error as e:
            with contextlib.suppress(sqlcipher3.Error):
                self.conn.execute("ROLLBACK")
            raise self._translate(e) from None
        if self.on_commit is not None:
            self.on_commit()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """A read snapshot (deferred; never upgraded to a write)."""
        try:
            self.conn.execute("BEGIN")
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlcipher3.Error):
                self.conn.execute("COMMIT")

    def _translate(self, e: BaseException) -> CredvaultError:
        """:func:`translate`, remembering damage: after a page failed its MAC, SQLCipher
        refuses later writes as "read-only"; that is the same damage, not a read-only disk."""
        err = translate(e, path=self.path)
        if isinstance(err, IntegrityError):
            self.damaged = True
        elif self.damaged and "read-only" in str(err):
            return IntegrityError("database is corrupt, tampered with, or the key does not match")
        return err

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.conn.execute(sql, params)
        except sqlcipher3.Error as e:
            raise self._translate(e) from None

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:  # a damaged page can surface while fetching, not only while executing
            row: Row | None = self.conn.execute(sql, params).fetchone()
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        return row

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows: list[Row] = self.conn.execute(sql, params).fetchall()
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        return rows

    # -- schema and meta ------------------------------------------------------------------
    def create_schema(self) -> None:
        from importlib import resources  # only at init: it costs ~4 ms of import time

        ddl = resources.files("credvault").joinpath("schema.sql").read_text()
        try:
            self.conn.executescript(ddl)
        except sqlcipher3.Error as e:
            raise self._translate(e) from None
        with self.write():
            self.migrate(1)

    def schema_format(self) -> int:
        """The format the tables are in, whatever ``meta`` claims: the newest step of
        :data:`MIGRATIONS` whose tables all exist (1 if none). A step half there is
        tampering or corruption (a migration is one transaction)."""
        tables = {
            str(r[0]) for r in self._all("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        fmt = 1
        for version, stmts in sorted(MIGRATIONS.items()):
            made = {m.group(1) for st in stmts if (m := _CREATE_TABLE.match(st))}
            if made and made <= tables:
                fmt = version
            elif made & tables:
                raise IntegrityError(f"vault database has part of format {version}'s tables")
        return fmt

    def migrate(self, from_version: int) -> list[int]:
        """Apply the format steps after ``from_version`` (inside the caller's transaction)."""
        done = []
        for version in range(from_version + 1, FORMAT_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                self._x(stmt)
            done.append(version)
        return done

    def get_meta(self, key: str) -> Any:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self._x(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def all_meta(self) -> dict[str, Any]:
        return dict(self._all("SELECT key, value FROM meta"))

    # -- engagements ----------------------------------------------------------------------
    ENG_COLS = (
        "id, uid, name, client, state, key_version, key_fp, needs_rotation, require_reason, grace_days, "
        "created_at, created_by, lead, creation_sig, closed_at, purge_due, hold_until, "
        "hold_reason, hold_by, purged_at, receipt"
    )

    def insert_engagement(self, e: NewEngagement) -> int:
        return int(
            self._x(
                "INSERT INTO engagements (uid, name, client, state, key_version, key_fp, "
                "require_reason, grace_days, created_at, created_by, lead, creation_sig) "
                "VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    e.uid,
                    e.name,
                    e.client,
                    1 if e.key_fp else 0,  # no fingerprint: no key until the first lead's
                    e.key_fp,
                    int(e.require_reason),
                    e.grace_days,
                    e.created_at,
                    e.created_by,
                    e.lead,
                    e.creation_sig,
                ),
            ).lastrowid
        )

    def set_engagement_key(self, eng_id: int, version: int, key_fp: str) -> None:
        """A rotation's new key version (and no rotation pending any more)."""
        self._x(
            "UPDATE engagements SET key_version = ?, key_fp = ?, needs_rotation = 0 WHERE id = ?",
            (version, key_fp, eng_id),
        )

    def mark_needs_rotation(self, eng_id: int) -> None:
        self._x("UPDATE engagements SET needs_rotation = 1 WHERE id = ?", (eng_id,))

    def set_require_reason(self, eng_id: int, require: bool) -> None:
        self._x("UPDATE engagements SET require_reason = ? WHERE id = ?", (int(require), eng_id))

    def close_engagement(
        self, eng_id: int, closed_at: str, grace_days: int | None, purge_due: str
    ) -> None:
        """State ``closed``; ``grace_days`` None keeps the engagement's own setting."""
        self._x(
            "UPDATE engagements SET state = 'closed', closed_at = ?, "
            "grace_days = coalesce(?, grace_days), purge_due = ? WHERE id = ?",
            (closed_at, grace_days, purge_due, eng_id),
        )

    def set_hold(
        self,
        eng_id: int,
        until: str | None,
        reason: str | None,
        by: str | None,
        purge_due: str,
    ) -> None:
        """Set (or, with Nones, lift) a retention hold, with the purge date it implies."""
        self._x(
            "UPDATE engagements SET hold_until = ?, hold_reason = ?, hold_by = ?, purge_due = ? "
            "WHERE id = ?",
            (until, reason, by, purge_due, eng_id),
        )

    def set_purge_due(self, eng_id: int, purge_due: str) -> None:
        self._x("UPDATE engagements SET purge_due = ? WHERE id = ?", (purge_due, eng_id))

    def mark_purged(self, eng_id: int, purged_at: str, receipt: str) -> None:
        """The tombstone: state ``purged``, its signed receipt, nothing due or pending."""
        self._x(
            "UPDATE engagements SET state = 'purged', purged_at = ?, receipt = ?, "
            "purge_due = NULL, needs_rotation = 0 WHERE id = ?",
            (purged_at, receipt, eng_id),
        )

    def replace_receipt(self, eng_id: int, receipt: str) -> None:
        """A purge completed later: its receipt, re-signed with the time of completion."""
        self._x("UPDATE engagements SET receipt = ? WHERE id = ?", (receipt, eng_id))

    @staticmethod
    def _engagement(r: Row) -> Engagement:
        """One row of ``ENG_COLS`` as a record."""
        return Engagement(
            int(r[0]),
            bytes(r[1]),
            r[2],
            r[3],
            r[4],
            int(r[5]),
            r[6],
            bool(r[7]),
            bool(r[8]),
            r[9],
            r[10],
            r[11],
            r[12],
            bytes(r[13]),
            r[14],
            r[15],
            r[16],
            r[17],
            r[18],
            r[19],
            r[20],
        )

    def engagement_by_name(self, name: str) -> Engagement | None:
        row = self._one(f"SELECT {self.ENG_COLS} FROM engagements WHERE name = ?", (name,))  # noqa: S608
        return None if row is None else self._engagement(row)

    def engagements(self, client: str | None = None) -> list[Engagement]:
        if client is None:
            rows = self._all(f"SELECT {self.ENG_COLS} FROM engagements ORDER BY name")  # noqa: S608
        else:
            rows = self._all(
                f"SELECT {self.ENG_COLS} FROM engagements WHERE client = ? ORDER BY name",  # noqa: S608
                (client,),
            )
        return [self._engagement(r) for r in rows]

    def due_engagements(self, now: str) -> list[Engagement]:
        rows = self._all(
            f"SELECT {self.ENG_COLS} FROM engagements "  # noqa: S608
            "WHERE state = 'closed' AND purge_due <= ? ORDER BY purge_due",
            (now,),
        )
        return [self._engagement(r) for r in rows]

    def anything_due(self, now: str) -> bool:
        """One indexed probe each: what every open pays when nothing is due."""
        return (
            self._one(
                "SELECT 1 FROM engagements WHERE state = 'closed' AND purge_due <= ? LIMIT 1",
                (now,),
            )
            is not None
            or self._one(
                "SELECT 1 FROM grants WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "AND revoked_at IS NULL LIMIT 1",
                (now,),
            )
            is not None
            or self.anything_in_trash_due(now)
        )

    def engagements_needing_rotation(self) -> list[str]:
        return [
            str(r[0])
            for r in self._all(
                "SELECT name FROM engagements WHERE needs_rotation = 1 AND state != 'purged'"
            )
        ]

    def receipts_matching(self, fragment: str) -> list[tuple[int, str]]:
        """(engagement id, receipt) of the receipts whose text contains ``fragment``."""
        return [
            (int(r[0]), str(r[1]))
            for r in self._all(
                "SELECT id, receipt FROM engagements WHERE instr(receipt, ?) > 0", (fragment,)
            )
        ]

    def export_digests(self, engagement: str) -> list[dict[str, str]]:
        """Client exports of ``engagement`` still in the trail: when, and the SHA-256 of
        the export file (as recorded by the export)."""
        out = []
        for ts, detail in self._all(
            "SELECT ts, detail FROM audit WHERE engagement = ? AND action = 'export' "
            "AND outcome = 'ok' ORDER BY seq",
            (engagement,),
        ):
            _, sep, digest = str(detail).rpartition("sha256 ")
            if sep and len(digest) == 64:
                out.append({"at": str(ts), "sha256": digest})
        return out

    def purged_receipts(self) -> list[tuple[str, str]]:
        """(engagement, receipt JSON) of every purged engagement."""
        return [
            (str(r[0]), str(r[1]))
            for r in self._all(
                "SELECT name, receipt FROM engagements WHERE receipt IS NOT NULL ORDER BY name"
            )
        ]

    def count_engagement_items(self, eng_id: int) -> tuple[int, int]:
        c = self._one("SELECT count(*) FROM credentials WHERE engagement_id = ?", (eng_id,))
        s = self._one("SELECT count(*) FROM systems WHERE engagement_id = ?", (eng_id,))
        return (int(c[0]) if c else 0, int(s[0]) if s else 0)

    def count_engagement_history(self, eng_id: int) -> tuple[int, int, int]:
        """(earlier versions, trashed credentials, trashed systems) of an engagement."""
        counts = []
        for table in ("credential_versions", "credential_trash", "system_trash"):
            r = self._one(f"SELECT count(*) FROM {table} WHERE engagement_id = ?", (eng_id,))  # noqa: S608
            counts.append(int(r[0]) if r else 0)
        return counts[0], counts[1], counts[2]

    def destroy_engagement_contents(self, eng_id: int) -> None:
        for table in (
            "credential_versions",
            "credential_trash",
            "system_trash",
            "credentials",
            "systems",
            "grants",
        ):
            self._x(f"DELETE FROM {table} WHERE engagement_id = ?", (eng_id,))  # noqa: S608

    # -- grants ---------------------------------------------------------------------------
    GRANT_COLS = (
        "member, role, granted_by, granted_at, expires_at, role_sig, key_version, "
        "sealed, sealed_by, copy_sig, revoked_at"
    )

    @staticmethod
    def _grant(r: Row) -> Grant:
        """One row of ``GRANT_COLS`` as a record."""
        return Grant(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            bytes(r[5]),
            r[6],
            None if r[7] is None else bytes(r[7]),
            r[8],
            None if r[9] is None else bytes(r[9]),
            r[10],
        )

    def grants(self, eng_id: int) -> list[Grant]:
        rows = self._all(
            f"SELECT {self.GRANT_COLS} FROM grants WHERE engagement_id = ? "  # noqa: S608
            "ORDER BY member",
            (eng_id,),
        )
        return [self._grant(r) for r in rows]

    def grant_of(self, eng_id: int, member: str) -> Grant | None:
        row = self._one(
            f"SELECT {self.GRANT_COLS} FROM grants "  # noqa: S608
            "WHERE engagement_id = ? AND member = ?",
            (eng_id, member),
        )
        return None if row is None else self._grant(row)

    def grant_holders(self) -> list[str]:
        return [
            str(r[0])
            for r in self._all("SELECT DISTINCT member FROM grants WHERE revoked_at IS NULL")
        ]

    def grants_of_member(self, member: str) -> list[tuple[int, str]]:
        return [
            (int(r[0]), str(r[1]))
            for r in self._all(
                "SELECT engagement_id, role FROM grants WHERE member = ? AND revoked_at IS NULL",
                (member,),
            )
        ]

    def put_grant(self, eng_id: int, g: Grant) -> None:
        """Insert or replace the grant of ``g.member`` (columns in ``GRANT_COLS`` order)."""
        self._x(
            f"INSERT OR REPLACE INTO grants (engagement_id, {self.GRANT_COLS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (eng_id, *g),
        )

    def set_key_copy(
        self,
        eng_id: int,
        member: str,
        key_version: int,
        sealed: bytes,
        sealed_by: str,
        copy_sig: bytes,
    ) -> None:
        self._x(
            "UPDATE grants SET key_version = ?, sealed = ?, sealed_by = ?, copy_sig = ? "
            "WHERE engagement_id = ? AND member = ?",
            (key_version, sealed, sealed_by, copy_sig, eng_id, member),
        )

    def set_role_sig(self, eng_id: int, member: str, granted_by: str, role_sig: bytes) -> None:
        self._x(
            "UPDATE grants SET granted_by = ?, role_sig = ? WHERE engagement_id = ? AND member = ?",
            (granted_by, role_sig, eng_id, member),
        )

    def drop_key_copy(self, eng_id: int, member: str) -> None:
        """Remove a member's sealed copy, keeping the grant (a copy sealed to keys they no
        longer hold; the engagement's next rotation seals them a new one)."""
        self._x(
            "UPDATE grants SET sealed = NULL, copy_sig = NULL, sealed_by = NULL, "
            "key_version = NULL WHERE engagement_id = ? AND member = ?",
            (eng_id, member),
        )

    def set_creation_sig(self, eng_id: int, sig: bytes) -> None:
        self._x("UPDATE engagements SET creation_sig = ? WHERE id = ?", (sig, eng_id))

    def revoke_grant(self, eng_id: int, member: str, when: str) -> None:
        """Drop the key copy but keep the signed role record, so what it signed still chains."""
        self._x(
            "UPDATE grants SET sealed = NULL, copy_sig = NULL, sealed_by = NULL, "
            "key_version = NULL, revoked_at = ? WHERE engagement_id = ? AND member = ?",
            (when, eng_id, member),
        )

    def expired_grants(self, now: str) -> list[tuple[int, str]]:
        return [
            (int(r[0]), str(r[1]))
            for r in self._all(
                "SELECT engagement_id, member FROM grants WHERE expires_at IS NOT NULL "
                "AND expires_at <= ? AND revoked_at IS NULL",
                (now,),
            )
        ]

    def set_copy(
        self, eng_id: int, member: str, key_version: int | None, sealed: bytes | None, by: str
    ) -> None:
        """A membership-log engagement's copy of its key for ``member`` (None: drop it).

        No copy signature: the membership log commits to each version's fingerprint, and a
        copy without one is refused by the pre-log rules too (docs/security.md §12)."""
        self._x(
            "UPDATE grants SET key_version = ?, sealed = ?, sealed_by = ?, copy_sig = NULL "
            "WHERE engagement_id = ? AND member = ?",
            (key_version, sealed, by if sealed is not None else None, eng_id, member),
        )

    # -- membership log -------------------------------------------------------------------
    def log_links(self, eng_id: int, after: int = -1) -> list[bytes]:
        """The links of ``eng_id``'s membership log after ``after``, in order."""
        return [
            bytes(r[0])
            for r in self._all(
                "SELECT link FROM member_log WHERE engagement_id = ? AND seq > ? ORDER BY seq",
                (eng_id, after),
            )
        ]

    def log_head(self, eng_id: int) -> tuple[int, bytes] | None:
        """(seq, link) of the last link, or None for an engagement without a log."""
        r = self._one(
            "SELECT seq, link FROM member_log WHERE engagement_id = ? ORDER BY seq DESC LIMIT 1",
            (eng_id,),
        )
        return None if r is None else (int(r[0]), bytes(r[1]))

    def append_link(self, eng_id: int, seq: int, link: bytes) -> None:
        """Store link ``seq`` (a second writer of the same position fails on the key)."""
        self._x(
            "INSERT INTO member_log (engagement_id, seq, link) VALUES (?, ?, ?)",
            (eng_id, seq, link),
        )
        self.tx_other_chains = True

    def member_state(self, member: str, eng_id: int) -> tuple[bytes, bytes] | None:
        """(state, mac) ``member`` kept of ``eng_id``'s replayed log, if any."""
        r = self._one(
            "SELECT state, mac FROM member_state WHERE member = ? AND engagement_id = ?",
            (member, eng_id),
        )
        return None if r is None else (bytes(r[0]), bytes(r[1]))

    def put_member_state(self, member: str, eng_id: int, state: bytes, mac: bytes) -> None:
        """Keep ``member``'s verified state (its own transaction)."""
        with self.write():
            self._x(
                "INSERT INTO member_state (member, engagement_id, state, mac) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (member, engagement_id) DO UPDATE SET "
                "state = excluded.state, mac = excluded.mac",
                (member, eng_id, state, mac),
            )

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction (read or write) is open on this connection."""
        return bool(self.conn.in_transaction)

    def log_heads(self) -> list[tuple[bytes, int, bytes]]:
        """(engagement uid, seq, link) of every engagement's last link."""
        return [
            (bytes(r[0]), int(r[1]), bytes(r[2]))
            for r in self._all(
                "SELECT e.uid, l.seq, l.link FROM member_log l "
                "JOIN engagements e ON e.id = l.engagement_id "
                "WHERE l.seq = (SELECT max(seq) FROM member_log m "
                "WHERE m.engagement_id = l.engagement_id)"
            )
        ]

    def log_link_at(self, eng_uid: bytes, seq: int) -> bytes | None:
        """Link ``seq`` of the log of the engagement with ``eng_uid`` (the witness's fork
        check), or None."""
        r = self._one(
            "SELECT l.link FROM member_log l JOIN engagements e ON e.id = l.engagement_id "
            "WHERE e.uid = ? AND l.seq = ?",
            (eng_uid, seq),
        )
        return None if r is None else bytes(r[0])

    def engagements_without_log(self) -> list[str]:
        """Names of live engagements that have no membership log (made before format 3)."""
        return [
            str(r[0])
            for r in self._all(
                "SELECT name FROM engagements WHERE state != 'purged' AND NOT EXISTS "
                "(SELECT 1 FROM member_log l WHERE l.engagement_id = engagements.id)"
            )
        ]

    # -- systems --------------------------------------------------------------------------
    SYS_COLS = "id, uid, name, port, protocol, address_env, details_env, created_at, updated_at"

    @staticmethod
    def _system(r: Row) -> SystemRow:
        return SystemRow(
            int(r[0]),
            bytes(r[1]),
            r[2],
            r[3],
            r[4],
            bytes(r[5]),
            None if r[6] is None else bytes(r[6]),
            r[7],
            r[8],
        )

    def system(self, eng_id: int, name: str) -> SystemRow | None:
        row = self._one(
            f"SELECT {self.SYS_COLS} FROM systems WHERE engagement_id = ? "  # noqa: S608
            "AND name = ?",
            (eng_id, name),
        )
        return None if row is None else self._system(row)

    def system_by_id(self, sys_id: int) -> SystemRow | None:
        row = self._one(f"SELECT {self.SYS_COLS} FROM systems WHERE id = ?", (sys_id,))  # noqa: S608
        return None if row is None else self._system(row)

    def systems(self, eng_id: int) -> list[SystemRow]:
        rows = self._all(
            f"SELECT {self.SYS_COLS} FROM systems WHERE engagement_id = ? "  # noqa: S608
            "ORDER BY name",
            (eng_id,),
        )
        return [self._system(r) for r in rows]

    def upsert_system(self, eng_id: int, v: NewSystem) -> None:
        self._x(
            "INSERT INTO systems (uid, engagement_id, name, port, protocol, address_env, "
            "details_env, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (engagement_id, name) DO UPDATE SET port = excluded.port, "
            "protocol = excluded.protocol, address_env = excluded.address_env, "
            "details_env = excluded.details_env, updated_at = excluded.updated_at",
            (
                v.uid,
                eng_id,
                v.name,
                v.port,
                v.protocol,
                v.address_env,
                v.details_env,
                v.created_at,
                v.updated_at,
            ),
        )

    def delete_system(self, sys_id: int) -> None:
        self._x("DELETE FROM systems WHERE id = ?", (sys_id,))

    # -- credentials ----------------------------------------------------------------------
    CRED_COLS = (
        "c.id, c.uid, c.name, c.kind, s.name, c.secret_env, c.username_env, c.url_env, "
        "c.notes_env, c.created_at, c.updated_at, c.system_id, c.version, c.updated_by, "
        "c.changed, s.uid"
    )

    @staticmethod
    def _credential(r: Row) -> CredentialRow:
        return CredentialRow(
            int(r[0]),
            bytes(r[1]),
            r[2],
            r[3],
            r[4],
            bytes(r[5]),
            None if r[6] is None else bytes(r[6]),
            None if r[7] is None else bytes(r[7]),
            None if r[8] is None else bytes(r[8]),
            r[9],
            r[10],
            r[11],
            int(r[12]),
            r[13],
            r[14],
            None if r[15] is None else bytes(r[15]),
        )

    def credential(self, eng_id: int, name: str) -> CredentialRow | None:
        row = self._one(
            f"SELECT {self.CRED_COLS} FROM credentials c LEFT JOIN systems s "  # noqa: S608
            "ON s.id = c.system_id WHERE c.engagement_id = ? AND c.name = ?",
            (eng_id, name),
        )
        return None if row is None else self._credential(row)

    def credentials(self, eng_id: int) -> list[CredentialRow]:
        rows = self._all(
            f"SELECT {self.CRED_COLS} FROM credentials c LEFT JOIN systems s "  # noqa: S608
            "ON s.id = c.system_id WHERE c.engagement_id = ? ORDER BY c.name",
            (eng_id,),
        )
        return [self._credential(r) for r in rows]

    def names(self, table: str, eng_id: int) -> list[str]:
        """Names of an engagement's credentials or systems, sorted."""
        if table not in SEALED_FIELDS:  # pragma: no cover - internal contract
            raise ValueError(table)
        return [
            str(r[0])
            for r in self._all(
                f"SELECT name FROM {table} WHERE engagement_id = ? ORDER BY name",  # noqa: S608
                (eng_id,),
            )
        ]

    def credential_names(self, eng_id: int) -> set[str]:
        return {
            str(r[0])
            for r in self._all("SELECT name FROM credentials WHERE engagement_id = ?", (eng_id,))
        }

    def insert_credential(self, eng_id: int, v: NewCredential) -> None:
        self.insert_credentials(eng_id, [v])

    def insert_credentials(self, eng_id: int, rows: list[NewCredential]) -> None:
        try:
            self.conn.executemany(
                "INSERT INTO credentials (uid, engagement_id, name, kind, system_id, secret_env, "
                "username_env, url_env, notes_env, created_at, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(v.uid, eng_id, *v[1:]) for v in rows],  # NewCredential is in column order
            )
        except sqlcipher3.Error as e:
            raise self._translate(e) from None

    def update_credential(self, cred_id: int, u: CredentialUpdate) -> None:
        """Replace a credential's secret; other fields only where ``u`` gives them."""
        self._x(
            "UPDATE credentials SET updated_at = ?, secret_env = ?, "
            "username_env = coalesce(?, username_env), url_env = coalesce(?, url_env), "
            "notes_env = coalesce(?, notes_env), system_id = coalesce(?, system_id), "
            "kind = coalesce(?, kind) WHERE id = ?",
            (*u, cred_id),
        )

    def set_credential_version(
        self, cred_id: int, version: int, updated_by: str | None, changed: str
    ) -> None:
        """The history metadata of the live row (after a change that kept the old version)."""
        self._x(
            "UPDATE credentials SET version = ?, updated_by = ?, changed = ? WHERE id = ?",
            (version, updated_by, changed, cred_id),
        )

    def set_credential_fields(
        self,
        cred_id: int,
        updated_at: str,
        kind: str,
        system_id: int | None,
        envelopes: dict[str, bytes | None],
    ) -> None:
        """Set kind, system link and the given envelopes exactly (``None`` clears a field):
        edits and reverts, where "not given" and "cleared" differ."""
        cols = [f"{f}_env" for f in envelopes]
        if any(f not in SEALED_FIELDS["credentials"] for f in envelopes):  # pragma: no cover
            raise ValueError("unknown credential field")
        sets = "".join(f", {c} = ?" for c in cols)
        self._x(
            f"UPDATE credentials SET updated_at = ?, kind = ?, system_id = ?{sets} WHERE id = ?",  # noqa: S608
            (updated_at, kind, system_id, *envelopes.values(), cred_id),
        )

    def rename_credential(self, cred_id: int, name: str, updated_at: str) -> None:
        self._x(
            "UPDATE credentials SET name = ?, updated_at = ? WHERE id = ?",
            (name, updated_at, cred_id),
        )

    def search_names(self, eng_ids: Sequence[int], needle: str) -> list[tuple[int, str, str]]:
        """(engagement id, type, name) of credentials and systems whose name contains
        ``needle`` (lower case; ASCII names, so ``lower`` is exact)."""
        if not eng_ids:
            return []
        marks = ", ".join("?" for _ in eng_ids)
        return [
            (int(r[0]), str(r[1]), str(r[2]))
            for r in self._all(
                f"SELECT engagement_id, 'credential', name FROM credentials "  # noqa: S608
                f"WHERE engagement_id IN ({marks}) AND instr(lower(name), ?) > 0 UNION ALL "
                f"SELECT engagement_id, 'system', name FROM systems "
                f"WHERE engagement_id IN ({marks}) AND instr(lower(name), ?) > 0",
                (*eng_ids, needle, *eng_ids, needle),
            )
        ]

    # -- credential history ---------------------------------------------------------------
    VERSION_COLS = (
        "id, credential_uid, version, name, kind, system, secret_env, username_env, url_env, "
        "notes_env, created_at, created_by, changed"
    )

    @staticmethod
    def _version(r: Row) -> VersionRow:
        """A history row, checked: SQLite keeps whatever an insider writes into it (text in
        an INTEGER column, a kind the live table's CHECK refuses), and credvault never
        writes such a row, so one is tampering (exit 6), not an error of this program."""
        try:
            v = VersionRow(
                _whole(r[0]),
                bytes(r[1]),
                _whole(r[2]),
                r[3],
                r[4],
                r[5],
                bytes(r[6]),
                None if r[7] is None else bytes(r[7]),
                None if r[8] is None else bytes(r[8]),
                None if r[9] is None else bytes(r[9]),
                r[10],
                r[11],
                r[12],
            )
        except (TypeError, ValueError):
            raise IntegrityError("credential history is corrupt or tampered with") from None
        texts_ok = all(isinstance(r[i], str) for i in (3, 4, 10, 12)) and all(
            r[i] is None or isinstance(r[i], str) for i in (5, 11)
        )
        if v.version < 1 or v.kind not in KINDS or not texts_ok:
            raise IntegrityError("credential history is corrupt or tampered with")
        return v

    def insert_version(self, eng_id: int, v: NewVersion) -> None:
        """Keep an earlier version. Its number comes from the live row; one the history
        holds already (UNIQUE) means someone rewound that number: tampering."""
        try:
            self.conn.execute(
                "INSERT INTO credential_versions (engagement_id, credential_uid, version, name, "
                "kind, system, secret_env, username_env, url_env, notes_env, created_at, "
                "created_by, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (eng_id, *v),  # NewVersion is in column order
            )
        except sqlcipher3.IntegrityError:
            raise IntegrityError(
                f"credential history: version {v.version} exists already (tampered with)"
            ) from None
        except sqlcipher3.Error as e:
            raise self._translate(e) from None

    def versions(self, uid: bytes) -> list[VersionRow]:
        """Earlier versions of one credential, oldest first (envelopes included)."""
        return [
            self._version(r)
            for r in self._all(
                f"SELECT {self.VERSION_COLS} FROM credential_versions "  # noqa: S608
                "WHERE credential_uid = ? ORDER BY version",
                (uid,),
            )
        ]

    def version(self, uid: bytes, version: int) -> VersionRow | None:
        row = self._one(
            f"SELECT {self.VERSION_COLS} FROM credential_versions "  # noqa: S608
            "WHERE credential_uid = ? AND version = ?",
            (uid, version),
        )
        return None if row is None else self._version(row)

    def engagement_versions(self, eng_id: int) -> list[VersionRow]:
        return [
            self._version(r)
            for r in self._all(
                f"SELECT {self.VERSION_COLS} FROM credential_versions "  # noqa: S608
                "WHERE engagement_id = ?",
                (eng_id,),
            )
        ]

    def move_versions(self, uid: bytes, eng_id: int, name: str) -> None:
        """Versions follow a credential moved to another engagement (re-sealed by the caller).

        Their system names are cleared: they name systems of the engagement left behind, and
        a revert would link the credential to a system of the same name in the target.
        """
        self._x(
            "UPDATE credential_versions SET engagement_id = ?, name = ?, system = NULL "
            "WHERE credential_uid = ?",
            (eng_id, name, uid),
        )

    # -- trash ----------------------------------------------------------------------------
    _CRED_TRASH_COLS = (
        "uid, engagement_id, name, kind, system_id, secret_env, username_env, url_env, "
        "notes_env, created_at, updated_at, version, updated_by, changed"
    )
    _SYS_TRASH_COLS = (
        "uid, engagement_id, name, port, protocol, address_env, details_env, created_at, updated_at"
    )

    def trash_credential(self, cred_id: int, deleted_at: str, by: str, expires_at: str) -> None:
        """Move a live credential row into the trash, envelopes untouched."""
        c = self._CRED_TRASH_COLS
        self._x(
            f"INSERT INTO credential_trash ({c}, deleted_at, deleted_by, expires_at) "  # noqa: S608
            f"SELECT {c}, ?, ?, ? FROM credentials WHERE id = ?",
            (deleted_at, by, expires_at, cred_id),
        )
        self._x("DELETE FROM credentials WHERE id = ?", (cred_id,))

    def untrash_credential(self, trash_id: int) -> None:
        c = self._CRED_TRASH_COLS
        self._x(
            f"INSERT INTO credentials ({c}) SELECT {c} FROM credential_trash WHERE id = ?",  # noqa: S608
            (trash_id,),
        )
        self._x("DELETE FROM credential_trash WHERE id = ?", (trash_id,))

    def trash_system(
        self, sys_id: int, deleted_at: str, by: str, expires_at: str, linked: str
    ) -> None:
        c = self._SYS_TRASH_COLS
        self._x(
            f"INSERT INTO system_trash ({c}, linked, deleted_at, deleted_by, expires_at) "  # noqa: S608
            f"SELECT {c}, ?, ?, ?, ? FROM systems WHERE id = ?",
            (linked, deleted_at, by, expires_at, sys_id),
        )
        self._x("DELETE FROM systems WHERE id = ?", (sys_id,))

    def untrash_system(self, trash_id: int) -> int:
        c = self._SYS_TRASH_COLS
        cur = self._x(
            f"INSERT INTO systems ({c}) SELECT {c} FROM system_trash WHERE id = ?",  # noqa: S608
            (trash_id,),
        )
        self._x("DELETE FROM system_trash WHERE id = ?", (trash_id,))
        return int(cur.lastrowid)

    def trash(self, eng_id: int) -> list[TrashEntry]:
        """An engagement's trash, newest first."""
        return [
            TrashEntry(str(r[0]), int(r[1]), r[2], bytes(r[3]), r[4], r[5], r[6], r[7])
            for r in self._all(
                "SELECT 'credential', id, name, uid, deleted_at, deleted_by, expires_at, '[]' "
                "FROM credential_trash WHERE engagement_id = ? UNION ALL "
                "SELECT 'system', id, name, uid, deleted_at, deleted_by, expires_at, linked "
                "FROM system_trash WHERE engagement_id = ? ORDER BY 5 DESC, 2 DESC",
                (eng_id, eng_id),
            )
        ]

    def credentials_by_uid(self, uids: Sequence[bytes]) -> list[int]:
        """Ids of the live, unlinked credentials among ``uids`` (relinking a restored system)."""
        marks = ", ".join("?" for _ in uids)
        return [
            int(r[0])
            for r in self._all(
                f"SELECT id FROM credentials WHERE system_id IS NULL AND uid IN ({marks})",  # noqa: S608
                tuple(uids),
            )
        ]

    def link_credential(self, cred_id: int, sys_id: int) -> None:
        self._x("UPDATE credentials SET system_id = ? WHERE id = ?", (sys_id, cred_id))

    def credentials_linked_to(self, sys_id: int) -> list[bytes]:
        """Uids of the credentials linked to a system, live or in the trash (both lose the
        link when the system leaves the table, and get it back when it is restored)."""
        return [
            bytes(r[0])
            for r in self._all(
                "SELECT uid FROM credentials WHERE system_id = ? UNION ALL "
                "SELECT uid FROM credential_trash WHERE system_id = ?",
                (sys_id, sys_id),
            )
        ]

    def relink_trashed_credentials(self, uids: Sequence[bytes], sys_id: int) -> int:
        """Give trashed, unlinked credentials among ``uids`` the restored system's new id."""
        marks = ", ".join("?" for _ in uids)
        cur = self._x(
            f"UPDATE credential_trash SET system_id = ? "  # noqa: S608
            f"WHERE system_id IS NULL AND uid IN ({marks})",
            (sys_id, *uids),
        )
        return int(cur.rowcount)

    def expired_trash(self, now: str) -> tuple[list[tuple[int, bytes]], list[int]]:
        """(credential trash (id, uid), system trash ids) whose recovery period has ended."""
        creds = [
            (int(r[0]), bytes(r[1]))
            for r in self._all("SELECT id, uid FROM credential_trash WHERE expires_at <= ?", (now,))
        ]
        systems = [
            int(r[0])
            for r in self._all("SELECT id FROM system_trash WHERE expires_at <= ?", (now,))
        ]
        return creds, systems

    def anything_in_trash_due(self, now: str) -> bool:
        return (
            self._one("SELECT 1 FROM credential_trash WHERE expires_at <= ? LIMIT 1", (now,))
            is not None
            or self._one("SELECT 1 FROM system_trash WHERE expires_at <= ? LIMIT 1", (now,))
            is not None
        )

    def destroy_trashed_credential(self, trash_id: int, uid: bytes) -> None:
        self._x("DELETE FROM credential_versions WHERE credential_uid = ?", (uid,))
        self._x("DELETE FROM credential_trash WHERE id = ?", (trash_id,))

    def destroy_trashed_system(self, trash_id: int) -> None:
        self._x("DELETE FROM system_trash WHERE id = ?", (trash_id,))

    # -- envelopes, by SEALED_FIELDS (re-encryption on rotation) --------------------------
    def sealed_rows(self, table: str, eng_id: int) -> list[SealedRow]:
        """Every envelope of ``table`` in an engagement, in ``SEALED_FIELDS[table]`` order
        (or ``HISTORY_SEALED[table]``: the trash tables of format 2), with the clear columns
        its anchor is bound to."""
        cols = ", ".join(f"t.{f}_env" for f in _sealed(table))
        meta, join = _BOUND_COLS[table]
        return [
            SealedRow(
                int(r[0]),
                bytes(r[1]),
                tuple(None if b is None else bytes(b) for b in r[5:]),
                tuple(r[2:5]),
            )
            for r in self._all(
                f"SELECT t.id, t.uid, {meta}, {cols} FROM {table} t {join} "  # noqa: S608
                "WHERE t.engagement_id = ?",
                (eng_id,),
            )
        ]

    def sealed_row(self, table: str, row_id: int) -> SealedRow | None:
        """One row of :meth:`sealed_rows` by id (a trashed row opened for export)."""
        cols = ", ".join(f"t.{f}_env" for f in _sealed(table))
        meta, join = _BOUND_COLS[table]
        r = self._one(
            f"SELECT t.id, t.uid, {meta}, {cols} FROM {table} t {join} WHERE t.id = ?",  # noqa: S608
            (row_id,),
        )
        if r is None:
            return None
        return SealedRow(
            int(r[0]), bytes(r[1]), tuple(None if b is None else bytes(b) for b in r[5:]), r[2:5]
        )

    def linked_rows(self, sys_id: int) -> list[tuple[str, SealedRow]]:
        """The credentials, live and trashed, linked to a system (table, row): their anchors
        are bound to the link, so they are sealed again when it changes."""
        return [
            (table, r)
            for table in ("credentials", "credential_trash")
            for r in self._linked(table, sys_id)
        ]

    def _linked(self, table: str, sys_id: int) -> list[SealedRow]:
        cols = ", ".join(f"t.{f}_env" for f in _sealed(table))
        meta, join = _BOUND_COLS[table]
        return [
            SealedRow(
                int(r[0]),
                bytes(r[1]),
                tuple(None if b is None else bytes(b) for b in r[5:]),
                r[2:5],
            )
            for r in self._all(
                f"SELECT t.id, t.uid, {meta}, {cols} FROM {table} t {join} "  # noqa: S608
                "WHERE t.system_id = ?",
                (sys_id,),
            )
        ]

    def set_anchor(self, table: str, row_id: int, blob: bytes) -> None:
        """Replace one row's anchor envelope (re-sealed for a new binding: a credential whose
        system went to the trash or came back)."""
        field = {"credentials": "secret", "credential_trash": "secret"}[table]
        self._x(f"UPDATE {table} SET {field}_env = ? WHERE id = ?", (blob, row_id))  # noqa: S608

    def bound_since(self, eng_id: int) -> int | None:
        """The key version from which every record of the engagement is bound (format 3;
        ``None``: not recorded, or a vault upgraded before its first rotation)."""
        r = self._one("SELECT key_version FROM record_binding WHERE engagement_id = ?", (eng_id,))
        return None if r is None or not isinstance(r[0], int) else int(r[0])

    def set_bound_since(self, eng_id: int, key_version: int) -> None:
        self._x(
            "INSERT INTO record_binding (engagement_id, key_version) VALUES (?, ?) "
            "ON CONFLICT (engagement_id) DO UPDATE SET key_version = "
            "min(key_version, excluded.key_version)",
            (eng_id, key_version),
        )

    def set_sealed_rows(self, table: str, rows: list[SealedRow]) -> None:
        sets = ", ".join(f"{f}_env = ?" for f in _sealed(table))
        try:
            self.conn.executemany(
                f"UPDATE {table} SET {sets} WHERE id = ?",  # noqa: S608 - names are ours
                [(*r.blobs, r.id) for r in rows],
            )
        except sqlcipher3.Error as e:
            raise self._translate(e) from None

    def delete_credential(self, cred_id: int) -> None:
        self._x("DELETE FROM credentials WHERE id = ?", (cred_id,))

    # -- audit ----------------------------------------------------------------------------
    AUDIT_COLS = "seq, ts, member, action, engagement, item, outcome, detail, mac"

    def audit_head(self) -> AuditRow | None:
        row = self._one(f"SELECT {self.AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1")  # noqa: S608
        return None if row is None else AuditRow._make(row)

    def audit_insert(self, row: AuditRow) -> None:
        self._x(f"INSERT INTO audit ({self.AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)  # noqa: S608
        self.tx_audit_head = (int(row.seq), bytes(row.mac))

    def audit_iter(self, after_seq: int = 0, batch: int = 5000) -> Iterator[AuditRow]:
        """All entries in order, fetched in batches so a million entries stream."""
        last = after_seq
        while True:
            rows = self._all(
                f"SELECT {self.AUDIT_COLS} FROM audit WHERE seq > ? "  # noqa: S608
                "ORDER BY seq LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            yield from map(AuditRow._make, rows)
            last = int(rows[-1][0])

    def audit_entry(self, seq: int) -> AuditRow | None:
        row = self._one(f"SELECT {self.AUDIT_COLS} FROM audit WHERE seq = ?", (seq,))  # noqa: S608
        return None if row is None else AuditRow._make(row)

    def audit_query(
        self,
        *,
        engagements: list[str] | None,
        member: str | None,
        action: str | None,
        since: str | None,
        limit: int | None,
        include_vault_wide: bool,
    ) -> list[AuditRow]:
        where: list[str] = []
        params: list[Any] = []
        if engagements is not None:
            marks = ", ".join("?" for _ in engagements)
            clause = f"engagement IN ({marks})" if engagements else "0"
            if include_vault_wide:
                clause = f"({clause} OR engagement IS NULL)"
            where.append(clause)
            params += engagements
        for col, val in (("member", member), ("action", action)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        sql = f"SELECT {self.AUDIT_COLS} FROM audit"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq"  # noqa: S608
            params.append(limit)
        else:
            sql += " ORDER BY seq"
        return [AuditRow._make(r) for r in self._all(sql, params)]

    def audit_prune_before(self, seq: int) -> None:
        self._x("DELETE FROM audit WHERE seq < ?", (seq,))
        self.tx_other_chains = True

    def audit_first_after_ts(self, ts: str) -> AuditRow | None:
        row = self._one(
            f"SELECT {self.AUDIT_COLS} FROM audit WHERE ts >= ? "  # noqa: S608
            "ORDER BY seq LIMIT 1",
            (ts,),
        )
        return None if row is None else AuditRow._make(row)

    def audit_oldest_ts(self) -> str | None:
        """The time of the oldest entry kept (None: the trail is empty)."""
        row = self._one("SELECT ts FROM audit ORDER BY seq LIMIT 1")
        return None if row is None else str(row[0])

    def exported_by(self, member: str, engagement: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM audit WHERE member = ? AND engagement = ? AND action = 'export' "
                "AND outcome = 'ok' LIMIT 1",
                (member, engagement),
            )
            is not None
        )

    def audit_reads_by(self, member: str, engagement: str, *, views: bool = False) -> list[str]:
        """Items ``member`` successfully read on ``engagement``: secrets (``get``, ``otp``), or
        with ``views`` records shown without a secret (``show``, ``system-show``)."""
        sql = (
            "SELECT DISTINCT item FROM audit WHERE member = ? AND engagement = ? AND outcome = 'ok' "
            "AND action IN ('show', 'system-show') AND item IS NOT NULL ORDER BY item"
            if views
            else "SELECT DISTINCT item FROM audit WHERE member = ? AND engagement = ? "
            "AND outcome = 'ok' AND action IN ('get', 'otp') AND item IS NOT NULL ORDER BY item"
        )
        return [str(r[0]) for r in self._all(sql, (member, engagement))]

    # -- maintenance ----------------------------------------------------------------------
    def checkpoint_truncate(self, wait_s: float | None = None) -> bool:
        """Move every committed page into the main file and cut the WAL to 0 bytes.

        Returns False when SQLite could not (it answers "busy": another connection holds a
        read snapshot, or writes), waiting at most ``wait_s`` (default: the busy timeout).
        """
        if wait_s is not None:
            self._x(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            row = self._x("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            if wait_s is not None:
                self._x(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return row is not None and int(row[0]) == 0

    def vacuum(self) -> None:
        """Rewrite the whole file (VACUUM): every freed page and fragment leaves it."""
        self._x("VACUUM")

    def release_free_pages(self) -> None:
        """Move live pages over freed ones and truncate the file (incremental vacuum).

        Costs what was freed, not the size of the vault; with secure_delete the freed
        content was zeroed before, so this only shrinks the file.
        """
        self._x("PRAGMA incremental_vacuum").fetchall()

    def page_count(self) -> int:
        row = self._one("PRAGMA page_count")
        return int(row[0]) if row else 0

    def auto_vacuum(self) -> int:
        row = self._one("PRAGMA auto_vacuum")
        return int(row[0]) if row else 0

    def integrity_check(self) -> list[str]:
        """SQLite's and SQLCipher's own checks: problems found (empty when sound)."""
        try:
            rows = self._all("PRAGMA integrity_check")
            rows += self._all("PRAGMA cipher_integrity_check")
        except IntegrityError as e:
            return [str(e)]
        return [str(r[0]) for r in rows if r[0] != "ok"]

    def copy_to(self, target: Path, key: bytes) -> None:
        """Online-backup the database into a new file keyed with ``key`` (may differ)."""
        dst = sqlcipher3.connect(str(target), isolation_level=None)
        try:
            dst.execute("PRAGMA cipher_log_level = NONE")
            dst.execute(_key_literal(key))
            self.conn.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
        except sqlcipher3.Error as e:
            raise translate(e, "backup", target) from None
        finally:
            dst.close()


def check_file(path: Path, key: bytes) -> list[str]:
    """SQLCipher's MAC check of every page and SQLite's integrity check on a database file,
    opened read-only (a backup copy, or a file extracted from a backup file): problems found.
    """
    try:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlcipher3.connect(uri, uri=True, isolation_level=None)
    except sqlcipher3.Error as e:
        return [str(translate(e, "database copy"))]
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(_key_literal(key))
        problems = [
            f"page authentication: {r[0]}"
            for r in conn.execute("PRAGMA cipher_integrity_check").fetchall()
        ]
        problems += [
            f"SQLite integrity: {r[0]}"
            for r in conn.execute("PRAGMA integrity_check").fetchall()
            if r[0] != "ok"
        ]
        return problems
    except sqlcipher3.Error as e:
        return [str(translate(e, "database copy"))]
    finally:
        conn.close()
