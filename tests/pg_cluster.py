"""A throwaway PostgreSQL cluster for the team-backend tests (issue 14).

One cluster per test session (initdb + start costs ~1.5 s), one database per test. The
cluster never runs as root: PostgreSQL refuses to, and a test that only passes as root
proves nothing. As root the fixture runs every server program through ``runuser -u
credvault-pg`` (a system user it creates when missing, as ``.ci/system-deps.sh`` does) and
makes the data and socket directories that user's; as an ordinary user it runs them
directly. Authentication is SCRAM on a private socket directory and on 127.0.0.1 with a
free port, so a role's password matters exactly as on a real server.

Where PostgreSQL is missing the tests skip with one loud reason; with ``CI`` or
``CREDVAULT_REQUIRE_PG`` set they fail instead, so CI cannot silently lose them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from credvault.postgres import apply_schema, bootstrap_sql, scram_verifier

OS_USER = "credvault-pg"
SUPERUSER = "postgres"


def _bindir() -> Path | None:
    """The server binaries: ``pg_config --bindir`` first, then Debian's versioned dirs."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and (c / "postgres").exists():
            return c
    return None


def unavailable(reason: str) -> None:
    """Skip loudly, or fail where PostgreSQL is required (CI)."""
    msg = f"PostgreSQL UNAVAILABLE, team-backend tests NOT RUN: {reason}"
    if os.environ.get("CI") or os.environ.get("CREDVAULT_REQUIRE_PG"):
        pytest.fail(msg + " (CI/CREDVAULT_REQUIRE_PG set: PostgreSQL is required)")
    pytest.skip(msg)


