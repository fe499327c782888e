"""The clipboard with real ``xclip`` under a private Xvfb display, and OSC 52 on a real pty.

Checked as a user (and a snooping local process) would: the secret is on the clipboard, it is
in no process's argv or environment (the clearer's included), the clipboard is empty after
the (short, configurable) delay, and something copied meanwhile is left alone.
"""

from __future__ import annotations

import base64
import fcntl
import os
import select
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from credvault import InvalidInput, Secret, clipboard

XVFB = shutil.which("Xvfb")
XCLIP = shutil.which("xclip")
needs_x = pytest.mark.skipif(
    XVFB is None or XCLIP is None,
    reason="LOUD SKIP: Xvfb or xclip missing (Debian xvfb, xclip; .ci/system-deps.sh)",
)
DEADLINE = 60.0  # generous bound on waiting for a background process; never a timing claim


@pytest.fixture(scope="module", name="display")
def xvfb_display() -> Iterator[str]:
    if XVFB is None:
        pytest.skip("LOUD SKIP: Xvfb missing (Debian xvfb; .ci/system-deps.sh)")
    r, w = os.pipe()
    p = subprocess.Popen(
        [XVFB, "-displayfd", str(w), "-nolisten", "tcp", "-screen", "0", "320x200x8"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()  # Xvfb writes the display number once it is ready
    assert number, "Xvfb did not start"
    yield f":{number}"
    p.terminate()
    p.wait(timeout=30)


def x_env(display: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "CREDVAULT_CLIPBOARD")
    }
    env["DISPLAY"] = display
    return env


def paste(display: str) -> bytes:
    assert XCLIP is not None
    p = subprocess.run(
        [XCLIP, "-selection", "clipboard", "-out"],
        env=x_env(display),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return p.stdout if p.returncode == 0 else b""


def set_clipboard(display: str, data: bytes) -> None:
    assert XCLIP is not None
    subprocess.run(
        [XCLIP, "-selection", "clipboard", "-in"],
        input=data,
        env=x_env(display),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=True,
    )


def processes_with(display: str) -> dict[int, tuple[bytes, bytes]]:
    """Every process of ours on this display: pid → (argv, environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"DISPLAY={display}".encode() in environ.split(b"\0"):
            found[int(entry.name)] = (cmdline, environ)
    return found


def clearers(display: str) -> list[int]:
    return [
        pid
        for pid, (argv, _) in processes_with(display).items()
        if b"credvault clipboard clearer" in argv
    ]


def wait_gone(pids: list[int]) -> None:
    end = time.monotonic() + DEADLINE
    while any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids):
        assert time.monotonic() < end, "the clearer did not finish"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


@needs_x
def test_copy_then_clear_and_nothing_leaks(display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = b"CLIP-" + base64.b32encode(os.urandom(10))
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("CREDVAULT_CLIPBOARD", raising=False)
    done = clipboard.copy(Secret(secret), clear_after=1)
    assert done == clipboard.Copied("xclip", 1)
    pids = clearers(display)
    assert len(pids) == 1
    for argv, environ in processes_with(display).values():  # the clearer and xclip's server
        assert secret not in argv
        assert secret not in environ
    assert paste(display) in (secret, b"")  # b"" only if the clearer already ran
    wait_gone(pids)
    assert paste(display) == b""


@needs_x
def test_clear_leaves_what_the_user_copied_since(
    display: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("CREDVAULT_CLIPBOARD", "xclip")
    clipboard.copy(Secret(b"the-secret"), clear_after=3)
    pids = clearers(display)
    assert paste(display) == b"the-secret"
    set_clipboard(display, b"user's own text")
    wait_gone(pids)
    assert paste(display) == b"user's own text"


@needs_x
def test_clear_after_zero_keeps_it(display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", display)
    before = set(clearers(display))
    assert clipboard.copy(Secret(b"keep-me"), clear_after=0) == clipboard.Copied("xclip", 0)
    assert set(clearers(display)) == before
    assert paste(display) == b"keep-me"


@needs_x
@pytest.mark.skipif(
    shutil.which("xsel") is None, reason="LOUD SKIP: xsel missing (.ci/system-deps.sh)"
)
def test_xsel_copies_and_clears(display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other X11 tool: its own copy, read-back and --clear arguments, for real."""
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("CREDVAULT_CLIPBOARD", "xsel")
    assert clipboard.copy(Secret(b"via-xsel"), clear_after=1) == clipboard.Copied("xsel", 1)
    pids = clearers(display)
    assert paste(display) in (b"via-xsel", b"")
    wait_gone(pids)
    assert paste(display) == b""


def test_no_clipboard_is_one_clear_error() -> None:
    env = {"PATH": os.environ["PATH"]}
    with pytest.raises(clipboard.ClipboardUnavailable, match="no clipboard reachable"):
        clipboard.detect(env)
    with pytest.raises(InvalidInput, match="unknown CREDVAULT_CLIPBOARD"):
        clipboard.detect({**env, "CREDVAULT_CLIPBOARD": "carrier-pigeon"})
    with pytest.raises(clipboard.ClipboardUnavailable, match="wl-copy not found"):
        clipboard.detect({"PATH": "/nonexistent", "CREDVAULT_CLIPBOARD": "wl-copy"})
    with pytest.raises(InvalidInput, match="clear time"):
        clipboard.copy(Secret(b"x"), clear_after=-1, backend=clipboard.BACKENDS["xclip"])


def test_osc52_on_a_real_pty(tmp_path: Path) -> None:
    """A remote shell's terminal gets ESC]52 with the value, then the empty clear sequence."""
    master, slave = os.openpty()
    code = (
        "from credvault import clipboard, Secret\n"
        "import sys\n"
        "print(clipboard.copy(Secret(sys.stdin.buffer.read()), clear_after=1))\n"
    )

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    env = {**os.environ, "CREDVAULT_CLIPBOARD": "osc52"}
    p = subprocess.run(
        [sys.executable, "-c", code],
        input=b"osc-secret",
        capture_output=True,
        env=env,
        preexec_fn=controlling_tty,
        timeout=60,
        check=True,
    )
    assert b"osc52" in p.stdout
    want = b"\x1b]52;c;" + base64.b64encode(b"osc-secret") + b"\x07" + b"\x1b]52;c;\x07"
    got = b""
    end = time.monotonic() + DEADLINE
    while not got.endswith(b"\x1b]52;c;\x07"):
        assert time.monotonic() < end, f"no clear sequence on the terminal: {got!r}"
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            got += os.read(master, 4096)
    assert got == want
    os.close(master)
    os.close(slave)
