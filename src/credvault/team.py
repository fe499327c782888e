"""A PostgreSQL team vault behind the same commands as a SQLCipher vault (issue 14).

:class:`Team` offers the part of :class:`credvault.Vault`'s API that the daily commands use
(``credentials.put/get/fields/list``, ``engagements.create/grant/revoke``,
``members.list/invite/remove``, ``audit.verify/checkpoint/entries``), returning the same
result types, so the CLI's handlers run unchanged on either backend. The cryptography is the
SQLCipher vault's, made and checked on this machine: envelopes (:mod:`credvault.crypto.envelope`
with the record's place as associated data), engagement keys sealed with HPKE to members'
X25519 keys, and the same signed statements (:mod:`credvault.postgres.client`). Access
control and the audit trail are the server's: every read is a committed, durable audit row
first, then the envelope (``CALL credvault.read``); :class:`~credvault.postgres.store.PgStore`
holds every statement. An engagement's lifecycle, the purge and its receipts, and the
owner's schema upgrade live in :mod:`credvault.team_lifecycle`; systems, history,
edit/mv/find/import and the trash in :mod:`credvault.team_records` (each loaded when used). A
member's keys may come from the OS keyring (:meth:`Team.open_cached`, after ``unlock
--keyring``) or the agent (:mod:`credvault.agent.team_entry`) instead of the passphrase;
:meth:`Team.login` is the one way in for all three. Not covered (one line, exit 1,
:class:`NotOnTeam`): backups.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from credvault import memberlog as ml
from credvault import validate
from credvault.access import Role, parse_role
from credvault.crypto import envelope, labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import KdfParams, check
from credvault.errors import (
    AccessDenied,
    AlreadyExists,
    AuditChainBroken,
    Conflict,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    Locked,
    NotAVault,
    NotFound,
    RetentionError,
    StoreError,
)
from credvault.keyslots import MemberKeys
from credvault.layout import team_slot_path
from credvault.model import (
    Credential,
    CredentialInfo,
    FindHits,
    GrantInfo,
    OtpCode,
    TrashInfo,
    VersionInfo,
    iso,
)
from credvault.postgres.slot import TeamSlot, login_password, new_slot
from credvault.postgres.statements import copy_message, role_message, seal_info
from credvault.postgres.store import EngagementRow, Fetched, MyGrant, PgStore, database_of
from credvault.secret import Secret
from credvault.team_log import (
    NO_RECOVERY,
    AdminKeys,
    Certs,
    LogWitness,
    Revocation,
    Revoked,
    fingerprint,
    invitation_key,
    invitation_message,
    join_message,
    links_signed_by,
    make_code,
    parse_code,
    pre_log_uids,
    replay_revocations,
    revocation_hash,
)

if TYPE_CHECKING:  # imported where used: `credvault get` on a team vault needs neither
    from credvault.audit import AuditEntry, Checkpoint
    from credvault.importers import ImportPlan, RawEntry, Skipped
    from credvault.integrity import CheckReport
    from credvault.ledger import CloseRecord
    from credvault.members import MemberInfo, PasswdResult
    from credvault.model import Engagement
    from credvault.receipt_keys import ReceiptKeys
    from credvault.results import EngagementView, PurgePlan, VaultInfo, VaultStatus
    from credvault.team_export import TeamClients
    from credvault.team_keys import KeysCertified
    from credvault.team_ledger import LedgerRestore
    from credvault.team_lifecycle import SchemaUpgrade, TeamLifecycle, TeamPurger
    from credvault.team_records import TeamSystems
    from credvault.witness import Gap

TABLE = "credentials"
RETIRED = "your keys were replaced (passwd --compromised) and are not certified yet"
READING = (Role.LEAD, Role.ENGINEER, Role.READER)
# why a rotation happened, in its audit detail: SQLCipher's words (engagement_keys.py)
FIRST_KEY = "the first lead's own key"
PENDING = "pending rotation"


def _keys_taken(target: str, db: str, member: str, login: str) -> bool | None:
    """Whether the server holds the keys a join sent: their derived login logs in (True),
    is refused (False), or the server cannot be asked now (None)."""
    try:
        with _connect_as(target, member, login, check=False, db=db):
            return True
    except AccessDenied:
        return False
    except CredvaultError:
        return None


def _set_aside(path: Path) -> Path:
    """Move the key slot ``path`` aside, to ``<name>.old`` (or ``.old.2``, ``.old.3``…:
    a slot set aside before is never overwritten); the name it has now."""
    aside = path.with_name(path.name + ".old")
    n = 1
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"{path.name}.old.{n}")
    from credvault.files import fsync_dir

    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


class TeamInit(NamedTuple):
    database: str
    vault_id: str
    admin: str
    slot: str


class TeamEngagement(NamedTuple):
    name: str
    client: str
    lead: str


class Invitation(NamedTuple):
    """A one-time code for ``credvault join``: shown once, handed over out of band."""

    member: str
    code: Secret


class Joined(NamedTuple):
    member: str
    slot: str
    fingerprint: str  # of the member's signing key: the admin compares it (member ls --json)


def _fp(sign_pub: bytes) -> str:
    return fingerprint(sign_pub)


def _now() -> str:
    """Now in the membership log's time form (microseconds, ``Z``)."""
    return iso(datetime.now(UTC))


class Removal(NamedTuple):
    """What ``member rm`` did on a team vault: the sessions it ended, the engagements whose
    log now carries the member's signed revocation, and those it could not sign them out
    of because they are the log's only lead (a log keeps a lead; no other lead can)."""

    sessions: int
    revoked: builtins.list[str]
    sole_lead: builtins.list[str]


class View(NamedTuple):
    """An engagement as this member sees it: the row, their grant, the sealer's published
    key, and the verified state of its membership log (None: an engagement made before the
    log, e.g. migrated from SQLCipher)."""

    eng: EngagementRow | None
    grant: MyGrant | None
    sealer_pub: bytes | None
    state: ml.State | None


def _connect_as(
    target: str,
    member: str,
    password: str,
    *,
    light: bool = False,
    check: bool = True,
    db: str | None = None,
) -> PgStore:
    """``db``: :func:`database_of` ``target``, where the caller has it already."""
    db = db or database_of(target)
    return PgStore.connect(
        target, member, user=f"{db}_{member}", password=password, light=light, check=check
    )