def _ensure_os_user() -> None:
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
            check=True,
            capture_output=True,
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A running cluster: where it listens and how to run its programs as its owner."""

    bindir: Path
    datadir: Path
    sockdir: Path
    port: int
    password: str = field(repr=False)
    as_root: bool

    def run(
        self, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a server program as the cluster's unprivileged OS user."""
        cmd = list(argv)
        if self.as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)

    def pg_ctl(self, *args: str) -> None:
        out = self.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log), *args]
        )
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {out.stderr}\n{self.tail_log()}")

    @property
    def log(self) -> Path:
        return self.datadir.parent / "server.log"

    def tail_log(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """SIGKILL the postmaster and every process it started, at once."""
        import signal

        pid = self.postmaster_pid()
        victims = [pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        victims.append(int(entry.name))
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def start(self) -> None:
        self.pg_ctl("-w", "-t", "60", "start")

    def crash(self) -> None:
        """Stop as a crash does: no checkpoint, nothing written that was not already."""
        self.pg_ctl("-w", "-m", "immediate", "stop")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def conninfo(
        self, dbname: str = "postgres", user: str = SUPERUSER, *, tcp: bool = False
    ) -> str:
        host = "127.0.0.1" if tcp else str(self.sockdir)
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def env(self, user: str, password: str, dbname: str) -> dict[str, str]:
        """Environment for ``psql`` as ``user`` (the test's own password; never a vault secret)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=str(self.sockdir),
            PGPORT=str(self.port),
            PGUSER=user,
            PGPASSWORD=password,
            PGDATABASE=dbname,
        )
        return env

    def superuser_sql(self, sql: str, dbname: str = "postgres") -> None:
        """Run statements (one per line ending in ``;``) as the bootstrap superuser (the
        DBA), each on its own: CREATE DATABASE refuses a transaction block."""
        import psycopg

        with psycopg.connect(
            self.conninfo(dbname), password=self.password, autocommit=True
        ) as conn:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)


def start_cluster(base: Path, extra_conf: str = "") -> Cluster:
    """initdb + start a private cluster under ``base``; skips loudly if impossible."""
    bindir = _bindir()
    if bindir is None:
        unavailable("no initdb/pg_ctl/postgres found (Debian: apt-get install postgresql)")
        raise AssertionError("unreachable")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[dev]')")
    as_root = os.geteuid() == 0
    if as_root:
        if shutil.which("runuser") is None:
            unavailable("running as root and no runuser to drop privileges")
        _ensure_os_user()
    base.mkdir(parents=True, exist_ok=True)
    if as_root:
        base.parent.chmod(0o711)  # our mkdtemp dir: traversable, not listable
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir(mode=0o700)
    pwfile = base / "pw"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    if as_root:
        entry = pwd.getpwnam(OS_USER)
        for p in (base, sockdir, pwfile):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
    cluster = Cluster(bindir, datadir, sockdir, _free_port(), password, as_root)
    out = cluster.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            SUPERUSER,
            "-A",
            "scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
    )
    pwfile.unlink()
    if out.returncode != 0:
        raise RuntimeError(f"initdb failed: {out.stderr}")
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\n"
            f"port = {cluster.port}\n"
            f"unix_socket_directories = '{sockdir}'\n"
            # a process crash (pg_ctl -m immediate) still loses exactly what was never
            # written; fsync only matters to an OS crash, which no test simulates
            "fsync = off\n"
            "full_page_writes = off\n"
            "max_connections = 60\n"
            "shared_buffers = 16MB\n"
            "log_min_messages = warning\n" + extra_conf
        )
    cluster.start()
    return cluster


@contextlib.contextmanager
def running_cluster(extra_conf: str = "") -> Iterator[Cluster]:
    """A cluster in its own directory under the system temp dir (not pytest's: pytest
    resets ``pytest-of-<user>`` to 0700 at every session start, which would lock the
    unprivileged server out of its own files while another session runs)."""
    base = Path(tempfile.mkdtemp(prefix="credvault-pg-"))
    try:
        cluster = start_cluster(base / "c", extra_conf)
        try:
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.pg_ctl("-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PgVault:
    """A credvault database on the session cluster, with helpers that act as its people."""

    cluster: Cluster
    db: str
    owner: str
    owner_password: str = field(repr=False)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    keys: dict[str, Any] = field(default_factory=dict, repr=False)  # member -> client.Member

    def role(self, member: str) -> str:
        return f"{self.db}_{member}"

    def connect(self, member: str | None = None, **kw: Any) -> Any:
        """A psycopg connection as ``member`` (None: the owner), autocommit by default."""
        import psycopg

        user = self.owner if member is None else self.role(member)
        password = self.owner_password if member is None else self.passwords[member]
        kw.setdefault("autocommit", True)
        return psycopg.connect(self.cluster.conninfo(self.db, user), password=password, **kw)

    def psql(self, member: str, sql: str) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` through the real psql as ``member``; errors stop the script."""
        return subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
            if "\n" not in sql
            else ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            input=sql if "\n" in sql else None,
            env=self.cluster.env(self.role(member), self.passwords[member], self.db),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def invite(self, by: str, member: str, *, admin: bool = False) -> str:
        """``by`` invites ``member``; returns the one-time invitation password. The
        invitation's key and signature are placeholders: the server stores them unchecked
        (clients check them), and this world's sealed copies are placeholders too."""
        invitation = secrets.token_urlsafe(16)
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.invite_member(%s, %s, %s, %s, %s)",
                (member, scram_verifier(invitation), admin, b"ipk-" + member.encode(), b"sig"),
            )
        return invitation

    def join(self, member: str, invitation: str) -> None:
        """``member`` joins from their own machine with fresh public keys and password."""
        import psycopg

        from credvault.crypto import primitives
        from credvault.postgres.client import Member

        password = secrets.token_urlsafe(16)
        kem_private, kem_pub = primitives.x25519_generate()
        sign_private, sign_pub = primitives.ed25519_generate()
        with psycopg.connect(
            self.cluster.conninfo(self.db, self.role(member)), password=invitation, autocommit=True
        ) as conn:
            conn.execute(
                "SELECT credvault.join_vault_proved(%s, %s, %s, %s)",
                (sign_pub, kem_pub, scram_verifier(password), b"join-proof"),
            )
        self.passwords[member] = password
        self.keys[member] = Member(member, kem_private, sign_private)

    def add(self, member: str, *, admin: bool = False) -> None:
        self.join(member, self.invite("alice", member, admin=admin))

    def unlogged_engagement(
        self, name: str, *, uid: bytes | None = None, key_fp: str = "", lead: str = "alice"
    ) -> None:
        """An engagement without a membership log, at key version 1 and without grants, as
        a schema-1 vault or ``credvault migrate`` leaves one: written by the owner (members
        cannot make one since schema 2), its creation audited as alice's."""
        with self.connect() as owner:
            owner.execute(
                "INSERT INTO credvault.engagements (uid, name, client, state, key_version,"
                " key_fp, created_by, lead, creation_sig)"
                " VALUES (%s, %s, 'acme', 'active', 1, %s, 'alice', %s, %s)",
                (uid or secrets.token_bytes(16), name, key_fp or "fp-" + name, lead, b"sig"),
            )
            owner.execute(
                "SELECT credvault.audit_append('alice', 'create', %s, NULL, 'ok', '')", (name,)
            )

    def engagement(self, name: str, lead: str = "alice") -> None:
        """An engagement without a log (:meth:`unlogged_engagement`); alice (admin) grants
        ``lead`` the lead role with a placeholder copy."""
        self.unlogged_engagement(name, lead=lead)
        with self.connect("alice") as conn:
            conn.execute(
                "SELECT credvault.put_grant(%s, %s, 'lead', %s, 1, %s, %s)",
                (name, lead, b"role-sig", b"sealed-to-" + lead.encode(), b"copy-sig"),
            )

    def grant(self, by: str, eng: str, member: str, role: str) -> None:
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.put_grant(%s, %s, %s, %s, 1, %s, %s)",
                (eng, member, role, b"role-sig", b"sealed-to-" + member.encode(), b"copy-sig"),
            )

    def put(self, by: str, eng: str, name: str, secret_env: bytes) -> None:
        with self.connect(by) as conn:
            conn.execute(
                "SELECT credvault.put_credential(%s, %s, 'password', %s, 1, %s)",
                (eng, name, secrets.token_bytes(16), secret_env),
            )

    def audit_count(self, action: str | None = None) -> int:
        """Rows in the audit table, counted as the owner (a member cannot)."""
        with self.connect() as conn:
            sql = "SELECT count(*) FROM credvault.audit"
            row = (
                conn.execute(sql + " WHERE action = %s", (action,)).fetchone()
                if action
                else conn.execute(sql).fetchone()
            )
        return int(row[0])


