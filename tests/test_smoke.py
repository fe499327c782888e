"""The main job end to end: init, put, get — through the library and the CLI."""

from __future__ import annotations

from conftest import CliRunner, VaultFixture


def test_library_round_trip(vault: VaultFixture, engagement: str) -> None:
    with vault.open("bob") as v:
        c = v.get(f"{engagement}/web1-root")
        assert c.secret.reveal() == b"hunter2"
        assert c.address == "10.0.0.1"
        assert "hunter2" not in repr(c)


def test_cli_round_trip(cli_vault: CliRunner) -> None:
    r = cli_vault("put", "acme-2026/db", "--username", "postgres", input=b"s3cret\n")
    assert r.code == 0, r.err
    r = cli_vault("get", "acme-2026/db")
    assert (r.code, r.out) == (0, b"s3cret\n")
    r = cli_vault("get", "acme-2026/db", "-n", "--field", "username")
    assert (r.code, r.out) == (0, b"postgres")
