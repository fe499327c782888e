"""A key-slot change (``member add`` here) when the disk or the COMMIT misbehaves, in-process:
a full disk while writing the staged key-slot file is one clear line and changes nothing; a
COMMIT that took effect but reported an error afterwards is finished, not half-done; an
interrupt after the COMMIT still installs the file before it goes on. Files that are
written atomically or must be new (exports, identities) leave no partial file on a full
disk or an interrupt. (Kills at every point are test_fault_campaign.py's.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conftest import KDF, VaultFixture
from credvault import Vault
from credvault.errors import StoreError
from credvault.files import atomic_write, write_new_private
from credvault.slotfile import staged_files


def _members(vault: VaultFixture) -> list[str]:
    with vault.open() as v:
        return sorted(m.name for m in v.members.list())


def _full_disk(*_: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_staging_the_key_slots_changes_nothing(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _members(vault)
    with vault.open() as v:
        monkeypatch.setattr(os, "fsync", _full_disk)
        with pytest.raises(StoreError) as e:
            v.members.add("dave", passphrase=b"dave-pass")
        monkeypatch.undo()
        assert str(e.value) == f"disk full: cannot write {vault.path / 'keyslots.json'}"
        assert e.value.exit_code == 1
    assert _members(vault) == before
    assert staged_files(vault.path) == []
    with vault.open() as v:
        assert not [a for a in v.audit_entries(action="member-add") if a.item == "dave"]


def _after_commit(v: Vault, error: BaseException) -> None:
    """The next COMMIT takes effect, then reports ``error`` (once)."""
    store = v._s.store
    original = store.on_commit

    def hook() -> None:
        store.on_commit = original
        if original is not None:
            original()
        raise error

    store.on_commit = hook


@pytest.mark.parametrize(
    "error",
    [RuntimeError("commit reported a failure"), KeyboardInterrupt()],
    ids=["error", "interrupt"],
)
def test_a_commit_that_took_effect_is_finished(vault: VaultFixture, error: BaseException) -> None:
    with vault.open() as v:
        _after_commit(v, error)
        if isinstance(error, Exception):
            v.members.add("dave", passphrase=b"dave-pass")  # reported done: it is
        else:
            with pytest.raises(KeyboardInterrupt):
                v.members.add("dave", passphrase=b"dave-pass")
    assert "dave" in _members(vault)
    assert staged_files(vault.path) == []
    with Vault.open(vault.path, "dave", "dave-pass", kdf=KDF) as v:
        assert v.member == "dave"


def _fail_writes_to(fd_path: Path, error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write raises ``error`` for writes to ``fd_path``'s directory's new files only."""
    real = os.write

    def write(fd: int, data: bytes) -> int:
        if str(Path(f"/proc/self/fd/{fd}").readlink()).startswith(str(fd_path)):
            raise error
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "full"), OSError(errno.EIO, "I/O error"), KeyboardInterrupt()],
    ids=["full", "io-error", "interrupt"],
)  # fmt: skip
def test_atomic_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    target = d / "receipt.json"
    target.write_bytes(b"old")
    _fail_writes_to(d, error, monkeypatch)
    full = isinstance(error, OSError) and error.errno == errno.ENOSPC
    with pytest.raises(StoreError if full else type(error)) as e:
        atomic_write(target, b"new")
    monkeypatch.undo()
    if full:
        assert str(e.value) == f"disk full: cannot write {target}"
    elif isinstance(error, OSError):
        assert e.value.filename == str(target)  # os.write names no file: the error does
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in d.iterdir()) == ["receipt.json"]


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "full"), KeyboardInterrupt()], ids=["full", "interrupt"]
)
def test_a_new_private_file_is_not_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    target = d / "export.cvx"
    _fail_writes_to(d, error, monkeypatch)
    with pytest.raises((StoreError, KeyboardInterrupt)) as e:
        write_new_private(target, b"x" * 1000)
    monkeypatch.undo()
    assert isinstance(e.value, type(error) if isinstance(error, KeyboardInterrupt) else StoreError)
    assert list(d.iterdir()) == []  # a rerun is not blocked by a partial file
    write_new_private(target, b"complete")
    assert target.read_bytes() == b"complete"


