"""The one exception hierarchy of credvault.

Every message is safe to show a user: it may name members, engagements and items, never a
secret, a key or a passphrase. Each class carries the CLI exit code of spec §7::

    CredvaultError                     1  base
    ├── InvalidInput (ValueError)      2  bad name, reference, address, port, size, date, role
    ├── NotFound (LookupError)         3  engagement / credential / system / member
    │   └── Purged                     3  the engagement was destroyed on a known date
    ├── AccessDenied (PermissionError) 4  the role table forbids it, or no key is held
    ├── Locked                         5  no usable unlock source, cached key expired
    │   └── WrongPassphrase            5  the derived key did not open the private key
    ├── IntegrityError                 6  a MAC / AEAD tag / signature failed: tampered or moved
    │   └── AuditChainBroken           6  .position of the first bad entry
    ├── NotAVault                      1  not a credvault directory
    │   └── UnsupportedFormat          1  written by a newer credvault
    ├── AlreadyExists                  1  refuse to overwrite
    ├── RetentionError                 1  a lifecycle rule forbids it
    ├── KeyringUnavailable             1  only raised by an explicit `unlock`
    ├── Conflict                       1  changed meanwhile; nothing was stored; run again
    └── StoreError                     1  the database failed: disk full, busy, read-only, I/O
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "AuditChainBroken",
    "Conflict",
    "CredvaultError",
    "IntegrityError",
    "InvalidInput",
    "KeyringUnavailable",
    "Locked",
    "NotAVault",
    "NotFound",
    "Purged",
    "RetentionError",
    "StoreError",
    "UnsupportedFormat",
    "WrongPassphrase",
]


class CredvaultError(Exception):
    """Base of every credvault error; ``str(err)`` is safe to print."""

    exit_code = 1


class InvalidInput(CredvaultError, ValueError):
    """A value given to credvault is malformed or out of range."""

    exit_code = 2


class NotFound(CredvaultError, LookupError):
    """The named engagement, credential, system or member does not exist."""

    exit_code = 3

    def __init__(self, kind: str, name: str, message: str | None = None) -> None:
        self.kind = kind
        self.name = name
        super().__init__(message or f"{kind} {name!r} not found")


class Purged(NotFound):
    """The engagement existed but was destroyed; its tombstone says when."""

    def __init__(self, name: str, purged_at: str) -> None:
        self.purged_at = purged_at
        super().__init__(
            "engagement",
            name,
            f"engagement {name!r} was purged on {purged_at[:10]}; see `credvault receipt {name}`",
        )


class AccessDenied(CredvaultError, PermissionError):
    """The member may not do this: the role table forbids it or they hold no key."""

    exit_code = 4

    def __init__(self, member: str, action: str, engagement: str | None, why: str = "") -> None:
        self.member = member
        self.action = action
        self.engagement = engagement
        where = f" on engagement {engagement!r}" if engagement else ""
        super().__init__(
            f"access denied: {member!r} may not {action}{where}" + (f" ({why})" if why else "")
        )


class Locked(CredvaultError):
    """No usable way to unlock the member's key was found."""

    exit_code = 5


class WrongPassphrase(Locked):
    """The passphrase (or identity file) did not open the member's key."""


class IntegrityError(CredvaultError):
    """A MAC, AEAD tag or signature failed: data altered, moved, or a wrong key."""

    exit_code = 6


class AuditChainBroken(IntegrityError):
    """The audit trail was edited, reordered, truncated or had entries inserted."""

    def __init__(self, position: int, why: str) -> None:
        self.position = position
        super().__init__(f"audit trail broken at entry {position}: {why}")


class NotAVault(CredvaultError):
    """The directory is not a credvault vault (or is missing parts of one)."""


class UnsupportedFormat(NotAVault):
    """The vault was written by a newer credvault; refuse rather than guess."""


class AlreadyExists(CredvaultError):
    """Something of that name exists already and credvault will not overwrite it."""


class RetentionError(CredvaultError):
    """A lifecycle rule forbids the operation (for instance the engagement is closed)."""


class ClockSuspect(RetentionError):
    """Irreversible work is held: the clock is behind the newest recorded time, or too far
    ahead of the last purge; an admin must confirm the date (``purge --confirm-clock``)."""


class KeyringUnavailable(CredvaultError):
    """No usable OS keyring backend: use a passphrase file or an identity file instead."""


class Conflict(CredvaultError):
    """Another process changed what this operation read (a key rotation, a re-key) between
    the read and the write: nothing was stored, and running the command again is safe."""


class StoreError(CredvaultError):
    """A database failure that is neither tampering nor a missing vault: disk full, busy,
    read-only, or another I/O error (never "changed meanwhile": that is :class:`Conflict`)."""


class NotOnTeam(CredvaultError):
    """A command that a PostgreSQL team vault does not offer yet (exit 1, one line)."""

    def __init__(self, command: str, instead: str | None = None) -> None:
        if instead is not None:  # not used on a team vault at all: what to do instead
            super().__init__(f"`credvault {command}` is not used on a team vault: {instead}")
            return
        super().__init__(
            f"`credvault {command}` is not available on a PostgreSQL team vault yet "
            "(docs/team.md lists what is)"
        )