class Team:
    """One member's open team vault. Use as a context manager."""

    def __init__(
        self,
        store: PgStore,
        keys: MemberKeys,
        vault_id: bytes,
        target: str,
        anchor: str | None = None,
        database: str | None = None,
        slot: TeamSlot | None = None,
    ) -> None:
        self.store = store
        self.slot = slot  # the key slot the keys were unlocked from (the keyring binds it)
        self.keys = keys
        self.vault_id = vault_id
        self.path = target
        self.anchor = anchor  # the founder's fingerprint this member's slot pins
        self.database = database or store.database()
        self._certs: Certs | None = None
        self._witness: LogWitness | None = None
        self._logged: set[str] = set()  # engagements seen with a membership log
        self._pre_log: frozenset[bytes] | None = None
        self.sign_pub = p.ed25519_public(keys.sign_private)
        self.credentials = TeamCredentials(self)
        self.engagements = TeamEngagements(self)
        self.members = TeamMembers(self)
        self.audit = TeamAudit(self)
        self._engagement_keys: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        # where a warning goes (a write sealed under a key a rotation is due for): kept in
        # ``warnings`` unless the caller (the CLI: one line on stderr) says otherwise
        self.warnings: list[str] = []
        self.on_warning: Callable[[str], None] = self.warnings.append

    def __repr__(self) -> str:
        return f"Team(member={self.keys.name!r})"

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def member(self) -> str:
        return self.keys.name

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, target: str, member: str, passphrase: Secret, *, light: bool = False) -> Team:
        """Unlock the member's own key slot and log in with the password derived from it.

        ``light``: connect through libpq directly rather than psycopg (the CLI's ``get``,
        whose start-up is a target: :mod:`credvault.postgres.libpq`); the same statements,
        the same server checks. A passphrase change cut short after the server took the new
        login (the new slot still beside the old, :mod:`credvault.team_passwd`) is finished
        here."""
        db = database_of(target)
        return cls._open_path(target, member, passphrase, db, team_slot_path(db, member), light)

    @classmethod
    def open_first(
        cls,
        target: str,
        member: str,
        passphrase: Callable[[], Secret],
        *,
        cached: bool = True,
        light: bool = False,
    ) -> Team:
        """The CLI's way in: :meth:`open_cached` (unless ``cached`` is False), else
        :meth:`open` with ``passphrase()``, asked only then. The same as calling the two in
        turn, with the connection string read and the key slot file read once, not twice
        (issue 14: a team ``get``'s start-up)."""
        db = database_of(target)
        path = team_slot_path(db, member)
        slot = None
        if cached:
            try:
                slot = TeamSlot.read(path)
            except NotAVault:
                pass
            else:
                team = cls._cached(target, member, db, path, slot, light)
                if team is not None:
                    return team
        return cls._open_path(target, member, passphrase(), db, path, light, slot)

    @classmethod
    def _open_path(
        cls,
        target: str,
        member: str,
        passphrase: Secret,
        db: str,
        path: Path,
        light: bool,
        slot: TeamSlot | None = None,
    ) -> Team:
        """:meth:`open` from the slot file at ``path`` (``slot``: as read from it already)."""
        try:
            if slot is None:
                slot = TeamSlot.read(path)
            return cls._open_slot(target, member, passphrase, db, slot, light)
        except (Locked, AccessDenied):
            from credvault.team_passwd import finish_pending, pending_path

            if not pending_path(path).exists():
                raise
            pending = TeamSlot.read(pending_path(path))
            team = cls._open_slot(target, member, passphrase, db, pending, light)
            finish_pending(path)
            return team

    @classmethod
    def _open_slot(
        cls, target: str, member: str, passphrase: Secret, db: str, slot: TeamSlot, light: bool
    ) -> Team:
        return cls._login(target, member, slot, slot.unlock(passphrase), light, db)

    @classmethod
    def login(
        cls, target: str, member: str, slot: TeamSlot, keys: MemberKeys, *, light: bool = False
    ) -> Team:
        """Log in with the password derived from ``keys`` (unlocked from ``slot``: by the
        passphrase, the OS keyring or the agent) and check the server is that slot's vault
        and the login that member's."""
        return cls._login(target, member, slot, keys, light, database_of(target))

    @classmethod
    def _login(
        cls, target: str, member: str, slot: TeamSlot, keys: MemberKeys, light: bool, db: str
    ) -> Team:
        """:meth:`login`, ``db`` being :func:`database_of` ``target``. The schema check and
        the first statement share one round trip (:meth:`PgStore.checked_opening`)."""
        password = slot.login_password(keys)
        store = _connect_as(target, member, password, light=light, check=False, db=db)
        try:
            vault_id, name = store.checked_opening()
            if vault_id != slot.vault_id:
                raise IntegrityError("the team key slot belongs to another vault")
            if name != member:
                raise AccessDenied(member, "use the team vault", None, "not this member's login")
        except BaseException:
            store.close()
            raise
        return cls(store, keys, vault_id, target, slot.anchor, slot.database, slot)

    @classmethod
    def open_cached(cls, target: str, member: str, *, light: bool = False) -> Team | None:
        """Open with the keys ``credvault unlock --keyring`` cached for this member and team
        vault (:func:`credvault.keyring_cache.team_cached_keys`), or None when there are
        none (expired, never cached, another slot's). Keys the server no longer takes
        (removed, a passphrase change cut short) are forgotten; a pending change then
        returns None so that the passphrase finishes it."""
        db = database_of(target)
        path = team_slot_path(db, member)
        try:
            slot = TeamSlot.read(path)
        except NotAVault:
            return None
        return cls._cached(target, member, db, path, slot, light)

    @classmethod
    def _cached(
        cls, target: str, member: str, db: str, path: Path, slot: TeamSlot, light: bool
    ) -> Team | None:
        """:meth:`open_cached` with the slot read from ``path``."""
        from credvault.layout import team_keyring_marker

        if not team_keyring_marker(slot.vault_id.hex(), member).exists():
            return None  # never cached here: `get` imports nothing more
        from credvault.keyring_cache import forget_team, team_cached_keys

        keys = team_cached_keys(slot)
        if keys is None:
            return None
        try:
            return cls._login(target, member, slot, keys, light, db)
        except (Locked, AccessDenied):
            from credvault.team_passwd import pending_path

            forget_team(slot)
            if pending_path(path).exists():
                return None
            raise

    def cache_keys(self, ttl: timedelta) -> str:
        """``unlock --keyring``: cache this member's keys in the OS keyring for ``ttl``,
        bound to this vault, member and key slot; returns the expiry (UTC)."""
        from credvault.keyring_cache import cache_team_keys

        if self.slot is None:
            raise InvalidInput("no key slot to bind the cached keys to")
        return cache_team_keys(self.slot, self.keys, ttl, datetime.now(UTC))

    @property
    def slot_file(self) -> Path:
        """Where this member's key slot for this vault lives on this machine."""
        return team_slot_path(self.database, self.member)

    def member_keys(self) -> MemberKeys:
        """The unlocked member keys (for the agent). Handle as a secret."""
        return self.keys

    @staticmethod
    def slot_of(target: str, member: str) -> TeamSlot | None:
        """The member's key slot for the team vault ``target`` on this machine, if any."""
        try:
            return TeamSlot.read(team_slot_path(database_of(target), member))
        except NotAVault:
            return None

    @staticmethod
    def keyring_status(target: str, member: str) -> dict[str, object]:
        """As :meth:`credvault.Vault.keyring_status`, for a team vault (no unlock needed)."""
        from credvault.keyring_cache import team_cache_status

        return team_cache_status(Team.slot_of(target, member))

    @staticmethod
    def forget_cached_keys(target: str, member: str) -> bool:
        """``lock``: delete the member's cached keys for ``target``; whether any were."""
        from credvault.keyring_cache import forget_team

        slot = Team.slot_of(target, member)
        return slot is not None and forget_team(slot)

    @classmethod
    def init(cls, target: str, admin: str, passphrase: Secret, kdf: KdfParams) -> TeamInit:
        """As the database's owner (libpq's own login: ~/.pgpass, a service file): apply the
        schema, make the first admin, and join as them from this machine. An init of the
        same admin cut short (the schema there, the admin not joined, nothing else) is
        finished: with the key slot it wrote if the admin's role was made (the same
        passphrase), else with a new one."""
        from credvault.postgres.server import apply_schema, installed_version, scram_verifier

        check(kdf, from_disk=False)
        if not passphrase:
            raise InvalidInput("the passphrase is empty")
        owner = PgStore.connect(target, "owner", check=False)
        try:
            # (role made, invitation recorded) of an init cut short, which this one finishes
            resumed: tuple[bool, bool] | None
            if installed_version(owner.conn) is None:
                apply_schema(owner.conn)
                resumed = None
            else:
                resumed = owner.unfinished_init(admin)
                if resumed is None:
                    raise AlreadyExists("this database already holds a credvault team vault")
            vault_id = owner.vault_id()
            db = owner.database()
            path = team_slot_path(db, admin)
            if resumed is not None and resumed[0]:
                # the role's login derives from the slot written before it: the same keys
                slot = TeamSlot.read(path)
                keys = slot.unlock(passphrase)
                if slot.vault_id != vault_id:
                    raise IntegrityError("the team key slot belongs to another vault")
            else:
                if resumed is not None and path.exists():
                    # no role yet: the server never took this slot's keys. Kept aside.
                    _set_aside(path)
                slot, keys = new_slot(vault_id, db, admin, passphrase, kdf)
                # the founder: every member pins this key's fingerprint (it rides in the codes)
                slot = slot._replace(anchor=_fp(slot.sign_pub))
                slot.write_new(path)
                verifier = scram_verifier(login_password(keys, vault_id))
                owner.create_member_role(admin, verifier, True)
            if resumed is None or not resumed[1]:
                message = invitation_message(vault_id, admin, slot.sign_pub, True, admin)
                owner.owner_certificate(
                    admin,
                    admin,
                    True,
                    slot.sign_pub,
                    p.sign(keys.sign_private, labels.TEAM_INVITE_SIG, message),
                )
        finally:
            owner.close()
        proof = p.sign(
            keys.sign_private,
            labels.TEAM_JOIN_PROOF,
            join_message(vault_id, admin, slot.sign_pub, slot.kem_pub),
        )
        with _connect_as(target, admin, login_password(keys, vault_id)) as store:
            store.join_proved(
                slot.sign_pub, slot.kem_pub, scram_verifier(login_password(keys, vault_id)), proof
            )
        return TeamInit(db, vault_id.hex(), admin, str(path))

    @staticmethod
    def upgrade_schema(target: str) -> SchemaUpgrade:
        """As the database's owner: bring the schema to this credvault's version
        (:func:`credvault.team_lifecycle.upgrade_schema`; ``init --upgrade-schema``)."""
        from credvault.team_lifecycle import upgrade_schema

        return upgrade_schema(target)

    @staticmethod
    def rewrite(target: str) -> tuple[int, int]:
        """As the database's owner, after a purge: rewrite the table files
        (``purge --rewrite``; :func:`credvault.team_lifecycle.rewrite`)."""
        from credvault.team_lifecycle import rewrite

        return rewrite(target)

    def fingerprint(self) -> str:
        """This member's signing-key fingerprint (``info --fingerprint``): what ``join``
        and ``passwd --compromised`` print and an admin compares out of band."""
        return _fp(self.sign_pub)

    @staticmethod
    def slot_fingerprint(target: str, member: str) -> str | None:
        """The fingerprint of the signing key in ``member``'s key slot on this machine
        (after ``passwd --compromised``: the new key), None without a slot."""
        slot = Team.slot_of(target, member)
        return None if slot is None else _fp(slot.sign_pub)

    @property
    def public_key(self) -> str:
        """This member's Ed25519 signing key, base64: what checks the purge receipts they
        sign (``info --public-key``; a team vault has no vault-wide receipt key)."""
        import base64

        return base64.b64encode(p.ed25519_public(self.keys.sign_private)).decode()

    def info(self) -> VaultInfo:
        """``credvault info`` in SQLCipher's shape (:func:`credvault.team_keys.info`)."""
        from credvault.team_keys import info

        return info(self.store, self.path, self.vault_id, self.public_key)

    def set_setting(self, name: str, value: str) -> None:
        """``config set`` (admins; :func:`credvault.team_keys.set_setting`)."""
        from credvault.team_keys import set_setting

        set_setting(self, name, value)

    @property
    def clients(self) -> TeamClients:
        """``client export`` (:mod:`credvault.team_export`, loaded when used)."""
        from credvault.team_export import TeamClients

        return TeamClients(self, self.purger)

    # -- lifecycle and purge (credvault.team_lifecycle, loaded when used) -----------------
    @property
    def purger(self) -> TeamPurger:
        """The engagement purge (:mod:`credvault.team_lifecycle`) and ``trash purge``
        (:mod:`credvault.team_records`), as ``Vault.purger`` has both."""
        from credvault.team_lifecycle import TeamPurger
        from credvault.team_records import TeamTrash

        return TeamPurger(self, trash=TeamTrash(self))

    def purge(self, *, dry_run: bool = False, confirm_clock: str | None = None) -> list[PurgePlan]:
        """Purge every engagement that is due (admins), receipts signed here."""
        return self.purger.run(dry_run=dry_run, confirm_clock=confirm_clock)

    def destroy_recorded(self, ledgers: Sequence[Path] = ()) -> LedgerRestore:
        """After the database was restored from a dump: destroy again every engagement a
        signed receipt in this machine's purge ledger (or in ``ledgers``) says was purged and
        the database shows alive (admins; ``credvault purge``, docs/team.md "Backups").
        Receipts count only if signed by this member's own key or an active admin's key
        certified by the chain to the founder this member's slot pins; the rest are named
        in ``ignored``. Nothing is read from a ledger for a member who is not an admin."""
        from credvault.postgres import lifecycle_store as ls
        from credvault.team_ledger import Destroyer, LedgerRestore, destroy_again

        if not ledgers and not self.store.whoami()[1]:
            return LedgerRestore([], [], [], 0, [])

        def trusted() -> list[bytes]:
            certs = self.certs()
            active = (n for n, r in certs.rows.items() if r.admin and r.state == "active")
            return [self.sign_pub, *(k for n in active for k in certs.admin_keys(n))]

        def state(name: str) -> tuple[str, str] | None:
            lc = ls.lifecycle(self.store, name)
            return None if lc is None else (lc.engagement.state, lc.engagement.created_at)

        def reclose(rec: CloseRecord) -> str:
            hold = (rec.hold_until, rec.hold_reason, rec.hold_by)
            source = Path(rec.source).name
            return ls.reapply_close(
                self.store, rec.engagement, rec.closed_at, rec.grace_days, rec.purge_due,
                hold, rec.as_of, source,
            )  # fmt: skip

        purger = self.purger
        destroyer = Destroyer(state, purger.destroy_recorded, reclose)
        return destroy_again(self, destroyer, trusted, ledgers)

    def purge_due_on_open(self) -> list[PurgePlan]:
        """What SQLCipher does on every open by someone entitled to destroy: an admin's
        command first purges what is due (one round trip when nothing is)."""
        return self.purger.run(automatic=True)

    def check(self) -> CheckReport:
        """``credvault check`` on a team vault (admins; :mod:`credvault.team_check`)."""
        from credvault.team_check import check

        return check(self)

    def accept_witness(self, confirm: Callable[[list[Gap]], None] | None = None) -> list[Gap]:
        """``credvault witness accept`` on a team vault (:mod:`credvault.team_witness`)."""
        from credvault.team_witness import accept

        return accept(self, confirm)

    def status(self) -> VaultStatus:
        """``credvault status`` as :meth:`credvault.vault.Vault.status`: who you are, the
        vault, and among the engagements you may see what is due and what is closed. What is
        due comes from the server's plan (quiet: an admin's, as a member's own list is
        empty there; nothing destroyed); the closed ones from ``engagement ls``, which the
        server audits as ``engagement-ls`` (no separate ``status`` row on a team vault)."""
        from credvault.postgres import lifecycle_store as ls
        from credvault.results import ScheduledPurge, VaultStatus

        member, admin = self.store.whoami()
        seen = self.engagements.visible()
        mine = {e.name for e in seen}
        due = [
            pl for pl in ls.due(self.store, None, plan=True, quiet=True) if pl.engagement in mine
        ]
        closed = [
            ScheduledPurge(e.name, e.purge_due, self.engagements.purge_status(e))
            for e in seen
            if e.state == "closed"
        ]
        return VaultStatus(member, admin, self.path, self.vault_id.hex(), due, closed)

    @staticmethod
    def keys_from_vault(path: Path, member: str, passphrase: Secret) -> MemberKeys:
        """A member's keys from their slot of a SQLCipher vault (for ``join --from-vault``
        after ``credvault migrate``): passphrase, certificate and the file's MAC checked."""
        from credvault.keyslots import KeySlots, decrypt_private
        from credvault.layout import SLOTS_NAME

        slots = KeySlots.read(Path(path) / SLOTS_NAME)
        if member not in slots.members:
            raise NotFound("member", member)
        keys = decrypt_private(slots.vault_id, slots.members[member], passphrase)
        slots.verify_mac(slots.open_db_key(keys))
        return keys

    @classmethod
    def join(
        cls,
        target: str,
        member: str,
        invitation: Secret,
        passphrase: Secret,
        kdf: KdfParams,
        *,
        keys: MemberKeys | None = None,
    ) -> Joined:
        """On the new member's own machine: make their keys here, keep the private halves in
        their key slot, publish the public halves, and replace the invitation's password
        with the one derived from the new signing key. Nothing secret leaves this machine."""
        from credvault.postgres.server import scram_verifier

        check(kdf, from_disk=False)
        if not passphrase:
            raise InvalidInput("the passphrase is empty")
        db = database_of(target)
        path = team_slot_path(db, member)
        exists = AlreadyExists(f"a team key slot exists already at {path}; not overwritten")
        code = invitation.reveal()
        anchor = parse_code(code.decode(errors="replace"))
        try:
            store = PgStore.connect(target, member, user=f"{db}_{member}", password=code.decode())
        except AccessDenied:
            if path.exists():  # joined already: the server took the keys of this slot
                raise exists from None
            raise
        with store:
            # The invitation still logs in: the server took no keys under it, so a slot here
            # never reached it (a join killed before the server took them) or belongs to an
            # earlier membership under this name. Kept aside, not used; put back if this
            # join fails (that the code logs in is the server's word: a DBA, a trust line)
            aside = _set_aside(path) if path.exists() else None
            try:
                vault_id = store.vault_id()
                slot, keys = new_slot(
                    vault_id, db, member, passphrase, kdf, keys=keys, anchor=anchor
                )
                # the holder of the code vouches for the keys made here (format.md §19.4)
                proof = p.sign(
                    invitation_key(code),
                    labels.TEAM_JOIN_PROOF,
                    join_message(vault_id, member, slot.sign_pub, slot.kem_pub),
                )
                slot.write_new(path)
                try:
                    store.join_proved(
                        slot.sign_pub,
                        slot.kem_pub,
                        scram_verifier(login_password(keys, vault_id)),
                        proof,
                    )
                except BaseException as e:
                    # an error is not a refusal: the server may have committed the join and
                    # lost only its answer (the connection cut, an interrupt). It took these
                    # keys exactly if their login logs in; deleting the slot then would
                    # lock the member out for good (the code logs in no more)
                    taken = _keys_taken(target, db, member, login_password(keys, vault_id))
                    if taken is False:
                        # most likely never published, but the refusal is the server's word
                        # (a join still running there, a DBA's ALTER ROLE): set aside, never
                        # deleted, so a rerun starts clean and the keys are not lost
                        _set_aside(path)
                        raise
                    if taken is None:
                        raise StoreError(
                            f"joining was cut off and the server cannot say yet whether it "
                            f"took your keys: key slot kept at {path}; run join again with "
                            "the same code (if the code no longer logs in, the server has "
                            "your keys and that slot is yours)"
                        ) from e
                    if not isinstance(e, Exception):
                        raise  # interrupted after the server took them: joined, slot kept
            except BaseException:
                if aside is not None and not path.exists():
                    os.replace(aside, path)  # failed: nothing changed here either
                raise
            # Every other member will believe these keys only through this chain: check it
            # now, so an invitation that was not an admin's (or was altered on the server)
            # is found at once rather than at the first grant. As they will: the inviter's
            # certified new keys count (passwd --compromised, member certify), and what a
            # key the revocation list revokes signed counts only if a version endorses it
            # (whether the list revokes this invitation itself is for the sealing client).
            from credvault.postgres.keys_store import rekeys

            try:
                certs = Certs(
                    vault_id,
                    anchor,
                    store.certificates(),
                    lambda c: replay_revocations(c, store.revocation_list(), None),
                    rekeys(store),
                )
                certs.certified(member)
                certs.check_path(member, certs.revoked)
            except IntegrityError as e:
                raise IntegrityError(
                    f"joined, but the certificate of {member}'s keys does not verify ({e}): "
                    "the invitation did not come from an admin of this vault or was altered "
                    "on the server; tell your admin"
                ) from None
        return Joined(member, str(path), _fp(slot.sign_pub))

    # -- trust: certificates and membership logs ------------------------------------------
    def certs(self) -> Certs:
        """Every member's certified keys (read once per session, each chain checked once)."""
        if self._certs is None:
            rows = self.store.certificates()
            if not rows and self.anchor is None:
                self._certify_schema1()
                rows = self.store.certificates()
            certs = Certs(self.vault_id, self.anchor, rows, self._revocations)
            if self.anchor is None and rows:
                self._pin(certs)
            self._retire(certs)
            self._certs = certs
        return self._certs

    def _revocations(self, certs: Certs) -> Revoked:
        """The revocation list (format.md §19.7), every version checked here against the
        admins' certified keys and against this member's witness (a list shorter than, or
        different from, one verified before is IntegrityError); read only by a command that
        may seal a key copy, never by ``get``."""
        w = self.witness
        state = replay_revocations(certs, self.store.revocation_list(), w.revocations)
        w.keep_revocations(state.version, state.head)
        return state

    def _retire(self, certs: Certs) -> None:
        """A member whose certified key was handed over (``passwd --compromised``) and not
        certified again is not current: :func:`credvault.team_keys.retire`; an admin's
        client also signs that retirement into the revocation list
        (:func:`credvault.team_keys.publish_retirements`); a hand-over this member saw
        before must still be there (:class:`credvault.team_keys.SeenHandOvers`)."""
        from credvault.postgres import libpq
        from credvault.postgres.keys_store import key_links, rekeys
        from credvault.team_keys import SeenHandOvers, retire

        links = key_links(self.store)
        certs.set_rekeys(rekeys(self.store))
        seen = SeenHandOvers(
            SeenHandOvers.path_for(self.database, self.member),
            self.vault_id,
            self.member,
            self.keys.sign_private,
        )
        seen.check(links)  # a hand-over seen before and gone now: exit 6
        seen.keep(links)
        retire(certs, links)
        if isinstance(self.store.conn, libpq.Connection):
            return  # `get`'s lean connection: it writes nothing
        from credvault.team_keys import publish_retirements

        publish_retirements(self, certs, links)  # an admin: on the signed list at once

    def require_certified(self, action: str) -> None:
        """Before this member signs a statement others check against their certified key
        (an invitation, a creation link, a revocation at ``member rm``): after ``passwd
        --compromised`` the key they hold is not that key until an admin certifies it, so
        refuse here (exit 4) rather than sign something every reader rejects."""
        if self.certs().current(self.member).sign != self.sign_pub:
            raise AccessDenied(self.member, action, None, RETIRED)

    def _refuse_if_retired(self, action: str, engagement: str) -> None:
        """A copy missing because this member's ``passwd --compromised`` dropped it is not
        tampering: say so (exit 4). Asked only on that error path (``get`` stays lean)."""
        from credvault.postgres.keys_store import key_links, rekeys

        handed = key_links(self.store).get(self.member)
        if handed:
            certified = any(
                r.member == self.member and r.seq >= len(handed) for r in rekeys(self.store)
            )
            raise AccessDenied(
                self.member,
                action,
                engagement,
                "your new keys are certified, and your key copies went with the old ones: "
                "a lead's rotation seals you the next key (or a lead grants you again)"
                if certified
                else RETIRED + " and a lead grants you again",
            )

    def receipt_keys(self) -> ReceiptKeys:
        """``receipt-keys`` on a team vault: the history of your own signing key, which
        signs your receipts (:func:`credvault.team_keys.receipt_keys`)."""
        from credvault.team_keys import receipt_keys

        return receipt_keys(self, self.certs(), self.sign_pub)

    def _certify_schema1(self) -> None:
        """A vault upgraded from schema 1, opened with a slot that pins no founder: the
        first admin certifies its members (:mod:`credvault.team_upgrade`, TOFU)."""
        from credvault.postgres import libpq
        from credvault.team_upgrade import certify_schema1

        if isinstance(self.store.conn, libpq.Connection):  # `get`'s lean connection
            raise AccessDenied(
                self.member,
                "use the team vault",
                None,
                "it was upgraded from schema 1 and its members are not certified yet: "
                "an admin runs a command other than `get` first (docs/team.md)",
            )
        # AlreadyExists: another admin was first; their certificates are checked like any
        with contextlib.suppress(AlreadyExists):
            certify_schema1(self.store, self.keys, self.vault_id)

    def _pin(self, certs: Certs) -> None:
        """Trust on first use for a version-1 slot: the one self-certified founder, its
        chain checked, is pinned in this member's slot from now on."""
        from credvault.team_upgrade import pin_founder

        founder = certs.founder_key()
        pin_founder(
            team_slot_path(self.database, self.member), self.vault_id, self.sign_pub, founder
        )
        self.anchor = certs.anchor = _fp(founder)

    @property
    def witness(self) -> LogWitness:
        if self._witness is None:
            self._witness = LogWitness(
                LogWitness.path_for(self.database, self.member),
                self.vault_id,
                self.member,
                self.keys.sign_private,
            )
        return self._witness

    def trust(self, uid: bytes, creator: str | None = None) -> ml.Trust:
        """What a log is checked against: link 0 against the creator's certified admin
        key; every later link against the keys the log itself pins, except a ``revoke``
        an admin signed at ``member rm`` (against the admins' certified keys, read only
        when such a link is met). No recovery key. A link either lets through must not
        be signed by an admin after their removal (:meth:`Certs.after_removal`: the
        revocation list, read only when such a link is met). A ``succeed`` link (an
        admin's at ``member certify``, off the roster, or anyone's) must re-pin the member
        to a pair an admin's certificate certifies for them (:meth:`Certs.successor`)."""
        admins = {} if creator is None else {creator: self.certs().admin_keys(creator)}
        return ml.Trust(
            self.vault_id,
            uid,
            admins,
            NO_RECOVERY,
            AdminKeys(self.certs),
            lambda who, key, h: self.certs().after_removal(who, key, h),
            lambda who, sign, kem: self.certs().successor(who, sign, kem),
        )

    def view(self, engagement: str) -> View:
        """The engagement, this member's copy and its verified log, in one round trip
        (two the first time this member sees a log, or after a rename)."""
        kept = self.witness.by_name(engagement)
        after = -1 if kept is None else kept[1].seq
        eng, g, sealer_pub, head, links = self.store.key_copy(engagement, after)
        if eng is None:
            return View(None, None, None, None)
        return View(eng, g, sealer_pub, self._replay(eng, head, links, after))

    def _replay(
        self, eng: EngagementRow, head: int, links: list[bytes], after: int
    ) -> ml.State | None:
        w = self.witness
        kept = w.states.get(eng.uid)
        if head < 0:
            if kept is not None:
                from credvault.witness import ACCEPT_HINT

                raise IntegrityError(
                    f"the membership log of {eng.name!r} is gone; this member verified "
                    f"{kept.seq + 1} links of it before; {ACCEPT_HINT}"
                )
            return None
        if kept is not None and kept.seq > head:
            from credvault.witness import ACCEPT_HINT

            raise IntegrityError(
                f"membership log of {eng.name!r} ends at link {head}, but this member verified "
                f"link {kept.seq} before: rolled back or links were deleted; {ACCEPT_HINT}"
            )
        start = -1 if kept is None else kept.seq
        if start != after:  # asked from another state (a renamed engagement): ask again
            links = self.store.log_links(eng.name, start)
        if kept is None:
            if not links:
                raise IntegrityError(f"membership log of {eng.name!r} is empty")
            creator = ml.Link.from_bytes(links[0]).signer
            state = ml.replay(links, self.trust(eng.uid, creator))
        else:
            state = ml.replay(links, self.trust(eng.uid), kept) if links else kept
        if state.seq != head:
            raise IntegrityError(f"membership log of {eng.name!r} is missing links")
        if state.name != eng.name:
            raise IntegrityError(
                f"engagement {eng.name!r} carries the membership log of {state.name!r}"
            )
        if state.require_reason != eng.require_reason:  # a column edited around the log
            raise IntegrityError(
                f"engagement {eng.name!r}: the server's require-reason setting "
                f"({eng.require_reason}) is not the one its membership log signs "
                f"({state.require_reason})"
            )
        w.keep(eng.uid, state)
        self._logged.add(eng.name)
        return state

    def replay_all(self, uid: bytes, name: str, links: builtins.list[bytes]) -> ml.State:
        """An engagement's whole log as an admin reads it (``member rm``), verified like
        :meth:`view`'s: from this member's witness when they verified it before (a log
        shorter than, or forked from, what they saw is IntegrityError), else from link 0."""
        w = self.witness
        kept = w.states.get(uid)
        if not links:
            raise IntegrityError(f"membership log of {name!r} is empty")
        if kept is None:
            creator = ml.Link.from_bytes(links[0]).signer
            state = ml.replay(links, self.trust(uid, creator))
        else:
            ml.check_witness([ml.chain_hash(b) for b in links], kept.position)
            new = links[kept.seq + 1 :]
            state = ml.replay(new, self.trust(uid), kept) if new else kept
        if state.name != name:
            raise IntegrityError(
                f"engagement {name!r} carries the membership log of {state.name!r}"
            )
        w.keep(uid, state)
        return state

    def check_pre_log(self, eng: EngagementRow) -> None:
        """An engagement without a membership log is one ``migrate`` carried over (the
        founder signed the list), or tampering: a log deleted to pass an engagement off as
        older, or an engagement made with the version-1 function, whose first key its admin
        chose (issue 11 property 3)."""
        if self._pre_log is None:
            certs = self.certs()
            self._pre_log = pre_log_uids(
                self.vault_id, self.store.pre_log_engagements(), certs.founder_key()
            )
        if eng.uid not in self._pre_log:
            raise IntegrityError(
                f"engagement {eng.name!r} has no membership log and was not carried over by "
                "migrate: its log was deleted, or it was made around the log"
            )

    def led_keys(self) -> builtins.list[tuple[str, bytes, int, bytes]]:
        """(engagement, uid, key version, key) of every active engagement whose verified
        log makes this member a lead holding its current key: what ``passwd
        --compromised`` seals again to the new keys, so that a lead — maybe the only one —
        can still rotate once ``member certify`` pins them. A log or copy that does not
        verify is left out (its copy goes, as every other does)."""
        out: builtins.list[tuple[str, bytes, int, bytes]] = []
        for eng in self.store.engagements():
            try:
                v = self.view(eng.name)
                if v.eng is None or v.state is None or v.eng.state != "active":
                    continue
                if not self.leads(v.state) or v.state.key_version == 0:
                    continue
                uid, key, version = self.logged_key(eng.name, "passwd", v)
            except (AccessDenied, IntegrityError, NotFound):
                continue
            out.append((eng.name, uid, version, key))
        return out

    def leads(self, state: ml.State) -> bool:
        m = state.roster.get(self.member)
        return m is not None and m.role == ml.LEAD and m.sign == self.sign_pub

    def logged(self, engagement: str) -> bool:
        """Whether ``engagement`` was seen with a membership log in this session."""
        return engagement in self._logged

    # -- helpers for the sub-objects ------------------------------------------------------
    def engagement_key(
        self, engagement: str, action: str, version: int | None = None, *, write: bool = False
    ) -> tuple[bytes, bytes, int]:
        """(engagement uid, key, version) from the member's own sealed copy, accepted only
        if the replayed membership log made this member a holder of that version and the
        key has the fingerprint the rotating lead signed into the log. With ``version``
        (what a fetched record says), a key of that version opened earlier in this session
        is reused without asking the server again (the server checked the role at the
        fetch). The first lead makes the first key here, at their first use of it.
        ``write``: the key a new secret is about to be sealed under, through
        :meth:`before_write` (a lead rotates first when the log says a rotation is due)."""
        if version is not None:
            hit = self._engagement_keys.get((engagement, version))
            if hit is not None:
                return hit[0], hit[1], version
        v = self._write_view(engagement) if write else self.view(engagement)
        if v.eng is None:
            raise AccessDenied(self.member, action, engagement, "no role on it")
        if v.state is None:
            return self._unlogged_key(engagement, action, v)
        if v.state.key_version == 0 and self.leads(v.state):
            self.engagements.rotate(engagement, FIRST_KEY)
            v = self.view(engagement)
        return self.logged_key(engagement, action, v)

    def before_write(self, engagement: str) -> bool:
        """Whether ``engagement`` takes writes (it exists for this member and is active:
        else the write goes straight to the server, which refuses it and puts that on the
        record, with nothing read for it first), after :meth:`_write_view`'s gate."""
        v = self._write_view(engagement)
        return v.eng is not None and v.eng.state == "active"

    def _write_view(self, engagement: str) -> View:
        """The gate in front of every write that seals a new secret on an engagement
        with a membership log (put, edit, mv, import, system add/set/rm, revert, trash
        restore). After ``member rm`` (or a revoke, or an expired grant) the key rotates
        only at a lead's command: until then a write would seal under the key the removed
        member may have kept, and the DBA could hand him the ciphertext. So a lead rotates
        first, where :meth:`TeamEngagements.rotation_due` (the one test ``grant`` uses)
        says a rotation is due; any other member's write goes on, and the warning names
        the pending rotation and the leads who must run it (:attr:`on_warning`). A
        closed engagement is left to the server, which refuses the write. Not on the read
        path: ``get`` makes no extra round trip."""
        v = self.view(engagement)
        if v.eng is None or v.state is None or v.eng.state != "active":
            return v
        lead = self.leads(v.state)
        if not lead and v.state.key_version == 0:
            return v  # no key yet: nothing to seal under (engagement_key says so)
        due = self.engagements.rotation_due(v)
        if due is None:
            return v
        if lead:
            self.engagements.rotate(engagement, PENDING)
            return self.view(engagement)
        leads = ", ".join(n for n in v.state.leads() if n not in due) or "its lead"
        why = f" ({', '.join(due)} removed)" if due else " (a member lost access)"
        self.on_warning(
            f"warning: {engagement}'s key is due for rotation{why}: this write is sealed "
            f"under the current key until a lead ({leads}) runs `credvault engagement "
            f"rotate {engagement}`"
        )
        return v

    def logged_key(self, engagement: str, action: str, v: View) -> tuple[bytes, bytes, int]:
        eng, g, state = v.eng, v.grant, v.state
        assert eng is not None
        assert state is not None
        version = state.key_version
        if version == 0:
            raise AccessDenied(
                self.member, action, engagement, "no key yet: the engagement's lead makes it first"
            )
        if eng.key_version != version:
            raise IntegrityError(
                f"engagement {engagement!r} claims key version {eng.key_version}, "
                f"its membership log {version}"
            )
        cached = self._engagement_keys.get((engagement, version))
        if cached is not None:
            return cached[0], cached[1], version
        if not state.may_read(self.member, _now()):
            raise AccessDenied(self.member, action, engagement, "no reading role in its log")
        if not state.held(self.member, version):
            raise IntegrityError(
                f"engagement {engagement!r}: the membership log gives {self.member!r} no key"
            )
        if g is None or g.sealed is None or g.key_version != version:
            self._refuse_if_retired(action, engagement)
            raise IntegrityError(f"engagement {engagement!r}: this member's key copy is missing")
        if state.roster[self.member].sign != self.sign_pub:
            # a lead's copy kept at passwd --compromised, sealed to the new keys: usable
            # once member certify's succeed link pins them (team_keys.compromised)
            self._refuse_if_retired(action, engagement)
            raise IntegrityError(
                f"engagement {engagement!r}: the membership log pins other keys for this member"
            )
        key = p.hpke_open(
            self.keys.kem_private, g.sealed, seal_info(self.vault_id, eng.uid, self.member, version)
        )
        state.check_key(version, key)
        self._engagement_keys[(engagement, version)] = (eng.uid, key)
        return eng.uid, key, version

    def _unlogged_key(self, engagement: str, action: str, v: View) -> tuple[bytes, bytes, int]:
        """An engagement made before the log (migrated): the copy's signature is checked
        against its sealer's *certified* key (not the key the server publishes), and the
        key's fingerprint against the engagement's."""
        eng, g = v.eng, v.grant
        assert eng is not None
        cached = self._engagement_keys.get((engagement, eng.key_version))
        if cached is not None:
            return cached[0], cached[1], eng.key_version
        self.check_pre_log(eng)
        if g is None or g.sealed is None or g.key_version is None or g.sealed_by is None:
            raise AccessDenied(self.member, action, engagement, "no key copy")
        try:  # any key certified for the sealer (passwd --compromised gives a new one)
            sealers = self.certs().signing_keys(g.sealed_by)
        except IntegrityError:
            raise IntegrityError(
                f"engagement {engagement!r}: the key copy's sealer is unknown or uncertified"
            ) from None
        key = p.hpke_open(
            self.keys.kem_private,
            g.sealed,
            seal_info(self.vault_id, eng.uid, self.member, g.key_version),
        )
        signed = copy_message(
            self.vault_id, eng.uid, self.member, g.key_version, g.sealed, key, g.sealed_by
        )
        for i, k in enumerate(sorted(sealers)):
            try:
                p.verify(k, labels.GRANT_SIG, signed, g.copy_sig or b"", "engagement key copy")
                break
            except IntegrityError:
                if i == len(sealers) - 1:
                    raise
        if g.key_version == eng.key_version and p.fingerprint(key) != eng.key_fp:
            raise IntegrityError(f"engagement {engagement!r}: key does not match its fingerprint")
        self._engagement_keys[(engagement, g.key_version)] = (eng.uid, key)
        return eng.uid, key, g.key_version

    def forget_keys(self, engagement: str) -> None:
        for k in [k for k in self._engagement_keys if k[0] == engagement]:
            del self._engagement_keys[k]

    def place(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        binding: envelope.Binding = (),
        *,
        table: str = TABLE,
    ) -> envelope.Place:
        return envelope.Place(self.vault_id, eng_uid, table, uid, field, binding)

    def seal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        value: bytes,
        key: bytes,
        version: int,
        *,
        table: str = TABLE,
        record: envelope.Binding = (),
    ) -> bytes:
        """The one place a team client makes an envelope (credentials, systems, versions
        and trash rows at a rotation, a re-bound anchor). ``record``: the record's binding,
        given for its anchor field (a credential's ``secret``, a system's ``address``):
        the anchor is then sealed bound to it (format 0x02, as SQLCipher writes and as
        :meth:`unseal` requires on an engagement with a membership log); the other fields
        are sealed to their place alone."""
        return envelope.seal(
            self.place(eng_uid, uid, field, record, table=table), value, key, version
        )

    def unseal(
        self,
        eng_uid: bytes,
        uid: bytes,
        field: str,
        blob: bytes,
        key: bytes,
        *,
        table: str = TABLE,
        record: envelope.Binding = (),
        engagement: str | None = None,
    ) -> bytes:
        """Open an envelope of a record: a record-bound one (0x02) with ``record`` (the
        clear columns as the server shows them: changed ones fail, exit 6), a place-bound
        one with its place alone. An anchor (``record`` given) sealed without its binding
        is refused where ``engagement`` has a membership log, as :meth:`TeamCredentials._open`
        refuses it: everything under a log was written bound."""
        if envelope.is_bound(blob) and not record:
            raise IntegrityError("a record-bound envelope without its record")
        if record and not envelope.is_bound(blob) and engagement and self.logged(engagement):
            raise IntegrityError(
                f"engagement {engagement!r}: a record sealed without its binding: tampered with"
            )
        bound = record if envelope.is_bound(blob) else ()
        return envelope.open_(self.place(eng_uid, uid, field, bound, table=table), blob, key)

    def role(self, engagement: str) -> Role | None:
        """The member's live role on ``engagement`` as the server's grants say (None:
        none, or the engagement is hidden)."""
        g = self.store.my_grant(engagement)
        return None if g is None else Role(g.role)

    def permits(self, operation: str, engagement: str) -> bool:
        """The client's own check of :mod:`credvault.access`'s table (the server checks
        again with its grants; admins get no write or read without a grant there)."""
        from credvault.access import permits

        return permits(operation, self.role(engagement), admin=False)

    @property
    def systems(self) -> TeamSystems:
        from credvault.team_records import TeamSystems

        return TeamSystems(self)

    def sign(self, message: bytes) -> bytes:
        return p.sign(self.keys.sign_private, labels.GRANT_SIG, message)


