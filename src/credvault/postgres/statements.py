"""The statements a team vault's members sign and the HPKE binding of a key copy: the
SQLCipher vault's own (:mod:`credvault.grants`), so a migrated signature verifies unchanged.

Apart from :mod:`credvault.postgres.client` (which re-exports them beside its minimal
library client) so that :mod:`credvault.team`, behind ``credvault get``, loads only these
(issue 14: a team ``get``'s start-up).
"""

from __future__ import annotations

from credvault.crypto import labels
from credvault.crypto import primitives as p


def seal_info(vault_id: bytes, eng_uid: bytes, member: str, version: int) -> bytes:
    """HPKE ``info`` of an engagement-key copy: the same binding as in SQLCipher vaults."""
    return labels.encode(labels.SEAL_ENGAGEMENT_KEY, vault_id, eng_uid, member, version)


def creation_message(
    vault_id: bytes, uid: bytes, name: str, client: str, lead: str, by: str
) -> bytes:
    """What an admin signs when creating an engagement: the SQLCipher statement
    (:func:`credvault.grants.creation_message`), so a migrated signature still verifies."""
    return labels.encode(labels.GRANT_CREATION, vault_id, uid, name, client, lead, by)


def role_message(
    vault_id: bytes, eng_uid: bytes, member: str, role: str, expires: str | None, by: str
) -> bytes:
    """What a role certificate signs (:func:`credvault.grants.role_message`)."""
    return labels.encode(labels.GRANT_ROLE, vault_id, eng_uid, member, role, expires or "", by)


def copy_message(
    vault_id: bytes, eng_uid: bytes, member: str, version: int, sealed: bytes, key: bytes, by: str
) -> bytes:
    """What the sealer of a key copy signs (:func:`credvault.grants.copy_message`): who may
    open which key version, the copy's digest and the key's fingerprint, and the sealer."""
    return labels.encode(
        labels.GRANT_COPY,
        vault_id,
        eng_uid,
        member,
        version,
        p.digest(sealed),
        p.fingerprint(key),
        by,
    )
