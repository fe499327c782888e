"""Hand secrets to other programs without argv, files or the terminal: ``run`` and ``ssh``.

``run``: a command gets the named secrets in its environment only (its own, not the
caller's); each read is audited with the command's name before the user's reason (the name is no reason:
an engagement that requires one still needs ``--reason``); its exit status is
passed through; with ``mask`` its output is filtered so the secrets never reach the terminal.

``ssh``: the system's address and port and the credential linked to it are read in one
audited read. An SSH private key goes to the user's ssh-agent through ``ssh-add -t``'s stdin
(never a file) for a limited lifetime. A password goes to ssh through ``SSH_ASKPASS``: a
small helper that fetches it from a one-shot UNIX socket held by this process, which
answers only a process of the same user whose parent is the ssh we started, and only once.
The password is therefore in no argv, no environment, no file and never on the terminal.

The vault is closed before the child runs: the plan functions read, the run functions handoff.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from credvault.errors import CredvaultError, InvalidInput, NotFound
from credvault.secret import Secret

if TYPE_CHECKING:
    from credvault.vault import Vault

__all__ = [
    "FIELDS",
    "EnvSpec",
    "LaunchError",
    "SshPlan",
    "find_command",
    "mask_stream",
    "parse_env_spec",
    "plan_ssh",
    "read_env",
    "run_command",
    "run_ssh",
]

FIELDS = ("secret", "username", "address", "port", "url", "notes")
SSH_KINDS = ("ssh-key", "password")
MASK = b"*****"
MIN_MASKED = 4  # shorter values (a port, "root") would garble output and hide nothing
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class LaunchError(CredvaultError):
    """A helper program (ssh, ssh-add, the command) could not be started or failed (exit 1)."""


# -- run ------------------------------------------------------------------------------------
class EnvSpec(NamedTuple):
    """``VAR=ENG/NAME[:field]``: which value goes into which environment variable."""

    var: str
    ref: str
    field: str


def parse_env_spec(text: str) -> EnvSpec:
    var, sep, rest = text.partition("=")
    if not sep or not _ENV_VAR.match(var):
        raise InvalidInput("invalid --env: expected VAR=ENGAGEMENT/NAME[:FIELD]")
    ref, _, field = rest.partition(":")
    field = field or "secret"
    if field not in FIELDS:
        raise InvalidInput(f"invalid --env field {field!r}: expected one of {', '.join(FIELDS)}")
    from credvault import validate

    validate.ref(ref)
    return EnvSpec(var, ref, field)


def command_reason(argv: Sequence[str], reason: str | None = None) -> str:
    """The audit reason of a ``run``: the command's name (and the user's own reason)."""
    from credvault import validate

    reason = validate.reason(reason)  # the user's part is checked as any --reason is
    cmd = "".join(ch if ch.isprintable() else "?" for ch in Path(argv[0]).name)[:64]
    return (f"run {cmd}" + (f": {reason}" if reason else ""))[:200]  # validate.reason's limit


def read_env(
    vault: Vault, specs: Sequence[EnvSpec], argv: Sequence[str], reason: str | None = None
) -> dict[str, Secret]:
    """Read each credential once and pick the fields: one audited ``get`` per credential
    whose secret is wanted, one ``show`` (the secret not decrypted) per credential of which
    only other fields are, so ``revoke`` does not ask to change a secret never read."""
    if not argv:
        raise InvalidInput("no command to run: give it after --")
    seen: set[str] = set()
    for s in specs:
        if s.var in seen:
            raise InvalidInput(f"--env {s.var} given twice")
        seen.add(s.var)
    via = command_reason(argv)  # in the audit detail; only the user's reason is a reason
    secret_refs = {s.ref for s in specs if s.field == "secret"}
    creds = {
        ref: vault.credentials.get(ref, reason=reason, via=via)
        for ref in dict.fromkeys(s.ref for s in specs)
        if ref in secret_refs
    }
    system_refs = {s.ref for s in specs if s.field in ("address", "port")}
    others = {
        ref: vault.credentials.fields(ref, reason=reason, system=ref in system_refs, via=via)
        for ref in dict.fromkeys(s.ref for s in specs)
        if ref not in secret_refs
    }
    out: dict[str, Secret] = {}
    for s in specs:
        if s.field == "secret":
            value = creds[s.ref].secret
        else:
            v = getattr(creds[s.ref], s.field) if s.ref in creds else others[s.ref][s.field]
            if v is None:
                raise NotFound("field", f"{s.ref} {s.field}", f"{s.ref} has no {s.field}")
            value = Secret(str(v))
        if b"\0" in value.reveal():
            raise InvalidInput(f"{s.ref} holds a NUL byte: it cannot go into an environment")
        out[s.var] = value
    return out


def mask_stream(src: BinaryIO, dst: BinaryIO, secrets: Sequence[bytes]) -> None:
    """Copy ``src`` to ``dst`` with every secret replaced by ``*****``, across chunk edges.

    A tail shorter than the longest secret is held back until more arrives (or EOF), so a
    secret split over two reads is still caught.
    """
    values = sorted({s for s in secrets if len(s) >= MIN_MASKED}, key=len, reverse=True)
    keep = max((len(v) for v in values), default=1) - 1
    buf = b""
    while True:
        chunk = src.read1(65536) if hasattr(src, "read1") else src.read(65536)
        if chunk:
            buf += chunk
        for v in values:
            buf = buf.replace(v, MASK)
        if not chunk:
            dst.write(buf)
            dst.flush()
            return
        if len(buf) > keep:
            cut = len(buf) - keep
            dst.write(buf[:cut])
            dst.flush()
            buf = buf[cut:]


def find_command(argv: Sequence[str]) -> str:
    """The program ``argv`` would run, or the shell's 127/126 error before anything is read."""
    if not argv:
        raise InvalidInput("no command to run: give it after --")
    exe = shutil.which(argv[0])
    if exe is None:
        if "/" in argv[0] and Path(argv[0]).exists():
            raise _Exit(126, f"command not executable: {argv[0]}")
        raise _Exit(127, f"command not found: {argv[0]}")
    return exe


