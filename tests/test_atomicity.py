"""Membership and passphrase changes are all-or-nothing across the key-slot file and the
database (issue 13, docs/operations.md "How a change takes effect").

Every trial runs one change in a child process and faults it: kill -9 at named progress
points (the k-th call of a function, observed by a tracer) and at points spread over the
lines the change executes; a real full disk (a small tmpfs, root only); SIGINT and SIGTERM.
Then ``fault_ops.check`` opens the vault as every member and requires: integrity and audit
checks pass, the change is in effect if and only if it is audited, an acknowledged change is
in effect, and no stray file is left. The default run is a deterministic sample; set
``CREDVAULT_FAULT_CAMPAIGN=full`` for every operation at 30+ points (test_fault_campaign.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault_ops import OPS, PASSWORDS, check, fresh_copy, make_campaign_template, open_vault
from killpoints import points, run_child

pytestmark = pytest.mark.fault

MEMBERSHIP = ["passwd", "passwd_compromised", "member_add", "member_reset", "member_rm"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return make_campaign_template(tmp_path_factory.mktemp("atomicity"))


def _trial(template: tuple[Path, int], work: Path, op: str, at: str, sig: int = 9) -> list[str]:
    fresh_copy(template[0], work, op)
    out = run_child(work, op, at, sig)
    assert "Traceback" not in out.err, out.err
    bad = check(work / "vault", OPS[op], work, out.acknowledged, template[1])
    return [f"{op} @ {at} (exit {out.code}): {b}" for b in bad]


def _entries(path: Path, password: str = PASSWORDS["alice"]) -> list[tuple[str, str, str]]:
    with open_vault(path, "alice", password) as v:
        return [(e.action, e.outcome, e.detail) for e in v.audit_entries()]


# -- the two moments that matter, named ---------------------------------------------------
@pytest.mark.parametrize("op", MEMBERSHIP)
def test_killed_after_commit_is_finished_at_open_and_audited(
    op: str, template: tuple[Path, int], tmp_path: Path
) -> None:
    """Killed between the COMMIT and the rename: the next open installs the change."""
    work = tmp_path / "w"
    fresh_copy(template[0], work, op)
    out = run_child(work, op, "call:install", 9)
    assert out.code == -9
    staged = [f.name for f in (work / "vault").iterdir() if f.name.endswith(".staged")]
    assert len(staged) == 1, "the committed version waits in a staged file"
    bad = check(work / "vault", OPS[op], work, acknowledged=True, head=template[1])
    assert not bad, bad
    password = "alice-new-pass" if op.startswith("passwd") else PASSWORDS["alice"]
    assert any("finished at open" in d for _a, o, d in _entries(work / "vault", password))


@pytest.mark.parametrize("op", MEMBERSHIP)
def test_killed_before_commit_is_undone_at_open_and_audited(
    op: str, template: tuple[Path, int], tmp_path: Path
) -> None:
    """Killed with the staged file complete but not committed: the next open deletes it."""
    work = tmp_path / "w"
    fresh_copy(template[0], work, op)
    out = run_child(work, op, "call:fsync_dir#1", 9)
    assert out.code == -9
    assert any(f.name.endswith(".staged") for f in (work / "vault").iterdir())
    bad = check(work / "vault", OPS[op], work, acknowledged=False, head=template[1])
    assert not bad, bad
    assert not OPS[op].applied(open_vault(work / "vault", "alice", PASSWORDS["alice"]), work)
    assert any(o == "error" and "undone at open" in d for _a, o, d in _entries(work / "vault"))


@pytest.mark.parametrize("at", ["call:finish", "call:copy_to", "call:promote", "call:rewrite"])
def test_member_rm_killed_during_its_rekey_is_finished(
    at: str, template: tuple[Path, int], tmp_path: Path
) -> None:
    work = tmp_path / "w"
    fresh_copy(template[0], work, "member_rm")
    out = run_child(work, "member_rm", at, 9)
    assert out.code == -9, out.err  # killed at that point, not run to the end
    bad = check(work / "vault", OPS["member_rm"], work, out.acknowledged, template[1])
    assert not bad, bad
    with open_vault(tmp_path / "w" / "vault", "alice", PASSWORDS["alice"]) as v:
        assert "bob" not in {m.name for m in v.members.list()}
        assert v.info().key_generation == 2


@pytest.mark.parametrize(
    "at",
    [
        "call:finish",
        "call:copy_to",
        "call:promote",
        "call:succeed_receipt_key",
        "call:succeed_key",
        "call:rewrite",
    ],
)
def test_passwd_compromised_killed_during_its_rekey_is_finished(
    at: str, template: tuple[Path, int], tmp_path: Path
) -> None:
    """Killed after the COMMIT that gave alice new keys, anywhere in the re-key: the next
    open finishes it (new database key, successors once), and only the new passphrase works."""
    work = tmp_path / "w"
    fresh_copy(template[0], work, "passwd_compromised")
    out = run_child(work, "passwd_compromised", at, 9)
    assert out.code == -9  # killed at that point, not run to the end
    bad = check(
        work / "vault", OPS["passwd_compromised"], work, acknowledged=True, head=template[1]
    )
    assert not bad, bad
    assert not (work / "vault" / "vault.db.next").exists()
    with open_vault(tmp_path / "w" / "vault", "alice", "alice-new-pass") as v:
        assert v.info().key_generation == 2
        assert len(v.receipt_keys().keys) == 2
        assert [e.action for e in v.audit_entries()].count("audit-key") == 1


@pytest.mark.parametrize("op", MEMBERSHIP)
def test_kill_9_at_spread_points(op: str, template: tuple[Path, int], tmp_path: Path) -> None:
    fresh_copy(template[0], tmp_path / "dry", op)
    total = run_child(tmp_path / "dry", op).lines
    n = 30 if os.environ.get("CREDVAULT_FAULT_CAMPAIGN") == "full" else 2
    bad: list[str] = []
    for at in points(total, n):
        bad += _trial(template, tmp_path / f"k{at}", op, str(at))
    assert not bad, bad


def test_old_keyslot_file_put_back_is_refused(template: tuple[Path, int], tmp_path: Path) -> None:
    """An older keyslots.json (say, from before a passwd) is not the version the database
    records: the open refuses it as tampering instead of reviving the old passphrase."""
    path = fresh_copy(template[0], tmp_path / "w")
    old = (path / "keyslots.json").read_bytes()
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        v.members.passwd(b"alice-new-pass")
    (path / "keyslots.json").write_bytes(old)
    from credvault.errors import IntegrityError

    with pytest.raises(IntegrityError, match="not the version the database records"):
        open_vault(path, "alice", PASSWORDS["alice"])


# -- a real full disk -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mnt = tmp_path_factory.mktemp("smallfs")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: disk-full tests need root to mount a small tmpfs")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs for disk-full tests: {r.stderr!r}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` so that about ``leave`` bytes stay free."""
    filler = fs / "filler"
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def disk_full_trial(
    template: tuple[Path, int], fs: Path, op: str, leave: int
) -> tuple[str, list[str]]:
    """Run ``op`` with ``leave`` bytes free; returns (outcome, violations)."""
    work = fs / "w"
    with contextlib.suppress(FileNotFoundError):
        (fs / "filler").unlink()
    fresh_copy(template[0], work, op)
    filler = fill(fs, leave)
    try:
        out = run_child(work, op)
    finally:
        filler.unlink()
    bad: list[str] = []
    if "Traceback" in out.err:
        bad.append(f"traceback: {out.err[-200:]}")
    if not out.acknowledged:
        if "disk full" not in out.out:
            bad.append(f"failed without saying 'disk full': {out.out.strip()[:200]}")
        outcome = "failed"
    else:
        outcome = "done"
    bad += check(work / "vault", OPS[op], work, out.acknowledged, template[1])
    shutil.rmtree(work)
    return outcome, [f"{op} with {leave} bytes free: {b}" for b in bad]


