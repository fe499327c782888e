"""Import parsers against files written by the real tools: keepassxc-cli and pass/gpg.

The KeePass files are made with ``keepassxc-cli`` (db-create, mkdir, add, rm, export), the
pass store with ``pass insert`` under a throw-away GnuPG key made in the test. Bitwarden's
export needs a Bitwarden server to produce, so its fixture follows the documented format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from credvault import importers as im
from credvault.errors import InvalidInput
from credvault.secret import Secret

KX = shutil.which("keepassxc-cli")
PW = "kdbx-master-pw"
needs_kx = pytest.mark.skipif(KX is None, reason="keepassxc-cli not installed")


def _kx(*args: str, stdin: str) -> None:
    subprocess.run(["keepassxc-cli", *args], input=stdin.encode(), check=True, capture_output=True)


@pytest.fixture(scope="module")
def kdbx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KDBX made by keepassxc-cli: groups, an ssh URL, duplicates, an empty password, a
    deleted entry (recycle bin)."""
    db = tmp_path_factory.mktemp("kx") / "team.kdbx"
    _kx("db-create", "-q", "-t", "100", "-p", str(db), stdin=f"{PW}\n{PW}\n")
    _kx("mkdir", "-q", str(db), "acme", stdin=f"{PW}\n")
    _kx(
        "add", "-q", "-p", "-u", "root", "--url", "ssh://root@203.0.113.10:2222",
        "--notes", "rack 4", str(db), "acme/web1 root", stdin=f"{PW}\ns3cret-1\n",
    )  # fmt: skip
    _kx(
        "add", "-q", "-p", "-u", "admin", "--url", "https://portal.example.com/login",
        str(db), "acme/Portal (admin)", stdin=f"{PW}\nportal-pw\n",
    )  # fmt: skip
    _kx("mkdir", "-q", str(db), "beta", stdin=f"{PW}\n")
    _kx("add", "-q", "-p", str(db), "beta/Portal (admin)", stdin=f"{PW}\nsecond-portal\n")
    _kx("add", "-q", "-u", "nobody", str(db), "no password", stdin=f"{PW}\n")
    _kx("add", "-q", "-p", str(db), "old entry", stdin=f"{PW}\ngone-pw\n")
    _kx("rm", "-q", str(db), "old entry", stdin=f"{PW}\n")
    return db


def _by_name(plan: im.ImportPlan) -> dict[str, im.ImportItem]:
    return {i.name: i for i in plan.items}


def _check_keepass_plan(plan: im.ImportPlan) -> None:
    items = _by_name(plan)
    assert sorted(items) == ["Portal-admin", "Portal-admin-2", "web1-root"]
    web = items["web1-root"]
    assert web.secret.reveal() == b"s3cret-1"
    assert (web.username, web.notes, web.url) == ("root", "rack 4", None)
    assert web.system == "203.0.113.10"
    assert plan.systems == [im.ImportSystem("203.0.113.10", "203.0.113.10", 2222, "ssh")]
    assert items["Portal-admin"].url == "https://portal.example.com/login"
    assert items["Portal-admin"].system is None
    # Deduplicated in source order: the acme group's entry first, then beta's.
    assert items["Portal-admin"].secret.reveal() == b"portal-pw"
    assert items["Portal-admin-2"].secret.reveal() == b"second-portal"
    reasons = {s.source.rsplit("/", 1)[-1]: s.reason for s in plan.skipped}
    assert reasons["no password"] == "no password or secret"
    assert reasons["old entry"] == "in the recycle bin"


@needs_kx
def test_kdbx_through_keepassxc_cli(kdbx: Path) -> None:
    entries = im.read_source("kdbx", kdbx, password=Secret(PW))
    _check_keepass_plan(im.build_plan(entries))


@needs_kx
def test_kdbx_wrong_password_is_one_clear_error(kdbx: Path) -> None:
    with pytest.raises(im.SourceError, match=r"keepassxc-cli could not open team\.kdbx") as ei:
        im.read_source("kdbx", kdbx, password=Secret("wrong"))
    assert "wrong" not in str(ei.value)


