"""The team vault's purge ledger without a server (credvault.team_ledger; the real thing with
pg_dump/pg_restore is tests/postgres/test_restore_pg.py): receipts appended on the signing
machine in the SQLCipher ledger's format, read back against the pinned keys only, and
destroyed again only for the very engagement a receipt names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from credvault.crypto import primitives as p
from credvault.keyslots import MemberKeys
from credvault.ledger import read_ledger_checked
from credvault.team_ledger import (
    Destroyer,
    PinnedKeys,
    destroy_again,
    keep,
    keep_close,
    state_ledger,
)
from credvault.team_lifecycle import sign_receipt

VID = bytes(range(16))


def _keys(name: str) -> MemberKeys:
    return MemberKeys(name, os.urandom(32), p.KeyBytes(os.urandom(32)), b"")


def _receipt(signer: MemberKeys, eng: str, created: str = "2026-01-01T00:00:00.000000Z") -> str:
    facts: dict[str, object] = {
        "format": "credvault-purge-receipt/2",
        "vault_id": VID.hex(),
        "engagement": eng,
        "created_at": created,
        "purged_at": "2026-06-01T00:00:00.000000Z",
        "reason": "client request",
    }
    return sign_receipt(signer, facts, None)


def _closed(name: str) -> Any:
    return SimpleNamespace(
        name=name,
        state="closed",
        closed_at="2026-02-01T00:00:00.000000Z",
        grace_days=7,
        purge_due="2027-01-01T00:00:00.000000Z",
        hold_until="2027-01-01T00:00:00.000000Z",
        hold_reason="the client asked",
        hold_by="alice",
    )


def _team(keys: MemberKeys) -> Any:
    return SimpleNamespace(vault_id=VID, database="teamdb", keys=keys, member=keys.name)


def test_receipts_are_appended_where_they_are_signed_and_read_as_a_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, mallory = _keys("alice"), _keys("mallory")
    named = tmp_path / "offsite"
    named.mkdir()
    monkeypatch.setenv("CREDVAULT_LEDGER_DIR", str(named))
    t = _team(alice)
    keep(t, _receipt(alice, "acme"))
    keep(t, _receipt(alice, "beta"))
    own = state_ledger("teamdb")
    copy = named / f"credvault-ledger-{VID.hex()}.jsonl"
    assert own.stat().st_mode & 0o777 == 0o600
    assert own.read_bytes() == copy.read_bytes()
    lines = own.read_text().splitlines()
    assert len(lines) == 4  # a header of its own before each receipt
    assert json.loads(lines[0])["format"] == "credvault-purge-ledger/1"
    # an edited line and a stranger's receipt are named, never acted on
    edited = lines[1].replace('"engagement":"acme"', '"engagement":"gamma"')
    own.write_text("\n".join([lines[0], edited, *lines[2:], _receipt(mallory, "delta")]) + "\n")
    pub = p.ed25519_public(alice.sign_private)
    read = read_ledger_checked(own, VID.hex(), PinnedKeys(VID.hex(), [pub]))
    assert [r.engagement for r in read.records] == ["beta"]
    assert read.as_of is not None
    assert [x.split(": ", 1)[1][:30] for x in read.rejected] == [
        "receipt of 'gamma' ignored (pu",
        "receipt of 'delta' ignored (pu",
    ]
    assert [x.split(":")[1] for x in read.rejected] == ["2", "5"]


def test_only_the_engagement_a_receipt_names_is_destroyed_again(tmp_path: Path) -> None:
    alice = _keys("alice")
    t = _team(alice)
    made = "2026-01-01T00:00:00.000000Z"
    for eng in ("alive", "purged", "absent", "remade"):
        keep(t, _receipt(alice, eng, made))
    for eng in ("held", "alive"):  # a close record; "alive"'s receipt outranks its record
        keep_close(t, _closed(eng))
    db = {
        "held": ("closed", made),
        "alive": ("active", made),
        "purged": ("purged", made),
        "remade": ("active", "2026-07-01T00:00:00.000000Z"),  # a new one of that name
    }
    destroyed: list[str] = []
    closes: list[Any] = []

    def reclose(rec: Any) -> str:
        closes.append(rec)
        return "ok"

    r = destroy_again(
        t,
        Destroyer(db.get, destroyed.append, reclose),
        lambda: [p.ed25519_public(alice.sign_private)],
    )
    assert destroyed == ["alive"]
    assert r.destroyed_again == ["alive"]
    assert r.closed_again == ["held"]
    assert [(c.engagement, c.hold_until, c.hold_by) for c in closes] == [
        ("held", "2027-01-01T00:00:00.000000Z", "alice")
    ]
    assert r.receipts == 4
    assert r.looked_in == [str(state_ledger("teamdb"))]
    assert len(r.ignored) == 1
    assert "receipt of 'remade' is of the engagement made 2026-01-01T00:00:00" in r.ignored[0]
    # signed by a key this client does not trust: nothing destroyed, every line named
    other = destroy_again(t, Destroyer(db.get, destroyed.append, reclose), lambda: [os.urandom(32)])
    assert (other.destroyed_again, other.closed_again) == ([], [])
    assert len(other.ignored) == 6
    assert destroyed == ["alive"]
    assert len(closes) == 1