FULL = os.environ.get("CREDVAULT_FAULT_CAMPAIGN") == "full"


@pytest.mark.parametrize("op", sorted(OPS) if FULL else MEMBERSHIP)
def test_disk_full_changes_nothing(op: str, template: tuple[Path, int], small_fs: Path) -> None:
    levels = FULL_LEVELS if FULL else [0, 8192]
    bad: list[str] = []
    outcomes = []
    for leave in levels:
        outcome, b = disk_full_trial(template, small_fs, op, leave)
        outcomes.append(outcome)
        bad += b
    report = os.environ.get("CREDVAULT_FAULT_REPORT")
    if report:
        with Path(report).open("a") as f:
            f.write(
                f"| {op} | disk full | {len(levels)} | {len(bad)} | {outcomes.count('failed')} failed |\n"
            )
    assert not bad, bad
    if op in MEMBERSHIP:  # (restore writes elsewhere; some operations need no new page)
        assert "failed" in outcomes, "the smallest free space must make the change fail"


FULL_LEVELS = [0, 2048, 4096, 8192, 12288, 16384, 24576, 32768, 65536, 131072, 262144, 524288]


# -- signals --------------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "sig"), [("passwd", signal.SIGINT), ("member_rm", signal.SIGTERM)])
def test_signal_mid_change_one_line_and_all_or_nothing(
    op: str, sig: int, template: tuple[Path, int], tmp_path: Path
) -> None:
    fresh_copy(template[0], tmp_path / "dry", op)
    total = run_child(tmp_path / "dry", op).lines
    bad: list[str] = []
    for at in points(total, 2):
        work = tmp_path / f"s{at}"
        fresh_copy(template[0], work, op)
        out = run_child(work, op, str(at), sig)
        assert "Traceback" not in out.err, out.err
        if not out.acknowledged:
            assert out.code == 128 + sig, (out.code, out.err)
            assert len(out.err.strip().splitlines()) == 1, out.err
        bad += check(work / "vault", OPS[op], work, out.acknowledged, template[1])
    assert not bad, bad