def run_command(argv: Sequence[str], env_secrets: dict[str, Secret], *, mask: bool = False) -> int:
    """Run ``argv`` with the secrets added to a copy of this environment; its exit status.

    A command killed by a signal gives 128 + the signal number, as a shell reports it; one
    that cannot be found gives 127 and one that cannot be executed 126, as ``env`` does.
    """
    env = {os.fsencode(k): v for k, v in os.environb.items()}
    env.update({k.encode(): v.reveal() for k, v in env_secrets.items()})
    values = [v.reveal() for v in env_secrets.values()] if mask else []
    pipe = subprocess.PIPE if mask else None
    try:
        child = subprocess.Popen(list(argv), env=env, stdout=pipe, stderr=pipe)
    except FileNotFoundError:
        raise _Exit(127, f"command not found: {argv[0]}") from None
    except PermissionError:
        raise _Exit(126, f"command not executable: {argv[0]}") from None
    del env
    pumps = []
    if mask:
        assert child.stdout is not None
        assert child.stderr is not None
        for src, dst in ((child.stdout, sys.stdout.buffer), (child.stderr, sys.stderr.buffer)):
            t = threading.Thread(target=mask_stream, args=(src, dst, values), daemon=True)
            t.start()
            pumps.append(t)
    code = _wait_forwarding(child)
    for t in pumps:
        t.join()
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()
    return code


class _Exit(CredvaultError):
    """A launch failure with a shell's exit code (126, 127)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


def _wait_forwarding(child: subprocess.Popen[bytes]) -> int:
    """Wait for the child; Ctrl-C reaches it from the terminal, SIGTERM/SIGHUP we pass on."""

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    if threading.current_thread() is not threading.main_thread():  # a library caller's thread
        return _status(child.wait())
    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        code = child.wait()
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    return _status(code)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


# -- ssh ------------------------------------------------------------------------------------
class SshPlan(NamedTuple):
    """What ``ssh`` will do; ``secret`` is the key or password (redacted in ``repr``)."""

    credential: str
    kind: str
    argv: tuple[str, ...]
    secret: Secret


def plan_ssh(
    vault: Vault,
    system_ref: str,
    extra: Sequence[str] = (),
    *,
    credential: str | None = None,
    reason: str | None = None,
) -> SshPlan:
    """Find the system's credential (``ssh-key`` or ``password``), read it once, build argv."""
    from credvault import validate

    eng, system = validate.ref(system_ref)
    if credential is None:
        linked = [
            c for c in vault.credentials.list(eng) if c.system == system and c.kind in SSH_KINDS
        ]
        if not linked:
            vault.systems.show(system_ref)  # NotFound for a missing system, audited
            raise NotFound(
                "credential",
                system_ref,
                f"no ssh-key or password credential is linked to {system_ref} "
                f"(store one with `credvault put {eng}/NAME --system {system}`)",
            )
        if len(linked) > 1:
            names = ", ".join(c.name for c in linked)
            raise InvalidInput(
                f"several credentials are linked to {system_ref} ({names}): "
                "pick one with --credential NAME"
            )
        credential = linked[0].name
    ref = f"{eng}/{validate.name(credential, 'credential name')}"
    c = vault.credentials.get(ref, reason=reason, via=f"ssh {system}")
    if c.system != system:
        raise InvalidInput(f"{ref} is not linked to system {system}")
    if c.kind not in SSH_KINDS:
        raise InvalidInput(f"{ref} is a {c.kind}: ssh needs an ssh-key or password credential")
    if c.address is None:
        raise NotFound("system", system_ref)
    argv = ["ssh"]
    if c.port is not None:
        argv += ["-p", str(c.port)]
    if c.username:
        argv += ["-l", c.username]
    argv.append(c.address)  # validated at `system add`: never starts with '-'
    return SshPlan(ref, c.kind, (*argv, *extra), c.secret)


