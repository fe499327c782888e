"""Operations on a PostgreSQL team vault beyond the daily commands (issue 14): the owner's
schema upgrade, and (below) an engagement's lifecycle and purge with its receipt.

Imported lazily by :class:`credvault.team.Team` (never by ``credvault get``), so the
SQLCipher path stays free of psycopg. Like :mod:`credvault.team`, it decides nothing the
server does not check again: the SECURITY DEFINER functions of ``upgrade-2.sql`` check the
caller's role and write the audit rows; this module makes and checks what must be made on
the member's machine (the purge receipt's signature above all).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple, Protocol

from credvault.errors import (
    AccessDenied,
    IntegrityError,
    InvalidInput,
    NotOnTeam,
    RetentionError,
    UnsupportedFormat,
)
from credvault.postgres.store import PgStore
from credvault.team_ledger import keep, keep_close

if TYPE_CHECKING:
    from credvault.keyslots import MemberKeys
    from credvault.model import Engagement
    from credvault.results import PurgePlan, Receipt
    from credvault.team_handle import TeamHandle


class SchemaUpgrade(NamedTuple):
    """What ``credvault init --upgrade-schema`` did: the version before and after."""

    database: str
    before: int
    after: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade_schema(target: str) -> SchemaUpgrade:
    """As the database's owner (libpq's own login, as for ``init``): apply the upgrade
    files this database lacks, in one transaction under the advisory lock, audited on the
    team trail (``upgrade``). Refuses a database without a vault (run ``init``), a newer
    schema, a superuser and any role but the owner (exit 4)."""
    from credvault.postgres.server import SCHEMA_VERSION, apply_schema, installed_version

    owner = PgStore.connect(target, "owner", check=False)
    try:
        before = installed_version(owner.conn)
        owner.conn.rollback()
        if before is None:
            raise UnsupportedFormat(
                "no credvault schema in this database: make the vault with `credvault init`"
            )
        apply_schema(owner.conn)
        return SchemaUpgrade(owner.database(), before, SCHEMA_VERSION)
    finally:
        owner.close()


# -- an engagement's lifecycle ----------------------------------------------------------------
class TeamLifecycle:
    """``engagement close / retain / release`` on a team vault: the server checks the role
    (its lead or an admin), the state, and writes the audit rows (``close``, ``retain``,
    ``release``; denials and refusals too), with the same texts as on SQLCipher."""

    def __init__(self, t: TeamHandle) -> None:
        self.t = t
        self._grace: dict[str, int] = {}

    def get(self, name: str, verb: str) -> Engagement:
        from credvault.postgres import lifecycle_store as ls

        got = ls.lifecycle(self.t.store, name)
        if got is None:
            raise AccessDenied(self.t.member, verb, name, "no grant")
        self._grace[name] = got.grace_days
        return got.engagement

    def visible(self, client: str | None = None) -> list[Engagement]:
        """``engagement ls``: every engagement for an admin, else those the member holds a
        live role in (not purged), by name; audited ``engagement-ls`` by the server."""
        from credvault import validate
        from credvault.postgres import lifecycle_store as ls

        if client is not None:
            validate.name(client, "client name")
        got = ls.visible(self.t.store, client)
        self._grace.update((x.engagement.name, x.grace_days) for x in got)
        return [x.engagement for x in got]

    def shown(self, name: str) -> tuple[Engagement, str | None]:
        """``engagement show``'s record and the member's role, audited ``engagement-show``
        by the server (a refusal as ``show``, denied: exit 4; a name the member cannot see
        is refused the same way, as row-level security hides it)."""
        from credvault import validate
        from credvault.postgres import lifecycle_store as ls

        validate.name(name, "engagement name")
        got = ls.show(self.t.store, name)
        if got is None:
            raise AccessDenied(self.t.member, "show", name, "no grant")
        life, role = got
        self._grace[name] = life.grace_days
        return life.engagement, role

    def purge_status(self, eng: Engagement) -> str:
        """When the purge is due and why, in words (as on SQLCipher)."""
        from credvault.retention import describe

        grace = eng.grace_days if eng.grace_days is not None else self._grace.get(eng.name, 7)
        return describe(eng, grace)

    def _outcome(self, outcome: str, verb: str, name: str, refusal: str) -> None:
        if outcome.startswith("denied: "):
            raise AccessDenied(self.t.member, verb, name, outcome.removeprefix("denied: "))
        if outcome.startswith("error: "):
            state = outcome.removeprefix("error: ")
            raise RetentionError(refusal.format(name=name, state=state))
        if outcome != "ok":
            raise IntegrityError(f"the team vault answered {outcome!r}")

    def close(self, name: str, grace_days: int | str | None = None) -> Engagement:
        from credvault import validate
        from credvault.postgres import lifecycle_store as ls

        validate.name(name, "engagement name")
        grace = None if grace_days is None else validate.days(grace_days, "grace period")
        outcome = ls.close(self.t.store, name, grace)
        if outcome == "error: closed":
            # closed already, maybe by a close cut short before its record reached this
            # machine's ledger: the record of it as it is now (twice is harmless), then no
            self._kept(self.get(name, "close"))
        self._outcome(outcome, "close", name, "engagement {name!r} is {state}: cannot close")
        return self._kept(self.get(name, "close"))

    def _kept(self, eng: Engagement) -> Engagement:
        """``eng`` after a close, hold or release, its close record signed here and kept in
        this machine's purge ledger (a restored dump cannot undo it unnoticed)."""
        keep_close(self.t, eng)
        return eng

    def retain(self, name: str, until: str, reason: str) -> Engagement:
        from datetime import UTC, datetime

        from credvault import validate
        from credvault.model import iso
        from credvault.postgres import lifecycle_store as ls

        validate.name(name, "engagement name")
        dt = validate.when(until, "hold end date")
        why = validate.reason(reason)
        if not why:
            raise InvalidInput("a retention hold needs a reason")
        if dt <= datetime.now(UTC):
            raise InvalidInput("the hold end date is in the past")
        outcome = ls.set_hold(self.t.store, name, iso(dt), why)
        self._outcome(
            outcome,
            "set a retention hold",
            name,
            "engagement {name!r} is {state}: only a closed engagement can be held",
        )
        return self._kept(self.get(name, "set a retention hold"))

    def release(self, name: str) -> Engagement:
        from credvault import validate
        from credvault.postgres import lifecycle_store as ls

        validate.name(name, "engagement name")
        outcome = ls.release_hold(self.t.store, name)
        if outcome == "error: no retention hold":
            # released already, maybe by a release cut short before its record reached this
            # machine's ledger (as close's): the record of it as it is now, then no
            self._kept(self.get(name, "release the hold"))
        self._outcome(
            outcome, "release the hold", name, "engagement {name!r} has no retention hold"
        )
        return self._kept(self.get(name, "release the hold"))


