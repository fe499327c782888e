"""Issue 16 through the command line, as a user runs it (subprocesses): generators with
--show, history/get --version/revert, the trash, edit with options and with $EDITOR (the
secret never in the file, which is 0600 in a private directory and gone afterwards),
system set, mv, find --json, and import of a KeePassXC database written by keepassxc-cli.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CliRunner

pytestmark = pytest.mark.cli
ENG = "acme-2026"


def test_generate_show_history_revert_trash(cli_vault: CliRunner) -> None:
    cli = cli_vault
    r = cli("put", f"{ENG}/db", "--generate", "20", "--show")
    assert r.code == 0, r.err
    first, value = r.text.splitlines()
    assert re.fullmatch(
        rf"stored {ENG}/db \(generated: 20 characters from 65 .*, \d+ bits\)", first
    )
    assert re.fullmatch(r"[A-Za-z0-9._-]{20}", value)
    assert cli("get", f"{ENG}/db", "-n").out == value.encode()
    r = cli("put", f"{ENG}/db", "--words", "5")  # no --show: the value is not printed
    assert r.code == 0, r.err
    assert len(r.text.splitlines()) == 1
    assert "bits" in r.text
    assert cli("put", f"{ENG}/x", "--show", input=b"s\n").code == 2

    r = cli("history", f"{ENG}/db", "--json")
    hist = json.loads(r.out)
    assert [(h["version"], h["changed"], h["current"]) for h in hist] == [
        (1, "created", False),
        (2, "secret", True),
    ]
    assert value not in r.text
    assert cli("get", f"{ENG}/db", "--version", "1", "-n").out == value.encode()
    r = cli("revert", f"{ENG}/db", "1")
    assert r.text == f"reverted {ENG}/db to version 1 (now version 3)\n"
    assert cli("get", f"{ENG}/db", "-n").out == value.encode()
    assert cli("get", f"{ENG}/db", "--version", "9").code == 3

    r = cli("rm", f"{ENG}/db")
    assert r.code == 0
    assert cli("get", f"{ENG}/db").code == 3
    r = cli("trash", "ls", ENG, "--json")
    assert [(t["type"], t["name"]) for t in json.loads(r.out)] == [("credential", "db")]
    assert cli("trash", "restore", f"{ENG}/db").text == f"restored {ENG}/db\n"
    assert cli("get", f"{ENG}/db", "-n").out == value.encode()
    # destroying from the trash is destructive: no terminal, no --yes, nothing happens
    assert cli("rm", f"{ENG}/db").code == 0
    r = cli("trash", "purge", f"{ENG}/db")
    assert (r.code, r.err) == (
        2,
        "credvault: not confirmed: pass --yes to destroy it without a terminal\n",
    )
    assert len(json.loads(cli("trash", "ls", ENG, "--json").out)) == 1
    assert cli("trash", "purge", f"{ENG}/db", "--yes").text == f"destroyed {ENG}/db\n"
    assert json.loads(cli("trash", "ls", ENG, "--json").out) == []


def test_edit_with_options_and_in_an_editor(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    assert cli("system", "add", f"{ENG}/web1", "--address", "192.0.2.1").code == 0
    assert cli("put", f"{ENG}/root", "--username", "root", input=b"TOPSECRET-edit\n").code == 0
    r = cli("edit", f"{ENG}/root", "--notes", "rack 4", "--system", "web1")
    assert r.text == f"edited {ENG}/root: system, notes\n"
    assert cli("get", f"{ENG}/root", "--field", "address").out == b"192.0.2.1\n"

    # An editor that records what it saw, then changes the username and the notes.
    seen = tmp_path / "seen.json"
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import json, os, stat, sys\n"
        "p = sys.argv[1]\n"
        "text = open(p).read()\n"
        f"json.dump({{'text': text, 'mode': stat.S_IMODE(os.stat(p).st_mode),\n"
        "  'dirmode': stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode), 'path': p},\n"
        f"  open({str(seen)!r}, 'w'))\n"
        "text = text.replace('username: root', 'username: admin')\n"
        "text = text.replace('rack 4', 'rack 5\\nsecond line')\n"
        "open(p, 'w').write(text)\n"
    )
    r = cli("edit", f"{ENG}/root", env={"EDITOR": f"{sys.executable} {editor}", "VISUAL": ""})
    assert r.code == 0, r.err
    assert r.text == f"edited {ENG}/root: username, notes\n"
    got = json.loads(seen.read_text())
    assert "TOPSECRET" not in got["text"]
    assert "username: root" in got["text"]
    assert (got["mode"], got["dirmode"]) == (0o600, 0o700)
    assert not Path(got["path"]).exists()
    assert not Path(got["path"]).parent.exists()
    rec = json.loads(cli("get", f"{ENG}/root", "--json").out)
    assert (rec["username"], rec["notes"], rec["secret"]) == (
        "admin",
        "rack 5\nsecond line",
        "TOPSECRET-edit",
    )
    # an editor that fails changes nothing
    r = cli("edit", f"{ENG}/root", env={"EDITOR": "false", "VISUAL": ""})
    assert r.code == 2
    assert "nothing changed" in r.err
    # audited as edits and shows, never as a read of the secret by edit
    audit = json.loads(cli("audit", "--json", "--engagement", ENG).out)
    acts = [(e["action"], e["detail"]) for e in audit if e["item"] == "root"]
    assert ("edit", "changed system, notes") in acts
    assert ("show", "fields without the secret") in acts


def test_system_set_mv_find(cli_vault: CliRunner) -> None:
    cli = cli_vault
    assert cli("system", "add", f"{ENG}/web1", "--address", "192.0.2.1", "--port", "22",
               "--protocol", "ssh", "--details", "debian").code == 0  # fmt: skip
    r = cli("system", "set", f"{ENG}/web1", "--address", "192.0.2.9", "--clear", "details")
    assert r.text == f"updated system {ENG}/web1: address, details\n"
    s = json.loads(cli("system", "show", f"{ENG}/web1", "--json").out)
    assert (s["address"], s["port"], s["protocol"], s["details"]) == ("192.0.2.9", 22, "ssh", None)
    assert cli("put", f"{ENG}/a", "--notes", "see 192.0.2.9", input=b"x\n").code == 0
    assert cli("engagement", "new", "beta-2026", "--client", "beta").code == 0
    assert cli("mv", f"{ENG}/a", "beta-2026/b").text == f"moved {ENG}/a to beta-2026/b\n"
    hits = json.loads(cli("find", "192.0.2.9", "--json").out)
    assert [(h["engagement"], h["type"], h["name"], h["field"]) for h in hits] == [
        ("acme-2026", "system", "web1", "address"),
        ("beta-2026", "credential", "b", "notes"),
    ]
    assert json.loads(cli("find", "192.0.2.9", "--names-only", "--json").out) == []
    r = cli("find", "WEB")
    assert r.text.splitlines()[1].split() == ["acme-2026", "system", "web1", "name"]


@pytest.mark.skipif(shutil.which("keepassxc-cli") is None, reason="keepassxc-cli not installed")
def test_import_a_kdbx_written_by_keepassxc(cli_vault: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "team.kdbx"
    pw = tmp_path / "kdbx.pass"
    pw.write_text("master-pw\n")
    pw.chmod(0o600)

    def kx(*a: str, stdin: str) -> None:
        subprocess.run(["keepassxc-cli", *a], input=stdin.encode(), check=True, capture_output=True)

    kx("db-create", "-q", "-t", "100", "-p", str(db), stdin="master-pw\nmaster-pw\n")
    kx("add", "-q", "-p", "-u", "root", "--url", "ssh://root@198.51.100.4:2222", str(db),
       "web1 root", stdin="master-pw\nkx-secret\n")  # fmt: skip
    kx("add", "-q", str(db), "empty", stdin="master-pw\n")
    cli = cli_vault
    r = cli("import", ENG, str(db), "--format", "kdbx", "--password-file", str(pw), "--dry-run")
    assert r.code == 0, r.err
    assert (
        r.text.splitlines()[0] == f"would import 1 credentials and 1 systems into {ENG}; 1 skipped"
    )
    assert "kx-secret" not in r.text
    assert cli("get", f"{ENG}/web1-root").code == 3
    r = cli("import", ENG, str(db), "--format", "kdbx", "--password-file", str(pw), "--json")
    rep = json.loads(r.out)
    assert [c["name"] for c in rep["credentials"]] == ["web1-root"]
    assert rep["skipped"] == [{"source": "Passwords/empty", "reason": "no password or secret"}]
    assert cli("get", f"{ENG}/web1-root", "-n").out == b"kx-secret"
    assert cli("get", f"{ENG}/web1-root", "--field", "port").out == b"2222\n"
    # wrong master password (on stdin, never argv): one line, exit 2, nothing imported
    r = cli("import", ENG, str(db), "--format", "kdbx", input=b"wrong\n")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert "wrong" not in r.err
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
