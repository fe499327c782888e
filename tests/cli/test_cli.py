"""The ``credvault`` command as a user runs it: a table of (argv, stdin) → exit code and the one
line on stderr, in the style of CLI snapshot tests; then what ``put``/``get`` and the listing
commands print.

Every case runs ``python -m credvault`` as a subprocess in its own session (no controlling
terminal, so nothing ever prompts). The error table runs against one module-scoped vault that
no case may change (checked at the end by comparing the listings before and after); the
cases run a few at a time in threads to keep the module fast.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import credvault
from conftest import KDF, KDF_ARG, PASSWORDS, CliResult
from credvault import Vault

pytestmark = pytest.mark.cli

MIB = 1024 * 1024
NAME_RULE = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
ADDR_ERR = "credvault: invalid address: expected an IPv4 or IPv6 address or a DNS name"
PORT_ERR = "credvault: invalid port: expected a number from 1 to 65535"
ROLE_ERR = "credvault: unknown role: expected one of lead, engineer, reader, auditor"
DATE_FORMS = "expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
LOCKED_ERR = (
    "credvault: vault is locked for 'alice': no passphrase available (set "
    "CREDVAULT_PASSPHRASE_FILE, CREDVAULT_IDENTITY, run `credvault unlock`, or use a terminal)"
)
SSH_KEY = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"QyNTUxOQAAACBdGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleXRlc3RrZXkAAAAA\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)


# -- a CLI vault shared by a module ---------------------------------------------------------
def make_env(root: Path) -> dict[str, str]:
    """The recipe of conftest.cli_env, under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        CREDVAULT_VAULT=str(root / "clivault"),
        CREDVAULT_MEMBER="alice",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    for name, pw in PASSWORDS.items():
        f = root / f"{name}.pass"
        f.write_text(pw + "\n")
        f.chmod(0o600)
        env[f"TEST_PASS_{name.upper()}"] = str(f)
    env["CREDVAULT_PASSPHRASE_FILE"] = env["TEST_PASS_ALICE"]
    return env


@dataclass
class CliVault:
    root: Path
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def vault(self) -> Path:
        return Path(self.env["CREDVAULT_VAULT"])

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "credvault", *args]

    def environ(self, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def run(
        self, *args: str, input: bytes = b"", env: Mapping[str, str | None] | None = None
    ) -> CliResult:
        p = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            env=self.environ(env),
            timeout=60,
            start_new_session=True,  # no controlling terminal: never prompts
        )
        return CliResult(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))

    def ok(self, *args: str, input: bytes = b"") -> CliResult:
        r = self.run(*args, input=input)
        assert r.code == 0, (args, r.err)
        assert r.err == "", r.err
        return r

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args).out)


def build_vault(root: Path, *, closed_engagement: bool = False) -> CliVault:
    """Admin alice, member bob (no grant), acme-2026 led by alice with system web1 and
    credential web1-root (``hunter2``, username root, linked to web1); optionally old-2025
    (client acme) closed with a 30-day grace.

    Built through the library in-process (what ``init``, ``member add``, ``engagement new``,
    ``system add``, ``put`` and ``engagement close`` call), not through seven CLI processes:
    these fixtures set the scene; the commands themselves are tested below and in
    ``cli_vault_template`` (conftest), which is still built with the CLI."""
    cv = CliVault(root, make_env(root))
    Vault.init(cv.vault, "alice", PASSWORDS["alice"], kdf=KDF, recovery_file=root / "recovery")
    with Vault.open(cv.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.members.add("bob", passphrase=PASSWORDS["bob"].encode())
        v.engagements.create("acme-2026", "acme")
        v.systems.add("acme-2026/web1", "10.0.0.1", port=22, protocol="ssh", details="debian 12")
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root", system="web1")
        if closed_engagement:
            v.engagements.create("old-2025", "acme")
            v.engagements.close("old-2025", grace_days=30)
    return cv


SNAPSHOT_COMMANDS: list[tuple[str, ...]] = [
    ("ls", "--json"),
    ("engagement", "ls", "--json"),
    ("system", "ls", "acme-2026", "--json"),
    ("system", "show", "acme-2026/web1", "--json"),
    ("engagement", "members", "acme-2026", "--json"),
    ("engagement", "show", "old-2025", "--json"),
    ("member", "ls", "--json"),
    ("config", "get", "--json"),
    ("get", "acme-2026/web1-root", "--json"),
]


def cli_snapshot(cv: CliVault) -> dict[str, object]:
    """What the vault holds, as the listing commands print it (run concurrently: all read)."""

    def one(cmd: tuple[str, ...]) -> tuple[str, object]:
        r = cv.run(*cmd)
        if r.code != 0:
            return " ".join(cmd), f"exit {r.code}: {r.err}"
        return " ".join(cmd), json.loads(r.out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, SNAPSHOT_COMMANDS))


def assert_one_error_line(r: CliResult) -> str:
    """The error contract: one line on stderr, ``credvault: …``, no traceback, no stdout."""
    assert "Traceback" not in r.err, r.err
    assert r.err.endswith("\n"), f"not one line: {r.err!r}"
    assert r.err.count("\n") == 1, f"not one line: {r.err!r}"
    assert r.err.startswith("credvault: "), r.err
    assert "\x1b" not in r.err, r.err
    assert "internal error" not in r.err, r.err
    assert r.out == b"", r.out[:200]
    return r.err.rstrip("\n")


# -- the error table -------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    err: str
    prefix: bool = False  # err is a prefix of the line (argparse wording varies by version)
    stdin: bytes = b""
    env: tuple[tuple[str, str | None], ...] = ()
    serial: bool = False  # writes failed-unlocks.log: run alone, after the concurrent cases


def case(
    id: str,
    argv: list[str],
    code: int,
    err: str,
    *,
    prefix: bool = False,
    stdin: bytes = b"",
    env: dict[str, str | None] | None = None,
    serial: bool = False,
) -> Case:
    return Case(id, tuple(argv), code, err, prefix, stdin, tuple((env or {}).items()), serial)


