"""pass (password-store) and gopass peers, on a throwaway GnuPG home."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.peers import (
    WRITTEN_SECRET,
    Command,
    Peer,
    entry_name,
    read_index,
    secret_for,
    skip,
    which,
)

# ed25519 signing key with a cv25519 encryption subkey and no passphrase:
# key generation takes well under a second and decryption needs no pinentry.
_KEY_PARAMS = """\
%no-protection
Key-Type: eddsa
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ecdh
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Real: credvault peer bench
Name-Email: peer-bench@credvault.invalid
Expire-Date: 0
%commit
"""

# gpg-agent's socket lives in GNUPGHOME when /run/user/$UID does not exist,
# and a Unix socket path is limited to 107 bytes.
_MAX_GNUPGHOME = 80


def _run(argv: list[str], env: Mapping[str, str], stdin: bytes | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=dict(env), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {proc.returncode}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


class GnupgHome:
    """A GnuPG home with one fresh no-passphrase key; kill() stops its agent."""

    def __init__(self, tmp: Path) -> None:
        home = tmp / "gnupg"
        self.outside_tmp = len(str(home)) > _MAX_GNUPGHOME
        if self.outside_tmp:
            home = Path(tempfile.mkdtemp(prefix="cvpg-"))
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        _run(["gpg", "--batch", "--gen-key"], self.env, _KEY_PARAMS.encode())
        out = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], self.env)
        self.fingerprint = next(
            line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")
        )
        # Start the agent now so the first timed decrypt does not pay for it.
        _run(["gpgconf", "--launch", "gpg-agent"], self.env)

    def kill(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, check=False)
        if self.outside_tmp:
            shutil.rmtree(self.home, ignore_errors=True)


def _fill_store(store: Path, n: int, gpg: GnupgHome) -> None:
    """Write n pass entries with one `gpg --encrypt-files` process.

    Same gpg options as pass's own cmd_insert (-e -r KEY --no-encrypt-to
    --compress-algo=none), so the files are what `pass insert` would write.
    """
    plain = []
    for i in range(n):
        path = store / entry_name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret_for(i) + "\n")
        plain.append(str(path))
    try:
        _run(
            [
                "gpg",
                "--batch",
                "--yes",
                "--quiet",
                "--no-encrypt-to",
                "--compress-algo=none",
                "-r",
                gpg.fingerprint,
                "--encrypt-files",
                "--",
                *plain,
            ],
            gpg.env,
        )
    finally:
        for p in plain:
            Path(p).unlink(missing_ok=True)


def _make_store(tmp: Path, n: int) -> tuple[GnupgHome, dict[str, str], float, str]:
    """GnuPG home + key, `pass init`, n entries: (gpg, env, seconds, note)."""
    start = time.perf_counter()
    gpg = GnupgHome(tmp)
    keyed = time.perf_counter()
    env = {**gpg.env, "PASSWORD_STORE_DIR": str(tmp / "store")}
    try:
        _run(["pass", "init", gpg.fingerprint], env)
        _fill_store(tmp / "store", n, gpg)
    except BaseException:
        gpg.kill()
        raise
    end = time.perf_counter()
    note = (
        f"ed25519/cv25519 key + agent start {keyed - start:.2f} s, "
        f"init + {n} entries via gpg --encrypt-files {end - keyed:.2f} s"
    )
    return gpg, env, end - start, note


def setup_pass(tmp: Path, n: int) -> Peer | None:
    if which("pass") is None or which("gpg") is None:
        skip("pass: install with `apt-get install pass gnupg`")
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    gpg, env, setup_s, note = _make_store(tmp, n)
    i = read_index(n)
    return Peer(
        name="pass",
        show=lambda name: Command(["pass", "show", name], env),
        write=Command(
            ["pass", "insert", "-m", "-f", "bench/written"], env, f"{WRITTEN_SECRET}\n".encode()
        ),
        read_entry=entry_name(i),
        expected=secret_for(i),
        written_entry="bench/written",
        setup_s=setup_s,
        notes=[note],
        cleanup=gpg.kill,
    )


def gopass_flavour() -> str | None:
    """'gopasspw', 'aviau' (Debian's `gopass` package), 'unknown', or None."""
    if which("gopass") is None:
        return None
    env = {**os.environ, "GOPASS_NO_NOTIFY": "true"}
    run = subprocess.run(
        ["gopass", "--version"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=10,
        check=False,
    )
    text = (run.stdout + run.stderr).decode(errors="replace")
    if "flag provided but not defined" in text:
        return "aviau"  # aviau/gopass: plain Go `flag` parsing, no --version
    if run.returncode == 0 and re.search(r"gopass\S*\s+(version\s+)?v?\d+\.\d+", text):
        return "gopasspw"
    return "unknown"


def setup_gopass(tmp: Path, n: int) -> Peer | None:
    flavour = gopass_flavour()
    if flavour is None:
        skip(
            "gopass: gopasspw/gopass is not packaged in Debian 12 (its `gopass` "
            "package is aviau/gopass); install gopasspw's release to include it"
        )
        return None
    if flavour != "gopasspw":
        skip(
            f"gopass: the `gopass` on PATH is {flavour}/gopass "
            "(Debian's package), not gopasspw/gopass"
        )
        return None
    if which("gpg") is None:
        skip("gopass: install with `apt-get install gnupg`")
        return None
    # gopasspw reads a pass-format store: reuse pass's layout, with gopass's
    # config kept under tmp. Not exercised on Debian 12 (not packaged there),
    # so verify_read() in the caller is what vouches for it.
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "gopass-home"
    home.mkdir(exist_ok=True)
    start = time.perf_counter()
    gpg = GnupgHome(tmp)
    store = tmp / "store"
    env = {
        **gpg.env,
        "GOPASS_HOMEDIR": str(home),
        "PASSWORD_STORE_DIR": str(store),
        "GOPASS_NO_NOTIFY": "true",
        "GOPASS_NO_REMINDER": "true",
    }
    try:
        _run(
            [
                "gopass",
                "--yes",
                "init",
                "--crypto",
                "gpgcli",
                "--storage",
                "fs",
                "--path",
                str(store),
                gpg.fingerprint,
            ],
            env,
        )
        _fill_store(store, n, gpg)
    except BaseException:
        gpg.kill()
        raise
    setup_s = time.perf_counter() - start
    i = read_index(n)
    counter = itertools.count()
    return Peer(
        name="gopass",
        show=lambda name: Command(["gopass", "show", "-o", name], env),
        write=Command(
            lambda: ["gopass", "insert", "-f", f"bench/written-{next(counter)}"],
            env,
            f"{WRITTEN_SECRET}\n".encode(),
        ),
        read_entry=entry_name(i),
        expected=secret_for(i),
        written_entry="bench/written-0",
        setup_s=setup_s,
        notes=["gopasspw on a pass-format store (fs storage, gpg crypto)"],
        cleanup=gpg.kill,
    )
