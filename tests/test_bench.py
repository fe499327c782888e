"""The benchmarks' smoke run: each script in benchmarks/ runs with ``--quick`` as a user runs
it (a subprocess, the test's Python) and prints its figures.

This keeps the benchmarks working through refactors: they use only credvault's public API
and the one documented test seam (``credvault._bench_seam``), and this test fails when any
of that changes under them. Figures are not judged here (tests make no timing assertions);
only that every section ran and printed numbers. Peer tools that are missing must be reported
as skipped, never silently dropped. Deselect with ``-m 'not bench'``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VaultFixture
from credvault._bench_seam import append_audit_entries

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"\d[\d,]*(\.\d+)? (ms|s|/s)\b|\d+\.\d+x")


def _run(script: str, *args: str) -> str:
    # Not under coverage: the figures would measure the tracer, and the benchmarks are no
    # part of the package whose coverage is held.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "== Summary" in p.stdout
    assert "judged targets met" in p.stdout
    return p.stdout


def _section(out: str, title: str) -> str:
    """The text of the section whose title starts with ``title``."""
    parts = out.split("\n== ")
    found = [p for p in parts if p.startswith(title)]
    assert found, f"no section {title!r} in:\n{out[-3000:]}"
    return found[0]


def test_bench_library_quick() -> None:
    out = _run("bench_library.py")
    for title in (
        "Argon2id: one passphrase derivation",
        "put and get at 50 vs 200 credentials",
        "revoke with key rotation, member removal (re-key), purge: 200 credentials",
        "durable audited get and audit verify",
        "opening a vault when nothing is due",
        "revoke with key rotation, member removal (re-key), purge: 2,000-entry",
    ):
        assert FIGURE.search(_section(out, title)), title
    assert re.search(r"audit verify of [\d,]+ entries\s+\d+\.\d+ s", out)
    assert re.search(r"get/s at 200 \(durable audit entry each\)\s+[\d,]+ /s", out)


def test_bench_cli_quick() -> None:
    out = _run("bench_cli.py")
    floors = _section(out, "start-up floors and `credvault get`")
    for row in ("python -c pass", "get, identity file", "get, passphrase file, DEFAULT_KDF"):
        assert re.search(rf"^{re.escape(row)}\s+1\s+\d+\.\d+", floors, re.M), row
    assert FIGURE.search(_section(out, "Argon2id at the members' parameters"))
    split = _section(out, "`credvault get` without a KDF")
    assert re.search(r"Vault\.open \(unlock, SQLCipher open, checks\)\s+\d+\.\d+ ms", split)
    keyring = _section(out, "`credvault get` unlocked from the OS keyring")
    assert "skipped:" in keyring or re.search(r"^get, keyring\s+1\s+\d", keyring, re.M)


def test_compare_quick() -> None:
    out = _run("compare.py", "--no-keyring")
    reads = _section(out, "whole-process read of one secret")
    assert re.search(r"^credvault get \(passphrase file\)\s+1\s+\d", reads, re.M)
    stores = _section(out, "the stores")
    for tool, row in (("pass", "pass"), ("keepassxc-cli", "keepassxc-cli (aes-kdf)")):
        if shutil.which(tool):
            assert re.search(rf"^{re.escape(row)}\s+1\s+\d", reads, re.M), row
        else:
            assert f"SKIPPED {tool}" in stores, tool
    assert FIGURE.search(_section(out, "bulk insert of 200 credentials"))
    assert FIGURE.search(_section(out, "in-process read latency"))
    assert FIGURE.search(_section(out, "floors"))
    assert "targets (issue 7)" in out


def test_bench_records_quick() -> None:
    out = _run("bench_records.py")
    assert FIGURE.search(_section(out, "find over"))
    assert FIGURE.search(_section(out, "get with"))
    imp = _section(out, "import of")
    assert "SKIPPED" in imp if shutil.which("keepassxc-cli") is None else FIGURE.search(imp)


def test_bench_memberlog_quick() -> None:
    out = _run("bench_memberlog.py")
    assert FIGURE.search(_section(out, "get, grant, revoke"))
    assert FIGURE.search(_section(out, "open with a long membership log"))


def test_bench_terminal_quick() -> None:
    out = _run("bench_terminal.py")
    part = _section(out, "clipboard and TOTP, whole process, against pass")
    if shutil.which("Xvfb") is None or shutil.which("xclip") is None:
        assert "SKIPPED" in part
        return
    for row in ("credvault get -c (identity)", "credvault otp (identity)"):
        assert re.search(rf"^\s+{re.escape(row)}\s+1\s+\d+\.\d+", part, re.M), row
    if shutil.which("pass"):
        assert re.search(r"^\s+pass -c\s+1\s+\d", part, re.M)
        assert "credvault get -c (identity) / pass -c" in part
    else:
        assert "SKIPPED pass" in part


def test_bench_agent_quick() -> None:
    out = _run("bench_agent.py")
    reads = _section(out, "Whole-process read of one secret")
    assert re.search(r"^\s+credvault get \(agent\)\s+1\s+\d+\.\d+", reads, re.M)
    if shutil.which("pass"):
        assert "credvault get via the agent / pass show" in reads
    assert re.search(r"\d+ /s", _section(out, "Aggregate gets/s"))
    assert re.search(r"VmRSS after unlock\s+\d+\.\d MiB", _section(out, "Agent memory"))


def test_seam_appends_entries_the_audit_trail_verifies(vault: VaultFixture) -> None:
    """The benchmarks' one seam writes real audit entries: chained, MACed, by the vault's
    member, in order; `audit verify` accepts them."""
    with vault.open() as v:
        before = v.audit_verify()
        added = append_audit_entries(
            v, [("get", None, f"c{i}") for i in range(250)], per_transaction=100
        )
        assert added == 250
        assert v.audit_verify() >= before + 250  # (verify audits itself too)
        items = [e.item for e in v.audit_entries(action="get")]
        assert items[-250:] == [f"c{i}" for i in range(250)]
        assert {e.member for e in v.audit_entries(action="get")} == {v.member}


def test_bench_retention_quick() -> None:
    out = _run("bench_retention.py")
    for title in ("1. shred of", "2. credvault check", "3. backup of", "4. restore consulting"):
        assert FIGURE.search(_section(out, title)), title
    assert "complete at return:" in _section(out, "1. shred of")


def test_bench_witness_quick() -> None:
    out = _run("bench_witness.py")
    assert FIGURE.search(_section(out, "1. durable audited get, witness advanced vs not"))
    assert FIGURE.search(_section(out, "2. one witness-file replace"))


@pytest.mark.postgres
def test_bench_postgres_quick() -> None:
    """issue 14's figures: every line printed, with its load average and the CPU split."""
    from pg_cluster import _bindir

    if _bindir() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_postgres.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for label in ("Unix socket ", "TCP localhost", "TLS verify-full", "credvault.Team get"):
        line = next(x for x in p.stdout.splitlines() if label in x and "p50" in x)
        assert FIGURE.search(line), line
    clients = next(x for x in p.stdout.splitlines() if " client processes, " in x)
    assert int(clients.split()[0]) > 1, clients  # the concurrent path (16 in a full run)
    assert re.search(r"audited reads/s .*load \d+\.\d+ .*server \d+\.\d+ ms .*~[\d,]+/s", clients)
    # every round judged together: the median, the range, how many met the target
    for path in ("Unix socket", "credvault.Team over TCP"):
        assert re.search(rf"  {path}: median [\d,]+ reads/s over 1 rounds .* of 1 at", p.stdout)
    whole = next(x for x in p.stdout.splitlines() if x.startswith("whole-process"))
    assert re.search(r"ratio \d+\.\d+x wall, \d+\.\d+x CPU", whole), whole


@pytest.mark.postgres
def test_bench_pg_many_quick() -> None:
    """section pinmany's cost: each multi-row read timed against a second schema (here the
    same tree's, as ``--against HEAD``), with the rows each released."""
    from pg_cluster import _bindir

    if _bindir() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_pg_many.py"), "--quick",
         "--against", "HEAD"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for label in ("find (fields)", "client export", "rotation's read"):
        line = next(x for x in p.stdout.splitlines() if x.startswith(label))
        assert re.search(
            r"this tree \d+\.\d ms \((\d+) rows\), HEAD \d+\.\d ms \(\1 rows\); ratio", line
        ), line
