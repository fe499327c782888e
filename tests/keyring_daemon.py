"""A private, headless gnome-keyring Secret Service for tests.

Usage::

    from keyring_daemon import secret_service

    with secret_service() as env:
        subprocess.run([sys.executable, "-c", "import keyring; ..."],
                       env=env, timeout=60, check=True)

What :func:`secret_service` does:

1. makes a temporary directory holding a fresh ``HOME``, ``XDG_RUNTIME_DIR``
   (0700), ``XDG_DATA_HOME``, ``XDG_CONFIG_HOME`` and ``XDG_CACHE_HOME``;
2. starts a private session bus, ``dbus-daemon --nofork`` with a minimal
   config of its own: it listens on ``$XDG_RUNTIME_DIR/bus`` and has *no*
   service directories, so nothing is ever D-Bus-activated behind our back
   (neither a second gnome-keyring nor the ``gcr-prompter`` GUI: a prompt
   fails at once with "Prompt dismissed" instead of hanging);
3. starts ``gnome-keyring-daemon --foreground --unlock --components=secrets``
   with a password on its stdin.  ``--unlock`` creates the ``login``
   collection with that password if it does not exist yet (fresh HOME) and
   unlocks it; gnome-keyring resolves the ``default`` alias to ``login``, so
   clients (keyring, secretstorage, secret-tool) find an unlocked default
   collection and never need a prompt.  gnome-keyring refuses an *empty*
   login password (``--unlock`` with ``""`` silently creates nothing and the
   first client then fails with "Prompt dismissed"), hence the fixed
   non-empty :data:`LOGIN_PASSWORD`;
4. waits until ``org.freedesktop.secrets`` is on the bus and the default
   alias points at an unlocked collection (checked with ``dbus-send``);
5. yields a complete environment for subprocesses (a copy of
   ``os.environ`` with :data:`ENV_KEYS` set and :data:`REMOVED_KEYS`
   removed);
6. on exit sends SIGTERM (then SIGKILL) to the process group of each daemon,
   reaps them and removes the temporary directory.

Both daemons run in the foreground as our own children, in their own
sessions, so teardown never depends on finding daemonized PIDs, and no
zombie is left to a PID 1 that may not reap orphans.

This module imports nothing outside the standard library.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import site
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "ENV_KEYS",
    "LOGIN_PASSWORD",
    "REMOVED_KEYS",
    "REQUIRED_BINARIES",
    "SecretServiceError",
    "missing_binaries",
    "secret_service",
]

DBUS_DAEMON = "dbus-daemon"
DBUS_SEND = "dbus-send"
GNOME_KEYRING_DAEMON = "gnome-keyring-daemon"
REQUIRED_BINARIES = (DBUS_DAEMON, DBUS_SEND, GNOME_KEYRING_DAEMON)

#: Password of the ``login`` collection.  It must not be empty (see above).
LOGIN_PASSWORD = "credvault-test-login"

#: Variables set in the yielded environment.
ENV_KEYS = (
    "DBUS_SESSION_BUS_ADDRESS",
    "HOME",
    "XDG_RUNTIME_DIR",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
)

#: Variables removed from the yielded environment: a display would invite
#: GUI prompts; GNOME_KEYRING_CONTROL / SSH_AUTH_SOCK would point at another
#: gnome-keyring (``--unlock`` would hand its password to that one and exit);
#: PYTHON_KEYRING_BACKEND (and KEYRING_PROPERTY_*, removed by prefix) would
#: override keyring's own choice of backend.
REMOVED_KEYS = (
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "GNOME_KEYRING_CONTROL",
    "GNOME_KEYRING_PID",
    "SSH_AUTH_SOCK",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "PYTHON_KEYRING_BACKEND",
)
_REMOVED_PREFIXES = ("KEYRING_PROPERTY_",)

_SECRETS_NAME = "org.freedesktop.secrets"
_SECRETS_PATH = "/org/freedesktop/secrets"

# AF_UNIX paths are limited to 107 bytes; keep well below for the deepest
# socket we create ($XDG_RUNTIME_DIR/keyring/control).
_MAX_BASE_LEN = 80

_BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class SecretServiceError(RuntimeError):
    """The private Secret Service could not be started."""


# A child process's read of one keyring entry ("NONE" when absent), as a test asks it.
READ_ENTRY = """\
import keyring, sys
v = keyring.get_password(sys.argv[1], sys.argv[2])
print("NONE" if v is None else v)
"""


def missing_binaries() -> list[str]:
    """Names of the required executables that are not on PATH."""
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


def _make_base_dir() -> Path:
    base = Path(tempfile.mkdtemp(prefix="credvault-ss-"))
    if len(str(base)) > _MAX_BASE_LEN:  # long TMPDIR: socket paths would not fit
        base.rmdir()
        base = Path(tempfile.mkdtemp(prefix="cv-ss-", dir="/tmp"))
    return base


def _clean_env(base_env: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in base_env.items()
        if k not in REMOVED_KEYS and not k.startswith(_REMOVED_PREFIXES)
    }
    # A temporary HOME hides the user site-packages (~/.local/lib/...); keep
    # them importable for subprocesses that rely on ``pip install --user``.
    if "PYTHONUSERBASE" not in env:
        with contextlib.suppress(Exception):
            env["PYTHONUSERBASE"] = site.getuserbase()
    return env


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """First line of proc.stdout, or '' on EOF / timeout."""
    assert proc.stdout is not None
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").split("\n", 1)[0].strip()


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(empty)"
    except OSError:
        return "(unreadable)"


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM the process group of proc, SIGKILL it after grace; reap."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Leftovers of the group whose leader already exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _dbus_send(env: Mapping[str, str], *args: str) -> str | None:
    """Output of one ``dbus-send --print-reply`` call, None on failure."""
    try:
        res = subprocess.run(
            [DBUS_SEND, "--session", "--print-reply", "--reply-timeout=2000", *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return None
    return res.stdout if res.returncode == 0 else None


def _default_collection_unlocked(env: Mapping[str, str]) -> bool:
    """True once the default alias names an unlocked collection."""
    out = _dbus_send(
        env,
        f"--dest={_SECRETS_NAME}",
        _SECRETS_PATH,
        "org.freedesktop.Secret.Service.ReadAlias",
        "string:default",
    )
    if not out or 'object path "' not in out:
        return False
    path = out.split('object path "', 1)[1].split('"', 1)[0]
    if path == "/":
        return False
    locked = _dbus_send(
        env,
        f"--dest={_SECRETS_NAME}",
        path,
        "org.freedesktop.DBus.Properties.Get",
        "string:org.freedesktop.Secret.Collection",
        "string:Locked",
    )
    return locked is not None and "boolean false" in locked


@contextlib.contextmanager
def secret_service(
    *,
    password: str = LOGIN_PASSWORD,
    data_home: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
    base_env: Mapping[str, str] | None = None,
) -> Iterator[dict[str, str]]:
    """Run a private gnome-keyring Secret Service; yield a subprocess env.

    password:  password of the ``login`` collection (created if absent).
    data_home: an XDG_DATA_HOME to use (and keep) instead of a temporary
               one, e.g. to check that secrets survive a daemon restart; the
               keyrings live in ``<data_home>/keyrings``.  Reuse it with the
               same password.
    timeout:   seconds allowed for the whole start-up.
    base_env:  environment to start from (default ``os.environ``).

    Raises SecretServiceError if a binary is missing or a daemon fails to
    start or to become ready within ``timeout``.
    """
    if not password:
        raise ValueError("gnome-keyring does not accept an empty login password")
    missing = missing_binaries()
    if missing:
        raise SecretServiceError(f"missing executables: {', '.join(missing)}")

    deadline = time.monotonic() + timeout
    base = _make_base_dir()
    bus_proc: subprocess.Popen[bytes] | None = None
    gkd_proc: subprocess.Popen[bytes] | None = None
    try:
        dirs = {
            "HOME": base / "home",
            "XDG_RUNTIME_DIR": base / "run",
            "XDG_DATA_HOME": base / "data" if data_home is None else Path(data_home),
            "XDG_CONFIG_HOME": base / "config",
            "XDG_CACHE_HOME": base / "cache",
        }
        for path in dirs.values():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        dirs["XDG_RUNTIME_DIR"].chmod(0o700)

        config = base / "session-bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=dirs["XDG_RUNTIME_DIR"] / "bus"))

        env = _clean_env(os.environ if base_env is None else base_env)
        env.update({name: str(path.absolute()) for name, path in dirs.items()})

        # 1. The session bus; it prints its address once it is listening.
        bus_log = base / "dbus-daemon.log"
        with bus_log.open("wb") as log:
            bus_proc = subprocess.Popen(
                [DBUS_DAEMON, f"--config-file={config}", "--nofork", "--print-address=1"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                cwd=base,
            )
        address = _read_line(bus_proc, deadline)
        if not address.startswith("unix:"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                bus_proc.wait(timeout=0.5)  # for its exit code, if it died
            raise SecretServiceError(
                f"dbus-daemon did not start (exit code {bus_proc.poll()}, "
                f"printed {address!r}): {_tail(bus_log)}"
            )
        env["DBUS_SESSION_BUS_ADDRESS"] = address

        # 2. gnome-keyring: reads the login password from stdin up to EOF,
        #    creates/unlocks the "login" collection, serves it on the bus.
        gkd_log = base / "gnome-keyring-daemon.log"
        with gkd_log.open("wb") as log:
            gkd_proc = subprocess.Popen(
                [GNOME_KEYRING_DAEMON, "--foreground", "--unlock", "--components=secrets"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=dirs["HOME"],
            )
        assert gkd_proc.stdin is not None
        try:
            gkd_proc.stdin.write(password.encode())
            gkd_proc.stdin.close()
        except BrokenPipeError:
            pass  # it died already; reported below

        # 3. Ready when the default alias resolves to an unlocked collection.
        while not _default_collection_unlocked(env):
            if gkd_proc.poll() is not None:
                raise SecretServiceError(
                    f"gnome-keyring-daemon exited with code {gkd_proc.returncode}: {_tail(gkd_log)}"
                )
            if "failed to unlock login keyring" in _tail(gkd_log):
                raise SecretServiceError(
                    "gnome-keyring-daemon could not unlock the existing login "
                    "collection (wrong password for this data_home?)"
                )
            if bus_proc.poll() is not None:
                raise SecretServiceError(
                    f"dbus-daemon exited with code {bus_proc.returncode}: {_tail(bus_log)}"
                )
            if time.monotonic() > deadline:
                raise SecretServiceError(
                    f"no unlocked default collection on the Secret Service after "
                    f"{timeout:g}s; gnome-keyring-daemon said: {_tail(gkd_log)}"
                )
            time.sleep(0.05)

        yield env
    finally:
        _stop(gkd_proc)
        _stop(bus_proc)
        shutil.rmtree(base, ignore_errors=True)
