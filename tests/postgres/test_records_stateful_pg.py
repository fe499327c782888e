"""The reads of a credential's history, of a move across engagements and of removed and
restored records, interleaved with colleagues' writes (put, put --system, system set, rm and
restore, system rm and restore, mv to another engagement and back) and with the attacker's
fetch-then-ROLLBACK, as a hypothesis state machine: the sibling of
test_reads_stateful_pg.py, whose review named these paths as not interleaved.

The model keeps every row the reads can release (the credential db, its earlier versions,
its trashed copies, the system web and its trashed copies; in engagement A or, after an
`mv`, in B; db linked to web or not), each row version with a token of its own that every
write of the row replaces. A request covers the row versions its path reads (as the
server's pins: sections pinned, pinmany, rebindpin and verpin of upgrade-2.sql); the
invariant, for every path:

* a phase two releases exactly the values its request covered, and is refused (40001,
  "changed since the read request"; or nothing at all, or "no such read request", for a
  row removed or moved since) exactly when one of those row versions has been written,
  removed or moved since: so a removed row's values are released to no request made
  before the removal (and none made after it: the request finds nothing), and a restored
  row (a new row version) only to requests made after the restore;
* `get --version N` and `get --version N --field F` (fetch_record's 'version' and
  'version-show' kinds) release exactly version N as the request found it, and only while
  the credential is the one the request found: not removed, moved, or removed and restored
  since. The server may also refuse one after a `put` of the credential (a new current
  version; version N itself unchanged): the client asks again;
* `get --field F` ('fields') and a credential's system address ('credential-system')
  release the current row, and its linked system's, as the request found them; so do
  `get` and `otp`/`run`/`ssh` (a system rm cuts the link: a write of the credential's row);
* a move's read (request_move/fetch_move) releases the credential and its versions as
  the request found them;
* a request claimed once is not claimed again; the reads change nothing stored (the
  model and the database agree after every step, links included).

Requests live across steps (the bundle: any writes between a request and its phase twos),
and `race` asks once on every path, runs one to three writes, then every phase two, in
one step, so that a short run (30 examples, ~3 s) meets every read with most write
sequences; the writes are ordered so that one that does not apply becomes an undo
(rm -> restore, mv -> mv back) or a write of the link's system. Broken on purpose (a
scratch copy of upgrade-2.sql), this run failed within its first 9 examples (~0.5 s of
it) for each of: section verpin undone; verpin without the credential's pin; fetch_move's
versions without the credential's (section rebindpin); fetch_record's 'fields', and its
'credential-system' without the system's pin, and fetch_use without the linked system's
(section pinned); fetch_export_records' trash rows without theirs (section pinmany).
Not modelled: the rebind reads and their stores (mv within an engagement, edit, the
re-sealing at system rm/restore of bound secrets), trash purge and expiry, a rotation's
store, revert, grants changing between the phases, truly concurrent sessions.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, ClassVar, NamedTuple

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from pg_cluster import Cluster, fetch_as_a_client, fetch_rolled_back, new_pg_vault

psycopg = pytest.importorskip("psycopg")

CHANGED = "changed since the read request"
KV1 = b"\x02\x00\x00\x00\x01"  # a record-bound envelope under key version 1 (mv's re-seal)


class Row(NamedTuple):
    """A row version as the model keeps it: its table, engagement ('A' or 'B'), token (new
    at every write of the row), and its envelopes: ``sec`` the secret (a system's address),
    ``user`` the username (None for a system); a credential's (or its trashed copy's) uid
    and whether it is linked to web; a trashed system's linked uids."""

    tbl: str
    eng: str
    token: int
    sec: bytes
    user: bytes | None
    uid: bytes | None = None
    link: bool = False
    linked: tuple[bytes, ...] = ()


# the rows of many-row phase twos, as one comparable value: "tbl:e1" sorted, joined by |
AGG = (
    "string_agg(convert_to(tbl, 'UTF8') || ':'::bytea || coalesce(e1, ''::bytea), '|'::bytea"
    ' ORDER BY tbl COLLATE "C", e1)'
)
IMPORT_AGG = "string_agg('systems:'::bytea || address_env, '|'::bytea ORDER BY address_env)"


