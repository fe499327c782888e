"""Copy a secret to the clipboard and clear it later, only if it still holds that secret.

The value goes to the clipboard tool on its stdin (never argv, never a file): ``wl-copy`` on
Wayland, ``xclip`` or ``xsel`` on X11, ``pbcopy`` on macOS, or the OSC 52 escape written to
the terminal for a shell on a remote host (the terminal emulator on the user's machine sets
its clipboard). ``CREDVAULT_CLIPBOARD`` picks one by name.

Clearing needs a process that outlives the command: a detached, standard-library-only
Python (``_CLEARER``) in its own session. It never receives the secret: only the SHA-256 of
what was copied, through a pipe on its stdin. After the delay it reads the clipboard back and
clears it only if the digest still matches, so something the user copied meanwhile survives.
OSC 52 cannot be read back (terminals refuse clipboard reads), so there the clear is
unconditional. Nothing here imports the vault: ``credvault get`` pays for it only with ``-c``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from typing import NamedTuple

from credvault.errors import CredvaultError, InvalidInput
from credvault.secret import Secret

__all__ = ["BACKENDS", "DEFAULT_CLEAR_AFTER", "ClipboardUnavailable", "Copied", "copy", "detect"]

DEFAULT_CLEAR_AFTER = 45
MAX_CLEAR_AFTER = 24 * 3600
_TOOL_TIMEOUT = 10
# Only what the clipboard tools need to find the display; nothing of the caller's secrets.
_CLEARER_ENV = (
    "PATH",
    "HOME",
    "DISPLAY",
    "XAUTHORITY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "LANG",
    "LC_ALL",
    "PYTHONPATH",
)


class ClipboardUnavailable(CredvaultError):
    """No clipboard tool or display can be reached (exit code 1)."""


class Backend(NamedTuple):
    name: str
    copy: tuple[str, ...]  # reads the value on stdin
    paste: tuple[str, ...] | None  # prints the current value; None: cannot be read back
    clear: tuple[str, ...] | None  # None: copy an empty value instead


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("wl-copy", ("wl-copy",), ("wl-paste", "--no-newline"), ("wl-copy", "--clear")),
        Backend(
            "xclip",
            ("xclip", "-selection", "clipboard", "-in"),
            ("xclip", "-selection", "clipboard", "-out"),
            None,
        ),
        Backend(
            "xsel",
            ("xsel", "--clipboard", "--input"),
            ("xsel", "--clipboard", "--output"),
            ("xsel", "--clipboard", "--clear"),
        ),
        Backend("pbcopy", ("pbcopy",), ("pbpaste",), None),
        Backend("osc52", (), None, None),
    )
}


class Copied(NamedTuple):
    """What :func:`copy` did: which clipboard, and after how many seconds it clears (0: never)."""

    backend: str
    clear_after: int


def detect(env: dict[str, str] | None = None) -> Backend:
    """The clipboard to use: ``CREDVAULT_CLIPBOARD``, else the first one reachable."""
    e = os.environ if env is None else env
    wanted = e.get("CREDVAULT_CLIPBOARD")
    if wanted:
        if wanted not in BACKENDS:
            raise InvalidInput(
                f"unknown CREDVAULT_CLIPBOARD: expected one of {', '.join(BACKENDS)}"
            )
        b = BACKENDS[wanted]
        if b.copy and shutil.which(b.copy[0], path=e.get("PATH")) is None:
            raise ClipboardUnavailable(f"clipboard tool {b.copy[0]} not found")
        return b
    path = e.get("PATH")
    if e.get("WAYLAND_DISPLAY") and shutil.which("wl-copy", path=path):
        return BACKENDS["wl-copy"]
    if e.get("DISPLAY"):
        for name in ("xclip", "xsel"):
            if shutil.which(name, path=path):
                return BACKENDS[name]
    if sys.platform == "darwin" and shutil.which("pbcopy", path=path):
        return BACKENDS["pbcopy"]
    if (e.get("SSH_TTY") or e.get("SSH_CONNECTION")) and _has_tty():
        return BACKENDS["osc52"]
    raise ClipboardUnavailable(
        "no clipboard reachable: install wl-clipboard (Wayland), xclip or xsel (X11), "
        "or set CREDVAULT_CLIPBOARD=osc52 in a terminal that supports OSC 52"
    )


def copy(
    value: Secret,
    *,
    clear_after: int = DEFAULT_CLEAR_AFTER,
    backend: Backend | None = None,
) -> Copied:
    """Put ``value`` on the clipboard; unless ``clear_after`` is 0, start the detached clearer."""
    if not 0 <= clear_after <= MAX_CLEAR_AFTER:
        raise InvalidInput(f"invalid clear time: expected 0 to {MAX_CLEAR_AFTER} seconds")
    b = backend or detect()
    tty = None
    try:
        if b.name == "osc52":
            try:
                tty = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
            except OSError:
                raise ClipboardUnavailable(
                    "no terminal to send the OSC 52 clipboard sequence to"
                ) from None
            _osc52(tty, value.reveal())
        else:
            _run(b.copy, value.reveal(), b.name)
        if clear_after:
            _start_clearer(b, clear_after, hashlib.sha256(value.reveal()).digest(), tty)
    finally:
        if tty is not None:
            os.close(tty)
    return Copied(b.name, clear_after)


def _run(argv: tuple[str, ...], data: bytes, name: str) -> None:
    # The X11/Wayland tools fork a child that serves the selection and keeps running: its
    # output must not be a pipe we wait on, hence DEVNULL rather than capture.
    try:
        p = subprocess.run(
            argv,
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        raise ClipboardUnavailable(f"clipboard tool {name} failed to run") from None
    if p.returncode != 0:
        raise ClipboardUnavailable(
            f"clipboard tool {name} failed (exit {p.returncode}): is the display reachable?"
        )


def _has_tty() -> bool:
    """Whether this process has a controlling terminal (OSC 52's target)."""
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _osc52(fd: int, data: bytes) -> None:
    """Write ``ESC ] 52 ; c ; base64 BEL`` to the terminal: it sets its own clipboard."""
    os.write(fd, b"\x1b]52;c;" + base64.b64encode(data) + b"\x07")


# The clearer, run as ``python -I -S -c _CLEARER BACKEND-JSON SECONDS [TTY-FD]``: standard
# library only, so it starts in milliseconds (importing the credvault package would cost the
# caller a whole library start-up, since the caller waits for it to fork). The digest of what
# was copied arrives on stdin; it forks, the parent exits at once (the caller reaps it), the
# child sleeps, reads the clipboard back and clears it only if the digest still matches.
_CLEARER = """# credvault clipboard clearer
import hashlib, hmac, json, os, subprocess, sys, time
spec = json.loads(sys.argv[1])
delay = int(sys.argv[2])
tty = int(sys.argv[3]) if len(sys.argv) > 3 else None
digest = bytes.fromhex(sys.stdin.readline().strip())
sys.stdin.close()
if os.fork():
    os._exit(0)
time.sleep(delay)
quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
try:
    if tty is not None:
        os.write(tty, b"\\x1b]52;c;\\x07")  # OSC 52 with no data: the terminal clears it
        sys.exit(0)
    p = subprocess.run(spec["paste"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    now = hashlib.sha256(p.stdout).digest()
    if p.returncode != 0 or not hmac.compare_digest(now, digest):
        sys.exit(0)  # changed since (or unreadable): what is there now is not ours to clear
    if spec["clear"]:
        subprocess.run(spec["clear"], stdin=subprocess.DEVNULL, **quiet)
    else:
        subprocess.run(spec["copy"], input=b"", **quiet)
except (OSError, subprocess.SubprocessError):
    sys.exit(1)
"""


def _start_clearer(b: Backend, delay: int, digest: bytes, tty: int | None) -> None:
    """The clearer inherits the terminal as an open descriptor (it has no /dev/tty of its own)."""
    import json

    env = {k: v for k, v in os.environ.items() if k in _CLEARER_ENV}
    spec = json.dumps({"copy": b.copy, "paste": b.paste, "clear": b.clear})
    argv = [sys.executable, "-I", "-S", "-c", _CLEARER, spec, str(delay)]
    if tty is not None:
        argv.append(str(tty))
    p = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd="/",
        start_new_session=True,  # survives the terminal closing and the command exiting
        close_fds=True,
        pass_fds=() if tty is None else (tty,),
    )
    assert p.stdin is not None
    p.stdin.write(digest.hex().encode() + b"\n")
    p.stdin.close()
    p.wait()  # it forks and exits at once: no zombie and no child left to a library caller