def ssh_add(key: Secret, lifetime_s: int, *, env: dict[str, str] | None = None) -> None:
    """Load a private key into the running ssh-agent for ``lifetime_s`` seconds, via stdin."""
    e = dict(os.environ if env is None else env)
    if not e.get("SSH_AUTH_SOCK"):
        raise LaunchError("no ssh-agent: SSH_AUTH_SOCK is not set (start one: eval $(ssh-agent))")
    exe = shutil.which("ssh-add", path=e.get("PATH"))
    if exe is None:
        raise LaunchError("ssh-add not found (install OpenSSH's client)")
    data = key.reveal()
    if not data.endswith(b"\n"):
        data += b"\n"  # OpenSSH's key parser wants the final newline
    try:
        p = subprocess.run(
            [exe, "-t", str(lifetime_s), "-"],
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=e,
            timeout=120,  # an encrypted key asks for its passphrase on the terminal
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LaunchError("ssh-add did not finish") from None
    if p.returncode != 0:
        why = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise LaunchError(f"ssh-add failed: {why[-1] if why else f'exit {p.returncode}'}")


def run_ssh(plan: SshPlan, *, key_lifetime_s: int = 900) -> int:
    """Run the planned ssh and return its exit status (255 is ssh's own failure)."""
    exe = shutil.which("ssh")
    if exe is None:
        raise LaunchError("ssh not found (install OpenSSH's client)")
    argv = [exe, *plan.argv[1:]]
    if plan.kind == "ssh-key":
        ssh_add(plan.secret, key_lifetime_s)
        child = subprocess.Popen(argv)
        return _wait_forwarding(child)
    with _AskpassServer(plan.secret) as server:
        env = dict(os.environ)
        env.update(
            SSH_ASKPASS=str(server.helper),
            SSH_ASKPASS_REQUIRE="force",  # OpenSSH 8.4+: the helper even with a terminal
            CREDVAULT_ASKPASS_SOCKET=str(server.socket_path),
        )
        child = subprocess.Popen(argv, env=env)
        server.serve_child_of(child.pid)
        return _wait_forwarding(child)


_HELPER = """#!{python} -I
# credvault's SSH_ASKPASS helper: a password prompt is answered from the one-shot socket
# of the credvault process that started ssh; any other prompt (a host key to confirm, a
# key's passphrase) is asked on the terminal, as ssh itself would.
import os, socket, sys
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
if "password" in prompt.lower():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(os.environ["CREDVAULT_ASKPASS_SOCKET"])
    except (KeyError, OSError):
        sys.exit(1)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        sys.exit(1)
    sys.stdout.buffer.write(data + b"\\n")
    sys.exit(0)
try:
    tty = open("/dev/tty", "r+")
except OSError:
    sys.exit(1)
tty.write(prompt)
tty.flush()
sys.stdout.write(tty.readline())
"""


class _AskpassServer:
    """A private directory with the helper and a socket that gives the password once."""

    def __init__(self, password: Secret) -> None:
        if b"\n" in password.reveal() or b"\0" in password.reveal():
            raise InvalidInput("a password with a newline or NUL byte cannot be given to ssh")
        self._password = password
        base = os.environ.get("XDG_RUNTIME_DIR")
        self.dir = Path(tempfile.mkdtemp(prefix="credvault-ssh-", dir=base if base else None))
        self.helper = self.dir / "askpass"
        self.socket_path = self.dir / "s"
        fd = os.open(self.helper, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(_HELPER.replace("{python}", sys.executable))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.socket_path))
        self.socket_path.chmod(0o600)
        self._sock.listen(4)
        self._thread: threading.Thread | None = None
        self.served = threading.Event()

    def __enter__(self) -> _AskpassServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):  # wakes a thread blocked in accept() (Linux)
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def serve_child_of(self, ssh_pid: int) -> None:
        """Answer the first caller that is ssh's own helper; refuse every other; then stop."""
        self._thread = threading.Thread(target=self._serve, args=(ssh_pid,), daemon=True)
        self._thread.start()

    def _serve(self, ssh_pid: int, allowed: Callable[[int, int], bool] | None = None) -> None:
        check = allowed or _is_askpass_of
        while not self.served.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed: ssh has finished
            with conn:
                pid, uid = _peer(conn)
                if uid == os.getuid() and check(pid, ssh_pid):
                    conn.sendall(self._password.reveal())
                    self.served.set()
        self._sock.close()  # one answer only: a retry after a wrong password gets nothing


def _peer(conn: socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid (Linux SO_PEERCRED); (-1, -1) elsewhere."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return -1, -1
    raw = conn.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _is_askpass_of(pid: int, ssh_pid: int) -> bool:
    """Whether ``pid``'s parent is the ssh we started (ssh forks the helper directly)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return sys.platform != "linux"  # no /proc: the uid check and the 0700 directory remain
    return int(stat.rsplit(")", 1)[1].split()[1]) == ssh_pid