def fetch_all(conn: Any, req: int, columns: str, function: str) -> list[Any]:
    """:func:`fetch_as_a_client`, every row (WAL left unflushed nudged, asked again)."""
    for _ in range(50):
        try:
            # columns, function: literals of this module, never input
            sql = f"SELECT {columns} FROM credvault.{function}(%s)"  # noqa: S608
            return conn.execute(sql, (req,)).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState as e:
            if "not yet durable" not in str(e):
                raise
        conn.execute("SELECT credvault.nudge_wal()")
    raise AssertionError("the WAL never settled")


class Path(NamedTuple):
    """A read path: who reads, the phase two and the column compared."""

    who: str
    fetch: str
    columns: str


PATHS = {
    "get": Path("bob", "fetch", "secret_env"),
    "use": Path("bob", "fetch_use", "secret_env"),
    "fields": Path("bob", "fetch_record", "e2"),
    "credential-system": Path("bob", "fetch_record", "e1"),
    "version": Path("bob", "fetch_record", "e1"),
    "version-show": Path("bob", "fetch_record", "e2"),
    "system": Path("bob", "fetch_record", "e1"),
    "find": Path("bob", "fetch_find", AGG),
    "export": Path("bob", "fetch_export_records", AGG),
    "import": Path("bob", "fetch_import", IMPORT_AGG),
    "rotation": Path("alice", "rotation_fetch_records", AGG),
    "move": Path("bob", "fetch_move", AGG),
}


class Request:
    """A request as the machine made it: its path, id, the row versions it covers
    (``pins``: key -> token; ``loose``: tokens whose change the server may also refuse
    for), the value it must release, whether its claim has committed."""

    def __init__(
        self, path: str, req: int, pins: dict[Any, int], loose: dict[Any, int], value: Any
    ) -> None:
        self.path, self.req, self.pins, self.loose, self.value = path, req, pins, loose, value
        self.used = False
        self.claimed = False
        self.since: set[str] = set()  # the writes since (for the statistics' events)

    def __repr__(self) -> str:
        return f"Request({self.path}, {self.req})"


_engagements = itertools.count(1)


