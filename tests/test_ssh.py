"""``ssh`` in one step against a real OpenSSH server on localhost (tests/sshd_fixture.py).

A key login goes through a private ssh-agent (the key reaches it on ssh-add's stdin with a
lifetime); a password login through the askpass socket. While the password session is open,
the test reads every process's argv and environment on the machine (as root can) looking for
the password; and a process that is not ssh's helper asks the socket and gets nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import VaultFixture
from credvault import AccessDenied, InvalidInput, NotFound, Secret, handoff
from sshd_fixture import DEADLINE, ROOT, Agent, Sshd, keypair, ssh_agent, sshd_server  # noqa: F401

pytestmark = pytest.mark.cli


def add_system(vault: VaultFixture, port: int) -> None:
    with vault.open() as v:
        v.systems.add("acme-2026/box", "127.0.0.1", port=port, protocol="ssh")


def test_key_login_through_the_agent(
    vault: VaultFixture,
    engagement: str,
    sshd: Sshd,
    agent: Agent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    private, public = keypair(tmp_path)
    with sshd.authorized_keys.open("a") as f:
        f.write(public + "\n")
    add_system(vault, sshd.port)
    with vault.open() as v:
        v.credentials.put(
            "acme-2026/box-key", private, kind="ssh-key", username=sshd.user, system="box"
        )
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    with vault.open("bob") as v:
        plan = handoff.plan_ssh(
            v,
            "acme-2026/box",
            [*sshd.client_opts, "echo", "CV-LOGIN-OK", "$(id -un)"],
            reason="T-9",
        )
    assert plan.credential == "acme-2026/box-key"
    assert plan.argv[:6] == ("ssh", "-p", str(sshd.port), "-l", sshd.user, "127.0.0.1")
    assert "Secret(<redacted>)" in repr(plan)
    code = handoff.run_ssh(plan, key_lifetime_s=600)
    out = capfd.readouterr().out
    assert code == 0, (out, (tmp_path / "sshd").exists())
    assert f"CV-LOGIN-OK {sshd.user}" in out
    listed = subprocess.run(
        ["ssh-add", "-L"],
        env={**os.environ, "SSH_AUTH_SOCK": str(agent.sock)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert public.split()[1] in listed  # the key is in the agent ...
    assert "life: 600" in agent.log.read_text()  # ... with the lifetime asked for
    assert not list(tmp_path.rglob("box-key*"))
    with vault.open() as v:
        reads = [e for e in v.audit_entries(engagement="acme-2026") if e.item == "box-key"]
    assert [(e.member, e.action, e.detail) for e in reads if e.member == "bob"] == [
        ("bob", "get", "reason: ssh box: T-9")
    ]


def test_no_agent_is_a_clear_error(
    vault: VaultFixture, engagement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_system(vault, 22)
    with vault.open() as v:
        v.credentials.put("acme-2026/box-key", b"not really a key", kind="ssh-key", system="box")
        plan = handoff.plan_ssh(v, "acme-2026/box")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(handoff.LaunchError, match="no ssh-agent"):
        handoff.run_ssh(plan)


def test_which_credential(vault: VaultFixture, engagement: str) -> None:
    add_system(vault, 2222)
    with vault.open() as v:
        with pytest.raises(NotFound, match="no ssh-key or password credential is linked"):
            handoff.plan_ssh(v, "acme-2026/box")
        with pytest.raises(NotFound):
            handoff.plan_ssh(v, "acme-2026/nosuch")
        v.credentials.put("acme-2026/a", b"pw-a", system="box")
        v.credentials.put("acme-2026/b", b"pw-b", system="box", username="ops")
        v.credentials.put("acme-2026/t", b"tok", kind="token", system="box")
        with pytest.raises(InvalidInput, match=r"several credentials .* \(a, b\)"):
            handoff.plan_ssh(v, "acme-2026/box")
        plan = handoff.plan_ssh(v, "acme-2026/box", ["-v"], credential="b")
        assert plan.argv == ("ssh", "-p", "2222", "-l", "ops", "127.0.0.1", "-v")
        assert plan.secret == Secret(b"pw-b")
        with pytest.raises(InvalidInput, match="is a token"):
            handoff.plan_ssh(v, "acme-2026/box", credential="t")
        with pytest.raises(InvalidInput, match="not linked to system box"):
            handoff.plan_ssh(v, "acme-2026/box", credential="web1-root")


def test_ssh_needs_the_users_reason_where_required(vault: VaultFixture, engagement: str) -> None:
    """ "ssh web1" in the audit detail is not a reason: --require-reason still wants one."""
    add_system(vault, 2222)
    with vault.open() as v:
        v.credentials.put("acme-2026/a", b"pw-a", system="box")
        v.engagements.set_options(engagement, require_reason=True)
        with pytest.raises(AccessDenied, match="requires --reason"):
            handoff.plan_ssh(v, "acme-2026/box")
        assert handoff.plan_ssh(v, "acme-2026/box", reason="T-3").secret == Secret(b"pw-a")
        details = [e.detail for e in v.audit_entries(engagement="acme-2026", action="get")]
    assert details[-1] == "reason: ssh box: T-3"


def scan_processes(needle: bytes) -> list[str]:
    """Every process whose argv or environment holds ``needle`` (root sees them all)."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in (entry / part).read_bytes():
                    hits.append(f"{entry.name}/{part}")
            except OSError:
                pass
    return hits


