"""A minimal libpq binding for ``credvault get`` on a team vault (issue 14, "Figures").

Importing psycopg costs ~0.1 s of CPU (its error classes, type adapters, asyncio, ssl,
importlib.metadata), about as much as the whole SQLCipher ``credvault get``. The read path
needs none of it: a handful of statements with text, integer and bytea parameters and
results. So the CLI's ``get`` talks to the same libpq that psycopg uses — the one bundled
in ``psycopg[binary]`` (the ``credvault[postgres]`` extra), else the system's
``libpq.so.5`` — through :mod:`ctypes`, and every other command keeps psycopg. No new
dependency: libpq is what psycopg drives in either of its implementations.

Everything libpq does stays libpq's: connection strings, services, ``~/.pgpass``, TLS
(``sslmode=verify-full``), multi-host lists, SCRAM. Results come in PostgreSQL's binary
format (unambiguous whatever the session's ``DateStyle`` or ``TimeZone``); parameters go as
text, bytea as binary. :class:`Connection` offers the subset of a psycopg connection that
:class:`credvault.postgres.store.PgStore` and :func:`credvault.postgres.server.check_schema`
use (``execute(...).fetchone()/fetchall()``, ``transaction()``, ``info.dbname``,
``close()``), and raises :class:`Error` with the server's SQLSTATE, which the store maps
exactly as it maps psycopg's errors. Server notices are dropped (psycopg logs them; libpq
would print them on stderr).
"""

from __future__ import annotations

import contextlib
import ctypes
import struct
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_CONNECTION_OK = 0
_PGRES_COMMAND_OK = 1
_PGRES_TUPLES_OK = 2
_DIAG_SQLSTATE = ord("C")
_DIAG_MESSAGE_PRIMARY = ord("M")

# Result types this binding decodes (binary format); anything else is a programming error.
_BOOL, _BYTEA, _NAME, _INT8, _INT2, _INT4, _TEXT, _OID = 16, 17, 19, 20, 21, 23, 25, 26
_BPCHAR, _VARCHAR, _TIMESTAMP, _TIMESTAMPTZ, _UNKNOWN = 1042, 1043, 1114, 1184, 705
_VOID = 2278  # a function returning void (nudge_wal): read as None, as psycopg does
# One-dimensional arrays of the types above (the membership log's links come as bytea[]).
_ARRAYS = {1000: _BOOL, 1001: _BYTEA, 1016: _INT8, 1007: _INT4, 1009: _TEXT, 1015: _VARCHAR}
_TEXTUAL = frozenset({_NAME, _TEXT, _BPCHAR, _VARCHAR, _UNKNOWN})
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_INFINITY = 2**63 - 1

_NoticeProcessor = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


def _ignore(_arg: Any, _message: Any) -> None:
    """Server notices are not output of a credvault command."""


_drop_notice = _NoticeProcessor(_ignore)


class Error(Exception):
    """A failed statement or connection: ``sqlstate`` is None for client-side failures
    (cannot connect, connection lost), which the store treats as psycopg's
    OperationalError."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.diag = _Diag(message)

    @property
    def operational(self) -> bool:
        """psycopg's OperationalError classes: connection, resources, operator, system."""
        return self.sqlstate is None or self.sqlstate[:2] in ("08", "53", "57", "58")


class _Diag:
    def __init__(self, message_primary: str) -> None:
        self.message_primary = message_primary


