"""The one home of the client side's SQL for a PostgreSQL team vault (issue 14).

:class:`PgStore` is to a team vault what :class:`credvault.store.Store` is to a SQLCipher
file: every statement the member's machine sends lives here, and PostgreSQL's errors become
credvault's (one line, the spec's exit code). Unlike the SQLCipher store it decides nothing
and reads no secret column: a member's role may only call the server's SECURITY DEFINER
functions (``schema.sql``), which check the member's role and write the audit rows
themselves. Everything cryptographic happens above, in :mod:`credvault.team`.

psycopg is imported inside the functions, never at module import; the CLI's ``get``
does not import it at all (:mod:`credvault.postgres.libpq`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from credvault.errors import (
    AccessDenied,
    AlreadyExists,
    Conflict,
    CredvaultError,
    InvalidInput,
    NotFound,
    StoreError,
)
from credvault.postgres.version import SCHEMA_VERSION, check_schema

_PREFIX = "credvault: "
_T = TypeVar("_T")


class EngagementRow(NamedTuple):
    uid: bytes
    name: str
    client: str
    state: str
    key_version: int
    key_fp: str
    require_reason: bool
    needs_rotation: bool
    created_at: str


class MyGrant(NamedTuple):
    role: str
    role_sig: bytes
    granted_by: str
    key_version: int | None
    sealed: bytes | None
    sealed_by: str | None
    copy_sig: bytes | None
    expires_at: str | None


class Fetched(NamedTuple):
    """What ``credvault.fetch`` releases: envelopes and where they were sealed for."""

    secret_env: bytes
    username_env: bytes | None
    url_env: bytes | None
    notes_env: bytes | None
    key_version: int
    uid: bytes
    kind: str
    audit_seq: int
    created_at: str
    updated_at: str
    # the linked system (None: no link): its uid, name, port and protocol (the address's
    # binding) and the address envelope, released with the rest (section pgput)
    sys_uid: bytes | None = None
    sys_name: str | None = None
    port: int | None = None
    protocol: str | None = None
    address_env: bytes | None = None


class SystemRow(NamedTuple):
    """A system's clear columns, as a member may list them."""

    uid: bytes
    name: str
    port: int | None
    protocol: str | None
    created_at: str
    updated_at: str


class RecordRow(NamedTuple):
    """What ``credvault.fetch_record`` releases (schema 2): a record's envelopes (``e1`` the
    anchor: a system's address, a version's secret; then a system's details, a version's
    username, url, notes) and the clear columns its binding covers."""

    uid: bytes | None
    name: str | None
    kind: str | None
    port: int | None
    protocol: str | None
    system_uid: bytes | None
    system: str | None
    e1: bytes | None
    e2: bytes | None
    e3: bytes | None
    e4: bytes | None
    audit_seq: int
    created_at: str
    updated_at: str


class UseRow(NamedTuple):
    """What ``credvault.fetch_use`` releases (``otp``, ``run``, ``ssh``): a credential's
    envelopes as its kind of use allows, with the clear columns its binding covers and its
    linked system's (``port``, ``protocol``; the address sealed bound to them)."""

    uid: bytes
    name: str
    kind: str
    system_uid: bytes | None
    system: str | None
    port: int | None
    protocol: str | None
    secret: bytes | None
    username: bytes | None
    url: bytes | None
    notes: bytes | None
    address: bytes | None
    audit_seq: int
    created_at: str
    updated_at: str


class FindRow(NamedTuple):
    """A record as ``credvault.fetch_find`` releases it: its non-secret envelopes
    (username, url, notes of a credential; address, details of a system)."""

    table: str
    name: str
    uid: bytes
    port: int | None
    protocol: str | None
    envelopes: tuple[bytes | None, bytes | None, bytes | None]


class VersionRow(NamedTuple):
    """One line of ``credvault.credential_history``: never a value."""

    version: int
    kind: str
    system: str | None
    by: str | None
    at: str
    changed: str
    current: bool


class RotationRow(NamedTuple):
    """One record of a rotation's read: its table and row, the place's uid, its four
    envelope columns (the anchor first) and the clear columns a record binding covers."""

    table: str
    id: int
    uid: bytes
    envelopes: tuple[bytes, bytes | None, bytes | None, bytes | None]
    name: str
    kind: str | None
    port: int | None
    protocol: str | None
    system_uid: bytes | None


class MoveRow(NamedTuple):
    """A credential (``credentials``) or one of its earlier versions
    (``credential_versions``) released by ``fetch_move``: its row, place uid, version
    number, four envelopes (the secret first) and the clear columns its binding covers."""

    table: str
    id: int
    uid: bytes
    version: int
    envelopes: tuple[bytes, bytes | None, bytes | None, bytes | None]
    name: str
    kind: str
    system_uid: bytes | None


class MemberRow(NamedTuple):
    name: str
    admin: bool
    state: str
    sign_pub: bytes | None
    kem_pub: bytes | None
    created_at: str


def database_of(target: str) -> str:
    """The database a connection string names: ``dbname``, else the service's (the
    ``PGSERVICEFILE`` or ``~/.pg_service.conf`` section), else ``$PGDATABASE``. Member roles
    are ``<database>_<member>`` and key slots are filed by database, so it must be known
    before connecting."""
    import os
    from pathlib import Path

    from credvault.postgres import libpq

    d: dict[str, Any]
    if libpq.load() is not None:  # the same libpq call as psycopg's, without importing it
        try:
            d = dict(libpq.conninfo_parse(target))
        except libpq.Error as e:
            raise InvalidInput(f"invalid connection string: {_message(e)}") from None
    else:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            d = conninfo_to_dict(target)
        except psycopg.ProgrammingError as e:
            raise InvalidInput(f"invalid connection string: {_message(e)}") from None
    db = d.get("dbname")
    service = d.get("service") or os.environ.get("PGSERVICE")
    if not db and service:
        import configparser  # only here: most strings name their database (issue 14's get)

        conf = configparser.ConfigParser(interpolation=None)
        file = os.environ.get("PGSERVICEFILE") or str(Path.home() / ".pg_service.conf")
        conf.read(file)
        if conf.has_section(str(service)):
            db = conf.get(str(service), "dbname", fallback=None)
    db = db or os.environ.get("PGDATABASE")
    if not db:
        raise InvalidInput("name the database in the connection string (dbname=… or /DB)")
    return str(db)


