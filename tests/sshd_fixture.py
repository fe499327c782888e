"""A real OpenSSH server on a free localhost port, started by the test, and a private agent.

As root (CI) the server runs as root, as sshd must to check passwords, and the login is an
unprivileged user the fixture creates (and removes); as another user, sshd runs as that user
with its own host key and config, and only key logins can be tested (a non-root sshd cannot
check passwords: those tests skip loudly).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
SSH_TOOLS = [shutil.which(t) for t in ("ssh", "ssh-agent", "ssh-add", "ssh-keygen")]
MISSING = SSHD is None or None in SSH_TOOLS
SKIP_REASON = (
    "LOUD SKIP: OpenSSH server/client missing (Debian openssh-server, openssh-client; "
    ".ci/system-deps.sh)"
)
ROOT = os.geteuid() == 0
DEADLINE = 60.0


@dataclass
class Sshd:
    port: int
    user: str
    password: str | None  # None: a non-root sshd cannot check passwords
    client_opts: list[str]  # pinned host key, no user config: pass after `--`
    authorized_keys: Path
    owner_uid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        assert proc.poll() is None, "sshd exited at start"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        assert time.monotonic() < end, "sshd did not start listening"
        time.sleep(0.05)


@pytest.fixture(scope="module", name="sshd")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if MISSING:
        pytest.skip(SKIP_REASON)
    assert SSHD is not None
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")],
        check=True,
        timeout=60,
    )
    created = None
    if ROOT:
        user = "cvssh" + secrets.token_hex(3)
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", user], check=True, timeout=60
        )
        created = user
        password: str | None = "pw-" + secrets.token_urlsafe(18)
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n".encode(), check=True, timeout=60)
        pw = pwd.getpwnam(user)
        ssh_dir = Path(pw.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.touch(mode=0o600)
        os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
        os.chown(authorized, pw.pw_uid, pw.pw_gid)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        keys_line = "AuthorizedKeysFile .ssh/authorized_keys"
        owner = pw.pw_uid
    else:
        user = pwd.getpwuid(os.getuid()).pw_name
        password = None
        authorized = d / "authorized_keys"
        authorized.touch(mode=0o600)
        keys_line = f"AuthorizedKeysFile {authorized}"
        owner = os.getuid()
    port = free_port()
    (d / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host'}",
                f"PidFile {d / 'sshd.pid'}",
                keys_line,
                f"AllowUsers {user}",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    log = (d / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log
    )
    try:
        wait_for_port(port, proc)
        host_pub = (d / "host.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        opts = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={d / 'known_hosts'}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=30",
        ]
        yield Sshd(port, user, password, opts, authorized, owner)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        if created:
            subprocess.run(
                ["userdel", "--remove", created], check=False, timeout=60, stderr=subprocess.DEVNULL
            )


@dataclass
class Agent:
    sock: Path
    log: Path


@pytest.fixture(name="agent")
def ssh_agent(tmp_path: Path) -> Iterator[Agent]:
    """A private ssh-agent in debug mode (its log shows each key's lifetime)."""
    if MISSING:
        pytest.skip(SKIP_REASON)
    sock = tmp_path / "agent.sock"
    log_path = tmp_path / "agent.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(["ssh-agent", "-d", "-a", str(sock)], stdout=log, stderr=log)
    end = time.monotonic() + DEADLINE
    while not sock.exists():
        assert proc.poll() is None, "ssh-agent exited at start"
        assert time.monotonic() < end, "ssh-agent did not start"
        time.sleep(0.02)
    try:
        yield Agent(sock, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def keypair(d: Path, name: str = "id") -> tuple[bytes, str]:
    """A fresh ed25519 key: (private key bytes, public key line)."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "credvault-test",
            "-f",
            str(d / name),
        ],
        check=True,
        timeout=60,
    )
    private = (d / name).read_bytes()
    (d / name).unlink()  # the test holds it in memory only, as the vault will
    return private, (d / f"{name}.pub").read_text().strip()
