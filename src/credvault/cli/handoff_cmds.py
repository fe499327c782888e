"""Handlers of the at-the-terminal commands: ``otp``, ``run``, ``ssh``, and ``get -c``'s copy.

Thin like every handler: parse what argparse gave, one library call, render. The library
modules (:mod:`credvault.clipboard`, :mod:`credvault.handoff`, :mod:`credvault.totp`) are
imported inside the handlers, so ``credvault get`` without ``-c`` never loads them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from credvault import InvalidInput, Secret
from credvault.cli import terminal as t
from credvault.cli.commands import open_vault

if TYPE_CHECKING:
    from credvault.clipboard import Backend

EXIT_OK = 0


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
