"""Input a user gets wrong, command by command: each is one line on stderr, its own exit
code, nothing on stdout, and the vault unchanged.

Run through the CLI's entry point in-process (``run_in_process``: exactly the subprocess's
environment, piped stdin, no controlling terminal); the subprocess contract itself is held
by test_cli.py and the first examples of test_cli_props.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from conftest import KDF, PASSWORDS, CliResult
from credvault import Vault

from .test_cli import CliVault, assert_one_error_line, build_vault
from .test_cli_props import lib_snapshot, run_in_process

pytestmark = pytest.mark.cli

ENG = "acme-2026"


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> CliVault:
    root = tmp_path_factory.mktemp("cli-input-errors")
    cv = build_vault(root)
    files = {
        "latin1": b"caf\xe9\n",
        "huge": b"x" * (1024 * 1024 + 1),
        "notjson": b"{not json",
        "array": b'["url"]',
        "number": b'{"url": 5}',
        "unknown": b'{"colour": "blue"}',
        "receipt": b'{"format": "credvault-purge-receipt/2"}',
        "badhistory": b"\xff\xfe",
        "recovery": b"",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
        cv.files[name] = str(root / name)
    cv.files["missing"] = str(root / "no-such-file")
    (root / "member5").write_text('{"member": 5}')
    cv.files["member5"] = str(root / "member5")
    cv.files["svc1"] = str(root / "svc1.id")
    with Vault.open(cv.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.members.add("svc1", identity_file=root / "svc1.id")
    BEFORE[str(root)] = lib_snapshot(cv.vault)
    return cv


BEFORE: dict[str, object] = {}  # each module vault's listing before any bad command


@dataclass(frozen=True)
class Bad:
    id: str
    argv: tuple[str, ...]
    code: int
    err: str
    stdin: bytes = b""
    env: tuple[tuple[str, str | None], ...] = ()


CASES = [
    # -- fields from files, JSON and stdin (cli/fields.py)
    Bad(
        "unreadable",
        ("put", f"{ENG}/a", "--username-file", "{missing}"),
        2,
        "cannot read the username from {missing}",
    ),
    Bad("too-long", ("put", f"{ENG}/a", "--notes-file", "{huge}"), 2, "the notes is too long"),
    Bad(
        "not-utf8",
        ("put", f"{ENG}/a", "--notes-file", "{latin1}"),
        2,
        "the notes is not valid UTF-8",
    ),
    Bad(
        "fields-not-json",
        ("put", f"{ENG}/a", "--fields-from", "{notjson}"),
        2,
        "--fields-from: expected a JSON object",
    ),
    Bad(
        "fields-array",
        ("put", f"{ENG}/a", "--fields-from", "{array}"),
        2,
        "--fields-from: expected a JSON object",
    ),
    Bad(
        "fields-number",
        ("put", f"{ENG}/a", "--fields-from", "{number}"),
        2,
        "--fields-from: url must be a string",
    ),
    Bad(
        "fields-unknown",
        ("put", f"{ENG}/a", "--fields-from", "{unknown}"),
        2,
        "--fields-from: unknown field 'colour' (one of ",
    ),
    Bad(
        "two-from-stdin",
        ("put", f"{ENG}/a", "--generate", "--username-file", "-", "--notes-file", "-"),
        2,
        "only one field can be read from stdin",
    ),
    Bad(
        "ask-no-terminal",
        ("put", f"{ENG}/a", "--generate", "--ask", "username"),
        2,
        "no terminal to ask the username: use --username-file",
    ),
    # -- commands
    Bad(
        "two-generators",
        ("put", f"{ENG}/a", "--generate", "--token", "hex"),
        2,
        "use one of --generate, --token and --words",
    ),
    Bad(
        "absent-field",
        ("get", f"{ENG}/web1-root", "--field", "url"),
        3,
        "acme-2026/web1-root has no url",
    ),
    Bad(
        "service-without-key",
        ("member", "add", "svc1", "--service"),
        2,
        "--service needs --identity-file PATH",
    ),
    Bad(
        "invite-sqlcipher",
        ("member", "invite", "carol"),
        2,
        "member invite is for a PostgreSQL team vault: use member add",
    ),
    Bad(
        "join-sqlcipher", ("join",), 2, "join needs a PostgreSQL team vault: --vault postgresql://…"
    ),
    Bad(
        "migrate-to-dir",
        ("migrate", "--to", "/tmp/elsewhere", "--invitations", "/tmp/x"),
        2,
        "--to must be a PostgreSQL connection string (postgresql://…)",
    ),
    Bad(
        "recover-unreadable",
        ("recover", ENG, "--recovery-file", "{missing}", "--grant-to", "bob", "--role", "lead"),
        2,
        "cannot read recovery file {missing}",
    ),
    Bad(
        "history-without-key",
        ("verify-receipt", "{receipt}", "--key-history", "{missing}"),
        2,
        "--key-history needs --public-key: the key you already trust",
    ),
    Bad(
        "history-unreadable",
        ("verify-receipt", "{receipt}", "--public-key", "AAAA", "--key-history", "{badhistory}"),
        2,
        "cannot read key history {badhistory}",
    ),
    Bad(
        "idle-over-ttl",
        ("unlock", "--ttl", "10m", "--idle", "2h"),
        2,
        "invalid --idle: longer than --ttl",
    ),
    Bad(
        "clip-time-word",
        ("get", f"{ENG}/web1-root", "--clip", "--clip-time", "soon"),
        2,
        "invalid clip time: expected 0 to ",
    ),
    # -- values checked by validate.py
    Bad(
        "url-unparseable",
        ("put", f"{ENG}/a", "--generate", "--url", "http://[::1"),
        2,
        "invalid URL",
    ),
    Bad(
        "ipv6-zone",
        ("system", "add", f"{ENG}/db", "--address", "fe80::1%eth/0"),
        2,
        "invalid address: bad IPv6 zone id",
    ),
    # -- who you are, from an identity file (unlock.py)
    Bad(
        "identity-not-json",
        ("ls",),
        2,
        "{latin1} is not a credvault identity file",
        env=(("CREDVAULT_MEMBER", None), ("CREDVAULT_IDENTITY", "{latin1}")),
    ),
    Bad(
        "identity-member-not-text",
        ("ls",),
        2,
        "{member5} is not a credvault identity file",
        env=(("CREDVAULT_MEMBER", None), ("CREDVAULT_IDENTITY", "{member5}")),
    ),
    Bad(
        "identity-unreadable",
        ("ls",),
        2,
        "cannot read identity file {missing}",
        env=(("CREDVAULT_PASSPHRASE_FILE", None), ("CREDVAULT_IDENTITY", "{missing}")),
    ),
    Bad(
        "identity-of-another-member",
        ("ls",),
        5,
        "identity file is for member 'svc1', not 'bob'",
        env=(
            ("CREDVAULT_MEMBER", "bob"),
            ("CREDVAULT_PASSPHRASE_FILE", None),
            ("CREDVAULT_IDENTITY", "{svc1}"),
        ),
    ),
    Bad(
        "service-with-a-passphrase",
        ("ls",),
        5,
        "vault is locked for 'svc1': no passphrase available",
        env=(("CREDVAULT_MEMBER", "svc1"),),
    ),
]


def _fill(cv: CliVault, text: str) -> str:
    return text.format(**cv.files)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code(ev: CliVault, bad: Bad) -> None:
    argv = [_fill(ev, a) for a in bad.argv]
    env = {k: None if v is None else _fill(ev, v) for k, v in bad.env}
    cv = CliVault(ev.root, ev.environ(env), ev.files)
    r: CliResult = run_in_process(cv, *argv, input=bad.stdin)
    line = assert_one_error_line(r)
    assert r.code == bad.code, (r.code, line)
    assert line.startswith("credvault: " + _fill(ev, bad.err)), line


def test_nothing_was_changed(ev: CliVault) -> None:
    """After the table (or some of it, in any order): the vault lists what it did before."""
    assert lib_snapshot(ev.vault) == BEFORE[str(ev.root)]