# -- exclusive operations neither starve nor deadlock -----------------------------------------
def test_two_vault_objects_in_one_process_do_not_deadlock(
    template: tuple[Path, int], tmp_path: Path
) -> None:
    from credvault.errors import StoreError

    path = fresh_copy(template[0], tmp_path / "w")
    other = open_vault(path, "bob", PASSWORDS["bob"])
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        with pytest.raises(StoreError, match="another Vault object"):
            v.members.remove("carol")
        assert "carol" in {m.name for m in v.members.list()}
        v.credentials.put("acme-2026/still-works", b"x")  # the session kept its shared lock
        other.close()
        v.members.remove("carol")
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        assert "carol" not in {m.name for m in v.members.list()}


def test_member_rm_gives_up_on_a_busy_vault_and_changes_nothing(
    template: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process keeps the vault open: rm announces that it waits, then gives up."""
    import logging
    import sys

    import credvault.files
    from credvault.errors import StoreError

    path = fresh_copy(template[0], tmp_path / "w")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from fault_ops import open_vault, PASSWORDS\n"
            f"v = open_vault(__import__('pathlib').Path({str(path)!r}), 'dave', 'dave-pass')\n"
            "print('open', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"  # observed: the vault is held
        monkeypatch.setattr(credvault.files, "EXCLUSIVE_WAIT_S", 0.3)
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
        logging.getLogger("credvault").addHandler(handler)
        try:
            with open_vault(path, "alice", PASSWORDS["alice"]) as v:
                with pytest.raises(StoreError, match="gave up and changed nothing"):
                    v.members.remove("bob")
                assert "bob" in {m.name for m in v.members.list()}
                assert not [e for e in v.audit_entries() if e.action == "member-rm"]
        finally:
            logging.getLogger("credvault").removeHandler(handler)
        assert any("waiting up to" in r for r in records)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with open_vault(path, "alice", PASSWORDS["alice"]) as v:
        v.members.remove("bob")  # idle vault: it goes through


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("module", ["credvault", "credvault.cli", "sqlcipher3"])
def test_signal_during_start_up_is_one_line(sig: int, module: str, tmp_path: Path) -> None:
    """The console entry point handles signals before its imports: a signal that arrives
    while a given module is being imported (observed, not timed) exits 128+N, one line."""
    import sys

    child = (
        "import builtins, os, sys\n"
        "import credvault.launch\n"
        "real = builtins.__import__\n"
        "def hooked(name, *a, **k):\n"
        f"    if name == {module!r}:\n"
        f"        os.kill(os.getpid(), {int(sig)})\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = hooked\n"
        "sys.argv = ['credvault', 'ls']\n"
        "sys.exit(credvault.launch.main())\n"
    )
    env = dict(os.environ, CREDVAULT_VAULT=str(tmp_path / "none"))
    r = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, check=False
    )
    assert r.returncode == 128 + sig, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("credvault: "), r.stderr


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("committed", [True, False])
def test_damaged_staged_file(
    damage: str, committed: bool, template: tuple[Path, int], tmp_path: Path
) -> None:
    """A staged file the database does not record is only ever deleted, whatever its state;
    a damaged one that it does record is the only copy of a change in force: exit 6, not a
    silent rollback to the older key-slot file."""
    from credvault.errors import IntegrityError

    work = tmp_path / "w"
    fresh_copy(template[0], work, "member_add")
    at = "call:install" if committed else "call:fsync_dir#1"
    assert run_child(work, "member_add", at, 9).code == -9
    (staged,) = [f for f in (work / "vault").iterdir() if f.name.endswith(".staged")]
    data = bytearray(staged.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 3 :]
    staged.write_bytes(bytes(data))
    if committed:
        with pytest.raises(IntegrityError):
            open_vault(work / "vault", "alice", PASSWORDS["alice"])
    else:
        bad = check(work / "vault", OPS["member_add"], work, acknowledged=False, head=template[1])
        assert not bad, bad


# -- "disk I/O error": a full disk or a failing one ------------------------------------------
def test_disk_io_error_is_disk_full_only_when_the_vaults_file_system_is_full(
    small_fs: Path,
) -> None:
    """SQLite reports some ENOSPC (growing its shared-memory index, a sync) as a bare "disk
    I/O error". It is called "disk full" only when the file system holding the file is
    (about) out of space, measured with statvfs there: never because the vault is large,
    never for another file system, and a full disk is never "corrupt" (exit 6)."""
    import sqlcipher3

    from credvault.errors import IntegrityError, StoreError
    from credvault.store import NEARLY_FULL_BYTES, translate

    work = small_fs / "io"
    work.mkdir()
    db = work / "vault.db"
    db.write_bytes(b"\0" * (3 << 20))  # a vault larger than the free space left
    io_error = sqlcipher3.OperationalError("disk I/O error")
    full_error = sqlcipher3.OperationalError("database or disk is full")
    try:
        assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize > NEARLY_FULL_BYTES
        err = translate(io_error, path=db)
        assert type(err) is StoreError
        assert str(err) == f"database: I/O error on {db}", "room left: a failing disk, not full"
        filler = fill(small_fs, NEARLY_FULL_BYTES // 4)
        try:
            for e in (io_error, full_error):
                err = translate(e, path=db)
                assert type(err) is StoreError
                assert not isinstance(err, IntegrityError)
                assert "disk full" in str(err)
                assert str(db) in str(err)
            # a file not yet created, in a directory not yet created (a restore's target)
            err = translate(io_error, "backup", small_fs / "new" / "dir" / "vault.db")
            assert "backup: disk full" in str(err)
            # the full file system is not the one of another file: an I/O error there
            elsewhere = Path(__file__).resolve()
            st = os.statvfs(elsewhere.parent)
            if st.f_bavail * st.f_frsize > NEARLY_FULL_BYTES:
                err = translate(io_error, path=elsewhere)
                assert "disk full" not in str(err), "another file system with room is not full"
        finally:
            filler.unlink()
    finally:
        shutil.rmtree(work)


def test_init_on_a_full_disk_says_so_and_leaves_nothing_that_blocks_a_rerun(
    small_fs: Path, tmp_path: Path
) -> None:
    """``credvault init`` with too little space: exit 1 and one line saying "disk full",
    no vault directory, no recovery file, no temporary file; once there is room, the same
    command succeeds."""
    import sys

    from conftest import KDF_ARG

    pw = tmp_path / "alice.pass"
    pw.write_text(PASSWORDS["alice"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    env.update(
        HOME=str(tmp_path),
        XDG_RUNTIME_DIR=str(tmp_path),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        CREDVAULT_MEMBER="alice",
        CREDVAULT_PASSPHRASE_FILE=str(pw),
    )
    vault, recovery = small_fs / "iv", small_fs / "iv.recovery"
    argv = [sys.executable, "-m", "credvault", "init", "--vault", str(vault), "--kdf", KDF_ARG,
            "--recovery-file", str(recovery)]  # fmt: skip
    failed = 0
    for leave in (0, 4096, 16384, 65536, 131072):
        filler = fill(small_fs, leave)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        finally:
            filler.unlink()
        assert "Traceback" not in r.stderr, r.stderr
        left = sorted(f.name for f in small_fs.iterdir())
        if r.returncode == 0:
            shutil.rmtree(vault)
            recovery.unlink()
            continue
        failed += 1
        assert r.returncode == 1, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "disk full" in r.stderr, r.stderr
        assert left == [], f"a failed init with {leave} bytes free left {left}"
    assert failed, "the smallest free space must make init fail"
    r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(vault)
    recovery.unlink()