# -- purge and receipts -----------------------------------------------------------------------
REWRITE_PENDING = (
    "deleted from the live rows, but the table files keep the old rows until the database "
    "owner rewrites them: the owner runs `credvault purge --rewrite --vault "
    "postgresql://OWNER@…`, then an admin's next `credvault purge` signs the receipts "
    "complete (docs/team.md, Purge)"
)


def sign_receipt(keys: MemberKeys, facts: dict[str, object], complete_at: str | None) -> str:
    """The receipt for the server's ``facts``, signed here with the member's own Ed25519
    key (never a key the database holds), as the RFC 8785 text a client checks with
    openssl (docs/verify-receipt.sh): format 2, naming its key."""
    import base64

    from credvault.crypto import primitives as p
    from credvault.receipts import key_id, receipt_message, receipt_text

    pub = p.ed25519_public(keys.sign_private)
    body = {**facts, "destruction_complete_at": complete_at}
    full: dict[str, object] = {
        **body,
        "public_key": base64.b64encode(pub).decode(),
        "key_id": key_id(pub),
    }
    sig = p.sign(keys.sign_private, b"", receipt_message(full))
    return receipt_text({**full, "signature": base64.b64encode(sig).decode()})


class TrashPurging(Protocol):
    """What ``trash purge`` needs (:class:`credvault.team_records.TeamTrash`): given by
    ``team.py``, which loads both modules, so this one imports neither."""

    def destroy_trashed(self, ref: str, *, system: bool = False) -> None: ...