class TeamCredentials:
    def __init__(self, t: Team) -> None:
        self.t = t

    def put(
        self,
        ref: str,
        secret: bytes | str | Secret,
        *,
        username: str | None = None,
        system: str | None = None,
        kind: str | None = None,
        url: str | None = None,
        notes: str | None = None,
    ) -> CredentialInfo:
        """Seal here, store there (leads and engineers; the server decides and audits)."""
        t = self.t
        eng, name = validate.ref(ref)
        if system is not None:
            system = validate.name(system, "system name")
        raw = (
            secret.reveal()
            if isinstance(secret, Secret)
            else (secret.encode() if isinstance(secret, str) else bytes(secret))
        )
        if not raw:
            raise InvalidInput("the secret is empty")
        existing = t.store.credential_meta(eng, name)
        kind_given = kind is not None
        kind = kind or (existing[0] if existing else "password")
        eng_uid, key, version = t.engagement_key(eng, "put", write=True)
        # a replace seals for the row's own uid, so the server keeps the envelopes of the
        # fields not given (as SQLCipher keeps them); it refuses a uid that is no longer
        # the row's (a conflict: run again). A new credential gets a fresh one.
        uid = (t.store.credential_uid(eng, name) if existing else None) or os.urandom(16)
        # the secret is bound to the record's clear columns (format 0x02, docs/format.md §4):
        # name, kind and the system link: the one named (put --system), else the one the
        # row keeps (a replaced value keeps its link)
        if system is not None:
            linked = t.store.system(eng, system)
            system_uid = linked.uid if linked is not None else b""
        else:
            system_uid = (t.store.credential_system(eng, name) or b"") if existing else b""
        record: envelope.Binding = ("credential", name, kind, system_uid)

        def seal(field: str, value: bytes | None) -> bytes | None:
            if value is None:
                return None
            return t.seal(eng_uid, uid, field, value, key, version)

        envs = (
            t.seal(eng_uid, uid, "secret", raw, key, version, record=record),
            seal("username", None if username is None else username.encode()),
            seal("url", None if url is None else url.encode()),
            seal("notes", None if notes is None else notes.encode()),
        )
        del raw
        # what a replace changed, for the history (as SQLCipher names it)
        given = {"username": username, "url": url, "notes": notes, "system": system}
        changed = ", ".join(
            ["secret", *(f for f, v in given.items() if v is not None)]
            + (["kind"] if kind_given else [])
        )
        if not t.store.put_credential_linked(
            eng, name, kind, uid, version, envs, system, changed, system_uid
        ):
            from credvault.team_records import refusal

            raise refusal(t, "put", eng)
        meta = t.store.credential_meta(eng, name)
        created, updated = (meta[1], meta[2]) if meta else ("", "")
        if system is None and existing:  # the link it keeps, as SQLCipher's info shows it
            kept = t.store.linked_system(eng, name)
            system = kept[0] if kept else None
        return CredentialInfo(eng, name, kind, system, created, updated)

    def _read(
        self, ref: str, reason: str | None
    ) -> tuple[str, str, dict[str, bytes | None], Fetched]:
        t = self.t
        eng, name = validate.ref(ref)
        f = t.store.read(eng, name, reason or "")
        if f is None:
            # refused, and audited by the server; say why in the SQLCipher terms
            row = t.store.engagement(eng)
            if row is None:
                raise AccessDenied(t.member, "read", eng, "no role on it")
            if row.require_reason and not reason:  # SQLCipher's words (the server's audit's)
                raise AccessDenied(t.member, "get", eng, "this engagement requires --reason")
            if t.store.credential_meta(eng, name) is None:
                raise NotFound("credential", ref)
            raise AccessDenied(t.member, "read", eng, "refused by the server")
        eng_uid, key, version = t.engagement_key(eng, "read", f.key_version)
        if version != f.key_version:  # rotated between the fetch and the key look-up
            raise Conflict("the engagement key was rotated meanwhile; run the command again")
        values: dict[str, bytes | None] = {}
        for field, blob in (
            ("secret", f.secret_env),
            ("username", f.username_env),
            ("url", f.url_env),
            ("notes", f.notes_env),
        ):
            if blob is None:
                values[field] = None
                continue
            values[field] = self._open(eng, name, f, field, blob, eng_uid, key)
        return eng, name, values, f

    def _address(self, eng: str, f: Fetched) -> bytes | None:
        """The linked system's address, released with the credential under the same audit
        entry (as SQLCipher's get gives it): bound to the system's name, port and protocol
        as the server shows them (a changed row fails, exit 6)."""
        if f.address_env is None or f.sys_uid is None:
            return None
        from credvault import items  # linked credentials only: not on every get's path

        version = envelope.key_version_of(f.address_env)
        eng_uid, key, got = self.t.engagement_key(eng, "read", version)
        if got != version:  # rotated between the fetch and the key look-up
            raise Conflict("the engagement key was rotated meanwhile; run the command again")
        record = items.system_binding(f.sys_name, f.port, f.protocol)
        return self.t.unseal(
            eng_uid, f.sys_uid, "address", f.address_env, key, table="systems", record=record,
            engagement=eng,
        )  # fmt: skip

    def _open(
        self, eng: str, name: str, f: Fetched, field: str, blob: bytes, eng_uid: bytes, key: bytes
    ) -> bytes:
        """Open one fetched envelope. The secret is bound to the name asked for, the kind
        the row shows and its system link (the same fetched row's): a swapped
        or edited row fails (exit 6). An unbound secret is refused where the engagement has
        a membership log (everything under it was written bound)."""
        t = self.t
        if field != "secret":
            return envelope.open_(t.place(eng_uid, f.uid, field), blob, key)
        if not envelope.is_bound(blob):
            if t.logged(eng):
                raise IntegrityError(
                    f"{eng}/{name}: a secret sealed without its record binding: tampered with"
                )
            return envelope.open_(t.place(eng_uid, f.uid, field), blob, key)
        # the link as the same fetched row shows it (section pgput: fetch names it)
        record: envelope.Binding = ("credential", name, f.kind, f.sys_uid or b"")
        return envelope.open_(t.place(eng_uid, f.uid, field, record), blob, key)

    def get(
        self,
        ref: str,
        *,
        reason: str | None = None,
        version: int | None = None,
        via: str | None = None,
    ) -> Credential:
        """An audited read: the server commits the audit row, then releases the envelopes.
        ``version``: an earlier one (:func:`credvault.team_records.get_version`). ``via``:
        a command reading on the member's behalf (``run psql``, ``ssh web1``), named in the
        audit detail as SQLCipher names it (not a reason); the linked system's address and
        port come in the same read (:func:`credvault.team_use.read`)."""
        if version is not None:
            from credvault.team_records import get_version

            got = get_version(self.t, ref, reason, version, via)
            if got is not None:
                return got
        if via is not None:
            from credvault.team_use import read

            return read(self.t, "get", ref, reason, via)
        eng, name, v, f = self._read(ref, reason)

        def text(b: bytes | None) -> str | None:
            return None if b is None else b.decode()

        return Credential(
            eng,
            name,
            f.kind,
            Secret(v["secret"] or b""),
            text(v["username"]),
            f.sys_name,
            text(self._address(eng, f)),
            f.port if f.sys_name is not None else None,
            text(v["url"]),
            text(v["notes"]),
            f.created_at,
            f.updated_at,
        )

    def fields(
        self,
        ref: str,
        *,
        reason: str | None = None,
        system: bool = False,
        version: int | None = None,
        via: str | None = None,
    ) -> dict[str, str | None]:
        """username, url, notes, kind and system, audited as ``show``: the server releases
        them without the secret (request kind ``fields``), as SQLCipher reads them.
        With ``system``: the linked system's address and port instead (``get --field
        address|port``), audited as ``show`` as on SQLCipher: the secret is not released.
        ``version``: that earlier version's, audited as ``show`` (its secret not released).
        ``via``: ``run``'s fields (:func:`credvault.team_use.fields`), the command named in
        the audit detail as SQLCipher names it."""
        if via is not None and version is None:
            from credvault.team_use import fields

            return fields(self.t, ref, reason, via, system=system)
        if system:
            from credvault.team_records import linked_address

            return linked_address(self.t, ref, reason)
        if version is not None:
            from credvault.team_records import version_fields

            return version_fields(self.t, ref, reason, version, via)
        from credvault.team_records import current_fields

        return current_fields(self.t, ref, reason)

    def otp(self, ref: str, *, reason: str | None = None, at: float | None = None) -> OtpCode:
        """The current TOTP code, audited as ``otp`` before the seed leaves the server
        (:func:`credvault.team_use.otp`)."""
        from credvault.team_use import otp

        return otp(self.t, ref, reason, at)

    def edit(self, ref: str, changes: Mapping[str, str | None]) -> CredentialInfo:
        """Fields other than the secret, sealed here; kind and link in the clear."""
        from credvault.team_records import edit

        return edit(self.t, ref, changes)

    def move(self, ref: str, target: str) -> CredentialInfo:
        """A rename within the engagement (``NEW``), or into another one (``ENG2/NEW``:
        re-sealed here under its key, :func:`credvault.team_records.move_across`)."""
        from credvault.team_records import move, move_across

        eng, _ = validate.ref(ref)
        if "/" in target and validate.ref(target)[0] != eng:
            return move_across(self.t, ref, target)
        return move(self.t, ref, target)

    def import_entries(
        self,
        engagement: str,
        entries: Iterable[RawEntry | Skipped],
        *,
        dry_run: bool = False,
    ) -> ImportPlan:
        """Store what an import source holds, all or nothing, sealed here
        (:func:`credvault.team_records.import_entries`)."""
        from credvault.team_records import import_entries

        return import_entries(self.t, engagement, entries, dry_run=dry_run)

    def find(self, text: str, *, fields: bool = True, reason: str | None = None) -> FindHits:
        """Names where the member holds a role; fields where they may read (audited)."""
        from credvault.team_records import find

        return find(self.t, text, fields=fields, reason=reason)

    def remove(self, ref: str) -> str:
        """To the engagement's trash; returns when it leaves it."""
        from credvault.team_records import remove

        return remove(self.t, ref)

    def trash(self, engagement: str) -> builtins.list[TrashInfo]:
        from credvault.team_records import trash

        return trash(self.t, engagement)

    def restore(self, ref: str) -> None:
        """The latest removal of that name back from the trash."""
        from credvault.team_records import restore

        restore(self.t, ref)

    def history(self, ref: str) -> builtins.list[VersionInfo]:
        """Every version, oldest first: who, when, what changed (never a value)."""
        from credvault.team_records import history

        return history(self.t, ref)

    def revert(self, ref: str, version: int) -> CredentialInfo:
        """An earlier version current again, as a new version (done by the server)."""
        from credvault.team_records import revert

        return revert(self.t, ref, version)

    def list(self, engagement: str | None = None) -> builtins.list[CredentialInfo]:
        t = self.t
        if engagement is not None:
            validate.name(engagement, "engagement name")
            if t.store.engagement(engagement) is None:
                raise AccessDenied(t.member, "list", engagement, "no role on it")
        return [
            CredentialInfo(e, n, k, sy, c, u)
            for e, n, k, c, u, sy in t.store.credentials(engagement)
        ]