def test_a_service_add_that_fails_leaves_no_identity_and_a_leftover_one_is_replaced(
    vault: VaultFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``member add --service`` writes the identity file inside its transaction. Failing
    after that, it removes the file (nothing was added); a file a kill left behind (this
    vault's, for this name, who is no member) is replaced by the next add; any other file
    at that path is never overwritten."""
    from credvault import AlreadyExists, IdentityFile
    from credvault.session import Session

    ident = tmp_path / "svc.id"
    leftover = tmp_path / "svc.id.kept"
    real_log = Session.log

    def fail_after_writing(self: Session, action: str, *args: object, **kw: object) -> int:
        if action == "member-add":
            leftover.write_bytes(ident.read_bytes())  # what a kill here would leave behind
            raise RuntimeError("the transaction fails after the identity file was written")
        return real_log(self, action, *args, **kw)  # type: ignore[arg-type]

    with vault.open() as v:
        monkeypatch.setattr(Session, "log", fail_after_writing)
        with pytest.raises(RuntimeError):
            v.members.add("svc", identity_file=ident)
        monkeypatch.undo()
        assert not ident.exists()  # no orphan identity for a member that does not exist
        assert "svc" not in [m.name for m in v.members.list()]
        leftover.rename(ident)
        v.members.add("svc", identity_file=ident)  # the leftover is replaced
        with pytest.raises(AlreadyExists, match="refusing to overwrite"):
            v.members.add("svc2", identity_file=ident)  # svc's, not an orphan of svc2
        other = tmp_path / "notes.txt"
        other.write_text("not an identity")
        with pytest.raises(AlreadyExists, match="refusing to overwrite"):
            v.members.add("svc3", identity_file=other)
    assert other.read_text() == "not an identity"
    with Vault.open(vault.path, "svc", IdentityFile(ident), kdf=KDF) as v:
        assert v.member == "svc"


# -- a key-slot change cut short: what the next open decides (slotfile.settle) --------------
def _cut_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies between its COMMIT and its rename: the staged file stays."""
    from credvault.slotfile import Staged

    monkeypatch.setattr(Staged, "install", lambda self: None)


def _cut_before_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies after writing the staged file, before its COMMIT."""
    from credvault.slotfile import Staged

    real_write = Staged.write

    def write_then_die(self: Staged, data: bytes) -> None:
        real_write(self, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(Staged, "write", write_then_die)
    monkeypatch.setattr(Staged, "discard", lambda self: None)


def _settles(v: Vault) -> list[tuple[str | None, str, str]]:
    return [(e.item, e.outcome, e.detail) for e in v.audit_entries(action="settle")]


def test_an_add_cut_after_its_commit_is_finished_by_the_next_open(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with vault.open() as v:
        _cut_after_commit(monkeypatch)
        v.members.add("dave", passphrase=b"dave-pass")
        monkeypatch.undo()
    assert len(staged_files(vault.path)) == 1
    with Vault.open(vault.path, "dave", "dave-pass", kdf=KDF) as v:  # from the staged file
        assert v.member == "dave"
        assert staged_files(vault.path) == []
    with vault.open() as v:
        assert "dave" in [m.name for m in v.members.list()]
        assert _settles(v) == [("dave", "ok", "member-add: finished at open after an interruption")]


def test_an_add_cut_before_its_commit_is_undone_and_the_newcomer_told(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credvault import NotFound

    with vault.open() as v:
        _cut_before_commit(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            v.members.add("dave", passphrase=b"dave-pass")
        monkeypatch.undo()
    assert len(staged_files(vault.path)) == 1
    with pytest.raises(NotFound, match="adding 'dave' was interrupted and undone"):
        Vault.open(vault.path, "dave", "dave-pass", kdf=KDF)
    assert staged_files(vault.path) == []
    with vault.open() as v:
        assert "dave" not in [m.name for m in v.members.list()]
        assert _settles(v) == [
            ("dave", "error", "member-add: interrupted before it took effect; undone at open")
        ]


def test_a_passphrase_change_cut_before_its_commit_keeps_the_old_passphrase(
    vault: VaultFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credvault import WrongPassphrase

    with vault.open("bob") as v:
        _cut_before_commit(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            v.members.passwd("bob-new-pass")
        monkeypatch.undo()
    with pytest.raises(WrongPassphrase, match="interrupted and undone; use the previous"):
        Vault.open(vault.path, "bob", "bob-new-pass", kdf=KDF)
    with vault.open("bob") as v:  # the old one
        assert v.member == "bob"