@needs_kx
@pytest.mark.parametrize(("fmt", "flag"), [("keepass-xml", "xml"), ("keepass-csv", "csv")])
def test_keepassxc_exports(kdbx: Path, tmp_path: Path, fmt: str, flag: str) -> None:
    out = subprocess.run(
        ["keepassxc-cli", "export", "-q", "-f", flag, str(kdbx)],
        input=f"{PW}\n".encode(),
        check=True,
        capture_output=True,
    ).stdout
    f = tmp_path / f"export.{flag}"
    f.write_bytes(out)
    plan = im.build_plan(im.read_source(fmt, f))
    _check_keepass_plan(plan)


@needs_kx
def test_existing_names_are_skipped_not_overwritten(kdbx: Path) -> None:
    entries = im.read_source("kdbx", kdbx, password=Secret(PW))
    plan = im.build_plan(
        entries,
        existing_credentials={"web1-root"},
        existing_systems={"web1": ("203.0.113.10", 2222, "ssh")},
    )
    assert "web1-root" not in _by_name(plan)
    assert ("Passwords/acme/web1 root", "credential 'web1-root' exists already") in [
        tuple(s) for s in plan.skipped
    ]
    assert plan.systems == []  # the host matched an existing system
    report = json.dumps(plan.to_json())
    assert "portal-pw" not in report
    assert "second-portal" not in report


def test_xml_with_entities_is_refused(tmp_path: Path) -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><KeePassFile>&a;</KeePassFile>'
    f = tmp_path / "bomb.xml"
    f.write_bytes(bomb)
    with pytest.raises(im.SourceError, match="DOCTYPE"):
        im.read_source("keepass-xml", f)