class TeamEngagements:
    """Create, grant, revoke and rotate, each with its signed membership link stored in the
    same server transaction as the change (docs/security.md §12, "On a team vault")."""

    def __init__(self, t: Team) -> None:
        self.t = t
        self._lc: TeamLifecycle | None = None

    def create(
        self,
        name: str,
        client: str,
        lead: str | None = None,
        *,
        require_reason: bool = False,
        grace_days: int | None = None,
    ) -> TeamEngagement:
        """An admin creates the engagement: link 0 names the first lead and pins that
        lead's certified keys. No key exists until the first lead makes it (here, at once,
        when the admin leads it): an admin who does not lead never knows it."""
        t = self.t
        validate.name(name, "engagement name")
        validate.name(client, "client name")
        lead = validate.name(lead or t.member, "member name")
        if grace_days is not None:
            grace_days = validate.days(grace_days, "grace period")
        t.require_certified("create engagements")
        certs = t.certs()
        lead_keys = certs.keys(lead)  # NotFound, or IntegrityError for uncertified keys
        uid = os.urandom(16)
        link0, state = ml.sign_link(
            None,
            t.trust(uid, t.member),
            ml.CREATE,
            (name, client, lead, lead_keys.sign, lead_keys.kem),
            t.member,
            t.keys.sign_private,
            _now(),
        )
        if require_reason or grace_days is not None:
            # the settings ride in the signed log (link 1, this admin's), not only in the
            # columns the server enforces: a column flipped on the server is exit 6
            from credvault.postgres import engagement_store as es

            link1, state = ml.sign_link(
                state,
                t.trust(uid, t.member),
                ml.SET,
                (int(require_reason), ml.NO_GRACE if grace_days is None else grace_days),
                t.member,
                t.keys.sign_private,
                _now(),
            )
            es.create_with_settings(
                t.store, uid, name, client, lead, link0, require_reason, grace_days, link1
            )
        else:
            t.store.create_engagement_logged(uid, name, client, lead, link0)
        t.witness.keep(uid, state)
        if lead == t.member:
            self.rotate(name, FIRST_KEY)  # the first key, made by its lead
        return TeamEngagement(name, client, lead)

    # -- lifecycle (credvault.team_lifecycle): the server checks the role and audits ------
    @property
    def _lifecycle(self) -> TeamLifecycle:
        if self._lc is None:
            from credvault.team_lifecycle import TeamLifecycle

            self._lc = TeamLifecycle(self.t)
        return self._lc

    def close(self, name: str, grace_days: int | str | None = None) -> Engagement:
        """Without ``grace_days``: the engagement's own grace period as its membership log
        signs it (``engagement new --grace-days``), never the column alone."""
        if grace_days is None:
            from credvault.team_engagements import signed_grace

            grace_days = signed_grace(self.t, validate.name(name, "engagement name"))
        return self._lifecycle.close(name, grace_days)

    def retain(self, name: str, until: str, reason: str) -> Engagement:
        return self._lifecycle.retain(name, until, reason)

    def release(self, name: str) -> Engagement:
        return self._lifecycle.release(name)

    def purge_status(self, eng: Engagement) -> str:
        return self._lifecycle.purge_status(eng)

    def set_options(self, name: str, *, require_reason: bool | None = None) -> Engagement:
        """``engagement set``: a lead or an admin signs a ``set`` link here and the server
        stores it with the column it enforces (:mod:`credvault.team_engagements`)."""
        from credvault.team_engagements import set_options

        return set_options(self.t, name, require_reason)

    def members(self, name: str) -> builtins.list[GrantInfo]:
        """Who holds which role (the signed roster where this member can replay the log),
        audited as ``engagement-members`` by the server as on SQLCipher."""
        from credvault.team_engagements import members_role

        return self._members(name, members_role(self.t, name))

    def visible(self, client: str | None = None) -> builtins.list[Engagement]:
        """The engagements this member may list (:meth:`TeamLifecycle.visible`)."""
        return self._lifecycle.visible(client)

    def show(self, name: str) -> EngagementView:
        """The engagement, its purge in words, your role and its members, as SQLCipher's
        :meth:`credvault.engagements.Engagements.show` (audited by the server)."""
        from credvault.results import EngagementView

        eng, role = self._lifecycle.shown(name)
        members = self._members(name, role) if eng.state != "purged" else []
        return EngagementView(
            **eng.to_json(),  # type: ignore[arg-type]
            purge=self.purge_status(eng),
            your_role=role,
            members=members,
        )

    def _members(self, name: str, role: str | None) -> builtins.list[GrantInfo]:
        """Who holds which role. A member with a role replays the signed log: its roster
        decides (as on SQLCipher), the server's rows only add who granted and when. An
        admin without a role cannot read the log (row-level security): the server's rows."""
        from credvault.postgres import lifecycle_store as ls

        rows = {g.member: g for g in ls.grants(self.t.store, name)}
        state = self.t.view(name).state if role is not None else None
        if state is None:
            return list(rows.values())
        out = []
        now = _now()
        for member, m in sorted(state.roster.items()):
            g = rows.get(member)
            if not self._current(state, member) or (
                m.expires is not None and m.expires <= now and g is None
            ):
                continue  # left, given new keys, or expired
            out.append(
                GrantInfo(
                    member,
                    m.role,
                    g.granted_by if g else "",
                    g.granted_at if g else state.time,
                    m.expires,
                    g is not None and g.has_key and state.held(member, state.key_version),
                )
            )
        return out

    def _put(
        self,
        eng: str,
        eng_uid: bytes,
        member: str,
        role: Role,
        expires: str | None,
        key: bytes,
        version: int,
    ) -> None:
        """A grant on an engagement made before the log (migrated): sealed to the
        member's certified key, never to the one the server publishes."""
        t = self.t
        role_sig = t.sign(role_message(t.vault_id, eng_uid, member, role.value, expires, t.member))
        sealed = sig = None
        if role in READING:
            kem_pub = t.certs().keys(member).kem
            sealed = p.hpke_seal(kem_pub, key, seal_info(t.vault_id, eng_uid, member, version))
            sig = t.sign(copy_message(t.vault_id, eng_uid, member, version, sealed, key, t.member))
        ok = t.store.put_grant(
            eng, member, role.value, role_sig, version if sealed else None, sealed, sig, expires
        )
        if not ok:
            raise AccessDenied(t.member, "grant", eng, "refused by the server")

    def grant(self, name: str, member: str, role: str, until: str | None = None) -> GrantInfo:
        """A lead grants a role with a signed grant link pinning the member's certified
        keys; a reading role gets a key copy sealed here, to those keys only."""
        t = self.t
        r = parse_role(role)
        validate.name(member, "member name")
        expires = None
        if until is not None:
            if r is Role.LEAD:
                raise InvalidInput("a lead grant cannot expire: grant engineer or reader --until")
            dt = validate.when(until, "expiry")
            if dt <= datetime.now(UTC):
                raise InvalidInput("the expiry is in the past")
            expires = iso(dt)
        if member == t.member:
            raise AccessDenied(t.member, "grant", name, "members cannot grant themselves")
        v = t.view(name)
        if v.eng is None:
            raise AccessDenied(t.member, "grant", name, "no role on it")
        if v.state is None:
            if v.eng.needs_rotation:  # a revocation's rotation was cut short
                self.rotate(name, PENDING)
            eng_uid, key, version = t.engagement_key(name, "grant")
            t.certs().keys(member)  # NotFound before anything is sealed
            self._put(name, eng_uid, member, r, expires, key, version)
            return GrantInfo(
                member, r.value, t.member, iso(datetime.now(UTC)), expires, r in READING
            )
        if not t.leads(v.state):
            raise AccessDenied(t.member, "grant", name, "refused by the server")
        now = _now()
        # closed: nothing rotated or sealed; the server refuses it for its state (audited)
        active = v.eng.state == "active"
        if active and self.rotation_due(v) is not None:
            self.rotate(name, PENDING)
            v = t.view(name)
        state = v.state
        assert v.eng is not None
        assert state is not None
        keys = t.certs().keys(member)  # a key the DBA swapped in fails here: exit 6
        link, new = ml.sign_link(
            state,
            t.trust(v.eng.uid),
            ml.GRANT,
            (member, r.value, expires or "", keys.sign, keys.kem),
            t.member,
            t.keys.sign_private,
            now,
        )
        sealed = sig = None
        version = state.key_version
        if active and r in READING and new.may_read(member, now):
            eng_uid, key, _ = t.logged_key(name, "grant", v)
            sealed = p.hpke_seal(keys.kem, key, seal_info(t.vault_id, eng_uid, member, version))
            sig = t.sign(copy_message(t.vault_id, eng_uid, member, version, sealed, key, t.member))
        ok = t.store.put_grant_logged(
            name, member, r.value, version if sealed else None, sealed, sig, expires, link
        )
        if not ok and not active:  # SQLCipher's words (retention.require_active)
            raise RetentionError(f"engagement {name!r} is {v.eng.state}: cannot grant")
        if not ok:
            raise AccessDenied(t.member, "grant", name, "refused by the server")
        t.witness.keep(v.eng.uid, new)
        return GrantInfo(member, r.value, t.member, now, expires, r in READING)

    def revoke(self, name: str, member: str) -> builtins.list[str]:
        """Revoked at once on the server (copy dropped, reads refused from this moment) with
        a signed revoke link, then the key rotates; returns the credentials the member
        read, from the server's audit rows (everything, after a client export of theirs),
        with ``.viewed`` (:class:`credvault.engagements.RevokeReport`), as SQLCipher's."""
        t = self.t
        validate.name(name, "engagement name")
        validate.name(member, "member name")
        if member == t.member:
            raise AccessDenied(t.member, "revoke", name, "leads cannot revoke themselves")
        v = t.view(name)
        if v.eng is not None and v.state is not None:
            if not t.leads(v.state):
                raise AccessDenied(t.member, "revoke", name, "refused by the server")
            if member not in v.state.roster:
                if not (v.state.rotation_due and v.state.held(member, v.state.key_version)):
                    raise NotFound("revoke", "", f"{member} holds no role on {name}")
                # revoked already, by a revoke cut short before its rotation: finished now
                from credvault.engagements import RevokeReport

                self.rotate(name, f"revoked {member}")
                report = RevokeReport()
                report.viewed = tuple(t.store.revoked_views(name, member))
                report.earlier = True
                return report
            link, new = ml.sign_link(
                v.state,
                t.trust(v.eng.uid),
                ml.REVOKE,
                (member,),
                t.member,
                t.keys.sign_private,
                _now(),
            )
            read = t.store.revoke_grant_logged(name, member, link)
            if read is None:
                raise AccessDenied(t.member, "revoke", name, "refused by the server")
            t.witness.keep(v.eng.uid, new)
        else:
            read = t.store.revoke_grant(name, member)
            if read is None:
                raise AccessDenied(t.member, "revoke", name, "refused by the server")
        self.rotate(name, f"revoked {member}")
        from credvault.engagements import RevokeReport

        report = RevokeReport(read)
        # and, apart, what they only viewed (no secret read), as SQLCipher's revoke says
        report.viewed = tuple(t.store.revoked_views(name, member))
        return report

    def rotation_due(self, v: View) -> builtins.list[str] | None:
        """Whether a lead must rotate ``v``'s key before sealing anything more under it
        (None: no), and the roster members the rotation signs out (maybe none: an expired
        grant, a revoke whose rotation was cut short, the server's flag, or no key yet).
        The one test: ``grant`` and :meth:`Team.before_write` both ask it."""
        state, eng = v.state, v.eng
        assert state is not None
        assert eng is not None
        departed = self._departed(state)
        if departed or state.key_version == 0 or state.needs_rotation(_now()) or eng.needs_rotation:
            return departed
        return None

    def _departed(self, state: ml.State) -> builtins.list[str]:
        """Roster members the server no longer lists as active (removed), or whose pinned
        keys the signed revocation list names (removed, whatever the rows say now): the
        lead signs their revocation at the next rotation."""
        certs = self.t.certs()
        rows = certs.rows
        return sorted(
            n
            for n, m in state.roster.items()
            if n != self.t.member
            and (n not in rows or rows[n].state != "active" or certs.listed(m.sign, m.kem))
        )

    def _current(self, state: ml.State, member: str) -> bool:
        """Whether ``member`` still holds the keys the log pins (so may be sealed to them).

        A member removed, or whose certified keys are others now (keys replaced in the
        SQLCipher vault before a migration), gets no copy until a lead grants them again.
        A certificate that does not verify is tampering with the rows, not a key change:
        the log's pinned key stays the one sealed to."""
        m = state.roster[member]
        certs = self.t.certs()
        if certs.listed(m.sign, m.kem):  # removed: the signed list says so, not a row
            return False
        try:
            c = certs.keys(member)
        except NotFound:
            return False
        except IntegrityError:
            return True
        return (c.sign, c.kem) == (m.sign, m.kem)

    def _certified_kem(self, member: str) -> bytes | None:
        """An engagement without a log: the grantee's certified X25519 key, None for one
        removed (the server's row, or the signed revocation list, says so): no copy."""
        try:
            return self.t.certs().keys(member).kem
        except NotFound:
            return None

    def rotate(self, name: str, why: str = "on request") -> int:
        """A new engagement key made here: every envelope re-sealed under it, a copy sealed
        to each member the signed log lets read (to the keys it pins); stored in one server
        transaction with the rotate link. Retried from a fresh read when a write lands in
        between (Conflict). ``why`` goes into the audit detail, as SQLCipher's ("key
        version N (WHY); fingerprint FP"): "on request" is ``engagement rotate``'s."""
        for attempt in range(3):
            try:
                return self._rotate(name, why)
            except Conflict:
                self.t._certs = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _rotate(self, name: str, why: str) -> int:
        t = self.t
        v = t.view(name)
        if v.eng is None or (v.state is not None and not t.leads(v.state)):
            from credvault.postgres import engagement_store as es

            # refused here (the signed log decides), on the record there as on SQLCipher
            raise AccessDenied(t.member, "rotate", name, es.rotation_refused(t.store, name))
        eng_uid = v.eng.uid
        state = v.state
        links: builtins.list[bytes] = []
        old_key: bytes | None = None
        if state is None:
            t.check_pre_log(v.eng)
            eng_uid, old_key, old_version = t.engagement_key(name, "rotate")
        else:
            old_version = state.key_version
            if old_version:
                _, old_key, _ = t.logged_key(name, "rotate", v)
            trust = t.trust(eng_uid)
            now = _now()
            for n in self._departed(state):
                link, state = ml.sign_link(
                    state, trust, ml.REVOKE, (n,), t.member, t.keys.sign_private, now
                )
                links.append(link)
            for n, m in sorted(state.roster.items()):
                if n != t.member and m.expires is not None and m.expires <= now:
                    link, state = ml.sign_link(
                        state, trust, ml.EXPIRE, (n,), t.member, t.keys.sign_private, now
                    )
                    links.append(link)
        # the records as the request found them, asked again if one is written in between
        got = t.store.asked_again(
            lambda: t.store.request_rotation(name),
            lambda r: t.store.rotation_fetch_records(r, name),
        )
        if got is None:
            raise AccessDenied(t.member, "rotate", name, "refused by the server")
        req, rows = got
        new_key = p.random_key()
        version = old_version + 1
        if state is not None:
            link, state = ml.sign_link(
                state,
                t.trust(eng_uid),
                ml.ROTATE,
                (version, p.fingerprint(new_key)),
                t.member,
                t.keys.sign_private,
                _now(),
            )
            links.append(link)
        from credvault.team_records import reseal

        # every record: credentials, systems, the trash and earlier versions (none stays
        # under the old key), anchors bound as put binds them
        records = reseal(
            t, name, eng_uid, rows, old_key, old_version, new_key, logged=t.logged(name)
        )
        copies = []
        if state is not None:
            now = _now()
            holders = [
                (n, state.kem_of(n))
                for n in sorted(state.holders.get(version, frozenset()))
                if state.may_read(n, now) and self._current(state, n)
            ]
        else:
            holders = [
                (m, kem)
                for m, _ in t.store.rotation_grantees(name)
                if (kem := self._certified_kem(m)) is not None
            ]
        for member, kem_pub in holders:
            copy = p.hpke_seal(kem_pub, new_key, seal_info(t.vault_id, eng_uid, member, version))
            sig = t.sign(
                copy_message(t.vault_id, eng_uid, member, version, copy, new_key, t.member)
            )
            copies.append((member, copy, sig))
        stored = t.store.rotate_records(
            name, old_version, p.fingerprint(new_key), records, copies, links, req, why
        )
        t.forget_keys(name)
        if state is not None:
            t.witness.keep(eng_uid, state)
        return stored


