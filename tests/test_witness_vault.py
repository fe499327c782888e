"""The member's witness wired into the vault (issue 11, property 7): rollback of the whole
directory, a fork between two copies, committed transactions lost to a flipped WAL bit after
kill -9 (real SQLCipher), concurrent processes of one member with another member writing (no
false alarm), the agent keeping the witness, and the audited ``witness accept``.

Each test has its own ``$XDG_STATE_HOME`` (conftest ``state_home``); CLI subprocesses share it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import IntegrityError, Vault
from credvault import witness as wt
from killpoints import wait_until

ENG = "acme-2026"
REF = f"{ENG}/web1-root"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _open(vault: VaultFixture, member: str = "alice", path: Path | None = None) -> Vault:
    return Vault.open(path or vault.path, member, PASSWORDS[member], kdf=KDF, clock=vault.clock)


def _setup(vault: VaultFixture) -> None:
    with _open(vault) as v:
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "engineer")
        v.put(REF, b"v1")


def _witnessed(vault: VaultFixture, member: str = "alice") -> wt.Witness:
    with _open(vault, member) as v:
        keeper = v._witness
        assert keeper is not None
        w = keeper.load()
    assert w is not None
    return w


def _head(vault: VaultFixture) -> int:
    with _open(vault) as v:
        return v.audit.checkpoint().position


def _slots(state_home: Path, member: str) -> list[Path]:
    """The member's witness slot files (``<name>.json``, ``<name>.b.json``)."""
    return sorted((state_home / "credvault").glob(f"witness-*-{member}-*.json"))


def _audit_seen(state_home: Path) -> int:
    """alice's witnessed audit position, from the newer slot (read as JSON) and the journal
    beside it (its records' first 8 bytes), unverified."""
    docs = [json.loads(f.read_text()) for f in _slots(state_home, "alice")]
    seen = int(max(docs, key=lambda d: d["gen"])["chains"]["audit"][0])
    for journal in (state_home / "credvault").glob("witness-*-alice-*.journal"):
        data = journal.read_bytes()
        for i in range(0, len(data) - wt.RECORD + 1, wt.RECORD):
            seen = max(seen, int.from_bytes(data[i : i + 8], "big"))
    return seen


# -- what it catches ---------------------------------------------------------------------------
def test_the_witness_lives_outside_the_vault_and_follows_every_get(
    vault: VaultFixture, state_home: Path
) -> None:
    _setup(vault)
    assert _slots(state_home, "alice")
    assert not any(p.name.startswith("witness") for p in vault.path.iterdir())
    before = _witnessed(vault).marks["audit"].seq
    with _open(vault) as v:
        v.get(REF)
        v.get(REF)
        head = v.audit.checkpoint()
    assert _witnessed(vault).marks["audit"] == wt.Mark(head.position, bytes.fromhex(head.mac))
    assert head.position >= before + 2


def test_rollback_of_the_directory_names_the_missing_entries(
    vault: VaultFixture, tmp_path: Path
) -> None:
    _setup(vault)
    at_copy = _head(vault)
    old = tmp_path / "old"
    shutil.copytree(vault.path, old)  # (opening the copy would make it a fork, not older)
    with _open(vault) as v:
        v.put(REF, b"v2")
        v.get(REF)
    _open(vault, "bob").close()  # bob saw the vault after that too
    seen = _witnessed(vault).marks["audit"].seq
    shutil.rmtree(vault.path)
    shutil.copytree(old, vault.path)
    with pytest.raises(IntegrityError) as e:
        _open(vault)
    assert f"audit entries {at_copy + 1}–{seen} are missing" in str(e.value)
    assert "witness accept" in str(e.value)
    # another member's own witness catches it too, from what they saw
    with pytest.raises(IntegrityError, match="rollback or fork detected for bob"):
        _open(vault, "bob").close()


