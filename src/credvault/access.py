"""The role table of spec §3 as data, and the one check every operation goes through.

Being admin manages people and lifecycle; it does not by itself reveal secrets: reading needs
a grant, which is also a sealed copy of the engagement key (so the rule holds by cryptography,
not only by this table).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """Per-engagement roles."""

    LEAD = "lead"
    ENGINEER = "engineer"
    READER = "reader"
    AUDITOR = "auditor"


class Action(StrEnum):
    """What the role table decides about."""

    LIST = "list"
    READ = "read"
    WRITE = "write"
    GRANT = "grant"
    LIFECYCLE = "lifecycle"
    AUDIT = "read the audit trail"


_TABLE: dict[Action, frozenset[Role]] = {
    Action.LIST: frozenset(Role),
    Action.READ: frozenset({Role.LEAD, Role.ENGINEER, Role.READER}),
    Action.WRITE: frozenset({Role.LEAD, Role.ENGINEER}),
    Action.GRANT: frozenset({Role.LEAD}),
    Action.LIFECYCLE: frozenset({Role.LEAD}),
    Action.AUDIT: frozenset({Role.LEAD, Role.AUDITOR}),
}
# Admins may do these on any engagement without a grant; never READ or WRITE.
_ADMIN: frozenset[Action] = frozenset({Action.LIST, Action.LIFECYCLE, Action.AUDIT})

KEY_ROLES = _TABLE[Action.READ]  # roles that receive a sealed copy of the engagement key


def allowed(action: Action, role: Role | None, *, admin: bool) -> bool:
    """Whether a member with ``role`` on the engagement (and the admin flag) may do ``action``."""
    if role is not None and role in _TABLE[action]:
        return True
    return admin and action in _ADMIN


def parse_role(value: str) -> Role:
    from credvault.errors import InvalidInput

    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role: expected one of {', '.join(r.value for r in Role)}"
        ) from None
