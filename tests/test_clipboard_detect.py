"""Which clipboard ``get --clip`` uses, and what it says when none works: the choice by
environment (Wayland, X11 with xclip or xsel, an SSH session), a clipboard tool that fails
against an unreachable display (the real xclip), one that cannot run, and OSC 52 without a
terminal. Each failure is one ``ClipboardUnavailable`` line (exit 1), the value never in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from credvault import clipboard
from credvault.clipboard import BACKENDS, Backend, ClipboardUnavailable
from credvault.secret import Secret

SECRET = b"clip-me-7f3a"


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A PATH directory where the test decides which clipboard tools exist."""
    d = tmp_path / "bin"
    d.mkdir()
    return d


def _install(d: Path, *names: str) -> None:
    for name in names:
        f = d / name
        f.write_text("#!/bin/sh\nexit 0\n")
        f.chmod(0o755)


def test_the_first_reachable_clipboard_is_chosen(tools: Path) -> None:
    env = {"PATH": str(tools), "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    _install(tools, "xsel")
    assert clipboard.detect(env).name == "xsel"  # Wayland without wl-copy: X11's
    _install(tools, "xclip")
    assert clipboard.detect(env).name == "xclip"  # xclip before xsel
    _install(tools, "wl-copy")
    assert clipboard.detect(env).name == "wl-copy"  # Wayland first
    # an SSH session without a terminal to send OSC 52 to has none
    with pytest.raises(ClipboardUnavailable, match="no clipboard reachable"):
        clipboard.detect({"PATH": str(tools), "SSH_CONNECTION": "192.0.2.1 22 192.0.2.2 22"})
    with pytest.raises(ClipboardUnavailable, match="clipboard tool xsel not found"):
        clipboard.detect({"PATH": str(tools / "none"), "CREDVAULT_CLIPBOARD": "xsel"})


def test_a_tool_that_fails_or_cannot_run_is_one_line_without_the_value(tools: Path) -> None:
    xclip = shutil.which("xclip")
    if xclip is None:
        pytest.fail("xclip is missing: run .ci/system-deps.sh")
    unreachable = Backend(
        "xclip", (xclip, "-display", ":199", "-selection", "clipboard"), None, None
    )
    with pytest.raises(ClipboardUnavailable) as e:
        clipboard.copy(Secret(SECRET), clear_after=0, backend=unreachable)
    assert str(e.value) == "clipboard tool xclip failed (exit 1): is the display reachable?"
    missing = Backend("xsel", (str(tools / "xsel"),), None, None)
    with pytest.raises(ClipboardUnavailable) as e:
        clipboard.copy(Secret(SECRET), clear_after=0, backend=missing)
    assert str(e.value) == "clipboard tool xsel failed to run"
    assert e.value.exit_code == 1


def test_osc52_without_a_terminal_is_refused() -> None:
    """In a new session (no controlling terminal): nothing is written anywhere."""
    code = (
        "from credvault import clipboard; from credvault.secret import Secret\n"
        "try:\n"
        "    clipboard.copy(Secret(b'x'), clear_after=0, backend=clipboard.BACKENDS['osc52'])\n"
        "except clipboard.ClipboardUnavailable as e:\n"
        "    print(e)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=True,
        timeout=60,
    )
    assert p.stdout == "no terminal to send the OSC 52 clipboard sequence to\n"
    assert BACKENDS["osc52"].paste is None
