"""The witness file on its own (issue 11, property 7): what it refuses, how it moves, and
that it cannot be forged without the member's key. Wired into ``Vault.open``:
tests/test_witness_vault.py."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
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
        VAULT,
        "alice",
        {
            "audit": wt.Mark(10, _h(10)),
            f"log:{E1}": wt.Mark(3, _h(3)),
            f"log:{E2}": wt.Mark(1, _h(1)),
        },
    )


def _chain(hashes: list[bytes], first: int = 0) -> wt.Chain:
    """A chain holding ``hashes`` at positions ``first``…, like the vault's own."""
    if not hashes:
        return wt.Chain(None)
    head = wt.Mark(first + len(hashes) - 1, hashes[-1])
    return wt.Chain(
        head, lambda seq: hashes[seq - first] if first <= seq < first + len(hashes) else None
    )


AUDIT = [_h(i) for i in range(1, 13)]  # entries 1..12
LOGS = {f"log:{E1}": [_h(0), _h(1), _h(2), _h(3), _h(4)], f"log:{E2}": [_h(0), _h(1)]}


def _now(audit: list[bytes] = AUDIT, **logs: list[bytes]) -> dict[str, wt.Chain]:
    out = {"audit": _chain(audit, 1)}
    for name, hashes in {**LOGS, **{f"log:{k}": v for k, v in logs.items()}}.items():
        out[name] = _chain(hashes)
    return out


def test_a_vault_at_or_ahead_of_the_witness_passes() -> None:
    assert _seen().gaps(_now()) == []
    assert _seen().gaps(_now(AUDIT[:10])) == []  # exactly at the witness
    pruned = _now()
    pruned["audit"] = wt.Chain(wt.Mark(12, _h(12)))  # witnessed entry pruned: head only
    assert _seen().gaps(pruned) == []
    assert _seen().gaps({**_now(), "new": _chain([_h(5)])}) == []  # a chain never seen


@pytest.mark.parametrize(
    ("now", "says"),
    [
        (_now(AUDIT[:9]), "audit entry 10 is missing: the vault is older"),
        (_now(AUDIT[:5]), "audit entries 6–10 are missing: the vault is older"),
        (_now([*AUDIT[:9], _h(99), *AUDIT[10:]]), "audit entry 10 differs"),
        (
            _now(**{E1: LOGS[f"log:{E1}"][:3]}),
            f"link 3 is missing of the membership log of engagement {E1}",
        ),
        (
            _now(**{E1: [*LOGS[f"log:{E1}"][:3], _h(77)]}),
            f"link 3 of the membership log of engagement {E1} differs",
        ),
        ({k: v for k, v in _now().items() if k != f"log:{E2}"}, f"engagement {E2} are all missing"),
    ],
    ids=[
        "audit one behind",
        "audit rolled back",
        "audit forked",
        "log truncated",
        "log forked",
        "log deleted",
    ],
)
def test_behind_or_forked_is_refused_and_named(now: dict[str, wt.Chain], says: str) -> None:
    gaps = _seen().gaps(now)
    assert len(gaps) == 1
    e = wt.refusal("alice", gaps)
    assert e.exit_code == 6
    assert "witness accept" in str(e)
    assert says in str(e), str(e)
    assert "\n" not in str(e)


def test_a_chain_that_ended_legitimately_is_forgotten_not_missing() -> None:
    assert _seen().gaps({**_now(), f"log:{E2}": wt.GONE}) == []


def test_a_head_only_chain_sees_a_fork_where_the_heads_meet() -> None:
    seen = wt.Witness(VAULT, "alice", {"x": wt.Mark(3, _h(3))})
    assert seen.gaps({"x": wt.Chain.of_head(wt.Mark(3, _h(3)))}) == []
    assert seen.gaps({"x": wt.Chain.of_head(wt.Mark(3, _h(4)))})[0].kind == "forked"
    assert seen.gaps({"x": wt.Chain.of_head(wt.Mark(5, _h(4)))}) == []  # cannot tell
    assert seen.gaps({"x": wt.Chain.of_head(None)})[0].kind == "behind"


def test_all_problems_in_one_message() -> None:
    gaps = _seen().gaps({})
    assert len(gaps) == 3
    assert str(wt.refusal("alice", gaps)).count(";") >= 3