AS_BOB = {"CREDVAULT_PASSPHRASE_FILE": "{bobpass}"}
PAST = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
WEB1 = ["system", "add", "acme-2026/web1"]  # add-or-update: a wrong accept would change web1
PUT_ROOT = ["put", "acme-2026/web1-root"]  # replace: a wrong accept would change the secret


def _name_case(id: str, value: str, shown: str) -> Case:
    return case(
        id,
        ["engagement", "new", "--client", "acme", "--", value],
        2,
        f"credvault: invalid engagement name {shown!r}: {NAME_RULE}",
    )


ERROR_CASES: list[Case] = [
    # usage: argparse, exit 2, one line
    case("usage-no-command", [], 2, "credvault: the following arguments are required: COMMAND", prefix=True),
    case("usage-unknown-command", ["bogus"], 2, "credvault: argument COMMAND: invalid choice: 'bogus'", prefix=True),
    case("usage-unknown-action", ["engagement", "bogus"], 2, "credvault: argument ACTION: invalid choice: 'bogus'", prefix=True),
    case("usage-get-no-ref", ["get"], 2, "credvault: the following arguments are required: ENG/NAME (see `credvault get --help`)"),
    case("usage-engagement-no-action", ["engagement"], 2, "credvault: the following arguments are required: ACTION (see `credvault engagement --help`)"),
    case("usage-new-no-client", ["engagement", "new", "x"], 2, "credvault: the following arguments are required: --client (see `credvault engagement new --help`)"),
    case("usage-grant-no-role", ["grant", "acme-2026", "bob"], 2, "credvault: the following arguments are required: role (see `credvault grant --help`)"),
    case("usage-system-no-address", ["system", "add", "acme-2026/web2"], 2, "credvault: system add needs an address: --address-file PATH, --fields-from PATH, --ask address or --address"),
    case("usage-retain-no-until", ["engagement", "retain", "old-2025", "--reason", "x"], 2, "credvault: the following arguments are required: --until (see `credvault engagement retain --help`)"),
    case("usage-set-no-flag", ["engagement", "set", "acme-2026"], 2, "credvault: one of the arguments --require-reason --no-require-reason is required (see `credvault engagement set --help`)"),
    case("usage-unknown-option", ["get", "acme-2026/web1-root", "--bogus"], 2, "credvault: unrecognized arguments: --bogus", prefix=True),
    case("usage-field-choice", ["get", "acme-2026/web1-root", "--field", "bogus"], 2, "credvault: argument --field: invalid choice: 'bogus'", prefix=True),
    case("usage-generate-not-int", ["put", "acme-2026/gen", "--generate", "abc"], 2, "credvault: argument --generate: invalid int value: 'abc'", prefix=True),
    case("generate-too-short", ["put", "acme-2026/gen", "--generate", "7"], 2, "credvault: generated length must be 8 to 1024"),
    case("kdf-garbage", ["member", "add", "carol", "--passphrase-file", "{bobpass}", "--kdf", "garbage"], 2, "credvault: invalid --kdf: expected m=KiB,t=N,p=N"),
    case("kdf-below-floor", ["member", "add", "carol", "--passphrase-file", "{bobpass}", "--kdf", "m=1024,t=1,p=1"], 2, "credvault: Argon2id parameters must lie between", prefix=True),
    case("audit-limit-zero", ["audit", "--limit", "0"], 2, "credvault: --limit must be at least 1"),
    case("unlock-ttl-garbage", ["unlock", "--ttl", "bogus"], 2, "credvault: invalid --ttl: expected a number and s, m, h or d (e.g. 8h)"),
    # names
    _name_case("name-too-long", "a" * 65, "<invalid>"),
    _name_case("name-control-char", "ab\x01c", "<invalid>"),
    _name_case("name-escape-sequence", "x\x1b[31m", "<invalid>"),
    _name_case("name-slash", "a/b", "a/b"),
    _name_case("name-empty", "", ""),
    _name_case("name-dot", ".", "."),
    _name_case("name-leading-hyphen", "-x", "-x"),
    _name_case("name-space", "a b", "a b"),
    _name_case("name-non-ascii", "café", "café"),
    case("name-client-empty", ["engagement", "new", "fresh", "--client", ""], 2, f"credvault: invalid client name '': {NAME_RULE}"),
    case("name-client-slash", ["engagement", "new", "fresh", "--client", "a/b"], 2, f"credvault: invalid client name 'a/b': {NAME_RULE}"),
    case("name-member-too-long", ["member", "add", "m" * 65, "--passphrase-file", "{bobpass}", "--kdf", KDF_ARG], 2, f"credvault: invalid member name '<invalid>': {NAME_RULE}"),
    case("name-grant-member-slash", ["grant", "acme-2026", "bad/name", "reader"], 2, f"credvault: invalid member name 'bad/name': {NAME_RULE}"),
    case("name-system-space", ["system", "add", "acme-2026/we b1", "--address", "10.0.0.9"], 2, f"credvault: invalid item name 'we b1': {NAME_RULE}"),
    case("ref-two-slashes", ["get", "acme-2026/a/b"], 2, "credvault: invalid reference: expected ENGAGEMENT/NAME"),
    case("ref-no-slash", ["get", "acme-2026"], 2, "credvault: invalid reference: expected ENGAGEMENT/NAME"),
    case("ref-empty-item", ["put", "acme-2026/"], 2, f"credvault: invalid item name '': {NAME_RULE}", stdin=b"x\n"),
    case("ref-empty-engagement", ["get", "/web1-root"], 2, f"credvault: invalid engagement name '': {NAME_RULE}"),
    case("ref-item-too-long", ["get", "acme-2026/" + "c" * 65], 2, f"credvault: invalid item name '<invalid>': {NAME_RULE}"),
    # addresses (web1 exists: accepting any of these would change it)
    case("address-octet-999", [*WEB1, "--address", "999.1.1.1"], 2, ADDR_ERR),
    case("address-octet-256", [*WEB1, "--address", "10.0.0.256"], 2, ADDR_ERR),
    case("address-empty-label", [*WEB1, "--address", "a..b"], 2, ADDR_ERR),
    case("address-leading-hyphen", [*WEB1, "--address=-x.com"], 2, ADDR_ERR),
    case("address-trailing-hyphen", [*WEB1, "--address", "x-.com"], 2, ADDR_ERR),
    case("address-space", [*WEB1, "--address", "a b.com"], 2, ADDR_ERR),
    case("address-empty", [*WEB1, "--address", ""], 2, ADDR_ERR),
    case("address-three-octets", [*WEB1, "--address", "1.2.3"], 2, ADDR_ERR),
    case("address-underscore", [*WEB1, "--address", "a_b.example.com"], 2, ADDR_ERR),
    case("address-control-char", [*WEB1, "--address", "exa\x01mple.com"], 2, ADDR_ERR),
    case("address-newline", [*WEB1, "--address", "a.com\nb.com"], 2, ADDR_ERR),
    case("address-with-port", [*WEB1, "--address", "10.0.0.1:22"], 2, ADDR_ERR),
    case("address-label-64", [*WEB1, "--address", "x" * 64 + ".com"], 2, ADDR_ERR),
    case("address-too-long", [*WEB1, "--address", "a." * 127 + "com"], 2, ADDR_ERR),
    case("address-bad-ipv6", [*WEB1, "--address", "2001:db8::g"], 2, ADDR_ERR),
    # ports
    case("port-zero", [*WEB1, "--address", "10.0.0.1", "--port", "0"], 2, PORT_ERR),
    case("port-65536", [*WEB1, "--address", "10.0.0.1", "--port", "65536"], 2, PORT_ERR),
    case("port-letters", [*WEB1, "--address", "10.0.0.1", "--port", "abc"], 2, PORT_ERR),
    case("port-negative", [*WEB1, "--address", "10.0.0.1", "--port=-1"], 2, PORT_ERR),
    case("port-empty", [*WEB1, "--address", "10.0.0.1", "--port="], 2, PORT_ERR),
    # kinds and roles
    case("kind-unknown", [*PUT_ROOT, "--kind", "bogus"], 2, "credvault: argument --kind: invalid choice: 'bogus'", prefix=True, stdin=b"x\n"),
    case("kind-empty", [*PUT_ROOT, "--kind", ""], 2, "credvault: argument --kind: invalid choice: ''", prefix=True, stdin=b"x\n"),
    case("role-unknown", ["grant", "acme-2026", "bob", "wizard"], 2, ROLE_ERR),
    case("role-admin", ["grant", "acme-2026", "bob", "admin"], 2, ROLE_ERR),
    case("role-case", ["grant", "acme-2026", "bob", "Lead"], 2, ROLE_ERR),
    case("role-empty", ["grant", "acme-2026", "bob", ""], 2, ROLE_ERR),
    # dates and days
    case("retain-until-past", ["engagement", "retain", "old-2025", "--until", "2001-01-01", "--reason", "client asked"], 2, "credvault: the hold end date is in the past"),
    case("retain-until-two-days-ago", ["engagement", "retain", "old-2025", "--until", PAST, "--reason", "client asked"], 2, "credvault: the hold end date is in the past"),
    case("retain-until-garbage", ["engagement", "retain", "old-2025", "--until", "garbage", "--reason", "client asked"], 2, f"credvault: invalid hold end date: {DATE_FORMS}"),
    case("retain-until-feb-30", ["engagement", "retain", "old-2025", "--until", "2030-02-30", "--reason", "client asked"], 2, f"credvault: invalid hold end date: {DATE_FORMS}"),
    case("retain-reason-empty", ["engagement", "retain", "old-2025", "--until", "2030-01-01", "--reason", ""], 2, "credvault: the reason is empty"),
    case("grant-until-past", ["grant", "acme-2026", "bob", "reader", "--until", "2001-01-01"], 2, "credvault: the expiry is in the past"),
    case("grant-until-garbage", ["grant", "acme-2026", "bob", "reader", "--until", "soon"], 2, f"credvault: invalid expiry: {DATE_FORMS}"),
    case("audit-since-garbage", ["audit", "--since", "yesterday"], 2, f"credvault: invalid since date: {DATE_FORMS}"),
    case("grace-days-letters", ["engagement", "new", "fresh", "--client", "acme", "--grace-days", "abc"], 2, "credvault: invalid grace period: expected a whole number of days"),
    case("close-grace-days-negative", ["engagement", "close", "acme-2026", "--grace-days=-1"], 2, "credvault: invalid grace period: expected a whole number of days"),
    case("config-set-not-a-number", ["config", "set", "purge-grace-days", "abc"], 2, "credvault: invalid purge-grace-days: expected a whole number of days"),
    case("config-set-unknown", ["config", "set", "bogus", "3"], 2, "credvault: unknown setting 'bogus': expected one of purge-grace-days, audit-retention-days, backup-retention-days, trash-days"),
    # secrets and free text (web1-root exists: accepting any of these would replace it)
    case("secret-empty", PUT_ROOT, 2, "credvault: the secret is empty"),
    case("secret-only-newline", PUT_ROOT, 2, "credvault: the secret is empty", stdin=b"\n"),
    case("secret-over-1mib", PUT_ROOT, 2, "credvault: the secret is too large (limit 1048576 bytes)", stdin=b"a" * (MIB + 2)),
    case("secret-1mib-plus-1-and-newline", PUT_ROOT, 2, "credvault: the secret is too large (limit 1048576 bytes)", stdin=b"a" * (MIB + 1) + b"\n"),
    case("username-control-char", [*PUT_ROOT, "--username", "ro\x01ot"], 2, "credvault: username contains control characters", stdin=b"x\n"),
    case("username-newline", [*PUT_ROOT, "--username", "root\nadmin"], 2, "credvault: username contains control characters", stdin=b"x\n"),
    case("url-newline", [*PUT_ROOT, "--url", "https://a\nb"], 2, "credvault: URL contains control characters", stdin=b"x\n"),
    case("notes-too-long", [*PUT_ROOT, "--notes", "n" * (64 * 1024 + 1)], 2, "credvault: notes is too long (limit 65536 bytes)", stdin=b"x\n"),
    case("reason-empty", ["get", "acme-2026/web1-root", "--reason", ""], 2, "credvault: the reason is empty"),
    case("shred-not-confirmed", ["engagement", "shred", "acme-2026"], 2, "credvault: not confirmed: pass --yes to shred without a terminal"),
    case("client-shred-not-confirmed", ["client", "shred", "acme"], 2, "credvault: not confirmed: pass --yes to shred without a terminal"),
    case("passphrase-file-missing", ["ls"], 2, "credvault: cannot read passphrase file {missing}", env={"CREDVAULT_PASSPHRASE_FILE": "{missing}"}),
    case("passphrase-file-empty", ["ls"], 2, "credvault: passphrase file {emptypass} is empty", env={"CREDVAULT_PASSPHRASE_FILE": "{emptypass}"}),
    # not found: 3
    case("missing-credential", ["get", "acme-2026/nope"], 3, "credvault: credential 'acme-2026/nope' not found"),
    case("missing-engagement", ["get", "nope/web1-root"], 3, "credvault: engagement 'nope' not found"),
    case("missing-credential-rm", ["rm", "acme-2026/nope"], 3, "credvault: credential 'acme-2026/nope' not found"),
    case("missing-system-show", ["system", "show", "acme-2026/nope"], 3, "credvault: system 'acme-2026/nope' not found"),
    case("missing-engagement-systems", ["system", "ls", "nope"], 3, "credvault: engagement 'nope' not found"),
    case("missing-engagement-show", ["engagement", "show", "nope"], 3, "credvault: engagement 'nope' not found"),
    case("missing-engagement-ls", ["ls", "nope"], 3, "credvault: engagement 'nope' not found"),
    case("missing-member-rm", ["member", "rm", "nobody"], 3, "credvault: member 'nobody' not found"),
    case("missing-member-grant", ["grant", "acme-2026", "nobody", "reader"], 3, "credvault: member 'nobody' not found"),
    case("missing-member-as", ["ls", "--as", "nobody"], 3, "credvault: no member 'nobody' in this vault (choose with --as NAME or CREDVAULT_MEMBER)"),
    case("missing-system-link", [*PUT_ROOT, "--system", "nope"], 3, "credvault: system 'acme-2026/nope' not found", stdin=b"x\n"),
    case("missing-field", ["get", "acme-2026/web1-root", "--field", "url"], 3, "credvault: acme-2026/web1-root has no url"),
    # access denied: 4 (bob is a member without any grant on acme-2026)
    case("denied-get", ["get", "acme-2026/web1-root", "--as", "bob"], 4, "credvault: access denied: 'bob' may not get on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-list", ["ls", "acme-2026", "--as", "bob"], 4, "credvault: access denied: 'bob' may not list on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-put", [*PUT_ROOT, "--as", "bob"], 4, "credvault: access denied: 'bob' may not put on engagement 'acme-2026' (no grant)", env=AS_BOB, stdin=b"pwned\n"),
    case("denied-rm", ["rm", "acme-2026/web1-root", "--as", "bob"], 4, "credvault: access denied: 'bob' may not rm on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-system-show", ["system", "--as", "bob", "show", "acme-2026/web1"], 4, "credvault: access denied: 'bob' may not system show on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-system-add", ["system", "--as", "bob", "add", "acme-2026/web1", "--address", "10.6.6.6"], 4, "credvault: access denied: 'bob' may not system add on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-members", ["engagement", "--as", "bob", "members", "acme-2026"], 4, "credvault: access denied: 'bob' may not list members on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-close", ["engagement", "--as", "bob", "close", "acme-2026"], 4, "credvault: access denied: 'bob' may not close on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("denied-create-engagement", ["engagement", "--as", "bob", "new", "bobs", "--client", "acme"], 4, "credvault: access denied: 'bob' may not create engagements (admin only)", env=AS_BOB),
    case("denied-add-member", ["member", "--as", "bob", "add", "eve", "--passphrase-file", "{bobpass}", "--kdf", KDF_ARG], 4, "credvault: access denied: 'bob' may not add members (admin only)", env=AS_BOB),
    case("denied-self-grant", ["grant", "acme-2026", "bob", "lead", "--as", "bob"], 4, "credvault: access denied: 'bob' may not grant on engagement 'acme-2026' (members cannot grant themselves)", env=AS_BOB),
    # locked: 5
    case("wrong-passphrase", ["ls"], 5, "credvault: wrong passphrase for member 'alice'", env={"CREDVAULT_PASSPHRASE_FILE": "{wrongpass}"}, serial=True),
    case("wrong-passphrase-get", ["get", "acme-2026/web1-root"], 5, "credvault: wrong passphrase for member 'alice'", env={"CREDVAULT_PASSPHRASE_FILE": "{wrongpass}"}, serial=True),
    case("wrong-passphrase-other-member", ["ls", "--as", "bob"], 5, "credvault: wrong passphrase for member 'bob'", serial=True),
    case("identity-file-garbage", ["ls"], 5, "credvault: not a credvault identity", env={"CREDVAULT_IDENTITY": "{file}"}, serial=True),
    case("no-passphrase", ["ls"], 5, LOCKED_ERR, env={"CREDVAULT_PASSPHRASE_FILE": None}, serial=True),
    case("no-passphrase-put", PUT_ROOT, 5, LOCKED_ERR, env={"CREDVAULT_PASSPHRASE_FILE": None}, stdin=b"pwned\n", serial=True),
    # not a vault, refuse to overwrite, lifecycle rules: 1
    case("not-a-vault-empty-dir", ["ls", "--vault", "{empty}"], 1, "credvault: {empty} is not a credvault vault"),
    case("not-a-vault-env", ["status"], 1, "credvault: {empty} is not a credvault vault", env={"CREDVAULT_VAULT": "{empty}"}),
    case("after-action-vault", ["engagement", "ls", "--json", "--vault", "{empty}"], 1, "credvault: {empty} is not a credvault vault"),
    case("after-action-as", ["system", "show", "acme-2026/web1", "--as", "bob"], 4, "credvault: access denied: 'bob' may not system show on engagement 'acme-2026' (no grant)", env=AS_BOB),
    case("not-a-vault-file", ["ls", "--vault", "{file}"], 1, "credvault: {file} is not a credvault vault", prefix=True),
    case("not-a-vault-missing", ["ls", "--vault", "{missing}"], 1, "credvault: {missing} is not a credvault vault", prefix=True),
    case("init-twice", ["init", "--kdf", KDF_ARG], 1, "credvault: {vault} already holds a vault; refusing to overwrite it"),
    case("init-twice-other-admin", ["init", "--kdf", KDF_ARG, "--admin", "mallory", "--vault", "{vault}"], 1, "credvault: {vault} already holds a vault; refusing to overwrite it"),
    case("init-into-a-file", ["init", "--kdf", KDF_ARG, "--vault", "{file}"], 1, "credvault: Not a directory: {file}"),
    case("closed-put", ["put", "old-2025/x"], 1, "credvault: engagement 'old-2025' is closed: it takes no changes", stdin=b"x\n"),
    case("receipt-not-purged", ["receipt", "acme-2026"], 1, "credvault: engagement 'acme-2026' has not been purged"),
]  # fmt: skip

RANDOM_FILE_BYTES = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def ro(tmp_path_factory: pytest.TempPathFactory) -> CliVault:
    """The vault of the error table; no case may change what it holds."""
    root = tmp_path_factory.mktemp("cli-ro")
    cv = build_vault(root, closed_engagement=True)
    (root / "empty").mkdir()
    (root / "random.bin").write_bytes(RANDOM_FILE_BYTES)
    (root / "wrong.pass").write_text("not-the-passphrase\n")
    (root / "empty.pass").write_text("")
    cv.files = {
        "{vault}": str(cv.vault),
        "{empty}": str(root / "empty"),
        "{file}": str(root / "random.bin"),
        "{missing}": str(root / "missing"),
        "{wrongpass}": str(root / "wrong.pass"),
        "{emptypass}": str(root / "empty.pass"),
        "{bobpass}": cv.env["TEST_PASS_BOB"],
    }
    return cv


@pytest.fixture(scope="module")
def ro_before(ro: CliVault) -> dict[str, object]:
    snap = cli_snapshot(ro)
    assert all(not isinstance(v, str) for v in snap.values()), snap
    return snap


def _subst(text: str, files: Mapping[str, str]) -> str:
    for k, v in files.items():
        text = text.replace(k, v)
    return text


@pytest.fixture(scope="module")
def error_results(ro: CliVault, ro_before: dict[str, object]) -> dict[str, CliResult]:
    def one(c: Case) -> tuple[str, CliResult]:
        argv = [_subst(a, ro.files) for a in c.argv]
        env = {k: (None if v is None else _subst(v, ro.files)) for k, v in c.env}
        return c.id, ro.run(*argv, input=c.stdin, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(one, [c for c in ERROR_CASES if not c.serial]))
    results.update(one(c) for c in ERROR_CASES if c.serial)
    # One open on its own imports failed-unlocks.log into the audit trail before the concurrent
    # snapshot: concurrent imports race (see test_bug_concurrent_opens_after_failed_unlock).
    assert ro.run("ls").code == 0
    assert not (ro.vault / "failed-unlocks.log").exists()
    return results


def test_error_case_ids_are_unique() -> None:
    ids = [c.id for c in ERROR_CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("c", ERROR_CASES, ids=lambda c: c.id)
def test_error_case(c: Case, ro: CliVault, error_results: dict[str, CliResult]) -> None:
    r = error_results[c.id]
    assert r.code == c.code, f"exit {r.code}, stderr {r.err!r}"
    line = assert_one_error_line(r)
    expected = _subst(c.err, ro.files)
    if c.prefix:
        assert line.startswith(expected), line
    else:
        assert line == expected
    assert "hunter2" not in r.err
    assert "pwned" not in r.err


def test_error_cases_left_the_vault_unchanged(
    ro: CliVault, ro_before: dict[str, object], error_results: dict[str, CliResult]
) -> None:
    assert len(error_results) == len(ERROR_CASES)
    assert cli_snapshot(ro) == ro_before
    assert (ro.root / "random.bin").read_bytes() == RANDOM_FILE_BYTES
    assert list((ro.root / "empty").iterdir()) == []
    assert not (ro.root / "missing").exists()


# -- put / get and the listing commands ------------------------------------------------------
@pytest.fixture(scope="module")
def rw(tmp_path_factory: pytest.TempPathFactory) -> CliVault:
    """A vault the behaviour tests write to (each test uses its own names)."""
    return build_vault(tmp_path_factory.mktemp("cli-rw"))


NEWLINE_CASES = {
    "nl-two": (b"a\n\n", b"a\n"),
    "nl-one": (b"a\n", b"a"),
    "nl-none": (b"a", b"a"),
    "nl-crlf": (b"a\r\n", b"a\r"),
    "nl-leading": (b"\n\na b\n", b"\n\na b"),
}


def _concurrently(cv: CliVault, commands: dict[str, tuple[str, ...]]) -> dict[str, CliResult]:
    """Run read-only commands a few at a time."""

    def one(item: tuple[str, tuple[str, ...]]) -> tuple[str, CliResult]:
        return item[0], cv.run(*item[1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, commands.items()))


@pytest.fixture(scope="module")
def newline_results(rw: CliVault) -> dict[str, tuple[CliResult, CliResult]]:
    puts = {
        n: rw.run("put", f"acme-2026/{n}", input=piped) for n, (piped, _) in NEWLINE_CASES.items()
    }
    gets = _concurrently(rw, {n: ("get", f"acme-2026/{n}", "-n") for n in NEWLINE_CASES})
    return {n: (puts[n], gets[n]) for n in NEWLINE_CASES}


@pytest.mark.parametrize("name", list(NEWLINE_CASES))
def test_put_removes_one_trailing_newline(
    newline_results: dict[str, tuple[CliResult, CliResult]], name: str
) -> None:
    put, get = newline_results[name]
    assert (put.code, put.err) == (0, "")
    assert put.out == f"stored acme-2026/{name}\n".encode()
    assert (get.code, get.err) == (0, "")
    assert get.out == NEWLINE_CASES[name][1]


def test_ssh_private_key_kept_exactly(rw: CliVault) -> None:
    rw.ok("put", "acme-2026/deploy-key", "--kind", "ssh-key", "--username", "deploy", input=SSH_KEY)
    # the file's own final newline is the one removed; `get` adds it back, `-n` does not
    assert rw.ok("get", "acme-2026/deploy-key").out == SSH_KEY
    assert rw.ok("get", "acme-2026/deploy-key", "-n").out == SSH_KEY[:-1]
    rec = rw.json("get", "acme-2026/deploy-key", "--json")
    assert isinstance(rec, dict)
    assert rec["kind"] == "ssh-key"
    assert rec["secret"] == SSH_KEY[:-1].decode()


def test_secret_of_exactly_1mib_is_accepted(rw: CliVault) -> None:
    value = bytes(range(1, 256)) * (MIB // 255) + b"x" * (MIB % 255)
    assert len(value) == MIB
    rw.ok("put", "acme-2026/big", input=value + b"\n")
    assert rw.ok("get", "acme-2026/big", "-n").out == value


DB_FIELDS = {
    "username": "postgres",
    "url": "https://db.example.com/admin",
    "notes": "primary\nrotate quarterly",
    "address": "10.0.0.1",  # from the linked system web1
    "port": "22",
    "secret": "s3cr3t-db",
}


@pytest.fixture(scope="module")
def db_credential(rw: CliVault) -> str:
    rw.ok(
        "put", "acme-2026/db", "--username", "postgres", "--system", "web1", "--kind", "token",
        "--url", DB_FIELDS["url"], "--notes", DB_FIELDS["notes"], input=b"s3cr3t-db\n",
    )  # fmt: skip
    return "acme-2026/db"


@pytest.fixture(scope="module")
def db_fields(rw: CliVault, db_credential: str) -> dict[str, CliResult]:
    commands = {f: ("get", db_credential, "--field", f) for f in DB_FIELDS}
    commands["username -n"] = ("get", db_credential, "--field", "username", "-n")
    return _concurrently(rw, commands)


@pytest.mark.parametrize("fname", sorted(DB_FIELDS))
def test_get_field(db_fields: dict[str, CliResult], fname: str) -> None:
    r = db_fields[fname]
    assert (r.code, r.err) == (0, "")
    assert r.out == DB_FIELDS[fname].encode() + b"\n"


def test_get_field_n_omits_newline(db_fields: dict[str, CliResult]) -> None:
    assert db_fields["username -n"].out == b"postgres"


def test_get_json_has_every_field(rw: CliVault, db_credential: str) -> None:
    rec = rw.json("get", db_credential, "--json")
    assert isinstance(rec, dict)
    assert set(rec) == {
        "engagement", "name", "kind", "secret", "username", "system", "address", "port",
        "url", "notes", "created_at", "updated_at",
    }  # fmt: skip
    assert rec["engagement"] == "acme-2026"
    assert rec["name"] == "db"
    assert rec["kind"] == "token"
    assert rec["system"] == "web1"
    assert rec["secret"] == "s3cr3t-db"
    assert rec["username"] == "postgres"
    assert rec["address"] == "10.0.0.1"
    assert rec["port"] == 22
    assert rec["url"] == DB_FIELDS["url"]
    assert rec["notes"] == DB_FIELDS["notes"]
    assert str(rec["created_at"]).endswith("Z")
    assert rec["updated_at"] >= rec["created_at"]


def test_generate_makes_a_secret_get_returns(rw: CliVault) -> None:
    r = rw.ok("put", "acme-2026/gen40", "--generate", "40")
    assert r.out == (
        b"stored acme-2026/gen40 (generated: 40 characters from 65 (upper, lower, digits, "
        b"symbols), each class at least once, 241 bits)\n"
    )
    secret = rw.ok("get", "acme-2026/gen40", "-n").out
    assert len(secret) == 40
    assert secret.isascii()
    assert secret.decode().isprintable()
    assert b" " not in secret
    assert secret not in r.out


def test_ls_json_lists_names_never_values(rw: CliVault, db_credential: str) -> None:
    everything = rw.json("ls", "--json")
    in_eng = rw.json("ls", "acme-2026", "--json")
    assert everything == in_eng
    assert isinstance(in_eng, list)
    names = {(c["engagement"], c["name"]) for c in in_eng}
    assert {("acme-2026", "web1-root"), ("acme-2026", "db")} <= names
    for c in in_eng:
        assert "secret" not in c
        assert {"engagement", "name", "kind", "system", "created_at", "updated_at"} <= set(c)
    db = next(c for c in in_eng if c["name"] == "db")
    assert (db["kind"], db["system"]) == ("token", "web1")
    text = rw.ok("ls").out
    assert text.startswith(b"CREDENTIAL ")
    assert b"acme-2026/db " in text
    for out in (text, json.dumps(everything).encode()):
        assert b"hunter2" not in out
        assert b"s3cr3t-db" not in out


def test_rm_removes_a_credential(rw: CliVault) -> None:
    rw.ok("put", "acme-2026/tmp", input=b"short-lived\n")
    assert rw.ok("rm", "acme-2026/tmp").out.startswith(b"moved acme-2026/tmp to the trash until ")
    r = rw.run("get", "acme-2026/tmp")
    assert r.code == 3
    assert assert_one_error_line(r) == "credvault: credential 'acme-2026/tmp' not found"
    listed = rw.json("ls", "acme-2026", "--json")
    assert isinstance(listed, list)
    assert "tmp" not in {c["name"] for c in listed}


def test_system_add_ls_show_rm(rw: CliVault) -> None:
    r = rw.ok(
        "system", "add", "acme-2026/db1", "--address", "DB1.Example.COM.", "--port", "5432",
        "--protocol", "postgres", "--details", "primary\nPostgreSQL 16",
    )  # fmt: skip
    assert r.out == b"added system acme-2026/db1\n"
    rw.ok("system", "add", "acme-2026/v6", "--address", "[2001:DB8::1]")
    listed = rw.json("system", "ls", "acme-2026", "--json")
    assert isinstance(listed, list)
    by_name = {s["name"]: s for s in listed}
    assert {"web1", "db1", "v6"} <= set(by_name)
    assert (by_name["db1"]["port"], by_name["db1"]["protocol"]) == (5432, "postgres")
    shown = rw.json("system", "show", "acme-2026/db1", "--json")
    assert isinstance(shown, dict)
    assert shown["address"] == "db1.example.com"  # normalised DNS name
    assert shown["details"] == "primary\nPostgreSQL 16"
    v6 = rw.json("system", "show", "acme-2026/v6", "--json")
    assert isinstance(v6, dict)
    assert v6["address"] == "2001:db8::1"
    text = rw.ok("system", "show", "acme-2026/db1").out
    assert b"db1.example.com" in text
    assert b"5432" in text
    assert rw.ok("system", "rm", "acme-2026/db1").out.startswith(
        b"moved system acme-2026/db1 to the trash until "
    )
    r = rw.run("system", "show", "acme-2026/db1")
    assert r.code == 3
    assert assert_one_error_line(r) == "credvault: system 'acme-2026/db1' not found"


def test_engagement_ls_show_members_json(rw: CliVault) -> None:
    assert rw.ok("engagement", "new", "beta-2026", "--client", "beta").out == (
        b"created engagement beta-2026 for beta, lead alice\n"
    )
    r = rw.ok("grant", "beta-2026", "bob", "reader", "--until", "2099-01-31")
    assert r.out == b"granted reader on beta-2026 to bob until 2099-01-31T23:59\n"
    engs = rw.json("engagement", "ls", "--json")
    assert isinstance(engs, list)
    assert {"acme-2026", "beta-2026"} <= {e["name"] for e in engs}
    only_beta = rw.json("engagement", "ls", "--client", "beta", "--json")
    assert isinstance(only_beta, list)
    assert [(e["name"], e["client"], e["state"]) for e in only_beta] == [
        ("beta-2026", "beta", "active")
    ]
    shown = rw.json("engagement", "show", "beta-2026", "--json")
    assert isinstance(shown, dict)
    assert (shown["name"], shown["client"], shown["lead"]) == ("beta-2026", "beta", "alice")
    assert shown["your_role"] == "lead"
    members = rw.json("engagement", "members", "beta-2026", "--json")
    assert isinstance(members, list)
    roles = {g["member"]: g for g in members}
    assert roles["alice"]["role"] == "lead"
    assert roles["alice"]["expires_at"] is None
    assert roles["bob"]["role"] == "reader"
    assert roles["bob"]["has_key"] is True
    assert str(roles["bob"]["expires_at"]).startswith("2099-01-31T23:59")
    assert shown["members"] == members


def test_member_ls_json(rw: CliVault) -> None:
    members = rw.json("member", "ls", "--json")
    assert isinstance(members, list)
    by_name = {m["name"]: m for m in members}
    assert set(by_name) == {"alice", "bob"}
    assert by_name["alice"]["admin"] is True
    assert by_name["bob"]["admin"] is False
    assert by_name["alice"]["service"] is False
    text = rw.ok("member", "ls").out.decode()
    assert text.splitlines()[0].split() == ["NAME", "ADMIN", "SERVICE", "CREATED"]


def test_status_and_whoami(rw: CliVault) -> None:
    st = rw.json("status", "--json")
    assert isinstance(st, dict)
    assert (st["member"], st["admin"], st["vault"]) == ("alice", True, str(rw.vault))
    assert st["due_now"] == []
    assert st["keyring"]["unlocked"] is False
    text = rw.ok("whoami").out.decode().splitlines()
    assert text[0] == "member:  alice (admin)"
    assert text[1].startswith(f"vault:   {rw.vault} (")
    assert rw.ok("whoami", "--json").out == rw.ok("status", "--json").out


def test_info_public_key(rw: CliVault) -> None:
    r = rw.ok("info", "--public-key")
    key = r.out.decode()
    assert key.endswith("\n")
    assert key.count("\n") == 1
    assert len(base64.b64decode(key.strip(), validate=True)) == 32
    info = rw.json("info", "--json")
    assert isinstance(info, dict)
    assert info["public_key"] == key.strip()
    assert info["path"] == str(rw.vault)
    assert info["members"] == 2


def test_config_get_set(rw: CliVault) -> None:
    before = rw.json("config", "get", "--json")
    assert isinstance(before, dict)
    assert set(before) == {
        "purge-grace-days",
        "audit-retention-days",
        "backup-retention-days",
        "trash-days",
    }
    assert rw.ok("config", "set", "purge-grace-days", "3").out == b"purge-grace-days = 3\n"
    after = rw.json("config", "get", "--json")
    assert after == {**before, "purge-grace-days": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ["engagement", "ls", "--json", "--vault", "{vault}"],
        ["member", "ls", "--json", "--as", "alice"],
        ["system", "show", "acme-2026/web1", "--json", "--no-keyring"],
    ],
    ids=["engagement-ls-vault", "member-ls-as", "system-show-no-keyring"],
)
def test_common_options_after_an_action(rw: CliVault, argv: list[str]) -> None:
    r = rw.ok(*[a.replace("{vault}", str(rw.vault)) for a in argv])
    assert json.loads(r.out)


def test_replace_keeps_kind_and_fields_not_given(rw: CliVault) -> None:
    rw.ok(
        "put", "acme-2026/rotated-key", "--kind", "ssh-key", "--username", "deploy", input=SSH_KEY
    )
    new_key = SSH_KEY.replace(b"dGVzd", b"bmV3a")
    rw.ok("put", "acme-2026/rotated-key", input=new_key)
    rec = rw.json("get", "acme-2026/rotated-key", "--json")
    assert isinstance(rec, dict)
    assert rec["secret"] == new_key[:-1].decode()
    assert rec["username"] == "deploy"
    assert rec["kind"] == "ssh-key"
    rw.ok("put", "acme-2026/rotated-key", "--kind", "token", input=b"tok\n")
    rec = rw.json("get", "acme-2026/rotated-key", "--json")
    assert isinstance(rec, dict)
    assert (rec["kind"], rec["username"], rec["secret"]) == ("token", "deploy", "tok")


def test_binary_secret_json_is_base64_and_raw_get_is_exact(rw: CliVault) -> None:
    value = b"\xff\x00\xfe binary\n\x80"
    rw.ok("put", "acme-2026/blob", input=value + b"\n")
    assert rw.ok("get", "acme-2026/blob", "-n").out == value
    rec = rw.json("get", "acme-2026/blob", "--json")
    assert isinstance(rec, dict)
    assert "secret" not in rec
    assert base64.b64decode(str(rec["secret_base64"])) == value


def test_version() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "credvault", "--version"], capture_output=True, timeout=60
    )
    assert p.returncode == 0
    assert p.stdout == f"credvault {credvault.__version__}\n".encode()
    assert p.stderr == b""


