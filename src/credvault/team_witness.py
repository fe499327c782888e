"""``credvault witness accept`` on a PostgreSQL team vault.

A team member's client keeps the membership-log states it verified (its witness,
:class:`credvault.team_log.LogWitness`); a server log that ends before, or differs from,
one of them is refused as tampering (exit 6). After a deliberate restore of the database
(docs/team.md, "Backups") that is every member who saw a link the backup lacks, so each
member accepts the restored database for themselves, as on SQLCipher
(:mod:`credvault.witnessing`): the gaps are shown and confirmed, a ``witness-accept`` audit
entry names them (written by the server for this member: no one else's entry can speak for
them), and only the states behind or forked are forgotten. The next command verifies those
logs again from link 0 against the admins' certified keys, as a new member's client does,
so accepting never makes a forged log acceptable: it only stops comparing with the past.

The revocation list of member keys (``member rm``, format.md §19.7) is followed the same
way. A database restored from before a removal lacks that removal: accepting the shorter
list makes the member a member again for this client until an admin runs ``member rm``
again (docs/team.md, "Backups").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from credvault import memberlog as ml
from credvault.witness import Gap, Mark

if TYPE_CHECKING:
    from credvault.team_handle import CheckedTeam


def gaps(t: CheckedTeam) -> list[Gap]:
    """What this member verified that the server's logs lack now. An engagement this member
    can no longer see (purged, renamed, or their role gone) is not a gap: a log ends only
    with its engagement's purge, and a view of it by another name is checked when opened."""
    found = []
    for uid, state in sorted(t.witness.states.items()):
        eng, _, _, head, links = t.store.key_copy(state.name, -1)
        if eng is None or eng.uid != uid or eng.state == "purged":
            continue
        chain = f"log:{state.name}"
        seen = Mark(state.seq, state.head)
        hashes = [ml.chain_hash(b) for b in links]
        if head < 0 or not hashes:
            found.append(Gap(chain, "missing", seen, None))
        elif len(hashes) <= state.seq:
            found.append(Gap(chain, "behind", seen, Mark(len(hashes) - 1, hashes[-1])))
        elif hashes[state.seq] != state.head:
            found.append(Gap(chain, "forked", seen, None))
    listed = _list_gap(t)
    return found + ([listed] if listed else [])


def _list_gap(t: CheckedTeam) -> Gap | None:
    """The revocation list (format.md §19.7) against the version this member verified."""
    from credvault.team_log import revocation_hash

    kept = t.witness.revocations
    if kept is None:
        return None
    version, head = kept
    hashes = [revocation_hash(b) for _, b in sorted(t.store.revocation_list())]
    seen = Mark(version, head)
    if len(hashes) < version:
        now = Mark(len(hashes), hashes[-1]) if hashes else None
        return Gap("revocations", "behind", seen, now)
    if hashes[version - 1] != head:
        return Gap("revocations", "forked", seen, None)
    return None


def accept(t: CheckedTeam, confirm: Callable[[list[Gap]], None] | None = None) -> list[Gap]:
    """Accept the team vault as it is now (see the module docstring); returns the gaps
    (empty: nothing to accept, nothing written). ``confirm`` is shown them first and
    raises to stop."""
    from credvault.witnessing import summary

    found = gaps(t)
    if not found:
        return []
    if confirm is not None:
        confirm(found)
    t.store.record_witness_accept(f"accepted as it is ({summary(found)})")
    chains = {g.chain for g in found}
    forget = {uid for uid, s in t.witness.states.items() if f"log:{s.name}" in chains}
    t.witness.forget(forget, revocations="revocations" in chains)
    return found
