"""Crash safety of ``member rm`` (which re-keys the database): a process killed at any point
leaves a vault that every remaining member can open and that holds every secret; the next
open finishes an interrupted re-key.

A child process (the library, driven by a small script) removes bob and is killed:
- deterministically, with ``os._exit`` just before its k-th file-system call (``open``,
  ``write``, ``fsync``, ``replace``, ``unlink`` of the os module) for every k, so that each
  step boundary of the re-key is hit; and
- with SIGKILL at a random tick of SQLite's progress handler (tests/killpoints.py), which
  lands inside SQLite's own work (the transaction dropping bob's grants, the copy into
  ``vault.db.next``). Kill points come from the child's progress, never from a clock.
"""

from __future__ import annotations

import json
import os
import random  # noqa: TID251 - a seeded, reproducible kill schedule; nothing secret
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlcipher3

from conftest import PASSWORDS, Clock, separate_client
from credvault import MIN_KDF, InMemory, NotFound, Vault
from credvault.keyslots import MemberKeys
from killpoints import KILL_HOOK, without_coverage

pytestmark = pytest.mark.fault

CHILD = (
    KILL_HOOK
    + r"""
from credvault import Vault, MIN_KDF

path, mode, arg = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
state = {"events": 0}

def hook(fn):
    def wrapper(*a, **kw):
        if mode == "step" and state["events"] == arg:
            os._exit(137)
        state["events"] += 1
        return fn(*a, **kw)
    return wrapper

if mode in ("step", "count"):
    for name in ("open", "write", "fsync", "replace", "unlink"):
        setattr(os, name, hook(getattr(os, name)))
arm(arg if mode == "sql" else None, "sql")
v.members.remove("bob")
_, ticks = disarm()
n = state["events"]
v.close()
sys.stdout.write(f"DONE {n} {ticks}\n")
sys.stdout.flush()
"""
)

E1, E2 = "acme-2026", "globex-2026"
BULK = 150


