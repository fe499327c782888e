"""Where roles are decided: the role table of spec §3 and the operation table, as data.

Every permission check names an operation of :data:`OPERATIONS`: either a role action on an
engagement (decided by :data:`_TABLE` and the admin column) or a vault-wide rule (admins, or
admins and service identities). The operation also names the verb a denial is audited and
reported under, so there is no other place that says who may do what.

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


ADMIN = "admin"
ADMIN_OR_SERVICE = "admin-or-service"
# Why a vault-wide rule refused (audited and shown as "access denied: ... (why)").
VAULT_WIDE_WHY = {ADMIN: "admin only", ADMIN_OR_SERVICE: "admins and service identities only"}


class Rule:
    """One operation: the verb its denials are audited under, and who may do it.

    A slotted class rather than a NamedTuple: this table is built on every ``credvault get``.
    """

    __slots__ = ("action", "vault_wide", "verb")

    def __init__(self, verb: str, action: Action | None, vault_wide: str = "") -> None:
        self.verb = verb
        self.action = action  # a role action on the engagement; None for a vault-wide rule
        self.vault_wide = vault_wide  # ADMIN or ADMIN_OR_SERVICE when ``action`` is None

    def __repr__(self) -> str:
        return f"Rule({self.verb!r}, {self.action!r}, {self.vault_wide!r})"


OPERATIONS: dict[str, Rule] = {
    # vault-wide
    "vault.settings": Rule("change settings", None, ADMIN),
    "vault.backup": Rule("back up", None, ADMIN),
    "vault.purge": Rule("purge", None, ADMIN_OR_SERVICE),
    "audit.verify": Rule("verify the audit trail", None, ADMIN),
    "audit.checkpoint": Rule("export an audit checkpoint", None, ADMIN),
    "member.add": Rule("add members", None, ADMIN),
    "member.reset": Rule("reset members", None, ADMIN),
    "member.remove": Rule("remove members", None, ADMIN),
    "engagement.create": Rule("create engagements", None, ADMIN),
    "engagement.recover": Rule("use the recovery key", None, ADMIN),
    # what admins see whole: every engagement (purged ones too), every audit entry
    "engagement.list-all": Rule("engagement-ls", None, ADMIN),
    "audit.read-all": Rule("read the audit trail", None, ADMIN),
    # on one engagement
    "engagement.list": Rule("engagement-ls", Action.LIST),
    "engagement.show": Rule("show", Action.LIST),
    "engagement.members": Rule("list members", Action.LIST),
    "engagement.receipt": Rule("read the receipt", Action.LIST),
    "engagement.set": Rule("change settings", Action.LIFECYCLE),
    "engagement.close": Rule("close", Action.LIFECYCLE),
    "engagement.retain": Rule("set a retention hold", Action.LIFECYCLE),
    "engagement.release": Rule("release the hold", Action.LIFECYCLE),
    "engagement.shred": Rule("shred", Action.LIFECYCLE),
    "engagement.rotate": Rule("rotate", Action.GRANT),
    "engagement.grant": Rule("grant", Action.GRANT),
    "engagement.revoke": Rule("revoke", Action.GRANT),
    "engagement.recover-key": Rule("recover", None, ADMIN),
    "engagement.key": Rule("read", Action.READ),
    "audit.read": Rule("read the audit trail", Action.AUDIT),
    "credential.list": Rule("list", Action.LIST),
    "credential.get": Rule("get", Action.READ),
    "credential.put": Rule("put", Action.WRITE),
    "credential.remove": Rule("rm", Action.WRITE),
    "credential.otp": Rule("otp", Action.READ),
    "credential.show": Rule("show", Action.READ),
    "credential.find": Rule("find", Action.READ),
    "credential.history": Rule("history", Action.LIST),
    "credential.trash": Rule("trash", Action.LIST),
    "credential.revert": Rule("revert", Action.WRITE),
    "credential.edit": Rule("edit", Action.WRITE),
    "credential.restore": Rule("restore", Action.WRITE),
    "credential.move": Rule("mv", Action.WRITE),
    "credential.import": Rule("import", Action.WRITE),
    "trash.purge": Rule("trash purge", Action.WRITE),
    "system.list": Rule("list systems", Action.LIST),
    "system.show": Rule("system show", Action.READ),
    "system.add": Rule("system add", Action.WRITE),
    "system.remove": Rule("system rm", Action.WRITE),
    "system.set": Rule("system set", Action.WRITE),
    "system.restore": Rule("system restore", Action.WRITE),
    "client.export": Rule("export", Action.READ),
}


def permits(operation: str, role: Role | None, *, admin: bool, service: bool = False) -> bool:
    """Whether a member with ``role`` on the engagement (or none, for a vault-wide
    operation), the admin flag and the service flag may do ``operation``."""
    rule = OPERATIONS[operation]
    if rule.action is not None:
        return allowed(rule.action, role, admin=admin)
    return admin or (rule.vault_wide == ADMIN_OR_SERVICE and service)


def parse_role(value: str) -> Role:
    from credvault.errors import InvalidInput

    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role: expected one of {', '.join(r.value for r in Role)}"
        ) from None
