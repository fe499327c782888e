"""``credvault migrate``: a SQLCipher vault moves to a PostgreSQL team vault (issue 14).

Run by an admin of the SQLCipher vault, connected to the target database as its owner
(libpq's own login: ``~/.pgpass``, a service file). Envelopes are carried over byte for
byte, so nothing is re-encrypted: the vault id (part of every envelope's and sealed copy's
associated data), systems and credentials with their envelopes, and members' public keys.

Who holds an engagement key is decided differently on each side. An engagement made before
the membership log (format 3) keeps its creation record, role certificates, sealed copies
and copy signatures byte for byte: they are the team model's own statements. In an
engagement with a signed membership log (docs/security.md §12) the grant rows only mirror
the log and carry none of those statements, and the rows are writable by any insider with
the database key. So migrate replays each log (every signature checked), and the migrating
member re-issues the team model's statements from the *replayed* state only, never from the
rows: the key (their own copy, checked against the fingerprint the log committed to) is
sealed afresh to the keys the log pins for each member who may read now, each copy signed by
them, each role certificate and the creation record signed by them. They may do so only as
a lead of the engagement holding its current key (and an admin, which migrate needs
anyway); any engagement they cannot vouch for that way, or whose key is not made yet or
must be rotated first, refuses the whole migration with one line naming it, before anything
is written. The log itself goes into the archive.

What the team schema has no table for — earlier versions of credentials, the trash,
retention holds, the membership logs, the audit trail with its MACs — goes into one archive
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from credvault import memberlog as ml
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.crypto.envelope import key_version_of
from credvault.errors import AccessDenied, AlreadyExists, IntegrityError, InvalidInput
from credvault.files import make_private_dir, write_new_private
from credvault.model import RECOVERY, Grant
from credvault.postgres.statements import copy_message, creation_message, role_message, seal_info

if TYPE_CHECKING:
    from credvault.model import Engagement
    from credvault.postgres.store import PgStore
    from credvault.session import Session
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


class _Vouched(NamedTuple):
    """A membership-log engagement the migrating lead re-issues statements for."""

    state: ml.State
    key: bytes  # the current key, from the lead's own copy, checked against the log


def _vouch(v: Vault, engagements: list[Engagement]) -> dict[int, _Vouched]:
    """Replay every engagement's membership log; refuse (before anything is written) the
    migration of any logged engagement the migrating member cannot vouch for.

    Vouching means sealing the current key to the log's readers and signing those copies,
    which the log entitles only a lead holding that key to do. An engagement whose first
    key its lead has not made yet, or whose log demands a rotation (someone removed may
    hold the key), would carry a key that must not be handed on: its lead rotates first.
    A log that does not verify raises :class:`IntegrityError` (exit 6).
    """
    s = v._s
    grants = v.engagements.grants
    now = s.now()
    vouched: dict[int, _Vouched] = {}
    not_lead: list[str] = []
    pending: list[str] = []
    for e in engagements:
        if e.purged_at is not None:
            continue  # no key and no copies left: its rows travel as they are
        state = grants.log_state(e)
        if state is None:
            continue  # made before the log: its own signed statements travel byte for byte
        if (state.name, state.client) != (e.name, e.client):
            raise IntegrityError(f"engagement {e.name!r}: its row differs from its membership log")
        mine = state.roster.get(s.member)
        if mine is None or mine.role != ml.LEAD or not grants.roster.current(state, s.member):
            not_lead.append(e.name)
        elif state.key_version == 0 or state.needs_rotation(now) or e.needs_rotation:
            pending.append(e.name)
        else:
            key = v.engagements.keys.open_logged(e, state, s.member, s.keys.kem_private)
            vouched[e.id] = _Vouched(state, key)
    if not_lead or pending:
        why = []
        if not_lead:
            why.append(
                f"not a lead of {', '.join(sorted(not_lead))}: run migrate as an admin who "
                f"leads every engagement, or have their leads grant {s.member} lead first"
            )
        if pending:
            why.append(
                f"{', '.join(sorted(pending))} must get a new key first: "
                "run `credvault engagement rotate NAME`"
            )
        raise AccessDenied(
            s.member,
            "migrate",
            None,
            "migrate re-signs each engagement's key copies as its lead; "
            + "; ".join(why)
            + "; nothing was changed",
        )
    return vouched


def _anchors_this(s: Session, detail: str) -> bool:
    """Whether a ``migrate`` entry's ``detail`` anchors this vault's own trail: its id and
    a chain head (position and MAC, under this vault's key) that this trail holds. The
    database's bytes are the DBA's: the vault id is no secret, that MAC is."""
    import hmac

    m = re.fullmatch(
        rf"from SQLCipher vault {s.vault_id.hex()}: \d+ audit entries archived, "
        r"old head (\d+):([0-9a-f]{64}), archive sha256 [0-9a-f]{64}",
        detail,
    )
    if m is None or int(m[1]) < 1:
        return False
    row = s.store.audit_entry(int(m[1]))
    return row is not None and hmac.compare_digest(bytes(row.mac).hex(), m[2])


def _record_if_cut_short(s: Session, owner: PgStore) -> None:
    """A migration of this vault that committed on the server and was cut short before
    this vault's own trail recorded it: record it now, and say so (AlreadyExists)."""
    local = s.store.audit_query(
        engagements=None,
        member=None,
        action="migrate",
        since=None,
        limit=None,
        include_vault_wide=True,
    )
    if local or not any(_anchors_this(s, d) for d in owner.migrated_from(s.vault_id)):
        return
    database = owner.database()
    with s.store.write():
        s.log("migrate", None, None, "ok", f"to PostgreSQL database {database}")
    raise AlreadyExists(
        "this database already holds a credvault team vault: this one, migrated by a run "
        "cut short before this vault recorded it (recorded now; the invitations are where "
        "that run wrote them)"
    )


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
    engagements = s.store.engagements()
    vouched = _vouch(v, engagements)
    owner = PgStore.connect(target, "owner", check=False)
    made_dir = False
    try:
        version = installed_version(owner.conn)
        if version is not None:
            row = owner.conn.execute("SELECT count(*) FROM credvault.members").fetchone()
            if row[0]:
                _record_if_cut_short(s, owner)
                raise AlreadyExists("this database already holds a credvault team vault")
        else:
            apply_schema(owner.conn)
        st = s.store
        archive: dict[str, Any] = {
            "format": "credvault-sqlcipher-archive",
            "version": 1,
            "vault_id": s.vault_id.hex(),
            "audit": [{**r._asdict(), "mac": r.mac.hex()} for r in st.audit_iter()],
            "history": {},
            "trash": {},
            "holds": {},
            "member_logs": {},
            "recovery": {},
        }
        head = s.audit.head()
        make_private_dir(invitations)
        made_dir = True
        codes: dict[str, str] = {}
        counts = {"credentials": 0, "systems": 0, "grants": 0}
        carried: set[bytes] = set()  # engagements whose SQLCipher log is their team log
        expect: dict[bytes, tuple[Any, ...]] = {}
        expect_grants: dict[tuple[bytes, str], tuple[Any, ...]] = {}
        c = owner.conn
        with c.transaction():
            c.execute("UPDATE credvault.meta SET value = %s WHERE key = 'vault_id'", (s.vault_id,))
            # the migrating admin is the team vault's founder: every code carries their
            # fingerprint and every member's invitation is signed by them (format.md §19.4)
            from credvault.team_log import (
                fingerprint,
                invitation_key,
                invitation_message,
                join_message,
                make_code,
            )

            anchor_fp = fingerprint(members[s.member].sign_pub)
            for name, m in sorted(members.items()):
                code = make_code(anchor_fp)
                codes[name] = code
                c.execute(
                    "SELECT credvault.create_member_role(%s, %s, %s, 'invited')",
                    (name, scram_verifier(code), m.admin),
                )
                c.execute(
                    "UPDATE credvault.members SET sign_pub = %s, kem_pub = %s WHERE name = %s",
                    (m.sign_pub, m.kem_pub, name),
                )
                # the keys are known already (certified by the SQLCipher admin key): the
                # code's holder vouches for them now, so a copy sealed before they join
                # verifies (and join checks they come with exactly these keys)
                seed = invitation_key(code.encode())
                ipk = p.ed25519_public(seed)
                statement = invitation_message(s.vault_id, name, ipk, m.admin, s.member)
                proof = join_message(s.vault_id, name, m.sign_pub, m.kem_pub)
                c.execute(
                    "INSERT INTO credvault.member_certs (member, inviter, admin, ipk,"
                    " invitation_sig, join_sig) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        name,
                        s.member,
                        m.admin,
                        ipk,
                        p.sign(s.keys.sign_private, labels.TEAM_INVITE_SIG, statement),
                        p.sign(seed, labels.TEAM_JOIN_PROOF, proof),
                    ),
                )
            for e in engagements:
                vc = vouched.get(e.id)
                eid = _insert_engagement(c, e, v, vc)
                for g in st.grants(e.id):
                    if g.member == RECOVERY:
                        # no recovery key on a team vault (a team rotation could not seal
                        # to it): its copy is kept, sealed as it was, in the archive
                        archive["recovery"][e.name] = {
                            **g._asdict(),
                            **{f: _b64(getattr(g, f)) for f in ("role_sig", "sealed", "copy_sig")},
                        }
                if vc is not None:
                    counts["grants"] += _reissue_grants(c, v, e, eid, vc, expect_grants)
                    archive["member_logs"][e.name] = [_b64(b) for b in st.log_links(e.id)]
                    if _carry_log(c, v, e, eid, vc):
                        carried.add(e.uid)
                else:
                    for g in st.grants(e.id):
                        if g.member == RECOVERY:
                            continue
                        _insert_grant(c, eid, g)
                        expect_grants[(e.uid, g.member)] = (g.role_sig, g.sealed, g.copy_sig)
                        counts["grants"] += 1
                if e.hold_until or e.grace_days is not None:
                    archive["holds"][e.name] = {
                        "grace_days": e.grace_days,
                        "hold_until": e.hold_until,
                        "hold_reason": e.hold_reason,
                        "hold_by": e.hold_by,
                    }
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
            # every engagement comes over without a team log: the founder lists them, and
            # a team client accepts an engagement without a log only if listed (§19.6)
            from credvault.team_log import pre_log_list

            c.execute(
                "INSERT INTO credvault.meta (key, value) VALUES ('pre_log_engagements', %s)",
                (
                    pre_log_list(
                        s.vault_id,
                        [e.uid for e in engagements if e.uid not in carried],
                        s.keys.sign_private,
                    ),
                ),
            )
            data = json.dumps(archive, sort_keys=True, separators=(",", ":")).encode()
            digest = hashlib.sha256(data).hexdigest()
            c.execute(
                "INSERT INTO credvault.meta (key, value) VALUES ('sqlcipher_archive', %s)",
                (data,),
            )
            _verify(c, s.vault_id, expect, expect_grants, data)
            _verify_reissued(c, v, engagements, vouched)
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