def test_advance_never_goes_backward() -> None:
    w = _seen().advanced(
        {"audit": wt.Mark(5, _h(5)), f"log:{E1}": wt.Mark(1, _h(1)), "new": wt.Mark(0, _h(0))}
    )
    assert w.marks["audit"] == wt.Mark(10, _h(10))
    assert w.marks[f"log:{E1}"] == wt.Mark(3, _h(3))
    assert w.marks["new"] == wt.Mark(0, _h(0))
    w = w.advanced({"audit": wt.Mark(11, _h(11)), f"log:{E1}": wt.Mark(4, _h(4))})
    assert w.marks["audit"] == wt.Mark(11, _h(11))
    assert w.marks[f"log:{E1}"] == wt.Mark(4, _h(4))
    assert "new" not in w.without({"new"}).marks


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
    d["chains"]["audit"] = [0, _h(0).hex()]
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
        "[]",
        '{"format": "other"}',
        '{"format": "credvault-witness/1", "mac": "00"}',
        '{"format": "credvault-witness/1", "mac": "00", "chains": {"audit": [true, "00"]}, "vault_id": "", "member": "a"}',
        '{"format": "credvault-witness/1", "mac": "00", "chains": {"audit": [1, "00"]}, "vault_id": "", "member": "a"}',
        '{"format": "credvault-witness/1", "mac": "00", "chains": {"Bad Name": [1, "0000000000000000000000000000000000000000000000000000000000000000"]}, "vault_id": "", "member": "a"}',
        '{"format": "credvault-witness/1", "mac": "00", "chains": [], "vault_id": "", "member": "a"}',
        "[" * 100000,
    ],
)
def test_corrupt_witness_is_integrity_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(text)
    with pytest.raises(IntegrityError):
        wt.load(path, KEY, VAULT, "alice")


def test_an_empty_file_is_no_witness(tmp_path: Path) -> None:
    """What a crash may leave of a file replaced without fsync: no better than deleting it
    (which anyone who can write the file can do), so it is not an alarm."""
    path = tmp_path / "w.json"
    path.write_bytes(b"")
    assert wt.load(path, KEY, VAULT, "alice") is None


def test_new_member_keys_get_a_new_file(tmp_path: Path) -> None:
    """After an admin's ``member reset`` the member's keys differ: their witness starts
    afresh in another file instead of failing to verify the old one."""
    a = wt.path_for(VAULT, "alice", tmp_path, KEY)
    b = wt.path_for(VAULT, "alice", tmp_path, wt.mac_key(b"\x09" * 32))
    assert a != b
    assert a.parent == b.parent == tmp_path


def test_updates_alternate_between_two_slots_in_place(tmp_path: Path) -> None:
    """The get path's write: the older slot is overwritten in place (same file, padded), one
    generation up; the newer one is never touched, so a torn write cannot lose both."""
    path = tmp_path / "w.json"
    a, b = wt.slots(path)
    w = _seen()
    for seq in range(11, 15):
        w = w.advanced({"audit": wt.Mark(seq, _h(seq))})
        with wt.locked(path):
            wt.save(path, w, KEY, durable=False)
    inodes = (a.stat().st_ino, b.stat().st_ino)
    sizes = (a.stat().st_size, b.stat().st_size)
    assert sizes[0] % wt.PAD == 0
    for seq in range(15, 19):
        w = w.advanced({"audit": wt.Mark(seq, _h(seq))})
        with wt.locked(path):
            before = wt.read(path, KEY, VAULT, "alice")
            wt.save(path, w, KEY, durable=False, at=before)
        after = wt.read(path, KEY, VAULT, "alice")
        assert (after.gen, after.slot) == (before.gen + 1, 1 - before.slot)
        assert after.witness == w
    assert (a.stat().st_ino, b.stat().st_ino) == inodes  # no new file, no rename
    assert (a.stat().st_size, b.stat().st_size) == sizes
    assert stat.S_IMODE(b.stat().st_mode) == 0o600


