"""The clock rules of :mod:`credvault.retention` applied to an open vault: whether
irreversible work (purge, grant expiry, audit, trash and backup pruning) may run on this
session's clock, and the vault's high-water time that later runs measure theirs against.
"""

from __future__ import annotations

from datetime import timedelta

from credvault.model import parse_iso
from credvault.retention import clock_problem
from credvault.session import Session

__all__ = ["clock_hold", "mark_high_water", "note_trusted_clock"]


def clock_hold(s: Session, *, restoring: bool = False) -> str | None:
    """Why irreversible work must wait on this session's clock (None: it may run).

    "Behind" is measured against the newest recorded time (any entry before this session,
    or the high-water time); "ahead" only against the high-water time, which moves only when
    a member entitled to destroy ran on a clock that passed these rules, or confirmed one:
    entries written under a wrong clock never vouch for it. A restore (``restoring``)
    accepts a clock ahead of the backup's record, which is what an old backup looks like.
    """
    newest = s.newest_recorded()
    hw = s.store.get_meta("time_high_water") or s.newest_at_open
    return clock_problem(
        s.clock(),
        parse_iso(newest) if newest else None,
        parse_iso(hw) if hw and not restoring else None,
    )


def mark_high_water(s: Session) -> None:
    """This trusted clock passed the rules: later runs measure theirs against it."""
    hw = s.store.get_meta("time_high_water")
    now = s.now()
    if hw is None or now > hw:
        s.store.set_meta("time_high_water", now)


def note_trusted_clock(s: Session) -> None:
    """On an open by a member entitled to destroy whose clock passes the rules, move the
    high-water time (at most one write an hour), so daily use keeps the bound current."""
    hw = s.store.get_meta("time_high_water")
    if hw is not None and s.clock() - parse_iso(hw) < timedelta(hours=1):
        return
    if clock_hold(s) is None:
        with s.store.write():
            mark_high_water(s)
