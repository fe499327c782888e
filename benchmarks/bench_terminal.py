"""Whole-process figures of the at-the-terminal commands (issue 17), against pass.

    python benchmarks/bench_terminal.py [--quick] [--runs N]

On a private Xvfb display (real ``xclip``), one round-robin run of:

* ``credvault get -c ENG/NAME`` against ``pass -c NAME`` (both copy, start their clearer and
  exit; clear time 600 s so no clear happens during the run);
* ``credvault otp ENG/NAME`` against ``pass otp NAME`` (pass-extension-otp, which runs
  oathtool), and both with ``-c``;
* ``credvault get`` and ``pass show`` as the reference without a clipboard.

credvault is unlocked the fast ways a daily user has: a service identity file (no Argon2id;
``CREDVAULT_IDENTITY``), and a passphrase file at the cheapest Argon2id (``MIN_KDF``) for
scale. pass decrypts with a no-passphrase GnuPG key through a warm gpg-agent. With the key
agent of issue 16 merged, its row is the one to read (``credvault agent`` not present here:
the script says so). Medians with min and max; machine load printed with the figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import Figures, Stats, machine, note, print_stats, ratio
from benchmarks.peers.passstore import GnupgHome
from credvault import MIN_KDF, Vault, totp

PY = sys.executable
SCRIPT = Path(PY).parent / "credvault"
SEED = base64.b32encode(os.urandom(20)).decode().rstrip("=")
CLIP_SECONDS = "600"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    r, w = os.pipe()
    p = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as f:
        return p, ":" + f.readline().strip()


def run_once(argv: Sequence[str], env: Mapping[str, str], stdin: bytes | None = None) -> float:
    """One whole process; stdout/stderr to /dev/null, not pipes as ``_report.run_once`` has
    them: a clipboard tool's forked server (pass runs xclip with its own stderr) would hold
    a pipe open until the selection changes hands."""
    start = time.perf_counter()
    p = subprocess.run(
        list(argv),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(env),
        check=False,
    )
    elapsed = (time.perf_counter() - start) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"{list(argv)!r} exited {p.returncode}")
    return elapsed


def round_robin(
    rows: Sequence[tuple[str, Sequence[str], Mapping[str, str]]], runs: int, warmup: int = 1
) -> list[tuple[str, Stats]]:
    samples: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _ in range(warmup):  # caches, gpg-agent, pyc files
        for _name, argv, env in rows:
            run_once(argv, env)
    for _ in range(runs):
        for name, argv, env in rows:
            samples[name].append(run_once(argv, env))
    return [(name, Stats.of(samples[name])) for name, _, _ in rows]


def clearers(display: str) -> list[int]:
    """The clipboard clearers left sleeping on our display (ours to end, by pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"DISPLAY={display}".encode() in environ and (
            b"credvault clipboard clearer" in cmdline or b"password store sleep" in cmdline
        ):
            found.append(int(entry.name))
    return found


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, no warm-up, nothing judged"
    )
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    runs = 1 if args.quick else args.runs
    machine("credvault bench_terminal (issue 17)", "quick" if args.quick else f"{runs} rounds")
    figures = Figures(judged=not args.quick)
    figures.section("clipboard and TOTP, whole process, against pass")
    missing = [t for t in ("Xvfb", "xclip") if shutil.which(t) is None]
    if missing:
        note(f"SKIPPED: {', '.join(missing)} missing (apt-get install xvfb xclip)")
        figures.summary()
        return 0
    xvfb, display = start_xvfb()
    tmp = Path(tempfile.mkdtemp(prefix="cvterm-"))
    gpg = None
    try:
        vault = tmp / "vault"
        Vault.init(vault, "alice", "alice-pass", kdf=MIN_KDF)
        with Vault.open(vault, "alice", "alice-pass", kdf=MIN_KDF) as v:
            v.members.add("svc", identity_file=tmp / "svc.key")
            v.engagements.create("bench", "bench")
            v.engagements.grant("bench", "svc", "reader")
            v.credentials.put("bench/web1", b"pw-" + os.urandom(12).hex().encode())
            v.credentials.put("bench/portal-otp", totp.to_uri(SEED, "bench:portal"))
        (tmp / "alice.pass").write_text("alice-pass\n")
        base = {k: val for k, val in os.environ.items() if not k.startswith("CREDVAULT_")}
        base.update(
            DISPLAY=display,
            HOME=str(tmp),
            CREDVAULT_VAULT=str(vault),
            CREDVAULT_CLIP_TIME=CLIP_SECONDS,
            PASSWORD_STORE_CLIP_TIME=CLIP_SECONDS,
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        ident = {**base, "CREDVAULT_IDENTITY": str(tmp / "svc.key")}
        pw = {
            **base,
            "CREDVAULT_MEMBER": "alice",
            "CREDVAULT_PASSPHRASE_FILE": str(tmp / "alice.pass"),
        }
        cv = str(SCRIPT)
        rows: list[tuple[str, Sequence[str], Mapping[str, str]]] = [
            ("credvault get (identity)", [cv, "get", "bench/web1"], ident),
            ("credvault get -c (identity)", [cv, "get", "-c", "bench/web1"], ident),
            ("credvault get -c (passphrase, MIN_KDF)", [cv, "get", "-c", "bench/web1"], pw),
            ("credvault otp (identity)", [cv, "otp", "bench/portal-otp"], ident),
            ("credvault otp -c (identity)", [cv, "otp", "-c", "bench/portal-otp"], ident),
        ]
        if shutil.which("pass") and shutil.which("gpg"):
            gpg = GnupgHome(tmp)
            penv = {**base, "GNUPGHOME": gpg.env["GNUPGHOME"], "PASSWORD_STORE_DIR": str(tmp / "s")}
            for cmd, data in (
                (["init", gpg.fingerprint], None),
                (["insert", "-m", "web1"], b"pw\n"),
            ):
                subprocess.run(
                    ["pass", *cmd], input=data, env=penv, check=True, capture_output=True
                )
            rows += [
                ("pass show", ["pass", "show", "web1"], penv),
                ("pass -c", ["pass", "show", "-c", "web1"], penv),
            ]
            if Path("/usr/lib/password-store/extensions/otp.bash").exists():
                subprocess.run(
                    ["pass", "otp", "insert", "portal-otp"],
                    input=f"otpauth://totp/bench:portal?secret={SEED}\n".encode(),
                    env=penv,
                    check=True,
                    capture_output=True,
                )
                rows += [
                    ("pass otp", ["pass", "otp", "portal-otp"], penv),
                    ("pass otp -c", ["pass", "otp", "-c", "portal-otp"], penv),
                ]
            else:
                note("SKIPPED pass otp: pass-extension-otp not installed")
        else:
            note(
                "SKIPPED pass: pass or gpg not installed (apt-get install pass pass-extension-otp)"
            )
        stats = round_robin(rows, runs, 0 if args.quick else 1)
        print_stats(stats, baselines=["credvault get (identity)"], indent="   ")
        by = dict(stats)
        for ours, theirs in (
            ("credvault get -c (identity)", "pass -c"),
            ("credvault otp (identity)", "pass otp"),
            ("credvault otp -c (identity)", "pass otp -c"),
        ):
            if theirs in by:
                figures.add(
                    f"{ours} / {theirs} (median, same run)",
                    f"{ratio(by[ours].median, by[theirs].median):.2f}x",
                )
        figures.add(
            "credvault get -c (identity), median",
            f"{by['credvault get -c (identity)'].median:.1f} ms",
        )
        figures.add(
            "credvault otp (identity), median", f"{by['credvault otp (identity)'].median:.1f} ms"
        )
    finally:
        for pid in clearers(display):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if gpg is not None:
            gpg.kill()
        xvfb.terminate()
        xvfb.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    figures.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