class Records(RuleBasedStateMachine):
    # alice, bob, the DBA (the invariant's reader: members read no envelope) and the owner:
    # one connection each for the whole run (each machine has engagements of its own)
    conns: ClassVar[dict[str, Any]] = {}
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        tag = f"{next(_engagements)}_{secrets.token_hex(2)}"
        self.names = {"A": f"rs{tag}a", "B": f"rs{tag}b"}
        for eng in self.names.values():
            # as PgVault.engagement and .grant, through the connections kept
            self.conns["owner"].execute(
                "INSERT INTO credvault.engagements (uid, name, client, state, key_version,"
                " key_fp, created_by, lead, creation_sig)"
                " VALUES (%s, %s, 'acme', 'active', 1, %s, 'alice', 'alice', 'sig')",
                (secrets.token_bytes(16), eng, "fp-" + eng),
            )
            for who, role in (("alice", "lead"), ("bob", "engineer")):
                self.conns["alice"].execute(
                    "SELECT credvault.put_grant(%s, %s, %s, %s, 1, %s, %s)",
                    (eng, who, role, b"role-sig", b"sealed-to-" + who.encode(), b"copy-sig"),
                )
        self.tokens = itertools.count(1)
        self.marks = itertools.count(1)
        self.rows: dict[Any, Row] = {}
        self.life = 0  # the credential's incarnation: rm, restore and mv make a new one
        self.ver = 1  # its current version number
        self.web = secrets.token_bytes(16)
        for _ in range(3):  # a history from the start: versions 1 and 2, and the current 3
            self._put()
        address = b"ADDRESS-0"
        self.conns["alice"].execute(
            "SELECT credvault.put_system(%s, 'web', %s, 1, 22, 'ssh', %s, NULL, false,"
            " ARRAY['address', 'port', 'protocol'])",
            (self.names["A"], self.web, address),
        )
        self.rows["sys"] = Row("systems", "A", next(self.tokens), address, None)
        self.trash = itertools.count(1)
        self.live: list[Request] = []

    def conn(self, who: str) -> Any:
        """``who``'s connection, the WAL flushed first (nudge_wal, as PgStore does when a
        phase two says "not yet durable"): a rolled-back fetch or a refused one leaves an
        abort record that nobody flushes, and the next phase two would wait for it (~50 ms,
        then refuse and nudge)."""
        conn = self.conns[who]
        conn.execute("SELECT credvault.nudge_wal()")
        return conn

    # -- the model ------------------------------------------------------------------------
    def where(self) -> str | None:
        """Where the credential db is live: 'A', 'B', or None (in the trash)."""
        cred = self.rows.get("cred")
        return cred.eng if cred else None

    def versions(self) -> dict[int, Row]:
        return {k[1]: r for k, r in self.rows.items() if isinstance(k, tuple) and k[0] == "ver"}

    def current(self, key: Any) -> int | None:
        if key == "life":
            return self.life
        row = self.rows.get(key)
        return row.token if row else None

    def stale(self, r: Request) -> bool:
        """A row version the request covers written, removed or moved since."""
        return any(self.current(k) != t for k, t in r.pins.items())

    def loosened(self, r: Request) -> bool:
        return any(self.current(k) != t for k, t in r.loose.items())

    def _wrote(self, what: str) -> None:
        for r in self.live:
            r.since.add(what)

    def in_a(self, *tbls: str) -> dict[Any, Row]:
        return {k: r for k, r in self.rows.items() if r.eng == "A" and r.tbl in tbls}

    @staticmethod
    def agg(rows: list[tuple[str, bytes]]) -> bytes | None:
        return b"|".join(t.encode() + b":" + e for t, e in sorted(rows)) if rows else None

    # -- the colleagues' writes -----------------------------------------------------------
    def _put(self, link: bool = False) -> None:
        """A put of A/db (a new uid; the link kept), or with ``link`` a put --system web
        (put_credential_linked: the row's own uid, as the client sends it)."""
        n = next(self.marks)
        secret, user = b"SECRET-%d" % n, b"USER-%d" % n
        old = self.rows.get("cred")
        if link:
            assert old is not None
            assert old.uid is not None
            uid = old.uid
            self.conns["alice"].execute(
                "SELECT credvault.put_credential_linked(%s, 'db', 'password', %s, 1, %s, %s,"
                " NULL, NULL, 'web')",
                (self.names["A"], uid, secret, user),
            )
        else:
            uid = secrets.token_bytes(16)
            self.conns["alice"].execute(
                "SELECT credvault.put_credential(%s, 'db', 'password', %s, 1, %s, %s)",
                (self.names["A"], uid, secret, user),
            )
        if old is not None:  # keep_version: the replaced row becomes version N
            self.rows[("ver", self.ver)] = Row(
                "credential_versions", "A", next(self.tokens), old.sec, old.user
            )
            self.ver += 1
        linked = link or (old is not None and old.link)
        self.rows["cred"] = Row("credentials", "A", next(self.tokens), secret, user, uid, linked)

    def link(self) -> None:
        """alice puts a new value of A/db linked to web (put --system web)."""
        self._wrote("link")
        self._put(link=True)

    def put(self) -> None:
        """alice stores a new value of A/db: the one it replaces becomes an earlier version."""
        self._wrote("put")
        self._put()

    def set_address(self) -> None:
        """alice changes web's address (system set)."""
        self._wrote("set_address")
        address = b"ADDRESS-%d" % next(self.marks)
        self.conns["alice"].execute(
            "SELECT credvault.set_system(%s, 'web', %s, 1, 22, 'ssh', %s, NULL, true,"
            " ARRAY['address'])",
            (self.names["A"], self.web, address),
        )
        self.rows["sys"] = self.rows["sys"]._replace(token=next(self.tokens), sec=address)

    def remove(self) -> None:
        """alice removes A/db (rm): to the trash, its versions kept there with it."""
        self._wrote("remove")
        out = self.conns["alice"].execute(
            "SELECT outcome FROM credvault.remove_credential(%s, 'db')", (self.names["A"],)
        )
        assert out.fetchone()[0] == "ok"
        cred = self.rows.pop("cred")
        self.rows[("ctrash", next(self.trash))] = Row(
            "credential_trash", "A", next(self.tokens), cred.sec, cred.user, cred.uid, cred.link
        )
        self.life += 1

    def restore(self) -> None:
        """alice restores db from the trash (its latest removal)."""
        self._wrote("restore")
        out = self.conns["alice"].execute(
            "SELECT credvault.restore_trashed(%s, 'db', false)", (self.names["A"],)
        )
        assert out.fetchone()[0] == "ok"
        t = self.rows.pop(self.last_trashed("credential_trash"))
        link = t.link and "sys" in self.rows  # its system back with it, if that is there
        self.rows["cred"] = Row("credentials", "A", next(self.tokens), t.sec, t.user, t.uid, link)
        self.life += 1

    def _move(self, src: str, dst: str) -> None:
        """alice moves db from src to dst as the client does: request_move, fetch_move, the
        envelopes sealed again (here: new marked bytes), move_credential."""
        alice = self.conns["alice"]
        req = alice.execute(
            "SELECT request FROM credvault.request_move(%s, 'db', %s, 'db')",
            (self.names[src], self.names[dst]),
        ).fetchone()[0]
        assert req is not None
        got = fetch_all(alice, req, "tbl, id, uid, version", "fetch_move")
        (cred,) = [g for g in got if g[0] == "credentials"]
        vers = sorted((g for g in got if g[0] == "credential_versions"), key=lambda g: g[3])
        assert [g[3] for g in vers] == sorted(self.versions())

        def sealed(what: bytes) -> bytes:
            return KV1 + what + b"-MOVED-%d" % next(self.marks)

        c_sec, c_user = sealed(b"SECRET"), sealed(b"USER")
        v_sec = [sealed(b"SECRET-V%d" % g[3]) for g in vers]
        v_user = [sealed(b"USER-V%d" % g[3]) for g in vers]
        out = alice.execute(
            "SELECT credvault.move_credential(%s, %s, %s, 1, %s, %s, NULL, NULL,"
            " %s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[])",
            (
                req, cred[2], cred[3], c_sec, c_user, [g[1] for g in vers], v_sec, v_user,
                [None] * len(vers), [None] * len(vers),
            ),
        )  # fmt: skip
        assert out.fetchone()[0] == "ok"
        self.rows["cred"] = Row("credentials", dst, next(self.tokens), c_sec, c_user, cred[2])
        for g, s, u in zip(vers, v_sec, v_user, strict=True):
            self.rows[("ver", g[3])] = Row("credential_versions", dst, next(self.tokens), s, u)
        self.life += 1

    def move_away(self) -> None:
        """alice moves A/db to B/db (mv across engagements)."""
        self._wrote("move_away")
        self._move("A", "B")

    def move_back(self) -> None:
        """alice moves B/db back to A/db: the same rows (ids) in A again, sealed again."""
        self._wrote("move_back")
        self._move("B", "A")

    def remove_system(self) -> None:
        """alice removes web (system rm): to the trash."""
        self._wrote("remove_system")
        out = self.conns["alice"].execute(
            "SELECT outcome FROM credvault.remove_system(%s, 'web')", (self.names["A"],)
        )
        assert out.fetchone()[0] == "ok"
        s = self.rows.pop("sys")
        cred = self.rows.get("cred")
        linked: tuple[bytes, ...] = ()
        if cred is not None and cred.link:  # the link cut (ON DELETE SET NULL), kept here
            assert cred.uid is not None
            linked = (cred.uid,)
            self.rows["cred"] = cred._replace(token=next(self.tokens), link=False)
        self.rows[("strash", next(self.trash))] = Row(
            "system_trash", "A", next(self.tokens), s.sec, None, linked=linked
        )

    def restore_system(self) -> None:
        """alice restores web from the trash (a new row, under a new id)."""
        self._wrote("restore_system")
        out = self.conns["alice"].execute(
            "SELECT credvault.restore_trashed(%s, 'web', true)", (self.names["A"],)
        )
        assert out.fetchone()[0] == "ok"
        t = self.rows.pop(self.last_trashed("system_trash"))
        self.rows["sys"] = Row("systems", "A", next(self.tokens), t.sec, None)
        # the credentials it was linked to linked again (the live ones without a link), and
        # their trashed copies without a system marked with it
        for k, r in list(self.rows.items()):
            relinked = r.tbl in ("credentials", "credential_trash") and r.uid in t.linked
            if relinked and r.eng == "A" and not r.link:
                self.rows[k] = r._replace(token=next(self.tokens), link=True)

    def last_trashed(self, tbl: str) -> Any:
        """The key of the latest removal in the trash table ``tbl`` (what restore takes)."""
        return max(k for k, r in self.rows.items() if r.tbl == tbl)

    # in this order, a write that does not apply becomes the next one that does: with db
    # in the trash put and rm become its restore; with db in B, mv away its move back
    WRITES = (
        "put", "remove", "restore", "link", "set_address", "move_away", "move_back",
        "remove_system", "restore_system",
    )  # fmt: skip

    def can(self) -> dict[str, bool]:
        """Which writes apply now. A secret sealed again by an mv is record-bound (0x02):
        the server refuses to restore one bound to a system that is not there, to link one
        again at a system's restore without sealing it again, or to remove a system one is
        linked to (the client seals them again first; not modelled): not done here."""
        trashed = {r.tbl for r in self.rows.values()}
        cred = self.rows.get("cred")
        bound = cred is not None and cred.sec.startswith(KV1[:1])
        last = (
            self.rows.get(self.last_trashed("credential_trash"))
            if ("credential_trash" in trashed)
            else None
        )
        relinks = "system_trash" in trashed and bound and cred is not None and not cred.link
        if relinks:
            relinks = cred.uid in self.rows[self.last_trashed("system_trash")].linked
        return {
            "put": self.where() == "A",
            "set_address": "sys" in self.rows,
            "remove": self.where() == "A",
            "restore": last is not None and "cred" not in self.rows and not (
                last.sec.startswith(KV1[:1]) and last.link and "sys" not in self.rows
            ),
            "move_away": self.where() == "A",
            "move_back": self.where() == "B",
            "link": self.where() == "A" and "sys" in self.rows and not bool(cred and cred.link),
            "remove_system": "sys" in self.rows and not (bound and cred and cred.link),
            "restore_system": "system_trash" in trashed and not relinks,
        }  # fmt: skip

    @rule(what=st.sampled_from(WRITES))
    def write(self, what: str) -> None:
        """A colleague's write: ``what``, or the next one in WRITES that applies now (one
        rule for all of them, so the reads get most of the steps)."""
        can = self.can()
        i = self.WRITES.index(what)
        what = next(w for w in self.WRITES[i:] + self.WRITES[:i] if can[w])
        note(f"write: {what}")
        getattr(self, what)()

    # -- the reads ------------------------------------------------------------------------
    def expect(self, path: str, ver: int | None) -> tuple[dict[Any, int], dict[Any, int], Any]:
        """What a request of ``path`` made now covers (pins, loose) and releases; the
        value None with no pins: the request finds nothing (audited, NULL)."""
        rows = self.rows
        cred = rows.get("cred") if self.where() == "A" else None
        sys = rows.get("sys")
        if path in ("get", "use", "fields", "credential-system"):
            if cred is None:
                return {}, {}, None
            # the credential's row, and its linked system's
            pins = {"cred": cred.token, **({"sys": sys.token} if cred.link and sys else {})}
            if path == "credential-system":  # the address, NULL without a link
                return pins, {}, sys.sec if cred.link and sys else None
            return pins, {}, cred.user if path == "fields" else cred.sec
        if path in ("version", "version-show"):
            v = rows.get(("ver", ver))
            if cred is None or v is None:
                return {}, {}, None
            return (
                {("ver", ver): v.token, "life": self.life},
                {"cred": cred.token},
                v.sec if path == "version" else v.user,
            )
        if path == "system":
            return ({"sys": sys.token}, {}, sys.sec) if sys else ({}, {}, None)
        if path == "move":
            if cred is None:
                return {}, {}, None
            got = {"cred": cred, **{k: r for k, r in rows.items() if k[0] == "ver"}}
            return (
                {k: r.token for k, r in got.items()},
                {},
                self.agg([(r.tbl, r.sec) for r in got.values()]),
            )
        tbls = {
            "find": ("credentials", "systems"),
            "import": ("systems",),
            "export": ("systems", "credential_versions", "credential_trash", "system_trash"),
            "rotation": (
                "credentials", "systems", "credential_versions", "credential_trash",
                "system_trash",
            ),
        }[path]  # fmt: skip
        got = self.in_a(*tbls)
        # find releases a credential's username as its e1; the others its secret
        find = path == "find"
        value = self.agg(
            [(r.tbl, r.user if find and r.user is not None else r.sec) for r in got.values()]
        )
        return {k: r.token for k, r in got.items()}, {}, value

    def ask(self, path: str, ver: int | None) -> Any:
        a, b = self.names["A"], self.names["B"]
        conn = self.conns[PATHS[path].who]
        sql, args = {
            "get": ("SELECT credvault.request_read(%s, 'db')", (a,)),
            "use": ("SELECT credvault.request_use('get', %s, 'db', '', 'run')", (a,)),
            "fields": ("SELECT credvault.request_record('fields', %s, 'db')", (a,)),
            "credential-system": (
                "SELECT credvault.request_record('credential-system', %s, 'db')", (a,)
            ),
            "version": ("SELECT credvault.request_record('version', %s, 'db', '', %s)", (a, ver)),
            "version-show": (
                "SELECT credvault.request_record('version-show', %s, 'db', '', %s)", (a, ver)
            ),
            "system": ("SELECT credvault.request_record('system', %s, 'web')", (a,)),
            "find": ("SELECT credvault.request_find(%s)", (a,)),
            "export": ("SELECT credvault.request_export_records(%s, 'T-1')", (a,)),
            "import": ("SELECT credvault.request_import(%s)", (a,)),
            "rotation": ("SELECT credvault.request_rotation(%s)", (a,)),
            "move": ("SELECT request FROM credvault.request_move(%s, 'db', %s, 'db2')", (a, b)),
        }[path]  # fmt: skip
        return conn.execute(sql, args).fetchone()[0]

    def _request(self, path: str, pick: int) -> Request | None:
        vers = sorted(self.versions())
        ver = vers[pick % len(vers)] if vers else 1
        pins, loose, value = self.expect(path, ver)
        req = self.ask(path, ver)
        if not pins and value is None and path not in ("find", "export", "import", "rotation"):
            assert req is None, (path, ver, req)  # nothing there to read: nothing asked
            return None
        assert req is not None, (path, ver)
        r = Request(path, int(req), pins, loose, value)
        self.live.append(r)
        return r

    @rule(target=requests, path=st.sampled_from(sorted(PATHS)), pick=st.integers(0, 7))
    def request(self, path: str, pick: int) -> Any:
        r = self._request(path, pick)
        return multiple() if r is None else r

    @rule(
        writes=st.lists(st.sampled_from(WRITES), min_size=1, max_size=3),
        how=st.sampled_from(("fetch", "roll back", "claim")),
        pick=st.integers(0, 7),
    )
    def race(self, writes: list[str], how: str, pick: int) -> None:
        """Every read raced in one step: a request of each path, colleagues' writes, then
        each phase two (committed; or rolled back first, then committed; or for `get`
        claimed and released twice first). ``pick``: which earlier version is asked for."""
        made = [r for r in (self._request(path, pick) for path in PATHS) if r is not None]
        for what in writes:
            self.write(what)
        for r in made:
            if how == "roll back":
                self.fetch_and_roll_back(r)
            if how == "claim" and r.path == "get":
                self.claim_and_release(r)
                self.claim_and_release(r)
            self.fetch(r)

    def _released(self, r: Request, got: Any) -> None:
        """A phase two returned: what it released is exactly the request's, and only
        while none of its row versions was written, removed or moved since."""
        value = None if got is None or got[0] is None else bytes(got[0])
        self._event(r, "nothing" if value is None else "released")
        if self.stale(r):
            assert value is None, f"{r}: released {value!r} after a write it covers"
        else:
            assert value == r.value, (r, value, r.value)

    def _event(self, r: Request, outcome: str) -> None:
        event(f"{r.path}: {outcome} after {'+'.join(sorted(r.since)) or 'no write'}")

    def _refused(self, r: Request, e: Exception) -> None:
        self._event(r, type(e).__name__)
        if isinstance(e, psycopg.errors.SerializationFailure):
            assert CHANGED in str(e), (r, e)
            assert self.stale(r) or self.loosened(r), (r, e)
        elif r.used:
            assert "already used" in str(e) or self.stale(r), (r, e)
        else:
            assert self.stale(r), (r, e)
            assert "no such" in str(e) or "access revoked" in str(e), (r, e)

    @rule(r=requests)
    def fetch_and_roll_back(self, r: Request) -> None:
        """The attacker's fetch: inside a transaction that is then rolled back."""
        p = PATHS[r.path]
        try:
            got = fetch_rolled_back(self.conn(p.who), r.req, p.columns, p.fetch)
        except (psycopg.errors.SerializationFailure, psycopg.errors.InsufficientPrivilege) as e:
            self._refused(r, e)
        else:
            assert not r.used, r
            self._released(r, got)

    @rule(r=consumes(requests))
    def fetch(self, r: Request) -> None:
        """The client's fetch: committed, so the request is used."""
        p = PATHS[r.path]
        try:
            got = fetch_as_a_client(self.conn(p.who), r.req, p.columns, p.fetch)
        except (psycopg.errors.SerializationFailure, psycopg.errors.InsufficientPrivilege) as e:
            self._refused(r, e)
        else:
            assert not r.used, r
            self._released(r, got)
            r.used = True
        self.live.remove(r)

    @rule(r=requests)
    def claim_and_release(self, r: Request) -> None:
        """`get`'s one call in two: claim_read commits the claim, release returns the row
        and may be called again within the minute."""
        if r.path != "get":
            return
        bob = self.conns["bob"]
        if not r.claimed:
            try:
                bob.execute("SELECT credvault.claim_read(%s)", (r.req,))
            except psycopg.errors.InsufficientPrivilege as e:
                self._refused(r, e)
                return
            r.used = r.claimed = True
        try:
            got = fetch_as_a_client(self.conn("bob"), r.req, "secret_env", "release")
        except (psycopg.errors.SerializationFailure, psycopg.errors.InsufficientPrivilege) as e:
            self._refused(r, e)
        else:
            self._released(r, got)

    @invariant()
    def the_database_is_the_model(self) -> None:
        """The reads wrote nothing but their claims: every row is the writers'."""
        if not hasattr(self, "trash"):
            return
        got = (
            self.conns["dba"]
            .execute(
                "SELECT x.tbl, e.name, x.e1, x.link FROM ("
                " SELECT 'credentials' AS tbl, engagement_id, secret_env AS e1,"
                "  system_id IS NOT NULL AS link FROM credvault.credentials"
                " UNION ALL SELECT 'credential_versions', engagement_id, secret_env, false"
                "  FROM credvault.credential_versions"
                " UNION ALL SELECT 'credential_trash', engagement_id, secret_env,"
                "  system_uid IS NOT NULL FROM credvault.credential_trash"
                " UNION ALL SELECT 'systems', engagement_id, address_env, false"
                "  FROM credvault.systems"
                " UNION ALL SELECT 'system_trash', engagement_id, address_env,"
                "  cardinality(linked) > 0 FROM credvault.system_trash) x"
                " JOIN credvault.engagements e ON e.id = x.engagement_id WHERE e.name IN (%s, %s)",
                (self.names["A"], self.names["B"]),
            )
            .fetchall()
        )
        eng = {v: k for k, v in self.names.items()}
        assert sorted((t, eng[n], bytes(e), link) for t, n, e, link in got) == sorted(
            (r.tbl, r.eng, r.sec, r.link or bool(r.linked)) for r in self.rows.values()
        )