class _Option(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


_lib: Any = None
_tried = False


def _candidates() -> Iterator[str]:
    """psycopg[binary]'s own libpq first (what every other command uses), then the
    system's. Found without importing psycopg_binary (that would run its __init__)."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("psycopg_binary")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for where in spec.submodule_search_locations:
            libs = Path(where).parent / "psycopg_binary.libs"
            yield from sorted(str(p) for p in libs.glob("libpq-*.so*"))
    yield "libpq.so.5"


def load() -> Any:
    """The libpq library with its prototypes set, or None where there is none (the
    caller then uses psycopg, which would fail the same way or find its own)."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if lib.PQlibVersion() < 100000:  # SCRAM, multi-host and target_session_attrs
            continue
        _prototypes(lib)
        _lib = lib
        break
    return _lib


def _prototypes(lib: Any) -> None:
    c = ctypes
    p, s, i, u = c.c_void_p, c.c_char_p, c.c_int, c.c_uint
    for name, res, args in (
        ("PQconnectdbParams", p, [c.POINTER(s), c.POINTER(s), i]),
        ("PQstatus", i, [p]),
        ("PQerrorMessage", s, [p]),
        ("PQfinish", None, [p]),
        ("PQdb", s, [p]),
        ("PQsetNoticeProcessor", p, [p, _NoticeProcessor, p]),
        ("PQexecParams", p, [p, s, i, p, c.POINTER(s), c.POINTER(i), c.POINTER(i), i]),
        ("PQresultStatus", i, [p]),
        ("PQresultErrorField", s, [p, i]),
        ("PQresultErrorMessage", s, [p]),
        ("PQntuples", i, [p]),
        ("PQnfields", i, [p]),
        ("PQftype", u, [p, i]),
        ("PQgetvalue", p, [p, i, i]),
        ("PQgetlength", i, [p, i, i]),
        ("PQgetisnull", i, [p, i, i]),
        ("PQclear", None, [p]),
        ("PQconninfoParse", p, [s, c.POINTER(p)]),
        ("PQconninfoFree", None, [p]),
        ("PQfreemem", None, [p]),
    ):
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


def _text(b: bytes | None) -> str:
    return "" if b is None else b.decode("utf-8", "replace")


def conninfo_parse(target: str) -> dict[str, str]:
    """The settings a connection string (``key=value`` or URI) names, as libpq parses it
    (psycopg's ``conninfo_to_dict`` is the same libpq call); :class:`Error` if malformed."""
    lib = load()
    if lib is None:
        raise Error("libpq is not available")
    err = ctypes.c_void_p()
    opts = lib.PQconninfoParse(target.encode(), ctypes.byref(err))
    if not opts:
        message = "invalid connection string"
        if err.value:
            message = _text(ctypes.string_at(err.value)).strip() or message
            lib.PQfreemem(err)
        raise Error(message)
    try:
        out: dict[str, str] = {}
        arr = ctypes.cast(opts, ctypes.POINTER(_Option))
        k = 0
        while arr[k].keyword is not None:
            if arr[k].val is not None:
                out[_text(arr[k].keyword)] = _text(arr[k].val)
            k += 1
        return out
    finally:
        lib.PQconninfoFree(opts)


def _decode(oid: int, raw: bytes) -> Any:
    if oid == _VOID:
        return None
    if oid == _BYTEA:
        return raw
    if oid in _TEXTUAL:
        return raw.decode("utf-8")
    if oid in (_INT8, _INT4, _INT2, _OID):
        return int.from_bytes(raw, "big", signed=oid != _OID)
    if oid == _BOOL:
        return raw != b"\x00"
    if oid in _ARRAYS:
        return _decode_array(oid, raw)
    if oid in (_TIMESTAMPTZ, _TIMESTAMP):
        (us,) = struct.unpack("!q", raw)
        if us == _INFINITY:
            at = datetime.max.replace(tzinfo=UTC)
        elif us == -_INFINITY - 1:
            at = datetime.min.replace(tzinfo=UTC)
        else:
            at = _EPOCH + timedelta(microseconds=us)
        return at if oid == _TIMESTAMPTZ else at.replace(tzinfo=None)
    raise Error(f"credvault's libpq binding cannot read type oid {oid}")


def _decode_array(oid: int, raw: bytes) -> list[Any]:
    """PostgreSQL's binary array: ndim, has-null flag, element oid, (size, lower bound) per
    dimension, then each element as a 4-byte length (-1: NULL) and its bytes. Only
    one-dimensional arrays of the element type the array type names are read, as psycopg
    reads them (a list; an empty array is ``[]``)."""
    ndim, _flags, elem = struct.unpack_from("!iiI", raw, 0)
    if ndim == 0:
        return []
    if ndim != 1 or elem != _ARRAYS[oid]:
        raise Error(f"credvault's libpq binding cannot read this array (oid {oid}, ndim {ndim})")
    (count, _lower) = struct.unpack_from("!ii", raw, 12)
    pos = 20
    out: list[Any] = []
    for _ in range(count):
        (n,) = struct.unpack_from("!i", raw, pos)
        pos += 4
        if n < 0:
            out.append(None)
            continue
        out.append(_decode(elem, raw[pos : pos + n]))
        pos += n
    if pos != len(raw):
        raise Error(f"credvault's libpq binding read a malformed array (oid {oid})")
    return out


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)


