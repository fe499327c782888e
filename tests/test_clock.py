"""Irreversible work never trusts one wrong clock (issue 12, item 1).

Purge, grant expiry, audit pruning and backup pruning do not run on a clock earlier than
the newest recorded time or more than ``MAX_CLOCK_AHEAD`` after it; they wait for an
admin's audited confirmation of the date. Members without the right to destroy never
trigger destruction. Through the injected clock (the library's test seam) and through
the CLI under libfaketime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture, offset_env
from credvault import ClockSuspect, InvalidInput, Vault
from credvault.retention import CLOCK_SKEW

ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


def _state(vf: VaultFixture, name: str = ENG) -> str:
    with open_as(vf, auto_purge=False) as v:
        return v.engagements.get(name, allow_purged=True).state


def _setup(vf: VaultFixture, directory: Path) -> None:
    """A closed engagement, a held one (until 2099), an expiring grant, an old backup."""
    with open_as(vf) as v:
        v.engagements.close(ENG)
        v.engagements.create("held-2026", "acme")
        v.put("held-2026/x", b"kept")
        v.engagements.close("held-2026")
        v.engagements.retain("held-2026", "2099-01-01", "client keeps support")
        v.engagements.create("grant-2026", "acme")
        v.engagements.grant("grant-2026", "bob", "engineer", until="2027-01-01")
        v.set_setting("audit-retention-days", "30")
        v.backups.create(directory)


def _nothing_destroyed(vf: VaultFixture, directory: Path, audit_before: int) -> None:
    assert _state(vf) == "closed"
    assert _state(vf, "held-2026") == "closed"
    with open_as(vf, auto_purge=False) as v:
        assert [m.member for m in v.engagements.members("grant-2026")].count("bob") == 1
        assert v._s.store.audit_iter(0, batch=1).__next__()[0] == 1  # nothing pruned
        assert len(v.audit_entries()) >= audit_before
    assert len(list(directory.glob("*.cvb"))) == 1


def test_a_member_without_the_right_to_destroy_never_triggers_it(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    directory = tmp_path / "bk"
    _setup(vault, directory)
    with open_as(vault) as v:
        n = len(v.audit_entries())
    vault.clock.advance(days=20)  # well within the bound: only the right is missing
    with open_as(vault, "bob") as v:  # bob is an engineer, not an admin
        assert v.purger.plan()  # due, and visible
    _nothing_destroyed(vault, directory, n)


def test_a_clock_a_year_ahead_destroys_nothing_until_an_admin_confirms(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    directory = tmp_path / "bk"
    _setup(vault, directory)
    with open_as(vault) as v:
        n = len(v.audit_entries())
    vault.clock.advance(days=365 * 74)  # 2100: past the hold, the grant, every retention
    with open_as(vault) as v:  # an admin's open: the automatic purge is held, silently
        pass
    with open_as(vault) as v:
        with pytest.raises(ClockSuspect) as ei:
            v.purge()
        assert f"--confirm-clock {vault.clock.now:%Y-%m-%d}" in str(ei.value)
        assert "ahead of the newest recorded time" in str(ei.value)
        v.backups.create(directory)  # a backup is still written, but prunes nothing
        assert "pruning held" in v.audit_entries(action="backup")[-1].detail
    assert len(list(directory.glob("*.cvb"))) == 2
    for f in sorted(directory.glob("*.cvb"))[1:]:
        f.unlink()
    _nothing_destroyed(vault, directory, n)
    with open_as(vault, "bob") as v, pytest.raises(Exception, match="admins and service"):
        v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")
    with open_as(vault) as v:
        with pytest.raises(InvalidInput):  # the confirmation names the date it acts on
            v.purge(confirm_clock="2026-01-01")
        done = v.purge(confirm_clock=f"{vault.clock.now:%Y-%m-%d}")
        assert {d.engagement for d in done} == {ENG, "held-2026"}  # 2099 has passed
        confirm = v.audit_entries(action="clock-confirm")
        assert len(confirm) == 1
        assert confirm[0].member == "alice"
        assert "ahead of the newest recorded time" in confirm[0].detail


def test_a_hold_is_never_ended_by_a_clock_alone(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.close(ENG)
        v.engagements.retain(ENG, "2099-01-01", "client asked to keep it")
    vault.clock.advance(days=365 * 73 + 30)  # past 2099-01-01
    with open_as(vault) as v, pytest.raises(ClockSuspect):
        v.purge()
    with open_as(vault):
        pass
    assert _state(vault) == "closed"


def test_a_clock_behind_the_record_destroys_nothing_and_does_not_shorten_the_grace(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        v.engagements.create("other-2026", "globex")
    vault.clock.advance(days=10)
    with open_as(vault) as v:
        v.engagements.close(ENG, grace_days=1)
        recorded = v._s.now()
    vault.clock.advance(days=-9)  # the clock is set back by nine days
    with open_as(vault) as v:
        closed = v.engagements.close("other-2026", grace_days=0)
        assert closed.closed_at is not None
        assert closed.closed_at >= recorded  # never closed "earlier" than the record
        with pytest.raises(ClockSuspect, match="earlier than the newest recorded time"):
            v.purge()
    vault.clock.advance(days=9 + 2)  # the right time again, grace over
    with open_as(vault):
        pass
    assert _state(vault) == "purged"


def test_small_skew_between_processes_is_tolerated(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.close(ENG, grace_days=0)
    vault.clock.advance(hours=1)
    with open_as(vault, "bob") as v:  # another process, its clock a little ahead
        v.get(REF)
    vault.clock.advance(seconds=-(CLOCK_SKEW.total_seconds() - 5))
    with open_as(vault, auto_purge=False) as v:
        assert [d.engagement for d in v.purge()] == [ENG]


def test_cli_under_faketime(
    cli_vault: CliRunner,
    cli_env: dict[str, str],
    faketime: str,
) -> None:
    cli = cli_vault
    assert cli("put", f"{ENG}/db", input=b"pg").code == 0
    assert cli("engagement", "close", ENG).code == 0
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    far = offset_env(faketime, 400)
    r = cli("ls", ENG, env={**bob, **far})  # a member with a clock 400 days ahead
    assert r.code == 4  # bob holds no grant; nothing else happens either
    r = cli("purge", env=far)
    assert r.code == 1
    assert "--confirm-clock" in r.err
    r = cli("engagement", "show", ENG, "--json")
    assert '"state": "closed"' in r.text
    day = datetime.now(UTC)
    confirm = (day + timedelta(days=400)).strftime("%Y-%m-%d")
    r = cli("purge", "--confirm-clock", confirm, env=far)
    if r.code != 0 and "does not match" in r.err:  # the day turned between the two reads
        confirm = (day + timedelta(days=401)).strftime("%Y-%m-%d")
        r = cli("purge", "--confirm-clock", confirm, env=far)
    assert r.code == 0, r.err
    assert f"purged: {ENG}" in r.text
    r = cli("audit", "--action", "clock-confirm", "--json", env=far)
    assert r.code == 0
    assert "clock-confirm" in r.text