def test_history_moves_and_the_trash_release_only_what_their_entry_covers(
    pg_cluster: Cluster,
) -> None:
    pg = new_pg_vault(pg_cluster)
    pg.add("bob")
    Records.conns = {who: pg.connect(who) for who in ("alice", "bob")}
    Records.conns["owner"] = pg.connect()
    Records.conns["dba"] = psycopg.connect(
        pg_cluster.conninfo(pg.db), password=pg_cluster.password, autocommit=True
    )
    try:
        run_state_machine_as_test(
            Records,
            settings=settings(
                max_examples=30,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                derandomize=True,
                database=None,
            ),
        )
    finally:
        for conn in Records.conns.values():
            conn.close()


# -- what the machine found (section verpin), each as the shortest story ---------------------
def _history(pg_cluster: Cluster) -> Any:
    """alpha/db with versions 1 (V1) and 2 (V2), current V3; beta beside it; bob an
    engineer on both."""
    pg = new_pg_vault(pg_cluster)
    pg.add("bob")
    for eng in ("alpha", "beta"):
        pg.engagement(eng)
        pg.grant("alice", eng, "bob", "engineer")
    for value in (b"V1", b"V2", b"V3"):
        pg.put("alice", "alpha", "db", value)
    return pg


def _ask_version(bob: Any, ver: int = 1) -> int:
    req = bob.execute(
        "SELECT credvault.request_record('version', 'alpha', 'db', '', %s)", (ver,)
    ).fetchone()[0]
    assert req is not None
    return int(req)


