"""``credvault migrate``: a SQLCipher vault moves to a PostgreSQL team vault (issue 14).

Run by an admin of the SQLCipher vault, connected to the target database as its owner
(libpq's own login: ``~/.pgpass``, a service file). Everything cryptographic is carried over
byte for byte, so nothing is re-encrypted and every signature still verifies: the vault id
(part of every envelope's and sealed copy's associated data), engagements with their
creation signatures, grants with role certificates, sealed copies and their signatures
(the recovery key's included), systems and credentials with their envelopes, and members'
public keys. What the team schema has no table for — earlier versions of credentials, the
trash, retention holds, the audit trail with its MACs — goes into one archive
(``meta.sqlcipher_archive``, JSON; envelopes stay envelopes), whose SHA-256 and the old
chain's head are anchored in the new trail's first entry (``migrate``).

It refuses a database that already holds a vault, copies in one transaction, reads every
row back and compares it byte for byte before committing, and writes one invitation code
per member (0600) into a new directory. Each member then runs ``credvault join
--from-vault DIR`` on their machine: the same keys, now in their own team key slot; the
server refuses any other keys for a migrated member.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from credvault.crypto.envelope import key_version_of
from credvault.errors import AlreadyExists, IntegrityError, InvalidInput
from credvault.files import make_private_dir, write_new_private

if TYPE_CHECKING:
    from credvault.vault import Vault

_PG_MEMBER = re.compile(r"\A[a-z][a-z0-9_-]{0,30}\Z")
SEALED = ("secret_env", "username_env", "url_env", "notes_env")


class Migrated(NamedTuple):
    """What ``migrate`` copied, where the invitations are, and the anchor it recorded."""

    database: str
    engagements: int
    credentials: int
    systems: int
    grants: int
    archived_audit_entries: int
    invitations: str
    anchor: str  # the migrate entry's detail: old chain head and archive digest


def _b64(b: bytes | None) -> str | None:
    import base64

    return None if b is None else base64.b64encode(b).decode()


def migrate(v: Vault, target: str, invitations: Path) -> Migrated:
    """Copy the open vault ``v`` (its member must be an admin) into ``target``."""
    from credvault.postgres.server import apply_schema, installed_version, scram_verifier
    from credvault.postgres.store import PgStore

    s = v._s  # the facade's own session: migrate reads every table of it
    s.require("member.add")  # admins only (audited denial otherwise)
    members = s.slots.members
    bad = [n for n in members if not _PG_MEMBER.match(n)]
    if bad:
        raise InvalidInput(
            f"member names {', '.join(sorted(bad))} do not fit PostgreSQL roles "
            "([a-z][a-z0-9_-]{0,30}); rename them before migrating"
        )
    if invitations.exists():
        raise AlreadyExists(f"{invitations} exists; give a new directory for the invitations")
    owner = PgStore.connect(target, "owner", check=False)
    made_dir = False
    try:
        version = installed_version(owner.conn)
        if version is not None:
            row = owner.conn.execute("SELECT count(*) FROM credvault.members").fetchone()
            if row[0]:
                raise AlreadyExists("this database already holds a credvault team vault")
        else:
            apply_schema(owner.conn)
        st = s.store
        engagements = st.engagements()
        archive: dict[str, Any] = {
            "format": "credvault-sqlcipher-archive",
            "version": 1,
            "vault_id": s.vault_id.hex(),
            "audit": [{**r._asdict(), "mac": r.mac.hex()} for r in st.audit_iter()],
            "history": {},
            "trash": {},
            "holds": {},
        }
        head = s.audit.head()
        make_private_dir(invitations)
        made_dir = True
        codes: dict[str, str] = {}
        counts = {"credentials": 0, "systems": 0, "grants": 0}
        expect: dict[bytes, tuple[Any, ...]] = {}
        expect_grants: dict[tuple[bytes, str], tuple[Any, ...]] = {}
        c = owner.conn
        with c.transaction():
            c.execute("UPDATE credvault.meta SET value = %s WHERE key = 'vault_id'", (s.vault_id,))
            for name, m in sorted(members.items()):
                code = secrets.token_urlsafe(18)
                codes[name] = code
                c.execute(
                    "SELECT credvault.create_member_role(%s, %s, %s, 'invited')",
                    (name, scram_verifier(code), m.admin),
                )
                c.execute(
                    "UPDATE credvault.members SET sign_pub = %s, kem_pub = %s WHERE name = %s",
                    (m.sign_pub, m.kem_pub, name),
                )
            for e in engagements:
                (eid,) = c.execute(
                    "INSERT INTO credvault.engagements (uid, name, client, state, key_version,"
                    " key_fp, needs_rotation, require_reason, created_at, created_by, lead,"
                    " creation_sig, closed_at, purge_due, purged_at, receipt)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (
                        e.uid,
                        e.name,
                        e.client,
                        e.state,
                        e.key_version,
                        e.key_fp,
                        e.needs_rotation,
                        e.require_reason,
                        e.created_at,
                        e.created_by,
                        e.lead,
                        e.creation_sig,
                        e.closed_at,
                        e.purge_due,
                        e.purged_at,
                        e.receipt,
                    ),
                ).fetchone()
                if e.hold_until or e.grace_days is not None:
                    archive["holds"][e.name] = {
                        "grace_days": e.grace_days,
                        "hold_until": e.hold_until,
                        "hold_reason": e.hold_reason,
                        "hold_by": e.hold_by,
                    }
                for g in st.grants(e.id):
                    c.execute(
                        "INSERT INTO credvault.grants (engagement_id, member, role, granted_by,"
                        " granted_at, expires_at, role_sig, key_version, sealed, sealed_by,"
                        " copy_sig, revoked_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        (
                            eid,
                            g.member,
                            g.role,
                            g.granted_by,
                            g.granted_at,
                            g.expires_at,
                            g.role_sig,
                            g.key_version,
                            g.sealed,
                            g.sealed_by,
                            g.copy_sig,
                            g.revoked_at,
                        ),
                    )
                    expect_grants[(e.uid, g.member)] = (g.role_sig, g.sealed, g.copy_sig)
                    counts["grants"] += 1
                system_ids: dict[int, int] = {}
                for sy in st.systems(e.id):
                    (sid,) = c.execute(
                        "INSERT INTO credvault.systems (uid, engagement_id, name, port, protocol,"
                        " address_env, details_env, created_at, updated_at)"
                        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                        (
                            sy.uid,
                            eid,
                            sy.name,
                            sy.port,
                            sy.protocol,
                            sy.address_env,
                            sy.details_env,
                            sy.created_at,
                            sy.updated_at,
                        ),
                    ).fetchone()
                    system_ids[sy.id] = int(sid)
                    counts["systems"] += 1
                for cr in st.credentials(e.id):
                    envs = tuple(getattr(cr, f) for f in SEALED)
                    c.execute(
                        "INSERT INTO credvault.credentials (uid, engagement_id, name, kind,"
                        " system_id, key_version, secret_env, username_env, url_env, notes_env,"
                        " created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        (
                            cr.uid,
                            eid,
                            cr.name,
                            cr.kind,
                            None if cr.system_id is None else system_ids.get(cr.system_id),
                            key_version_of(cr.secret_env),
                            *envs,
                            cr.created_at,
                            cr.updated_at,
                        ),
                    )
                    expect[cr.uid] = envs
                    counts["credentials"] += 1
                versions = st.engagement_versions(e.id)
                if versions:
                    archive["history"][e.name] = [
                        {
                            **{k: val for k, val in r._asdict().items() if not k.endswith("_env")},
                            "credential_uid": r.credential_uid.hex(),
                            **{f: _b64(getattr(r, f)) for f in SEALED},
                        }
                        for r in versions
                    ]
                trash = st.trash(e.id)
                if trash:
                    archive["trash"][e.name] = [{**t._asdict(), "uid": t.uid.hex()} for t in trash]
            data = json.dumps(archive, sort_keys=True, separators=(",", ":")).encode()
            digest = hashlib.sha256(data).hexdigest()
            c.execute(
                "INSERT INTO credvault.meta (key, value) VALUES ('sqlcipher_archive', %s)",
                (data,),
            )
            _verify(c, s.vault_id, expect, expect_grants, data)
            anchor = (
                f"from SQLCipher vault {s.vault_id.hex()}: {len(archive['audit'])} audit entries "
                f"archived, old head {head}, archive sha256 {digest}"
            )
            c.execute(
                "SELECT credvault.audit_append(%s, 'migrate', NULL, NULL, 'ok', %s)",
                (s.member, anchor),
            )
            # before the commit: a code that cannot be written must not leave a vault
            # nobody can join
            for name, code in codes.items():
                write_new_private(invitations / f"{name}.invitation", (code + "\n").encode())
        database = owner.database()
    except BaseException:
        if made_dir:
            for f in invitations.glob("*.invitation"):
                f.unlink()
            invitations.rmdir()
        raise
    finally:
        owner.close()
    with s.store.write():
        s.log("migrate", None, None, "ok", f"to PostgreSQL database {database}")
    return Migrated(
        database,
        len(engagements),
        counts["credentials"],
        counts["systems"],
        counts["grants"],
        len(archive["audit"]),
        str(invitations),
        anchor,
    )


def _verify(
    c: Any,
    vault_id: bytes,
    expect: dict[bytes, tuple[Any, ...]],
    expect_grants: dict[tuple[bytes, str], tuple[Any, ...]],
    archive: bytes,
) -> None:
    """Read everything back inside the transaction; any difference aborts it."""

    def b(x: Any) -> bytes | None:
        return None if x is None else bytes(x)

    (vid,) = c.execute("SELECT value FROM credvault.meta WHERE key = 'vault_id'").fetchone()
    got = {
        bytes(r[0]): tuple(b(x) for x in r[1:])
        for r in c.execute(
            "SELECT uid, secret_env, username_env, url_env, notes_env FROM credvault.credentials"
        ).fetchall()
    }
    grants = {
        (bytes(r[0]), str(r[1])): (b(r[2]), b(r[3]), b(r[4]))
        for r in c.execute(
            "SELECT e.uid, g.member, g.role_sig, g.sealed, g.copy_sig FROM credvault.grants g"
            " JOIN credvault.engagements e ON e.id = g.engagement_id"
        ).fetchall()
    }
    (stored,) = c.execute(
        "SELECT value FROM credvault.meta WHERE key = 'sqlcipher_archive'"
    ).fetchone()
    if (
        bytes(vid) != vault_id
        or got != expect
        or grants != expect_grants
        or bytes(stored) != archive
    ):
        raise IntegrityError(
            "migration check failed: the copy differs from the vault; nothing kept"
        )
