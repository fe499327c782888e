"""Every domain-separation string and format byte of credvault, in one place.

A test asserts they are all distinct: one label per use, as age does.
"""

from __future__ import annotations

ENVELOPE_VERSION = 1  # first byte of an envelope bound to its place only
ENVELOPE_BOUND = 2  # first byte of an envelope also bound to its record's header (issue 11)

ENVELOPE_DATA = b"credvault/v1/envelope-data"
ENVELOPE_WRAP = b"credvault/v1/envelope-dek-wrap"
# Format 0x02: the same layout, the AAD also names the record (name, kind, system link; a
# system's name, port, protocol). Other labels, so flipping the format byte changes the AAD.
ENVELOPE_DATA_BOUND = b"credvault/v1/bound-envelope-data"
ENVELOPE_WRAP_BOUND = b"credvault/v1/bound-envelope-dek-wrap"
SEAL_DB_KEY = b"credvault/v1/seal-db-key"
SEAL_ENGAGEMENT_KEY = b"credvault/v1/seal-engagement-key"
SEAL_ADMIN_KEY = b"credvault/v1/seal-admin-signing-key"
MEMBER_PRIVATE = b"credvault/v1/member-private"
KEYSLOTS_MAC = b"credvault/v1/keyslots-mac"
AUDIT_MAC = b"credvault/v1/audit-mac"
KEY_FINGERPRINT = b"credvault/v1/key-fingerprint"
MEMBER_CERT = b"credvault/v1/member-certificate"
MEMBER_SUCCESSION = b"credvault/v1/member-key-succession"  # old member key certifies new
GRANT_SIG = b"credvault/v1/engagement-key-grant"
RECOVERY_X25519 = b"credvault/v1/recovery-x25519"
RECOVERY_ED25519 = b"credvault/v1/recovery-ed25519"
RECEIPT_SIG = b"credvault/v1/purge-receipt"
CLOSE_SIG = b"credvault/v1/close-record"  # a closed engagement's state, in the purge ledger
RECEIPT_KEY_SIG = b"credvault/v1/receipt-key"  # a receipt key signs its successor forward
KEYRING_ENTRY = b"credvault/v1/keyring-entry"
MEMBER_LOG = b"credvault/v1/membership-link"  # signature over a membership-log link
MEMBER_LOG_HASH = b"credvault/v1/membership-chain"  # hash chaining the links
WITNESS_MAC = b"credvault/v1/witness-mac"  # HKDF info: a member's witness file MAC key
WITNESS_JOURNAL = b"credvault/v1/witness-journal"  # a witness journal record's MAC
MEMBER_STATE_MAC = b"credvault/v1/membership-state-mac"  # HKDF info: verified-state MAC key
TEAM_INVITE_SIG = b"credvault/v1/team-invite-statement"  # an admin invites a member (team)
TEAM_JOIN_PROOF = b"credvault/v1/team-join-proof"  # the invitation key vouches for join keys
TEAM_INVITE_KEY = b"credvault/v1/team-invite-key-seed"  # HKDF info: invitation Ed25519 seed
TEAM_PRE_LOG = b"credvault/v1/team-pre-log-engagements"  # migrate lists unlogged engagements
TEAM_REVOCATION_LIST = b"credvault/v1/team-revocation-list"  # an admin signs a list version
TEAM_REVOCATION_HASH = b"credvault/v1/team-revocation-chain"  # hash chaining the versions
TEAM_KEYRING_ENTRY = b"credvault/v1/team-keyring-entry"  # a team member's cached keys
TEAM_REKEY_CERT = b"credvault/v1/team-rekey-certificate"  # an admin certifies new member keys

# The three statements signed under GRANT_SIG, told apart by their first encoded part.
GRANT_CREATION = "create"  # an admin created the engagement with its first lead
GRANT_ROLE = "role"  # a role certificate
GRANT_COPY = "copy"  # a sealed copy of the engagement key
GRANT_STATEMENTS = (GRANT_CREATION, GRANT_ROLE, GRANT_COPY)

ALL = (
    ENVELOPE_DATA,
    ENVELOPE_WRAP,
    ENVELOPE_DATA_BOUND,
    ENVELOPE_WRAP_BOUND,
    SEAL_DB_KEY,
    SEAL_ENGAGEMENT_KEY,
    SEAL_ADMIN_KEY,
    MEMBER_PRIVATE,
    KEYSLOTS_MAC,
    AUDIT_MAC,
    KEY_FINGERPRINT,
    MEMBER_CERT,
    MEMBER_SUCCESSION,
    GRANT_SIG,
    RECOVERY_X25519,
    RECOVERY_ED25519,
    RECEIPT_SIG,
    CLOSE_SIG,
    RECEIPT_KEY_SIG,
    KEYRING_ENTRY,
    MEMBER_LOG,
    MEMBER_LOG_HASH,
    WITNESS_MAC,
    WITNESS_JOURNAL,
    MEMBER_STATE_MAC,
    TEAM_INVITE_SIG,
    TEAM_JOIN_PROOF,
    TEAM_INVITE_KEY,
    TEAM_PRE_LOG,
    TEAM_REVOCATION_LIST,
    TEAM_REVOCATION_HASH,
    TEAM_KEYRING_ENTRY,
    TEAM_REKEY_CERT,
)


def encode(*parts: bytes | str | int) -> bytes:
    """Unambiguous encoding of a tuple: each part length-prefixed (4 bytes, big endian).

    Never ``"/".join``: with length prefixes ``("a/b", "c")`` and ``("a", "b/c")`` differ.
    """
    out = bytearray()
    for part in parts:
        if isinstance(part, int):
            b = part.to_bytes(8, "big", signed=True)
        elif isinstance(part, str):
            b = part.encode()
        else:
            b = part
        out += len(b).to_bytes(4, "big") + b
    return bytes(out)