def test_an_earlier_version_of_a_removed_credential_is_not_released(pg_cluster: Cluster) -> None:
    """bob asks for alpha/db's version 1; alice removes alpha/db; bob's fetch_record
    (rolled back, then committed) releases nothing. Before: V1, the value of a credential
    in the trash, under an entry made before its removal."""
    pg = _history(pg_cluster)
    with pg.connect("bob") as bob, pg.connect("alice") as alice:
        req = _ask_version(bob)
        alice.execute("SELECT credvault.remove_credential('alpha', 'db')")
        assert fetch_rolled_back(bob, req, "e1", "fetch_record") is None
        assert fetch_as_a_client(bob, req, "e1", "fetch_record") is None


def test_an_earlier_version_is_not_released_after_a_remove_and_restore(
    pg_cluster: Cluster,
) -> None:
    """A request made before an rm and a restore: refused (40001); one made after the
    restore: released."""
    pg = _history(pg_cluster)
    with pg.connect("bob") as bob, pg.connect("alice") as alice:
        req = _ask_version(bob)
        alice.execute("SELECT credvault.remove_credential('alpha', 'db')")
        alice.execute("SELECT credvault.restore_trashed('alpha', 'db', false)")
        with pytest.raises(psycopg.errors.SerializationFailure, match=CHANGED):
            fetch_as_a_client(bob, req, "e1", "fetch_record")
        got = fetch_as_a_client(bob, _ask_version(bob), "e1", "fetch_record")
        assert bytes(got[0]) == b"V1"


