"""A write that races a key rotation by another process is retried from a fresh read, never
sealed to the superseded key version and never stored twice (issue 13, item 2).

The race is created deterministically, not by timing: the writer's first write transaction
is intercepted, and just before it begins, another ``Vault`` object (its own SQLCipher
connection, as another process would have) rotates the engagement's key and commits. The
writer's transaction then finds its key superseded (:class:`Conflict`) and rolls back; the
retry must re-read the engagement and its new key and succeed.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import VaultFixture
from credvault import Conflict, Vault
from credvault.engagement_keys import RETRIES
from credvault.model import Engagement

ENG = "acme-2026"
OTHER = "beta-2026"
TOTP = "otpauth://totp/acme:web1?secret=JBSWY3DPEHPK3PXP&issuer=acme"


def _race(v: Vault, other: Vault, engagement: str, times: int = 1) -> list[int]:
    """Before each of ``v``'s next ``times`` write transactions begins, ``other`` rotates
    ``engagement`` (committed); returns the list of versions it rotated to."""
    store = v._s.store
    real = store.write
    rotated: list[int] = []

    @contextlib.contextmanager
    def racing() -> Iterator[None]:
        if len(rotated) < times and not store._batch:
            rotated.append(other.engagements.rotate(engagement))
        with real():
            yield

    store.write = racing  # type: ignore[method-assign]
    return rotated


def _race_after_key(v: Vault, other: Vault, engagement: str) -> list[int]:
    """Right after ``v`` fetched the engagement key (once), ``other`` rotates it: a read
    then opens envelopes already re-encrypted under the new key."""
    real = v.engagements.key
    rotated: list[int] = []

    def racing(eng: Engagement, *a: Any, **kw: Any) -> bytes:
        key = real(eng, *a, **kw)
        if not rotated:
            rotated.append(other.engagements.rotate(engagement))
        return key

    v.engagements.key = racing  # type: ignore[method-assign]
    return rotated


OPS: dict[str, Callable[[Vault], object]] = {
    "put_many": lambda v: v.credentials.put_many(ENG, [("bulk-a", b"a-1"), ("bulk-b", b"b-2")]),
    "put": lambda v: v.credentials.put(f"{ENG}/new", b"new-1"),
    "edit": lambda v: v.credentials.edit(f"{ENG}/web1-root", {"username": "admin"}),
    "revert": lambda v: v.credentials.revert(f"{ENG}/web1-root", 1),
    "move": lambda v: v.credentials.move(f"{ENG}/web1-root", f"{OTHER}/moved"),
    "system_add": lambda v: v.systems.add(f"{ENG}/db1", "10.0.0.2", port=5432),
    "system_set": lambda v: v.systems.set(f"{ENG}/web1", {"address": "10.0.0.7"}),
    "otp": lambda v: v.credentials.otp(f"{ENG}/portal-otp"),
}

# What each operation leaves (read back through a fresh open, so through the new key).
EXPECT: dict[str, Callable[[Vault], object]] = {
    "put_many": lambda v: [v.get(f"{ENG}/bulk-{x}").secret.reveal() for x in "ab"],
    "put": lambda v: v.get(f"{ENG}/new").secret.reveal(),
    "edit": lambda v: v.get(f"{ENG}/web1-root").username,
    "revert": lambda v: v.get(f"{ENG}/web1-root").secret.reveal(),
    "move": lambda v: v.get(f"{OTHER}/moved").secret.reveal(),
    "system_add": lambda v: v.systems.show(f"{ENG}/db1").address,
    "system_set": lambda v: v.systems.show(f"{ENG}/web1").address,
    "otp": lambda v: len(v.credentials.otp(f"{ENG}/portal-otp").code),
}
WANT = {
    "put_many": [b"a-1", b"b-2"],
    "put": b"new-1",
    "edit": "admin",
    "revert": b"hunter2",
    "move": b"changed",
    "system_add": "10.0.0.2",
    "system_set": "10.0.0.7",
    "otp": 6,
}
ACTION = {
    "put_many": "put",
    "put": "put",
    "edit": "edit",
    "revert": "revert",
    "move": "mv",
    "system_add": "system-add",
    "system_set": "system-set",
    "otp": "otp",
}


@pytest.fixture
def prepared(vault: VaultFixture, engagement: str) -> VaultFixture:
    with vault.open() as v:
        v.credentials.put(f"{ENG}/web1-root", b"changed")  # version 2 (revert goes to 1)
        v.credentials.put(f"{ENG}/portal-otp", TOTP.encode())
        v.engagements.create(OTHER, "beta")
    return vault


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_rotation_between_read_and_write_is_retried(op: str, prepared: VaultFixture) -> None:
    with prepared.open() as other, prepared.open() as v:
        before = v.engagements.get(ENG).key_version
        head = max(e.seq for e in v.audit_entries())
        rotated = (_race_after_key if op == "otp" else _race)(v, other, ENG)
        OPS[op](v)
        assert rotated == [before + 1], "the race did not happen: the test proves nothing"
    with prepared.open() as v:
        assert v.integrity_check() == []
        mine = [
            e
            for e in v.audit_entries()
            if e.seq > head and e.action == ACTION[op] and e.member == "alice"
        ]
        # one successful entry per trail (a move writes both): the failed attempt rolled
        # back whole, its audit entry included
        ok = Counter(e.engagement for e in mine if e.outcome == "ok")
        assert ok, mine
        assert set(ok.values()) == {1}, mine
        assert EXPECT[op](v) == WANT[op]
        assert v.engagements.get(ENG).key_version == before + 1


def test_put_many_gives_up_after_the_retries_with_nothing_stored(prepared: VaultFixture) -> None:
    """A rotation before every attempt: Conflict (exit 1, "run again"), nothing stored."""
    with prepared.open() as other, prepared.open() as v:
        rotated = _race(v, other, ENG, times=RETRIES)
        with pytest.raises(Conflict):
            OPS["put_many"](v)
        assert len(rotated) == RETRIES
    with prepared.open() as v:
        names = {c.name for c in v.credentials.list(ENG)}
        assert not {"bulk-a", "bulk-b"} & names
        assert v.integrity_check() == []


def test_the_race_hook_is_real(prepared: VaultFixture, tmp_path: Path) -> None:
    """Without a retry the same race is a Conflict: the hook really makes the key stale."""
    with prepared.open() as other, prepared.open() as v:
        _race(v, other, ENG)
        eng = v.engagements.get(ENG)
        v.engagements.key(eng, "credential.put")
        with pytest.raises(Conflict), v._s.store.write():
            v.engagements.assert_current(eng)
