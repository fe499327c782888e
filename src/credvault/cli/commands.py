"""One ``cmd_*`` function per command and action (``cmd_engagement_new`` runs
``credvault engagement new``): read what argparse gave, make one library call, render.

The table that names them, with their help and arguments, is :data:`credvault.cli.TABLE`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from credvault import (
    DEFAULT_KDF,
    AlreadyExists,
    Engagement,
    FirstOf,
    IntegrityError,
    InvalidInput,
    KdfParams,
    NotFound,
    Secret,
    default_source,
    identity_member,
    read_passphrase_file,
    validate_name,
    vault_target,
    verify_receipt,
    write_new_private,
    write_receipt,
)
from credvault.cli import terminal as t

if TYPE_CHECKING:
    from credvault import LedgerRestore, NotOnTeam, ReceiptKeys, Team, Vault, WitnessGap
    from credvault.clipboard import Backend

EXIT_OK = 0


# -- shared plumbing ------------------------------------------------------------------------
def vault_dir(args: argparse.Namespace) -> Path:
    """The SQLCipher vault directory; a team vault here is a command it does not serve."""
    if vault_target(getattr(args, "vault", None)) is not None:
        handler = getattr(getattr(args, "func", None), "__name__", "")
        raise not_on_team(handler)
    if args.vault:
        return Path(args.vault)
    from credvault import default_dir  # its module is the SQLCipher vault's: not a team get's

    return default_dir()


def member_name(args: argparse.Namespace) -> str:
    if getattr(args, "as_member", None) is not None:
        return validate_name(str(args.as_member), "member name")
    env = os.environ.get("CREDVAULT_MEMBER")
    if env:
        return env
    identity = os.environ.get("CREDVAULT_IDENTITY")
    if identity:  # a service identity names its member
        return identity_member(Path(identity))
    import getpass  # only here: who you are is usually given

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise InvalidInput("cannot tell who you are: use --as NAME or CREDVAULT_MEMBER") from None


def kdf_params(args: argparse.Namespace) -> KdfParams:
    spec = getattr(args, "kdf", None)
    if not spec:
        return DEFAULT_KDF
    try:
        parts = dict(kv.split("=") for kv in spec.split(","))
        return KdfParams(int(parts["m"]), int(parts["t"]), int(parts["p"]))
    except (ValueError, KeyError):
        raise InvalidInput("invalid --kdf: expected m=KiB,t=N,p=N") from None


def unlock_source(args: argparse.Namespace, vault: Path, member: str) -> FirstOf:
    """Identity file, OS keyring, passphrase file, prompt: in that order."""
    identity = os.environ.get("CREDVAULT_IDENTITY")
    pfile = getattr(args, "passphrase_file", None) or os.environ.get("CREDVAULT_PASSPHRASE_FILE")
    return default_source(
        vault,
        identity_file=Path(identity) if identity else None,
        use_keyring=not getattr(args, "no_keyring", False),
        passphrase_file=Path(pfile) if pfile else None,
        prompt=t.ask_hidden if t.has_terminal() else None,
    )


# Set only by the agent (credvault.agent.server) while it runs a command for a client: the
# vault it holds open for that member, instead of unlocking one here.
borrowed_vault: Callable[[], Vault] | None = None


# The handlers a PostgreSQL team vault serves (docs/team.md): they use only the part of
# Vault's API that credvault.Team offers. Any other command on a team vault is refused
# with one line (NotOnTeam, exit 1) before it touches anything.
TEAM_COMMANDS = frozenset(
    {
        "cmd_get",
        "cmd_put",
        "cmd_ls",
        "cmd_grant",
        "cmd_revoke",
        "cmd_engagement_new",
        "cmd_member_ls",
        "cmd_member_rm",
        "cmd_member_invite",
        "cmd_audit",
        "cmd_audit_verify",
        "cmd_audit_checkpoint",
        "cmd_engagement_close",
        "cmd_engagement_retain",
        "cmd_engagement_release",
        "cmd_engagement_shred",
        "cmd_purge",
        "cmd_receipt",
        "cmd_receipt_keys",
        "cmd_info",
        "cmd_passwd",
        "cmd_member_certify",
        "cmd_client_export",
        "cmd_system_add",
        "cmd_system_ls",
        "cmd_system_show",
        "cmd_system_rm",
        "cmd_system_set",
        "cmd_history",
        "cmd_revert",
        "cmd_edit",
        "cmd_mv",
        "cmd_find",
        "cmd_rm",
        "cmd_trash_ls",
        "cmd_trash_restore",
        "cmd_trash_purge",
        "cmd_otp",
        "cmd_run",
        "cmd_ssh",
        "cmd_engagement_ls",
        "cmd_engagement_show",
        "cmd_status",
        "cmd_engagement_set",
        "cmd_engagement_members",
        "cmd_engagement_rotate",
        "cmd_client_ls",
        "cmd_client_shred",
        "cmd_import",
        "cmd_unlock",
        "cmd_check",
        "cmd_config_get",
        "cmd_config_set",
        "cmd_witness_accept",
    }
)


# Commands a team vault replaces by design, and with what (one line, exit 1).
TEAM_INSTEAD = {
    "cmd_member_add": "an admin runs `credvault member invite NAME` and the new member "
    "`credvault join` on their own machine, where their keys are made (docs/team.md)",
    "cmd_member_reset": "a member's keys are made on their own machine, never by an admin: "
    "`credvault member rm NAME`, then `member invite NAME` and their `join`; their leads grant "
    'them again (docs/team.md, "Members")',
    "cmd_recover": "a team vault has no recovery key (no one outside an engagement's roster "
    "ever holds its key): a lead grants the member again",
}


def not_on_team(handler: str) -> NotOnTeam:
    """The one line for a command a team vault does not serve: what to do instead where it
    is replaced by design, else "not available ... yet"."""
    from credvault import NotOnTeam

    command = handler.removeprefix("cmd_").replace("_", " ") or "this command"
    return NotOnTeam(command, TEAM_INSTEAD.get(handler))


def team_passphrase(args: argparse.Namespace, member: str) -> Secret:
    """The passphrase of the member's own team key slot: a file, else a prompt."""
    pfile = getattr(args, "passphrase_file", None) or os.environ.get("CREDVAULT_PASSPHRASE_FILE")
    if pfile:
        return Secret(read_passphrase_file(Path(pfile)))
    if t.has_terminal():
        return Secret(t.ask_hidden(f"Passphrase for {member}: "))
    from credvault import Locked

    raise Locked("no passphrase: set CREDVAULT_PASSPHRASE_FILE or run on a terminal")


def open_team(args: argparse.Namespace, target: str) -> Team:
    """Open the PostgreSQL team vault ``target`` for a command it serves."""
    from credvault import Team

    handler = getattr(getattr(args, "func", None), "__name__", "")
    if handler not in TEAM_COMMANDS:
        raise not_on_team(handler)
    member = member_name(args)
    # `get` is the command whose start-up counts (issue 14): it skips importing psycopg
    light = handler == "cmd_get"
    # keys `unlock --keyring` cached, if any, else the passphrase (asked only then)
    team = Team.open_first(
        target,
        member,
        lambda: team_passphrase(args, member),
        cached=not getattr(args, "no_keyring", False),
        light=light,
    )
    team.on_warning = t.err  # one line on stderr (a write under a key due for rotation)
    return team


