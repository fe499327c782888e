"""Cost of one membership change (issue 13): ``passwd``, ``member add``, ``member reset``,
``member rm`` (with its receipt and audit key successions, issue 11), ``passwd
--compromised`` (issue 11: new keys, re-key, successions, rotation of an engagement with 100
credentials), and of an open, in-process with the cheapest Argon2id.

``python benchmarks/bench_membership.py [ROUNDS]`` prints the median milliseconds of each.
To compare with another version of credvault, run it with ``PYTHONPATH`` pointing at that
version's ``src`` (``git archive REV src | tar -x -C /tmp/old``); the benchmarks README
records both.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import credvault
from credvault import MIN_KDF, Vault


def _timed(into: list[float], fn: Callable[..., object], *a: object, **kw: object) -> None:
    t = time.perf_counter()
    fn(*a, **kw)
    into.append(time.perf_counter() - t)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    path = Path(tempfile.mkdtemp(prefix="credvault-members-")) / "vault"
    Vault.init(path, "alice", "alice-pass", kdf=MIN_KDF)
    times: dict[str, list[float]] = {
        "open": [],
        "passwd": [],
        "add": [],
        "reset": [],
        "rm": [],
        "passwd_compromised": [],
    }
    with Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF) as v:
        for i in range(5):
            v.members.add(f"m{i}", passphrase=b"pass")
        v.engagements.create("acme-2026", "acme")
        v.credentials.put_many("acme-2026", [(f"c{i}", b"secret") for i in range(100)])
    for i in range(rounds):
        t = time.perf_counter()
        v = Vault.open(path, "alice", "alice-pass", kdf=MIN_KDF)
        times["open"].append(time.perf_counter() - t)
        with v:
            name = f"x{i}"
            _timed(times["passwd"], v.members.passwd, b"alice-pass")
            _timed(times["add"], v.members.add, name, passphrase=b"pass")
            _timed(times["reset"], v.members.reset, name, b"pass2")
            _timed(times["rm"], v.members.remove, name)
            _timed(times["passwd_compromised"], v.members.passwd, b"alice-pass", compromised=True)
    out: dict[str, object] = {k: round(1000 * statistics.median(x), 2) for k, x in times.items()}
    out["credvault"] = str(Path(credvault.__file__).parent)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