def test_a_fork_between_two_copies_is_refused(
    vault: VaultFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of one vault that each went on: the one alice did not follow is a fork,
    although it is now ahead of what she saw."""
    _setup(vault)
    other = tmp_path / "other"
    shutil.copytree(vault.path, other)
    with _open(vault) as v:  # alice goes on in the first copy
        v.put(REF, b"v2-first-copy")
    seen = _witnessed(vault).marks["audit"].seq
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "bobs-machine"))
    for i in range(5):  # bob, on another machine, goes on in the other copy
        with _open(vault, "bob", other) as v:
            v.put(f"{ENG}/bob-{i}", b"x")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with pytest.raises(IntegrityError, match=rf"audit entry {seen} differs .* forked"):
        _open(vault, path=other)
    _open(vault).close()  # the copy alice followed is still fine


def test_an_ahead_vault_is_fine_and_another_members_writes_never_alarm(
    vault: VaultFixture,
) -> None:
    _setup(vault)
    for _ in range(3):
        with _open(vault, "bob") as v:
            v.put(f"{ENG}/by-bob", b"x")
        with _open(vault) as v:
            assert v.get(REF).secret.reveal() == b"v1"


def test_a_forged_witness_file_is_refused(vault: VaultFixture, state_home: Path) -> None:
    _setup(vault)
    for f in _slots(state_home, "alice"):  # both slots: one bad slot is taken as torn
        d = json.loads(f.read_text())
        d["chains"]["audit"][0] = 1  # "alice saw only entry 1": would hide a rollback
        f.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="witness file does not verify"):
        _open(vault)
    assert Vault.accept_witness(vault.path, "alice", PASSWORDS["alice"], kdf=KDF)
    _open(vault).close()


def test_a_deleted_witness_starts_afresh(
    vault: VaultFixture, state_home: Path, tmp_path: Path
) -> None:
    """What the witness cannot do (docs/security.md): a client without one accepts anything,
    then follows the vault from there."""
    _setup(vault)
    old = tmp_path / "old"
    shutil.copytree(vault.path, old)
    with _open(vault) as v:
        v.put(REF, b"v2")
    for f in (state_home / "credvault").glob("witness-*"):
        f.unlink()
    shutil.rmtree(vault.path)
    shutil.copytree(old, vault.path)
    with _open(vault) as v:
        assert v.get(REF).secret.reveal() == b"v1"  # the rollback goes unnoticed
        head = v.audit.checkpoint().position
    assert _witnessed(vault).marks["audit"].seq >= head


def test_temporary_copies_of_backups_do_not_touch_the_witness(
    vault: VaultFixture, tmp_path: Path
) -> None:
    """``check FILE`` opens a private copy of an older backup: neither refused nor recorded."""
    _setup(vault)
    with _open(vault) as v:
        file, _ = v.backups.create(tmp_path / "b")
        v.put(REF, b"v2")
    before = _witnessed(vault)
    report = Vault.check_at(file, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock)
    assert report.problems == []
    assert _witnessed(vault).marks == before.marks


# -- silent loss: a flipped bit in the WAL after kill -9 ---------------------------------------
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from credvault import MIN_KDF, Vault
    path, marker = Path(sys.argv[1]), Path(sys.argv[2])
    v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
    v.put("acme-2026/web1-root", b"v2-committed")
    marker.write_text("committed")
    sys.stdin.read()  # killed here, the vault still open: the WAL is not checkpointed
    """
)


