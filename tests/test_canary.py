"""Canaries (spec §4.3): a secret, an address, details and other fields put through the CLI
are nowhere in the vault's files — database, WAL, shm, key slots, lock — in any common
encoding, nor in listings or the audit trail."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from conftest import CANARY, KDF, PASSWORDS, CliRunner, Clock
from credvault import Vault

ADDRESS = "canary-7f3a9c-host.example"  # stored lower-case, as validated
DETAILS = "CANARY-7f3a9c-details: rack 42, ☃"
USERNAME = "canary-7f3a9c-user"
URL = "https://canary-7f3a9c-url.example/login"
NOTES = "CANARY-7f3a9c-notes: rotate after go-live"

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What conftest's ``cli_vault`` makes (alice admin, bob, acme-2026 led by alice), once."""
    path = tmp_path_factory.mktemp("template") / "vault"
    clock = Clock()
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        v.members.add("bob", passphrase=PASSWORDS["bob"].encode())
        v.engagements.create("acme-2026", "acme")
    return path


@pytest.fixture
def cli_vault(template: Path, cli: CliRunner, cli_env: dict[str, str]) -> CliRunner:
    shutil.copytree(template, cli_env["CREDVAULT_VAULT"])
    return cli


def _needles() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in {
        "secret": CANARY,
        "address": ADDRESS.encode(),
        "details": DETAILS.encode(),
        "username": USERNAME.encode(),
        "url": URL.encode(),
        "notes": NOTES.encode(),
    }.items():
        out[name] = value
        out[f"{name}-upper"] = value.upper()
        out[f"{name}-hex"] = value.hex().encode()
        out[f"{name}-base64"] = base64.b64encode(value)
        out[f"{name}-utf16"] = value.decode().encode("utf-16-le")
    out["secret-ascii-part"] = CANARY.split(b"\xe2")[0]  # the printable prefix alone
    return out


def _found(data: bytes) -> list[str]:
    return [name for name, needle in _needles().items() if needle in data]


def _scan(directory: Path) -> dict[str, list[str]]:
    hits = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            found = _found(f.read_bytes())
            if found:
                hits[f.name] = found
    return hits


def _store_canaries(cli: CliRunner) -> None:
    r = cli(
        "system",
        "add",
        "acme-2026/web1",
        "--address",
        ADDRESS,
        "--port",
        "22",
        "--details",
        DETAILS,
    )
    assert r.code == 0, r.err
    r = cli(
        "put",
        "acme-2026/web1-root",
        "--username",
        USERNAME,
        "--system",
        "web1",
        "--url",
        URL,
        "--notes",
        NOTES,
        input=CANARY + b"\n",
    )
    assert r.code == 0, r.err
    assert not _found(r.out + r.err.encode())


def test_canaries_absent_from_every_file(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    vault = Path(cli_env["CREDVAULT_VAULT"])
    _store_canaries(cli_vault)

    # they were stored: the CLI gives them back
    r = cli_vault("get", "acme-2026/web1-root", "-n")
    assert r.code == 0
    assert r.out == CANARY
    r = cli_vault("get", "acme-2026/web1-root", "--field", "address")
    assert r.code == 0
    assert r.out == ADDRESS.encode() + b"\n"
    r = cli_vault("system", "show", "acme-2026/web1", "--json")
    assert r.code == 0
    assert json.loads(r.out)["details"] == DETAILS

    files = {f.name for f in vault.iterdir()}
    assert {"vault.db", "keyslots.json", "vault.lock"} <= files
    assert _scan(vault) == {}

    # history and trash hold the same values (issue 16): still nowhere in the files
    r = cli_vault("put", "acme-2026/web1-root", input=b"replacement\n")  # canary -> version 1
    assert r.code == 0, r.err
    r = cli_vault("edit", "acme-2026/web1-root", "--clear", "notes")  # notes -> version 2
    assert r.code == 0, r.err
    r = cli_vault("get", "acme-2026/web1-root", "--version", "1", "-n")
    assert r.out == CANARY
    r = cli_vault("history", "acme-2026/web1-root", "--json")
    assert r.code == 0
    assert _found(r.out) == []
    assert cli_vault("rm", "acme-2026/web1-root").code == 0  # to the trash, history with it
    assert cli_vault("system", "rm", "acme-2026/web1").code == 0
    r = cli_vault("trash", "ls", "acme-2026", "--json")
    assert _found(r.out + r.err.encode()) == []
    assert _scan(vault) == {}
    assert cli_vault("trash", "restore", "acme-2026/web1-root").code == 0
    assert cli_vault("trash", "restore", "--system", "acme-2026/web1").code == 0

    # listings and the audit trail name items, never values
    for args in (
        ("ls", "--json"),
        ("audit", "--json"),
        ("system", "ls", "acme-2026", "--json"),
        ("engagement", "show", "acme-2026", "--json"),
    ):
        r = cli_vault(*args)
        assert r.code == 0, (args, r.err)
        assert _found(r.out + r.err.encode()) == [], args
    assert _scan(vault) == {}


def test_canaries_absent_from_wal_and_shm(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    """With another connection holding the database open, the CLI's writes stay in the WAL
    (no checkpoint on close): the WAL's frames must be ciphertext too."""
    vault = Path(cli_env["CREDVAULT_VAULT"])
    with Vault.open(vault, "bob", PASSWORDS["bob"], kdf=KDF) as held:
        _store_canaries(cli_vault)
        r = cli_vault("get", "acme-2026/web1-root", "-n")
        assert r.code == 0
        assert r.out == CANARY
        wal = vault / "vault.db-wal"
        assert wal.exists()
        assert wal.stat().st_size > 0
        assert (vault / "vault.db-shm").exists()
        assert _scan(vault) == {}
        assert held.member == "bob"
    assert _scan(vault) == {}
    backups = vault.parent / f"{vault.name}-backups"
    r = cli_vault("backup")
    assert r.code == 0, r.err
    assert list(backups.iterdir())
    assert _scan(backups) == {}
