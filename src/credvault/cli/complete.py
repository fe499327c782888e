"""``credvault __complete KIND [ENGAGEMENT]``: names for the shell completion scripts.

Hidden (not in the command table, not in ``--help``): the generated scripts in completions/
call it for names that live in the vault. It lists only what the member may list (the same
library calls, and audit entries, as ``credvault engagement ls`` / ``ls`` / ``system ls``),
never prompts (a Tab must not ask for a passphrase: without a cached key, an identity or a
passphrase file it prints nothing), and never purges. One name per line; errors are silent.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

KINDS = ("engagements", "clients", "members", "credentials", "systems")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="credvault __complete", add_help=False)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("engagement", nargs="?")
    p.add_argument("--vault")
    p.add_argument("--as", dest="as_member")
    return p


def names(words: Sequence[str]) -> list[str]:
    from credvault import Vault, default_source
    from credvault.cli.commands import member_name, vault_dir

    args, _ = _parser().parse_known_args(list(words))
    path = vault_dir(args)
    member = member_name(args)
    identity = os.environ.get("CREDVAULT_IDENTITY")
    pfile = os.environ.get("CREDVAULT_PASSPHRASE_FILE")
    source = default_source(
        path,
        identity_file=Path(identity) if identity else None,
        use_keyring=True,
        passphrase_file=Path(pfile) if pfile else None,
        prompt=None,
    )
    with Vault.open(path, member, source, auto_purge=False) as v:
        if args.kind == "members":
            return [m.name for m in v.members.list()]
        if args.kind in ("engagements", "clients"):
            engs = [e for e in v.engagements.visible() if e.state != "purged"]
            if args.kind == "clients":
                return sorted({e.client for e in engs})
            return [e.name for e in engs]
        if not args.engagement:
            return []
        if args.kind == "credentials":
            return [c.name for c in v.credentials.list(args.engagement)]
        return [s.name for s in v.systems.list(args.engagement)]


def main(words: Sequence[str]) -> int:
    import sys

    try:
        found = names(words)
    except (Exception, SystemExit):  # noqa: BLE001 - a Tab shows nothing rather than an error
        return 1
    sys.stdout.write("".join(f"{n}\n" for n in found))
    return 0