class TeamMembers:
    def __init__(self, t: Team) -> None:
        self.t = t

    def list(self) -> builtins.list[MemberInfo]:
        """The members, as the signed statements say, not as the ``members`` rows alone
        (which the DBA writes): a row listed active counts only if its certificate chain
        verifies (IntegrityError, exit 6, naming it, if not) and the revocation list
        (format.md §19.7) names neither its invitation nor its current keys (the last pair
        an admin certified, format.md §19.8) — a member the list revokes is removed, and not
        shown, whatever the row says; one whose keys were retired at ``passwd
        --compromised`` and wait for ``member certify`` is still a member, and shown.
        ``admin`` is what the certificate signs. Invited members (no keys yet) are not
        listed, as before."""
        from credvault.members import MemberInfo

        certs = self.t.certs()
        r = certs.revoked
        out: builtins.list[MemberInfo] = []
        for m in self.t.store.members():
            if m.state != "active":
                continue
            c = certs.current(m.name)  # IntegrityError: a row without a good chain
            row = certs.rows[m.name]
            if p.digest(row.ipk) in r.ipk or (r.names(c.sign, c.kem) and row.state != "retired"):
                continue  # removed: the admin-signed list says so
            certs.check_path(m.name, r)  # certified through a removed admin, not endorsed
            out.append(MemberInfo(m.name, c.admin, False, m.created_at))
        return out

    def passwd(self, new_passphrase: bytes | Secret, *, compromised: bool = False) -> PasswdResult:
        """Change your own passphrase, and with it your login (:mod:`credvault.team_passwd`)."""
        if compromised:  # new keys too (credvault.team_keys)
            from credvault.team_keys import compromised as replace

            pw = new_passphrase
            led = self.t.led_keys()
            return replace(self.t, pw if isinstance(pw, Secret) else Secret(bytes(pw)), led)
        from credvault.team_passwd import passwd

        return passwd(self.t, new_passphrase)

    def certify(self, name: str, fingerprint: str) -> KeysCertified:
        """An admin certifies the keys ``name`` made with ``passwd --compromised``, after
        comparing their signing key's fingerprint with ``name`` out of band
        (:func:`credvault.team_keys.certify`)."""
        from credvault.team_keys import certify

        validate.name(name, "member name")
        for attempt in range(3):
            try:
                done = certify(self.t, name, fingerprint)
                self.t._certs = None  # the list moved: the next question reads it again
                return done
            except Conflict:
                self.t._certs = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def fingerprints(self) -> dict[str, str]:
        """Signing-key fingerprints as published at join, for comparing out of band."""
        return {m.name: _fp(m.sign_pub) for m in self.t.store.members() if m.sign_pub}

    def invite(self, name: str, *, admin: bool = False) -> Invitation:
        """An admin invites: a one-time code whose SCRAM verifier goes to the server."""
        from credvault.postgres.server import scram_verifier

        t = self.t
        t.require_certified("invite")
        anchor = t.anchor or t.certs().founder()
        code = Secret(make_code(anchor).encode())
        ipk = p.ed25519_public(invitation_key(code.reveal()))
        statement = invitation_message(t.vault_id, name, ipk, admin, t.member)
        sig = p.sign(t.keys.sign_private, labels.TEAM_INVITE_SIG, statement)
        t.store.invite_member(name, scram_verifier(code.reveal().decode()), admin, ipk, sig)
        return Invitation(name, code)

    def remove(self, name: str) -> int:
        """:meth:`remove_signed`; returns the sessions ended (the SQLCipher API's shape)."""
        return self.remove_signed(name).sessions

    def remove_signed(self, name: str) -> Removal:
        """Immediate: login disabled, sessions ended, grants and copies dropped, and the
        member signed out of every engagement log that names them, by this admin, in the
        same server transaction (docs/team.md, "Members"). From then on the replayed
        roster no longer lists them: no client seals to them or accepts a link of theirs,
        whatever the DBA writes back into ``members``, ``grants`` or the login. The same
        transaction appends the next version of the signed revocation list naming their
        keys (format.md §19.7), which every sealing client checks: a log the server hid
        from this admin, or a revoke link it cut, seals them nothing either. Retried from a
        fresh read when a log or the list moves in between (Conflict)."""
        validate.name(name, "member name")
        for attempt in range(3):
            try:
                return self._remove(name)
            except Conflict:
                self.t._certs = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _remove(self, name: str) -> Removal:
        """Every log is replayed here (from this admin's witness where they verified it
        before): which engagements name ``name`` is the signed history's to say, not the
        server's grant rows. A log that does not verify (or where this admin's own
        certificate does not) gets no link; the removal still happens, then IntegrityError
        names it (exit 6). An engagement whose only lead is
        ``name`` cannot lose them (every log keeps a lead): it stays flagged for rotation.
        """
        t = self.t
        if name == t.member:  # before signing anything; the server refuses it as well
            raise InvalidInput("an admin cannot remove themselves")
        t.require_certified("remove members")
        revocations: builtins.list[tuple[str, bytes]] = []
        signed: builtins.list[tuple[bytes, ml.State]] = []
        sole_lead: builtins.list[str] = []
        broken: builtins.list[str] = []
        pinned: set[tuple[bytes, bytes]] = set()  # every key pair a signed roster pins
        now = _now()
        logs = t.store.engagement_logs()
        for uid, eng, links in logs:
            try:
                state = t.replay_all(uid, eng, links)
            except IntegrityError as e:
                broken.append(f"{eng} ({e})")
                continue
            if name not in state.roster:
                continue
            pinned.add((state.roster[name].sign, state.roster[name].kem))
            if state.leads() == [name]:
                sole_lead.append(eng)
                continue
            try:  # refused if the server's certificate of this admin's own key is altered
                link, new = ml.sign_link(
                    state, t.trust(uid), ml.REVOKE, (name,), t.member, t.keys.sign_private, now
                )
            except IntegrityError as e:
                broken.append(f"{eng} ({e})")
                continue
            revocations.append((eng, link))
            signed.append((uid, new))
        listed, uncertified = self._revocation(name, pinned, now, [ls for _, _, ls in logs])
        sessions = t.store.remove_member_logged(
            name, revocations, None if listed is None else listed.to_bytes()
        )
        for uid, new in signed:
            t.witness.keep(uid, new)
        if listed is not None:
            t.witness.keep_revocations(listed.version, revocation_hash(listed.to_bytes()))
            t._certs = None  # the list moved: the next question reads it again
        cert = (
            f"{uncertified}: the revocation list names the keys the server and the logs show"
            if uncertified
            else ""
        )
        if broken:
            raise IntegrityError(
                f"removed member {name}, but these membership logs do not verify and name "
                f"nothing signed: {'; '.join(broken)}" + (f"; and {cert}" if cert else "")
            )
        if cert:
            raise IntegrityError(f"removed member {name}, but {cert}")
        return Removal(sessions, [e for e, _ in revocations], sole_lead)

    def _revocation(
        self,
        name: str,
        pinned: set[tuple[bytes, bytes]],
        now: str,
        logs: builtins.list[builtins.list[bytes]],
    ) -> tuple[Revocation | None, str]:
        """The next version of the revocation list (format.md §19.7), signed here: ``name``'s
        invitation key and every pair of keys of theirs known — certified by their chain,
        published on the server, pinned on a signed roster — so that no client seals to them
        again whatever the rows say later. Removing an admin, the members they invited are
        endorsed again (their chains stay good). It names every link 0, ``revoke`` and
        ``set`` those signing keys signed in ``logs`` (every log the server showed): those
        stay valid, any later one is refused (the server refuses the version if a log
        moved meanwhile: Conflict, read again). None when the list names all of it already
        (a second ``member rm`` for the links left over). The second value names a
        certificate that did not verify (the removal goes on; exit 6 after)."""
        t = self.t
        certs = t.certs()
        before = certs.revoked
        row = certs.rows.get(name)
        keys = set(pinned)
        uncertified = ""
        if row is not None:
            if row.sign_pub is not None and row.kem_pub is not None:
                keys.add((row.sign_pub, row.kem_pub))
            if row.join_sig is not None:
                try:
                    c = certs.certified(name)
                    keys.add((c.sign, c.kem))
                    keys.update((k.sign, k.kem) for k in certs.history(name))
                except IntegrityError as e:
                    uncertified = f"the certificate of {name} ({e})"
        ipk = p.digest(row.ipk) if row is not None else b""
        digests = tuple(sorted((p.digest(s), p.digest(k)) for s, k in keys))
        known = all(s in before.sign and k in before.kem for s, k in digests) and (
            not ipk or ipk in before.ipk
        )
        if known and (digests or ipk or name in before.members):
            return None, uncertified
        # the links of keys this version revokes first; a key an earlier version revoked
        # keeps that version's links, and any it signed since counts for nothing: never
        # listed again (a second `member rm` must not make a link the DBA planted count)
        new_keys = {s for s, _ in keys if p.digest(s) not in before.sign}
        endorsed: builtins.list[tuple[str, bytes, bytes]] = []
        if row is not None and row.admin:  # what their keys certified stays good
            endorsed = certs.endorsements(name, {s for s, _ in keys})
        statement = Revocation(
            t.vault_id, before.version + 1, before.head, now, t.member, t.sign_pub, name, ipk,
            digests, tuple(endorsed), b"", links_signed_by(logs, new_keys),
        ).signed(t.keys.sign_private)  # fmt: skip
        return statement, uncertified