def _insert_engagement(c: Any, e: Engagement, v: Vault, vc: _Vouched | None) -> int:
    """The engagement row: as it is, or (membership log) with the key version and
    fingerprint the replayed log committed to and a creation record signed by the migrating
    admin (who is then its ``created_by``; the original creator is in the archived log)."""
    s = v._s
    key_version, key_fp, created_by, creation_sig = (
        e.key_version,
        e.key_fp,
        e.created_by,
        e.creation_sig,
    )
    needs_rotation = e.needs_rotation
    if vc is not None:
        key_version = vc.state.key_version
        key_fp = vc.state.fingerprints[key_version]
        created_by = s.member
        creation_sig = _sign(
            v, creation_message(s.vault_id, e.uid, e.name, e.client, e.lead, s.member)
        )
        needs_rotation = False
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
            key_version,
            key_fp,
            needs_rotation,
            e.require_reason,
            e.created_at,
            created_by,
            e.lead,
            creation_sig,
            e.closed_at,
            e.purge_due,
            e.purged_at,
            e.receipt,
        ),
    ).fetchone()
    return int(eid)


def _insert_grant(c: Any, eid: int, g: Grant) -> None:
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


def _carry_log(c: Any, v: Vault, e: Engagement, eid: int, vc: _Vouched) -> bool:
    """Carry ``e``'s membership log over as its team log, link for link, if a team client
    will verify it exactly as this vault did: link 0 signed by a member who is an admin of
    the team vault with the same key (their certificate, format.md §19.4), no link that
    needs the recovery key (a team vault has none), the same final state. Otherwise the
    log stays in the archive only and the engagement is listed as carried without one."""
    s = v._s
    links = s.store.log_links(e.id)
    if not links:
        return False
    creator = ml.Link.from_bytes(links[0]).signer
    m = s.slots.members.get(creator)
    admins = {creator: frozenset({m.sign_pub})} if m is not None and m.admin else {}
    try:
        state = ml.replay(links, ml.Trust(s.vault_id, e.uid, admins, b""))
    except IntegrityError:
        return False
    if state.head != vc.state.head or state.key_version != vc.state.key_version:
        return False
    if e.require_reason:
        # a team client holds the column to the log (team_engagements): the setting is
        # signed into it here, by the migrating lead, as `engagement set` would
        link, _ = ml.sign_link(
            state,
            ml.Trust(s.vault_id, e.uid, {}, b""),
            ml.SET,
            (1, ml.NO_GRACE),
            s.member,
            s.keys.sign_private,
            s.now(),
        )
        links = [*links, link]
    for link in links:
        c.execute(
            "INSERT INTO credvault.engagement_log (engagement_id, seq, link, hash)"
            " VALUES (%s, %s, %s, %s)",
            (eid, ml.Link.from_bytes(link).seq, link, ml.chain_hash(link)),
        )
    return True


