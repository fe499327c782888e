"""The ``Vault`` facade: create, open (unlock, recover interrupted work, purge what is due),
and the sub-objects that do the work. The only reader of the real clock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

from credvault import audit as audit_mod
from credvault import validate
from credvault.audit import AuditEntry, AuditLog, Checkpoint
from credvault.credentials import Credential, CredentialInfo, Credentials
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.crypto.passphrase import DEFAULT, KdfParams, check
from credvault.engagements import RECOVERY, Engagements, recovery_keys
from credvault.errors import (
    AlreadyExists,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    NotAVault,
    NotFound,
    UnsupportedFormat,
    WrongPassphrase,
)
from credvault.files import create_private, fsync_dir, locked, make_private_dir
from credvault.keyslots import KeySlots, MemberKeys, Recovery, make_slot, new_member_keys
from credvault.layout import (
    DB_NAME,
    FAILED_UNLOCKS,
    LOCK_NAME,
    NEXT_DB,
    SLOTS_NAME,
    default_dir,
)
from credvault.model import iso
from credvault.retention import SETTINGS, value
from credvault.secret import Secret
from credvault.session import Session
from credvault.store import FORMAT_VERSION, Store
from credvault.unlock import InMemory, Passphrase, UnlockSource, resolve

if TYPE_CHECKING:
    from datetime import timedelta

    from credvault import ledger
    from credvault.audit_trail import AuditTrail
    from credvault.backup import Backups
    from credvault.clients import Clients
    from credvault.integrity import CheckReport
    from credvault.members import Members
    from credvault.purge import Purger
    from credvault.receipt_keys import ReceiptKeys
    from credvault.results import PurgePlan, VaultInfo, VaultStatus
    from credvault.systems import Systems
    from credvault.witness import Gap
    from credvault.witnessing import Keeper

RECOVERY_PREFIX = "CREDVAULT-RECOVERY-1"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_recovery(vault_id: bytes, seed: bytes) -> str:
    return f"{RECOVERY_PREFIX}:{vault_id.hex()}:{base64.b64encode(seed).decode()}"


def parse_recovery(text: str) -> tuple[bytes, bytes]:
    try:
        prefix, vid, seed = text.strip().split(":")
        if prefix != RECOVERY_PREFIX:
            raise ValueError
        seed_b = base64.b64decode(seed, validate=True)
        if len(seed_b) != 32:
            raise ValueError
        return bytes.fromhex(vid), seed_b
    except ValueError:
        raise InvalidInput("not a credvault recovery key") from None


class RestoreReport(NamedTuple):
    """What a restore destroyed at once and which records of destruction it consulted.

    ``newest_record`` is None when no record newer than the backup was found: engagements
    destroyed after ``backup_time`` may then have come back, and the operator must say so.
    """

    purged_due: list[str]
    destroyed_after_backup: list[str]
    looked_in: list[str]
    newest_record: str | None
    backup_time: str
    # Closed (or held, or released) after the backup: put back in that state from a record.
    closed_after_backup: list[str] = []  # noqa: RUF012 - a default never mutated

    def summary(self) -> str:
        parts = [f"{len(self.purged_due)} engagements purged at once"]
        if self.destroyed_after_backup:
            parts.append(
                f"destroyed after the backup, destroyed again: {', '.join(self.destroyed_after_backup)}"
            )
        if self.closed_after_backup:
            parts.append(
                f"closed after the backup, closed again: {', '.join(self.closed_after_backup)}"
            )
        if self.newest_record is None:
            parts.append("no record of destruction newer than the backup was found")
        return "; ".join(parts)


class InitResult(NamedTuple):
    """What ``init`` made; ``recovery_key`` is set only when it was not written to a file,
    and must then be shown to the user once and kept offline."""

    path: Path
    vault_id: str
    admin: str
    recovery_key: str | None  # set only when no recovery file was asked for: show it once


class Vault:
    """An open vault for one member. Use as a context manager.

    >>> # doctest: +SKIP
    >>> with Vault.open(path, "alice", Passphrase("...")) as v:
    ...     v.credentials.put("acme-2026/web1-root", b"hunter2")
    """

    def __init__(self, session: Session, kdf: KdfParams) -> None:
        self._s = session
        self._kdf = kdf
        self._witness: Keeper | None = None  # set by open (None: a temporary copy)
        self.engagements = Engagements(session)
        self.credentials = Credentials(session, self.engagements)

    # The rest is imported on first use: `credvault get` should not pay for it.
    @cached_property
    def systems(self) -> Systems:
        from credvault.systems import Systems

        return Systems(self._s, self.engagements)

    @cached_property
    def members(self) -> Members:
        from credvault.members import Members

        return Members(self._s, self._kdf)

    @cached_property
    def purger(self) -> Purger:
        from credvault.purge import Purger

        return Purger(self._s, self.engagements)

    @cached_property
    def backups(self) -> Backups:
        """``create(directory=None)``: write a backup file, prune old ones."""
        from credvault.backup import Backups

        return Backups(self._s)

    @cached_property
    def clients(self) -> Clients:
        """Client requests: ``engagements(client)``, ``export(client)``, ``shred(client)``."""
        from credvault.clients import Clients

        return Clients(self._s, self.engagements, self.credentials, self.systems, self.purger)

    @cached_property
    def audit(self) -> AuditTrail:
        """The audit trail as this member may see it: ``entries``, ``verify``, ``checkpoint``."""
        from credvault.audit_trail import AuditTrail

        return AuditTrail(self._s, self.engagements)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: Path,
        admin: str,
        passphrase: bytes | str | Secret,
        *,
        kdf: KdfParams = DEFAULT,
        recovery_file: Path | None = None,
        clock: Clock = utc_now,
    ) -> InitResult:
        """Create a vault with its first (admin) member and the recovery key pair."""
        pw = passphrase if isinstance(passphrase, Secret) else Secret(passphrase)
        del passphrase  # a traceback's locals show only the redacted wrapper from here on
        validate.name(admin, "member name")
        check(kdf, from_disk=False)
        if not pw:
            raise InvalidInput("the passphrase is empty")
        path = Path(path)
        if (path / SLOTS_NAME).exists() or (path / DB_NAME).exists():
            raise AlreadyExists(f"{path} already holds a vault; refusing to overwrite it")
        if path.exists() and any(path.iterdir()):
            raise AlreadyExists(f"{path} is not empty; choose an empty or new directory")
        if recovery_file is not None and recovery_file.exists():
            raise AlreadyExists(f"recovery file {recovery_file} exists; refusing to overwrite")
        # Built in a staging directory beside ``path`` and renamed into place when complete:
        # a failed or interrupted init leaves nothing that blocks a rerun (which deletes what
        # an interrupted one left there).
        import shutil  # only here and in restore: `credvault get` does not load it

        path.parent.mkdir(parents=True, exist_ok=True)
        stage = path.parent / f".{path.name}.initializing"
        if stage.exists():
            shutil.rmtree(stage)
        wrote_recovery = False
        try:
            make_private_dir(stage)
            recovery_text = cls._init_into(stage, admin, pw, kdf, recovery_file, clock)
            wrote_recovery = recovery_file is not None
            stage.rename(path)  # over an empty directory too (rename(2) allows that)
            fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if recovery_file is not None and not wrote_recovery:
                with contextlib.suppress(OSError):
                    recovery_file.unlink()
            raise
        return InitResult(
            path,
            KeySlots.read(path / SLOTS_NAME).vault_id.hex(),
            admin,
            None if recovery_file is not None else recovery_text,
        )

    @classmethod
    def _init_into(
        cls,
        path: Path,
        admin: str,
        pw: Secret,
        kdf: KdfParams,
        recovery_file: Path | None,
        clock: Clock,
    ) -> str:
        """Write a complete new vault into the (staging) directory ``path``; returns the
        recovery key text (also written to ``recovery_file`` when given)."""
        vault_id = os.urandom(16)
        db_key = p.random_key()
        admin_priv, admin_pub = p.ed25519_generate()
        seed = os.urandom(32)
        rec_kem, rec_sign = recovery_keys(seed)
        rec_kem_pub, rec_sign_pub = p.x25519_public(rec_kem), p.ed25519_public(rec_sign)
        rec_cert = p.sign(
            admin_priv,
            labels.MEMBER_CERT,
            labels.encode(vault_id, RECOVERY, rec_kem_pub, rec_sign_pub),
        )
        from credvault.purge import new_receipt_key

        receipt_blob, receipt_pub = new_receipt_key()
        now = iso(clock())
        keys = new_member_keys(admin, admin_pub)
        slot = make_slot(
            vault_id,
            1,
            keys,
            admin=True,
            service=False,
            created=now,
            admin_sign_private=admin_priv,
            db_key=db_key,
            passphrase=pw,
            params=kdf,
        )
        slots = KeySlots(
            vault_id,
            1,
            admin_pub,
            receipt_pub,
            Recovery(rec_kem_pub, rec_sign_pub, rec_cert),
            {admin: slot},
        )
        create_private(path / LOCK_NAME)
        create_private(path / DB_NAME)  # 0600 before SQLite touches it (-wal/-shm copy it)
        store = Store.open(path / DB_NAME, db_key, create=True)
        try:
            store.create_schema()
            with store.write():
                store.set_meta("format_version", FORMAT_VERSION)
                store.set_meta("vault_id", vault_id.hex())
                store.set_meta("receipt_key", receipt_blob)
                store.set_meta("audit_key", audit_mod.audit_key(db_key))
                store.set_meta("created_at", now)
                store.set_meta("keyslots_digest", slots.membership_digest())
                store.set_meta("time_high_water", now)
                for key, default in SETTINGS.values():
                    store.set_meta(key, default)
                AuditLog(store, db_key).append(
                    now, admin, "init", None, None, "ok", f"vault {vault_id.hex()} created"
                )
        finally:
            store.close()
        recovery_text = format_recovery(vault_id, seed)
        if recovery_file is not None:
            from credvault.files import write_new_private

            write_new_private(recovery_file, (recovery_text + "\n").encode())
        slots.sealed_with(db_key).write(path / SLOTS_NAME)
        fsync_dir(path)
        return recovery_text

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
        auto_purge: bool = True,
    ) -> Vault:
        """Unlock ``member`` and open the vault; purges what is due before returning.

        The vault must not be behind or forked from what this member's client saw before
        (its witness, kept outside the vault: :mod:`credvault.witnessing`): a rollback, an
        earlier copy or lost writes raise :class:`IntegrityError` naming what is missing;
        :meth:`accept_witness` accepts a deliberate restore.
        """
        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        return cls._open(path, member, src, kdf=kdf, clock=clock, auto_purge=auto_purge)

    @classmethod
    def _open(
        cls,
        path: Path,
        member: str,
        src: UnlockSource,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
        auto_purge: bool = True,
        witness: str = "check",
    ) -> Vault:
        """:meth:`open`; ``witness`` is ``check`` (the member's witness is checked, then
        advanced after each commit), ``defer`` (read but neither checked nor advanced: a
        restore or an accept decides) or ``off`` (a private temporary copy of a backup)."""
        path = Path(path)
        if not path.is_dir():
            what = "not a directory" if path.exists() else "no such directory"
            raise NotAVault(f"{path} is not a credvault vault ({what})")
        if not (path / SLOTS_NAME).exists() or not (path / LOCK_NAME).exists():
            raise NotAVault(f"{path} is not a credvault vault")
        lock = contextlib.ExitStack()
        lock.enter_context(locked(path / LOCK_NAME, exclusive=False))
        vault: Vault | None = None
        session: Session | None = None
        try:
            session = cls._unlock(path, member, src, clock, lock)
            session.lock = lock
            vault = cls(session, kdf)
            vault._after_open(auto_purge, witness)
        except BaseException:
            if vault is not None:
                vault.close()
            elif session is not None:  # a failed open leaves no connection behind
                with contextlib.suppress(Exception):
                    session.store.close()
            lock.close()
            raise
        return vault

    @classmethod
    def accept_witness(
        cls,
        path: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
        confirm: Callable[[list[Gap]], None] | None = None,
    ) -> list[Gap]:
        """Accept the vault at ``path`` as it is now, although it is behind or forked from
        what ``member``'s client saw (a deliberate restore or roll-back).

        Returns what the witness had that the vault lacks (empty: nothing to accept, and
        nothing is written). Otherwise ``confirm`` is shown those gaps first (it raises to
        stop), a ``witness-accept`` audit entry names them, and the witness is reset to
        the vault's positions. Only this member's witness: every member accepts for
        themselves (an entry in the vault cannot speak for them: an insider can write one).
        """
        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        with cls._open(path, member, src, kdf=kdf, clock=clock, witness="defer") as v:
            assert v._witness is not None
            return v._witness.accept(confirm)

    @classmethod
    def restore(
        cls,
        file: Path,
        target: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
        ledgers: Sequence[Path] = (),
    ) -> list[str]:
        """Restore the backup ``file`` into the new directory ``target``, check it, and purge at
        once what became due and what any purge ledger says was destroyed after the backup;
        returns the engagements purged. A failed restore leaves no vault. See
        :meth:`restore_report` for what was consulted.
        """
        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        r = cls.restore_report(file, target, member, src, kdf=kdf, clock=clock, ledgers=ledgers)
        return [*r.purged_due, *r.destroyed_after_backup]

    @classmethod
    def restore_report(
        cls,
        file: Path,
        target: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
        ledgers: Sequence[Path] = (),
    ) -> RestoreReport:
        """:meth:`restore`, returning a :class:`RestoreReport`.

        Every record of destruction it can find is consulted: the backup's own tombstones,
        the ledger beside the backups (``credvault-ledger-<id>.jsonl``), the tombstones of
        newer backups in the same directory (opened with the same member keys), the live
        vault's ledger (``<vault>/purge-ledger.jsonl`` when the backup sits in the default
        ``<vault>-backups``), and every file in ``ledgers``. A backup stamped in the future
        (its newest entry later than the clock) is refused as suspect.
        """
        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        file, target = Path(file), Path(target)
        if target.exists() and any(target.iterdir()):
            raise AlreadyExists(f"{target} is not empty; restore into a new directory")
        # Built beside the target and renamed into place only when complete and checked: a
        # failed or killed restore never leaves a half vault that blocks a rerun (which
        # deletes what an interrupted one left in the staging directory).
        import shutil

        stage = target.parent / f".{target.name}.restoring"
        if stage.exists():
            shutil.rmtree(stage)
        try:
            done, witnessed = cls._restore_into(
                file, stage, member, src, kdf=kdf, clock=clock, ledgers=ledgers
            )
            stage.rename(target)  # over an empty directory too (rename(2) allows that)
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        # The restoring member chose this backup: their witness now follows it (the restore
        # entry names what it lacked). Only once the vault is in place: a failed restore
        # leaves the witness on the live vault. Other members accept it themselves.
        witnessed()
        return done

    @classmethod
    def _restore_into(
        cls,
        file: Path,
        target: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams,
        clock: Clock,
        ledgers: Sequence[Path],
    ) -> tuple[RestoreReport, Callable[[], None]]:
        from credvault.backup import RESTORED_FILES, unpack
        from credvault.witnessing import summary

        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        unpack(file, target)
        try:
            with cls._open(
                target, member, src, kdf=kdf, clock=clock, auto_purge=False, witness="defer"
            ) as v:
                problems = v.integrity_check()
                if problems:
                    raise IntegrityError(
                        f"restored database fails its integrity check: {problems[0][:80]}"
                    )
                s = v._s
                s.audit.verify()
                keeper = v._witness
                assert keeper is not None
                gaps = keeper.gaps()[0]
                report = v._restore_purges(file, list(ledgers))
                lost = f"; witness of {member} reset ({summary(gaps)})" if gaps else ""
                with s.store.write():
                    s.log(
                        "restore",
                        None,
                        None,
                        "ok",
                        f"from {file.name}; {report.summary()}{lost}"[:400],
                    )
                return report, keeper.reset_to(keeper.heads_now())
        except BaseException:
            for name in RESTORED_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (target / name).unlink()
            raise

    def _restore_purges(self, file: Path, ledgers: list[Path]) -> RestoreReport:
        from credvault import ledger
        from credvault.model import parse_iso
        from credvault.retention import CLOCK_SKEW

        s = self._s
        head = s.store.audit_head()
        backup_time = str(head[1]) if head else ""
        if backup_time and parse_iso(backup_time) > s.clock() + CLOCK_SKEW:
            raise IntegrityError(
                f"backup {file.name} is stamped in the future ({backup_time[:16]}, the clock "
                f"says {s.now()[:16]}): suspect; check the clock and where the file came from"
            )
        vid = s.vault_id.hex()
        paths = [file.parent / ledger.backup_ledger_name(vid)]
        if file.parent.name.endswith("-backups"):
            paths.append(
                file.parent.parent / file.parent.name[: -len("-backups")] / ledger.VAULT_LEDGER
            )
        paths += [Path(p) for p in ledgers]
        from credvault.purge import receipt_history

        found = ledger.search(paths, vid, receipt_history(s))
        records = dict(found.records)
        looked = list(found.looked_in)
        newest = found.newest
        closes = dict(found.closes)
        newer_records, newer_closes = _newer_backup_records(file, vid, s)
        for rec, where in newer_records:
            records.setdefault(rec.engagement, rec)
            newest = max(newest or "", rec.purged_at)
            if where not in looked:
                looked.append(where)
        for c in newer_closes:
            ledger.newest_close(closes, c)
            if c.source not in looked:
                looked.append(c.source)
        destroyed: list[str] = []
        for name in sorted(records):
            eng = s.store.engagement_by_name(name)
            if eng is None or eng.state == "purged":
                continue
            self.purger.destroy_recorded(
                self.engagements.get(name),
                note=f"destroyed on {records[name].purged_at[:10]} per {Path(records[name].source).name}",
            )
            destroyed.append(name)
        if destroyed:
            self.purger.rewrite(wait_s=0)
        # Closed (or held, or released) after the backup: back in that state, before the due
        # purge runs, so neither an escaped purge nor one ahead of a client's hold.
        reclosed = self._apply_close_records(closes, backup_time)
        done = self.purger.run_due(automatic=True, restoring=True)
        newer = newest is not None and newest >= backup_time
        return RestoreReport(
            [d.engagement for d in done],
            destroyed,
            looked,
            newest if newer else None,
            backup_time,
            reclosed,
        )

    def _apply_close_records(
        self, closes: dict[str, ledger.CloseRecord], backup_time: str
    ) -> list[str]:
        """Put back the lifecycle state that records newer than the backup give for its
        engagements (audited as ``close``); returns the names whose state changed."""
        s = self._s
        changed: list[str] = []
        for name in sorted(closes):
            rec = closes[name]
            eng = s.store.engagement_by_name(name)
            if eng is None or eng.state == "purged" or rec.as_of <= backup_time:
                continue
            same = (eng.state, eng.closed_at, eng.purge_due, eng.hold_until) == (
                "closed",
                rec.closed_at,
                rec.purge_due,
                rec.hold_until,
            )
            if same:
                continue
            with s.store.write():
                s.store.close_engagement(eng.id, rec.closed_at, rec.grace_days, rec.purge_due)
                s.store.set_hold(
                    eng.id, rec.hold_until, rec.hold_reason, rec.hold_by, rec.purge_due
                )
                held = f"; held until {rec.hold_until[:16]}" if rec.hold_until else ""
                s.log(
                    "close",
                    eng.name,
                    None,
                    "ok",
                    f"as recorded after the backup ({Path(rec.source).name}): closed "
                    f"{rec.closed_at[:16]}, purge due {rec.purge_due[:16]}{held}",
                )
            changed.append(name)
        return changed

    @classmethod
    def _unlock(
        cls,
        path: Path,
        member: str,
        src: UnlockSource,
        clock: Clock,
        lock: contextlib.ExitStack,
        *,
        exclusive: bool = False,
    ) -> Session:
        slots, keys, staged_from = _resolve(path, member, src, clock)
        if keys.name not in slots.members:  # e.g. keys cached before the member was removed
            raise NotFound("member", keys.name, f"{keys.name!r} is not a member of this vault")
        if slots.pending is not None and not exclusive:
            # An interrupted re-key. Finish it alone, and decide only on what is on disk once
            # the exclusive lock is ours (another process may have finished it meanwhile).
            return cls._unlock_exclusive(path, keys, clock, lock)
        db_key = slots.open_db_key(keys)
        try:
            store = Store.open(path / DB_NAME, db_key)
        except IntegrityError:
            new_key = slots.open_pending_db_key(keys)
            if new_key is None:
                raise
            # Interrupted after the swap: the database is already under the pending key.
            from credvault import rekey

            return rekey.resume_after_swap(
                path, slots, keys, db_key, new_key, clock, cls._checked_settled
            )
        opened: Session | None = None
        try:
            slots.verify_mac(db_key)
            session = opened = Session(
                path, store, AuditLog(store, db_key), slots, keys, db_key, clock
            )
            cls._settle(cls._checked(session), staged_from)
            if session.slots.pending is not None and not exclusive:
                # Settling installed a member removal: finish its re-key alone.
                session.store.close()
                return cls._unlock_exclusive(path, keys, clock, lock)
            if session.slots.pending is not None or (path / NEXT_DB).exists():
                from credvault import rekey

                rekey.resume_before_swap(session)  # we hold the exclusive lock if pending
        except BaseException:
            (opened.store if opened is not None else store).close()  # a re-key swaps it
            raise
        return session

    @classmethod
    def _unlock_exclusive(
        cls, path: Path, keys: MemberKeys, clock: Clock, lock: contextlib.ExitStack
    ) -> Session:
        lock.close()
        lock.enter_context(locked(path / LOCK_NAME, exclusive=True))
        return cls._unlock(path, keys.name, InMemory(keys), clock, lock, exclusive=True)

    @classmethod
    def _checked_settled(cls, session: Session) -> Session:
        cls._settle(cls._checked(session), None)
        return session

    @staticmethod
    def _settle(session: Session, staged_from: Path | None) -> None:
        """The key-slot file must be the version the database records (see slotfile.py);
        the common case costs one directory listing and a hash."""
        recorded = session.store.get_meta("keyslots_digest")
        if (
            staged_from is None
            and recorded == session.slots.membership_digest()
            and not any(_is_staged(f.name) for f in session.path.iterdir())
        ):
            return
        from credvault.slotfile import settle

        settle(session, staged_from)

    @staticmethod
    def _checked(session: Session) -> Session:
        meta = session.store.all_meta()
        fmt = meta.get("format_version")
        if not isinstance(fmt, int):
            raise IntegrityError("vault database has no format version")
        if fmt > FORMAT_VERSION:
            raise UnsupportedFormat(
                f"this vault's format ({fmt}) is newer than this credvault supports "
                f"({FORMAT_VERSION}); upgrade credvault"
            )
        if meta.get("vault_id") != session.slots.vault_id.hex():
            raise IntegrityError("database and key-slot file belong to different vaults")
        return session

    def _after_open(self, auto_purge: bool, witness: str = "check") -> None:
        s = self._s
        if witness != "off":
            # First, before this session writes: a rolled-back vault is refused as found.
            from credvault.witnessing import Keeper

            self._witness = Keeper(s)
            if witness == "check":
                self._witness.check()
                s.store.on_commit = self._witness.advance
        head = s.store.audit_head()
        s.newest_at_open = str(head[1]) if head else None  # before this session writes
        if s.store.get_meta("format_version") != FORMAT_VERSION:
            self._upgrade()
        if s.store.get_meta("needs_vacuum"):
            # finish a purge interrupted before its file rewrite, or one a reader held up
            self.purger.rewrite(wait_s=0)
        _import_failed_unlocks(s)
        if auto_purge and s.may_destroy:
            from credvault.clock import note_trusted_clock

            note_trusted_clock(s)
            if s.store.anything_due(s.now()):
                self.purger.run_due(automatic=True)  # held silently on a suspect clock
        self._rotate_pending()

    def _upgrade(self) -> None:
        """Bring a vault of an older format up to this one, in place, once.

        Under the exclusive lock (nobody else has it open), after a backup in the usual
        backup directory (so ``restore`` can go back, and retention prunes it), in one
        transaction, audited. Format steps are ``store.MIGRATIONS``.
        """
        from credvault.backup import default_backup_dir, write_backup

        s = self._s
        s.exclusive()
        fmt = int(s.store.get_meta("format_version"))
        if fmt == FORMAT_VERSION:  # another process upgraded it while we waited
            return
        # Before the backup (none is written per failed attempt): the tables must be in the
        # format meta claims, or an insider rewound format_version and the steps would fail.
        actual = s.store.schema_format()
        if fmt < 1 or actual != fmt:
            raise IntegrityError(
                f"vault database claims format {fmt} but its tables are format {actual}: "
                "tampered with"
            )
        target = write_backup(s, default_backup_dir(s.path), next_free=True)
        with s.store.write():
            s.store.migrate(fmt)
            s.store.set_meta("format_version", FORMAT_VERSION)
            s.log(
                "upgrade",
                None,
                None,
                "ok",
                f"format {fmt} to {FORMAT_VERSION}; backup first: {target.name}",
            )

    def _rotate_pending(self) -> None:
        """Finish rotations left by an expiry, removal or reset, if this member leads."""
        for name in self._s.store.engagements_needing_rotation():
            with contextlib.suppress(CredvaultError):
                self.engagements.rotate_if_needed(self.engagements.get(name))
        # Engagements made before the membership log (format 3) get one from their first
        # lead's next open (docs/security.md §12, "Upgrade"); one indexed query otherwise.
        with contextlib.suppress(CredvaultError):  # best effort: a damaged row waits
            for name in self._s.store.engagements_without_log():
                with contextlib.suppress(CredvaultError):
                    self.engagements.keys.bootstrap(self.engagements.get(name))

    def close(self) -> None:
        self._s.store.on_commit = None
        if self._witness is not None:
            self._witness.close()
        with contextlib.suppress(Exception):
            self._s.store.close()
        self._s.engagement_keys.clear()
        self._s.lock.close()

    def release(self) -> None:
        """Let go of the vault lock between uses (a long-lived holder such as the agent).

        Every open ``Vault`` holds the vault lock shared, and an exclusive operation (a
        re-key by ``member rm``) waits for all holders: a program that keeps a ``Vault`` for
        hours calls this when idle and :meth:`reacquire` before its next use.
        """
        self._s.lock.close()

    def reacquire(self) -> bool:
        """Take the shared vault lock again after :meth:`release`.

        False: the database file was replaced meanwhile (a re-key): close this ``Vault`` and
        open a new one. True: the open database is the current one and may be used.
        Raises :class:`IntegrityError` if the vault is now behind or forked from the
        member's witness (files put back meanwhile), as :meth:`open` would.
        """
        s = self._s
        s.lock.enter_context(locked(s.path / LOCK_NAME, exclusive=False))
        try:
            st = (s.path / DB_NAME).stat()
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) != s.db_file:
            return False
        if s.store.on_commit is not None and self._witness is not None:
            # Files put back under a long-lived holder (the agent) are caught as at an open.
            self._witness.check()
        return True

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Run several operations in one transaction: one commit, one fsync (group commit).

        Each operation's audit entry is durable only when the block ends: do not hand out
        what an operation returned before then. For the agent, which answers 8 clients at
        once; operations that re-key or need the vault alone must not run inside.
        """
        return self._s.store.batch()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vault({str(self._s.path)!r}, member={self._s.member!r})"

    # -- convenience and vault-wide operations ----------------------------------------------
    @property
    def member(self) -> str:
        return self._s.member

    @property
    def path(self) -> Path:
        return self._s.path

    @property
    def vault_id(self) -> str:
        return self._s.vault_id.hex()

    @property
    def public_key(self) -> str:
        """The vault's current receipt-signing public key (base64): give it to clients.

        It changes when a member leaves (``member rm``, ``passwd --compromised``); the
        successor is signed by its predecessor, see :meth:`receipt_keys`."""
        from credvault.purge import receipt_history

        return base64.b64encode(receipt_history(self._s).current.public_key).decode()

    def receipt_keys(self) -> ReceiptKeys:
        """Every receipt key the vault has had, with its validity period, each after the
        first introduced by a link signed by its predecessor (publish it with
        ``credvault receipt-keys --json``; pass it to :func:`verify_receipt`)."""
        from credvault.purge import receipt_history

        with self._s.store.read():
            return receipt_history(self._s)

    def member_keys(self) -> MemberKeys:
        """The unlocked member keys (for the keyring cache). Handle as a secret."""
        return self._s.keys

    # -- the OS keyring cache ---------------------------------------------------------------
    def cache_keys(self, ttl: timedelta) -> str:
        """Cache this member's unlocked keys in the OS keyring for ``ttl`` (see
        :func:`parse_ttl`); returns the expiry (UTC). Raises :class:`KeyringUnavailable`."""
        from credvault.keyring_cache import cache_keys

        return cache_keys(self.vault_id, self._s.keys, ttl, self._s.clock())

    @staticmethod
    def keyring_status(path: Path, member: str) -> dict[str, object]:
        """Whether ``member`` has keys cached for the vault at ``path`` (no unlock needed):
        ``{"unlocked": bool, "until": expiry or None, "message": text}``."""
        from credvault.keyring_cache import cache_status

        return cache_status(Path(path), member, utc_now())

    @staticmethod
    def forget_cached_keys(path: Path, member: str) -> bool:
        """Delete ``member``'s cached keys for the vault at ``path``; whether any were cached."""
        from credvault.keyring_cache import forget

        return forget(Path(path), member)

    def put(self, ref: str, secret: Secret | bytes | str, **fields: str | None) -> CredentialInfo:
        value = secret if isinstance(secret, Secret) else Secret(secret)
        del secret  # only the redacted wrapper stays a local of this frame
        return self.credentials.put(ref, value, **fields)

    def get(self, ref: str, *, reason: str | None = None) -> Credential:
        return self.credentials.get(ref, reason=reason)

    def info(self) -> VaultInfo:
        """Facts about the vault and its settings (``credvault info``)."""
        from credvault.results import VaultInfo

        s = self._s
        meta = s.store.all_meta()
        return VaultInfo(
            path=str(s.path),
            vault_id=self.vault_id,
            format=meta["format_version"],
            public_key=self.public_key,
            created_at=meta.get("created_at"),
            members=len(s.slots.members),
            key_generation=s.slots.generation,
            settings={name: value(name, meta.get(key)) for name, (key, _) in SETTINGS.items()},
        )

    def set_setting(self, name: str, value: str) -> None:
        from credvault.retention import parse

        s = self._s
        key, n = parse(name, value)
        s.require("vault.settings")
        with s.store.write():
            s.store.set_meta(key, n)
            if key == "purge_grace_days":
                self.engagements.lifecycle.reschedule(n)
            s.log("config-set", None, name, "ok", f"{name}={n}")
        if key == "purge_grace_days":  # purge dates moved: the ledgers' close records too
            from credvault.lifecycle import record_state

            record_state(s)

    # -- audit ------------------------------------------------------------------------------
    def audit_entries(
        self,
        *,
        engagement: str | None = None,
        member: str | None = None,
        action: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Same as ``vault.audit.entries(...)``."""
        return self.audit.entries(
            engagement=engagement, member=member, action=action, since=since, limit=limit
        )

    def audit_verify(self, checkpoint: str | None = None) -> int:
        """Same as ``vault.audit.verify(checkpoint)``."""
        return self.audit.verify(checkpoint)

    def audit_checkpoint(self) -> Checkpoint:
        """Same as ``vault.audit.checkpoint()``."""
        return self.audit.checkpoint()

    # -- purge and recovery -----------------------------------------------------------------
    def purge(self, *, dry_run: bool = False, confirm_clock: str | None = None) -> list[PurgePlan]:
        """Purge everything due now (admins and service identities); with ``dry_run`` only
        list it. Returns what was (or would be) purged. On a suspect clock it raises
        :class:`ClockSuspect` unless ``confirm_clock`` is the clock's date (``YYYY-MM-DD``)."""
        s = self._s
        s.require("vault.purge")
        if dry_run:  # names what is due (engagements, clients): on the record too
            plan = self.purger.plan()
            with s.store.write():
                s.log("purge-plan", None, None, "ok", f"{len(plan)} engagements due")
            return plan
        done = self.purger.run_due(automatic=False, confirm_clock=confirm_clock)
        with s.store.write():
            s.log("purge-run", None, None, "ok", f"{len(done)} engagements purged")
        return done

    def recover(self, engagement: str, recovery_key: str, grant_to: str, role: str) -> None:
        vid, seed = parse_recovery(recovery_key)
        if vid != self._s.vault_id:
            raise InvalidInput("the recovery key belongs to another vault")
        self.engagements.recover(engagement, seed, grant_to, role)

    def status(self) -> VaultStatus:
        """Who you are and, among the engagements you may see, what is due or scheduled."""
        from credvault.results import ScheduledPurge, VaultStatus

        s = self._s
        mine = {e.name for e in self.engagements.visible_quietly()}
        due = [pl for pl in self.purger.plan() if pl.engagement in mine]
        closed = [
            ScheduledPurge(e.name, e.purge_due, self.engagements.purge_status(e))
            for e in self.engagements.visible_quietly()
            if e.state == "closed"
        ]
        with s.store.write():  # it shows engagement names and dates: on the record
            s.log("status", None, None, "ok", f"{len(due)} due, {len(closed)} scheduled")
        return VaultStatus(s.member, s.is_admin, str(s.path), self.vault_id, due, closed)

    def integrity_check(self) -> list[str]:
        """SQLite's and SQLCipher's own checks (empty list: fine)."""
        return self._s.store.integrity_check()

    def check(self) -> CheckReport:
        """The full check of ``credvault check`` on this open vault (admins, services)."""
        from credvault.integrity import check_session

        return check_session(self._s)

    @classmethod
    def check_at(
        cls,
        path: Path,
        member: str,
        source: UnlockSource | bytes | str,
        *,
        kdf: KdfParams = DEFAULT,
        clock: Clock = utc_now,
    ) -> CheckReport:
        """Check the vault directory or backup file at ``path`` (see :mod:`credvault.integrity`).

        Failures to open that are integrity failures (a damaged first page, a key-slot file
        that does not verify, a truncated backup) are reported as problems; a wrong
        passphrase or a missing vault raises. A backup file is checked on a private
        temporary copy, without purging anything; the backup itself is not changed.
        """
        from credvault.integrity import CheckReport

        src: UnlockSource = source if not isinstance(source, (bytes, str)) else Passphrase(source)
        del source  # a str or bytes passphrase must not stay a local of this frame
        path = Path(path)
        if not path.is_file():
            try:
                v = cls.open(path, member, src, kdf=kdf, clock=clock, auto_purge=False)
            except IntegrityError as e:
                return CheckReport(str(path), [], [str(e)])
            with v:
                return v.check()

        import shutil
        import tempfile

        from credvault.backup import unpack
        from credvault.integrity import check_session

        tmp = Path(tempfile.mkdtemp(prefix="credvault-check-"))
        try:
            work = tmp / "vault"
            try:
                unpack(path, work)
                v = cls._open(
                    work, member, src, kdf=kdf, clock=clock, auto_purge=False, witness="off"
                )
            except IntegrityError as e:
                return CheckReport(str(path), [], [f"backup file: {e}"])
            with v:
                r = check_session(v._s, label=path.name)
            return CheckReport(str(path), ["backup file: complete", *r.checked], r.problems)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _newer_backup_records(
    file: Path, vault_id: str, s: Session
) -> tuple[list[tuple[ledger.Record, str]], list[ledger.CloseRecord]]:
    """The tombstones and the closed engagements of this vault's backups in ``file``'s
    directory that are newer than ``file`` (by the stamp in their names), opened with the
    restoring member's keys; a backup that cannot be opened (other keys, damaged) is
    skipped."""
    import shutil as _shutil
    import tempfile

    from credvault.backup import BACKUP_NAME as _NAME
    from credvault.backup import unpack
    from credvault.ledger import CloseRecord, Record, receipt_history
    from credvault.receipts import verify_receipt
    from credvault.unlock import InMemory

    m = _NAME.match(file.name)
    mine = m.group(2) if m else ""
    out: list[tuple[Record, str]] = []
    closes: list[CloseRecord] = []
    for other in sorted(file.parent.glob(f"credvault-backup-{vault_id}-*.cvb")):
        om = _NAME.match(other.name)
        if not om or om.group(2) <= mine or other.resolve() == file.resolve():
            continue
        tmp = Path(tempfile.mkdtemp(prefix="credvault-ledger-"))
        try:
            unpack(other, tmp / "v")
            with Vault._open(
                tmp / "v",
                s.member,
                InMemory(s.keys),
                clock=s.clock,
                auto_purge=False,
                witness="off",
            ) as v:
                # The newer backup's receipt keys count only as far as they follow, link by
                # link, from the keys this vault already trusts.
                keys = receipt_history(s).extended(receipt_history(v._s).links())
                for name, text in v._s.store.purged_receipts():
                    try:
                        body = verify_receipt(text, keys)
                    except CredvaultError:
                        continue
                    out.append((Record(name, str(body.get("purged_at")), str(other)), str(other)))
                head = v._s.store.audit_head()
                as_of = str(head[1]) if head else ""
                closes.extend(
                    CloseRecord(
                        e.name,
                        e.closed_at,
                        e.grace_days,
                        e.purge_due,
                        e.hold_until,
                        e.hold_reason,
                        e.hold_by,
                        as_of,
                        str(other),
                    )
                    for e in v._s.store.engagements()
                    if e.state == "closed" and e.closed_at and e.purge_due
                )
        except (CredvaultError, OSError):
            continue
        finally:
            _shutil.rmtree(tmp, ignore_errors=True)
    return out, closes


def _is_staged(name: str) -> bool:
    return name.startswith("keyslots.json.") and name.endswith(".staged")


def _resolve(
    path: Path, member: str, src: UnlockSource, clock: Clock
) -> tuple[KeySlots, MemberKeys, Path | None]:
    """Unlock ``member`` from the key-slot file, or else from a staged next version of it
    (a change interrupted after its COMMIT, which the open then installs; see slotfile.py).
    Returns the file's slots, the keys, and the staged file used (None: the current one)."""
    slots = KeySlots.read(path / SLOTS_NAME)
    try:
        keys = resolve(src, slots, member)
    except (WrongPassphrase, NotFound) as first:
        for f in sorted(path.iterdir()):
            if not _is_staged(f.name):
                continue
            with contextlib.suppress(CredvaultError, OSError):
                staged = KeySlots.read(f)
                return staged, resolve(src, staged, member), f
        if isinstance(first, WrongPassphrase):
            _record_failed_unlock(path, member, clock)
        raise
    if not _keys_match(slots, keys):
        # Already-unlocked keys (the exclusive re-open of an interrupted change, a cache) of
        # a key pair the current file does not hold yet: a committed ``passwd
        # --compromised`` whose staged file awaits installing.
        for f in sorted(path.iterdir()):
            if _is_staged(f.name):
                with contextlib.suppress(CredvaultError, OSError):
                    staged = KeySlots.read(f)
                    if _keys_match(staged, keys):
                        return staged, keys, f
    return slots, keys, None


def _keys_match(slots: KeySlots, keys: MemberKeys) -> bool:
    slot = slots.members.get(keys.name)
    return slot is not None and p.x25519_public(keys.kem_private) == slot.kem_pub


def _record_failed_unlock(path: Path, member: str, clock: Clock) -> None:
    """A failed unlock cannot open the database: note it beside it for the next open."""
    line = f"{iso(clock())} {member if validate._NAME.match(member) else '<invalid>'}\n"
    with contextlib.suppress(OSError):
        fd = os.open(path / FAILED_UNLOCKS, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _import_failed_unlocks(s: Session) -> None:
    f = s.path / FAILED_UNLOCKS
    if not f.exists():
        return
    with s.store.write():  # the write lock: two opening processes import it once
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            return  # another process imported it while we waited for the lock
        # Imported exactly once: "length:digest" of what was imported commits with the
        # entries, and the file goes only after the COMMIT, and only if no line was appended
        # meanwhile (else the next open imports just the lines after that length).
        done = str(s.store.get_meta("failed_unlocks_imported") or "0:")
        n_done, _, digest_done = done.partition(":")
        start = int(n_done) if n_done.isdigit() else 0
        if len(data) < start or hashlib.sha256(data[:start]).hexdigest() != digest_done:
            start = 0
        for line in data[start:].decode(errors="replace").splitlines()[-1000:]:
            ts, _, who = line.partition(" ")
            s.audit.append(
                s.now(),
                who if validate._NAME.match(who) else "<invalid>",
                "unlock",
                None,
                None,
                "denied",
                # the file is writable by whoever can write the vault directory: keep only
                # what a timestamp holds, so no terminal escape is carried into the trail
                "failed unlock at "
                + "".join(c if c in "0123456789-:.TZ" else "?" for c in ts[:32])
                + " (recorded at next open)",
            )
        s.store.set_meta(
            "failed_unlocks_imported", f"{len(data)}:{hashlib.sha256(data).hexdigest()}"
        )
    with contextlib.suppress(FileNotFoundError):
        if f.read_bytes() == data:
            f.unlink()


__all__ = ["InitResult", "Vault", "default_dir"]
