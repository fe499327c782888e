"""Without a terminal (cron, CI, a pipe) nothing that would prompt hangs or guesses: each such
command refuses with one line and its exit code; given files instead, the same commands work."""

from __future__ import annotations

from conftest import KDF_ARG, CliRunner

KDF_ARGS = ("--kdf", KDF_ARG)


def test_a_command_with_no_passphrase_and_no_terminal_is_locked(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli_vault("ls", env={"CREDVAULT_PASSPHRASE_FILE": ""})
    assert (r.code, r.out) == (5, b"")
    assert r.err.startswith("credvault: vault is locked for 'alice': no passphrase available")
    assert r.err.count("\n") == 1


def test_init_with_no_passphrase_and_no_terminal_is_refused(
    cli: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli("init", *KDF_ARGS, env={"CREDVAULT_PASSPHRASE_FILE": ""})
    assert r.code == 2
    assert r.err.startswith("credvault: no passphrase: set CREDVAULT_PASSPHRASE_FILE")
    assert r.err.count("\n") == 1


def test_member_name_defaults_to_the_login_name(cli: CliRunner, cli_env: dict[str, str]) -> None:
    """No --as, no CREDVAULT_MEMBER: the vault's first member is the login name."""
    import getpass

    me = getpass.getuser()
    r = cli("init", *KDF_ARGS, env={"CREDVAULT_MEMBER": ""})
    assert r.code == 0, r.err
    r = cli("member", "ls", "--json", env={"CREDVAULT_MEMBER": ""})
    assert r.code == 0, r.err
    assert me.encode() in r.out


def test_member_reset_needs_a_new_passphrase_file_without_a_terminal(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    r = cli_vault("member", "reset", "bob")
    assert (r.code, r.out) == (2, b"")
    assert r.err == "credvault: no terminal to ask bob's new passphrase: use --passphrase-file\n"
    r = cli_vault(
        "member", "reset", "bob", "--passphrase-file", cli_env["TEST_PASS_CAROL"], *KDF_ARGS
    )
    assert r.code == 0, r.err
    assert r.out == b"reset member bob: new keys; their grants must be made again\n"
    bob = {"CREDVAULT_MEMBER": "bob"}
    r = cli_vault("ls", env={**bob, "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]})
    assert r.code == 5  # the old passphrase opens nothing
    r = cli_vault("ls", env={**bob, "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_CAROL"]})
    assert r.code == 0, r.err