class TeamAudit:
    def __init__(self, t: Team) -> None:
        self.t = t

    def verify(self, checkpoint: str | None = None) -> int:
        """The server-side chain, and (given one) the entry at an off-server checkpoint."""
        from credvault.audit import Checkpoint

        t = self.t
        cp = Checkpoint.parse(checkpoint) if checkpoint else None
        bad = t.store.audit_verify()
        if bad is not None:
            raise AuditChainBroken(bad, "hash does not follow")
        n, _ = t.store.audit_head()
        if cp is not None:
            if cp.position > n:
                raise AuditChainBroken(n, "the trail is shorter than the checkpoint")
            at = t.store.audit_hash_at(cp.position)
            if at is None or at.hex() != cp.mac:
                raise AuditChainBroken(cp.position, "does not match the checkpoint")
        return n

    def checkpoint(self) -> Checkpoint:
        from credvault.audit import Checkpoint

        n, h = self.t.store.audit_head()
        return Checkpoint(n, h.hex())

    def entries(
        self,
        *,
        engagement: str | None = None,
        member: str | None = None,
        action: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[AuditEntry]:
        """What the server lets this member read, filtered there, audited ``audit-read``
        (:func:`credvault.team_engagements.audit_entries`), as SQLCipher's ``audit``."""
        from credvault.team_engagements import audit_entries

        return audit_entries(self.t, engagement, member, action, since, limit)
