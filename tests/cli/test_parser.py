"""The command table: `main` builds only the parser of the command it runs, the table and the
parser agree, and every entry runs one handler named after it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

import credvault.cli as cli
from credvault.cli import COMMANDS, TABLE, build_parser, spec
from credvault.cli.spec import Arg, Command, OneOf, walk


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_commands_list_matches_the_parser() -> None:
    assert _choices(build_parser()) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_partial_parser_has_the_same_command(command: str) -> None:
    full = build_parser()
    part = build_parser(command)
    assert _choices(part) == {command}
    full_sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    part_sub = next(a for a in part._actions if isinstance(a, argparse._SubParsersAction))
    assert part_sub.choices[command].format_help() == full_sub.choices[command].format_help()


def _paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(*path, name), *_paths(sub, (*path, name))]
    return out


def test_the_table_walk_is_the_parser() -> None:
    # what completion and man-page generators walk is what argparse was given
    assert [path for path, _ in walk(TABLE)] == _paths(build_parser())


@pytest.mark.parametrize("path", [p for p, _ in walk(TABLE)], ids=" ".join)
def test_every_entry_runs_one_handler_named_after_it(path: tuple[str, ...]) -> None:
    entry = dict(walk(TABLE))[path]
    assert entry.help
    if entry.handler is None:  # a family: its actions run, one of them is required
        assert entry.actions
        return
    name = entry.handler.__name__
    assert name == "cmd_" + "_".join(path).replace("-", "_") or path == ("whoami",), name
    args = build_parser().parse_args(_minimal_argv(path, entry))
    assert args.func is entry.handler


def _minimal_argv(path: tuple[str, ...], entry: Command) -> list[str]:
    """The command with what it requires, taken from the table entry itself."""
    argv = list(path)

    def value(a: Arg) -> str:  # something the argument's type and choices accept
        if "choices" in a.options:
            return str(a.options["choices"][0])
        return "1" if a.options.get("type") is int else "x"

    for a in entry.args:
        if isinstance(a, OneOf):
            argv += [a.args[0].flags[0]] if a.required else []
        elif not a.flags[0].startswith("-"):
            argv += [] if a.options.get("nargs") == "?" else [value(a)]
        elif a.options.get("required"):
            argv += [a.flags[0], value(a)]
    return argv


def test_handlers_are_distinct_except_the_status_alias() -> None:
    handlers = [e.handler for _, e in walk(TABLE) if e.handler is not None]
    names = [h.__name__ for h in handlers]
    assert len(set(names)) == len(names) - 1
    assert names.count("cmd_status") == 2  # status and whoami


def test_top_level_help_needs_no_command_arguments() -> None:
    # `credvault --help` and usage errors use the shallow parser: same page, same choices
    shallow = spec.build_parser(TABLE, shallow=True)
    assert shallow.format_help() == build_parser().format_help()
    assert _choices(shallow) == set(COMMANDS)


def test_main_builds_only_the_named_command(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str | None] = []
    real = cli.build_parser

    def spy(only: str | None = None) -> argparse.ArgumentParser:
        built.append(only)
        return real(only)

    monkeypatch.setattr(cli, "build_parser", spy)
    args = cli.parse(["engagement", "close", "acme", "--grace-days", "3", "--as", "bob"])
    assert built == ["engagement"]
    assert (args.name, args.grace_days, args.as_member) == ("acme", "3", "bob")
    assert args.func.__name__ == "cmd_engagement_close"


def _all_args() -> list[tuple[tuple[str, ...], Arg]]:
    out = [((), a) for a in spec.COMMON_ARGS]
    for path, entry in walk(TABLE):
        for a in entry.args:
            out += [(path, x) for x in (a.args if isinstance(a, OneOf) else (a,))]
    return out


@pytest.mark.parametrize(
    ("path", "a"), _all_args(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else x.flags[0]
)
def test_values_are_described_for_completion(path: tuple[str, ...], a: Arg) -> None:
    # completion offers files where a path goes and names where a name goes: the table says
    # which, and a new argument must say it too
    assert a.value in (None, *spec.VALUES), a.value
    metavar = a.options.get("metavar")
    if metavar in ("PATH", "FILE", "DIR") or a.flags[0] in ("file", "dir"):
        assert a.value in ("file", "dir"), (path, a)
    if metavar == "ENG/NAME":
        assert a.value in ("ref", "system-ref"), (path, a)
    if a.flags[0] in ("engagement", "member", "client", "role", "--engagement", "--role"):
        assert a.value == a.flags[0].lstrip("-"), (path, a)


def test_building_the_parser_asks_no_terminal_width() -> None:
    # argparse's formatter asks the terminal its width (importing shutil, zlib, bz2, lzma:
    # ~3 ms); `credvault get` formats no help, so it must not pay for that
    code = (
        "import sys, credvault.cli as c; before = 'shutil' in sys.modules; "
        "args = c.parse(['get', 'acme/web', '--field', 'url']); "
        "print(before, 'shutil' in sys.modules, args.func.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if out[0] == "True":
        pytest.skip("the library itself imports shutil now")
    assert out[1:] == ["False", "cmd_get"]


def test_help_is_formatted_for_the_terminal() -> None:
    # ... while help, formatted after the build, still fits the terminal it is shown on
    def widest(columns: int) -> int:
        r = subprocess.run(
            [sys.executable, "-m", "credvault", "engagement", "new", "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": str(columns)},
            check=True,
        )
        return max(len(line) for line in r.stdout.splitlines())

    assert widest(50) <= 50
    assert widest(160) > 100
