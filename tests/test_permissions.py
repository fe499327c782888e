"""File modes (spec §4.6, property 21): under umask 022 every file credvault creates is
0600 and every directory 0700; and ``put`` has no way to take a secret from argv (§7)."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CANARY, KDF, KDF_ARG, PASSWORDS, CliRunner, VaultFixture
from credvault import Vault
from credvault.cli import build_parser, main


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run(capsys: pytest.CaptureFixture[str], *args: str, stdin: bytes = b"") -> str:
    """The CLI in-process (same code path as the console script), so the umask is ours."""
    import io
    import sys

    real = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main([args[0], "--no-keyring", *args[1:]])
    finally:
        sys.stdin = real
    out, err = capsys.readouterr()
    assert code == 0, (args, err)
    return out


def test_everything_created_is_private_under_umask_022(
    umask022: None,
    tmp_path: Path,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for k, v in cli_env.items():
        monkeypatch.setenv(k, v)
    vault = tmp_path / "work" / "vault"
    vault.parent.mkdir()
    monkeypatch.setenv("CREDVAULT_VAULT", str(vault))
    rec, ident = tmp_path / "work" / "recovery.txt", tmp_path / "work" / "svc.identity"
    export, receipt = tmp_path / "work" / "acme.json", tmp_path / "work" / "receipt.json"
    restored = tmp_path / "work" / "restored"

    _run(capsys, "init", "--kdf", KDF_ARG, "--recovery-file", str(rec))
    _run(capsys, "member", "add", "svc", "--service", "--identity-file", str(ident))
    _run(
        capsys,
        "member",
        "add",
        "bob",
        "--passphrase-file",
        cli_env["TEST_PASS_BOB"],
        "--kdf",
        KDF_ARG,
    )
    _run(capsys, "engagement", "new", "acme-2026", "--client", "acme")
    _run(capsys, "put", "acme-2026/a", stdin=CANARY + b"\n")
    _run(capsys, "client", "export", "acme", "--output", str(export))
    _run(capsys, "backup")
    backups = vault.parent / "vault-backups"
    (backup_file,) = list(backups.glob("*.cvb"))
    beside = [f for f in backups.iterdir() if f != backup_file]  # the purge ledger (issue 12)
    _run(capsys, "engagement", "shred", "acme-2026", "--yes")
    _run(capsys, "receipt", "acme-2026", "--output", str(receipt))
    monkeypatch.setenv("CREDVAULT_PASSPHRASE_FILE", cli_env["TEST_PASS_BOB"])
    assert main(["ls", "--no-keyring"]) == 5  # a failed unlock is noted in a file
    capsys.readouterr()
    monkeypatch.setenv("CREDVAULT_PASSPHRASE_FILE", cli_env["TEST_PASS_ALICE"])
    _run(capsys, "restore", str(backup_file), "--vault", str(restored))

    assert _mode(vault) == 0o700
    assert _mode(backups) == 0o700
    assert _mode(restored) == 0o700
    files = [
        vault / "vault.db",
        vault / "keyslots.json",
        vault / "vault.lock",
        vault / "failed-unlocks.log",
        rec,
        ident,
        export,
        receipt,
        backup_file,
        *beside,
        *restored.iterdir(),
    ]
    for f in files:
        assert _mode(f) == 0o600, f
    for f in vault.iterdir():  # nothing else, and nothing world- or group-readable
        assert _mode(f) == 0o600, f
    left = [f for f in backups.iterdir() if f != backup_file]
    assert all(f.name.startswith("credvault-ledger-") for f in left), left  # no temporary


def test_wal_and_shm_are_private_under_umask_022(umask022: None, tmp_path: Path) -> None:
    path = tmp_path / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-2026", "acme")
        v.put("acme-2026/a", CANARY)
        wal, shm = path / "vault.db-wal", path / "vault.db-shm"
        assert wal.exists()
        assert shm.exists()
        assert _mode(wal) == 0o600
        assert _mode(shm) == 0o600
        v.members.add("bob", passphrase=b"bob-pass")  # key-slot file rewritten
        assert _mode(path / "keyslots.json") == 0o600
        v.members.remove("bob")  # database re-keyed into a new file
        assert _mode(path / "vault.db") == 0o600
        v.put("acme-2026/b", CANARY)
        for f in path.iterdir():
            assert _mode(f) == 0o600, f
    assert _mode(path) == 0o700


def test_existing_empty_directory_is_tightened(umask022: None, tmp_path: Path) -> None:
    path = tmp_path / "vault"
    path.mkdir(mode=0o755)
    assert _mode(path) == 0o755
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    assert _mode(path) == 0o700


# -- no secret from argv -------------------------------------------------------------------
def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError("no subcommands")


def test_put_options_are_exactly_the_documented_ones() -> None:
    put = _subparser("put")
    options = {s for a in put._actions for s in a.option_strings}
    assert options == {
        "-h",
        "--help",
        "--vault",
        "--as",
        "--no-keyring",
        "--username",
        "--system",
        "--kind",
        "--url",
        "--notes",
        "--generate",
        # generator settings (issue 16): sizes, character sets, never a value
        "--classes",
        "--symbols",
        "--exclude",
        "--no-ambiguous",
        "--token",
        "--bytes",
        "--words",
        "--separator",
        "--show",
        "--totp",  # a flag: the TOTP seed itself comes on stdin like any secret (issue 17)
        # client data from a file, stdin or a prompt, never argv (issue 12): paths and names
        "--username-file",
        "--url-file",
        "--notes-file",
        "--fields-from",
        "--ask",
    }
    positionals = [a.dest for a in put._actions if not a.option_strings]
    assert positionals == ["ref"]
    for flag in ("--generate", "--bytes", "--words"):
        generate = next(a for a in put._actions if flag in a.option_strings)
        assert generate.type is int  # a size, never a value


@pytest.mark.parametrize(
    "extra",
    [
        ["hunter2"],
        ["--secret", "hunter2"],
        ["--password", "hunter2"],
        ["--value=hunter2"],
        ["-s", "hunter2"],
        ["--generate", "hunter2"],
    ],
)
def test_put_refuses_a_secret_on_the_command_line(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["put", "acme-2026/web1-root", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("credvault: ")
    assert err.count("\n") == 1


@pytest.mark.cli
def test_cli_put_with_extra_argument_is_a_usage_error(
    cli: CliRunner, vault: VaultFixture, engagement: str
) -> None:
    r = cli("put", f"{engagement}/new", "hunter2", "--vault", str(vault.path), input=b"x\n")
    assert r.code == 2
    assert r.err.startswith("credvault: ")
    assert r.err.count("\n") == 1
    assert "hunter2" not in r.out.decode()
    r = cli("ls", engagement, "--json", "--vault", str(vault.path), "--no-keyring")
    assert r.code == 0, r.err
    assert b"web1-root" in r.out
    assert b'"new"' not in r.out  # nothing was stored


NESTED = [
    ["member", "ls"],
    ["member", "add", "dave"],
    ["engagement", "ls"],
    ["engagement", "new", "e1", "--client", "c"],
    ["system", "ls", "e1"],
    ["config", "get"],
    ["client", "ls"],
]


@pytest.mark.parametrize("argv", NESTED, ids=lambda a: " ".join(a[:2]))
def test_common_options_accepted_after_the_action(argv: list[str]) -> None:
    args = build_parser().parse_args([*argv, "--vault", "/v", "--as", "bob", "--no-keyring"])
    assert args.vault == "/v"
    assert args.as_member == "bob"
    assert args.no_keyring
