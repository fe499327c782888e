"""`main` builds only the parser of the command it runs; the list it knows must not drift."""

from __future__ import annotations

import argparse

import pytest

from credvault.cli import COMMANDS, build_parser


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