def fetch_as_a_client(
    conn: Any,
    req: int,
    columns: str = "secret_env",
    function: str = "fetch",
    *,
    roll_back: bool = False,
) -> Any:
    """``credvault.fetch`` as PgStore does it: a refusal for WAL that other backends left
    unflushed (the background writer logs a record shortly after activity that follows a
    quiet spell) is answered with ``nudge_wal`` and a new attempt; any other outcome is
    returned or raised as it is. ``roll_back``: the call inside a transaction that is then
    rolled back (the attacker's way to leave the request unused)."""
    import psycopg

    for _ in range(50):
        if roll_back:
            conn.execute("BEGIN")  # an autocommit connection: the transaction by hand
        try:
            # columns, function: literals of the calling test, never input
            sql = f"SELECT {columns} FROM credvault.{function}(%s)"  # noqa: S608
            return conn.execute(sql, (req,)).fetchone()
        except psycopg.errors.ObjectNotInPrerequisiteState as e:
            if "not yet durable" not in str(e):
                raise
        finally:
            if roll_back:
                conn.execute("ROLLBACK")
        conn.execute("SELECT credvault.nudge_wal()")
    raise AssertionError("the WAL never settled")


def fetch_rolled_back(conn: Any, req: int, columns: str, function: str) -> Any:
    """:func:`fetch_as_a_client` rolled back: its first row, or None."""
    return fetch_as_a_client(conn, req, columns, function, roll_back=True)