@dataclass
class Template:
    path: Path
    secrets: dict[tuple[str, str], bytes]
    keys: dict[str, MemberKeys]
    db_key: bytes
    generation: int


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("rekey-template") / "vault"
    clock = Clock()
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=MIN_KDF, clock=clock)
    secrets: dict[tuple[str, str], bytes] = {}
    keys: dict[str, MemberKeys] = {}
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=MIN_KDF, clock=clock) as v:
        for name in ("bob", "carol", "dave"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create(E1, "acme")
        v.engagements.create(E2, "globex")
        for eng, grants in (
            (E1, {"bob": "engineer", "carol": "reader", "dave": "engineer"}),
            (E2, {"bob": "reader", "dave": "reader"}),
        ):
            for member, role in grants.items():
                v.engagements.grant(eng, member, role)
        v.systems.add(f"{E1}/web1", "10.0.0.1", port=22, details="debian")
        for i in range(5):
            value = f"named-{i}-\u2603".encode()
            v.put(f"{E1}/named-{i}", value, username=f"user{i}", system="web1", notes="n")
            secrets[(E1, f"named-{i}")] = value
        bulk = [(f"bulk-{i:04d}", os.urandom(24)) for i in range(BULK)]
        v.credentials.put_many(E1, bulk)
        secrets.update({(E1, n): b for n, b in bulk})
        for i in range(3):
            v.put(f"{E2}/g-{i}", f"globex-{i}".encode())
            secrets[(E2, f"g-{i}")] = f"globex-{i}".encode()
        keys["alice"] = v._s.keys
        db_key = v._s.db_key
        generation = v._s.slots.generation
    for name in ("bob", "carol", "dave"):
        with Vault.open(path, name, PASSWORDS[name], kdf=MIN_KDF, clock=clock) as v:
            keys[name] = v._s.keys
            v.get(f"{E1}/named-0")
    return Template(path, secrets, keys, db_key, generation)


def _child(script: Path, vault: Path, mode: str, arg: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(script), str(vault), mode, str(arg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a child aimed at a kill point dies without writing coverage data; the counting
        # run measures the whole removal
        env=without_coverage() if mode != "count" else None,
    )


def _db_opens_with(vault: Path, key: bytes) -> bool:
    conn = sqlcipher3.connect(str(vault / "vault.db"))
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError:
        return False
    finally:
        conn.close()
    return True


def _check_after_crash(t: Template, vault: Path, rng: random.Random, what: str) -> bool:
    """Everything the test promises after a kill; returns whether bob is gone."""
    clock = Clock()
    # The first open (by any member who stays, with a passphrase) finishes what was left;
    # whether bob is gone is decided by it (a staged key-slot file the database records is
    # installed), not by the key-slot file as the kill left it.
    first = rng.choice(["alice", "carol", "dave"])
    with Vault.open(vault, first, PASSWORDS[first], kdf=MIN_KDF, clock=clock) as v:
        assert v.member == first
    slots = json.loads((vault / "keyslots.json").read_text())
    remaining = sorted(slots["members"])
    bob_gone = "bob" not in remaining
    assert {"alice", "carol", "dave"} <= set(remaining), what
    assert not [f for f in vault.iterdir() if f.name.endswith(".staged")], what
    assert slots["pending"] is None, what
    assert not (vault / "vault.db.next").exists(), what
    with Vault.open(vault, "alice", InMemory(t.keys["alice"]), kdf=MIN_KDF, clock=clock) as v:
        assert v.integrity_check() == [], what
        assert v.audit_verify() > 0, what
        members = [m.name for m in v.members.list()]
        got: dict[tuple[str, str], bytes] = {}
        for eng in (E1, E2):
            for c in v.credentials.export_engagement(v.engagements.get(eng)):
                got[(eng, c.name)] = c.secret.reveal()
        assert got == t.secrets, what
        assert v.get(f"{E1}/named-3").secret.reveal() == t.secrets[(E1, "named-3")], what
        assert v.get(f"{E1}/named-3").address == "10.0.0.1", what
        if bob_gone:
            assert "bob" not in members, what
            assert v._s.slots.generation == t.generation + 1, what
            assert not _db_opens_with(vault, t.db_key), what
            assert [e.item for e in v.audit_entries(action="member-rm")] == ["bob"], what
        else:
            assert "bob" in members, what
            assert v._s.slots.generation == t.generation, what
    for member in ("carol", "dave"):
        with Vault.open(vault, member, InMemory(t.keys[member]), kdf=MIN_KDF, clock=clock) as v:
            assert v.get(f"{E1}/named-1").secret.reveal() == t.secrets[(E1, "named-1")], what
    if bob_gone:
        with pytest.raises(NotFound):
            Vault.open(vault, "bob", PASSWORDS["bob"], kdf=MIN_KDF, clock=clock)
    else:
        # Interrupted before the key-slot file changed: bob still opens, and removing him
        # again completes the job.
        with Vault.open(vault, "bob", PASSWORDS["bob"], kdf=MIN_KDF, clock=clock) as v:
            assert v.member == "bob"
        with Vault.open(vault, "alice", InMemory(t.keys["alice"]), kdf=MIN_KDF, clock=clock) as v:
            v.members.remove("bob")
            assert v._s.slots.generation == t.generation + 1
            assert v.integrity_check() == []
            got_after = {
                (E2, c.name): c.secret.reveal()
                for c in v.credentials.export_engagement(v.engagements.get(E2))
            }
            assert got_after == {k: b for k, b in t.secrets.items() if k[0] == E2}, what
    return bob_gone


def test_member_rm_survives_kills(template: Template, tmp_path: Path) -> None:
    rng = random.Random(0xC7ED)
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def fresh(i: int) -> Path:
        dst = tmp_path / f"v{i}"
        shutil.copytree(template.path, dst)
        separate_client(dst)
        return dst

    # A full run: how many file-system calls and SQLite progress ticks the removal makes.
    vault = fresh(0)
    p = _child(script, vault, "count", 0)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    lines = out.decode().split()
    assert lines[0] == "DONE"
    steps, ticks = int(lines[1]), int(lines[2])
    assert ticks > 5  # SQLite's own steps are seen, so kills can land inside them
    assert steps >= 8  # key-slot file twice, the new database, the swap
    assert _check_after_crash(template, vault, rng, "completed run")

    kills = 0
    outcomes = {"bob kept": 0, "bob gone": 0}
    # Deterministic: stop just before each file-system call of the removal.
    for k in range(steps):
        vault = fresh(k + 1)
        p = _child(script, vault, "step", k)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 137, (k, out, err.decode())
        kills += 1
        gone = _check_after_crash(template, vault, rng, f"exit before fs call {k}")
        outcomes["bob gone" if gone else "bob kept"] += 1
        if k == 0:
            assert not gone  # nothing was written: the key-slot file still names bob
    # Random: SIGKILL at a random SQLite progress tick of the removal (inside SQLite's writes).
    for i in range(max(16, 30 - steps)):
        vault = fresh(1000 + i)
        tick = rng.randint(1, ticks)
        p = _child(script, vault, "sql", tick)
        _out, err = p.communicate(timeout=120)
        assert p.returncode in (0, -signal.SIGKILL), err.decode()
        if p.returncode == -signal.SIGKILL:
            kills += 1
        gone = _check_after_crash(template, vault, rng, f"SIGKILL at SQLite tick {tick}")
        outcomes["bob gone" if gone else "bob kept"] += 1
    assert kills >= 30
    assert outcomes["bob kept"] > 0
    assert outcomes["bob gone"] > 0
