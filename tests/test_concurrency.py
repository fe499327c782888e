"""Several processes on one vault at once (spec §4.6, property 14): every write transaction
is ``BEGIN IMMEDIATE`` with a busy timeout, so concurrent writers wait instead of failing
with "database is locked"; afterwards every value reads back and the audit chain holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORDS, VaultFixture

WORKERS = ("alice", "bob", "alice", "bob")
OPERATIONS = 50

WORKER = r"""
import json, os, sys, time
from pathlib import Path
from credvault import MIN_KDF, Passphrase, Secret, Vault

path, member, password, index, go, n = sys.argv[1:7]
index, n = int(index), int(n)
deadline = time.monotonic() + 60
while not Path(go).exists():  # start together
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.002)
ok, errors, written = 0, [], {}

def unlock():
    return Vault.open(Path(path), member, Passphrase(password), kdf=MIN_KDF)

v = unlock()
try:
    for i in range(n):
        if i and i % 20 == 0:  # unlocking under load too
            v.close()
            v = unlock()
        ref = f"acme-2026/w{index}-{i:03d}"
        value = f"{member}-{index}-{i}-{os.urandom(6).hex()}".encode()
        try:
            v.put(ref, Secret(value), username=f"user{i}")
            got = v.get(ref).secret.reveal()
            shared = v.get("acme-2026/web1-root").secret.reveal()
            if got != value or shared != b"hunter2":
                errors.append(f"{ref}: read back a different value")
            else:
                ok += 1
                written[ref] = value.decode()
        except Exception as e:
            errors.append(f"{ref}: {type(e).__module__}.{type(e).__name__}: {e}")
finally:
    v.close()
print(json.dumps({"ok": ok, "errors": errors, "written": written}))
"""


def test_processes_put_and_get_at_once(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(vault.path),
                member,
                PASSWORDS[member],
                str(i),
                str(go),
                str(OPERATIONS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, member in enumerate(WORKERS)
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err, err.decode()
        assert b"Traceback" not in err, err.decode()
        results.append(json.loads(out))

    for r in results:
        assert r["errors"] == []
        assert r["ok"] == OPERATIONS
    written = {ref: value for r in results for ref, value in r["written"].items()}
    assert len(written) == len(WORKERS) * OPERATIONS

    with vault.open() as v:
        names = {f"{c.engagement}/{c.name}" for c in v.credentials.list(engagement)}
        assert set(written) <= names
        for ref, value in written.items():
            assert v.get(ref).secret.reveal() == value.encode()
        entries = v.audit_entries(engagement=engagement, action="put")
        assert len([e for e in entries if e.outcome == "ok"]) >= len(written)
        assert v.audit_verify() >= 3 * len(written)  # put + 2 gets each, one unbroken chain
        assert v.integrity_check() == []
