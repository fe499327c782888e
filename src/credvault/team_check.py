"""``credvault check`` on a PostgreSQL team vault: what an admin's machine can verify.

The SQLCipher check (:mod:`credvault.integrity`) authenticates every page of the file; a
team vault's pages are the server's, so this check verifies what the server cannot forge
without being caught, each part independently so one report names every problem:

* every active member's keys, through their certificate chain to the founder this
  member's key slot pins;
* every membership log, replayed from link 0 (or from this member's witness, which also
  catches a log rolled back or forked since they last verified it), and every log this
  member verified before that the server no longer lists although the engagement was not
  purged (an engagement hidden from the admins' list);
* the audit chain, from its anchor to its head;
* every purge receipt the server holds, against its signer's certified key.

Admins only (the server lists the logs to admins only), audited as SQLCipher's check is:
``check`` ``ok`` "sound", or ``error`` and the first problem. Problems are integrity
problems: the CLI exits 6 listing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credvault.errors import AccessDenied, CredvaultError, RetentionError

if TYPE_CHECKING:
    from credvault.integrity import CheckReport
    from credvault.team_handle import CheckedTeam


def check(t: CheckedTeam) -> CheckReport:
    """Check the team vault ``t`` is open on (see the module docstring)."""
    from credvault.integrity import CheckReport
    from credvault.postgres import lifecycle_store as ls

    _, admin = t.store.whoami()
    if not admin:
        t.store.record_check(None)  # audits the denial, as SQLCipher's deny does
        raise AccessDenied(t.member, "check", None, "admins and service identities only")
    checked: list[str] = []
    problems: list[str] = []

    try:
        certs = t.certs()
        active = sorted(n for n, r in certs.rows.items() if r.state == "active")
        for name in active:
            try:
                certs.keys(name)
            except CredvaultError as e:
                problems.append(f"member {name}: {e}")
        checked.append(f"members: {len(active)} certified, each chain to the founder verified")
    except CredvaultError as e:
        problems.append(f"members: {e}")

    try:  # one listing (audited as `engagement-ls`) for the logs' and the receipts' parts
        seen = [lc.engagement for lc in ls.visible(t.store, None)]
    except CredvaultError as e:
        problems.append(f"engagements: {e}")
        seen = []
    listed: set[bytes] = set()
    try:
        logs = t.store.engagement_logs()
        links = 0
        for uid, name, chain in logs:
            listed.add(uid)
            try:
                t.replay_all(uid, name, chain)
                links += len(chain)
            except CredvaultError as e:
                problems.append(f"membership log of {name}: {e}")
        purged = {eng.uid for eng in seen if eng.state == "purged"}
        for uid, state in sorted(t.witness.states.items()):
            if uid not in listed and uid not in purged:
                problems.append(
                    f"membership log of {state.name}: this member verified {state.seq + 1} "
                    "links of it before; the server no longer lists it, and it was not purged"
                )
        checked.append(f"membership logs: {len(logs)} verified ({links} links)")
    except CredvaultError as e:
        problems.append(f"membership logs: {e}")

    try:
        n = t.audit.verify()
        checked.append(f"audit chain: {n} entries verified")
    except CredvaultError as e:
        problems.append(f"audit chain: {e}")

    receipts = pending = 0
    for eng in seen:
        if eng.state != "purged":
            continue
        try:
            t.purger.receipt(eng.name)
            receipts += 1
        except RetentionError:  # done, its receipt not signed yet: not a problem
            pending += 1
        except CredvaultError as e:
            problems.append(f"receipt of {eng.name}: {e}")
    checked.append(
        f"purge receipts: {receipts} verified"
        + (f"; {pending} not signed yet (the next `credvault purge`)" if pending else "")
    )

    try:
        t.store.record_check(problems[0] if problems else None)
    except CredvaultError as e:
        problems.append(f"audit: the check's own entry was not written: {e}")
    return CheckReport(t.path, checked, problems)
