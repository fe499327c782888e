"""The member's witness, kept by an open vault: checked at open, advanced after each commit,
reset by a restore or by ``credvault witness accept`` (issue 11, property 7).

What the witness follows is one function, :func:`chains`: every hash-linked chain of the
vault by name. The audit trail is the first; each engagement's membership log joins it as
``log:<uid>``. Rollback of the directory, a copy that went its own way (fork) and committed
transactions lost to a damaged WAL all leave a chain behind or different at a position this
member saw, and that is refused at open with exit 6, naming what is missing.

Concurrency: the file is read, merged and written under its own lock, and positions only
move forward (compare-and-max), so several processes of one member never undo each other's
advance. A commit that moved only the audit chain (every read, most writes) appends one
record to the witness's journal instead (:mod:`credvault.witness`). A position is recorded
only after its transaction committed (``synchronous=FULL``: it is on disk), and at open the
witness is read *before* the vault, so whatever it holds is already in the database being
checked: other processes and other members moving the vault on can never cause a false
alarm. See docs/security.md §13.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from credvault import memberlog as ml
from credvault import witness as wt
from credvault.errors import CredvaultError, IntegrityError
from credvault.roster import memberlog_positions
from credvault.session import Session
from credvault.witness import Chain, Gap, Mark

ACCEPT_ACTION = "witness-accept"
LOG_FORMAT = 3  # the database format that added the membership logs (store.MIGRATIONS)


def chains(s: Session, logs: bool = True) -> dict[str, Chain]:
    """Every hash-linked chain of the vault the witness follows, by name (the one provider).

    Add a chain here and every member's witness follows it from their next open (a chain
    the witness never saw is never "missing"). The chains: the audit trail, and each
    engagement's signed membership log as ``log:<engagement uid hex>`` (kept after a purge,
    so a log never legitimately ends or shrinks). ``logs=False``: a vault of a format
    before the logs, not yet upgraded.
    """
    out = {"audit": _audit(s)}
    if not logs:
        return out
    for uid, pos in memberlog_positions(s.store).items():
        out[f"log:{uid}"] = _log(s, bytes.fromhex(uid), Mark(pos.seq, pos.hash))
    return out


def _log(s: Session, uid: bytes, head: Mark) -> Chain:
    def at(seq: int) -> bytes | None:
        link = s.store.log_link_at(uid, seq)
        return None if link is None else ml.chain_hash(link)

    return Chain(head, at)


def _audit(s: Session) -> Chain:
    row = s.store.audit_head()
    head = None if row is None else Mark(int(row.seq), bytes(row.mac))

    def at(seq: int) -> bytes | None:
        entry = s.store.audit_entry(seq)
        if entry is not None:
            return bytes(entry.mac)
        anchor = s.store.get_meta("audit_anchor")  # entries before it were pruned
        if anchor is not None:
            pos, mac = str(anchor).split(":")
            if int(pos) == seq:
                return bytes.fromhex(mac)
        return None

    return Chain(head, at)


def heads(found: dict[str, Chain]) -> dict[str, Mark]:
    return {n: c.head for n, c in found.items() if c.head is not None and not c.gone}


class Keeper:
    """One open vault's view of its member's witness file."""

    def __init__(self, s: Session, directory: Path | None = None) -> None:
        self.s = s
        self.key = wt.mac_key(s.keys.sign_private)
        self.path = wt.path_for(s.vault_id, s.member, directory, self.key)
        self.recorded: dict[str, Mark] | None = None  # what this process last wrote or read
        self._logs = False  # the database has the membership logs (format 3 or later)
        self.warned = False
        self.fd: int | None = None  # the lock file, kept open between advances
        self.journal: int | None = None  # the journal, open for appending
        self.epoch = b""  # the epoch of the witness as last read or written
        self.prefix: bytes | None = None  # what journal records of that epoch MAC first
        self.journal_size = 0  # bytes this process knows the journal to hold

    def _chains(self) -> dict[str, Chain]:
        if not self._logs:  # once per open, and again only until an older vault is upgraded
            self._logs = int(self.s.store.get_meta("format_version") or 0) >= LOG_FORMAT
        return chains(self.s, self._logs)

    def load(self) -> wt.Witness | None:
        w = wt.load(self.path, self.key, self.s.vault_id, self.s.member)
        self._epoch(b"" if w is None else w.epoch)
        return w

    def _epoch(self, epoch: bytes) -> None:
        if self.prefix is None or epoch != self.epoch:
            self.epoch = epoch
            self.prefix = wt.journal_prefix(self.s.vault_id, self.s.member, epoch)

    def gaps(self) -> tuple[list[Gap], dict[str, Chain], wt.Witness | None]:
        """What the vault lacks of the witness (read first, then the vault: see above)."""
        try:
            seen = self.load()
        except IntegrityError as e:
            return [Gap(str(e), "unreadable", None, None)], self._chains(), None
        found = self._chains()
        return ([] if seen is None else seen.gaps(found)), found, seen

    def check(self) -> None:
        """Refuse (exit 6) a vault behind or forked from the witness; else record it."""
        gaps, found, seen = self.gaps()
        if gaps:
            raise wt.refusal(self.s.member, gaps)
        now, gone = heads(found), {n for n, c in found.items() if c.gone}
        if seen is None:
            self._merge(now, gone)
            return
        if seen.advanced(now).without(gone) == seen:
            self.recorded = now  # nothing new: no write on open
            return
        moved = {n for n, m in now.items() if n not in seen.marks or m.seq > seen.marks[n].seq}
        if not gone and moved == {wt.JOURNAL_CHAIN}:
            # only the audit chain went on (others read, or this member elsewhere): one
            # journal record, as after a read
            self.recorded = now
            if self._append(now[wt.JOURNAL_CHAIN]):
                return
        self._merge(now, gone)

    def advance(self) -> None:
        """After a commit: record the chains' heads if they moved (the ``get`` path: no
        query, and one journal record appended without fsync; a failure only warns).

        A transaction that only appended audit entries (every read) moved the audit chain
        alone, to the entry it wrote last: that entry is committed, so it is a position the
        vault holds (others may have gone further: the witness only needs a position that
        exists). Anything else (a membership-log link, a prune) reads every chain."""
        store = self.s.store
        try:
            if (
                self.recorded is not None
                and store.tx_audit_head is not None
                and not store.tx_other_chains
            ):
                mark = Mark(*store.tx_audit_head)
                if mark == self.recorded.get(wt.JOURNAL_CHAIN):
                    return
                now = {**self.recorded, wt.JOURNAL_CHAIN: mark}
                self.recorded = now
                if not self._append(mark):
                    self._merge(now, set())
                return
            now = heads(self._chains())
            if now != self.recorded:
                self._merge(now, set())
        except (OSError, CredvaultError) as e:
            if not self.warned:
                self.warned = True
                import logging

                logging.getLogger("credvault").warning(
                    "could not update the witness %s: %s", self.path, e
                )

    def _append(self, mark: Mark) -> bool:
        """Record the audit chain's ``mark`` in the journal (the hot path: one HMAC, one
        ``write``); folds the journal into the file when it has grown long. False: this
        position cannot be journalled (the file is written instead)."""
        if self.prefix is None or len(mark.hash) != wt.JOURNAL_HASH:
            return False
        if self.fd is None:
            self.fd = wt.lock_fd(self.path)
        if self.journal is None:
            self.journal = wt.open_journal(self.path)
            self.journal_size = os.fstat(self.journal).st_size
        if self.journal_size % wt.RECORD or self.journal_size >= wt.JOURNAL_FOLD:
            return False  # a torn record or a long journal: fold it (and this mark) in
        record = wt.journal_record(self.key, self.prefix, mark)
        # the length after it counts every process's records (the fold is anyone's)
        self.journal_size = wt.append(self.journal, self.fd, record)
        return self.journal_size % wt.RECORD == 0  # else out of step: fold it in now

    def _merge(self, now: dict[str, Mark], gone: set[str]) -> None:
        """Fold the journal and ``now`` into the file, under the exclusive lock."""
        if self.fd is None:
            self.fd = wt.lock_fd(self.path)
        vid, member = self.s.vault_id, self.s.member
        with wt.locked(self.path, fd=self.fd):
            at = wt.read(self.path, self.key, vid, member)
            current = wt.with_journal(at.witness, self.path, self.key, vid, member)
            base = current or wt.Witness(vid, member, {})
            new = base.advanced(now).without(gone)
            if new != at.witness:
                wt.save(self.path, new, self.key, durable=False, at=at)
            wt.clear_journal(self.path)
            self.journal_size = 0
            self._epoch(new.epoch)
            self.recorded = now

    def close(self) -> None:
        for fd in (self.fd, self.journal):
            if fd is not None:
                os.close(fd)
        self.fd = self.journal = None

    def heads_now(self) -> dict[str, Mark]:
        return heads(self._chains())

    def reset(self) -> None:
        """Make the vault as it is now this member's witnessed state (durably): after a
        restore or an accepted rollback, positions may go back."""
        self.reset_to(self.heads_now())()

    def reset_to(self, now: dict[str, Mark]) -> Callable[[], None]:
        """A function that makes ``now`` the witnessed state (for a restore: called once the
        restored vault is in place, after its store is closed)."""
        path, key, vid, member = self.path, self.key, self.s.vault_id, self.s.member

        def write() -> None:
            # a new epoch: journal records of the positions before the reset no longer count
            fresh = wt.Witness(vid, member, now, os.urandom(wt.EPOCH))
            with wt.locked(path):
                wt.save(path, fresh, key)
                wt.clear_journal(path)
            self.journal_size = 0
            self._epoch(fresh.epoch)
            self.recorded = now

        return write

    def accept(self, confirm: Callable[[list[Gap]], None] | None = None) -> list[Gap]:
        """Accept the vault as it is: audit what this member's witness had that the vault
        lacks, then reset the witness. Nothing is written when there is nothing to accept;
        ``confirm`` sees the gaps first and raises to stop."""
        gaps, _, _ = self.gaps()
        if not gaps:
            return []
        if confirm is not None:
            confirm(gaps)
        s = self.s
        with s.store.write():
            s.log(ACCEPT_ACTION, None, None, "ok", f"accepted as it is ({summary(gaps)})")
        self.reset()
        return gaps


def summary(gaps: Sequence[Gap]) -> str:
    """What a reset witness had that the vault lacks, for an audit detail: positions only,
    e.g. ``audit behind: seen 57, vault at 40``."""
    parts = []
    for g in gaps:
        if g.kind == "unreadable" or g.seen is None:
            parts.append("witness file did not verify")
            continue
        now = "none" if g.now is None else str(g.now.seq)
        parts.append(f"{g.chain} {g.kind}: seen {g.seen.seq}, vault at {now}")
    text = "; ".join(parts)
    return text if len(text) <= 240 else text[:237] + "..."


def detach(s: Session) -> None:
    """Stop advancing (before the store closes)."""
    with contextlib.suppress(AttributeError):
        s.store.on_commit = None
