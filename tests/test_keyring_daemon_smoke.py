"""Smoke tests: keyring talks to a real (private, headless) gnome-keyring.

The daemons come from tests/keyring_daemon.py; the system packages from
.ci/system-deps.sh.  Without the binaries these tests skip when not root
and fail when root (as root, .ci/system-deps.sh should have installed them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # works whatever pytest's import mode
    sys.path.insert(0, _HERE)

from keyring_daemon import missing_binaries, secret_service  # noqa: E402

pytestmark = pytest.mark.keyring_real

ROUND_TRIP = """\
import keyring
print(type(keyring.get_keyring()).__module__ + "." + type(keyring.get_keyring()).__qualname__)
keyring.set_password("svc", "user", "val")
print(keyring.get_password("svc", "user"))
keyring.delete_password("svc", "user")
print(keyring.get_password("svc", "user"))
"""


@pytest.fixture(autouse=True)
def _require_binaries() -> None:
    missing = missing_binaries()
    if not missing:
        return
    msg = f"missing {', '.join(missing)}; run .ci/system-deps.sh"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.fail(msg + " (we are root, so it would have installed them)")
    pytest.skip(msg + " as root")


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line or environment has text."""
    found = []
    needle = text.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for name in ("cmdline", "environ"):
            try:
                if needle in (proc / name).read_bytes():
                    found.append(int(proc.name))
                    break
            except OSError:  # gone, or not ours to read
                pass
    return found


def test_keyring_round_trip_through_secret_service() -> None:
    with secret_service() as env:
        res = _run(ROUND_TRIP, env)
        runtime_dir = env["XDG_RUNTIME_DIR"]
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == [
            "keyring.backends.SecretService.Keyring",
            "val",
            "None",
        ], res.stderr
        assert _processes_mentioning(runtime_dir), "daemons should be running"

    # Teardown: no daemon left, temporary directory gone.
    assert _processes_mentioning(runtime_dir) == []
    assert not Path(runtime_dir).parent.exists()


def test_secret_survives_daemon_restart(tmp_path: Path) -> None:
    data_home = tmp_path / "data"
    with secret_service(data_home=data_home) as env:
        res = _run('import keyring; keyring.set_password("svc", "user", "kept")', env)
        assert res.returncode == 0, res.stderr
    assert (data_home / "keyrings" / "login.keyring").is_file()

    with secret_service(data_home=data_home) as env:
        res = _run('import keyring; print(keyring.get_password("svc", "user"))', env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "kept"
