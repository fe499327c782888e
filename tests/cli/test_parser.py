"""The command table: `main` builds only the parser of the command it runs, the table and the
parser agree, and every entry runs one handler named after it."""

from __future__ import annotations

import argparse

import pytest

import credvault.cli as cli
from credvault.cli import COMMANDS, TABLE, build_parser, spec
from credvault.cli.spec import Command, OneOf, walk


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
    for a in entry.args:
        if isinstance(a, OneOf):
            argv += [a.args[0].flags[0]] if a.required else []
        elif not a.flags[0].startswith("-"):
            argv += [] if a.options.get("nargs") == "?" else ["x"]
        elif a.options.get("required"):
            argv += [a.flags[0], "x"]
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