class TeamPurger:
    """Purges on a team vault: due ones by an admin (``credvault purge``, and automatically
    when an admin opens the vault for any command but ``get``), a shred by its lead or an
    admin. The server deletes, audits and states the facts; the receipt is signed here."""

    def __init__(self, t: TeamHandle, *, trash: TrashPurging | None = None) -> None:
        self.t = t
        self.trash = trash

    def destroy_trashed(self, ref: str, *, system: bool = False) -> None:
        """``trash purge``: one removal destroyed now (:mod:`credvault.team_records`)."""
        if self.trash is None:
            raise NotOnTeam("trash purge")
        self.trash.destroy_trashed(ref, system=system)

    @property
    def complete(self) -> bool:
        """No purged engagement is waiting for the owner's table rewrite."""
        from credvault.postgres import lifecycle_store as ls

        return not ls.awaiting_rewrite(self.t.store)

    pending_reason = REWRITE_PENDING

    def _destroy(self, name: str, why: str, *, automatic: bool) -> Receipt:
        from credvault.postgres import lifecycle_store as ls
        from credvault.results import Receipt

        t = self.t
        facts = ls.destroy(t.store, name, why, automatic=automatic)
        if facts is None:
            verb = "shred" if why == "request" else "purge"
            who = "its lead or an admin" if why == "request" else "admins only"
            raise AccessDenied(t.member, verb, name, who)
        text = sign_receipt(t.keys, facts, None)
        # this machine's ledger first: killed after it, the server's receipt waits unsigned
        # for the next purge (sign_pending), which signs and keeps it again; killed after the
        # server's, before the ledger's, nothing would ever write the ledger's line
        keep(t, text)
        ls.store_receipt(t.store, name, text)
        t.forget_keys(name)
        return Receipt.from_json(json.loads(text))

    def destroy_recorded(self, name: str) -> Receipt:
        """Destroy ``name`` again: a receipt in a purge ledger says it was destroyed after
        the dump this database was restored from (:mod:`credvault.team_ledger`; admins)."""
        return self._destroy(name, "ledger", automatic=False)

    def shred(self, name: str) -> Receipt:
        """The client's deletion request: destroy now, whatever the state."""
        from credvault import validate

        validate.name(name, "engagement name")
        return self._destroy(name, "request", automatic=False)

    def sign_pending(self) -> int:
        """Sign the receipts this member may sign and that wait for it: a purge whose
        receipt was never stored (killed in between), or one the owner has rewritten since
        (signed again, now with ``destruction_complete_at``)."""
        from credvault.postgres import lifecycle_store as ls

        n = 0
        for name, facts, rewritten_at in ls.receipts_to_sign(self.t.store):
            text = sign_receipt(self.t.keys, facts, rewritten_at)
            keep(self.t, text)  # the ledger first, as _destroy
            ls.store_receipt(self.t.store, name, text)
            n += 1
        return n

    def run(
        self, *, dry_run: bool = False, confirm_clock: str | None = None, automatic: bool = False
    ) -> list[PurgePlan]:
        """Purge everything due (admins), and destroy the trash past its recovery period
        (:func:`credvault.postgres.lifecycle_store.expire_trash`). ``automatic``: on opening
        the vault; it does nothing for a non-admin or on a suspect server clock, and deletes
        without waiting."""
        from credvault.postgres import lifecycle_store as ls

        t = self.t
        if confirm_clock is not None:
            from credvault import validate

            validate.when(confirm_clock, "--confirm-clock date")
        plans = ls.due(t.store, confirm_clock, plan=dry_run, quiet=automatic)
        if not dry_run:  # the trash past its recovery period, as SQLCipher's run_due
            ls.expire_trash(t.store, confirm_clock is not None)
        if automatic and not plans:
            return []
        if not automatic and not plans and not t.store.whoami()[1]:
            raise AccessDenied(t.member, "purge", None, "admins only")
        if dry_run:
            return plans
        done = []
        for plan in plans:
            try:
                self._destroy(plan.engagement, plan.reason, automatic=automatic)
            except RetentionError:  # purged meanwhile by another admin: theirs
                continue
            done.append(plan)
        if not automatic:
            self.sign_pending()
            ls.purge_run(t.store, len(done))
        return done

    def receipt(self, name: str) -> Receipt:
        """A purged engagement's receipt, its signature checked here against the published
        key of the member it names (the purging member or an admin); audited."""
        from credvault import validate
        from credvault.postgres import lifecycle_store as ls
        from credvault.receipts import verify_receipt
        from credvault.results import Receipt
        from credvault.team_keys import signer_history

        t = self.t
        validate.name(name, "engagement name")
        got = ls.read_receipt(t.store, name)
        if got is None:
            raise AccessDenied(t.member, "read the receipt", name, "no grant")
        if got.state != "purged":
            raise RetentionError(f"engagement {name!r} has not been purged")
        if got.receipt is None:
            raise RetentionError(
                f"the receipt of {name!r} is not signed yet: an admin's next "
                "`credvault purge` signs it"
            )
        if got.sign_pub is None:
            raise IntegrityError(
                f"the stored receipt of {name!r} names a key no admin or purging member has"
            )
        try:
            data = json.loads(got.receipt)
        except ValueError:
            raise IntegrityError(f"the stored receipt of {name!r} is malformed") from None
        # against the signer's key history (credvault.team_keys): a key its member handed
        # over (passwd --compromised) signs nothing dated after the hand-over
        verify_receipt(got.receipt, signer_history(t.store, t.vault_id, got.signer, got.sign_pub))
        if data.get("engagement") != name or data.get("vault_id") != t.vault_id.hex():
            raise IntegrityError(f"the stored receipt of {name!r} is another engagement's")
        try:
            return Receipt.from_json(data)
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"the stored receipt of {name!r} is malformed") from None


def rewrite(target: str) -> tuple[int, int]:
    """As the database's owner (libpq's own login): rewrite the table files a purge deleted
    from; returns (engagements rewritten out, still pending behind an older snapshot)."""
    from credvault.postgres import lifecycle_store as ls

    owner = PgStore.connect(target, "owner")
    try:
        return ls.rewrite(owner)
    finally:
        owner.close()
