"""credvault: an encrypted credential vault for IT-services engagements.

Open a vault with :meth:`Vault.open`, use ``vault.credentials``, ``vault.systems``,
``vault.engagements``, ``vault.members`` and ``vault.purger``; every error is a
:class:`CredvaultError` whose message is safe to show.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from credvault.integrity import CheckReport
else:

    def __getattr__(name: str) -> object:
        if name == "CheckReport":
            from credvault.integrity import CheckReport

            return CheckReport
        raise AttributeError(name)


__version__ = "0.1.0"


def verify_receipt(
    receipt: dict[str, object] | str, public_key: bytes | str | None = None
) -> dict[str, object]:
    """Check a purge receipt's signature against the vault's public key; returns its body.

    Raises :class:`IntegrityError` if the receipt was altered or signed by another key.
    """
    from credvault.purge import verify_receipt as _verify  # keeps `import credvault` light

    return _verify(receipt, public_key)


def check(
    path: Path | str, member: str, source: UnlockSource | bytes | str, **open_kw: Any
) -> CheckReport:
    """Full integrity check of the vault directory or backup file at ``path``: the key-slot
    file's MAC, every database page's MAC, SQLite's integrity check, the audit chain and the
    purge receipts. ``report.problems`` lists what is wrong (empty when sound)."""
    from credvault.integrity import check as _check
    from credvault.unlock import Passphrase as _P

    src = source if not isinstance(source, (bytes, str)) else _P(source)
    return _check(Path(path), member, src, **open_kw)


__all__ = [
    "DEFAULT_KDF",
    "MIN_KDF",
    "AccessDenied",
    "AlreadyExists",
    "AuditChainBroken",
    "CheckReport",
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
    "check",
    "default_dir",
    "default_source",
    "verify_receipt",
]
