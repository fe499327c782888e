"""Concurrent writers never produce a false integrity error (issue 13, item 2).

Worker processes mix put/get/grant/revoke/rotate on two engagements they all lead while an
admin process churns members (add, passwd, reset, rm). Every process counts operations, not
seconds; afterwards: no IntegrityError (exit 6) anywhere, every acknowledged put is there,
integrity and audit checks pass. ``CREDVAULT_CHURN_OPS`` raises the per-worker count (the
2-minute figure is ``benchmarks/bench_churn.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from credvault import MIN_KDF, Vault

pytestmark = pytest.mark.fault

ENGS = ("acme-2026", "beta-2026")
WORKER = r"""
import json, sys
from pathlib import Path
from credvault import MIN_KDF, Vault
from credvault.errors import CredvaultError, IntegrityError
path, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ops = ["put", "get", "grant", "put", "revoke", "rotate", "put", "get"]
engs = ["acme-2026", "beta-2026"]
acked, errors = [], {}
for i in range(n):
    op, eng = ops[(i + len(who)) % len(ops)], engs[i % 2]
    try:
        with Vault.open(path, who, who + "-pass", kdf=MIN_KDF, auto_purge=False) as v:
            if who == "alice":  # the churner
                name = f"temp{i}"
                v.members.add(name, passphrase=b"temp-pass")
                v.members.passwd(b"alice-pass")
                v.members.reset(name, b"temp-pass-2")
                v.members.remove(name)
            elif op == "put":
                v.credentials.put(f"{eng}/{who}-{i}", b"v")
                acked.append(f"{eng}/{who}-{i}")
            elif op == "get" and acked:
                v.credentials.get(acked[-1])
            elif op == "grant":
                v.engagements.grant(eng, "reader1", "reader")
            elif op == "revoke":
                v.engagements.revoke(eng, "reader1")
            elif op == "rotate":
                v.engagements.rotate(eng)
    except IntegrityError as e:
        errors["IntegrityError: " + str(e)[:80]] = errors.get("IntegrityError", 0) + 1
    except CredvaultError as e:
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
print(json.dumps({"acked": acked, "errors": errors}))
"""


def test_mixed_writers_and_membership_churn(tmp_path: Path) -> None:
    n = int(os.environ.get("CREDVAULT_CHURN_OPS", "6"))
    path = tmp_path / "vault"
    Vault.init(path, "alice", "alice-pass", kdf=MIN_KDF)
    workers = ["w1", "w2", "w3"]
    with Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF) as v:
        for w in [*workers, "reader1"]:
            v.members.add(w, passphrase=f"{w}-pass".encode())
        for eng in ENGS:
            v.engagements.create(eng, "client")
            for w in workers:
                v.engagements.grant(eng, w, "lead")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(path),
                who,
                str(n if who != "alice" else max(1, n // 5)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in [*workers, "alice"]
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    integrity = [k for r in results for k in r["errors"] if k.startswith("IntegrityError")]
    assert not integrity, integrity
    with Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF) as v:
        assert v.integrity_check() == []
        assert v.audit_verify() > 0
        for r in results:
            for ref in r["acked"]:
                assert v.credentials.get(ref).secret.reveal() == b"v", ref
        assert {m.name for m in v.members.list()} == {"alice", *workers, "reader1"}
