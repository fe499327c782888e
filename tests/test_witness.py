"""The witness file on its own (issue 11, property 7): what it refuses, how it moves, and
that it cannot be forged without the member's key. Wiring into ``Vault.open`` is tested
with the vault (not yet: see docs/security.md §12)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from credvault import witness as wt
from credvault.errors import IntegrityError

VAULT = bytes(range(16))
KEY = wt.mac_key(b"\x07" * 32)
E1, E2 = "11" * 16, "22" * 16


def _h(i: int) -> bytes:
    return bytes([i]) * 32


def _seen() -> wt.Witness:
    return wt.Witness(
        VAULT, "alice", wt.Mark(10, _h(10)), {E1: wt.Mark(3, _h(3)), E2: wt.Mark(1, _h(1))}
    )


AUDIT_AT = {10: _h(10)}
LOGS = {E1: [_h(0), _h(1), _h(2), _h(3), _h(4)], E2: [_h(0), _h(1)]}


def test_a_vault_at_or_ahead_of_the_witness_passes() -> None:
    _seen().check(AUDIT_AT, 12, LOGS)
    _seen().check({}, 12, LOGS)  # the witnessed entry was pruned: nothing to compare


@pytest.mark.parametrize(
    ("audit_at", "head", "logs", "gone", "says"),
    [
        ({}, 9, LOGS, frozenset(), "audit trail ends at 9"),
        ({10: _h(99)}, 10, LOGS, frozenset(), "audit trail differs at entry 10"),
        (AUDIT_AT, 10, {**LOGS, E1: LOGS[E1][:3]}, frozenset(), "ends at link 2, but link 3"),
        (AUDIT_AT, 10, {**LOGS, E1: [*LOGS[E1][:3], _h(77)]}, frozenset(), "forked at link 3"),
        (AUDIT_AT, 10, {E1: LOGS[E1]}, frozenset(), f"engagement {E2} and its membership log"),
    ],
    ids=["audit rolled back", "audit forked", "log truncated", "log forked", "engagement deleted"],
)
def test_behind_or_forked_is_refused_and_named(
    audit_at: dict[int, bytes],
    head: int,
    logs: dict[str, list[bytes]],
    gone: frozenset[str],
    says: str,
) -> None:
    with pytest.raises(IntegrityError, match="witness accept") as e:
        _seen().check(audit_at, head, logs, gone)
    assert says in str(e.value)


def test_a_purged_engagement_is_not_missing() -> None:
    _seen().check(AUDIT_AT, 10, {E1: LOGS[E1]}, frozenset({E2}))


def test_all_problems_in_one_message() -> None:
    with pytest.raises(IntegrityError) as e:
        _seen().check({}, 1, {})
    assert str(e.value).count(";") >= 3


def test_advance_never_goes_backward() -> None:
    w = _seen().advanced(wt.Mark(5, _h(5)), {E1: wt.Mark(1, _h(1)), "33" * 16: wt.Mark(0, _h(0))})
    assert w.audit == wt.Mark(10, _h(10))
    assert w.logs[E1] == wt.Mark(3, _h(3))
    assert w.logs["33" * 16] == wt.Mark(0, _h(0))
    w = w.advanced(wt.Mark(11, _h(11)), {E1: wt.Mark(4, _h(4))})
    assert w.audit == wt.Mark(11, _h(11))
    assert w.logs[E1] == wt.Mark(4, _h(4))


def test_file_round_trip_modes_and_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = wt.path_for(VAULT, "alice")
    assert path.parent == tmp_path / "state" / "credvault"
    assert wt.load(path, KEY, VAULT, "alice") is None
    wt.save(path, _seen(), KEY)
    assert wt.load(path, KEY, VAULT, "alice") == _seen()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    assert wt.state_dir() == Path.home() / ".local" / "state" / "credvault"


def test_forged_witness_is_refused(tmp_path: Path) -> None:
    """Someone who can write the member's files but lacks their key cannot say "all is well"."""
    path = tmp_path / "w.json"
    wt.save(path, _seen(), KEY)
    d = json.loads(path.read_text())
    d["audit"] = [0, _h(0).hex()]
    path.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="MAC"):
        wt.load(path, KEY, VAULT, "alice")
    wt.save(path, _seen(), wt.mac_key(b"\x08" * 32))  # made with another member's key
    with pytest.raises(IntegrityError, match="MAC"):
        wt.load(path, KEY, VAULT, "alice")


def test_witness_of_another_vault_or_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    wt.save(path, _seen(), KEY)
    with pytest.raises(IntegrityError, match="another vault or member"):
        wt.load(path, KEY, bytes(16), "alice")
    with pytest.raises(IntegrityError, match="another vault or member"):
        wt.load(path, KEY, VAULT, "bob")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"format": "other"}',
        '{"format": "credvault-witness/1", "mac": "00"}',
        '{"format": "credvault-witness/1", "mac": "00", "audit": [true, "00"], "logs": {}, "vault_id": "", "member": "a"}',
        '{"format": "credvault-witness/1", "mac": "00", "audit": null, "logs": {"x": [1, "00"]}, "vault_id": "", "member": "a"}',
        "[" * 100000,
    ],
)
def test_corrupt_witness_is_integrity_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(text)
    with pytest.raises(IntegrityError):
        wt.load(path, KEY, VAULT, "alice")