def test_an_earlier_version_moved_away_and_back_is_not_released(pg_cluster: Cluster) -> None:
    """A request made before an mv to beta and back: the version was sealed again twice
    since; it is refused, not released as its new bytes."""
    pg = _history(pg_cluster)
    with pg.connect("bob") as bob, pg.connect("alice") as alice:
        req = _ask_version(bob)
        for src, dst in (("alpha", "beta"), ("beta", "alpha")):
            mv = alice.execute(
                "SELECT request FROM credvault.request_move(%s, 'db', %s, 'db')", (src, dst)
            ).fetchone()[0]
            rows = fetch_all(alice, mv, "tbl, id, uid, version", "fetch_move")
            (cred,) = [r for r in rows if r[0] == "credentials"]
            vids = [r[1] for r in rows if r[0] == "credential_versions"]
            sealed = [KV1 + b"MOVED-%d" % i for i in range(len(vids))]
            nulls = [None] * len(vids)
            alice.execute(
                "SELECT credvault.move_credential(%s, %s, %s, 1, %s, NULL, NULL, NULL,"
                " %s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[])",
                (mv, cred[2], cred[3], KV1 + b"CUR", vids, sealed, nulls, nulls, nulls),
            )
        with pytest.raises(psycopg.errors.SerializationFailure, match=CHANGED):
            fetch_rolled_back(bob, req, "e1", "fetch_record")
