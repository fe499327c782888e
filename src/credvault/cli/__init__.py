"""The ``credvault`` command: the command table, parsing, and error → exit code mapping.

:data:`TABLE` below is the one list of the command line: every command and action with its
help, arguments and handler (one ``cmd_*`` function in :mod:`credvault.cli.commands`). To add
a command, add an entry here and its handler there; the parser, ``--help``, ``docs/cli.md``
(``python scripts/gen_cli_docs.py``) and :data:`COMMANDS` follow. The order here is the order
of ``--help``. What an entry holds and how it becomes argparse: :mod:`credvault.cli.spec`.
Shell completion or a man page can walk :data:`TABLE` (:func:`credvault.cli.spec.walk`) or
the whole parser (:func:`build_parser`).

Errors are one line on stderr (``credvault: …``) and the exit codes of spec §7; never a
traceback, never a secret. No SQL and no cryptography here: every handler calls the library.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from credvault import CredvaultError
from credvault.cli import commands as c
from credvault.cli import records as r
from credvault.cli import spec
from credvault.cli.fields import field_args
from credvault.cli.spec import Command, arg, one_of
from credvault.cli.terminal import err

# -- the command table ------------------------------------------------------------------------
JSON = arg("--json", action="store_true")
KDF = arg(
    "--kdf",
    metavar="m=KiB,t=N,p=N",
    help="Argon2id cost for new passphrases (default m=65536,t=3,p=4)",
)
NEW_PASSPHRASE_FILE = arg(
    "--passphrase-file",
    dest="new_passphrase_file",
    metavar="PATH",
    value="file",
    help="the new member's passphrase (first line)",
)
ENGAGEMENT = arg("name", value="engagement")
REF = arg("ref", metavar="ENG/NAME", value="ref")
SYSTEM_REF = arg("ref", metavar="ENG/NAME", value="system-ref")
# destructive commands confirm on a terminal (terminal.confirm) and need --yes elsewhere
YES = arg("--yes", action="store_true", help="do not ask for confirmation")
CLIP = arg(
    "-c",
    "--clip",
    action="store_true",
    help="copy to the clipboard instead of printing; cleared after --clip-time",
)
CLIP_TIME = arg(
    "--clip-time",
    metavar="SECONDS",
    help="clear the clipboard after this long (default $CREDVAULT_CLIP_TIME, else 45; 0 never)",
)
GRACE_DAYS = arg("--grace-days", type=str, metavar="N")

STATUS_ARGS = (JSON,)
STATUS_HELP = "who you are, keyring state, and purges due"

TABLE: tuple[Command, ...] = (
    Command(
        "init",
        "create a vault, its first admin and the recovery key",
        c.cmd_init,
        (
            arg("--admin", metavar="NAME", help="first admin's name (default: you)"),
            arg(
                "--recovery-file",
                metavar="PATH",
                value="file",
                help="write the recovery key here (0600) instead of printing it once",
            ),
            arg(
                "--passphrase-file",
                metavar="PATH",
                value="file",
                help="read the admin passphrase here",
            ),
            KDF,
            arg(
                "--upgrade-schema",
                action="store_true",
                help="team vault, as the database owner: upgrade its schema to this "
                "credvault's version (audited)",
            ),
        ),
    ),
    Command(
        "info",
        "show vault facts",
        c.cmd_info,
        (
            arg(
                "--public-key",
                action="store_true",
                help="print only the public key that checks purge receipts",
            ),
            arg(
                "--fingerprint",
                action="store_true",
                help="team vault: print only your signing key's fingerprint (an admin "
                "compares it at join and member certify)",
            ),
            JSON,
        ),
    ),
    Command("status", STATUS_HELP, c.cmd_status, STATUS_ARGS),
    Command("whoami", STATUS_HELP, c.cmd_status, STATUS_ARGS),
    Command(
        "config",
        "show or change vault settings",
        actions=(
            Command(
                "set",
                "set purge-grace-days, audit-retention-days or backup-retention-days",
                c.cmd_config_set,
                (arg("name"), arg("value")),
            ),
            Command("get", "show every setting", c.cmd_config_get, (JSON,)),
        ),
    ),
    Command(
        "member",
        "manage vault members",
        actions=(
            Command(
                "add",
                "add a member (passphrase) or a service identity",
                c.cmd_member_add,
                (
                    arg("name"),
                    arg("--admin", action="store_true", help="make the member an admin"),
                    arg("--service", action="store_true", help="an automation identity (key file)"),
                    arg(
                        "--identity-file",
                        metavar="PATH",
                        value="file",
                        help="where to write the service key",
                    ),
                    NEW_PASSPHRASE_FILE,
                    KDF,
                ),
            ),
            Command(
                "invite",
                "invite a member to a PostgreSQL team vault (a one-time code)",
                c.cmd_member_invite,
                (
                    arg("name"),
                    arg("--admin", action="store_true", help="make the member an admin"),
                    arg(
                        "--invitation-file",
                        metavar="PATH",
                        value="file",
                        help="write the code here (0600) instead of printing it once",
                    ),
                ),
            ),
            Command("ls", "list members", c.cmd_member_ls, (JSON,)),
            Command(
                "rm",
                "remove a member, drop their grants, re-key the database",
                c.cmd_member_rm,
                (arg("name", value="member"),),
            ),
            Command(
                "certify",
                "certify the new keys of a member's passwd --compromised (team vault admin)",
                c.cmd_member_certify,
                (
                    arg("name", value="member"),
                    arg(
                        "--fingerprint",
                        required=True,
                        metavar="FPR",
                        help="the new signing key's fingerprint, as compared with the member "
                        "out of band",
                    ),
                ),
            ),
            Command(
                "reset",
                "give a member new keys and passphrase",
                c.cmd_member_reset,
                (
                    arg("name", value="member"),
                    arg(
                        "--passphrase-file",
                        dest="new_passphrase_file",
                        metavar="PATH",
                        value="file",
                    ),
                    KDF,
                ),
            ),
        ),
    ),
    Command(
        "join",
        "join a PostgreSQL team vault from your own machine (after member invite)",
        c.cmd_join,
        (
            arg(
                "--invitation-file",
                metavar="PATH",
                value="file",
                help="read the one-time invitation code here (first line)",
            ),
            arg(
                "--from-vault",
                metavar="DIR",
                value="dir",
                help="after migrate: keep your keys from this SQLCipher vault",
            ),
            NEW_PASSPHRASE_FILE,
            KDF,
        ),
    ),
    Command(
        "migrate",
        "move this SQLCipher vault to a PostgreSQL team vault (admin, as the database owner)",
        c.cmd_migrate,
        (
            arg("--to", required=True, metavar="CONNINFO", help="the target (postgresql://…)"),
            arg(
                "--invitations",
                required=True,
                metavar="DIR",
                value="dir",
                help="new directory for the members' one-time invitation codes (0600 files)",
            ),
        ),
    ),
    Command(
        "passwd",
        "change your own passphrase",
        c.cmd_passwd,
        (
            arg(
                "--passphrase-file",
                dest="new_passphrase_file",
                metavar="PATH",
                value="file",
                help="the new passphrase (first line)",
            ),
            arg(
                "--compromised",
                action="store_true",
                help="the old passphrase may be known: new keys, database re-keyed, your "
                "engagements' keys rotated (see docs/security.md)",
            ),
            KDF,
        ),
    ),
    Command(
        "engagement",
        "manage engagements and their lifecycle",
        actions=(
            Command(
                "new",
                "create an engagement (admin)",
                c.cmd_engagement_new,
                (
                    arg("name"),
                    arg("--client", required=True, value="client"),
                    arg("--lead", metavar="NAME", value="member", help="first lead (default: you)"),
                    arg("--require-reason", action="store_true", help="reads must give --reason"),
                    arg("--grace-days", type=str, metavar="N", help="days from close to purge"),
                ),
            ),
            Command(
                "ls",
                "list engagements",
                c.cmd_engagement_ls,
                (arg("--client", value="client"), JSON),
            ),
            Command(
                "show",
                "show an engagement, its members and purge date",
                c.cmd_engagement_show,
                (ENGAGEMENT, JSON),
            ),
            Command(
                "set",
                "change an engagement's settings",
                c.cmd_engagement_set,
                (
                    ENGAGEMENT,
                    one_of(
                        arg(
                            "--require-reason",
                            dest="require_reason",
                            action="store_true",
                            default=None,
                        ),
                        arg("--no-require-reason", dest="require_reason", action="store_false"),
                        required=True,
                    ),
                ),
            ),
            Command(
                "members",
                "list who holds which role",
                c.cmd_engagement_members,
                (ENGAGEMENT, JSON),
            ),
            Command(
                "close",
                "the service is complete: schedule the purge",
                c.cmd_engagement_close,
                (ENGAGEMENT, GRACE_DAYS),
            ),
            Command(
                "retain",
                "client asked to keep the data until a date",
                c.cmd_engagement_retain,
                (
                    ENGAGEMENT,
                    arg("--until", required=True, metavar="YYYY-MM-DD"),
                    arg("--reason", required=True),
                ),
            ),
            Command("release", "lift a retention hold", c.cmd_engagement_release, (ENGAGEMENT,)),
            Command(
                "rotate", "rotate the engagement key now", c.cmd_engagement_rotate, (ENGAGEMENT,)
            ),
            Command(
                "shred",
                "destroy now (client's deletion request)",
                c.cmd_engagement_shred,
                (
                    ENGAGEMENT,
                    YES,
                ),
            ),
        ),
    ),
    Command(
        "grant",
        "give a member a role on an engagement",
        c.cmd_grant,
        (
            arg("engagement", value="engagement"),
            arg("member", value="member"),
            arg("role", value="role", help="lead, engineer, reader or auditor"),
            arg("--until", metavar="YYYY-MM-DD[THH:MM]", help="the grant expires then (UTC)"),
        ),
    ),
    Command(
        "revoke",
        "revoke a member and rotate the engagement key",
        c.cmd_revoke,
        (arg("engagement", value="engagement"), arg("member", value="member"), JSON),
    ),
    Command(
        "recover",
        "restore access to an engagement with the recovery key",
        c.cmd_recover,
        (
            arg("engagement", value="engagement"),
            arg("--recovery-file", required=True, metavar="PATH", value="file"),
            arg("--grant-to", required=True, metavar="NAME", value="member"),
            arg("--role", required=True, value="role"),
        ),
    ),
    Command(
        "system",
        "client systems (hosts)",
        actions=(
            Command(
                "add",
                "add or update a system",
                c.cmd_system_add,
                (
                    SYSTEM_REF,
                    *field_args(
                        ("address", "IPv4, IPv6 or DNS name (required)"),
                        ("details", "free-text system details (stored encrypted)"),
                    ),
                    arg("--port"),
                    arg("--protocol"),
                ),
            ),
            Command(
                "ls",
                "list systems of an engagement",
                c.cmd_system_ls,
                (arg("engagement", value="engagement"), JSON),
            ),
            Command(
                "show",
                "show a system (address and details)",
                c.cmd_system_show,
                (
                    SYSTEM_REF,
                    JSON,
                    arg("--reason", help="why you read it (ticket number); recorded in the audit"),
                ),
            ),
            Command(
                "set",
                "change a system field by field (what is not named is kept)",
                r.cmd_system_set,
                (
                    SYSTEM_REF,
                    *field_args(
                        ("address", "IPv4, IPv6 or DNS name"),
                        ("details", "free-text system details (stored encrypted)"),
                    ),
                    arg("--port"),
                    arg("--protocol"),
                    arg(
                        "--clear",
                        action="append",
                        choices=["port", "protocol", "details"],
                        help="empty this field (repeatable)",
                    ),
                ),
            ),
            Command(
                "rm",
                "move a system to the engagement's trash",
                c.cmd_system_rm,
                (SYSTEM_REF,),
            ),
        ),
    ),
    Command(
        "put",
        "store a credential; the secret is read from stdin",
        c.cmd_put,
        (
            REF,
            *field_args(
                ("username", "the account name"),
                ("url", "the login URL (a URL carrying a password is refused)"),
                ("notes", "free-text notes"),
            ),
            arg(
                "--system",
                metavar="NAME",
                value="system",
                help="link to a system of the engagement",
            ),
            arg(
                "--kind",
                choices=["password", "ssh-key", "token", "other"],
                help="kind of a new credential (default password; a replace keeps it)",
            ),
            arg(
                "--generate",
                nargs="?",
                type=int,
                const=32,
                metavar="LENGTH",
                help="generate a random password instead of reading stdin (default 32)",
            ),
            arg(
                "--classes",
                default="upper,lower,digits,symbols",
                metavar="LIST",
                help="with --generate: classes to draw from, each at least once",
            ),
            arg(
                "--symbols",
                default="safe",
                metavar="SET",
                help="with --generate: 'safe' (-_.: URL and shell safe), 'all', or the characters",
            ),
            arg("--exclude", metavar="CHARS", help="with --generate: never use these characters"),
            arg(
                "--no-ambiguous",
                action="store_true",
                help="with --generate: avoid look-alikes (Il1|O0o and quotes)",
            ),
            arg(
                "--token",
                choices=["hex", "base64url"],
                help="generate a token of --bytes random bytes instead",
            ),
            arg("--bytes", type=int, default=32, metavar="N", help="token size (default 32)"),
            arg(
                "--words",
                type=int,
                metavar="N",
                help="generate a passphrase of N words (EFF large wordlist)",
            ),
            arg("--separator", default="-", help="between passphrase words (default -)"),
            arg(
                "--show",
                action="store_true",
                help="print the generated value once, after storing it",
            ),
            arg(
                "--totp",
                action="store_true",
                help="the secret is a TOTP seed (otpauth:// URI or base32), stored as a URI",
            ),
        ),
    ),
    Command(
        "get",
        "print a credential's secret (or a field)",
        c.cmd_get,
        (
            REF,
            arg("--field", choices=["secret", "username", "address", "port", "url", "notes"]),
            arg("--json", action="store_true", help="the whole record, secret included"),
            arg("-n", action="store_true", help="no trailing newline"),
            arg("--reason", help="why you read it (ticket number); recorded in the audit"),
            arg("--version", type=int, metavar="N", help="an earlier version (see history)"),
            CLIP,
            CLIP_TIME,
        ),
    ),
    Command(
        "history",
        "versions of a credential: who, when, what changed (no values)",
        r.cmd_history,
        (REF, JSON),
    ),
    Command(
        "revert",
        "make an earlier version current again (as a new version)",
        r.cmd_revert,
        (REF, arg("version", type=int, metavar="VERSION")),
    ),
    Command(
        "edit",
        "change a credential's fields without the secret (no options: $EDITOR)",
        r.cmd_edit,
        (
            REF,
            *field_args(
                ("username", "the account name"),
                ("url", "the login URL (a URL carrying a password is refused)"),
                ("notes", "free-text notes"),
            ),
            arg("--kind", choices=["password", "ssh-key", "token", "other"]),
            arg("--system", metavar="NAME", value="system", help="link to this system"),
            arg(
                "--clear",
                action="append",
                choices=["username", "url", "notes", "system"],
                help="empty this field (repeatable)",
            ),
            arg("--reason", help="why you open its fields (ticket number); recorded in the audit"),
        ),
    ),
    Command(
        "mv",
        "rename a credential, or move it to another engagement",
        r.cmd_mv,
        (REF, arg("target", metavar="[ENG/]NEW")),
    ),
    Command(
        "find",
        "search names (and, where you may read, fields) of credentials and systems",
        r.cmd_find,
        (
            arg("text"),
            arg("--names-only", action="store_true", help="do not decrypt fields"),
            arg("--reason", help="recorded in the audit; needed to search fields where required"),
            JSON,
        ),
    ),
    Command(
        "trash",
        "what rm and system rm removed, recoverable until it expires",
        actions=(
            Command(
                "ls",
                "list an engagement's trash",
                r.cmd_trash_ls,
                (arg("name", metavar="engagement", value="engagement"), JSON),
            ),
            Command(
                "restore",
                "bring a removed credential (or --system) back",
                r.cmd_trash_restore,
                (REF, arg("--system", action="store_true", help="restore a system")),
            ),
            Command(
                "purge",
                "destroy a removed item now (asks; --yes without a terminal)",
                r.cmd_trash_purge,
                (
                    REF,
                    arg("--system", action="store_true", help="a system"),
                    YES,
                ),
            ),
        ),
    ),
    Command(
        "import",
        "import KeePass, Bitwarden, pass or CSV entries into an engagement",
        r.cmd_import,
        (
            arg("name", metavar="engagement", value="engagement"),
            arg("source", metavar="SOURCE", value="file", help="file (pass: the store directory)"),
            arg(
                "--format",
                required=True,
                choices=["kdbx", "keepass-xml", "keepass-csv", "bitwarden-json", "pass", "csv"],
            ),
            arg("--map", metavar="FIELD=COLUMN,…", help="csv: column of each field"),
            arg(
                "--password-file",
                metavar="PATH",
                value="file",
                help="kdbx: master password (first line)",
            ),
            arg("--keyfile", metavar="PATH", value="file", help="kdbx: key file"),
            arg("--dry-run", action="store_true", help="show what would be imported"),
            JSON,
            CLIP,
            CLIP_TIME,
        ),
    ),
    Command(
        "otp",
        "print the current TOTP code of a credential holding a TOTP seed",
        c.cmd_otp,
        (
            REF,
            CLIP,
            CLIP_TIME,
            arg("--reason", help="why you need it (ticket number); recorded in the audit"),
        ),
    ),
    Command(
        "ssh",
        "ssh to a system with its linked key (via ssh-agent) or password",
        c.cmd_ssh,
        (
            SYSTEM_REF,
            arg(
                "--credential",
                metavar="NAME",
                value="credential",
                help="which linked credential, when several are linked to the system",
            ),
            arg(
                "--key-lifetime",
                default="15m",
                metavar="TIME",
                help="how long ssh-agent keeps the key, e.g. 5m, 1h (default 15m)",
            ),
            arg("--reason", help="why (ticket number); recorded in the audit"),
            arg(
                "ssh_args",
                nargs="*",
                metavar="-- SSH-ARGS",
                value="argv",
                help="options and a remote command for ssh, after --",
            ),
        ),
    ),
    Command(
        "run",
        "run a command with secrets in its environment (never in its arguments)",
        c.cmd_run,
        (
            arg(
                "--env",
                action="append",
                metavar="VAR=ENG/NAME[:FIELD]",
                help="put a credential's secret (or FIELD) into VAR; repeat for more",
            ),
            arg(
                "--mask",
                action="store_true",
                help="replace the secrets by ***** in the command's output",
            ),
            arg("--reason", help="recorded in the audit with the command's name"),
            arg(
                "command",
                nargs="*",
                metavar="-- COMMAND [ARGS]",
                value="argv",
                help="the command to run, after --",
            ),
        ),
    ),
    Command(
        "ls",
        "list credentials",
        c.cmd_ls,
        (arg("engagement", nargs="?", value="engagement"), JSON),
    ),
    Command("rm", "move a credential to the engagement's trash", c.cmd_rm, (REF,)),
    Command(
        "audit",
        "list, verify or checkpoint the audit trail",
        c.cmd_audit,
        (
            arg("--engagement", value="engagement"),
            arg("--member", value="member"),
            arg("--action"),
            arg("--since", metavar="YYYY-MM-DD"),
            arg("--limit", type=int),
            JSON,
        ),
        actions=(
            Command(
                "verify",
                "check the hash chain (exit 6 if broken)",
                c.cmd_audit_verify,
                (
                    arg(
                        "--checkpoint",
                        metavar="POS:MAC",
                        help="also prove no rewrite up to here",
                    ),
                ),
            ),
            Command(
                "checkpoint",
                "print the chain head to keep outside the vault",
                c.cmd_audit_checkpoint,
            ),
        ),
    ),
    Command(
        "witness",
        "your client's record of how far this vault has gone (rollback and fork detection)",
        actions=(
            Command(
                "accept",
                "accept the vault as it is after a deliberate restore or roll-back (audited)",
                c.cmd_witness_accept,
                (arg("--yes", action="store_true", help="do not ask for confirmation"),),
            ),
        ),
    ),
    Command(
        "purge",
        "destroy every engagement whose purge is due",
        c.cmd_purge,
        (
            arg("--dry-run", action="store_true", help="only list what is due"),
            arg(
                "--confirm-clock",
                metavar="YYYY-MM-DD",
                help="the clock is suspect and you checked that today is this date (UTC): "
                "act on it (admins and service identities; audited)",
            ),
            arg(
                "--rewrite",
                action="store_true",
                help="team vault, as the database owner: rewrite the table files purged rows "
                "stay in (VACUUM FULL; audited)",
            ),
            arg(
                "--ledger",
                action="append",
                metavar="FILE",
                value="file",
                help="team vault restored from a dump: a purge ledger whose signed receipts "
                "say what to destroy again (repeatable)",
            ),
            JSON,
        ),
    ),
    Command(
        "receipt",
        "print a purged engagement's signed receipt",
        c.cmd_receipt,
        (
            arg("engagement", value="engagement"),
            JSON,
            arg("--output", metavar="FILE", value="file", help="write it to a new 0600 file"),
        ),
    ),
    Command(
        "verify-receipt",
        "check a purge receipt's signature",
        c.cmd_verify_receipt,
        (
            arg("file", value="file"),
            arg("--public-key", metavar="KEY", help="the vault's public key (base64)"),
            arg(
                "--key-history",
                metavar="FILE",
                value="file",
                help="the vault's receipt key history (`credvault receipt-keys --json`): "
                "follow it forward from --public-key",
            ),
        ),
        common=False,  # needs no vault
    ),
    Command(
        "receipt-keys",
        "list every receipt key with its validity period (publish to clients)",
        c.cmd_receipt_keys,
        (
            JSON,
            arg(
                "--links",
                action="store_true",
                help="print only the signed links, one canonical JSON line each",
            ),
            arg("--output", metavar="FILE", value="file", help="write the JSON to a new file"),
        ),
    ),
    Command(
        "client",
        "client requests: list, export, shred",
        actions=(
            Command("ls", "list clients and their engagements", c.cmd_client_ls, (JSON,)),
            Command(
                "export",
                "everything held for a client, as JSON",
                c.cmd_client_export,
                (
                    arg("client", value="client"),
                    arg("--output", metavar="FILE", value="file", help="write to a new 0600 file"),
                    arg("--reason", help="why (ticket number); recorded in the audit"),
                ),
            ),
            Command(
                "shred",
                "shred every engagement of a client",
                c.cmd_client_shred,
                (arg("client", value="client"), arg("--yes", action="store_true")),
            ),
        ),
    ),
    Command(
        "backup",
        "write an encrypted backup file; prune old backups",
        c.cmd_backup,
        (
            arg(
                "dir",
                nargs="?",
                value="dir",
                help="backup directory (default VAULT/../credvault-backups)",
            ),
        ),
    ),
    Command(
        "restore",
        "restore a backup into a new vault directory",
        c.cmd_restore,
        (
            arg("file", value="file"),
            arg(
                "--ledger",
                action="append",
                metavar="FILE",
                value="file",
                help="a purge ledger or receipt file to consult too (repeatable)",
            ),
        ),
    ),
    Command(
        "check",
        "full integrity check of the vault or a backup file (exit 6 if anything is wrong)",
        c.cmd_check,
        (
            arg(
                "target",
                nargs="?",
                value="file",
                help="a backup file or vault directory (default: the vault)",
            ),
            JSON,
        ),
    ),
    Command(
        "unlock",
        "unlock once: your keys stay in your agent (default 8h)",
        c.cmd_unlock,
        (
            arg("--ttl", default="8h", help="maximum lifetime, e.g. 30m, 8h, 2d"),
            arg(
                "--idle", metavar="TTL", help="forget the keys after this long unused (default 1h)"
            ),
            arg(
                "--keyring",
                action="store_true",
                help="cache the keys in the OS keyring instead (wrapped; useless after --ttl)",
            ),
        ),
    ),
    Command("lock", "end your agent and remove a key cached in the OS keyring", c.cmd_lock),
    Command("agent", "run the agent in the foreground (for a systemd user unit)", c.cmd_agent),
)

COMMANDS = frozenset(cmd.name for cmd in TABLE)
# commands whose argument list ends with another program's command line (Arg.value "argv")
PASSTHROUGH = {
    cmd.name: str(a.options.get("dest") or a.flags[0])
    for cmd in TABLE
    for a in cmd.args
    if isinstance(a, spec.Arg) and a.value == "argv"
}


# -- parsing and running ----------------------------------------------------------------------
def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` just that command's part (what `main` needs)."""
    return spec.build_parser(TABLE, only)