@pytest.mark.skipif(not ROOT, reason="LOUD SKIP: a non-root sshd cannot check passwords")
def test_password_login_leaves_no_trace(
    vault: VaultFixture,
    engagement: str,
    sshd: Sshd,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert sshd.password is not None
    add_system(vault, sshd.port)
    with vault.open() as v:
        v.credentials.put(
            "acme-2026/box-pw", sshd.password.encode(), username=sshd.user, system="box"
        )
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    rendezvous = Path(tempfile.mkdtemp(prefix="cv-ssh-"))
    rendezvous.chmod(0o1777)
    marker = rendezvous / "logged-in"
    # bounded: if the test dies before removing the marker, the session still ends (60 s)
    remote = (
        f"touch {marker}; i=0; while [ -e {marker} ] && [ $i -lt 1200 ]; "
        "do sleep 0.05; i=$((i + 1)); done; echo CV-PW-OK"
    )
    with vault.open("bob") as v:
        plan = handoff.plan_ssh(
            v, "acme-2026/box", [*sshd.client_opts, "-o", "PubkeyAuthentication=no", remote]
        )
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(handoff.run_ssh(plan)), daemon=True)
    t.start()
    end = time.monotonic() + DEADLINE
    while not marker.exists():
        assert t.is_alive(), capfd.readouterr()
        assert time.monotonic() < end, "the password login did not happen"
        time.sleep(0.05)
    try:
        hits = scan_processes(sshd.password.encode())
    finally:
        marker.unlink()
        t.join(DEADLINE)
        rendezvous.rmdir()
    assert hits == [], hits
    assert result == [0]
    assert "CV-PW-OK" in capfd.readouterr().out


def test_askpass_socket_answers_only_sshs_helper_and_once(tmp_path: Path) -> None:
    """A same-user process that is not the helper ssh started gets nothing from the socket."""
    server = handoff._AskpassServer(Secret(b"pw-socket"))
    with server:
        assert oct(server.dir.stat().st_mode & 0o777) == "0o700"
        assert b"pw-socket" not in server.helper.read_bytes()
        # "ssh" is a child of ours, so we (its parent, not its child) are an outsider to it
        # (pid 1 would not do: a test process that outlives its launcher is pid 1's child)
        other = subprocess.Popen(["sleep", "60"])
        try:
            server.serve_child_of(ssh_pid=other.pid)

            def ask() -> bytes:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(server.socket_path))
                    return s.recv(100)

            assert ask() == b""
        finally:
            other.kill()
            other.wait()
        assert not server.served.is_set()
        # ssh's real helper: a child of the process the server was told about
        server2 = handoff._AskpassServer(Secret(b"pw-socket"))
        with server2:
            env = {**os.environ, "CREDVAULT_ASKPASS_SOCKET": str(server2.socket_path)}
            helper = subprocess.Popen(
                [str(server2.helper), "bob@box's password: "],
                stdout=subprocess.PIPE,
                env=env,
            )
            server2.serve_child_of(ssh_pid=os.getpid())
            out, _ = helper.communicate(timeout=DEADLINE)
            assert out == b"pw-socket\n"
            again = subprocess.run(
                [str(server2.helper), "Password: "], env=env, capture_output=True, timeout=60
            )
            assert again.returncode != 0  # answered once: the socket is gone
            assert again.stdout == b""
    assert not server.dir.exists()