def open_vault(args: argparse.Namespace, *, auto_purge: bool = True) -> Vault:
    if borrowed_vault is not None:
        return borrowed_vault()
    target = vault_target(getattr(args, "vault", None))
    if target is not None:
        # A Team offers the subset of Vault's API that the TEAM_COMMANDS use; every other
        # handler was refused above, so the cast is never wrong where it is relied on.
        team = open_team(args, target)
        # as on SQLCipher, an admin's command first purges what is due; not `get`'s (its
        # start-up is measured, and any other command of the day does it)
        if auto_purge and getattr(getattr(args, "func", None), "__name__", "") != "cmd_get":
            try:
                team.purge_due_on_open()
            except BaseException:
                team.close()
                raise
        return cast("Vault", team)
    from credvault import Vault  # here: a team vault's `get` never loads SQLCipher's Vault

    path = vault_dir(args)
    member = member_name(args)
    return Vault.open(
        path, member, unlock_source(args, path, member), kdf=kdf_params(args), auto_purge=auto_purge
    )


def new_passphrase(args: argparse.Namespace, who: str) -> bytes:
    pfile = getattr(args, "new_passphrase_file", None)
    if pfile:
        return read_passphrase_file(Path(pfile))
    if not t.has_terminal():
        raise InvalidInput(f"no terminal to ask {who}'s new passphrase: use --passphrase-file")
    pw = t.ask_new_secret(f"New passphrase for {who}")
    if not pw:
        raise InvalidInput("the passphrase is empty")
    return pw


def render(
    args: argparse.Namespace,
    data: object,
    headers: list[str] | None = None,
    rows: list[list[object]] | None = None,
) -> None:
    if getattr(args, "json", False) or headers is None:
        t.out_json(data)
    else:
        t.table(headers, rows or [])


# -- vault ----------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    """Create a vault: its first (admin) member and the recovery key."""
    if args.upgrade_schema:
        return upgrade_schema(args)
    admin = args.admin or member_name(args)
    pfile = args.passphrase_file or os.environ.get("CREDVAULT_PASSPHRASE_FILE")
    if pfile:
        pw = read_passphrase_file(Path(pfile))
    elif t.has_terminal():
        pw = t.ask_new_secret(f"New passphrase for {admin}")
    else:
        raise InvalidInput("no passphrase: set CREDVAULT_PASSPHRASE_FILE or run on a terminal")
    target = vault_target(getattr(args, "vault", None))
    if target is not None:
        from credvault import Team

        made = Team.init(target, admin, Secret(pw), kdf_params(args))
        t.out(
            f"created team vault {made.database} (id {made.vault_id}) with admin {made.admin}; "
            f"your key slot is {made.slot}"
        )
        return EXIT_OK
    from credvault import Vault

    rec = Path(args.recovery_file) if args.recovery_file else None
    res = Vault.init(vault_dir(args), admin, pw, kdf=kdf_params(args), recovery_file=rec)
    t.out(f"created vault {res.path} (id {res.vault_id}) with admin {res.admin}")
    if res.recovery_key is not None:
        t.out("RECOVERY KEY (shown once; keep it offline, it can restore any engagement):")
        t.out(res.recovery_key)
    else:
        t.out(f"recovery key written to {rec} (mode 0600): move it offline")
    return EXIT_OK


def upgrade_schema(args: argparse.Namespace) -> int:
    """``init --upgrade-schema``: the team database's owner upgrades its schema."""
    target = vault_target(getattr(args, "vault", None))
    if target is None:
        raise InvalidInput(
            "--upgrade-schema is for a PostgreSQL team vault (a SQLCipher vault upgrades "
            "itself when opened)"
        )
    from credvault import Team

    up = Team.upgrade_schema(target)
    if up.changed:
        t.out(f"upgraded team vault {up.database} from schema {up.before} to {up.after}")
    else:
        t.out(f"team vault {up.database} is at schema {up.after} already; nothing to do")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Vault facts; --public-key prints the key clients use to check purge receipts."""
    if getattr(args, "fingerprint", False) and vault_target(getattr(args, "vault", None)) is None:
        raise InvalidInput("info --fingerprint is for a PostgreSQL team vault")
    with open_vault(args) as v:
        if args.public_key:
            t.out(v.public_key)
        elif getattr(args, "fingerprint", False):
            t.out(cast("Team", v).fingerprint())
        else:
            render(args, v.info().to_json())
    return EXIT_OK


def agent_status(path: Path | str, member: str) -> dict[str, object]:
    """Whether this user's agent runs and holds ``member``'s keys for the vault at ``path``
    (a team vault: its connection string, as given)."""
    from credvault.agent import client

    st = client.status()
    if st is None:
        return {"running": False, "unlocked": False, "until": None, "message": "not running"}
    real = path if isinstance(path, str) else os.path.realpath(path)
    for e in st.get("entries", []):
        if e.get("vault") == real and e.get("member") == member:
            return {
                "running": True,
                "unlocked": True,
                "until": e.get("until"),
                "message": f"unlocked until {e.get('until')} (UTC), pid {st.get('pid')}",
            }
    return {
        "running": True,
        "unlocked": False,
        "until": None,
        "message": f"running (pid {st.get('pid')}), not unlocked for this vault",
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Who you are, whether the keyring holds your key, and what purges are due."""
    target = vault_target(getattr(args, "vault", None))
    if target is None:
        from credvault import Vault

        path = vault_dir(args)
        member = member_name(args)
        cache = Vault.keyring_status(path, member)
        agent = agent_status(path, member)
    else:  # a team vault: its keyring entry and agent entry, as on SQLCipher
        from credvault import Team

        member = member_name(args)
        cache = Team.keyring_status(target, member)
        agent = agent_status(target, member)
    with open_vault(args, auto_purge=False) as v:  # report what is due rather than do it
        data = {**v.status().to_json(), "keyring": cache, "agent": agent}
    if args.json:
        t.out_json(data)
        return EXIT_OK
    t.out(f"member:  {data['member']}{' (admin)' if data['admin'] else ''}")
    t.out(f"vault:   {data['vault']} ({data['vault_id']})")
    t.out(f"keyring: {cache['message']}")
    t.out(f"agent:   {agent['message']}")
    due = data["due_now"]
    t.out(f"due now: {len(due) if isinstance(due, list) else 0} engagement(s)")
    for item in data["scheduled"] if isinstance(data["scheduled"], list) else []:
        t.out(f"  {item['engagement']}: {item['why']}")
    return EXIT_OK


def cmd_config_set(args: argparse.Namespace) -> int:
    """Change a vault setting: purge-grace-days, audit-retention-days, backup-retention-days."""
    with open_vault(args) as v:
        v.set_setting(args.name, args.value)
        t.out(f"{args.name} = {args.value}")
    return EXIT_OK


def cmd_config_get(args: argparse.Namespace) -> int:
    """Show every vault setting."""
    with open_vault(args) as v:
        settings = v.info().settings
        render(args, settings)
    return EXIT_OK