@pytest.fixture
def gnupg() -> Iterator[dict[str, str]]:
    """A throw-away GnuPG home (short path: gpg-agent's socket must fit) with one key."""
    if shutil.which("gpg") is None or shutil.which("pass") is None:
        pytest.skip("gpg or pass not installed")
    home = tempfile.mkdtemp(prefix="cvg", dir="/tmp")
    env = {**os.environ, "GNUPGHOME": home}
    try:
        subprocess.run(
            ["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
             "credvault-test <t@example.invalid>", "future-default", "default", "never"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        yield env
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_pass_store_through_gpg(
    gnupg: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    env = {**gnupg, "PASSWORD_STORE_DIR": str(store)}
    subprocess.run(["pass", "init", "t@example.invalid"], env=env, check=True, capture_output=True)

    def insert(name: str, body: str) -> None:
        subprocess.run(
            ["pass", "insert", "-m", name], input=body.encode(), env=env, check=True,
            capture_output=True,
        )  # fmt: skip

    insert("acme/web1", "pw-web1\nlogin: root\nhost: 198.51.100.7\nport: 2200\nrack 4, row 2\n")
    insert("acme/portal", "pw-portal\nurl: https://portal.example.com\n")
    insert("empty", "\n")
    monkeypatch.setenv("GNUPGHOME", gnupg["GNUPGHOME"])
    plan = im.build_plan(im.read_source("pass", store))
    items = _by_name(plan)
    assert sorted(items) == ["acme-portal", "acme-web1"]
    web = items["acme-web1"]
    assert web.secret.reveal() == b"pw-web1"
    assert (web.username, web.notes) == ("root", "rack 4, row 2")
    assert plan.systems == [im.ImportSystem("198.51.100.7", "198.51.100.7", 2200, None)]
    assert web.system == "198.51.100.7"
    assert items["acme-portal"].url == "https://portal.example.com"
    assert plan.skipped == [im.Skipped("empty", "no password or secret")]


def test_pass_store_undecryptable_file_is_reported(tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    (store / ".gpg-id").write_text("nobody\n")
    (store / "junk.gpg").write_bytes(b"not gpg at all")
    plan = im.build_plan(im.read_source("pass", store))
    assert plan.items == []
    assert plan.skipped == [im.Skipped("junk", "gpg could not decrypt it")]


BITWARDEN = {
    "encrypted": False,
    "folders": [{"id": "f1", "name": "Acme"}],
    "items": [
        {
            "id": "1", "folderId": "f1", "type": 1, "name": "Router admin", "notes": "core",
            "fields": [{"name": "host", "value": "192.0.2.1:8443", "type": 0}],
            "login": {"username": "admin", "password": "rt-pw", "totp": "JBSWY3DP",
                      "uris": [{"uri": "https://192.0.2.1:8443/"}, {"uri": "https://x/"}]},
        },
        {"id": "2", "folderId": None, "type": 2, "name": "Alarm code", "notes": "1234",
         "secureNote": {"type": 0}},
        {"id": "3", "folderId": None, "type": 3, "name": "Company card", "card": {}},
        {"id": "4", "folderId": None, "type": 1, "name": "Router admin",
         "login": {"username": "ro", "password": "ro-pw", "uris": []}},
    ],
}  # fmt: skip


def test_bitwarden_json(tmp_path: Path) -> None:
    f = tmp_path / "bw.json"
    f.write_text(json.dumps(BITWARDEN))
    plan = im.build_plan(im.read_source("bitwarden-json", f))
    items = _by_name(plan)
    assert sorted(items) == ["Alarm-code", "Router-admin", "Router-admin-2"]
    r = items["Router-admin"]
    assert (r.username, r.url, r.notes) == ("admin", "https://192.0.2.1:8443/", "core")
    assert plan.systems == [im.ImportSystem("192.0.2.1", "192.0.2.1", 8443, None)]
    assert items["Alarm-code"].kind == "other"
    assert items["Alarm-code"].secret.reveal() == b"1234"
    reasons = [(s.source, s.reason) for s in plan.skipped]
    assert ("Acme/Router admin", "1 further URIs not imported") in reasons
    assert ("Acme/Router admin", "TOTP seed not imported (the login was)") in reasons
    assert ("Company card", "card items are not imported") in reasons
    f.write_text(json.dumps({"encrypted": True, "items": []}))
    with pytest.raises(im.SourceError, match="encrypted"):
        im.read_source("bitwarden-json", f)


def test_generic_csv_with_mapping(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "Entry,Pass,Login,Server,SSH port\n"
        "db root,pw1,root,db1.acme.example,2222\n"
        "bad port,pw2,x,db2.acme.example,twenty\n"
        "bad host,pw3,x,not a host!,22\n"
        "no secret,,x,,\n"
    )
    mapping = im.parse_mapping("name=Entry,secret=Pass,username=Login,host=Server,port=SSH port")
    plan = im.build_plan(im.read_source("csv", f, mapping=mapping))
    assert [i.name for i in plan.items] == ["db-root"]
    assert plan.systems == [im.ImportSystem("db1.acme.example", "db1.acme.example", 2222, None)]
    assert [s.source for s in plan.skipped] == ["line 3", "line 4", "line 5"]
    with pytest.raises(InvalidInput, match="secret=COLUMN"):
        im.parse_mapping("name=Entry")
    with pytest.raises(im.SourceError, match="no column 'Nope'"):
        im.read_source("csv", f, mapping={"secret": "Nope"})


def test_names_are_cleaned_and_bounded() -> None:
    assert im.clean_name("  Web 1 / root  ") == "Web-1-root"
    assert im.clean_name("...") == "entry"
    assert im.clean_name("ü") == "entry"
    assert im.clean_name("x" * 100) == "x" * 64
    taken = {"x" * 64}
    assert im._unique("x" * 64, taken) == "x" * 62 + "-2"


def test_keepass_custom_fields_go_to_notes_totp_is_reported(tmp_path: Path) -> None:
    """KeePass custom string fields are kept (as lines after the notes), a host field
    becomes a system, a TOTP seed is reported, not hidden in the notes."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><KeePassFile><Meta></Meta><Root><Group>'
        "<Name>Root</Name><Entry>"
        "<String><Key>Title</Key><Value>db</Value></String>"
        "<String><Key>Password</Key><Value>pw</Value></String>"
        "<String><Key>Notes</Key><Value>main db</Value></String>"
        "<String><Key>Host</Key><Value>db1.example.net:5432</Value></String>"
        "<String><Key>Database</Key><Value>sales</Value></String>"
        "<String><Key>otp</Key><Value>otpauth://totp/x?secret=JBSWY3DP</Value></String>"
        "</Entry></Group></Root></KeePassFile>"
    )
    f = tmp_path / "x.xml"
    f.write_text(xml)
    plan = im.build_plan(im.read_source("keepass-xml", f))
    (item,) = plan.items
    assert item.notes == "main db\nDatabase: sales"
    assert "JBSWY3DP" not in (item.notes or "")
    assert plan.systems == [im.ImportSystem("db1.example.net", "db1.example.net", 5432, None)]
    assert plan.skipped == [im.Skipped("Root/db", "TOTP seed not imported (the entry was)")]
