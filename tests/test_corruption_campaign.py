"""Bit flips and truncations of every vault file (issue 13, item 6), judged through the CLI.

The damaged vault is a realistic one: besides ``vault.db`` and ``keyslots.json`` it has a
write-ahead log and its index (an acknowledged ``put`` whose writer was killed before it
closed, so the commit lives only in ``vault.db-wal``), a staged key-slot file (a ``member
add`` killed between its COMMIT and the rename), the purge ledger (an engagement shredded),
a failed unlock waiting to be imported, a backup file, an exported purge receipt and, in
the runtime directory, a file where the agent's socket would be. Each trial damages one
file (one bit flipped at an offset spread over it or at a structural spot, or the file cut
short) in a fresh copy, then runs real ``credvault`` commands on it as alice and bob.

Every command must either give the same result as on the undamaged vault (the damage is
harmless: a byte nothing reads, an index SQLite rebuilds, a ledger line a signature
rejects) or exit 6 with one line on stderr: never a wrong secret, never a traceback, never
exit 1. The one exception is physical, and counted apart: a flipped bit in the write-ahead
log fails SQLite's frame checksum, and SQLite then treats that frame and every later one as
never written (it cannot tell a flipped bit from a torn write), so the vault opens at an
earlier commit, consistent and verified, without the acknowledged ``put`` (exit 3 for it).
One answer other than 6 is by design and counted apart too: a backup cut to nothing is
"not a credvault backup" (exit 1), never reported valid. (A receipt damaged into something
that is no longer JSON is "NOT verified", exit 6, like any altered receipt.)

By default a small deterministic sample runs; ``CREDVAULT_FAULT_CAMPAIGN=full`` damages
every file at ``CREDVAULT_FAULT_POINTS`` (default 30) flip offsets plus the structural
ones and 8 truncation lengths, and appends a table to ``CREDVAULT_FAULT_REPORT`` if set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from credvault import write_receipt
from fault_ops import PASSWORDS, fresh_copy, make_template, open_vault
from killpoints import points, run_child

pytestmark = pytest.mark.fault

FULL = os.environ.get("CREDVAULT_FAULT_CAMPAIGN") == "full"
N_FLIPS = int(os.environ.get("CREDVAULT_FAULT_POINTS", "30"))
ACKED = b"pw-acknowledged"
WAL_PUT = (
    "import os, signal, sys\n"
    "from pathlib import Path\n"
    "from fault_ops import open_vault, PASSWORDS\n"
    "v = open_vault(Path(sys.argv[1]), 'alice', PASSWORDS['alice'])\n"
    f"v.credentials.put('acme-2026/acked', {ACKED!r})\n"
    "print('ACK', flush=True)\n"
    "os.kill(os.getpid(), signal.SIGKILL)  # before close: the commit stays in the WAL\n"
)


@dataclass(frozen=True)
class Template:
    root: Path  # work dir: vault/, backups/, receipt.json
    public_key: str
    backup: str  # its file name


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("corrupt")
    vault = root / "vault"
    make_template(vault)
    with open_vault(vault, "alice", PASSWORDS["alice"]) as v:
        v.backups.create(root / "backups")
        # the ledger file, and a receipt to export
        write_receipt(root / "receipt.json", v.purger.shred("gone-2026"))
        public_key = v.info().public_key
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    r = subprocess.run(
        [sys.executable, "-c", WAL_PUT, str(vault)], capture_output=True, env=env, check=False
    )
    assert r.stdout == b"ACK\n", r.stderr
    assert run_child(root, "member_add", "call:install", 9).code == -9
    (vault / "failed-unlocks.log").write_text("2026-01-01T00:00:00.000000Z bob\n")
    names = {f.name for f in vault.iterdir()}
    for name in ("vault.db-wal", "vault.db-shm", "purge-ledger.jsonl", "failed-unlocks.log"):
        assert name in names, names
    assert any(n.endswith(".staged") for n in names), names
    (backup,) = [f.name for f in (root / "backups").glob("*.cvb")]
    return Template(root, public_key, backup)


@pytest.fixture(scope="module")
def env(template: Template) -> Iterator[dict[str, str]]:
    run = Path(tempfile.mkdtemp(prefix="cv-corrupt-", dir="/tmp"))
    home = template.root / "home"
    home.mkdir(exist_ok=True)
    e = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    e.update(
        XDG_RUNTIME_DIR=str(run),
        HOME=str(home),
        XDG_CACHE_HOME=str(home / "cache"),
        CREDVAULT_MEMBER="alice",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    for name in ("alice", "bob"):
        f = template.root / f"{name}.pass"
        f.write_text(PASSWORDS[name] + "\n")
        f.chmod(0o600)
    try:
        yield e
    finally:
        shutil.rmtree(run, ignore_errors=True)


# -- what each damaged file is judged by ------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    member: str
    args: tuple[str, ...]
    stdout: bytes | None  # None: any output (a check's report), only the exit status counts


def _vault_probes(t: Template, work: Path) -> list[Probe]:
    return [
        Probe("alice", ("get", "acme-2026/acked"), ACKED + b"\n"),
        Probe("bob", ("get", "acme-2026/web1-root"), b"hunter2\n"),
        Probe("alice", ("check",), None),
    ]


def _backup_probes(t: Template, work: Path) -> list[Probe]:
    return [Probe("alice", ("check", str(work / "backups" / t.backup)), None)]


def _receipt_probes(t: Template, work: Path) -> list[Probe]:
    args = ("verify-receipt", "--public-key", t.public_key, str(work / "receipt.json"))
    return [Probe("alice", args, None)]


# file label -> (how to find it in a trial's work dir, what judges it)
Judge = Callable[[Template, Path], list[Probe]]
FILES: dict[str, tuple[Callable[[Path, Template], Path], Judge]] = {
    "vault.db": (lambda w, t: w / "vault" / "vault.db", _vault_probes),
    "vault.db-wal": (lambda w, t: w / "vault" / "vault.db-wal", _vault_probes),
    "vault.db-shm": (lambda w, t: w / "vault" / "vault.db-shm", _vault_probes),
    "keyslots.json": (lambda w, t: w / "vault" / "keyslots.json", _vault_probes),
    "staged key slots": (
        lambda w, t: next((w / "vault").glob("*.staged")),
        _vault_probes,
    ),
    "purge-ledger.jsonl": (lambda w, t: w / "vault" / "purge-ledger.jsonl", _vault_probes),
    "failed-unlocks.log": (lambda w, t: w / "vault" / "failed-unlocks.log", _vault_probes),
    "vault.lock": (lambda w, t: w / "vault" / "vault.lock", _vault_probes),
    "backup": (lambda w, t: w / "backups" / t.backup, _backup_probes),
    "receipt": (lambda w, t: w / "receipt.json", _receipt_probes),
}


# The default run's sample: (kind, where as a function of the file's size).
SAMPLE: dict[str, list[tuple[str, Callable[[int], int]]]] = {
    "vault.db": [("flip", lambda n: 4096 * 3 + 300), ("cut", lambda n: n // 2)],
    "vault.db-wal": [("flip", lambda n: n // 2)],
    "keyslots.json": [("flip", lambda n: n // 2), ("cut", lambda n: n - 1)],
    "staged key slots": [("flip", lambda n: n // 3)],
    "backup": [("flip", lambda n: n // 2)],
    "receipt": [("flip", lambda n: n // 2)],
}


def _damages(label: str, size: int) -> list[tuple[str, int]]:
    """(kind, where) pairs: ("flip", byte offset), ("cut", new length) or ("grow", 0)."""
    if size == 0:  # (vault.lock) nothing to flip: add bytes, then a cut is a no-op
        return [("grow", 0)]
    if not FULL:
        return [(kind, at(size)) for kind, at in SAMPLE[label]]
    structural = {0, 1, 16, 24, 31, 32, 40, 56, 100, size - 1}
    if label in ("vault.db", "vault.db-wal", "vault.db-shm"):
        structural |= {p * 4096 + d for p in range(1, size // 4096) for d in (0, 200, 4095)}
    flips = sorted({o for o in structural if 0 <= o < size} | set(points(size, N_FLIPS)))
    cuts = sorted({0, 1, 16, size // 3, size // 2, size - 1, max(0, size - 4096), size - 17})
    return [("flip", o) for o in flips] + [("cut", n) for n in cuts if 0 <= n < size]


def _damage(path: Path, kind: str, where: int) -> None:
    data = bytearray(path.read_bytes())
    if kind == "flip":
        data[where] ^= 1 << (where % 8)
    elif kind == "cut":
        del data[where:]
    else:
        data += os.urandom(64)
    path.write_bytes(bytes(data))


def _copy(t: Template, work: Path) -> None:
    fresh_copy(t.root, work)  # vault/ and backups/
    shutil.copy2(t.root / "receipt.json", work / "receipt.json")


def _run(env: dict[str, str], work: Path, t: Template, p: Probe) -> tuple[int, bytes, str]:
    e = dict(
        env,
        CREDVAULT_VAULT=str(work / "vault"),
        CREDVAULT_MEMBER=p.member,
        CREDVAULT_PASSPHRASE_FILE=str(t.root / f"{p.member}.pass"),
        # each working copy is its own client: to one client the copies of one template
        # would be forks of each other (the member's witness, issue 11)
        XDG_STATE_HOME=str(work / "state"),
    )
    r = subprocess.run(
        [sys.executable, "-m", "credvault", *p.args],
        capture_output=True,
        env=e,
        timeout=120,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        check=False,
    )
    return r.returncode, r.stdout, r.stderr.decode("utf-8", "replace")


def _judge(p: Probe, code: int, out: bytes, err: str, label: str) -> tuple[str, str | None]:
    """("same" | "detected" | "wal-tail" | "empty" | "bad", violation or None)."""
    if "Traceback" in err:
        return "bad", f"traceback: {err[-300:]}"
    if code == 0 and (p.stdout is None or out == p.stdout):
        return "same", None
    if code == 6:
        lines = err.strip().splitlines()
        if len(lines) == 1 and lines[0].startswith("credvault: ") and not out:
            return "detected", None
        # `check` is a report: its findings on stdout, one stderr line per problem found
        if p.stdout is None and lines and all(x.startswith("credvault: ") for x in lines):
            return "detected", None
        return "bad", f"exit 6 but stderr {err!r} / stdout {out!r}"
    if label == "backup" and code == 1 and err.endswith("is not a credvault backup\n"):
        return "empty", None  # cut to nothing: no byte says it was a backup (test_backup.py)
    if label == "vault.db-wal" and code == 3 and p.args == ("get", "acme-2026/acked"):
        return "wal-tail", None  # SQLite dropped the log from the flipped frame on (see above)
    return "bad", f"exit {code}, stdout {out[:80]!r}, stderr {err.strip()[-200:]!r}"


def test_the_undamaged_vault_passes_every_probe(template: Template, env: dict[str, str]) -> None:
    """The baseline: without damage every probe gives its expected result (so a probe that
    exits 6 below does so because of the damage)."""
    work = template.root.parent / "undamaged"
    _copy(template, work)
    probes = {p for _where, judge in FILES.values() for p in judge(template, work)}
    for p in sorted(probes, key=repr):
        code, out, err = _run(env, work, template, p)
        assert (code, err) == (0, ""), (p, err)
        assert p.stdout is None or out == p.stdout, (p, out)
    shutil.rmtree(work)


@pytest.mark.parametrize("label", sorted(FILES) if FULL else sorted(SAMPLE))
def test_damaged_file_is_harmless_or_exit_6(
    label: str, template: Template, env: dict[str, str], tmp_path: Path
) -> None:
    where, probes = FILES[label]
    size = where(template.root, template).stat().st_size
    damages = _damages(label, size)
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    for kind, at in damages:
        work = tmp_path / "w"
        _copy(template, work)
        _damage(where(work, template), kind, at)
        seen = []
        for p in probes(template, work):
            code, out, err = _run(env, work, template, p)
            verdict, problem = _judge(p, code, out, err, label)
            seen.append(verdict)
            if problem:
                bad.append(f"{label} {kind}@{at}/{size} {p.member} {' '.join(p.args)}: {problem}")
        order = ("bad", "wal-tail", "empty", "not-json", "detected")
        outcomes[next((o for o in order if o in seen), "harmless")] += 1
        shutil.rmtree(work)
    report = os.environ.get("CREDVAULT_FAULT_REPORT")
    if report:
        with Path(report).open("a") as f:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            f.write(f"| {label} | flip/cut | {len(damages)} | {len(bad)} | {detail} |\n")
    assert not bad, bad


def test_garbage_where_the_agent_socket_would_be(
    template: Template, env: dict[str, str], tmp_path: Path
) -> None:
    """The agent keeps no state on disk: its socket replaced by a file of garbage (or the
    socket directory's lock file damaged) sends commands down the normal path, unchanged."""
    work = tmp_path / "w"
    _copy(template, work)
    sock_dir = Path(env["XDG_RUNTIME_DIR"]) / "credvault"
    sock_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        (sock_dir / "agent.sock").write_bytes(os.urandom(256))
        (sock_dir / "agent.lock").write_bytes(os.urandom(64))
        for p in _vault_probes(template, work)[:2]:
            code, out, err = _run(env, work, template, p)
            assert (code, err) == (0, ""), (p, err)
            assert out == p.stdout
    finally:
        shutil.rmtree(sock_dir)


def test_damage_is_judged_by_real_failures(template: Template, env: dict[str, str]) -> None:
    """The judge is not blind: a flipped byte in a page every open reads, and a key-slot file
    cut in half, each make the probes exit 6 with one line."""
    for label, kind, at in (("vault.db", "flip", 200), ("keyslots.json", "cut", 100)):
        work = template.root.parent / f"judge-{label}"
        _copy(template, work)
        _damage(FILES[label][0](work, template), kind, at)
        p = _vault_probes(template, work)[0]
        code, out, err = _run(env, work, template, p)
        assert _judge(p, code, out, err, label) == ("detected", None), (label, code, err)
        shutil.rmtree(work)