def _ts(v: Any) -> str:
    """A timestamptz as the vault's ISO form (UTC, seconds, ``Z``)."""
    from datetime import UTC

    return str(v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")) if v is not None else ""


def _ts_us(v: Any) -> str:
    """A timestamptz as :func:`credvault.model.iso` writes one (UTC, microseconds, ``Z``):
    what a credential's dates are on SQLCipher (``get --json``, the client export)."""
    from datetime import UTC

    from credvault.model import iso

    return iso(v.astimezone(UTC)) if v is not None else ""


def _b(v: Any) -> bytes | None:
    return None if v is None else bytes(v)


# SQLSTATEs the store turns into credvault's errors (psycopg.errors' classes of the same codes)
_INSUFFICIENT_PRIVILEGE = "42501"
_NO_DATA_FOUND = "P0002"
_SERIALIZATION_FAILURE = "40001"
_UNIQUE_VIOLATION = "23505"
_INVALID_INPUT = frozenset({"22023", "23514", "22001"})  # parameter value, check, too long
_NOT_DURABLE_YET = "55000"  # object_not_in_prerequisite_state: fetch's "not yet durable"


def _db_error(e: BaseException) -> tuple[str | None, bool] | None:
    """(SQLSTATE, operational?) of an error from either driver, None for anything else.
    psycopg is looked up, never imported: on the libpq path it is not loaded at all."""
    from credvault.postgres import libpq

    if isinstance(e, libpq.Error):
        return e.sqlstate, e.operational
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(e, psycopg.Error):
        return e.sqlstate, isinstance(e, psycopg.OperationalError)
    return None


def _message(e: BaseException) -> str:
    """The server's first line, without its ``credvault: `` prefix (ours adds it again)."""
    text = str(getattr(getattr(e, "diag", None), "message_primary", None) or e)
    line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return line[len(_PREFIX) :] if line.startswith(_PREFIX) else line


class Rebound(NamedTuple):
    """A credential's secret sealed again on the member's machine for a new binding (name,
    kind or link), and the claimed rebind request it was read through: the server stores it
    only while the credential is at the version that request found (upgrade-2.sql, section
    rebindpin)."""

    secret: bytes
    request: int


class PgStore:
    """One member's connection to a team vault's database."""

    def __init__(self, conn: Any, member: str) -> None:
        self.conn = conn
        self.member = member
        # the audited read (``CALL credvault.read``) through one cursor of its
        # own, prepared at the first call and with binary results: ~0.02 ms (8 %) less client
        # CPU per read than a new cursor per statement (docs/team.md "Figures"). The CLI's
        # libpq connection (:mod:`credvault.postgres.libpq`) has no cursors: plain execute.
        self._read_cursor: Any = conn.cursor(binary=True) if hasattr(conn, "cursor") else None

    def __repr__(self) -> str:
        return f"PgStore(member={self.member!r})"

    @classmethod
    def connect(
        cls,
        target: str,
        member: str,
        *,
        user: str | None = None,
        password: str | None = None,
        check: bool = True,
        light: bool = False,
    ) -> PgStore:
        """Connect with libpq's own settings (URI, service, ~/.pgpass, sslmode…) and the
        given role and password (keyword arguments: never argv or the environment), then
        refuse a schema this credvault does not support.

        ``light``: through :mod:`credvault.postgres.libpq` (no psycopg import; the CLI's
        ``get``) when libpq can be loaded, else psycopg as always.
        """
        from credvault.postgres import libpq

        kw: dict[str, Any] = {"connect_timeout": 15}
        if user is not None:
            kw["user"] = user
        if password is not None:
            kw["password"] = password
        conn: Any
        if light and libpq.load() is not None:
            try:
                libpq.conninfo_parse(target)
            except libpq.Error as e:
                raise InvalidInput(f"invalid connection string: {_message(e)}") from None
            try:
                conn = libpq.Connection.connect(target, **kw)
            except libpq.Error as e:
                raise _connect_error(member, e) from None
        else:
            import psycopg

            try:
                conn = psycopg.connect(target, autocommit=True, **kw)
            except psycopg.OperationalError as e:
                raise _connect_error(member, e) from None
            except psycopg.ProgrammingError as e:
                raise InvalidInput(f"invalid connection string: {_message(e)}") from None
        try:
            if check:  # not for the owner about to apply it
                check_schema(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, member)

    def opening(self) -> tuple[bytes, str]:
        """(vault id, the calling member) in one round trip."""
        row = self._one("SELECT credvault.vault_id(), credvault.me()", action="use the vault")
        return bytes(row[0]), str(row[1])

    def checked_opening(self) -> tuple[bytes, str]:
        """:func:`check_schema`, then :meth:`opening`, on a store connected with
        ``check=False``: in one round trip where the schema is this credvault's (every
        round trip counts in a team ``get``'s start-up, issue 14). Anything else (no
        schema, another version, an error) runs the two apart, so it is refused with the
        same line as ever; ``vault_id()`` and ``me()`` only read."""
        try:
            row = self.conn.execute(
                "SELECT version, credvault.vault_id(), credvault.me() FROM credvault.schema_version"
            ).fetchone()
        except Exception as e:
            if _db_error(e) is None:
                raise
            row = None
        if row is not None and row[0] == SCHEMA_VERSION:
            return bytes(row[1]), str(row[2])
        check_schema(self.conn)
        return self.opening()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, action: str, engagement: str | None = None) -> Iterator[None]:
        """PostgreSQL's SQLSTATEs as credvault's errors (spec §7 exit codes)."""
        try:
            yield
        except CredvaultError:
            raise
        except Exception as e:
            kind = _db_error(e)
            if kind is None:
                raise
            state, operational = kind
            if state == _INSUFFICIENT_PRIVILEGE:
                raise AccessDenied(self.member, action, engagement, _message(e)) from None
            if state == _NO_DATA_FOUND:
                raise NotFound(action, engagement or "", _message(e)) from None
            if state == _SERIALIZATION_FAILURE:
                raise Conflict(_message(e)) from None
            if state == _UNIQUE_VIOLATION:
                raise AlreadyExists(f"{action}: it exists already") from None
            if state in _INVALID_INPUT:
                raise InvalidInput(_message(e)) from None
            if operational:
                raise StoreError(f"team vault: {_message(e)}") from None
            raise StoreError(f"team vault refused {action}: {_message(e)}") from None

    def _one(self, sql: str, params: tuple[Any, ...] = (), *, action: str = "read") -> Any:
        with self._errors(action):
            return self.conn.execute(sql, params).fetchone()

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """One row of a read-path statement, prepared on this connection (see __init__)."""
        if self._read_cursor is None:
            return self.conn.execute(sql, params).fetchone()
        return self._read_cursor.execute(sql, params, prepare=True).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] = (), *, action: str = "read") -> list[Any]:
        with self._errors(action):
            return list(self.conn.execute(sql, params).fetchall())

    # -- the vault and its members ------------------------------------------------------
    def vault_id(self) -> bytes:
        return bytes(self._one("SELECT credvault.vault_id()")[0])

    def database(self) -> str:
        return str(self.conn.info.dbname)

    def whoami(self) -> tuple[str, bool]:
        row = self._one("SELECT credvault.me(), credvault.is_admin()", action="use the vault")
        return str(row[0]), bool(row[1])

    def members(self) -> list[MemberRow]:
        rows = self._all(
            "SELECT name, admin, state, sign_pub, kem_pub, created_at FROM credvault.members "
            "WHERE state <> 'removed' ORDER BY name"
        )
        return [
            MemberRow(str(r[0]), bool(r[1]), str(r[2]), _b(r[3]), _b(r[4]), _ts(r[5])) for r in rows
        ]

    def member_keys(self, name: str) -> tuple[bytes, bytes]:
        """(Ed25519, X25519) public keys of an active member, as published at join."""
        row = self._one(
            "SELECT sign_pub, kem_pub FROM credvault.members WHERE name = %s AND state = 'active'",
            (name,),
        )
        if row is None or row[0] is None or row[1] is None:
            raise NotFound("member", name)
        return bytes(row[0]), bytes(row[1])

    def create_member_role(self, name: str, verifier: str, admin: bool) -> None:
        """As the owner: a member's login role, ``invited`` (the first admin, a migration)."""
        with self._errors("make a member role"):
            self.conn.execute(
                "SELECT credvault.create_member_role(%s, %s, %s, 'invited')",
                (name, verifier, admin),
            )

    def engagement_logs(self) -> list[tuple[bytes, str, list[bytes]]]:
        """(uid, name, every link) of each engagement with a log that is not purged;
        admins only (``member rm`` replays them all)."""
        rows = self._all(
            "SELECT e_uid, e_name, e_links FROM credvault.engagement_logs()",
            action="read the membership logs",
        )
        return [(bytes(u), str(n), [bytes(b) for b in ls]) for u, n, ls in rows]

    def record_check(self, problem: str | None) -> bool:
        """Audit ``credvault check``'s outcome (None: sound); False if not an admin (the
        denial audited)."""
        row = self._one("SELECT credvault.record_check(%s)", (problem,), action="check")
        return bool(row[0])

    def record_witness_accept(self, detail: str) -> None:
        """Audit this member's ``witness accept`` (``witness-accept``, ``ok``, ``detail``)."""
        self._one("SELECT credvault.record_witness_accept(%s)", (detail,), action="witness accept")

    def remove_member_logged(
        self, name: str, revocations: list[tuple[str, bytes]], listed: bytes | None
    ) -> int:
        """Remove a member, append a revoke link to each named engagement's log and the
        next version of the revocation list (``listed``; None: it names them already), in
        one server transaction (Conflict: a log or the list moved meanwhile; nothing was
        done)."""
        row = self._one(
            "SELECT credvault.remove_member_logged(%s, %s::text[], %s::bytea[], %s::bytea)",
            (name, [e for e, _ in revocations], [link for _, link in revocations], listed),
            action="remove a member",
        )
        return int(row[0])

    def revocation_list(self) -> list[tuple[int, bytes]]:
        """(version, statement) of every version of the revocation list, oldest first."""
        rows = self._all(
            "SELECT version, statement FROM credvault.revocation_list()",
            action="read the revocation list",
        )
        return [(int(v), bytes(b)) for v, b in rows]

    # -- engagements and grants ---------------------------------------------------------
    def engagement(self, name: str) -> EngagementRow | None:
        """The engagement if the member holds a live role in it (row-level security hides
        the others: absent and hidden are the same to a member)."""
        row = self._one(
            "SELECT uid, name, client, state, key_version, key_fp, require_reason, "
            "needs_rotation, created_at FROM credvault.engagements WHERE name = %s",
            (name,),
        )
        return None if row is None else _engagement(row)

    def engagements(self) -> list[EngagementRow]:
        rows = self._all(
            "SELECT uid, name, client, state, key_version, key_fp, require_reason, "
            "needs_rotation, created_at FROM credvault.engagements ORDER BY name"
        )
        return [_engagement(r) for r in rows]

    def key_copy(
        self, engagement: str, after: int = -1
    ) -> tuple[EngagementRow | None, MyGrant | None, bytes | None, int, list[bytes]]:
        """The engagement, the caller's grant, the sealer's published signing key, the
        seq of the engagement's last membership link (-1: no log) and the links after
        ``after``, in one round trip (what opening an engagement key needs). A sealer
        removed since keeps their published key: copies they sealed while a member stay
        verifiable."""
        row = self._one(
            "SELECT e.uid, e.name, e.client, e.state, e.key_version, e.key_fp, "
            "e.require_reason, e.needs_rotation, e.created_at, g.role, g.role_sig, "
            "g.granted_by, g.key_version, g.sealed, g.sealed_by, g.copy_sig, g.expires_at, "
            "m.sign_pub, credvault.engagement_log_head(e.id), "
            "ARRAY(SELECT l.link FROM credvault.engagement_log_links(e.name, %s) l) "
            "FROM credvault.engagements e "
            "LEFT JOIN LATERAL credvault.my_grant(e.name) g ON true "
            "LEFT JOIN credvault.members m ON m.name = g.sealed_by "
            "WHERE e.name = %s",
            (after, engagement),
        )
        if row is None:
            return None, None, None, -1, []
        eng = _engagement(row[:9])
        head, links = int(row[18]), [bytes(b) for b in row[19]]
        if row[9] is None:
            return eng, None, None, head, links
        g = MyGrant(
            str(row[9]),
            bytes(row[10]),
            str(row[11]),
            None if row[12] is None else int(row[12]),
            _b(row[13]),
            None if row[14] is None else str(row[14]),
            _b(row[15]),
            None if row[16] is None else _ts(row[16]),
        )
        return eng, g, _b(row[17]), head, links

    def log_links(self, engagement: str, after: int = -1) -> list[bytes]:
        """The membership links of ``engagement`` after ``after``, in order."""
        rows = self._all(
            "SELECT link FROM credvault.engagement_log_links(%s, %s)", (engagement, after)
        )
        return [bytes(r[0]) for r in rows]

    def certificates(self) -> dict[str, Any]:
        """Every member's certificate parts (:class:`credvault.team_log.CertRow`)."""
        from credvault.team_log import CertRow

        rows = self._all(
            "SELECT member, inviter, admin, ipk, invitation_sig, join_sig, sign_pub, kem_pub, "
            "state FROM credvault.member_certificates()"
        )
        return {
            str(r[0]): CertRow(
                str(r[0]), str(r[1]), bool(r[2]), bytes(r[3]), bytes(r[4]),
                _b(r[5]), _b(r[6]), _b(r[7]), str(r[8]),
            )
            for r in rows
        }  # fmt: skip

    def pre_log_engagements(self) -> bytes | None:
        """The founder's signed list of engagements migrated without a log (or None)."""
        return _b(self._one("SELECT credvault.pre_log_engagements()")[0])

    def uncertified_members(self) -> list[tuple[str, bool, str, bytes, bytes]]:
        """(name, admin, state, sign_pub, kem_pub) of every member with published keys and
        no certificate (an admin after a schema-1 upgrade; ``certify_upgraded``)."""
        rows = self._all(
            "SELECT member, admin, state, sign_pub, kem_pub FROM credvault.uncertified_members()"
        )
        return [(str(r[0]), bool(r[1]), str(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]

    def unlogged_engagements(self) -> list[bytes]:
        """The uids of every engagement without a membership log (admins)."""
        return [bytes(r[0]) for r in self._all("SELECT * FROM credvault.unlogged_engagements()")]

    def certify_upgraded(
        self,
        certs: list[tuple[str, bool, bytes, bytes, bytes]],
        pre_log: bytes,
        n_engagements: int,
    ) -> None:
        """Store the founder's certificates (member, admin, ipk, invitation sig, join sig)
        and signed list of engagements without a log, in one transaction."""
        cols: list[list[Any]] = [[c[i] for c in certs] for i in range(5)]
        with self._errors("certify the members"):
            self.conn.execute(
                "SELECT credvault.certify_upgraded(%s, %s, %s, %s, %s, %s, %s)",
                (*cols, pre_log, n_engagements),
            )

    def invite_member(
        self, name: str, verifier: str, admin: bool, ipk: bytes, invitation_sig: bytes
    ) -> None:
        with self._errors("add a member"):
            self.conn.execute(
                "SELECT credvault.invite_member(%s, %s, %s, %s, %s)",
                (name, verifier, admin, ipk, invitation_sig),
            )

    def owner_certificate(
        self, name: str, inviter: str, admin: bool, ipk: bytes, invitation_sig: bytes
    ) -> None:
        """As the owner (init, migrate): the invitation an admin signed for ``name``."""
        with self._errors("record an invitation"):
            self.conn.execute(
                "INSERT INTO credvault.member_certs (member, inviter, admin, ipk, invitation_sig)"
                " VALUES (%s, %s, %s, %s, %s)",
                (name, inviter, admin, ipk, invitation_sig),
            )

    def migrated_from(self, vault_id: bytes) -> list[str]:
        """As the owner: the details of the ``migrate`` audit entries of this database if
        it carries the SQLCipher vault id ``vault_id`` (what ``credvault migrate`` made of
        it: the old chain head anchored in each, for the vault to check), else none."""
        with self._errors("read the vault"):
            rows = self.conn.execute(
                "SELECT detail FROM credvault.audit"
                " WHERE action = 'migrate' AND credvault.vault_id() = %s",
                (vault_id,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def unfinished_init(self, admin: str) -> tuple[bool, bool] | None:
        """As the owner, on a database holding the schema: whether it is a ``credvault init``
        for ``admin`` cut short (no engagement, no member but ``admin``, still ``invited``),
        as (``admin``'s login role made, the invitation recorded); None when it is not."""
        with self._errors("read the members"):
            rows = self.conn.execute(
                "SELECT m.name, m.state, EXISTS (SELECT 1 FROM credvault.member_certs c"
                " WHERE c.member = m.name) FROM credvault.members m"
            ).fetchall()
            made = self.conn.execute("SELECT EXISTS (SELECT 1 FROM credvault.engagements)")
            engagements = made.fetchone()[0]
        if engagements or len(rows) > 1:
            return None
        if not rows:
            return False, False
        name, state, certified = rows[0]
        if name != admin or state != "invited":
            return None
        return True, bool(certified)

    def join_proved(self, sign_pub: bytes, kem_pub: bytes, verifier: str, proof: bytes) -> None:
        with self._errors("join the team vault"):
            self.conn.execute(
                "SELECT credvault.join_vault_proved(%s, %s, %s, %s)",
                (sign_pub, kem_pub, verifier, proof),
            )

    def create_engagement_logged(
        self, uid: bytes, name: str, client: str, lead: str, link0: bytes
    ) -> None:
        with self._errors("create an engagement", name):
            self.conn.execute(
                "SELECT credvault.create_engagement_logged(%s, %s, %s, %s, %s)",
                (uid, name, client, lead, link0),
            )

    def put_grant_logged(
        self,
        engagement: str,
        member: str,
        role: str,
        key_version: int | None,
        sealed: bytes | None,
        copy_sig: bytes | None,
        expires_at: str | None,
        link: bytes,
    ) -> bool:
        """False: the server refused (and audited the denial)."""
        row = self._one(
            "SELECT credvault.put_grant_logged(%s, %s, %s, %s, %s, %s, %s, %s)",
            (engagement, member, role, key_version, sealed, copy_sig, expires_at, link),
            action="grant",
        )
        return bool(row[0])

    def revoke_grant_logged(self, engagement: str, member: str, link: bytes) -> list[str] | None:
        row = self._one(
            "SELECT credvault.revoke_grant_logged(%s, %s, %s)",
            (engagement, member, link),
            action="revoke",
        )
        return None if row[0] is None else [str(x) for x in row[0]]

    def credential_system(self, engagement: str, name: str) -> bytes:
        """The uid of the system a credential is linked to (empty: none, or no credential)."""
        row = self._one(
            "SELECT s.uid FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "JOIN credvault.systems s ON s.id = c.system_id WHERE e.name = %s AND c.name = %s",
            (engagement, name),
        )
        return b"" if row is None else bytes(row[0])

    def my_grant(self, engagement: str) -> MyGrant | None:
        row = self._one(
            "SELECT role, role_sig, granted_by, key_version, sealed, sealed_by, copy_sig, "
            "expires_at FROM credvault.my_grant(%s)",
            (engagement,),
        )
        if row is None:
            return None
        return MyGrant(
            str(row[0]),
            bytes(row[1]),
            str(row[2]),
            None if row[3] is None else int(row[3]),
            _b(row[4]),
            None if row[5] is None else str(row[5]),
            _b(row[6]),
            None if row[7] is None else _ts(row[7]),
        )

    def put_grant(
        self,
        engagement: str,
        member: str,
        role: str,
        role_sig: bytes,
        key_version: int | None,
        sealed: bytes | None,
        copy_sig: bytes | None,
        expires_at: str | None,
    ) -> bool:
        """False: the server refused (and audited the denial)."""
        row = self._one(
            "SELECT credvault.put_grant(%s, %s, %s, %s, %s, %s, %s, %s)",
            (engagement, member, role, role_sig, key_version, sealed, copy_sig, expires_at),
            action="grant",
        )
        return bool(row[0])

    def revoked_views(self, engagement: str, member: str) -> list[str]:
        """What a member just revoked only viewed (``show``, ``system-show``) and never
        read a secret of; for a lead or admin (else empty)."""
        row = self._one(
            "SELECT credvault.revoked_views(%s, %s)", (engagement, member), action="revoke"
        )
        return [] if row[0] is None else [str(x) for x in row[0]]

    def revoke_grant(self, engagement: str, member: str) -> list[str] | None:
        """The credentials ``member`` read, or None: the server refused (audited)."""
        row = self._one(
            "SELECT credvault.revoke_grant(%s, %s)", (engagement, member), action="revoke"
        )
        return None if row[0] is None else [str(x) for x in row[0]]

    # -- credentials --------------------------------------------------------------------
    def credentials(
        self, engagement: str | None
    ) -> list[tuple[str, str, str, str, str, str | None]]:
        """(engagement, name, kind, created, updated, linked system) of credentials the
        member may list."""
        sql = (
            "SELECT e.name, c.name, c.kind, c.created_at, c.updated_at, s.name "
            "FROM credvault.credentials c JOIN credvault.engagements e ON e.id = c.engagement_id "
            "LEFT JOIN credvault.systems s ON s.id = c.system_id "
            "WHERE e.state <> 'purged'"
        )
        params: tuple[Any, ...] = ()
        if engagement is not None:
            sql += " AND e.name = %s"
            params = (engagement,)
        rows = self._all(sql + " ORDER BY e.name, c.name", params)
        return [
            (
                str(r[0]),
                str(r[1]),
                str(r[2]),
                _ts(r[3]),
                _ts(r[4]),
                None if r[5] is None else str(r[5]),
            )
            for r in rows
        ]

    def credential_meta(self, engagement: str, name: str) -> tuple[str, str, str] | None:
        """(kind, created, updated) of a credential the member may list, else None."""
        row = self._one(
            "SELECT c.kind, c.created_at, c.updated_at FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "WHERE e.name = %s AND c.name = %s",
            (engagement, name),
        )
        return None if row is None else (str(row[0]), _ts(row[1]), _ts(row[2]))

    def put_credential(
        self,
        engagement: str,
        name: str,
        kind: str,
        uid: bytes,
        key_version: int,
        envelopes: tuple[bytes, bytes | None, bytes | None, bytes | None],
    ) -> bool:
        """False: the server refused (and audited the denial)."""
        row = self._one(
            "SELECT credvault.put_credential(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (engagement, name, kind, uid, key_version, *envelopes),
            action="put",
        )
        return bool(row[0])

    def bindings(
        self, engagement: str, uid: bytes | None = None
    ) -> dict[bytes, tuple[str, str, bytes]]:
        """(name, kind, linked system's uid or empty) by credential uid, from the clear
        columns a member may read: what a record-bound (format 0x02) envelope's associated
        data carries (docs/format.md §4). Such envelopes come from a migrated SQLCipher
        vault; a changed column makes them fail to open (exit 6), as on SQLCipher."""
        sql = (
            "SELECT c.uid, c.name, c.kind, s.uid FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "LEFT JOIN credvault.systems s ON s.id = c.system_id WHERE e.name = %s"
        )
        params: tuple[Any, ...] = (engagement,)
        if uid is not None:
            sql += " AND c.uid = %s"
            params = (engagement, uid)
        return {
            bytes(r[0]): (str(r[1]), str(r[2]), b"" if r[3] is None else bytes(r[3]))
            for r in self._all(sql, params)
        }

    def read(self, engagement: str, name: str, reason: str) -> Fetched | None:
        """The audited read in one round trip (``CALL credvault.read``, upgrade-2.sql section
        readclaim): the request (its audit row), the claim whose synchronous commit makes
        that row durable, the release. None: refused, and audited by the server."""
        for attempt in range(5):
            with self._errors("read", engagement):
                try:
                    row = self._read_one(
                        "CALL credvault.read(%s, %s, %s)", (engagement, name, reason)
                    )
                    break
                except Exception as e:
                    # Ask again, a new request (audited): the claim committed but not yet
                    # flushed on a synchronous standby (release waited ~0.5 s); or the
                    # credential written between the request and the release, whose entry
                    # then names the earlier value (section pinned; the last time, Conflict)
                    if not (_not_durable_yet(e) or (_changed_meanwhile(e) and attempt < 4)):
                        raise
            time.sleep(0.005 * attempt)
        else:
            raise AccessDenied(self.member, "read", engagement, "audit entry not durable")
        if row[0] is None:
            return None
        row = row[1:]  # release's row (it raises rather than return none)
        return Fetched(
            bytes(row[0]),
            _b(row[1]),
            _b(row[2]),
            _b(row[3]),
            int(row[4]),
            bytes(row[5]),
            str(row[6]),
            int(row[7]),
            _ts_us(row[8]),
            _ts_us(row[9]),
            _b(row[10]),
            None if row[11] is None else str(row[11]),
            None if row[12] is None else int(row[12]),
            None if row[13] is None else str(row[13]),
            _b(row[14]),
        )

    def nudge_wal(self) -> None:
        """Flush WAL another session left pending (schema.sql, ``nudge_wal``): one commit of
        our own, durable locally even if a synchronous standby is down."""
        with self._errors("read"), self.conn.transaction():
            self.conn.execute("SET LOCAL synchronous_commit = local")
            self.conn.execute("SELECT credvault.nudge_wal()")

    # -- records other than a credential's current value (schema 2, pgcmds) --------------
    def put_credential_linked(
        self,
        engagement: str,
        name: str,
        kind: str,
        uid: bytes,
        key_version: int,
        envelopes: tuple[bytes, bytes | None, bytes | None, bytes | None],
        system: str | None,
        changed: str = "",
        bound_system: bytes = b"",
    ) -> bool:
        """``put_credential`` linked to ``system`` (None: the link it has); ``changed``: what
        a replace changed, for the history; ``bound_system``: the uid of the system the
        secret is sealed for (b"": none), the link the server must find (Conflict if not).
        False: refused (audited)."""
        row = self._one(
            "SELECT credvault.put_credential_linked(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s)",
            (engagement, name, kind, uid, key_version, *envelopes, system, changed, bound_system),
            action="put",
        )
        return bool(row[0])

    def linked_system(self, engagement: str, name: str) -> tuple[str, bytes] | None:
        """(name, uid) of the system a credential the member may list is linked to."""
        row = self._one(
            "SELECT s.name, s.uid FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "JOIN credvault.systems s ON s.id = c.system_id WHERE e.name = %s AND c.name = %s",
            (engagement, name),
        )
        return None if row is None else (str(row[0]), bytes(row[1]))

    def systems(self, engagement: str) -> list[SystemRow]:
        """The systems of an engagement the member may list (clear columns only; audited as
        system-ls, a refusal as 'list systems', both by the server)."""
        rows = self._all(
            "SELECT uid, name, port, protocol, created_at, updated_at "
            "FROM credvault.list_systems(%s)",
            (engagement,),
            action="list systems",
        )
        return [_system(r) for r in rows]

    def system(self, engagement: str, name: str) -> SystemRow | None:
        row = self._one(
            "SELECT s.uid, s.name, s.port, s.protocol, s.created_at, s.updated_at "
            "FROM credvault.systems s JOIN credvault.engagements e ON e.id = s.engagement_id "
            "WHERE e.name = %s AND s.name = %s",
            (engagement, name),
        )
        return None if row is None else _system(row)

    def put_system(
        self,
        engagement: str,
        name: str,
        uid: bytes | None,
        key_version: int | None,
        port: int | None,
        protocol: str | None,
        address_env: bytes | None,
        details_env: bytes | None,
        keep_details: bool,
        changed: list[str],
    ) -> str | None:
        """The audited action (system-add, system-update), or None: refused (audited)."""
        got = self._system_write(
            "put_system",
            "system add",
            (engagement, name, uid, key_version, port, protocol, address_env, details_env),
            keep_details,
            changed,
        )
        return None if got is None else str(got)

    def set_system(
        self,
        engagement: str,
        name: str,
        uid: bytes | None,
        key_version: int | None,
        port: int | None,
        protocol: str | None,
        address_env: bytes | None,
        details_env: bytes | None,
        keep_details: bool,
        changed: list[str],
    ) -> str:
        """``system set`` (``set_system``): 'ok', 'denied' or 'not found', each audited.
        ``address_env`` None keeps the stored address (port and protocol unchanged)."""
        return str(
            self._system_write(
                "set_system",
                "system set",
                (engagement, name, uid, key_version, port, protocol, address_env, details_env),
                keep_details,
                changed,
            )
        )

    def _system_write(
        self,
        function: str,
        action: str,
        columns: tuple[object, ...],
        keep_details: bool,
        changed: list[str],
    ) -> object:
        """One call shape for ``put_system`` and ``set_system`` (same ten parameters:
        the system's columns as the client sealed them, then what to keep and what
        changed); returns the function's one value."""
        assert function in ("put_system", "set_system")
        row = self._one(
            f"SELECT credvault.{function}(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[])",
            (*columns, keep_details, changed),
            action=action,
        )
        return row[0]

    def remove_system(
        self, engagement: str, name: str, rebound: dict[bytes, Rebound] | None = None
    ) -> tuple[str, str]:
        """(outcome: ok, denied or not found; until when it stays in the trash).
        ``rebound``: the linked credentials' secrets sealed again without the link, by uid."""
        got = rebound or {}
        row = self._one(
            "SELECT outcome, until FROM credvault.remove_system(%s, %s, %s::bytea[], "
            "%s::bytea[], %s::bigint[])",
            (engagement, name, list(got), *_columns(got)),
            action="system rm",
        )
        return str(row[0]), str(row[1] or "")

    def request_record(
        self, kind: str, engagement: str, name: str, reason: str, version: int | None = None
    ) -> int | None:
        """Phase one for a record kind (``request_record``): None when refused (audited)."""
        row = self._one(
            "SELECT credvault.request_record(%s, %s, %s, %s, %s)",
            (kind, engagement, name, reason, version),
            action="read",
        )
        return None if row[0] is None else int(row[0])

    def request_use(
        self, kind: str, engagement: str, name: str, reason: str, via: str
    ) -> int | None:
        """Phase one of ``otp``/``run``/``ssh`` (``request_use``): the audit row under the
        SQLCipher vault's action and detail commits; None when refused (audited)."""
        row = self._one(
            "SELECT credvault.request_use(%s, %s, %s, %s, %s)",
            (kind, engagement, name, reason, via),
            action="read",
        )
        return None if row[0] is None else int(row[0])

    def fetch_use(self, request: int, engagement: str) -> UseRow | None:
        """Phase two: what the request's committed audit row names."""
        rows = self.phase_two(
            "SELECT uid, name, kind, sys_uid, sys_name, port, protocol, secret_env, "
            "username_env, url_env, notes_env, address_env, audit_seq, created_at, updated_at "
            "FROM credvault.fetch_use(%s)",
            request,
            "read",
            engagement,
        )
        if not rows:
            return None
        r = rows[0]
        return UseRow(
            bytes(r[0]),
            str(r[1]),
            str(r[2]),
            _b(r[3]),
            None if r[4] is None else str(r[4]),
            None if r[5] is None else int(r[5]),
            None if r[6] is None else str(r[6]),
            _b(r[7]),
            _b(r[8]),
            _b(r[9]),
            _b(r[10]),
            _b(r[11]),
            int(r[12]),
            _ts(r[13]),
            _ts(r[14]),
        )

    def record(
        self, kind: str, engagement: str, name: str, reason: str, version: int | None = None
    ) -> tuple[int | None, RecordRow | None]:
        """``request_record`` then ``fetch_record``: (the request, its row), (None, None)
        when refused (audited). Asked again (:meth:`asked_again`) while the row changes
        between the two."""
        got = self.asked_again(
            lambda: self.request_record(kind, engagement, name, reason, version),
            lambda req: self.fetch_record(req, engagement),
        )
        return (None, None) if got is None else got

    def asked_again(
        self, ask: Callable[[], int | None], fetch: Callable[[int], _T]
    ) -> tuple[int, _T] | None:
        """A two-phase read: ``ask`` makes the request (its audit entry committed; None
        when refused, audited), ``fetch`` releases what it names. A phase two releases only
        the row versions its request found (upgrade-2.sql, sections pinned and pinmany) and
        says Conflict when one was written in between: then a new request, a new entry, up
        to five times; the fifth Conflict stands."""
        for attempt in range(5):
            req = ask()
            if req is None:
                return None
            try:
                return req, fetch(req)
            except Conflict:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def fetch_record(self, request: int, engagement: str) -> RecordRow | None:
        """Phase two: the envelopes the request's committed audit row names."""
        rows = self.phase_two(
            "SELECT uid, name, kind, port, protocol, sys_uid, sys_name, e1, e2, e3, e4, "
            "audit_seq, created_at, updated_at FROM credvault.fetch_record(%s)",
            request,
            "read",
            engagement,
        )
        if not rows:
            return None
        r = rows[0]

        def text(v: Any) -> str | None:
            return None if v is None else str(v)

        return RecordRow(
            _b(r[0]),
            text(r[1]),
            text(r[2]),
            None if r[3] is None else int(r[3]),
            text(r[4]),
            _b(r[5]),
            text(r[6]),
            _b(r[7]),
            _b(r[8]),
            _b(r[9]),
            _b(r[10]),
            int(r[11]),
            _ts(r[12]),
            _ts(r[13]),
        )

    def credential_history(self, engagement: str, name: str) -> list[VersionRow]:
        """Every version, oldest first (audited 'history' by the server); empty when
        refused or not found (audited too)."""
        rows = self._all(
            "SELECT version, kind, system_name, by_member, at, changed, is_current "
            "FROM credvault.credential_history(%s, %s)",
            (engagement, name),
            action="history",
        )
        return [
            VersionRow(
                int(r[0]),
                str(r[1]),
                None if r[2] is None else str(r[2]),
                None if r[3] is None else str(r[3]),
                str(r[4]),
                str(r[5]),
                bool(r[6]),
            )
            for r in rows
        ]

    def current_version(self, engagement: str, name: str) -> int | None:
        """The version number of a credential the member may list."""
        row = self._one(
            "SELECT c.version FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "WHERE e.name = %s AND c.name = %s",
            (engagement, name),
        )
        return None if row is None else int(row[0])

    def revert_credential(self, engagement: str, name: str, version: int) -> str:
        """'ok', 'denied', 'not found' or 'no version' (the server audits as SQLCipher)."""
        row = self._one(
            "SELECT credvault.revert_credential(%s, %s, %s)",
            (engagement, name, version),
            action="revert",
        )
        return str(row[0])

    def credential_uid(self, engagement: str, name: str) -> bytes | None:
        """The uid a credential's envelopes are sealed for (a clear column)."""
        row = self._one(
            "SELECT c.uid FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "WHERE e.name = %s AND c.name = %s",
            (engagement, name),
        )
        return None if row is None else bytes(row[0])

    def edit_credential(
        self,
        engagement: str,
        name: str,
        uid: bytes,
        key_version: int,
        envelopes: dict[str, bytes | None],
        kind: str | None,
        system: tuple[str | None] | None,
        changed: str,
        secret: Rebound | None = None,
        bound_system: bytes | None = None,
    ) -> str:
        """'ok', 'denied', 'not found' or 'no system' (audited by the server as 'edit').
        ``envelopes``: the fields to replace (None clears); ``system``: (name or None to
        unlink,) to change the link, None to keep it; ``bound_system``: with a new link and
        ``secret``, the uid of the system it is sealed for (Conflict if the server links
        another)."""
        env = {f: envelopes.get(f) for f in ("username", "url", "notes")}
        row = self._one(
            "SELECT credvault.edit_credential(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s)",
            (
                engagement,
                name,
                uid,
                key_version,
                "username" in envelopes,
                env["username"],
                "url" in envelopes,
                env["url"],
                "notes" in envelopes,
                env["notes"],
                kind,
                system is not None,
                None if system is None else system[0],
                changed,
                None if secret is None else secret.secret,
                None if secret is None else secret.request,
                bound_system,
            ),
            action="edit",
        )
        return str(row[0])

    def rename_credential(
        self, engagement: str, name: str, new_name: str, new_secret: Rebound | None = None
    ) -> str:
        """'ok', 'denied', 'not found' or 'exists' (audited by the server as 'mv').
        ``new_secret``: the secret sealed again bound to the new name."""
        row = self._one(
            "SELECT credvault.rename_credential(%s, %s, %s, %s, %s)",
            (
                engagement,
                name,
                new_name,
                None if new_secret is None else new_secret.secret,
                None if new_secret is None else new_secret.request,
            ),
            action="mv",
        )
        return str(row[0])

    def request_move(
        self, engagement: str, name: str, target: str, new_name: str
    ) -> tuple[str, int | None]:
        """Phase one of ``mv`` into another engagement: ('ok', request), or 'denied'
        (audited), 'not found' or 'exists'."""
        row = self._one(
            "SELECT outcome, request FROM credvault.request_move(%s, %s, %s, %s)",
            (engagement, name, target, new_name),
            action="mv",
        )
        return str(row[0]), None if row[1] is None else int(row[1])

    def fetch_move(self, request: int, engagement: str) -> list[MoveRow]:
        """Phase two: the credential and its earlier versions, as the request named."""
        rows = self.phase_two(
            "SELECT tbl, id, uid, version, e1, e2, e3, e4, b_name, b_kind, b_sys_uid "
            "FROM credvault.fetch_move(%s)",
            request,
            "mv",
            engagement,
        )
        return [
            MoveRow(
                str(r[0]),
                int(r[1]),
                bytes(r[2]),
                int(r[3]),
                (bytes(r[4]), _b(r[5]), _b(r[6]), _b(r[7])),
                str(r[8]),
                str(r[9]),
                _b(r[10]),
            )
            for r in rows
        ]

    def move_credential(
        self,
        request: int,
        uid: bytes,
        version: int,
        key_version: int,
        envelopes: tuple[bytes, bytes | None, bytes | None, bytes | None],
        versions: list[tuple[int, tuple[bytes, bytes | None, bytes | None, bytes | None]]],
    ) -> str:
        """Store the move in one server transaction: 'ok', 'denied' (audited) or 'exists';
        Conflict when anything changed since the fetch (nothing is changed then)."""
        cols: list[list[Any]] = [[v[1][i] for v in versions] for i in range(4)]
        row = self._one(
            "SELECT credvault.move_credential(%s, %s, %s, %s, %s, %s, %s, %s, %s::bigint[], "
            "%s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[])",
            (request, uid, version, key_version, *envelopes, [v[0] for v in versions], *cols),
            action="mv",
        )
        return str(row[0])

    def request_import(self, engagement: str) -> int | None:
        """Phase one of import's read of the systems' addresses (audited 'import-read');
        None when refused (audited 'import')."""
        row = self._one("SELECT credvault.request_import(%s)", (engagement,), action="import")
        return None if row[0] is None else int(row[0])

    def fetch_import(
        self, request: int, engagement: str
    ) -> list[tuple[bytes, str, int | None, str | None, bytes]]:
        """Phase two: (uid, name, port, protocol, address envelope) of each system."""
        rows = self.phase_two(
            "SELECT uid, name, port, protocol, address_env FROM credvault.fetch_import(%s)",
            request,
            "import",
            engagement,
        )
        return [
            (bytes(r[0]), str(r[1]), None if r[2] is None else int(r[2]),
             None if r[3] is None else str(r[3]), bytes(r[4]))
            for r in rows
        ]  # fmt: skip

    def import_credentials(
        self,
        engagement: str,
        *,
        dry: bool,
        key_version: int,
        skipped: int,
        systems: list[tuple[str, bytes, int | None, str | None, bytes]],
        credentials: list[
            tuple[
                str,
                str,
                bytes,
                str | None,
                bytes,
                bytes | None,
                bytes | None,
                bytes | None,
                bytes | None,
            ]
        ],
    ) -> str:
        """Store an import in one transaction (or, ``dry``, audit its plan): 'ok', 'denied'
        (audited), or 'credential NAME' / 'system NAME' created meanwhile.
        ``systems``: (name, uid, port, protocol, address envelope); ``credentials``: (name,
        kind, uid, system name, secret, username, url and notes envelopes, the uid of the
        system the secret is sealed for (None: none; Conflict if the server links another))."""
        scols: list[list[Any]] = [[x[i] for x in systems] for i in range(5)]
        ccols: list[list[Any]] = [[x[i] for x in credentials] for i in range(9)]
        row = self._one(
            "SELECT credvault.import_credentials(%s, %s, %s, %s, %s::text[], %s::bytea[], "
            "%s::integer[], %s::text[], %s::bytea[], %s::text[], %s::text[], %s::bytea[], "
            "%s::text[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[])",
            (engagement, dry, key_version, skipped, *scols, *ccols),
            action="import",
        )
        return str(row[0])

    def search_names(self, needle: str) -> list[tuple[str, str, str]]:
        """(engagement, credential or system, name) whose name contains ``needle`` (case
        folded), in the active engagements the member holds a role in."""
        rows = self._all(
            "SELECT e.name, 'credential', c.name FROM credvault.credentials c "
            "JOIN credvault.engagements e ON e.id = c.engagement_id "
            "WHERE e.state <> 'purged' AND strpos(lower(c.name), lower(%s)) > 0 "
            "UNION ALL SELECT e.name, 'system', s.name FROM credvault.systems s "
            "JOIN credvault.engagements e ON e.id = s.engagement_id "
            "WHERE e.state <> 'purged' AND strpos(lower(s.name), lower(%s)) > 0 "
            "ORDER BY 1, 2, 3",
            (needle, needle),
            action="find",
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def request_find(self, engagement: str, reason: str) -> int | None:
        """Phase one of a field search in one engagement (audited 'find')."""
        row = self._one(
            "SELECT credvault.request_find(%s, %s)", (engagement, reason), action="find"
        )
        return None if row[0] is None else int(row[0])

    def fetch_find(self, request: int, engagement: str) -> list[FindRow]:
        """Phase two: the non-secret envelopes of the engagement's records."""
        rows = self.phase_two(
            "SELECT tbl, name, uid, port, protocol, e1, e2, e3 FROM credvault.fetch_find(%s)",
            request,
            "find",
            engagement,
        )
        return [
            FindRow(
                str(r[0]),
                str(r[1]),
                bytes(r[2]),
                None if r[3] is None else int(r[3]),
                None if r[4] is None else str(r[4]),
                (_b(r[5]), _b(r[6]), _b(r[7])),
            )
            for r in rows
        ]

    def remove_credential(self, engagement: str, name: str) -> tuple[str, str]:
        """(outcome: ok, denied or not found; until when it stays in the trash)."""
        row = self._one(
            "SELECT outcome, until FROM credvault.remove_credential(%s, %s)",
            (engagement, name),
            action="rm",
        )
        return str(row[0]), str(row[1] or "")

    def trash_list(self, engagement: str) -> list[tuple[str, str, str, str, str]]:
        """(type, name, removed, by, expires) newest first; audited 'trash' by the server
        (empty when refused, audited too)."""
        rows = self._all(
            "SELECT typ, name, deleted_at, deleted_by, expires_at FROM credvault.trash_list(%s)",
            (engagement,),
            action="trash",
        )
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def trashed_system_links(self, engagement: str, name: str) -> list[tuple[str, bytes]]:
        """(credential name, the system's uid) of the live credentials a restore of the
        removed system ``name`` links again."""
        rows = self._all(
            "SELECT c_name, sys_uid FROM credvault.trashed_system_links(%s, %s)",
            (engagement, name),
        )
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def restore_trashed(
        self, engagement: str, name: str, system: bool, rebound: dict[bytes, Rebound] | None = None
    ) -> str:
        """'ok', 'denied', 'not found' or 'exists' (audited by the server). ``rebound``
        (a system's restore): the relinked credentials' secrets sealed again, by uid."""
        got = rebound or {}
        row = self._one(
            "SELECT credvault.restore_trashed(%s, %s, %s, %s::bytea[], %s::bytea[], %s::bigint[])",
            (engagement, name, system, list(got), *_columns(got)),
            action="restore",
        )
        return str(row[0])

    def destroy_trashed(self, engagement: str, name: str, system: bool) -> str:
        """'ok', 'denied' or 'not found' (audited by the server as 'trash-purge')."""
        row = self._one(
            "SELECT credvault.destroy_trashed(%s, %s, %s)",
            (engagement, name, system),
            action="trash purge",
        )
        return str(row[0])

    def phase_two(self, sql: str, request: int, action: str, engagement: str) -> list[Any]:
        """A phase-two call, asked again after flushing WAL another session left pending.
        On either connection (psycopg, or `get`'s libpq one: :func:`_not_durable_yet`)."""
        for attempt in range(20):
            with self._errors(action, engagement):
                try:
                    return list(self.conn.execute(sql, (request,)).fetchall())
                except Exception as e:
                    if not _not_durable_yet(e):
                        raise
            self.nudge_wal()
            time.sleep(0.005 * attempt)
        raise AccessDenied(self.member, action, engagement, "audit entry not durable")

    def rotation_fetch_records(self, request: int, engagement: str) -> list[RotationRow]:
        """Phase two of a rotation: every record of the engagement, with its binding's
        clear columns."""
        rows = self.phase_two(
            "SELECT tbl, id, uid, e1, e2, e3, e4, b_name, b_kind, b_port, b_protocol, b_sys_uid "
            "FROM credvault.rotation_fetch_records(%s)",
            request,
            "rotate",
            engagement,
        )
        return [
            RotationRow(
                str(r[0]),
                int(r[1]),
                bytes(r[2]),
                (bytes(r[3]), _b(r[4]), _b(r[5]), _b(r[6])),
                str(r[7]),
                None if r[8] is None else str(r[8]),
                None if r[9] is None else int(r[9]),
                None if r[10] is None else str(r[10]),
                _b(r[11]),
            )
            for r in rows
        ]

    def rotate_records(
        self,
        engagement: str,
        old_version: int,
        new_fp: str,
        records: list[tuple[str, int, tuple[bytes, bytes | None, bytes | None, bytes | None]]],
        copies: list[tuple[str, bytes, bytes]],
        links: list[bytes],
        request: int,
        why: str | None = None,
    ) -> int:
        """Store a rotation of every record in one transaction, the membership log's
        ``links`` appended first; Conflict if anything changed meanwhile (a record added,
        removed, or written since ``request``, the rotation's read, found it). ``why``: what
        made the lead rotate, in the audit detail as SQLCipher's ("revoked bob")."""
        envs: list[list[Any]] = [[r[2][i] for r in records] for i in range(4)]
        gcols: list[list[Any]] = [[g[i] for g in copies] for i in range(3)]
        row = self._one(
            "SELECT credvault.rotate_records(%s, %s, %s, %s::text[], %s::bigint[], "
            "%s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[], %s::text[], %s::bytea[], "
            "%s::bytea[], %s::bytea[], %s, %s)",
            (
                engagement,
                old_version,
                new_fp,
                [r[0] for r in records],
                [r[1] for r in records],
                *envs,
                *gcols,
                links,
                request,
                why,
            ),
            action="rotate",
        )
        return int(row[0])

    # -- key rotation -------------------------------------------------------------------
    def request_rotation(self, engagement: str) -> int | None:
        """Phase one of a rotation's read of every envelope (audited, committed)."""
        row = self._one("SELECT credvault.request_rotation(%s)", (engagement,), action="rotate")
        return None if row[0] is None else int(row[0])

    def rotation_grantees(self, engagement: str) -> list[tuple[str, str]]:
        rows = self._all(
            "SELECT member, role FROM credvault.rotation_grantees(%s)",
            (engagement,),
            action="rotate",
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    # -- audit --------------------------------------------------------------------------
    def audit_verify(self) -> int | None:
        """The first position whose hash does not follow, or None."""
        row = self._one("SELECT credvault.audit_verify()", action="verify the audit trail")
        return None if row[0] is None else int(row[0])

    def audit_head(self) -> tuple[int, bytes]:
        """The chain's head, once it is on disk (and on a synchronous standby, if one is
        configured): a 'get' entry commits asynchronously in ``CALL credvault.read``
        (upgrade-2.sql, section readclaim), so a head can be visible before its flush. A
        checkpoint naming it, then a crash or a failover, would be a false alarm of
        tampering forever after. One synchronous commit of our own flushes everything
        before it (as ``nudge_wal`` does, but waiting for the standby too)."""
        row = self._one("SELECT seq, hash FROM credvault.audit_head_info()")
        with self._errors("read the audit trail"), self.conn.transaction():
            self.conn.execute("SET LOCAL synchronous_commit = on")
            self.conn.execute("SELECT credvault.nudge_wal()")
        return int(row[0]), bytes(row[1])

    def audit_hash_at(self, seq: int) -> bytes | None:
        row = self._one("SELECT credvault.audit_hash_at(%s)", (seq,))
        return _b(row[0])

    def audit_rows(self, engagement: str) -> list[tuple[int, str, str, str, str, str, str]]:
        rows = self._all(
            "SELECT seq, ts, member, action, item, outcome, detail FROM credvault.audit_rows(%s)",
            (engagement,),
            action="read the audit",
        )
        return [
            (int(r[0]), _ts(r[1]), str(r[2]), str(r[3]), str(r[4] or ""), str(r[5]), str(r[6]))
            for r in rows
        ]


def _columns(rebound: dict[bytes, Rebound]) -> tuple[list[bytes], list[int]]:
    """The secrets and their requests, in the order of the dict's uids."""
    return [r.secret for r in rebound.values()], [r.request for r in rebound.values()]


def _not_durable_yet(e: BaseException) -> bool:
    kind = _db_error(e)
    return kind is not None and kind[0] == _NOT_DURABLE_YET


def _changed_meanwhile(e: BaseException) -> bool:
    kind = _db_error(e)
    return kind is not None and kind[0] == _SERIALIZATION_FAILURE


def _connect_error(member: str, e: BaseException) -> CredvaultError:
    text = _message(e)
    if "password authentication failed" in text or "not permitted to log in" in text:
        return AccessDenied(member, "log in to the team vault", None, "login refused by the server")
    return StoreError(f"cannot connect to the team vault: {text}")


def _engagement(r: Any) -> EngagementRow:
    return EngagementRow(
        bytes(r[0]),
        str(r[1]),
        str(r[2]),
        str(r[3]),
        int(r[4]),
        str(r[5]),
        bool(r[6]),
        bool(r[7]),
        _ts(r[8]),
    )


def _system(r: Any) -> SystemRow:
    return SystemRow(
        bytes(r[0]),
        str(r[1]),
        None if r[2] is None else int(r[2]),
        None if r[3] is None else str(r[3]),
        _ts(r[4]),
        _ts(r[5]),
    )