def test_a_torn_newer_slot_leaves_the_older_in_force(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    w1 = _seen()
    w2 = w1.advanced({"audit": wt.Mark(11, _h(11))})
    wt.save(path, w1, KEY)
    wt.save(path, w2, KEY)
    newest = wt.read(path, KEY, VAULT, "alice")
    assert newest.witness == w2
    torn = wt.slots(path)[newest.slot]
    data = bytearray(torn.read_bytes())
    data[40:80] = b"\0" * 40  # a write cut short
    torn.write_bytes(bytes(data))
    assert wt.load(path, KEY, VAULT, "alice") == w1  # one write older: behind, never ahead
    other = wt.slots(path)[1 - newest.slot]
    other.write_bytes(b"{}")  # both bad: altered, not torn
    with pytest.raises(IntegrityError):
        wt.load(path, KEY, VAULT, "alice")


# -- the journal: one MACed audit position per commit (docs/format.md §18) ------------------------
EPOCH = bytes([0xEE]) * 16
# Known answer: key = HKDF(0x07 * 32, "credvault/v1/witness-mac"), vault 00..0f, member alice,
# epoch ee * 16, audit position 1234 with hash ab * 32.
RECORD_1234 = bytes.fromhex(
    "00000000000004d2" + "ab" * 32 + "a1da85f1cb1d9d3cf660f330c7319fbe"
    "ad7f9e45584d078c017898c3eaab037c"
)


def _doc_record(key: bytes, vault: bytes, member: str, epoch: bytes, seq: int, h: bytes) -> bytes:
    """docs/format.md §18, written again from the text: seq (u64 BE) ‖ hash ‖
    HMAC-SHA256(K, encode(label, vault_id, member, epoch, "audit", seq, hash))."""
    import hashlib
    import hmac

    def enc(*parts: bytes) -> bytes:
        return b"".join(len(x).to_bytes(4, "big") + x for x in parts)

    msg = enc(
        b"credvault/v1/witness-journal",
        vault,
        member.encode(),
        epoch,
        b"audit",
        seq.to_bytes(8, "big"),
        h,
    )
    return seq.to_bytes(8, "big") + h + hmac.digest(key, msg, hashlib.sha256)


def test_journal_record_known_answer() -> None:
    prefix = wt.journal_prefix(VAULT, "alice", EPOCH)
    mark = wt.Mark(1234, bytes([0xAB]) * 32)
    assert wt.journal_record(KEY, prefix, mark) == RECORD_1234
    assert _doc_record(KEY, VAULT, "alice", EPOCH, 1234, mark.hash) == RECORD_1234
    assert len(RECORD_1234) == wt.RECORD == 72
    with pytest.raises(ValueError):
        wt.journal_record(KEY, prefix, wt.Mark(1, b"\x01" * 16))  # only 32-byte hashes


def _with_epoch(path: Path, epoch: bytes = EPOCH) -> wt.Witness:
    w = _seen()._replace(epoch=epoch)
    wt.save(path, w, KEY)
    return w


def _journal(path: Path, *records: bytes) -> None:
    with wt.journal_path(path).open("ab") as f:
        for r in records:
            f.write(r)


def _rec(seq: int, epoch: bytes = EPOCH, key: bytes = KEY, member: str = "alice") -> bytes:
    return wt.journal_record(key, wt.journal_prefix(VAULT, member, epoch), wt.Mark(seq, _h(seq)))


def test_the_journal_advances_the_witness_to_its_highest_record(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    w = _with_epoch(path)
    assert wt.journal_path(path) == tmp_path / "w.journal"
    _journal(path, _rec(12), _rec(14), _rec(13), _rec(9))  # several processes: any order
    loaded = wt.load(path, KEY, VAULT, "alice")
    assert loaded == w.advanced({"audit": wt.Mark(14, _h(14))})
    assert loaded is not None
    assert loaded.epoch == EPOCH


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: _rec(20, epoch=bytes(16)), id="another epoch (before a reset)"),
        pytest.param(lambda: _rec(20, key=wt.mac_key(b"\x08" * 32)), id="another member's key"),
        pytest.param(lambda: _rec(20, member="bob"), id="another member's name"),
        pytest.param(lambda: (21).to_bytes(8, "big") + _rec(20)[8:], id="position edited"),
        pytest.param(lambda: _rec(20)[:40] + b"\0" * 32, id="MAC zeroed"),
        pytest.param(lambda: b"\xff" * 72, id="garbage"),
    ],
)
def test_a_journal_record_that_does_not_verify_is_not_there(
    tmp_path: Path, bad: Callable[[], bytes]
) -> None:
    """An insider who can write the member's files cannot move the witness: what they add
    counts for nothing (deleting records is deleting the witness, documented)."""
    path = tmp_path / "w.json"
    w = _with_epoch(path)
    _journal(path, _rec(11), bad())
    assert wt.load(path, KEY, VAULT, "alice") == w.advanced({"audit": wt.Mark(11, _h(11))})


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    w = _with_epoch(path)
    _journal(path, _rec(11), _rec(12)[:50])  # a write cut short
    assert wt.load(path, KEY, VAULT, "alice") == w.advanced({"audit": wt.Mark(11, _h(11))})


def test_a_journal_without_a_file_is_a_witness_of_its_own(tmp_path: Path) -> None:
    """The file not yet written (or deleted): the journal's records, epoch empty, count."""
    path = tmp_path / "w.json"
    _journal(path, _rec(5, epoch=b""))
    assert wt.load(path, KEY, VAULT, "alice") == wt.Witness(
        VAULT, "alice", {"audit": wt.Mark(5, _h(5))}
    )


def test_a_file_written_before_the_journal_is_read_and_its_records_count(
    tmp_path: Path,
) -> None:
    """A witness file of the format before the journal (no ``journal`` member; byte for byte
    what that release wrote) is read as it is: its epoch is empty."""
    path = tmp_path / "w.json"
    old = _seen()
    body = old._body()
    assert "journal" not in body
    body["gen"] = 3
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["mac"] = wt.p.mac(KEY, canonical).hex()
    path.write_bytes((json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode())
    assert wt.load(path, KEY, VAULT, "alice") == old
    _journal(path, _rec(30, epoch=b""))
    assert wt.load(path, KEY, VAULT, "alice") == old.advanced({"audit": wt.Mark(30, _h(30))})


def test_an_epoch_is_part_of_the_macd_file(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    _with_epoch(path)
    for slot in wt.slots(path):
        if slot.exists():
            d = json.loads(slot.read_text())
            d["journal"] = "00" * 16  # bring back records of an earlier epoch
            slot.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="MAC"):
        wt.load(path, KEY, VAULT, "alice")