def parse(words: Sequence[str]) -> argparse.Namespace:
    """Parse a command line, building only the parser of the command it names.

    The command is the first word (the top level takes no option but --help and
    --version); without one, the parser lists the commands without their arguments, which
    is all ``--help``, ``--version`` and a usage error need.
    """
    words = list(words)
    if words and words[0] in COMMANDS:
        parser = build_parser(words[0])
    else:
        parser = spec.build_parser(TABLE, shallow=True)
    dest = PASSTHROUGH.get(words[0]) if words else None
    if dest is None or "--" not in words:
        return parser.parse_args(words)
    # `run ... -- COMMAND ARGS`, `ssh ENG/SYS ... -- SSH-ARGS`: what follows the first `--`
    # is the other program's, never ours (argparse would mix it with our positionals)
    cut = words.index("--")
    args = parser.parse_args(words[:cut])
    setattr(args, dest, [*getattr(args, dest), *words[cut + 1 :]])
    return args


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command; errors become one line on stderr and their exit code."""
    try:
        code: int = args.func(args)
        return code
    except CredvaultError as e:
        err(str(e))
        return e.exit_code
    except KeyboardInterrupt as e:
        from credvault.interrupts import interrupted

        return interrupted(e)
    except BrokenPipeError:
        return 1
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            err("disk full" + (f": cannot write {e.filename}" if e.filename else ""))
            return 1
        err(f"{e.strerror or 'I/O error'}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback, never a secret
        err(f"internal error ({type(e).__name__}); please report it")
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["__complete"]:  # hidden: names for the shell completion scripts
        from credvault.cli.complete import main as complete

        return complete(words[1:])
    return dispatch(parse(words))
