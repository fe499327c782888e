"""Shell completion and the man page follow the command table, and work in the real shells.

* The files in completions/ and docs/man/ are exactly what scripts/gen_shell.py generates
  (``--check``), and every command, action, option and help line of ``--help`` is in them.
* bash and fish complete commands, actions, options, choices and, through
  ``credvault __complete``, the names in a real vault; so does zsh, with its completion
  builtins stood in for (they run only inside the line editor).
* ``__complete`` never prompts and lists only what the member may list; ``credvault get``
  imports none of the new modules.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KDF, PASSWORDS
from credvault import Vault
from credvault.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "scripts" / "gen_shell.py"
BASH = ROOT / "completions" / "credvault.bash"
ZSH = ROOT / "completions" / "_credvault"
FISH = ROOT / "completions" / "credvault.fish"
MAN = ROOT / "docs" / "man" / "credvault.1"

pytestmark = pytest.mark.cli


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from walk(sub, (*path, name))


PARSERS = list(walk(build_parser()))


def test_generated_files_are_up_to_date() -> None:
    r = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr + "\nrun: python scripts/gen_shell.py"


def test_check_detects_a_stale_file(tmp_path: Path) -> None:
    gen = [sys.executable, str(GENERATOR), "--root", str(tmp_path)]
    assert subprocess.run(gen, capture_output=True, timeout=60).returncode == 0
    stale = tmp_path / "completions" / "credvault.fish"
    text = stale.read_text()
    assert "-l 'clip'" in text
    stale.write_text(text.replace("-l 'clip'", "-l 'clipboard'", 1))
    r = subprocess.run([*gen, "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "credvault.fish" in r.stderr


def _roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


@pytest.mark.parametrize(
    ("path", "parser", "help_"), PARSERS, ids=[" ".join(p) for p, _, _ in PARSERS]
)
def test_everything_in_help_is_completed_and_in_the_man_page(
    path: tuple[str, ...], parser: argparse.ArgumentParser, help_: str | None
) -> None:
    bash, zsh, fish, man = (f.read_text() for f in (BASH, ZSH, FISH, MAN))
    assert help_, f"{path} has no help line"
    assert f".SS {' '.join(path)}\n{_roff(help_)}\n" in man
    assert re.search(
        rf"-a '{re.escape(path[-1])}' -d '{re.escape(help_)}'", fish.replace("'\\''", "'")
    )
    for script in (bash, zsh):
        assert f" {path[-1]} " in " " + " ".join(re.findall(r"'([^']*)'", script)) + " "
    for action in parser._actions:
        for flag in action.option_strings:
            if flag in ("-h", "--help"):
                continue
            key = f"{' '.join(path)}"
            assert flag in _bash_opts(bash, key), (path, flag)
            assert flag in zsh
            fish_flag = f"-l '{flag[2:]}'" if flag.startswith("--") else f"-s '{flag[1:]}'"
            assert fish_flag in fish, (path, flag)
            assert f"\\fB{_roff(flag)}\\fR" in man, (path, flag)
            if action.help and action.help != argparse.SUPPRESS:
                assert _roff(action.help) in man, (path, flag)


def _bash_opts(script: str, key: str) -> list[str]:
    script = script.split("declare -gA _credvault_opts=(", 1)[1].split("\n)", 1)[0]
    m = re.search(rf"^    \['{re.escape(key)}'\]='([^']*)'$", script, re.M)
    return m.group(1).split() if m else []


# -- the shells, for real -------------------------------------------------------------------
def bash_complete(line: str, env: dict[str, str]) -> list[str]:
    script = (
        f"source {BASH}\n"
        'read -ra COMP_WORDS <<< "$1"; [[ $1 == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _credvault 2>/dev/null\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    r = subprocess.run(
        ["bash", "-c", script, "_", line],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        start_new_session=True,
    )
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def names_vault(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One vault for the module (made with the library: fast), only read by the tests.

    alice (admin) leads acme-2026 (system web1, credential web1-root); bob leads other-2026.
    The environment is a CLI user's, with the venv's ``credvault`` first on PATH.
    """
    root = tmp_path_factory.mktemp("names")
    path = root / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.members.add("bob", passphrase=PASSWORDS["bob"].encode())
        v.engagements.create("acme-2026", "acme")
        v.engagements.create("other-2026", "other", "bob")
        v.systems.add("acme-2026/web1", "10.0.0.1")
        v.credentials.put("acme-2026/web1-root", b"pw", system="web1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    env.update(
        HOME=str(root),
        XDG_CACHE_HOME=str(root / "cache"),
        CREDVAULT_VAULT=str(path),
        CREDVAULT_MEMBER="alice",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    for name in ("alice", "bob"):
        f = root / f"{name}.pass"
        f.write_text(PASSWORDS[name] + "\n")
        f.chmod(0o600)
        env[f"TEST_PASS_{name.upper()}"] = str(f)
    env["CREDVAULT_PASSPHRASE_FILE"] = env["TEST_PASS_ALICE"]
    return env


def test_bash_completes_from_the_table_and_the_vault(names_vault: dict[str, str]) -> None:
    env = names_vault
    assert {"otp", "ssh", "run", "get", "member"} <= set(bash_complete("credvault ", env))
    assert bash_complete("credvault member ", env) == [
        "add",
        "invite",
        "ls",
        "rm",
        "certify",
        "reset",
    ]
    assert bash_complete("credvault get --fi", env) == ["--field"]
    assert "--clip" in bash_complete("credvault get --c", env)
    assert bash_complete("credvault get --field ", env) == [
        "secret",
        "username",
        "address",
        "port",
        "url",
        "notes",
    ]
    assert bash_complete("credvault grant acme-2026 bob ", env) == [
        "lead",
        "engineer",
        "reader",
        "auditor",
    ]
    assert bash_complete("credvault get acme", env) == ["acme-2026/"]
    assert bash_complete("credvault otp acme-2026/web", env) == ["acme-2026/web1-root"]
    assert bash_complete("credvault ssh acme-2026/", env) == ["acme-2026/web1"]
    assert bash_complete("credvault put acme-2026/new --system ", env) == ["web1"]
    assert bash_complete("credvault engagement show ", env) == ["acme-2026", "other-2026"]
    assert bash_complete("credvault get --as ", env) == ["alice", "bob"]
    env_bob = {**env, "CREDVAULT_PASSPHRASE_FILE": env["TEST_PASS_BOB"]}
    assert bash_complete("credvault get --as bob ", env_bob) == ["other-2026/"]  # bob's view
    assert "ls" in bash_complete("credvault run --env X=acme-2026/web1-root -- l", env)


def test_bash_offers_no_names_without_an_unlock(names_vault: dict[str, str]) -> None:
    env = {k: v for k, v in names_vault.items() if k != "CREDVAULT_PASSPHRASE_FILE"}
    assert bash_complete("credvault get acme", env) == []
    r = subprocess.run(
        [sys.executable, "-m", "credvault", "__complete", "engagements"],
        capture_output=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")


def test_complete_lists_only_what_the_member_may_list(names_vault: dict[str, str]) -> None:
    def names(*words: str, who: str = "alice") -> list[str]:
        env = {
            **names_vault,
            "CREDVAULT_MEMBER": who,
            "CREDVAULT_PASSPHRASE_FILE": names_vault[f"TEST_PASS_{who.upper()}"],
        }
        r = subprocess.run(
            [sys.executable, "-m", "credvault", "__complete", *words],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return r.stdout.split()

    assert names("engagements", who="bob") == ["other-2026"]  # bob holds no role on acme-2026
    assert names("credentials", "acme-2026", who="bob") == []  # denied: nothing, no error text
    assert set(names("engagements")) == {"acme-2026", "other-2026"}  # alice is admin
    assert names("credentials", "acme-2026") == ["web1-root"]
    assert names("systems", "acme-2026") == ["web1"]
    assert set(names("clients")) == {"acme", "other"}


@pytest.mark.skipif(
    shutil.which("fish") is None, reason="LOUD SKIP: fish missing (.ci/system-deps.sh)"
)
def test_fish_completes(names_vault: dict[str, str]) -> None:
    def fish(line: str) -> list[str]:
        r = subprocess.run(
            ["fish", "--no-config", "-c", f"source {FISH}; complete -C'{line}'"],
            capture_output=True,
            text=True,
            env=names_vault,
            timeout=60,
            start_new_session=True,
        )
        assert r.returncode == 0, r.stderr
        return [x.split("\t")[0] for x in r.stdout.splitlines()]

    assert fish("credvault member ") == ["add", "certify", "invite", "ls", "reset", "rm"]
    assert {"otp", "ssh", "run"} <= set(fish("credvault "))
    assert fish("credvault grant acme-2026 bob ") == ["auditor", "engineer", "lead", "reader"]
    assert fish("credvault get acme-2026/") == ["acme-2026/web1-root"]
    assert "--clip-time" in fish("credvault otp --clip")
    assert fish("credvault get --as ") == ["alice", "bob"]


# zsh's completion system runs only inside a line editor; its builtins are replaced here by
# stand-ins that print what would be offered (filtered by the prefix, as compadd does), so the
# script's own logic runs for real in zsh.
ZSH_HARNESS = r"""
compadd() {
    local p="" suffix="" arr="" x
    while (($#)); do
        case $1 in
            -a) arr=$2; shift 2 ;;
            -p) p=$2; shift 2 ;;
            -S) suffix=$2; shift 2 ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    for x in ${(P)arr} "$@"; do [[ $p$x == ${PREFIX}* ]] && print -r -- "$p$x$suffix"; done
}
_files() { print -r -- "<files>"; }
_command_names() { print -r -- "<commands>"; }
words=(${(z)1})
[[ $1 == *" " ]] && words+=("")
CURRENT=${#words}
PREFIX=${words[CURRENT]}
source "$2"
true  # the status of the last stand-in compadd is not the test's
"""


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="LOUD SKIP: zsh missing (.ci/system-deps.sh)"
)
def test_zsh_completes(names_vault: dict[str, str]) -> None:
    assert subprocess.run(["zsh", "-n", str(ZSH)], timeout=60).returncode == 0

    def zsh(line: str, env: dict[str, str] = names_vault) -> list[str]:
        r = subprocess.run(
            ["zsh", "-f", "-c", ZSH_HARNESS, "zsh", line, str(ZSH)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            start_new_session=True,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    assert zsh("credvault member ") == ["add", "invite", "ls", "rm", "certify", "reset"]
    assert zsh("credvault get --f") == ["--field"]
    assert zsh("credvault get --field p") == ["port"]
    assert zsh("credvault grant acme-2026 bob ") == ["lead", "engineer", "reader", "auditor"]
    assert zsh("credvault get acme-2026/") == ["acme-2026/web1-root"]
    assert zsh("credvault put acme-2026/n --system ") == ["web1"]
    assert zsh("credvault restore ") == ["<files>"]
    assert zsh("credvault get --as ") == ["alice", "bob"]
    bob = {**names_vault, "CREDVAULT_PASSPHRASE_FILE": names_vault["TEST_PASS_BOB"]}
    assert zsh("credvault get --as bob o", bob) == ["other-2026/"]  # bob's view
    assert zsh("credvault run --env X=acme-2026/web1-root -- ") == ["<commands>"]


def test_get_imports_nothing_new(names_vault: dict[str, str]) -> None:
    """Completion, clipboard, TOTP and hand-off code stay off `credvault get`'s path."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "credvault", "get", "acme-2026/web1-root"],
        capture_output=True,
        text=True,
        env=names_vault,
        timeout=60,
        start_new_session=True,
    )
    assert r.stdout == "pw\n"
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()}
    for module in (
        "credvault.cli.complete",
        "credvault.clipboard",
        "credvault.totp",
        "credvault.handoff",
    ):
        assert module not in imported