class _Info:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dbname(self) -> str:
        return _text(self._conn.lib.PQdb(self._conn.pg))


def _placeholders(sql: str) -> str:
    """psycopg's ``%s`` (and ``%%``) as libpq's ``$1, $2, …``."""
    parts = sql.split("%%")
    n = 0
    out = []
    for part in parts:
        pieces = part.split("%s")
        for j, piece in enumerate(pieces):
            if j:
                n += 1
                out.append(f"${n}")
            out.append(piece)
        out.append("%")
    return "".join(out[:-1])


class Connection:
    """One autocommit connection: each statement outside ``transaction()`` commits."""

    autocommit = True

    def __init__(self, lib: Any, pg: int) -> None:
        self.lib = lib
        self.pg: int | None = pg
        self.info = _Info(self)

    def __repr__(self) -> str:
        return "libpq.Connection()"

    @classmethod
    def connect(cls, target: str, **settings: Any) -> Connection:
        """``target`` as libpq expands it, then ``settings`` (user, password,
        connect_timeout…) over it, as psycopg's keyword arguments do."""
        lib = load()
        if lib is None:
            raise Error("libpq is not available")
        conninfo_parse(target)  # a malformed string: Error (with libpq's words) before any I/O
        pairs = [("dbname", target)] + [(k, str(v)) for k, v in settings.items() if v is not None]
        n = len(pairs)
        keys = (ctypes.c_char_p * (n + 1))(*[k.encode() for k, _ in pairs], None)
        values = (ctypes.c_char_p * (n + 1))(*[v.encode() for _, v in pairs], None)
        pg = lib.PQconnectdbParams(keys, values, 1)
        if not pg:
            raise Error("out of memory connecting to the server")
        if lib.PQstatus(pg) != _CONNECTION_OK:
            message = _text(lib.PQerrorMessage(pg)).strip()
            lib.PQfinish(pg)
            raise Error(message or "cannot connect to the server")
        lib.PQsetNoticeProcessor(pg, _drop_notice, None)
        return cls(lib, pg)

    def close(self) -> None:
        if self.pg:
            self.lib.PQfinish(self.pg)
            self.pg = None

    @property
    def closed(self) -> bool:
        return not self.pg

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        lib = self.lib
        if not self.pg:
            raise Error("the connection is closed")
        n = len(params)
        values = (ctypes.c_char_p * max(n, 1))()
        lengths = (ctypes.c_int * max(n, 1))()
        formats = (ctypes.c_int * max(n, 1))()
        for k, v in enumerate(params):
            if v is None:
                continue
            if isinstance(v, bytes | bytearray | memoryview):
                raw, formats[k] = bytes(v), 1
            elif isinstance(v, bool):
                raw = b"t" if v else b"f"
            elif isinstance(v, int | str):
                raw = str(v).encode("utf-8")
            else:
                raise TypeError(f"cannot send a {type(v).__name__} parameter")
            values[k], lengths[k] = raw, len(raw)
        res = lib.PQexecParams(
            self.pg, _placeholders(sql).encode("utf-8"), n, None, values, lengths, formats, 1
        )
        if not res:
            raise Error(_text(lib.PQerrorMessage(self.pg)).strip() or "no result")
        try:
            status = lib.PQresultStatus(res)
            if status not in (_PGRES_COMMAND_OK, _PGRES_TUPLES_OK):
                state = lib.PQresultErrorField(res, _DIAG_SQLSTATE)
                primary = lib.PQresultErrorField(res, _DIAG_MESSAGE_PRIMARY)
                text = _text(primary) or _text(lib.PQresultErrorMessage(res)).strip()
                raise Error(text or "statement failed", None if state is None else _text(state))
            ncols = lib.PQnfields(res)
            types = [lib.PQftype(res, c) for c in range(ncols)]
            rows = []
            for r in range(lib.PQntuples(res)):
                row: list[Any] = []
                for c in range(ncols):
                    if lib.PQgetisnull(res, r, c):
                        row.append(None)
                    else:
                        raw = ctypes.string_at(
                            lib.PQgetvalue(res, r, c), lib.PQgetlength(res, r, c)
                        )
                        row.append(_decode(types[c], raw))
                rows.append(tuple(row))
            return _Rows(rows)
        finally:
            lib.PQclear(res)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, or ROLLBACK when the block raises."""
        self.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self.pg:
                with contextlib.suppress(Error):
                    self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")
