"""credvault: an encrypted credential vault for IT-services engagements.

Open a vault with :meth:`Vault.open`, use ``vault.credentials``, ``vault.systems``,
``vault.engagements``, ``vault.members`` and ``vault.purger``; every error is a
:class:`CredvaultError` whose message is safe to show.
"""

from credvault.access import Role
from credvault.crypto.passphrase import DEFAULT as DEFAULT_KDF
from credvault.crypto.passphrase import TEST_PARAMS as MIN_KDF
from credvault.crypto.passphrase import KdfParams
from credvault.errors import (
    AccessDenied,
    AlreadyExists,
    AuditChainBroken,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    KeyringUnavailable,
    Locked,
    NotAVault,
    NotFound,
    Purged,
    RetentionError,
    UnsupportedFormat,
    WrongPassphrase,
)
from credvault.keyring_cache import KeyringSource
from credvault.secret import Secret
from credvault.unlock import (
    FirstOf,
    IdentityFile,
    InMemory,
    Passphrase,
    PassphraseFile,
    Prompt,
    UnlockSource,
    default_source,
)
from credvault.vault import InitResult, Vault, default_dir

__version__ = "0.1.0"


def verify_receipt(
    receipt: dict[str, object] | str, public_key: bytes | str | None = None
) -> dict[str, object]:
    """Check a purge receipt's signature against the vault's public key; returns its body.

    Raises :class:`IntegrityError` if the receipt was altered or signed by another key.
    """
    from credvault.purge import verify_receipt as _verify  # keeps `import credvault` light

    return _verify(receipt, public_key)


__all__ = [
    "DEFAULT_KDF",
    "MIN_KDF",
    "AccessDenied",
    "AlreadyExists",
    "AuditChainBroken",
    "CredvaultError",
    "FirstOf",
    "IdentityFile",
    "InMemory",
    "InitResult",
    "IntegrityError",
    "InvalidInput",
    "KdfParams",
    "KeyringSource",
    "KeyringUnavailable",
    "Locked",
    "NotAVault",
    "NotFound",
    "Passphrase",
    "PassphraseFile",
    "Prompt",
    "Purged",
    "RetentionError",
    "Role",
    "Secret",
    "UnlockSource",
    "UnsupportedFormat",
    "Vault",
    "WrongPassphrase",
    "__version__",
    "default_dir",
    "default_source",
    "verify_receipt",
]