# -- regressions: bugs this module found, fixed since ----------------------------------------
@pytest.mark.parametrize("char", ["\u0130", "\u0131", "\u017f", "\u212a"])
def test_bug_name_accepts_case_folding_non_ascii(rw: CliVault, char: str) -> None:
    r = rw.run("engagement", "new", f"acme-{char}", "--client", "acme")
    assert r.code == 2, r.err
    assert assert_one_error_line(r).startswith("credvault: invalid engagement name")


def test_bug_address_ipv6_zone_with_newline(rw: CliVault) -> None:
    r = rw.run("system", "add", "acme-2026/zone", "--address", "fe80::1%eth0\nFAKE: line")
    assert r.code == 2, r.err
    assert assert_one_error_line(r) == ADDR_ERR


@pytest.mark.parametrize(
    "argv",
    [
        ["put", "acme-2026/u8", "--username", os.fsdecode(b"r\xffoot")],
        [
            "system",
            "add",
            "acme-2026/u8",
            "--address",
            "10.0.0.8",
            "--details",
            os.fsdecode(b"\xff"),
        ],
        ["get", "acme-2026/web1-root", "--reason", os.fsdecode(b"ticket \xff")],
        ["audit", "--member", os.fsdecode(b"al\xffce")],
    ],
    ids=["username", "details", "reason", "audit-member"],
)
def test_bug_non_utf8_argument(rw: CliVault, argv: list[str]) -> None:
    r = rw.run(*argv, input=b"x\n")
    assert r.code in (0, 2), r.err  # a clear error, or (audit filter) simply no match
    if r.code == 2:
        assert_one_error_line(r)