@pytest.mark.fault
def test_a_flipped_wal_bit_after_kill_loses_commits_and_the_witness_says_so(
    vault: VaultFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite ends the log at the first frame whose checksum fails: the transactions from
    there on vanish, ``get`` returns the previous secret and the audit chain verifies. Only
    the witness, advanced after each commit, notices."""
    _setup(vault)
    with _open(vault) as v:  # where alice's witness is, to read it while the child runs
        keeper = v._witness
        assert keeper is not None
        path, key, vid = keeper.path, keeper.key, v._s.vault_id
        before = v.audit.checkpoint().position
    assert not (vault.path / "vault.db-wal").exists()  # checkpointed at the last close
    marker = tmp_path / "committed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(vault.path), str(marker)],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
        start_new_session=True,
    )
    try:
        wait_until(lambda: marker.exists() or child.poll() is not None, what="the put")
        assert child.poll() is None, "the child ended before committing"
        w = wt.load(path, key, vid, "alice")
        assert w is not None
        seen = w.marks["audit"].seq
        assert seen > before  # the put's entry, witnessed once committed
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdin is not None
        child.stdin.close()
    wal = vault.path / "vault.db-wal"
    off = _first_frame(wal)
    with wal.open("r+b") as f:
        f.seek(off + 100)
        b = f.read(1)
        f.seek(off + 100)
        f.write(bytes([b[0] ^ 0x01]))

    with pytest.raises(IntegrityError) as e:
        _open(vault)
    span = (
        f"audit entry {seen} is" if seen == before + 1 else f"audit entries {before + 1}–{seen} are"
    )
    assert f"{span} missing" in str(e.value)

    # the same vault to a client that never saw it: silently the older secret, chain intact
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "fresh-client"))
    with _open(vault) as v:
        assert v.get(REF).secret.reveal() == b"v1"
        assert v.audit_verify() > 0


def _first_frame(wal: Path) -> int:
    """Offset of the page data of the WAL's first frame (after the 32-byte header and the
    frame's 24-byte header): everything the killed child committed follows it."""
    data = wal.read_bytes()
    page = int.from_bytes(data[8:12], "big")
    assert len(data) >= 32 + 24 + page, "the WAL holds no frame"
    return 32 + 24


# -- concurrency: no false alarm -----------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from credvault import MIN_KDF, Vault
    path, member, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    last = 0
    for i in range(n):
        with Vault.open(path, member, member + "-pass", kdf=MIN_KDF) as v:
            if member == "alice":
                v.get("acme-2026/web1-root")
                v.get("acme-2026/web1-root")
                last = v.audit.checkpoint().position  # what this process saw (admin only)
            else:
                v.put(f"acme-2026/by-{member}-{i % 3}", b"x")
    print(last)
    """
)


@pytest.mark.fault
def test_concurrent_processes_of_one_member_and_another_writing_never_alarm(
    vault: VaultFixture, tmp_path: Path
) -> None:
    """Four processes of alice reading (each read appends) while bob writes, with the other
    core kept busy: no process sees exit 6, and alice's witness ends at or past the last
    position any of her processes saw (it never moved backward)."""
    _setup(vault)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        env = {**os.environ, "PYTHONPATH": SRC}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(vault.path), who, "8"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for who in ("alice", "alice", "alice", "alice", "bob")
        ]
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        busy.kill()
        busy.wait()
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"rollback" not in err
    seen_by_alice = max(int(out) for p, (out, _) in zip(procs[:4], results[:4], strict=True))
    assert _witnessed(vault).marks["audit"].seq >= seen_by_alice


# -- the agent keeps the witness ---------------------------------------------------------------
@pytest.mark.cli
def test_the_agent_advances_the_witness_and_refuses_a_rollback_beneath_it(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = Path(cli_env["CREDVAULT_VAULT"])
    r = cli_vault("put", f"{ENG}/db", input=b"s3cret\n")
    assert r.code == 0, r.err
    old = tmp_path / "old"
    shutil.copytree(path, old)
    r = cli_vault("unlock")
    assert r.code == 0, r.err
    before = _audit_seen(Path(cli_env["XDG_STATE_HOME"]))
    for _ in range(3):
        r = cli_vault("get", f"{ENG}/db", env={"CREDVAULT_PASSPHRASE_FILE": ""})
        assert (r.code, r.out) == (0, b"s3cret\n"), r.err
    after = _audit_seen(Path(cli_env["XDG_STATE_HOME"]))
    assert after >= before + 3  # each get served by the agent was witnessed
    for f in path.iterdir():  # put back under the running agent, as an insider would
        if f.is_file():
            f.unlink()
    for f in old.iterdir():
        shutil.copy2(f, path / f.name)
    r = cli_vault("get", f"{ENG}/db")
    assert r.code == 6, (r.code, r.out, r.err)
    assert "rollback or fork detected for alice" in r.err
    assert r.out == b""
    cli_vault("lock")


# -- the accept command --------------------------------------------------------------------------
@pytest.mark.cli
def test_witness_accept_shows_what_is_lost_is_audited_and_resets(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = Path(cli_env["CREDVAULT_VAULT"])
    r = cli_vault("put", f"{ENG}/db", input=b"v1\n")
    assert r.code == 0, r.err
    old = tmp_path / "old"
    shutil.copytree(path, old)
    for v in (b"v2\n", b"v3\n"):
        r = cli_vault("put", f"{ENG}/db", input=v)
        assert r.code == 0, r.err
    shutil.rmtree(path)
    shutil.copytree(old, path)

    r = cli_vault("get", f"{ENG}/db")
    assert (r.code, r.out) == (6, b"")
    assert len(r.err.strip().splitlines()) == 1
    assert "are missing: the vault is older than this client last saw" in r.err
    assert "run 'credvault witness accept'" in r.err

    r = cli_vault("witness", "accept")  # no terminal, no --yes: nothing changes
    assert r.code == 2
    assert "--yes" in r.err
    assert cli_vault("get", f"{ENG}/db").code == 6

    r = cli_vault("witness", "accept", "--yes")
    assert r.code == 0, r.err
    assert "not in this vault: audit entries" in r.text
    assert "audited as witness-accept" in r.text
    r = cli_vault("get", f"{ENG}/db")
    assert (r.code, r.out) == (0, b"v1\n")
    r = cli_vault("audit", "--json", "--action", "witness-accept")
    (entry,) = json.loads(r.out)
    assert entry["member"] == "alice"
    assert entry["detail"].startswith("accepted as it is (audit behind: seen ")

    r = cli_vault("witness", "accept", "--yes")
    assert r.code == 0
    assert "nothing to accept" in r.text
    r = cli_vault("audit", "--json", "--action", "witness-accept")
    assert len(json.loads(r.out)) == 1  # nothing written when there is nothing to accept


# -- the journal: what a read costs the witness ---------------------------------------------------
def test_reads_append_one_journal_record_each_and_never_rewrite_the_file(
    vault: VaultFixture, state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The get path's witness write is one 72-byte record appended to the journal; the
    MACed file is rewritten only when the journal is folded into it (here after 4 records),
    and a rollback of entries witnessed only in the journal is still refused."""
    _setup(vault)
    monkeypatch.setattr(wt, "JOURNAL_FOLD", 4 * wt.RECORD)
    files = {f: f.read_bytes() for f in _slots(state_home, "alice")}
    (journal,) = (state_home / "credvault").glob("witness-*-alice-*.journal")
    with _open(vault) as v:
        size = journal.stat().st_size
        for i in range(1, 4):
            v.get(REF)
            assert journal.stat().st_size == size + i * wt.RECORD
            assert {f: f.read_bytes() for f in files} == files  # the file untouched
        head = v.audit.checkpoint()
        assert _witnessed(vault).marks["audit"] == wt.Mark(head.position, bytes.fromhex(head.mac))
        sizes = [journal.stat().st_size]
        for _ in range(4):
            v.get(REF)
            sizes.append(journal.stat().st_size)
        assert min(sizes) < wt.RECORD  # folded into the file (and emptied) once
        assert max(sizes) <= 4 * wt.RECORD
        assert {f: f.read_bytes() for f in files} != files
        head = v.audit.checkpoint()
    assert _witnessed(vault).marks["audit"] == wt.Mark(head.position, bytes.fromhex(head.mac))


def test_entries_witnessed_only_in_the_journal_are_missed_after_a_rollback(
    vault: VaultFixture, state_home: Path, tmp_path: Path
) -> None:
    _setup(vault)
    old = tmp_path / "old"
    shutil.copytree(vault.path, old)
    files = {f: f.read_bytes() for f in _slots(state_home, "alice")}
    with _open(vault) as v:
        at_copy = v.audit.checkpoint().position - 1  # this open's own reads come after it
        for _ in range(3):
            v.get(REF)
        seen = v.audit.checkpoint().position
    assert {f: f.read_bytes() for f in files} == files  # only the journal knows
    shutil.rmtree(vault.path)
    shutil.copytree(old, vault.path)
    with pytest.raises(IntegrityError, match=rf"audit entries {at_copy + 1}–{seen} are missing"):
        _open(vault)


def test_a_torn_journal_record_is_folded_away_and_the_witness_stays_right(
    vault: VaultFixture, state_home: Path
) -> None:
    """A crash mid-append leaves a partial record: the next append sees the journal out of
    step with the record size and folds it (with its own position) into the file."""
    _setup(vault)
    (journal,) = (state_home / "credvault").glob("witness-*-alice-*.journal")
    with _open(vault) as v:
        v.get(REF)
        with journal.open("ab") as f:
            f.write(b"\x01" * 30)  # what a write cut short leaves
        v.get(REF)
        assert journal.stat().st_size % wt.RECORD == 0
        v.get(REF)
        head = v.audit.checkpoint()
    assert _witnessed(vault).marks["audit"] == wt.Mark(head.position, bytes.fromhex(head.mac))


def test_two_processes_appending_fold_by_the_journals_real_length(
    vault: VaultFixture, state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each appender learns the journal's length from its own append, so records of other
    processes count toward the fold: the journal stays near its fold size however many
    processes read."""
    _setup(vault)
    monkeypatch.setattr(wt, "JOURNAL_FOLD", 4 * wt.RECORD)
    (journal,) = (state_home / "credvault").glob("witness-*-alice-*.journal")
    with _open(vault) as one, _open(vault) as two:
        for _ in range(12):
            one.get(REF)
            two.get(REF)
            assert journal.stat().st_size <= 6 * wt.RECORD
        head = two.audit.checkpoint()
    assert _witnessed(vault).marks["audit"] == wt.Mark(head.position, bytes.fromhex(head.mac))
