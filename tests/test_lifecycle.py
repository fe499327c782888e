"""The life of an engagement (issue 5): close → grace → purge on the next open; retention
holds; release; shred; what `engagement show` says. Time moves through the library's
injectable clock, and for the CLI through libfaketime (no test hook in the product).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture, offset_env
from credvault import (
    AccessDenied,
    InvalidInput,
    NotFound,
    Purged,
    RetentionError,
    Vault,
    verify_receipt,
)

ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def _cli_lib(cli_env: dict[str, str], member: str = "alice", **kw: object) -> Vault:
    return Vault.open(
        Path(cli_env["CREDVAULT_VAULT"]),
        member,
        PASSWORDS[member],
        kdf=KDF,
        **kw,  # type: ignore[arg-type]
    )


def _states(cli: CliRunner, env: dict[str, str] | None = None) -> dict[str, str]:
    r = cli("engagement", "ls", "--json", env=env)
    assert r.code == 0, r.err
    return {e["name"]: e["state"] for e in json.loads(r.out)}


def _show(cli: CliRunner, name: str, env: dict[str, str] | None = None) -> dict[str, object]:
    r = cli("engagement", "show", name, "--json", env=env)
    assert r.code == 0, r.err
    data: dict[str, object] = json.loads(r.out)
    return data


# -- the CLI, with time moved by libfaketime ----------------------------------------------------
@pytest.mark.cli
def test_cli_full_life_grace_hold_release(
    cli_vault: CliRunner, cli_env: dict[str, str], faketime: str
) -> None:
    cli = cli_vault

    def at(days: float) -> dict[str, str]:
        return offset_env(faketime, days)

    today = datetime.now(UTC)
    with _cli_lib(cli_env) as v:
        for name in ("hold-2026", "rel-2026", "late-2026"):
            v.engagements.create(name, "acme")
        v.engagements.create("quick-2026", "acme", grace_days=2)
        v.engagements.create("other-2026", "globex")  # never closed: never purged
        for name in ("hold-2026", "rel-2026", "other-2026"):
            v.put(f"{name}/k", f"{name}-secret".encode())
    r = cli("put", REF, "--username", "root", input=b"hunter2\n")
    assert r.code == 0, r.err

    r = cli("engagement", "close", ENG)
    assert r.code == 0, r.err
    assert "purge due" in r.text
    later = datetime.now(UTC)
    assert any(f"{d + timedelta(days=7):%Y-%m-%d}" in r.text for d in (today, later))
    for name in ("hold-2026", "rel-2026", "quick-2026"):
        assert cli("engagement", "close", name).code == 0
    r = cli("engagement", "close", "late-2026", "--grace-days", "12")
    assert r.code == 0, r.err
    assert "grace 12 days" in r.text
    hold_until = (today + timedelta(days=20)).strftime("%Y-%m-%d")
    r = cli("engagement", "retain", "hold-2026", "--until", hold_until, "--reason", "support")
    assert r.code == 0, r.err
    assert f"held until {hold_until}" in r.text
    rel_until = (today + timedelta(days=30)).strftime("%Y-%m-%d")
    r = cli("engagement", "retain", "rel-2026", "--until", rel_until, "--reason", "maybe")
    assert r.code == 0, r.err

    # `engagement show` says when and why
    shown = _show(cli, ENG)
    assert shown["state"] == "closed"
    assert "purge due" in str(shown["purge"])
    assert "grace 7 days" in str(shown["purge"])
    held = _show(cli, "hold-2026")
    assert f"held until {hold_until}" in str(held["purge"])
    assert "support" in str(held["purge"])

    # +6 days: only the 2-day engagement is gone; the rest is readable
    assert _states(cli, at(6)) == {
        ENG: "closed",
        "hold-2026": "closed",
        "rel-2026": "closed",
        "quick-2026": "purged",
        "late-2026": "closed",
        "other-2026": "active",
    }
    r = cli("get", REF, env=at(6))
    assert (r.code, r.out) == (0, b"hunter2\n")

    # +8 days: past the grace; any command purges first
    r = cli("ls", env=at(8))
    assert r.code == 0, r.err
    states = _states(cli)
    assert states[ENG] == "purged"
    assert states["hold-2026"] == "closed"
    assert states["rel-2026"] == "closed"
    assert states["late-2026"] == "closed"
    r = cli("get", "hold-2026/k", env=at(8))
    assert (r.code, r.out) == (0, b"hold-2026-secret\n")

    # release: due again (its grace ended long ago) and purged on the next open
    r = cli("engagement", "release", "rel-2026", env=at(10))
    assert r.code == 0, r.err
    assert "purge due" in r.text
    assert _states(cli, at(10))["rel-2026"] == "purged"

    # the per-engagement grace of 12 days
    assert _states(cli, at(11))["late-2026"] == "closed"
    assert _states(cli, at(13))["late-2026"] == "purged"

    # the hold ends
    assert _states(cli, at(19))["hold-2026"] == "closed"
    assert _states(cli, at(22))["hold-2026"] == "purged"

    # tombstones say when; receipts say why and who
    purged = _show(cli, ENG)
    assert purged["state"] == "purged"
    date = str(purged["purged_at"])[:10]
    closed_at = datetime.fromisoformat(str(purged["closed_at"]))
    assert datetime.fromisoformat(str(purged["purged_at"])) >= closed_at + timedelta(days=7)
    assert str(purged["purge"]) == f"purged on {date}"
    r = cli("get", REF)
    assert r.code == 3
    assert f"purged on {date}" in r.err
    assert r.out == b""
    r = cli("receipt", ENG, "--json")
    assert r.code == 0, r.err
    receipt = json.loads(r.out)
    assert receipt["reason"] == "grace period expired"
    assert receipt["purged_by"] == "alice (automatic, on open)"
    assert receipt["destroyed"]["credentials"] == 1
    r = cli("receipt", "hold-2026", "--json")
    hold_receipt = json.loads(r.out)
    assert hold_receipt["reason"] == "retention hold expired"
    assert hold_receipt["hold"]["reason"] == "support"
    assert hold_receipt["hold"]["by"] == "alice"
    r = cli("receipt", "rel-2026", "--json")
    assert json.loads(r.out)["reason"] == "grace period expired"
    r = cli("get", "other-2026/k", env=at(22))
    assert (r.code, r.out) == (0, b"other-2026-secret\n")


@pytest.mark.cli
def test_cli_config_purge_grace_days(
    cli_vault: CliRunner, cli_env: dict[str, str], faketime: str
) -> None:
    cli = cli_vault
    r = cli("engagement", "close", ENG)
    assert r.code == 0, r.err
    assert "grace 7 days" in r.text
    r = cli("config", "set", "purge-grace-days", "3")
    assert r.code == 0, r.err
    r = cli("config", "get", "--json")
    assert json.loads(r.out)["purge-grace-days"] == 3
    assert "grace 3 days" in str(_show(cli, ENG)["purge"])  # the closed one follows
    r = cli("config", "set", "purge-grace-days", "-1")
    assert r.code == 2
    r = cli("config", "set", "no-such-setting", "3")
    assert r.code == 2
    assert _states(cli, offset_env(faketime, 2))[ENG] == "closed"
    assert _states(cli, offset_env(faketime, 4))[ENG] == "purged"


@pytest.mark.cli
def test_cli_shred_and_refusals(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    cli = cli_vault
    r = cli("put", REF, input=b"hunter2\n")
    assert r.code == 0, r.err
    r = cli("engagement", "retain", ENG, "--until", "2099-01-01", "--reason", "x")
    assert r.code == 1  # only a closed engagement can be held
    assert "closed" in r.err
    r = cli("engagement", "close", ENG)
    assert r.code == 0, r.err
    r = cli("engagement", "retain", ENG, "--until", "2000-01-01", "--reason", "too late")
    assert r.code == 2
    assert "past" in r.err
    r = cli("engagement", "shred", ENG)  # no terminal to confirm, no --yes
    assert r.code == 2
    assert "--yes" in r.err
    r = cli("get", REF)
    assert (r.code, r.out) == (0, b"hunter2\n")
    r = cli("engagement", "shred", ENG, "--yes")
    assert r.code == 0, r.err
    assert "audit position" in r.text
    r = cli("get", REF)
    assert r.code == 3
    assert f"purged on {str(_show(cli, ENG)['purged_at'])[:10]}" in r.err
    r = cli("receipt", ENG, "--json")
    assert json.loads(r.out)["reason"] == "client request"
    r = cli("engagement", "shred", ENG, "--yes")
    assert r.code == 3  # already gone: says purged, destroys nothing more


@pytest.mark.cli
def test_cli_show_of_a_purged_engagement(cli_vault: CliRunner) -> None:
    r = cli_vault("engagement", "shred", ENG, "--yes")
    assert r.code == 0, r.err
    r = cli_vault("engagement", "show", ENG)
    assert r.code == 0, r.err
    assert "purged on" in r.text


# -- the library, with the injectable clock -------------------------------------------------
def open_as(vf: VaultFixture, member: str = "alice", **kw: object) -> Vault:
    return Vault.open(
        vf.path,
        member,
        PASSWORDS[member],
        kdf=KDF,
        clock=vf.clock,
        **kw,  # type: ignore[arg-type]
    )


def _state(vf: VaultFixture, name: str = ENG) -> str:
    with open_as(vf, auto_purge=False) as v:
        return v.engagements.get(name, allow_purged=True).state


def test_grace_then_purge_on_next_open(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        closed = v.engagements.close(ENG)
        assert closed.state == "closed"
        due = datetime.fromisoformat(str(closed.purge_due))
        assert due - vault.clock.now == timedelta(days=7)
        with pytest.raises(RetentionError):
            v.put(f"{ENG}/new", b"x")  # closed: takes no changes
    vault.clock.advance(days=6, hours=23)
    with open_as(vault, "bob") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"  # still there
        assert v.purger.plan() == []
    vault.clock.advance(hours=1, seconds=1)
    with open_as(vault, "carol", auto_purge=False) as v:
        assert [p.engagement for p in v.purger.plan()] == [ENG]  # due, not yet destroyed
        assert v.get(REF).secret.reveal() == b"hunter2"
    with open_as(vault, "carol") as v:  # carol may not destroy: her open purges nothing
        assert v.get(REF).secret.reveal() == b"hunter2"
    with open_as(vault) as v:  # an admin's open does (spec §5: entitled to destroy)
        pass
    with open_as(vault, "carol") as v:
        with pytest.raises(Purged) as ei:
            v.get(REF)
        assert f"purged on {vault.clock.now:%Y-%m-%d}" in str(ei.value)
        assert isinstance(ei.value, NotFound)
    with open_as(vault) as v:
        receipt = v.purger.receipt(ENG).to_json()
        eng = v.engagements.get(ENG, allow_purged=True)
        assert verify_receipt(receipt, v.public_key)["engagement"] == ENG
    assert eng.state == "purged"
    assert eng.purge_due is None
    assert receipt["reason"] == "grace period expired"
    assert receipt["purged_by"] == "alice (automatic, on open)"
    assert receipt["closed_at"] == closed.closed_at


def test_hold_postpones_the_purge_until_it_ends(vault: VaultFixture, engagement: str) -> None:
    until = (vault.clock.now + timedelta(days=20)).strftime("%Y-%m-%d")
    with open_as(vault) as v:
        v.engagements.close(ENG)
        held = v.engagements.retain(ENG, until, "client keeps us on support")
    assert held.hold_until is not None
    assert held.hold_until.startswith(f"{until}T23:59:59")  # a bare date: the end of that day
    assert held.purge_due == held.hold_until
    assert held.hold_by == "alice"
    vault.clock.advance(days=10)  # grace over, hold not
    with open_as(vault, "bob") as v:
        assert v.get(REF).secret.reveal() == b"hunter2"
        status = v.engagements.purge_status(v.engagements.get(ENG))
        assert status.startswith(f"held until {until}")
        assert "client keeps us on support" in status
        assert "by alice" in status
    vault.clock.advance(days=11)
    with open_as(vault) as v:
        with pytest.raises(Purged):
            v.get(REF)
        receipt = v.purger.receipt(ENG).to_json()
    assert receipt["reason"] == "retention hold expired"
    assert receipt["hold"] == {
        "until": held.hold_until,
        "reason": "client keeps us on support",
        "by": "alice",
    }


def test_release_makes_the_purge_due_again(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.close(ENG)
        v.engagements.retain(ENG, (vault.clock.now + timedelta(days=30)).strftime("%Y-%m-%d"), "x")
    vault.clock.advance(days=10)
    assert _state(vault) == "closed"
    with open_as(vault) as v:
        released = v.engagements.release(ENG)
        assert released.hold_until is None
        assert released.purge_due is not None
        assert released.purge_due < v._s.now()  # its grace ended three days ago
        assert [p.reason for p in v.purger.plan()] == ["grace"]
        assert v.get(REF).secret.reveal() == b"hunter2"  # due, but only the next open purges
    assert _state(vault) == "closed"
    with open_as(vault, "bob"):  # bob may not destroy: his open does not purge
        pass
    assert _state(vault) == "closed"
    with open_as(vault):  # an admin's open does
        pass
    assert _state(vault) == "purged"


def test_release_before_the_grace_ends_keeps_the_grace(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        closed = v.engagements.close(ENG)
        v.engagements.retain(ENG, (vault.clock.now + timedelta(days=30)).strftime("%Y-%m-%d"), "x")
        vault.clock.advance(days=1)
        assert v.engagements.release(ENG).purge_due == closed.purge_due


def test_shred_destroys_now_whatever_the_state(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create("held-2026", "acme")
        v.engagements.close("held-2026")
        v.engagements.retain("held-2026", "2099-12-31", "long support contract")
        receipt = v.purger.shred(ENG).to_json()  # active
        held = v.purger.shred("held-2026").to_json()  # closed and held
        assert receipt["reason"] == held["reason"] == "client request"
        assert receipt["purged_by"] == "alice"
        with pytest.raises(Purged):
            v.get(REF)
        with pytest.raises(Purged):
            v.purger.shred(ENG)
        with pytest.raises(Purged):
            v.engagements.close(ENG)
        assert v.engagements.get("held-2026", allow_purged=True).state == "purged"


def test_hold_rules(vault: VaultFixture, engagement: str) -> None:
    yesterday = (vault.clock.now - timedelta(days=1)).strftime("%Y-%m-%d")
    today = vault.clock.now.strftime("%Y-%m-%d")
    with open_as(vault) as v:
        with pytest.raises(RetentionError):
            v.engagements.retain(ENG, "2099-01-01", "not closed yet")
        closed = v.engagements.close(ENG)
        with pytest.raises(InvalidInput):
            v.engagements.retain(ENG, yesterday, "in the past")
        with pytest.raises(InvalidInput):
            v.engagements.retain(ENG, "2099-01-01", "   ")
        with pytest.raises(InvalidInput):
            v.engagements.retain(ENG, "31/12/2099", "bad date")
        with pytest.raises(RetentionError):
            v.engagements.release(ENG)
        assert v.engagements.get(ENG).hold_until is None  # nothing changed
        # a hold shorter than the grace does not shorten the grace
        short = v.engagements.retain(ENG, today, "short")
        assert short.purge_due == closed.purge_due


def test_lifecycle_is_for_leads_and_admins(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create("beta-2026", "beta", lead="bob")  # alice: admin, no grant
    with open_as(vault, "bob") as v:
        with pytest.raises(AccessDenied):  # engineer on acme-2026
            v.engagements.close(ENG)
        v.engagements.close("beta-2026")  # lead, not admin
        v.engagements.retain("beta-2026", "2099-01-01", "x")
        v.engagements.release("beta-2026")
    with open_as(vault, "carol") as v:
        with pytest.raises(AccessDenied):
            v.purger.shred(ENG)
        with pytest.raises(AccessDenied):
            v.purger.shred("beta-2026")
    with open_as(vault) as v:
        v.purger.shred("beta-2026")  # admin without a grant
        assert _state(vault, ENG) == "active"


def test_show_says_when_and_why(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        assert v.engagements.show(ENG).to_json()["purge"] == "active; purge 7 days after close"
        closed = v.engagements.close(ENG)
        due = str(closed.purge_due)[:16]
        shown = v.engagements.show(ENG).to_json()
        assert (
            shown["purge"] == f"closed {str(closed.closed_at)[:16]}; purge due {due} (grace 7 days)"
        )
        assert shown["purge_due"] == closed.purge_due
        v.engagements.retain(ENG, "2099-06-30", "warranty")
        assert v.engagements.show(ENG).to_json()["purge"] == (
            "held until 2099-06-30T23:59 (warranty, by alice); purged when the hold ends"
        )
        v.purger.shred(ENG)
        shown = v.engagements.show(ENG).to_json()
        assert shown["purge"] == f"purged on {vault.clock.now:%Y-%m-%d}"
        assert shown["members"] == []
        status = v.status().to_json()
    assert status["scheduled"] == []


def test_grace_settings_and_overrides(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create("one-day", "acme", grace_days=1)
        v.engagements.create("default", "acme")
        v.engagements.create("override", "acme")
        v.engagements.close(ENG)
        v.engagements.close("one-day")
        v.engagements.close("override", grace_days=0)  # due at once
        v.set_setting("purge-grace-days", "3")  # the closed one without override follows
        assert "grace 3 days" in v.engagements.purge_status(v.engagements.get(ENG))
        assert "grace 1 days" in v.engagements.purge_status(v.engagements.get("one-day"))
        v.engagements.close("default")  # closed after the change: 3 days too
        with pytest.raises(InvalidInput):
            v.set_setting("purge-grace-days", "many")
        with pytest.raises(InvalidInput):
            v.engagements.create("bad", "acme", grace_days=-1)
    assert _state(vault, "override") == "closed"
    with open_as(vault):
        pass
    assert _state(vault, "override") == "purged"
    vault.clock.advance(days=1, minutes=1)
    with open_as(vault):
        pass
    assert [_state(vault, n) for n in (ENG, "one-day", "default")] == [
        "closed",
        "purged",
        "closed",
    ]
    vault.clock.advance(days=2)
    with open_as(vault):
        pass
    assert [_state(vault, n) for n in (ENG, "default")] == ["purged", "purged"]


def test_only_admins_change_settings(vault: VaultFixture) -> None:
    with open_as(vault, "bob") as v, pytest.raises(AccessDenied):
        v.set_setting("purge-grace-days", "0")
    with open_as(vault) as v:
        assert v.info().settings["purge-grace-days"] == 7  # type: ignore[index]


def test_tombstone_keeps_names_and_dates_only(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        before = v.engagements.get(ENG)
        v.purger.shred(ENG)
        listed = {e.name: e for e in v.engagements.list()}
        assert listed[ENG].state == "purged"
        assert listed[ENG].client == "acme"
        assert listed[ENG].created_at == before.created_at
        assert listed[ENG].purged_at == v._s.now()
        with pytest.raises(Purged):
            v.credentials.list(ENG)
        with pytest.raises(Purged):
            v.systems.list(ENG)
        assert [c.engagement for c in v.credentials.list()] == []
        conn = v._s.store.conn
        eng_id = before.id
        for table in ("credentials", "systems", "grants"):
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE engagement_id = ?", (eng_id,))  # noqa: S608
            assert n.fetchone()[0] == 0, table
