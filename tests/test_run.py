"""``run``: secrets only in the child's environment, reads audited with the command's name,
exit status passed through, and the optional masking of the secrets in its output."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from conftest import VaultFixture
from credvault import InvalidInput, NotFound, handoff

PY = sys.executable
PRINT_ENV = "import os,sys; sys.stdout.write(os.environ.get(sys.argv[1], '<unset>'))"


def specs(*texts: str) -> list[handoff.EnvSpec]:
    return [handoff.parse_env_spec(t) for t in texts]


def test_env_spec_parsing() -> None:
    assert handoff.parse_env_spec("DB_PW=acme/db") == handoff.EnvSpec("DB_PW", "acme/db", "secret")
    assert handoff.parse_env_spec("U=acme/db:username").field == "username"
    for bad in ("acme/db", "1X=acme/db", "X=acme", "X=acme/db:colour", "X-Y=acme/db"):
        with pytest.raises(InvalidInput):
            handoff.parse_env_spec(bad)


def test_secrets_reach_only_the_childs_environment(
    vault: VaultFixture, engagement: str, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = [PY, "-c", PRINT_ENV, "PW"]
    with vault.open("bob") as v:
        env = handoff.read_env(
            v,
            specs(
                "PW=acme-2026/web1-root",
                "U=acme-2026/web1-root:username",
                "H=acme-2026/web1-root:address",
            ),
            argv,
            "T-7",
        )
    assert "hunter2" not in repr(env)
    assert handoff.run_command(argv, env) == 0
    assert capfd.readouterr().out == "hunter2"
    assert handoff.run_command([PY, "-c", PRINT_ENV, "H"], env) == 0
    assert capfd.readouterr().out == "10.0.0.1"
    assert "PW" not in os.environ  # the caller's own environment is untouched
    with vault.open() as v:
        reads = [
            e for e in v.audit_entries(engagement="acme-2026", action="get") if e.member == "bob"
        ]
    # one read for the one credential behind three variables, the command's name as reason
    assert [(e.item, e.detail) for e in reads] == [
        ("web1-root", f"reason: run {Path(PY).name}: T-7")
    ]


def test_reason_is_the_commands_name_within_the_limit() -> None:
    assert handoff.command_reason(["/usr/bin/psql", "-h", "db"]) == "run psql"
    assert handoff.command_reason(["./deploy\x1b[2J.sh"], "T-1") == "run deploy?[2J.sh: T-1"
    assert len(handoff.command_reason(["x" * 300], "r" * 200)) == 200
    with pytest.raises(InvalidInput):
        handoff.command_reason(["x"], "two\nlines")


def test_exit_status_and_launch_failures(vault: VaultFixture, engagement: str) -> None:
    assert handoff.run_command([PY, "-c", "raise SystemExit(42)"], {}) == 42
    assert (
        handoff.run_command(
            [PY, "-c", "import os,signal; os.kill(os.getpid(), signal.SIGTERM)"], {}
        )
        == 143
    )
    with pytest.raises(handoff.CredvaultError) as e:
        handoff.run_command(["/nonexistent/cmd"], {})
    assert e.value.exit_code == 127
    with vault.open() as v:
        with pytest.raises(NotFound):
            handoff.read_env(v, specs("X=acme-2026/web1-root:url"), ["true"])
        with pytest.raises(InvalidInput, match="given twice"):
            handoff.read_env(v, specs("X=acme-2026/web1-root", "X=acme-2026/web1-root"), ["true"])
        with pytest.raises(InvalidInput, match="no command"):
            handoff.read_env(v, specs("X=acme-2026/web1-root"), [])


def test_mask_in_the_childs_output(
    vault: VaultFixture, engagement: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code = (
        "import os,sys\n"
        "s = os.environ['PW']\n"
        "sys.stdout.write('a' + s[:3]); sys.stdout.flush()\n"  # split across writes
        "sys.stdout.write(s[3:] + 'b\\n'); sys.stdout.flush()\n"
        "sys.stderr.write('err ' + s + ' port ' + os.environ['P'] + '\\n')\n"
        "raise SystemExit(3)\n"
    )
    with vault.open() as v:
        env = handoff.read_env(
            v, specs("PW=acme-2026/web1-root", "P=acme-2026/web1-root:port"), [PY]
        )
    assert handoff.run_command([PY, "-c", code], env, mask=True) == 3
    out, err = capfd.readouterr()
    assert out == "a*****b\n"
    assert err == "err ***** port 22\n"  # too short to mask: "22" would garble every number


class Trickle(io.RawIOBase):
    """A pipe that hands out one byte per read: every secret is split across reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        if not self.data:
            return 0
        b[0] = self.data[0]
        self.data = self.data[1:]
        return 1


def test_mask_stream_across_every_boundary() -> None:
    text = b"x-hunter2-y hunter22 hunt-er2 hunter2"
    dst = io.BytesIO()
    handoff.mask_stream(io.BufferedReader(Trickle(text), 1), dst, [b"hunter2", b"root"])
    assert dst.getvalue() == b"x-*****-y *****2 hunt-er2 *****"