def _sign(v: Vault, message: bytes) -> bytes:
    return p.sign(v._s.keys.sign_private, labels.GRANT_SIG, message)


def _reissue_grants(
    c: Any,
    v: Vault,
    e: Engagement,
    eid: int,
    vc: _Vouched,
    expect_grants: dict[tuple[bytes, str], tuple[Any, ...]],
) -> int:
    """The grants of a membership-log engagement, from the replayed log only (never from
    its grant rows, which any insider can write): one row per roster member still in the
    vault, with a role certificate signed by the migrating lead; a copy of the current key
    sealed to the X25519 key the log pins, signed by that lead, for each member the log
    lets read now and who still holds the keys it pins. (The recovery key's copy goes to
    the archive: a team vault has no recovery key.)"""
    s = v._s
    me, state, key = s.member, vc.state, vc.key
    version, now = state.key_version, s.now()
    rows = {g.member: g for g in s.store.grants(e.id)}
    roster = v.engagements.grants.roster
    grants: list[Grant] = []
    for name, m in sorted(state.roster.items()):
        if name not in s.slots.members:
            continue  # left the vault: no team role (the archived log keeps the history)
        sealed = sig = None
        if state.may_read(name, now) and roster.current(state, name):
            sealed = p.hpke_seal(
                state.kem_of(name), key, seal_info(s.vault_id, e.uid, name, version)
            )
            sig = _sign(v, copy_message(s.vault_id, e.uid, name, version, sealed, key, me))
        role_sig = _sign(v, role_message(s.vault_id, e.uid, name, m.role, m.expires, me))
        row = rows.get(name)
        granted_at = row.granted_at if row is not None else state.time
        grants.append(
            Grant(name, m.role, me, granted_at, m.expires, role_sig,
                  version if sealed else None, sealed, me if sealed else None, sig, None)
        )  # fmt: skip
    for g in grants:
        _insert_grant(c, eid, g)
        expect_grants[(e.uid, g.member)] = (g.role_sig, g.sealed, g.copy_sig)
    return len(grants)


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


