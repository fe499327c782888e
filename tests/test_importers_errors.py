"""Import sources that are not what they claim: each is refused with one clear line (a
``SourceError``, exit 2, nothing imported) or its entry is skipped with the reason; never a
traceback. Complements test_importers.py (the well-formed exports of each tool)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from credvault import importers as im
from credvault.errors import InvalidInput
from credvault.importers import SourceError
from credvault.secret import Secret

BAD_SOURCES = {
    "xml-not-xml": ("keepass-xml", b"<KeePassFile><Root>", "not a KeePass XML export: "),
    "xml-other-root": ("keepass-xml", b"<html/>", "no KeePassFile element"),
    "kp-csv-no-columns": ("keepass-csv", b"Name,Secret\nx,y\n", "expected Title and Password"),
    "kp-csv-not-utf8": ("keepass-csv", b"Title,Password\ncaf\xe9,x\n", "the CSV file is not UTF-8"),
    "kp-csv-huge-field": (
        "keepass-csv",
        b'Title,Password\n"' + b"x" * 200_000 + b'",y\n',
        "malformed CSV: ",
    ),
    "bw-not-json": ("bitwarden-json", b"{items: []}", "not a Bitwarden JSON export: invalid JSON"),
    "bw-no-items": ("bitwarden-json", b'{"items": {}}', "not a Bitwarden JSON export: no items"),
    "bw-folders-not-a-list": (
        "bitwarden-json",
        b'{"items": [], "folders": {"id": "f"}}',
        "not a Bitwarden JSON export: folders is not a list",
    ),
    "bw-login-not-an-object": (
        "bitwarden-json",
        b'{"items": [{"type": 1, "name": "x", "login": ["x"]}]}',
        "not a Bitwarden JSON export: item 1: login is not an object",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_source_that_is_not_its_format_is_one_clear_error(tmp_path: Path, case: str) -> None:
    fmt, data, message = BAD_SOURCES[case]
    f = tmp_path / "source"
    f.write_bytes(data)
    with pytest.raises(SourceError) as e:
        im.read_source(fmt, f)
    assert str(e.value).startswith(message) or message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_read_source_refuses_what_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "x.csv"
    f.write_text("Title,Password\n")
    with pytest.raises(InvalidInput, match="unknown import format 'lastpass'"):
        im.read_source("lastpass", f)
    with pytest.raises(InvalidInput, match="needs a column mapping"):
        im.read_source("csv", f)
    with pytest.raises(SourceError, match="the CSV file is empty"):
        im.read_source(
            "csv",
            tmp_path / "empty.csv" if (tmp_path / "empty.csv").touch() is None else f,
            mapping={"secret": "Password"},
        )
    with pytest.raises(SourceError, match=f"cannot read {tmp_path / 'missing.csv'}"):
        im.read_source("keepass-csv", tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="is not a directory"):
        im.read_source("pass", f)
    with pytest.raises(SourceError, match="is not a pass store"):
        im.read_source("pass", tmp_path)
    with pytest.raises(InvalidInput, match="needs its master password"):
        im.read_source("kdbx", f)
    monkeypatch.setenv("PATH", str(tmp_path))  # no keepassxc-cli anywhere
    with pytest.raises(SourceError, match="keepassxc-cli not found"):
        im.read_source("kdbx", f, password=Secret(b"pw"))
    with pytest.raises(InvalidInput, match="bad column mapping 'colour=Blue'"):
        im.parse_mapping("secret=Pass,colour=Blue")


def test_bitwarden_items_of_the_wrong_shape_are_skipped_with_the_reason(tmp_path: Path) -> None:
    doc = {
        "items": [
            "not an item",
            {"type": 5, "name": "deploy key", "sshKey": {"privateKey": "-----BEGIN KEY-----"}},
        ]
    }
    f = tmp_path / "bw.json"
    f.write_text(json.dumps(doc))
    entries = im.read_source("bitwarden-json", f)
    skipped = [(e.source, e.reason) for e in entries if isinstance(e, im.Skipped)]
    assert ("item 1", "not an object") in skipped
    plan = im.build_plan(entries)
    (key,) = plan.items
    assert (key.name, key.kind, key.secret.reveal()) == (
        "deploy-key",
        "ssh-key",
        b"-----BEGIN KEY-----",
    )


def test_entries_with_bad_fields_are_skipped_and_long_names_stay_unique() -> None:
    big = Secret(b"x" * (1024 * 1024 + 1))
    long = "n" * 70
    entries = [
        im.RawEntry("line 2", "big", big),
        im.RawEntry("line 3", "two-lines", Secret(b"pw"), username="root\nadmin"),
        im.RawEntry("line 4", "bad-port-url", Secret(b"pw"), url="ssh://db.example:99999/"),
        *(im.RawEntry(f"line {n}", long, Secret(b"pw")) for n in (5, 6, 7)),
    ]
    plan = im.build_plan(entries)
    reasons = {s.source: s.reason for s in plan.skipped}
    assert reasons["line 2"] == "secret larger than 1 MiB"
    assert "username" in reasons["line 3"]
    assert set(reasons) == {"line 2", "line 3"}
    names = [i.name for i in plan.items]
    assert names == ["bad-port-url", "n" * 64, "n" * 62 + "-2", "n" * 62 + "-3"]
    # an ssh URL whose port is out of range stays a URL: no system is made from it
    (url_item,) = [i for i in plan.items if i.name == "bad-port-url"]
    assert (url_item.url, url_item.system, plan.systems) == ("ssh://db.example:99999/", None, [])
