"""A team vault made at schema 1, after its owner's ``init --upgrade-schema``.

Schema 1 had no member certificates: every member's keys were whatever the server showed,
and no engagement had a membership log. Schema 2 believes a key only through a chain of
signatures ending at the founder every member pins (:mod:`credvault.team_log`). The bridge
is one trust-on-first-use step (docs/security.md §12, "A vault upgraded from schema 1"):

- the first **admin** whose key slot pins no founder (a version-1 slot) and who finds no
  certificate at all becomes the founder: they self-certify (as ``init`` does), sign a
  certificate for every other member's keys *as the server shows them now*, and sign the
  list of the engagements without a log (docs/format.md §19.6), in one transaction the
  server refuses once any certificate exists; the step is audited (``certify``);
- every member with a version-1 slot (the founder included) then *pins* the founder's
  fingerprint in their slot (version 2) the first time a certificate chain is checked, so
  a later deletion of the certificates cannot start the step again for them.

What the step cannot do is tell keys the DBA swapped *before* it from the real ones: it
certifies what schema 1 trusted anyway. Every swap *after* it is caught (exit 6).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import AccessDenied, IntegrityError
from credvault.keyslots import MemberKeys
from credvault.postgres.store import PgStore
from credvault.team_log import (
    fingerprint,
    invitation_key,
    invitation_message,
    join_message,
    pre_log_list,
)

__all__ = ["certify_schema1", "pin_founder"]


def certify_schema1(store: PgStore, keys: MemberKeys, vault_id: bytes) -> None:
    """As the first admin after a schema-1 upgrade: become the founder and certify every
    member's published keys and every engagement without a log (AccessDenied for a member
    who is not an admin: an admin must open the vault first)."""
    me, admin = store.whoami()
    if not admin:
        raise AccessDenied(
            me,
            "use the team vault",
            None,
            "it was upgraded from schema 1 and no admin has certified its members yet: "
            "an admin runs a command first (docs/team.md)",
        )
    sign_pub = p.ed25519_public(keys.sign_private)
    kem_pub = p.x25519_public(keys.kem_private)
    certs: list[tuple[str, bool, bytes, bytes, bytes]] = []
    for name, is_admin, _state, spub, kpub in store.uncertified_members():
        if name == me:
            if (spub, kpub) != (sign_pub, kem_pub):
                raise IntegrityError(
                    f"the server shows keys for {me!r} that are not the ones in this "
                    "member's key slot"
                )
            seed = keys.sign_private  # the founder is self-invited, as at init
        else:
            seed = invitation_key(secrets.token_bytes(32))  # used here once, then dropped
        ipk = p.ed25519_public(seed)
        admin_flag = True if name == me else is_admin
        certs.append(
            (
                name,
                admin_flag,
                ipk,
                p.sign(
                    keys.sign_private,
                    labels.TEAM_INVITE_SIG,
                    invitation_message(vault_id, name, ipk, admin_flag, me),
                ),
                p.sign(seed, labels.TEAM_JOIN_PROOF, join_message(vault_id, name, spub, kpub)),
            )
        )
    uids = store.unlogged_engagements()
    store.certify_upgraded(certs, pre_log_list(vault_id, uids, keys.sign_private), len(uids))


def pin_founder(path: Path, vault_id: bytes, sign_pub: bytes, founder_sign: bytes) -> None:
    """Write the founder's fingerprint into the member's version-1 key slot at ``path``
    (it becomes version 2): from now on only that founder's chain is believed."""
    from credvault.files import atomic_write
    from credvault.postgres.slot import TeamSlot

    slot = TeamSlot.read(path)
    if slot.vault_id != vault_id or slot.sign_pub != sign_pub or slot.anchor is not None:
        return  # another slot, or pinned meanwhile: nothing to do
    atomic_write(path, slot._replace(anchor=fingerprint(founder_sign)).to_bytes())
