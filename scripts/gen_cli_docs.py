#!/usr/bin/env python3
"""Generate docs/cli.md from the CLI's argparse parser (``credvault.cli.build_parser()``).

    python scripts/gen_cli_docs.py            # (re)write docs/cli.md
    python scripts/gen_cli_docs.py --check    # exit 1 if docs/cli.md is not what it would write

The page is a short hand-written introduction (INTRO below: edit it here, not in the .md),
then, for every command and subcommand, its one-line help and its ``--help`` text. The help
is formatted at a fixed width and without colour, so the output does not depend on the
terminal: the same parser always gives the same bytes.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "cli.md"
WIDTH = 100

INTRO = """\
# credvault command line

`credvault` is a thin command line over the library: it parses, makes one library call and
prints. This page is generated from the argument parser by `scripts/gen_cli_docs.py`; edit
the introduction there and run `python scripts/gen_cli_docs.py` (CI runs it with `--check`).

Every command that opens a vault accepts `--vault DIR`, `--as NAME` and `--no-keyring`, also
after an action: `credvault engagement ls --as bob` is `credvault engagement --as bob ls`.

## Secrets never go on the command line

`put` reads the secret from standard input: on a terminal it asks twice without echo; from a
pipe or file it takes the input with **one** trailing newline removed (`printf 'a\\n\\n'`
stores `a` and a newline; a key file `< id_ed25519` is stored without its final newline and
`get` prints it back with one). `--generate [LENGTH]` makes a random secret instead (default
32 characters). `get` prints the secret and a newline; `-n` omits the newline, `--field`
prints one field (`username`, `address`, `port`, `url`, `notes`) and `--json` the whole
record. Secrets are limited to 1 MiB.

## Exit codes

Errors are one line on standard error, starting with `credvault: `; never a traceback,
never a secret.

| code | meaning |
|---|---|
| 0 | success |
| 1 | other error: not a vault, already exists (`init` never overwrites), a lifecycle rule forbids it (closed engagement), no keyring, an I/O error |
| 2 | usage error or invalid input: unknown command or option, bad name, address, port, date, role, kind, empty or over-long secret |
| 3 | not found: engagement, credential, system, member, field (also a purged engagement) |
| 4 | access denied: the member's role does not allow it, or they hold no key |
| 5 | locked: wrong passphrase, or no way to unlock (no passphrase file, identity or keyring key, and no terminal) |
| 6 | integrity: a MAC, tag or signature failed; the vault or the audit trail was tampered with |

## Environment

| variable | meaning |
|---|---|
| `CREDVAULT_VAULT` | the vault directory (`--vault DIR` wins; default `$XDG_DATA_HOME/credvault`, else `~/.local/share/credvault`) |
| `CREDVAULT_MEMBER` | who you are (`--as NAME` wins; default your OS user name) |
| `CREDVAULT_PASSPHRASE_FILE` | a file whose first line is your passphrase (keep it mode 0600), for scripts and jobs |
| `CREDVAULT_IDENTITY` | the key file of a service identity (`member add NAME --service --identity-file P`) |
| `CREDVAULT_CLIPBOARD` | the clipboard `-c` uses: `wl-copy`, `xclip`, `xsel`, `pbcopy` or `osc52` (default: the first reachable) |
| `CREDVAULT_CLIP_TIME` | seconds before `-c`'s copy is cleared (`--clip-time` wins; default 45; `0` never) |

## Unlock order

To open a vault credvault tries, in this order, and the first source that has your key wins:

1. the identity file named by `CREDVAULT_IDENTITY`;
2. the OS keyring, if `credvault unlock` cached your key there and it has not expired
   (skipped with `--no-keyring`);
3. the passphrase file named by `CREDVAULT_PASSPHRASE_FILE`;
4. a prompt on the terminal, only when there is one.

A wrong passphrase stops there (exit 5; the failed unlock enters the audit trail at the next
open); with none of the four available the command fails with exit 5 instead of waiting.

New passphrases: `member add`, `member reset` and `passwd` take the *new* passphrase from
their own `--passphrase-file` (its first line), or ask twice on a terminal. `init` reads the
first admin's passphrase from `--passphrase-file`, else `CREDVAULT_PASSPHRASE_FILE`, else asks
twice on a terminal.
`--kdf m=KiB,t=N,p=N` sets the Argon2id cost of a new passphrase (default m=65536,t=3,p=4).
"""

GENERATED_MARK = "<!-- Everything below is generated from credvault.cli.build_parser(). -->"


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    """Give the parser and all its subparsers a fixed-width formatter."""
    parser.formatter_class = functools.partial(  # type: ignore[assignment]
        argparse.HelpFormatter, width=WIDTH, max_help_position=32
    )
    for _, sub, _ in _children(parser):
        _fixed_width(sub)


def _children(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of each direct subcommand, in definition order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every command and subcommand, depth first: (("engagement", "new"), parser, help)."""
    for name, sub, help_ in _children(parser):
        yield (*path, name), sub, help_
        yield from commands(sub, (*path, name))


def _anchor(path: tuple[str, ...]) -> str:
    return "-".join(("credvault", *path))


def render() -> str:
    os.environ["NO_COLOR"] = "1"  # Python 3.14 argparse colours help on a terminal
    os.environ.pop("FORCE_COLOR", None)
    sys.path.insert(0, str(ROOT / "src"))
    from credvault.cli import build_parser

    parser = build_parser()
    _fixed_width(parser)
    cmds = list(commands(parser))
    out = [INTRO, "", GENERATED_MARK, "", "## Commands", ""]
    for path, _, help_ in cmds:
        indent = "  " * (len(path) - 1)
        out.append(f"{indent}- [`credvault {' '.join(path)}`](#{_anchor(path)}): {help_}")
    out += ["", "### `credvault`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for path, sub, help_ in cmds:
        level = "#" * (2 + len(path))
        out += [f"{level} `credvault {' '.join(path)}`", ""]
        if help_:
            out += [help_[:1].upper() + help_[1:] + ".", ""]
        out += ["```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(line.rstrip() for line in out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default docs/cli.md")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(args.output),
            "generated",
            n=1,
        )
        sys.stderr.writelines(list(diff)[:60])
        sys.stderr.write(f"{args.output} is out of date: run python scripts/gen_cli_docs.py\n")
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