# -- members --------------------------------------------------------------------------------
def cmd_member_add(args: argparse.Namespace) -> int:
    """Add a member (with a passphrase) or a service identity (with a key file)."""
    with open_vault(args) as v:
        if args.service:
            if not args.identity_file:
                raise InvalidInput("--service needs --identity-file PATH")
            info = v.members.add(
                args.name, admin=args.admin, identity_file=Path(args.identity_file)
            )
            t.out(
                f"added service identity {info.name}; its key is in {args.identity_file} "
                "(mode 0600): use it with CREDVAULT_IDENTITY"
            )
        else:
            pw = new_passphrase(args, args.name)
            info = v.members.add(args.name, admin=args.admin, passphrase=pw)
            t.out(f"added member {info.name}{' (admin)' if info.admin else ''}")
    return EXIT_OK


def cmd_member_ls(args: argparse.Namespace) -> int:
    """List the members of the vault."""
    with open_vault(args) as v:
        ms = v.members.list()
        render(
            args,
            [m.to_json() for m in ms],
            ["name", "admin", "service", "created"],
            [
                [m.name, "yes" if m.admin else "", "yes" if m.service else "", m.created[:16]]
                for m in ms
            ],
        )
    return EXIT_OK


def cmd_member_invite(args: argparse.Namespace) -> int:
    """Invite a member to a team vault: a one-time code, shown once or written 0600."""
    if vault_target(getattr(args, "vault", None)) is None:
        raise InvalidInput("member invite is for a PostgreSQL team vault: use member add")
    if args.invitation_file and os.path.lexists(args.invitation_file):
        # before the server: inviting again replaces the invitation (a code nobody got,
        # as after an invite killed before it wrote the file), which voids this file's
        raise AlreadyExists(f"{args.invitation_file} exists; not overwritten")
    with open_vault(args) as v:
        inv = cast("Team", v).members.invite(args.name, admin=args.admin)
    if args.invitation_file:
        write_new_private(Path(args.invitation_file), inv.code.reveal() + b"\n")
        t.out(f"invited {inv.member}; invitation code written to {args.invitation_file} (0600)")
    else:
        t.out(f"invited {inv.member}; give them this one-time code out of band:")
        t.out(inv.code.reveal().decode())
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    """Join a team vault from your own machine: your keys are made and kept here."""
    from credvault import Team

    target = vault_target(getattr(args, "vault", None))
    if target is None:
        raise InvalidInput("join needs a PostgreSQL team vault: --vault postgresql://…")
    member = member_name(args)
    if args.invitation_file:
        code = read_passphrase_file(Path(args.invitation_file))
    elif t.has_terminal():
        code = t.ask_hidden("Invitation code: ")
    else:
        raise InvalidInput("no terminal to ask the invitation code: use --invitation-file")
    keys = None
    if args.from_vault:  # after `credvault migrate`: the same keys, from the old vault
        old = getattr(args, "passphrase_file", None) or os.environ.get("CREDVAULT_PASSPHRASE_FILE")
        if old:
            old_pw = read_passphrase_file(Path(old))
        elif t.has_terminal():
            old_pw = t.ask_hidden(f"Passphrase for {member} in {args.from_vault}: ")
        else:
            raise InvalidInput("no passphrase for the old vault: set CREDVAULT_PASSPHRASE_FILE")
        keys = Team.keys_from_vault(Path(args.from_vault), member, Secret(old_pw))
    pw = new_passphrase(args, member)
    joined = Team.join(target, member, Secret(code), Secret(pw), kdf_params(args), keys=keys)
    t.out(f"joined as {joined.member}; key slot {joined.slot}")
    t.out(f"signing key fingerprint {joined.fingerprint} (your admin can compare it)")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Move this SQLCipher vault to a PostgreSQL team vault (as its admin and the
    database's owner); writes one invitation per member."""
    from credvault import migrate_vault

    if vault_target(args.to) is None:
        raise InvalidInput("--to must be a PostgreSQL connection string (postgresql://…)")
    if vault_target(getattr(args, "vault", None)) is not None:
        raise InvalidInput("migrate reads a SQLCipher vault: --vault names its directory")
    with open_vault(args) as v:
        m = migrate_vault(v, args.to, Path(args.invitations))
    t.out(
        f"migrated to {m.database}: {m.engagements} engagements, {m.credentials} credentials, "
        f"{m.systems} systems, {m.grants} grants; {m.archived_audit_entries} audit entries "
        "archived and anchored"
    )
    t.out(
        f"invitations in {m.invitations}: each member runs `credvault join --vault <target> "
        "--from-vault <this vault> --invitation-file <theirs>`"
    )
    return EXIT_OK


def cmd_member_rm(args: argparse.Namespace) -> int:
    """Remove a member: their grants go and the database is re-keyed."""
    with open_vault(args) as v:
        if vault_target(getattr(args, "vault", None)) is not None:
            r = cast("Team", v).members.remove_signed(args.name)
            t.out(
                f"removed member {args.name}; login disabled, {r.sessions} session(s) ended, "
                f"their grants and key copies dropped; revocation signed in "
                f"{len(r.revoked)} engagement log(s)"
            )
            if r.sole_lead:
                t.out(
                    f"{args.name} stays on the signed roster of what they alone lead (no "
                    f"other lead can sign them out): {', '.join(r.sole_lead)}"
                )
            return EXIT_OK
        from credvault import Vault

        n = v.members.remove(args.name)
        Vault.forget_cached_keys(v.path, args.name)
        t.out(
            f"removed member {args.name}; {n} grant(s) dropped, database re-keyed; "
            "their engagements rotate their keys at the next lead action"
        )
    return EXIT_OK


def cmd_member_certify(args: argparse.Namespace) -> int:
    """Certify the new keys of a member's passwd --compromised (an admin, team vault)."""
    if vault_target(getattr(args, "vault", None)) is None:
        raise InvalidInput(
            "member certify is for a PostgreSQL team vault (on SQLCipher, passwd "
            "--compromised certifies the new keys itself)"
        )
    with open_vault(args) as v:
        r = cast("Team", v).members.certify(args.name, args.fingerprint)
    kept = (
        f"{r.member} keeps their role in {', '.join(r.engagements)} (the membership log "
        "pins the new keys; each key rotates at a lead's next command)"
        if r.engagements
        else f"each lead grants {r.member} again: `credvault grant ENGAGEMENT {r.member} ROLE`"
    )
    t.out(
        f"certified {r.member}'s new keys (fingerprint {r.fingerprint}); their old keys are "
        f"revoked (revocation list version {r.list_version}); {kept}"
    )
    return EXIT_OK


def cmd_member_reset(args: argparse.Namespace) -> int:
    """Give a member new keys and a new passphrase (their grants must be made again)."""
    from credvault import Vault

    with open_vault(args) as v:
        pw = new_passphrase(args, args.name)
        v.members.reset(args.name, pw)
        Vault.forget_cached_keys(v.path, args.name)
        t.out(f"reset member {args.name}: new keys; their grants must be made again")
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    """Change your own passphrase; --compromised also replaces your keys (see docs)."""
    with open_vault(args) as v:
        r = v.members.passwd(new_passphrase(args, v.member), compromised=args.compromised)
        team_target = vault_target(getattr(args, "vault", None))
        if team_target is None:
            from credvault import Vault

            Vault.forget_cached_keys(v.path, v.member)
        else:  # its entry is bound to the old slot (refused anyway): deleted now
            from credvault import Team

            Team.forget_cached_keys(team_target, v.member)
        if not r.compromised:
            t.out("passphrase changed")
            return EXIT_OK
        if team_target is not None:  # docs/team.md
            from credvault import Team

            t.out(
                "passphrase changed; new keys; old key retired by a signed hand-over; "
                "no key copy reaches you until your new keys are certified (docs/team.md)"
            )
            fp = Team.slot_fingerprint(team_target, v.member)
            t.out(
                f"your new signing key fingerprint: {fp} (compare it with an admin out of "
                f"band; they run `credvault member certify {v.member} --fingerprint {fp}`)"
            )
        else:
            t.out(
                "passphrase changed; new keys; database re-keyed; receipt and audit keys "
                f"succeeded; {r.resigned} signature(s) moved to the new key"
            )
        if r.rotated:
            t.out(f"rotated now (you lead): {', '.join(r.rotated)}")
        if r.pending:
            t.out(
                f"rotate at their lead's next command (until then you cannot read them): "
                f"{', '.join(r.pending)}"
            )
    return EXIT_OK


# -- engagements ----------------------------------------------------------------------------
def _eng_rows(v: Vault, engs: list[Engagement]) -> list[list[object]]:
    return [
        [e.name, e.client, e.state, e.created_at[:10], v.engagements.purge_status(e)] for e in engs
    ]


def cmd_engagement_new(args: argparse.Namespace) -> int:
    """Create an engagement (admin); its first lead is you or --lead."""
    with open_vault(args) as v:
        eng = v.engagements.create(
            args.name,
            args.client,
            args.lead,
            require_reason=args.require_reason,
            grace_days=args.grace_days,
        )
        t.out(f"created engagement {eng.name} for {eng.client}, lead {eng.lead}")
    return EXIT_OK


def cmd_engagement_ls(args: argparse.Namespace) -> int:
    """List the engagements you may see."""
    with open_vault(args) as v:
        engs = v.engagements.visible(args.client)
        render(
            args,
            [x.to_json() for x in engs],
            ["name", "client", "state", "created", "purge"],
            _eng_rows(v, list(engs)),
        )
    return EXIT_OK


def cmd_engagement_show(args: argparse.Namespace) -> int:
    """One engagement: its facts, who holds which role, and when it is purged."""
    with open_vault(args) as v:
        data = v.engagements.show(args.name).to_json()
        if args.json:
            t.out_json(data)
        else:
            for k, val in data.items():
                if k == "members" and isinstance(val, list):
                    val = ", ".join(
                        f"{g['member']}:{g['role']}"
                        + (f" until {g['expires_at'][:16]}" if g["expires_at"] else "")
                        for g in val
                    )
                t.out(f"{k + ':':16}{'' if val is None else val}")
    return EXIT_OK


def cmd_engagement_set(args: argparse.Namespace) -> int:
    """Change an engagement's settings (whether reads must give --reason)."""
    with open_vault(args) as v:
        v.engagements.set_options(args.name, require_reason=args.require_reason)
        t.out(f"updated {args.name}")
    return EXIT_OK


def cmd_engagement_members(args: argparse.Namespace) -> int:
    """Who holds which role on an engagement, and whether they hold its key."""
    with open_vault(args) as v:
        gs = v.engagements.members(args.name)
        render(
            args,
            [g.to_json() for g in gs],
            ["member", "role", "granted_by", "expires", "key"],
            [
                [
                    g.member,
                    g.role,
                    g.granted_by,
                    (g.expires_at or "")[:16],
                    "yes" if g.has_key else "no",
                ]
                for g in gs
            ],
        )
    return EXIT_OK


def cmd_engagement_close(args: argparse.Namespace) -> int:
    """The service is complete: schedule the purge after the grace period."""
    with open_vault(args) as v:
        e = v.engagements
        eng = e.close(args.name, args.grace_days)
        t.out(f"closed {eng.name}: {e.purge_status(eng)}")
    return EXIT_OK


def cmd_engagement_retain(args: argparse.Namespace) -> int:
    """The client asked to keep the data until a date: hold the purge."""
    with open_vault(args) as v:
        e = v.engagements
        eng = e.retain(args.name, args.until, args.reason)
        t.out(f"{eng.name}: {e.purge_status(eng)}")
    return EXIT_OK


def cmd_engagement_release(args: argparse.Namespace) -> int:
    """Lift a retention hold."""
    with open_vault(args) as v:
        e = v.engagements
        eng = e.release(args.name)
        t.out(f"{eng.name}: {e.purge_status(eng)}")
    return EXIT_OK


def cmd_engagement_rotate(args: argparse.Namespace) -> int:
    """Rotate the engagement key now."""
    with open_vault(args) as v:
        n = v.engagements.rotate(args.name)
        t.out(f"{args.name}: engagement key rotated to version {n}")
    return EXIT_OK


def cmd_engagement_shred(args: argparse.Namespace) -> int:
    """Destroy an engagement now (the client's deletion request), once confirmed."""
    with open_vault(args) as v:
        t.confirm(
            f"Destroy engagement {args.name} and every secret in it now?",
            yes=args.yes,
            verb="shred",
        )
        receipt = v.purger.shred(args.name)
        t.out(
            f"shredded {args.name}; receipt at audit position {receipt.audit_position}"
            f" (`credvault receipt {args.name}`)"
        )
        return purge_outcome(v)


def cmd_grant(args: argparse.Namespace) -> int:
    """Give a member a role on an engagement (seals the key to them for reading roles)."""
    with open_vault(args) as v:
        g = v.engagements.grant(args.engagement, args.member, args.role, args.until)
        t.out(
            f"granted {g.role} on {args.engagement} to {g.member}"
            + (f" until {g.expires_at[:16]}" if g.expires_at else "")
        )
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a member and rotate the engagement key; lists the secrets they read (to change)
    and, apart, the records they only viewed."""
    with open_vault(args) as v:
        read = v.engagements.revoke(args.engagement, args.member)
    viewed: tuple[str, ...] = tuple(getattr(read, "viewed", ()))
    earlier = bool(getattr(read, "earlier", False))
    if args.json:
        out: dict[str, object] = {
            "engagement": args.engagement,
            "member": args.member,
            "credentials_read": read,
            "records_viewed": list(viewed),
        }
        if earlier:
            out["revoked_earlier"] = True
        t.out_json(out)
        return EXIT_OK
    if earlier:  # docs/team.md: a revoke cut short before its key rotation, run again
        t.out(
            f"{args.member} was revoked on {args.engagement} already; the engagement key "
            "rotation that revoke began is done now (what they read: the audit trail's "
            "revoke entry, `credvault audit --engagement "
            f"{args.engagement}`)"
        )
        return EXIT_OK
    t.out(f"revoked {args.member} on {args.engagement}; engagement key rotated")
    if read:
        t.out(f"{args.member} read these; change them on the client's systems:")
        for name in read:
            t.out(f"  {args.engagement}/{name}")
    else:
        t.out(f"{args.member} read no credentials of {args.engagement}")
    if viewed:
        t.out(f"{args.member} only viewed these (no secret read; nothing to change):")
        for name in viewed:
            t.out(f"  {args.engagement}/{name}")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    """Restore access to an engagement with the offline recovery key."""
    try:
        text = Path(args.recovery_file).read_text()[:4096]
    except OSError:
        raise InvalidInput(f"cannot read recovery file {args.recovery_file}") from None
    with open_vault(args) as v:
        v.recover(args.engagement, text, args.grant_to, args.role)
    t.out(f"recovered {args.engagement}: {args.grant_to} is {args.role}")
    return EXIT_OK


# -- systems --------------------------------------------------------------------------------
def cmd_system_add(args: argparse.Namespace) -> int:
    """Add a system to an engagement, or update it."""
    from credvault.cli.fields import read_fields

    fields = read_fields(args, ("address", "details"), stdin_free=True)
    address = fields["address"]
    if address is None:
        raise InvalidInput(
            "system add needs an address: --address-file PATH, --fields-from PATH, "
            "--ask address or --address"
        )
    with open_vault(args) as v:
        s = v.systems.add(
            args.ref, address, port=args.port, protocol=args.protocol, details=fields["details"]
        )
        t.out(f"added system {s.engagement}/{s.name}")
    return EXIT_OK


def cmd_system_ls(args: argparse.Namespace) -> int:
    """List the systems of an engagement."""
    with open_vault(args) as v:
        ss = v.systems.list(args.engagement)
        render(
            args,
            [s.to_json() for s in ss],
            ["name", "port", "protocol", "updated"],
            [[s.name, s.port, s.protocol, s.updated_at[:16]] for s in ss],
        )
    return EXIT_OK


def cmd_system_show(args: argparse.Namespace) -> int:
    """One system, address and details included."""
    with open_vault(args) as v:
        s = v.systems.show(args.ref, reason=args.reason)
        if args.json:
            t.out_json(s.to_json())
        else:
            for k, val in s.to_json().items():
                t.out(f"{k + ':':12}{'' if val is None else val}")
    return EXIT_OK


def cmd_system_rm(args: argparse.Namespace) -> int:
    """Move a system to the engagement's trash."""
    with open_vault(args) as v:
        until = v.systems.remove(args.ref)
    t.out(f"moved system {args.ref} to the trash until {until} (credvault trash restore --system)")
    return EXIT_OK


# -- credentials ----------------------------------------------------------------------------
def generated(args: argparse.Namespace) -> tuple[bytes, str] | None:
    """The secret ``put`` should store when a generator option was given, and its summary."""
    from credvault import generate_passphrase, generate_password, generate_token

    words = getattr(args, "words", None)
    token = getattr(args, "token", None)
    length = getattr(args, "generate", None)
    if words is None and token is None and length is None:
        return None
    if sum(x is not None for x in (words, token, length)) > 1:
        raise InvalidInput("use one of --generate, --token and --words")
    if words is not None:
        r = generate_passphrase(words, separator=args.separator)
    elif token is not None:
        r = generate_token(args.bytes, token)
    else:
        assert length is not None
        symbols = "-_." if args.symbols == "safe" else args.symbols
        r = generate_password(
            length,
            classes=[c.strip() for c in args.classes.split(",") if c.strip()],
            symbols=symbols,
            exclude=args.exclude or "",
            avoid_ambiguous=args.no_ambiguous,
        )
    return r.secret.reveal(), f"{r.description}, {r.entropy_bits:.0f} bits"


def cmd_put(args: argparse.Namespace) -> int:
    """Store a credential; the secret comes from stdin (or a generator), never from argv;
    its fields from files, stdin, JSON or a prompt (cli/fields.py) rather than argv."""
    from credvault.cli.fields import read_fields

    if args.totp and (args.generate is not None or args.token or args.words):
        raise InvalidInput("--totp takes the seed from stdin: it cannot be generated")
    made = generated(args)
    if args.show and made is None:
        raise InvalidInput("--show needs --generate, --token or --words")
    fields = read_fields(args, ("username", "url", "notes"), stdin_free=made is not None)
    secret = made[0] if made is not None else t.read_secret_stdin()
    if args.totp:
        secret = totp_secret(args.ref, secret)
    with open_vault(args) as v:
        info = v.credentials.put(
            args.ref,
            secret,
            username=fields["username"],
            system=args.system,
            kind=args.kind,
            url=fields["url"],
            notes=fields["notes"],
        )
    t.out(f"stored {info.engagement}/{info.name}" + (f" (generated: {made[1]})" if made else ""))
    if made is not None and args.show:  # once, on request, after it is safely stored
        sys.stdout.buffer.write(made[0] + b"\n")
        sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    """Print a secret (or one field, or the whole record as JSON); or copy it (``-c``)."""
    if args.clip and args.json:
        raise InvalidInput("-c copies one value: use --field rather than --json")
    backend = None
    if args.clip:
        backend = clipboard_first(args)
    if args.field not in (None, "secret") and not args.json:
        # a field that is not the secret is read as such (audited as `show`, not `get`)
        with open_vault(args) as v:
            system = args.field in ("address", "port")
            fields = v.credentials.fields(
                args.ref, reason=args.reason, system=system, version=args.version
            )
        text = fields.get(args.field)
        if text is None:
            raise NotFound("field", f"{args.ref} {args.field}", f"{args.ref} has no {args.field}")
        if backend is not None:
            return copy_out(args, Secret(text.encode()), f"{args.ref} {args.field}", backend)
        sys.stdout.buffer.write(text.encode() + (b"" if args.n else b"\n"))
        sys.stdout.buffer.flush()
        return EXIT_OK
    with open_vault(args) as v:
        c = v.credentials.get(args.ref, reason=args.reason, version=args.version)
    if args.json:
        t.out_json(c.to_json())
        return EXIT_OK
    if args.field in (None, "secret"):
        value = c.secret.reveal()
    else:
        field_value = getattr(c, args.field)
        if field_value is None:
            raise NotFound("field", f"{args.ref} {args.field}", f"{args.ref} has no {args.field}")
        value = str(field_value).encode()
    if backend is not None:
        return copy_out(args, Secret(value), f"{args.ref} {args.field or 'secret'}", backend)
    sys.stdout.buffer.write(value + (b"" if args.n else b"\n"))
    sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    """List credentials (names, kinds, dates; never values)."""
    with open_vault(args) as v:
        cs = v.credentials.list(args.engagement)
    render(
        args,
        [c.to_json() for c in cs],
        ["credential", "kind", "system", "updated"],
        [[f"{c.engagement}/{c.name}", c.kind, c.system, c.updated_at[:16]] for c in cs],
    )
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Move a credential (and its history) to the trash."""
    with open_vault(args) as v:
        until = v.credentials.remove(args.ref)
    t.out(f"moved {args.ref} to the trash until {until} (credvault trash restore)")
    return EXIT_OK


# -- audit ----------------------------------------------------------------------------------
def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the hash chain of the audit trail (and, given one, against a checkpoint)."""
    with open_vault(args) as v:
        n = v.audit.verify(args.checkpoint)
        t.out(
            f"audit trail intact: {n} entries verified"
            + (
                f", consistent with checkpoint {args.checkpoint.split(':')[0]}"
                if args.checkpoint
                else ""
            )
        )
    return EXIT_OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    """Print the chain head, to keep outside the vault."""
    with open_vault(args) as v:
        t.out(str(v.audit.checkpoint()))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """List the audit trail, filtered."""
    with open_vault(args) as v:
        es = v.audit.entries(
            engagement=args.engagement,
            member=args.member,
            action=args.action,
            since=args.since,
            limit=args.limit,
        )
    if args.json:
        t.out_json([e.to_json() for e in es])
    else:
        t.table(
            ["#", "time (UTC)", "member", "action", "engagement", "item", "outcome", "detail"],
            [
                [
                    e.seq,
                    e.ts[:19].replace("T", " "),
                    e.member,
                    e.action,
                    e.engagement or "",
                    e.item or "",
                    e.outcome,
                    e.detail,
                ]
                for e in es
            ],
        )
    return EXIT_OK


def cmd_witness_accept(args: argparse.Namespace) -> int:
    """Accept the vault as it is although it is behind or forked from what this client saw:
    show what would be forgotten, confirm, then the library audits it and resets the witness."""
    from credvault import Vault

    def confirm(gaps: list[WitnessGap]) -> None:
        for gap in gaps:
            t.out(f"not in this vault: {gap.describe()}")
        t.confirm(
            "Accept this vault as it is now and forget what it lacks?", yes=args.yes, verb="accept"
        )

    target = vault_target(getattr(args, "vault", None))
    if target is not None:  # after a restore of the database: docs/team.md, "Backups"
        with open_team(args, target) as team:
            gaps = team.accept_witness(confirm)
    else:
        path = vault_dir(args)
        member = member_name(args)
        gaps = Vault.accept_witness(
            path, member, unlock_source(args, path, member), kdf=kdf_params(args), confirm=confirm
        )
    if gaps:
        t.out("accepted: your witness now follows this vault (audited as witness-accept)")
        if any(g.chain == "revocations" for g in gaps):
            t.err(
                "warning: the revocation list is older than you saw: members removed after "
                "the backup are members again until an admin runs `credvault member rm` for "
                'each once more (docs/team.md, "Backups")'
            )
    else:
        t.out("nothing to accept: this vault is not behind or forked from what you saw")
    return EXIT_OK


# -- retention ------------------------------------------------------------------------------
INCOMPLETE = (
    "destroyed in the database, but old copies remain in its files while another process "
    "holds an older read snapshot; the next `credvault purge` (or any open) finishes it "
    "and the receipt then records when"
)


def purge_outcome(v: Vault) -> int:
    """0 when every purge of the vault is complete; else one line on stderr and 1."""
    if v.purger.complete:
        return EXIT_OK
    t.err(f"purge NOT complete: {getattr(v.purger, 'pending_reason', INCOMPLETE)}")
    return 1


def cmd_purge(args: argparse.Namespace) -> int:
    """Destroy every engagement whose purge is due (also runs on every open)."""
    if args.rewrite:
        return rewrite_tables(args)
    team = vault_target(getattr(args, "vault", None)) is not None
    if args.ledger and not team:
        raise InvalidInput(
            "--ledger is for a PostgreSQL team vault restored from a dump; a SQLCipher "
            "vault's `credvault restore FILE --ledger LEDGER` reads it"
        )
    with open_vault(args, auto_purge=False) as v:  # the purge is this command's own work
        if team and not args.dry_run:
            destroyed_again(args, cast("Team", v).destroy_recorded(args.ledger or ()))
        done = v.purge(dry_run=args.dry_run, confirm_clock=args.confirm_clock)
        code = EXIT_OK if args.dry_run else purge_outcome(v)
    if args.json:
        t.out_json([d.to_json() for d in done])
    elif not done:
        t.out("nothing due")
    else:
        verb = "due" if args.dry_run else "purged"
        for d in done:
            t.out(f"{verb}: {d.engagement} ({d.client}), {d.reason}")
    return code


def destroyed_again(args: argparse.Namespace, r: LedgerRestore) -> None:
    """What a team purge found in the purge ledgers, worded as SQLCipher's restore."""
    say = t.err if args.json else t.out  # --json keeps stdout the purge's list
    for line in r.ignored:
        t.err(f"warning: ignored {line}")
    if r.destroyed_again:
        say(
            "destroyed after this backup was made, destroyed again now: "
            + ", ".join(r.destroyed_again)
        )
    if r.closed_again:
        say(
            "closed after this backup was made, closed again now (purged when due): "
            + ", ".join(r.closed_again)
        )
    if not args.ledger:
        return
    say("records of destruction consulted: " + (", ".join(r.looked_in) or "none"))
    if not r.receipts:
        t.err(
            "warning: no signed record of destruction was found: anything destroyed after "
            "the dump this database was restored from may have come back; pass --ledger FILE "
            '(the purging machine\'s purge-ledger.jsonl, docs/team.md "Backups")'
        )


def rewrite_tables(args: argparse.Namespace) -> int:
    """``purge --rewrite``: the team database's owner rewrites the table files."""
    target = vault_target(getattr(args, "vault", None))
    if target is None:
        raise InvalidInput(
            "--rewrite is for a PostgreSQL team vault (a SQLCipher purge rewrites its file)"
        )
    from credvault import Team

    done, pending = Team.rewrite(target)
    t.out(f"rewrote the table files: {done} purged engagement(s) are out of them")
    if pending:
        t.err(
            f"purge NOT complete: {pending} purged engagement(s) were still visible to an "
            "older snapshot (an open transaction, a standby or a replication slot) and stay "
            "in the files; run `credvault purge --rewrite` again once it has ended"
        )
        return 1
    return EXIT_OK


def cmd_receipt(args: argparse.Namespace) -> int:
    """Print the signed purge receipt of a purged engagement."""
    with open_vault(args) as v:
        receipt = v.purger.receipt(args.engagement).to_json()
    if args.output:
        write_receipt(Path(args.output), receipt)
        t.out(f"receipt written to {args.output}")
    elif args.json:
        t.out_json(receipt)
    else:
        d = receipt["destroyed"]
        assert isinstance(d, dict)
        for k in (
            "engagement",
            "client",
            "created_at",
            "closed_at",
            "purged_at",
            "reason",
            "purged_by",
            "audit_position",
        ):
            t.out(f"{k + ':':16}{receipt.get(k) or ''}")
        if receipt.get("format") != "credvault-purge-receipt/1":
            done = receipt.get("destruction_complete_at")
            t.out(f"{'complete:':16}{done or 'NOT YET: copies remain in the files'}")
        t.out(
            f"{'destroyed:':16}{d['credentials']} credentials, {d['systems']} systems, "
            f"{d['key_copies']} key copies; key fingerprints {', '.join(d['key_fingerprints'])}"
        )
        if receipt.get("backups_expire_at"):  # a team vault's horizon
            t.out(f"{'backups until:':16}{receipt['backups_expire_at']}")
        t.out(f"{'signature:':16}{receipt['signature']}")
    return EXIT_OK


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    """Check a receipt file's signature against the vault's public key (needs no vault).

    Without ``--public-key`` the receipt can only be checked against the key it carries,
    which anyone can make: that is reported and never counts as valid (exit 6).
    """
    try:
        raw = Path(args.file).read_bytes()[:1_000_000]
    except OSError:
        raise InvalidInput(f"cannot read receipt file {args.file}") from None
    try:  # a receipt damaged into invalid UTF-8 or JSON is not verified, as an altered one
        text = raw.decode()
        json.loads(text)
    except ValueError:
        raise IntegrityError(
            "receipt NOT verified: the file is not a receipt's JSON (damaged or another file)"
        ) from None
    trusted: str | ReceiptKeys | None = args.public_key
    if args.key_history:
        if not args.public_key:
            raise InvalidInput("--key-history needs --public-key: the key you already trust")
        try:
            history = json.loads(Path(args.key_history).read_text()[:10_000_000])
        except (OSError, UnicodeDecodeError, ValueError):
            raise InvalidInput(f"cannot read key history {args.key_history}") from None
        from credvault import ReceiptKeys  # only here: `credvault get` does not load it

        trusted = ReceiptKeys.from_json(history, args.public_key)
    body = verify_receipt(text, trusted)
    if not args.public_key:
        raise IntegrityError(
            "receipt NOT verified: it is consistent with the key it carries, but anyone can "
            "make such a key; pass --public-key (the vault's `credvault info --public-key`)"
        )
    t.out(
        f"valid receipt: {body['engagement']} purged {str(body['purged_at'])[:10]} "
        f"({body['reason']}), signed by the given public key"
        + (" or a successor it signed" if args.key_history else "")
    )
    return EXIT_OK


def cmd_receipt_keys(args: argparse.Namespace) -> int:
    """Every receipt key the vault has had, each after the first signed by the one before;
    give the JSON to clients with the first key, so they can check later receipts."""
    with open_vault(args) as v:
        history = v.receipt_keys()
    if args.links:  # one JCS line per link: what docs/verify-receipt-key.sh checks
        for line in history.link_lines():
            t.out(line)
        return EXIT_OK
    if args.output:
        write_new_private(
            Path(args.output), (json.dumps(history.to_json(), indent=1) + "\n").encode()
        )
        t.out(f"wrote {len(history.keys)} receipt keys to {args.output}")
        return EXIT_OK
    render(
        args,
        history.to_json(),
        ["KEY ID", "VALID FROM", "VALID UNTIL", "PUBLIC KEY"],
        [
            [
                k.key_id[:16],
                (k.valid_from or "(first)")[:19],
                (k.valid_until or "now")[:19],
                k.to_json()["public_key"],
            ]
            for k in history.keys
        ],
    )
    return EXIT_OK


def cmd_client_ls(args: argparse.Namespace) -> int:
    """Clients and their engagements (those you may see)."""
    with open_vault(args) as v:
        clients: dict[str, list[str]] = {}
        for e in v.engagements.visible():
            clients.setdefault(e.client, []).append(f"{e.name}({e.state})")
        render(
            args,
            clients,
            ["client", "engagements"],
            [[c, ", ".join(es)] for c, es in sorted(clients.items())],
        )
    return EXIT_OK


def cmd_client_export(args: argparse.Namespace) -> int:
    """Everything held for a client, secrets included, as JSON (stdout or a new 0600 file)."""
    with open_vault(args) as v:
        data = v.clients.export_bytes(args.client, reason=args.reason)
        if args.output:
            write_new_private(Path(args.output), data)
            t.out(f"exported {args.client} to {args.output} (mode 0600)")
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_client_shred(args: argparse.Namespace) -> int:
    """Shred every engagement of a client (all or nothing), once confirmed."""
    with open_vault(args) as v:
        engs = v.clients.engagements(args.client)
        t.confirm(
            f"Destroy {len(engs)} engagement(s) of {args.client} now?",
            yes=args.yes,
            verb="shred",
        )
        for name in v.clients.shred(args.client):
            t.out(f"shredded {name}")
        return purge_outcome(v)


def no_team_backups(args: argparse.Namespace, command: str) -> None:
    """A team vault is backed up and restored by PostgreSQL's own tools: one line saying so."""
    if vault_target(getattr(args, "vault", None)) is not None:
        from credvault import NotOnTeam

        raise NotOnTeam(
            command,
            "the owner backs the database up with pg_dump or pgBackRest and restores it "
            "with their restore; an admin's `credvault purge --ledger FILE` then destroys "
            'again what was purged since (docs/team.md, "Backups")',
        )


def cmd_backup(args: argparse.Namespace) -> int:
    """Write an encrypted, consistent backup file and prune old ones."""
    no_team_backups(args, "backup")
    with open_vault(args) as v:
        path, pruned = v.backups.create(Path(args.dir) if args.dir else None)
    t.out(f"backup written to {path}" + (f"; pruned {pruned} old backup(s)" if pruned else ""))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into a new vault directory (then purge what is due)."""
    from credvault import Vault, default_dir

    no_team_backups(args, "restore")
    target = Path(args.vault) if args.vault else default_dir()
    member = member_name(args)
    r = Vault.restore_report(
        Path(args.file),
        target,
        member,
        unlock_source(args, target, member),
        ledgers=[Path(f) for f in args.ledger or ()],
    )
    purged = r.purged_due
    t.out(f"restored into {target}" + (f"; purged at once: {', '.join(purged)}" if purged else ""))
    if r.destroyed_after_backup:
        t.out(
            "destroyed after this backup was made, destroyed again now: "
            + ", ".join(r.destroyed_after_backup)
        )
    if r.closed_after_backup:
        t.out(
            "closed after this backup was made, closed again now (purged when due): "
            + ", ".join(r.closed_after_backup)
        )
    t.out(
        "records of destruction consulted: " + (", ".join(r.looked_in) or "none besides the backup")
    )
    if r.newest_record is None:
        t.err(
            f"warning: no record of destruction newer than this backup ({r.backup_time[:16]}) "
            "was found: anything destroyed after it may have come back; pass --ledger FILE "
            "(the live vault's purge-ledger.jsonl, or a copy of the receipts)"
        )
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Full integrity check of the vault, or of a backup file (exit 6 listing what is wrong)."""
    if vault_target(getattr(args, "vault", None)) is not None:
        if args.target:
            raise InvalidInput(
                "a team vault is checked where it is: drop FILE (a `pg_dump` file is checked "
                "by restoring it into a scratch database; docs/team.md)"
            )
        with open_vault(args, auto_purge=False) as v:
            report = v.check()
    else:
        from credvault import Vault

        member = member_name(args)
        target = Path(args.target) if args.target else vault_dir(args)
        unlock_at = (vault_dir(args) if target.is_file() else target) if args.target else target
        report = Vault.check_at(
            target, member, unlock_source(args, unlock_at, member), kdf=kdf_params(args)
        )
    if args.json:
        t.out_json(report._asdict())
    else:
        for line in report.checked:
            t.out(f"ok: {line}")
    if report.problems:
        for problem in report.problems:
            t.err(f"{report.target}: {problem}")
        return 6
    if not args.json:
        t.out(f"{report.target}: sound")
    return EXIT_OK


# -- keyring --------------------------------------------------------------------------------
def cmd_unlock(args: argparse.Namespace) -> int:
    """Unlock once; keep the keys in this user's agent (or, with --keyring, the OS keyring)."""
    from credvault import parse_ttl

    ttl = parse_ttl(args.ttl)
    idle = parse_ttl(args.idle) if args.idle else min(ttl, parse_ttl("1h"))
    if idle > ttl:
        raise InvalidInput("invalid --idle: longer than --ttl")
    args.no_keyring = True  # unlock from the passphrase, not from a cache
    if args.keyring:
        with open_vault(args) as v:
            until = v.cache_keys(ttl)
        t.out(f"unlocked {v.member} on this vault until {until} (UTC); `credvault lock` to forget")
        return EXIT_OK
    import base64

    from credvault import CredvaultError
    from credvault.agent import client

    target = vault_target(getattr(args, "vault", None))
    extra: dict[str, str] = {}
    with open_vault(args) as v:
        vid: object = v.vault_id  # a Team's is bytes, a Vault's hex
        vid = vid if isinstance(vid, bytes) else bytes.fromhex(str(vid))
        keys = base64.b64encode(v.member_keys().to_bytes(vid)).decode()
        member, path = v.member, target or os.path.realpath(v.path)
        if target is not None:  # the agent opens the same key slot file (its own check)
            extra["slot"] = str(cast("Team", v).slot_file.absolute())
    try:
        client.ensure_running()
        reply = client.call(
            {
                "op": "add",
                "vault": path,
                "member": member,
                "keys": keys,
                "ttl": int(ttl.total_seconds()),
                "idle": int(idle.total_seconds()),
                **extra,
            }
        )
    except (client.AgentGone, client.NoAgent) as e:
        raise CredvaultError(f"cannot start the agent ({e})") from None
    finally:
        del keys
    if reply.get("ok") is not True:
        raise CredvaultError(f"the agent refused the keys: {reply.get('message')}")
    t.out(
        f"unlocked {member} on this vault until {reply['until']} (UTC) in the agent "
        f"(pid {reply['pid']}); `credvault lock` to forget"
    )
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the agent in the foreground (a systemd user unit); `unlock` starts one itself.

    The agent runs CLI commands, so it sits above the CLI: exec it rather than import it
    (same pid, same descriptors: systemd's LISTEN_PID and socket stay valid)."""
    os.execv(sys.executable, [sys.executable, "-m", "credvault.agent.server"])  # noqa: S606


def cmd_lock(args: argparse.Namespace) -> int:
    """End the agent (every key it held) and remove a key cached in the OS keyring."""
    from credvault.agent import client

    held = client.lock()
    target = vault_target(getattr(args, "vault", None))
    if target is not None:
        from credvault import Team

        removed = Team.forget_cached_keys(target, member_name(args))
    else:
        from credvault import Vault

        removed = Vault.forget_cached_keys(vault_dir(args), member_name(args))
    t.out("locked" if removed or held else "nothing cached; already locked")
    return EXIT_OK


# -- at the terminal: clipboard, TOTP, ssh, run (library modules imported on use) ----------
def clip_time(args: argparse.Namespace) -> int:
    """Seconds until the clipboard clears: --clip-time, else $CREDVAULT_CLIP_TIME, else 45."""
    from credvault import clipboard

    raw = getattr(args, "clip_time", None) or os.environ.get("CREDVAULT_CLIP_TIME")
    if raw is None or raw == "":
        return clipboard.DEFAULT_CLEAR_AFTER
    try:
        seconds = int(raw)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= clipboard.MAX_CLEAR_AFTER:
        raise InvalidInput(f"invalid clip time: expected 0 to {clipboard.MAX_CLEAR_AFTER} seconds")
    return seconds


def clipboard_first(args: argparse.Namespace) -> Backend | None:
    """With ``-c``, find the clipboard before reading: no reachable clipboard, no read."""
    if not args.clip:
        return None
    from credvault import clipboard

    clip_time(args)  # a bad --clip-time is refused before the read too
    return clipboard.detect()


def copy_out(args: argparse.Namespace, value: Secret, what: str, backend: Backend) -> int:
    """Copy ``value`` and say where to and when it clears (nothing secret is printed)."""
    from credvault import clipboard

    done = clipboard.copy(value, clear_after=clip_time(args), backend=backend)
    when = f"clears in {done.clear_after} s" if done.clear_after else "not cleared"
    t.out(f"copied {what} to the clipboard ({done.backend}); {when}")
    return EXIT_OK


def totp_secret(ref: str, secret: bytes) -> bytes:
    """``put --totp``: the seed as typed (URI or base32) in its stored URI form."""
    from credvault import totp

    return totp.to_uri(secret, ref.replace("/", ":")).reveal()


def cmd_otp(args: argparse.Namespace) -> int:
    """Print (or copy) the current TOTP code of a credential holding a TOTP seed."""
    backend = clipboard_first(args)
    with open_vault(args) as v:
        got = v.credentials.otp(args.ref, reason=args.reason)
    if backend is not None:
        return copy_out(args, Secret(got.code), f"the code of {args.ref}", backend)
    t.out(got.code)
    if sys.stderr.isatty():
        sys.stderr.write(f"(valid for {got.seconds_left} s more)\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run a command with secrets in its environment; its exit status is ours."""
    from credvault import handoff

    argv = list(args.command)
    specs = [handoff.parse_env_spec(e) for e in args.env or []]
    if not specs:
        raise InvalidInput("nothing to pass: give at least one --env VAR=ENGAGEMENT/NAME")
    handoff.find_command(argv)  # a command that cannot start costs no read
    with open_vault(args) as v:
        env = handoff.read_env(v, specs, argv, args.reason)
    return handoff.run_command(argv, env, mask=args.mask)


def cmd_ssh(args: argparse.Namespace) -> int:
    """SSH to a system with its linked credential: key via the agent, password via askpass."""
    from credvault import handoff, parse_ttl

    try:
        lifetime = int(parse_ttl(args.key_lifetime).total_seconds())
    except InvalidInput:
        raise InvalidInput(
            "invalid --key-lifetime: expected e.g. 90s, 15m, 1h (at most 7d)"
        ) from None
    handoff.find_command(["ssh"])  # no ssh client: nothing read
    with open_vault(args) as v:
        plan = handoff.plan_ssh(
            v,
            args.ref,
            list(args.ssh_args),
            credential=args.credential,
            reason=args.reason,
        )
    how = f"key in ssh-agent for {args.key_lifetime}" if plan.kind == "ssh-key" else "password"
    sys.stderr.write(f"credvault: ssh {args.ref} with {plan.credential} ({how})\n")
    sys.stderr.flush()
    return handoff.run_ssh(plan, key_lifetime_s=lifetime)