def _verify_reissued(
    c: Any, v: Vault, engagements: list[Engagement], vouched: dict[int, _Vouched]
) -> None:
    """Check every re-issued copy as the team reader will (inside the transaction): the
    engagement's fingerprint is the log's, each copy's signature verifies under the
    migrating member's key as published on the server, and their own copy opens to the key."""
    s = v._s
    (pub,) = c.execute(
        "SELECT sign_pub FROM credvault.members WHERE name = %s", (s.member,)
    ).fetchone()
    for e in engagements:
        vc = vouched.get(e.id)
        if vc is None:
            continue
        version, fp = c.execute(
            "SELECT key_version, key_fp FROM credvault.engagements WHERE uid = %s", (e.uid,)
        ).fetchone()
        if version != vc.state.key_version or fp != p.fingerprint(vc.key):
            raise IntegrityError("migration check failed: a key fingerprint differs; nothing kept")
        for member, kv, sealed, sealed_by, sig in c.execute(
            "SELECT g.member, g.key_version, g.sealed, g.sealed_by, g.copy_sig"
            " FROM credvault.grants g JOIN credvault.engagements e ON e.id = g.engagement_id"
            " WHERE e.uid = %s AND g.sealed IS NOT NULL",
            (e.uid,),
        ).fetchall():
            msg = copy_message(s.vault_id, e.uid, member, kv, bytes(sealed), vc.key, str(sealed_by))
            p.verify(bytes(pub), labels.GRANT_SIG, msg, bytes(sig or b""), "migrated key copy")
            if member == s.member:
                info = seal_info(s.vault_id, e.uid, member, kv)
                if p.hpke_open(s.keys.kem_private, bytes(sealed), info) != vc.key:
                    raise IntegrityError("migration check failed: own key copy; nothing kept")