def test_bug_empty_as_is_rejected(rw: CliVault) -> None:
    r = rw.run("ls", "--as", "")
    assert r.code == 2, (r.code, r.out)
    assert_one_error_line(r)


@pytest.mark.parametrize("port", ["2_2", "\uff12\uff12"], ids=["underscore", "fullwidth"])
def test_bug_port_only_ascii_digits(rw: CliVault, port: str) -> None:
    r = rw.run("system", "add", "acme-2026/odd-port", "--address", "10.0.0.7", "--port", port)
    assert r.code == 2, r.err
    assert assert_one_error_line(r) == PORT_ERR


def test_bug_c1_control_characters_rejected(rw: CliVault) -> None:
    r = rw.run("put", "acme-2026/c1", "--username", "ro\x9b31mot", input=b"x\n")
    assert r.code == 2, r.err
    assert assert_one_error_line(r) == "credvault: username contains control characters"


def _wait_until_open(pids: list[int], db: Path, deadline: float) -> None:
    """Until every process has the database open (then it is about to block on the lock)."""
    while time.monotonic() < deadline:
        try:
            if all(
                any(fd.resolve() == db for fd in Path(f"/proc/{pid}/fd").iterdir()) for pid in pids
            ):
                return
        except OSError:
            pass
        time.sleep(0.05)


