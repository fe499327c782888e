"""No client data in argv (issue 12, item 6) and no terminal escapes from the trail or from
imported files: every encrypted field can come from a file, stdin, a JSON object or a
prompt; a URL carrying a password is refused; planted escapes are shown escaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import InvalidInput, Vault
from credvault.cli.terminal import escaped

ENG = "acme-2026"
ADDRESS = "db7.internal.example"
DETAILS = "rack 4, ILO pw on the sticker"


def test_put_fields_from_files_and_json_on_stdin(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    user = tmp_path / "user.txt"
    user.write_text("svc-backup\n")
    r = cli("put", f"{ENG}/a", "--username-file", str(user), input=b"s3cret")
    assert r.code == 0, r.err
    doc = json.dumps({"url": "https://portal.example/login", "notes": "rotate in März"})
    r = cli("put", f"{ENG}/b", "--generate", "--fields-from", "-", input=doc.encode())
    assert r.code == 0, r.err
    r = cli("get", f"{ENG}/a", "--json")
    assert json.loads(r.out)["username"] == "svc-backup"
    got = json.loads(cli("get", f"{ENG}/b", "--json").out)
    assert got["url"] == "https://portal.example/login"
    assert got["notes"] == "rotate in März"
    # stdin carries the secret unless --generate: a field cannot take it too
    r = cli("put", f"{ENG}/c", "--username-file", "-", input=b"x")
    assert r.code == 2
    assert "stdin already carries the secret" in r.err
    r = cli("put", f"{ENG}/d", "--username", "u", "--username-file", str(user), input=b"x")
    assert r.code == 2
    assert "given twice" in r.err
    r = cli("put", f"{ENG}/e", "--generate", "--fields-from", "-", input=b'{"secret": "x"}')
    assert r.code == 2


def test_system_fields_never_appear_in_the_process_arguments(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    doc = json.dumps({"address": ADDRESS, "details": DETAILS}).encode()
    p = subprocess.Popen(
        [sys.executable, "-m", "credvault", "system", "add", f"{ENG}/db7", "--fields-from", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
        start_new_session=True,
    )
    try:
        # what any local user sees while the command runs (it waits for stdin)
        deadline = time.monotonic() + 30
        cmdline = b""
        while time.monotonic() < deadline and b"--fields-from" not in cmdline:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        assert b"--fields-from" in cmdline
        assert ADDRESS.encode() not in cmdline
        assert b"sticker" not in cmdline
        _out, err = p.communicate(doc, timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    r = cli_vault("system", "show", f"{ENG}/db7", "--json")
    shown = json.loads(r.out)
    assert shown["address"] == ADDRESS
    assert shown["details"] == DETAILS


def test_system_address_from_a_file(cli_vault: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "addr"
    f.write_text(ADDRESS + "\n")
    r = cli_vault(
        "system",
        "add",
        f"{ENG}/db8",
        "--address-file",
        str(f),
        "--details-file",
        "-",
        input=DETAILS.encode(),
    )
    assert r.code == 0, r.err
    shown = json.loads(cli_vault("system", "show", f"{ENG}/db8", "--json").out)
    assert (shown["address"], shown["details"]) == (ADDRESS, DETAILS)


@pytest.mark.parametrize(
    "url",
    ["https://admin:hunter2@portal.example/", "ftp://u:p@files.example", "https://:pw@h.example"],
)
def test_a_url_carrying_a_password_is_refused(
    vault: VaultFixture, engagement: str, url: str
) -> None:
    with vault.open() as v, pytest.raises(InvalidInput, match="carries a password"):
        v.put(f"{ENG}/x", b"s", url=url)


def test_cli_refuses_a_url_with_a_password(cli_vault: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "url"
    f.write_text("https://root:toor@10.0.0.1/\n")
    r = cli_vault("put", f"{ENG}/x", "--url-file", str(f), input=b"s")
    assert r.code == 2
    assert "toor" not in r.err


def test_planted_terminal_escapes_never_reach_the_terminal(
    vault: VaultFixture, cli: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    planted = "2026-01-01T00:00:00Z\x1b[2J\x1b[1A\x9b31m evil\x1b]0;title\x07\n"
    (vault.path / "failed-unlocks.log").write_text(
        f"2026-01-01T00:00:00Z \x1b[1A\x1b[2Kalice\n{planted}"
    )
    with Vault.open(vault.path, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock) as v:
        entries = v.audit.entries(action="unlock")
    assert entries
    for e in entries:
        assert "\x1b" not in e.member + e.detail
        assert "\x9b" not in e.detail
    r = cli(
        "audit",
        "--vault",
        str(vault.path),
        env={"CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_ALICE"]},
    )
    assert r.code == 0, r.err
    assert b"\x1b" not in r.out
    assert "\x9b".encode() not in r.out


def test_escaped_cells() -> None:
    assert escaped("plain text é") == "plain text é"
    assert escaped("a\x1b[2Jb\x9bc\u202ed\te") == "a\\x1b[2Jb\\x9bc\\u202ed\\x09e"
    assert os.linesep not in escaped("x\ny")
