"""credvault: an encrypted credential vault for IT-services engagements.

Open a vault with :meth:`Vault.open`, use ``vault.credentials``, ``vault.systems``,
``vault.engagements``, ``vault.members``, ``vault.purger``, ``vault.backups``,
``vault.clients`` and ``vault.audit``; every error is a :class:`CredvaultError` whose
message is safe to show. Everything a front end needs is exported here.
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
    ClockSuspect,
    Conflict,
    CredvaultError,
    IntegrityError,
    InvalidInput,
    KeyringUnavailable,
    Locked,
    NotAVault,
    NotFound,
    Purged,
    RetentionError,
    StoreError,
    UnsupportedFormat,
    WrongPassphrase,
)
from credvault.files import write_new_private
from credvault.keyring_cache import KeyringSource, parse_ttl
from credvault.model import Engagement, GrantInfo
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
    identity_member,
    read_passphrase_file,
)
from credvault.validate import name as validate_name
from credvault.vault import InitResult, RestoreReport, Vault, default_dir

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
    return Vault.check_at(Path(path), member, source, **open_kw)


def write_receipt(path: Path, receipt: dict[str, object]) -> None:
    """Write a receipt (as ``vault.purger.receipt`` returns it) to a new 0600 file."""
    from credvault.purge import write_receipt as _write

    _write(path, receipt)


def generate_secret(length: int = 32) -> Secret:
    """A random password of ``length`` (8–1024) characters from a 90-symbol alphabet."""
    from credvault.credentials import generate

    return generate(length)


__all__ = [
    "DEFAULT_KDF",
    "MIN_KDF",
    "AccessDenied",
    "AlreadyExists",
    "AuditChainBroken",
    "CheckReport",
    "ClockSuspect",
    "Conflict",
    "CredvaultError",
    "Engagement",
    "FirstOf",
    "GrantInfo",
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
    "RestoreReport",
    "RetentionError",
    "Role",
    "Secret",
    "StoreError",
    "UnlockSource",
    "UnsupportedFormat",
    "Vault",
    "WrongPassphrase",
    "__version__",
    "check",
    "default_dir",
    "default_source",
    "generate_secret",
    "identity_member",
    "parse_ttl",
    "read_passphrase_file",
    "validate_name",
    "verify_receipt",
    "write_new_private",
    "write_receipt",
]
