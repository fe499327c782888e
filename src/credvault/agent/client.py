"""The agent's client: standard library only, run before anything heavy is imported.

``credvault get`` / ``ls`` (and the other commands the agent serves) first try the agent:
one connection, one request carrying argv, the working directory and the few environment
variables that choose the vault and the member; the agent parses and runs the command itself
and sends back exit code, stdout and stderr. No agent (no socket): nothing is tried and the
full command line runs as it always did. An agent that died: one line says so and the full
command line runs (the normal unlock). Key material never crosses this path.
"""

from __future__ import annotations

import _socket  # not `socket` (enums, selectors): start-up time matters here
import binascii
import os
import stat
import sys

from credvault.agent.protocol import (
    MAX_REPLY,
    ProtocolError,
    check_private_dir,
    encode,
    peer_uid,
    recv_frame,
    socket_path,
)

TYPE_CHECKING = False  # not `typing`: it costs the fast path several ms (mypy reads it as True)

if TYPE_CHECKING:
    from typing import Any

    from credvault.agent.protocol import Socket

# What the agent may need to resolve the vault and the member exactly as the CLI would.
ENV_KEYS = (
    "CREDVAULT_VAULT",
    "CREDVAULT_MEMBER",
    "CREDVAULT_IDENTITY",
    "XDG_DATA_HOME",
    "HOME",
    "LOGNAME",
    "USER",
    "LNAME",
    "USERNAME",
)
# Commands the agent may serve; it decides (after parsing) and may still say "not me".
SERVED = frozenset(
    [
        "get",
        "ls",
        "put",
        "rm",
        "system",
        "engagement",
        "grant",
        "revoke",
        "audit",
        "info",
        "config",
    ]
)
MAX_STDIN = 1024 * 1024 + 1  # as the CLI: the secret limit plus one byte to notice excess
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 120.0


class AgentGone(Exception):
    """The socket is there but no agent answers (killed, crashed) or it broke off."""


class NoAgent(Exception):
    """No agent socket at all: nothing to say, use the normal path."""


def connect(path: str | os.PathLike[str] | None = None, timeout: float = CONNECT_TIMEOUT) -> Socket:
    """A connection to this user's agent, checked to be ours at both ends."""
    path = os.fspath(path) if path is not None else socket_path()
    try:
        st = os.lstat(path)
    except OSError:
        raise NoAgent from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NoAgent
    problem = check_private_dir(os.path.dirname(path))
    if problem is not None:
        raise AgentGone(f"unsafe agent directory: {problem}")
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        if peer_uid(s) != os.getuid():  # a socket of another user's process: never talk to it
            raise AgentGone("the agent socket belongs to another user")
    except ConnectionRefusedError:
        s.close()
        _remove_stale(path)
        raise AgentGone("no process is listening on its socket") from None
    except FileNotFoundError:
        s.close()
        raise NoAgent from None
    except OSError as e:
        s.close()
        raise AgentGone(e.strerror or type(e).__name__) from None
    except AgentGone:
        s.close()
        raise
    return s


def _remove_stale(path: str) -> None:
    """A socket nobody listens on (its agent was killed): remove it so later commands go
    straight to the normal path. Safe: a live agent renames its socket into place only after
    it listens, so a refused connection means nobody will."""
    try:
        os.unlink(path)
    except OSError:
        return


def call(
    request: dict[str, Any],
    *,
    path: str | os.PathLike[str] | None = None,
    timeout: float = REPLY_TIMEOUT,
) -> dict[str, Any]:
    """One request, one reply. NoAgent: no socket. AgentGone: it did not answer in full."""
    s = connect(path)
    try:
        s.settimeout(timeout)
        s.sendall(encode(request))
        return recv_frame(s, MAX_REPLY)
    except (OSError, ProtocolError) as e:
        raise AgentGone(getattr(e, "strerror", None) or str(e) or type(e).__name__) from None
    finally:
        s.close()


def _write(reply: dict[str, Any]) -> int:
    out = reply.get("stdout")
    err = reply.get("stderr")
    code = reply.get("code")
    if not isinstance(out, str) or not isinstance(err, str) or not isinstance(code, int):
        raise AgentGone("malformed reply")
    data = binascii.a2b_base64(out)
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    return code


def fast_path(argv: list[str]) -> int | None:
    """Run ``argv`` through the agent; None means "use the normal command line"."""
    if os.environ.get("CREDVAULT_NO_AGENT"):
        return None
    first = next((w for w in argv if not w.startswith("-")), None)
    if first not in SERVED:
        return None
    request: dict[str, Any] = {
        "op": "run",
        "argv": argv,
        "cwd": os.getcwd(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }
    try:
        reply = call(request)
        if reply.get("error") == "need-stdin":
            if sys.stdin is None:
                return None
            import io

            if sys.stdin.isatty():  # as the command line does: twice, without echo
                import getpass

                first = getpass.getpass("Secret: ")
                if getpass.getpass("Secret (again): ") != first:
                    sys.stderr.write("credvault: the two secret entries differ\n")
                    return 2
                data = first.encode() + b"\n"  # sent as piped input: one newline removed
            else:
                data = sys.stdin.buffer.read(MAX_STDIN + 1)
            # Whatever happens next, the normal path must still find the input.
            sys.stdin = io.TextIOWrapper(io.BytesIO(data))
            request["stdin"] = binascii.b2a_base64(data, newline=False).decode()
            reply = call(request)
        if reply.get("ok") is True:
            return _write(reply)
    except NoAgent:
        return None
    except AgentGone as e:
        sys.stderr.write(f"credvault: the agent is gone ({e}); unlocking without it\n")
        sys.stderr.flush()
        return None
    message = reply.get("message")
    if reply.get("error") != "fallback" and isinstance(message, str):
        clean = "".join(ch if ch.isprintable() else "?" for ch in message[:300])
        sys.stderr.write(f"credvault: agent: {clean}; unlocking without it\n")
    return None


def status(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The running agent's status (no secrets), or None when there is none."""
    try:
        reply = call({"op": "status"}, path=path, timeout=CONNECT_TIMEOUT)
    except (NoAgent, AgentGone):
        return None
    return reply if reply.get("ok") is True else None


def ensure_running(timeout: float = 15.0) -> dict[str, Any]:
    """This user's agent, started (detached, in its own session) if none answers."""
    import subprocess
    import time

    found = status()
    if found is not None:
        return found
    env = {k: v for k, v in os.environ.items() if k != "CREDVAULT_PASSPHRASE_FILE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "credvault.agent.server"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        env=env,
    )
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        found = status()
        if found is not None:
            return found
        if proc.poll() is not None and proc.returncode != 0:
            found = status()  # lost a race with another starting agent: use that one
            if found is not None:
                return found
            raise AgentGone(f"the agent exited with status {proc.returncode}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AgentGone("the agent did not start in time")


def lock() -> bool:
    """End this user's agent and everything it holds; True if it held any keys."""
    try:
        reply = call({"op": "lock"}, timeout=CONNECT_TIMEOUT * 6)
    except (NoAgent, AgentGone):
        return False
    return reply.get("held") is True
