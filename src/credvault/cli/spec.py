"""What a command-table entry is, and how the table becomes an argparse parser.

The command line is described once, as data (:data:`credvault.cli.TABLE`): a
:class:`Command` has a name, a one-line help, its arguments (:class:`Arg`, or a
:class:`OneOf` group) and the function that runs it, or nested :class:`Command` actions
(``member add``). Everything else is derived from that table: the parser of the running
command (only that one is built: building all of them costs milliseconds on every
``credvault get``), the whole parser for ``--help`` and ``docs/cli.md``, the list of
commands, and whatever else wants to walk the command line (shell completion, a man page):
use :func:`walk` for the table or :func:`build_parser` for argparse objects.

This module knows argparse and, apart from the one-line error of :mod:`credvault.cli.terminal`,
nothing of credvault.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from credvault.cli.terminal import err

if TYPE_CHECKING:  # an annotation only: subscripting Callable costs import time
    from collections.abc import Callable

    Handler = Callable[[argparse.Namespace], int]

EXIT_USAGE = 2
PROG = "credvault"
VERSION = "0.1.0"  # credvault.__version__ (tests/cli/test_cli.py checks `--version` against it)
# what an argument's value names (Arg.value), for shell completion
VALUES = (
    "file",
    "dir",
    "engagement",
    "member",
    "client",
    "role",
    "ref",
    "system-ref",
    "system",
    "credential",  # a credential's NAME in the engagement at hand
    "argv",  # another program's command line (after --)
)
DESCRIPTION = (
    "Encrypted credential vault for client "
    "engagements: per-engagement keys, audit trail, automatic shredding."
)


class Arg:
    """One ``add_argument`` call: its flags (``("name",)``, ``("--client",)``) and keywords.

    ``value`` says what the value names, for shell completion (argparse never sees it):
    ``"file"``, ``"dir"``, ``"engagement"``, ``"member"``, ``"client"``, ``"role"``, ``"ref"``
    (a credential's ENG/NAME), ``"system-ref"`` (a system's ENG/NAME), ``"system"`` (a
    system's NAME in the engagement at hand), ``"credential"`` (a credential's NAME in the
    engagement at hand), ``"argv"`` (another program's command line: what follows ``--`` is
    given to it untouched, see ``credvault.cli.parse``); ``None`` for anything else.

    The table's types are plain slotted classes, not NamedTuples or dataclasses: creating
    those classes costs about 0.4 ms each on every ``credvault get``. Treat them as frozen.
    """

    __slots__ = ("flags", "options", "value")

    def __init__(
        self, flags: tuple[str, ...], options: Mapping[str, Any], value: str | None = None
    ) -> None:
        self.flags = flags
        self.options = options
        self.value = value

    def __repr__(self) -> str:
        return f"Arg({self.flags!r}, {dict(self.options)!r}, {self.value!r})"


class OneOf:
    """Mutually exclusive arguments (``--require-reason`` / ``--no-require-reason``)."""

    __slots__ = ("args", "required")

    def __init__(self, args: tuple[Arg, ...], required: bool = False) -> None:
        self.args = args
        self.required = required

    def __repr__(self) -> str:
        return f"OneOf({self.args!r}, required={self.required!r})"


class Command:
    """A command or a nested action: what ``--help`` says, what it takes, what runs it.

    A command with ``actions`` and no ``handler`` needs an action (``member`` alone is a
    usage error); with both, the action is optional (``audit`` lists, ``audit verify``
    verifies). ``common`` adds ``--vault``/``--as``/``--no-keyring`` (:data:`COMMON_ARGS`) to
    the command and to each of its actions, which accept them after the action too; an
    action takes its command's ``common``.
    """

    __slots__ = ("actions", "args", "common", "handler", "help", "name")

    def __init__(
        self,
        name: str,
        help: str,
        handler: Handler | None = None,
        args: tuple[Arg | OneOf, ...] = (),
        actions: tuple[Command, ...] = (),
        *,
        common: bool = True,
    ) -> None:
        self.name = name
        self.help = help
        self.handler = handler
        self.args = args
        self.actions = actions
        self.common = common
        for action in actions:
            action.common = common

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {self.help!r}, ...)"


def arg(*flags: str, value: str | None = None, **options: Any) -> Arg:
    """``arg("--until", metavar="YYYY-MM-DD", help=...)``: an add_argument call, as data."""
    return Arg(flags, options, value)


def one_of(*args: Arg, required: bool = False) -> OneOf:
    """``one_of(arg(...), arg(...), required=True)``: a mutually exclusive group, as data."""
    return OneOf(args, required)


COMMON_ARGS = (
    arg(
        "--vault",
        metavar="DIR",
        value="dir",
        help="vault directory (default $CREDVAULT_VAULT, else $XDG_DATA_HOME/credvault)",
    ),
    arg(
        "--as",
        dest="as_member",
        metavar="NAME",
        value="member",
        help="act as this member (default $CREDVAULT_MEMBER, else your user name)",
    ),
    arg("--no-keyring", action="store_true", help="do not use a key cached in the OS keyring"),
)


class Parser(argparse.ArgumentParser):
    """Usage errors are one ``credvault: …`` line and exit 2, like every other error.

    ``building=True`` marks a parser the table is still being turned into (see
    :meth:`_get_formatter`); the builder clears it when the parser is complete.
    """

    def __init__(self, *args: Any, building: bool = False, **kwargs: Any) -> None:
        self.building = building
        super().__init__(*args, **kwargs)

    def _get_formatter(self) -> argparse.HelpFormatter:
        if self.building:
            # While a parser is built, argparse makes a formatter for every add_argument
            # only to check metavars. The default one asks the terminal for its width, and
            # that imports shutil (with zlib, bz2 and lzma): ~3 ms of every `credvault get`.
            # Help and errors are formatted once it is built, with the terminal's width.
            return argparse.HelpFormatter(self.prog, width=100)
        return super()._get_formatter()

    def error(self, message: str) -> NoReturn:
        err(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_USAGE)


def _add_common(p: argparse.ArgumentParser, *, nested: bool) -> None:
    """--vault/--as/--no-keyring, accepted before or after an action (``member add X --as Y``).

    On actions the defaults are suppressed, so they never overwrite a value given before
    the action (an argparse subparser default would).
    """
    g = p.add_argument_group("vault and identity")
    for a in COMMON_ARGS:
        options: dict[str, Any] = dict(a.options)
        if nested:
            options["default"] = argparse.SUPPRESS
        g.add_argument(*a.flags, **options)


def _add_args(p: argparse.ArgumentParser, args: Sequence[Arg | OneOf]) -> None:
    for a in args:
        if isinstance(a, OneOf):
            g = p.add_mutually_exclusive_group(required=a.required)
            for x in a.args:
                g.add_argument(*x.flags, **x.options)
        else:
            p.add_argument(*a.flags, **a.options)


def _add_command(sub: argparse._SubParsersAction[Parser], cmd: Command, *, nested: bool) -> None:
    # a command's page repeats its help as the description; an action's page has none
    p = sub.add_parser(
        cmd.name, help=cmd.help, description=None if nested else cmd.help, building=True
    )
    if cmd.common and not nested:
        _add_common(p, nested=False)  # first: the usage line lists them before the rest
    if cmd.handler is not None:
        p.set_defaults(func=cmd.handler)
    _add_args(p, cmd.args)
    if cmd.actions:
        actions = p.add_subparsers(dest="verb", metavar="ACTION", parser_class=Parser)
        actions.required = cmd.handler is None
        for action in cmd.actions:
            _add_command(actions, action, nested=True)
    if cmd.common and nested:
        _add_common(p, nested=True)  # last, after the action's own arguments
    p.building = False


def build_parser(
    table: Sequence[Command], only: str | None = None, *, shallow: bool = False
) -> Parser:
    """The parser of ``table``: whole, or with ``only`` just that command (what a run needs).

    ``shallow`` lists every command with its help but gives none of them arguments: enough
    for ``credvault --help``, ``--version`` and an unknown command, at a fraction of the cost.
    """
    parser = Parser(prog=PROG, description=DESCRIPTION, building=True)
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for cmd in table:
        if shallow:
            listed = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, building=True)
            listed.building = False
        elif only is None or cmd.name == only:
            _add_command(sub, cmd, nested=False)
    parser.building = False
    return parser


def walk(
    table: Sequence[Command], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every command and action, depth first: ``(("engagement", "new"), Command(...))``.

    The arguments listed are the entry's own: where ``common`` is true, argparse adds
    :data:`COMMON_ARGS` too.
    """
    for cmd in table:
        yield (*path, cmd.name), cmd
        yield from walk(cmd.actions, (*path, cmd.name))