def write_once(conn: Any, event: str, body: str, *, definer: bool = False) -> None:
    """A test-only trigger (``credvault.t_touch``, on ``event``, e.g. "AFTER INSERT ON
    credvault.record_requests"): the first time it fires, ``body`` (PL/pgSQL statements
    over NEW) runs in the firing transaction; never again while ``credvault.t_once`` holds
    its row. ``definer``: made by the DBA, it runs as them (the owner cannot read the
    DBA's t_once otherwise)."""
    attrs = " SECURITY DEFINER SET search_path = credvault, pg_temp" if definer else ""
    # event, body: literals of the calling test, never input
    sql = (
        "CREATE TABLE credvault.t_once (done boolean);"  # noqa: S608
        f"CREATE FUNCTION credvault.t_touch() RETURNS trigger LANGUAGE plpgsql{attrs} AS $$"
        " BEGIN IF NOT EXISTS (SELECT 1 FROM credvault.t_once) THEN"
        f" INSERT INTO credvault.t_once VALUES (true); {body}"
        " END IF; RETURN NULL; END $$;"
        f"CREATE TRIGGER t_touch {event} FOR EACH ROW EXECUTE FUNCTION credvault.t_touch();"
    )
    conn.execute(sql)


_counter = iter(range(1, 1_000_000))


def psql_denied(out: subprocess.CompletedProcess[str]) -> bool:
    """Whether a psql run as an insider failed because PostgreSQL refused it (a privilege,
    an owner's or an admin's right), not for another reason such as a typo."""
    return out.returncode != 0 and any(
        w in out.stderr
        for w in (
            "permission denied",
            "must be",
            "must have admin option",
            "not an admin",
            "insufficient",
        )
    )


def new_pg_vault(pg_cluster: Cluster) -> PgVault:
    """Bootstrap (as the DBA) a database and its owner, apply the schema as the owner, and
    let the owner make the first admin, alice, who then joins."""
    db = f"cv{next(_counter)}_{secrets.token_hex(3)}"
    owner = f"{db}_owner"
    owner_password = secrets.token_urlsafe(16)
    pg_cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_password)))
    vault = PgVault(pg_cluster, db, owner, owner_password)
    with vault.connect() as conn:
        assert apply_schema(conn) is True
        # the first admin: made by the owner (the only one who can before any admin exists)
        invitation = secrets.token_urlsafe(16)
        conn.execute(
            "SELECT credvault.create_member_role('alice', %s, true, 'invited')",
            (scram_verifier(invitation),),
        )
        # her invitation, as `credvault init` records the founder's (placeholder signature)
        conn.execute(
            "INSERT INTO credvault.member_certs (member, inviter, admin, ipk, invitation_sig)"
            " VALUES ('alice', 'alice', true, 'ipk-alice', 'sig')"
        )
    vault.join("alice", invitation)
    return vault


# -- TLS with a locally made CA (real openssl) -------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip


def make_server_cert(d: Path, ca: str, out: str, san: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=credvault-test-server", "-keyout", f"{out}.key", "-out", f"{out}.csr",
        cwd=d,
    )  # fmt: skip
    (d / f"{out}.ext").write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{out}.ext", "-out", f"{out}.crt",
        cwd=d,
    )  # fmt: skip


def enable_tls(cluster: Cluster, d: Path) -> Path:
    """Make ``team-ca`` and a server certificate for DNS:localhost in ``d``, install it in
    the cluster and turn ssl on; returns the CA certificate clients verify against."""
    make_ca(d, "team-ca")
    make_server_cert(d, "team-ca", "server", "DNS:localhost")
    for name in ("server.crt", "server.key"):
        shutil.copy(d / name, cluster.datadir / name)
        (cluster.datadir / name).chmod(0o600)
        if cluster.as_root:
            st = cluster.datadir.stat()
            os.chown(cluster.datadir / name, st.st_uid, st.st_gid)
    cluster.superuser_sql("ALTER SYSTEM SET ssl = on;\nSELECT pg_reload_conf()")
    return d / "team-ca.crt"