# nanosleep and clock_nanosleep: SQLite's busy handler sleeping between lock attempts
_SLEEP_SYSCALLS = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}


def _sleeping_on_a_lock(pid: int) -> bool:
    """The process sleeps in a nanosleep: with the database open and its write lock held
    by the test, that is SQLite's busy handler waiting for the lock (observed, not timed).
    Where /proc/PID/syscall is unreadable, a sleeping process state stands in."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except PermissionError:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "S"
    except OSError:
        return False
    return bool(fields) and fields[0] in _SLEEP_SYSCALLS.get(os.uname().machine, {"35", "230"})


def _wait_until_waiting(pids: list[int], deadline: float) -> None:
    """Until every process is queued behind the held write lock."""
    while not all(_sleeping_on_a_lock(pid) for pid in pids):
        assert time.monotonic() < deadline, "the processes never queued behind the lock"
        time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_bug_concurrent_opens_after_failed_unlock(rw: CliVault) -> None:
    import sqlcipher3

    with Vault.open(rw.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        db_key = v._s.db_key
    bad = rw.root / "bad.pass"
    bad.write_text("wrong\n")
    r = rw.run("ls", env={"CREDVAULT_PASSPHRASE_FILE": str(bad)})
    assert r.code == 5
    assert (rw.vault / "failed-unlocks.log").exists()
    db = (rw.vault / "vault.db").resolve()
    conn = sqlcipher3.connect(str(db), isolation_level=None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
        conn.execute("BEGIN IMMEDIATE")  # hold the write lock: both opens queue behind it
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    rw.argv("ls", "--json"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=rw.environ(),
                    start_new_session=True,
                )
            )
        _wait_until_open([p.pid for p in procs], db, time.monotonic() + 20)
        _wait_until_waiting([p.pid for p in procs], time.monotonic() + 60)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    results = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        results.append((p.returncode, err.decode()))
    assert results == [(0, ""), (0, "")]
