"""The ``credvault`` command: argparse, a dispatch table, and error → exit code mapping.

Errors are one line on stderr (``credvault: …``) and the exit codes of spec §7; never a
traceback, never a secret. No SQL and no cryptography here: every verb calls the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from credvault.cli import commands as c
from credvault.cli.terminal import err
from credvault.errors import CredvaultError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        err(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_USAGE)


def _common(p: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """--vault/--as/--no-keyring, accepted before or after an action (``member add X --as Y``).

    On nested parsers the defaults are suppressed, so they never overwrite a value given
    before the action (an argparse subparser default would).
    """
    default: object = argparse.SUPPRESS if nested else None
    g = p.add_argument_group("vault and identity")
    g.add_argument(
        "--vault",
        metavar="DIR",
        default=default,
        help="vault directory (default $CREDVAULT_VAULT, else $XDG_DATA_HOME/credvault)",
    )
    g.add_argument(
        "--as",
        dest="as_member",
        metavar="NAME",
        default=default,
        help="act as this member (default $CREDVAULT_MEMBER, else your user name)",
    )
    g.add_argument(
        "--no-keyring",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="do not use a key cached in the OS keyring",
    )


def _nested_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of actions under a command (``member add``, ``engagement close``, …)."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                for inner in command._actions:
                    if isinstance(inner, argparse._SubParsersAction):
                        out += list(dict.fromkeys(inner.choices.values()))
    return out


def _kdf(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kdf",
        metavar="m=KiB,t=N,p=N",
        help="Argon2id cost for new passphrases (default m=65536,t=3,p=4)",
    )


class _Skipped:
    """Stands in for the parser of a command that is not being run: every call is a no-op.

    Building all ~50 sub-parsers costs several milliseconds on every `credvault get`.
    """

    def __getattr__(self, _name: str) -> Callable[..., _Skipped]:
        return self._noop

    def _noop(self, *_args: object, **_kw: object) -> _Skipped:
        return self

    required = False


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` just that command's part (what `main` needs)."""
    parser = _Parser(
        prog="credvault",
        description="Encrypted credential vault for client "
        "engagements: per-engagement keys, audit trail, automatic shredding.",
    )
    parser.add_argument("--version", action="version", version="credvault 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Skipped()  # type: ignore[return-value]
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p)
        p.set_defaults(func=fn)
        return p

    p = cmd("init", c.cmd_init, "create a vault, its first admin and the recovery key")
    p.add_argument("--admin", metavar="NAME", help="first admin's name (default: you)")
    p.add_argument(
        "--recovery-file",
        metavar="PATH",
        help="write the recovery key here (0600) instead of printing it once",
    )
    p.add_argument("--passphrase-file", metavar="PATH", help="read the admin passphrase here")
    _kdf(p)

    p = cmd("info", c.cmd_info, "show vault facts")
    p.add_argument(
        "--public-key",
        action="store_true",
        help="print only the public key that checks purge receipts",
    )
    p.add_argument("--json", action="store_true")

    for name in ("status", "whoami"):
        p = cmd(name, c.cmd_status, "who you are, keyring state, and purges due")
        p.add_argument("--json", action="store_true")

    p = cmd("config", c.cmd_config, "show or change vault settings")
    csub = p.add_subparsers(dest="config_cmd", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    q = csub.add_parser(
        "set", help="set purge-grace-days, audit-retention-days or backup-retention-days"
    )
    q.add_argument("name")
    q.add_argument("value")
    q = csub.add_parser("get", help="show every setting")
    q.add_argument("--json", action="store_true")

    p = cmd("member", c.cmd_member, "manage vault members")
    msub = p.add_subparsers(dest="member_cmd", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    q = msub.add_parser("add", help="add a member (passphrase) or a service identity")
    q.add_argument("name")
    q.add_argument("--admin", action="store_true", help="make the member an admin")
    q.add_argument("--service", action="store_true", help="an automation identity (key file)")
    q.add_argument("--identity-file", metavar="PATH", help="where to write the service key")
    q.add_argument(
        "--passphrase-file",
        dest="new_passphrase_file",
        metavar="PATH",
        help="the new member's passphrase (first line)",
    )
    _kdf(q)
    q = msub.add_parser("ls", help="list members")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("rm", help="remove a member, drop their grants, re-key the database")
    q.add_argument("name")
    q = msub.add_parser("reset", help="give a member new keys and passphrase")
    q.add_argument("name")
    q.add_argument("--passphrase-file", dest="new_passphrase_file", metavar="PATH")
    _kdf(q)

    p = cmd("passwd", c.cmd_passwd, "change your own passphrase")
    p.add_argument(
        "--passphrase-file",
        dest="new_passphrase_file",
        metavar="PATH",
        help="the new passphrase (first line)",
    )
    _kdf(p)

    p = cmd("engagement", c.cmd_engagement, "manage engagements and their lifecycle")
    esub = p.add_subparsers(dest="eng_cmd", metavar="ACTION", parser_class=_Parser)
    esub.required = True
    q = esub.add_parser("new", help="create an engagement (admin)")
    q.add_argument("name")
    q.add_argument("--client", required=True)
    q.add_argument("--lead", metavar="NAME", help="first lead (default: you)")
    q.add_argument("--require-reason", action="store_true", help="reads must give --reason")
    q.add_argument("--grace-days", type=str, metavar="N", help="days from close to purge")
    q = esub.add_parser("ls", help="list engagements")
    q.add_argument("--client")
    q.add_argument("--json", action="store_true")
    q = esub.add_parser("show", help="show an engagement, its members and purge date")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")
    q = esub.add_parser("set", help="change an engagement's settings")
    q.add_argument("name")
    rr = q.add_mutually_exclusive_group(required=True)
    rr.add_argument("--require-reason", dest="require_reason", action="store_true", default=None)
    rr.add_argument("--no-require-reason", dest="require_reason", action="store_false")
    q = esub.add_parser("members", help="list who holds which role")
    q.add_argument("name")
    q.add_argument("--json", action="store_true")
    q = esub.add_parser("close", help="the service is complete: schedule the purge")
    q.add_argument("name")
    q.add_argument("--grace-days", type=str, metavar="N")
    q = esub.add_parser("retain", help="client asked to keep the data until a date")
    q.add_argument("name")
    q.add_argument("--until", required=True, metavar="YYYY-MM-DD")
    q.add_argument("--reason", required=True)
    q = esub.add_parser("release", help="lift a retention hold")
    q.add_argument("name")
    q = esub.add_parser("rotate", help="rotate the engagement key now")
    q.add_argument("name")
    q = esub.add_parser("shred", help="destroy now (client's deletion request)")
    q.add_argument("name")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = cmd("grant", c.cmd_grant, "give a member a role on an engagement")
    p.add_argument("engagement")
    p.add_argument("member")
    p.add_argument("role", help="lead, engineer, reader or auditor")
    p.add_argument("--until", metavar="YYYY-MM-DD[THH:MM]", help="the grant expires then (UTC)")

    p = cmd("revoke", c.cmd_revoke, "revoke a member and rotate the engagement key")
    p.add_argument("engagement")
    p.add_argument("member")
    p.add_argument("--json", action="store_true")

    p = cmd("recover", c.cmd_recover, "restore access to an engagement with the recovery key")
    p.add_argument("engagement")
    p.add_argument("--recovery-file", required=True, metavar="PATH")
    p.add_argument("--grant-to", required=True, metavar="NAME")
    p.add_argument("--role", required=True)

    p = cmd("system", c.cmd_system, "client systems (hosts)")
    ssub = p.add_subparsers(dest="sys_cmd", metavar="ACTION", parser_class=_Parser)
    ssub.required = True
    q = ssub.add_parser("add", help="add or update a system")
    q.add_argument("ref", metavar="ENG/NAME")
    q.add_argument("--address", required=True, help="IPv4, IPv6 or DNS name")
    q.add_argument("--port")
    q.add_argument("--protocol")
    q.add_argument("--details", help="free-text system details (stored encrypted)")
    q = ssub.add_parser("ls", help="list systems of an engagement")
    q.add_argument("engagement")
    q.add_argument("--json", action="store_true")
    q = ssub.add_parser("show", help="show a system (address and details)")
    q.add_argument("ref", metavar="ENG/NAME")
    q.add_argument("--json", action="store_true")
    q = ssub.add_parser("rm", help="remove a system")
    q.add_argument("ref", metavar="ENG/NAME")

    p = cmd("put", c.cmd_put, "store a credential; the secret is read from stdin")
    p.add_argument("ref", metavar="ENG/NAME")
    p.add_argument("--username")
    p.add_argument("--system", metavar="NAME", help="link to a system of the engagement")
    p.add_argument(
        "--kind",
        choices=["password", "ssh-key", "token", "other"],
        help="kind of a new credential (default password; a replace keeps it)",
    )
    p.add_argument("--url")
    p.add_argument("--notes")
    p.add_argument(
        "--generate",
        nargs="?",
        type=int,
        const=32,
        metavar="LENGTH",
        help="generate a random secret instead of reading stdin",
    )

    p = cmd("get", c.cmd_get, "print a credential's secret (or a field)")
    p.add_argument("ref", metavar="ENG/NAME")
    p.add_argument("--field", choices=["secret", "username", "address", "port", "url", "notes"])
    p.add_argument("--json", action="store_true", help="the whole record, secret included")
    p.add_argument("-n", action="store_true", help="no trailing newline")
    p.add_argument("--reason", help="why you read it (ticket number); recorded in the audit")

    p = cmd("ls", c.cmd_ls, "list credentials")
    p.add_argument("engagement", nargs="?")
    p.add_argument("--json", action="store_true")

    p = cmd("rm", c.cmd_rm, "remove a credential")
    p.add_argument("ref", metavar="ENG/NAME")

    p = cmd("audit", c.cmd_audit, "list, verify or checkpoint the audit trail")
    p.add_argument("--engagement")
    p.add_argument("--member")
    p.add_argument("--action")
    p.add_argument("--since", metavar="YYYY-MM-DD")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    asub = p.add_subparsers(dest="audit_cmd", metavar="ACTION", parser_class=_Parser)
    q = asub.add_parser("verify", help="check the hash chain (exit 6 if broken)")
    q.add_argument("--checkpoint", metavar="POS:MAC", help="also prove no rewrite up to here")
    q = asub.add_parser("checkpoint", help="print the chain head to keep outside the vault")

    p = cmd("purge", c.cmd_purge, "destroy every engagement whose purge is due")
    p.add_argument("--dry-run", action="store_true", help="only list what is due")
    p.add_argument("--json", action="store_true")

    p = cmd("receipt", c.cmd_receipt, "print a purged engagement's signed receipt")
    p.add_argument("engagement")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output", metavar="FILE", help="write it to a new 0600 file")

    p = (
        sub.add_parser(
            "verify-receipt",
            help="check a purge receipt's signature",
            description="check a purge receipt's signature",
        )
        if only in (None, "verify-receipt")
        else _Skipped()  # type: ignore[assignment]
    )
    p.add_argument("file")
    p.add_argument("--public-key", metavar="KEY", help="the vault's public key (base64)")
    p.set_defaults(func=c.cmd_verify_receipt)

    p = cmd("client", c.cmd_client, "client requests: list, export, shred")
    clsub = p.add_subparsers(dest="client_cmd", metavar="ACTION", parser_class=_Parser)
    clsub.required = True
    q = clsub.add_parser("ls", help="list clients and their engagements")
    q.add_argument("--json", action="store_true")
    q = clsub.add_parser("export", help="everything held for a client, as JSON")
    q.add_argument("client")
    q.add_argument("--output", metavar="FILE", help="write to a new 0600 file")
    q = clsub.add_parser("shred", help="shred every engagement of a client")
    q.add_argument("client")
    q.add_argument("--yes", action="store_true")

    p = cmd("backup", c.cmd_backup, "write an encrypted backup file; prune old backups")
    p.add_argument("dir", nargs="?", help="backup directory (default VAULT/../credvault-backups)")

    p = cmd("restore", c.cmd_restore, "restore a backup into a new vault directory")
    p.add_argument("file")

    p = cmd(
        "check",
        c.cmd_check,
        "full integrity check of the vault or a backup file (exit 6 if anything is wrong)",
    )
    p.add_argument(
        "target", nargs="?", help="a backup file or vault directory (default: the vault)"
    )
    p.add_argument("--json", action="store_true")

    p = cmd("unlock", c.cmd_unlock, "cache your key in the OS keyring (default 8h)")
    p.add_argument("--ttl", default="8h", help="how long, e.g. 30m, 8h, 2d")

    cmd("lock", c.cmd_lock, "remove your cached key from the OS keyring")
    for nested in _nested_parsers(parser):
        _common(nested, nested=True)
    return parser


COMMANDS = frozenset(
    [
        "init",
        "info",
        "status",
        "whoami",
        "config",
        "member",
        "passwd",
        "engagement",
        "grant",
        "revoke",
        "recover",
        "system",
        "put",
        "get",
        "ls",
        "rm",
        "audit",
        "purge",
        "receipt",
        "verify-receipt",
        "client",
        "backup",
        "restore",
        "check",
        "unlock",
        "lock",
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    first = next((w for w in words if not w.startswith("-")), None)
    only = first if first in COMMANDS and "-h" not in words and "--help" not in words else None
    args = build_parser(only).parse_args(words)
    try:
        code: int = args.func(args)
        return code
    except CredvaultError as e:
        err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        err(f"{e.strerror or 'I/O error'}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback, never a secret
        err(f"internal error ({type(e).__name__}); please report it")
        return 1
