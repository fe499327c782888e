"""credvault: an encrypted credential vault for IT-services engagements.

Open a vault with :meth:`Vault.open`, use ``vault.credentials``, ``vault.systems``,
``vault.engagements``, ``vault.members``, ``vault.purger``, ``vault.backups``,
``vault.clients`` and ``vault.audit``; every error is a :class:`CredvaultError` whose
message is safe to show. Everything a front end needs is exported here.
"""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: importing typing costs the agent's fast path
# (mypy treats any constant named TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:  # imported on first use (PEP 562, see __getattr__); typed as usual
    from pathlib import Path
    from typing import Any

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
        NotOnTeam,
        Purged,
        RetentionError,
        StoreError,
        UnsupportedFormat,
        WrongPassphrase,
    )
    from credvault.files import write_new_private
    from credvault.integrity import CheckReport
    from credvault.keyring_cache import KeyringSource, parse_ttl
    from credvault.layout import vault_target
    from credvault.members import PasswdResult
    from credvault.migrate import Migrated
    from credvault.migrate import migrate as migrate_vault
    from credvault.model import Engagement, GrantInfo
    from credvault.receipt_keys import ReceiptKeys
    from credvault.secret import Secret
    from credvault.team import Team
    from credvault.team_ledger import LedgerRestore
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
    from credvault.witness import Gap as WitnessGap

# name -> (module, attribute). `import credvault` stays cheap: the agent's fast path
# (credvault.launch) runs inside this package and must not load cryptography or SQLCipher.
_LAZY: dict[str, tuple[str, str]] = {
    "Role": ("credvault.access", "Role"),
    "DEFAULT_KDF": ("credvault.crypto.passphrase", "DEFAULT"),
    "MIN_KDF": ("credvault.crypto.passphrase", "TEST_PARAMS"),
    "KdfParams": ("credvault.crypto.passphrase", "KdfParams"),
    "AccessDenied": ("credvault.errors", "AccessDenied"),
    "AlreadyExists": ("credvault.errors", "AlreadyExists"),
    "AuditChainBroken": ("credvault.errors", "AuditChainBroken"),
    "ClockSuspect": ("credvault.errors", "ClockSuspect"),
    "CheckReport": ("credvault.integrity", "CheckReport"),
    "ReceiptKeys": ("credvault.receipt_keys", "ReceiptKeys"),
    "PasswdResult": ("credvault.members", "PasswdResult"),
    "RestoreReport": ("credvault.vault", "RestoreReport"),
    "Conflict": ("credvault.errors", "Conflict"),
    "CredvaultError": ("credvault.errors", "CredvaultError"),
    "IntegrityError": ("credvault.errors", "IntegrityError"),
    "InvalidInput": ("credvault.errors", "InvalidInput"),
    "KeyringUnavailable": ("credvault.errors", "KeyringUnavailable"),
    "Locked": ("credvault.errors", "Locked"),
    "NotAVault": ("credvault.errors", "NotAVault"),
    "NotFound": ("credvault.errors", "NotFound"),
    "Purged": ("credvault.errors", "Purged"),
    "RetentionError": ("credvault.errors", "RetentionError"),
    "StoreError": ("credvault.errors", "StoreError"),
    "UnsupportedFormat": ("credvault.errors", "UnsupportedFormat"),
    "WrongPassphrase": ("credvault.errors", "WrongPassphrase"),
    "write_new_private": ("credvault.files", "write_new_private"),
    "KeyringSource": ("credvault.keyring_cache", "KeyringSource"),
    "parse_ttl": ("credvault.keyring_cache", "parse_ttl"),
    "Engagement": ("credvault.model", "Engagement"),
    "GrantInfo": ("credvault.model", "GrantInfo"),
    "Secret": ("credvault.secret", "Secret"),
    "FirstOf": ("credvault.unlock", "FirstOf"),
    "IdentityFile": ("credvault.unlock", "IdentityFile"),
    "InMemory": ("credvault.unlock", "InMemory"),
    "Passphrase": ("credvault.unlock", "Passphrase"),
    "PassphraseFile": ("credvault.unlock", "PassphraseFile"),
    "Prompt": ("credvault.unlock", "Prompt"),
    "UnlockSource": ("credvault.unlock", "UnlockSource"),
    "default_source": ("credvault.unlock", "default_source"),
    "identity_member": ("credvault.unlock", "identity_member"),
    "read_passphrase_file": ("credvault.unlock", "read_passphrase_file"),
    "validate_name": ("credvault.validate", "name"),
    "InitResult": ("credvault.vault", "InitResult"),
    "Vault": ("credvault.vault", "Vault"),
    "default_dir": ("credvault.vault", "default_dir"),
    # the PostgreSQL team vault (issue 14): loaded only when --vault names one
    "Team": ("credvault.team", "Team"),
    "LedgerRestore": ("credvault.team_ledger", "LedgerRestore"),
    "NotOnTeam": ("credvault.errors", "NotOnTeam"),
    "vault_target": ("credvault.layout", "vault_target"),
    "migrate_vault": ("credvault.migrate", "migrate"),
    "Migrated": ("credvault.migrate", "Migrated"),
    "EngagementView": ("credvault.results", "EngagementView"),
    "PurgePlan": ("credvault.results", "PurgePlan"),
    "Receipt": ("credvault.results", "Receipt"),
    "ReceiptDestroyed": ("credvault.results", "ReceiptDestroyed"),
    "ReceiptHold": ("credvault.results", "ReceiptHold"),
    "ScheduledPurge": ("credvault.results", "ScheduledPurge"),
    "VaultInfo": ("credvault.results", "VaultInfo"),
    "VaultStatus": ("credvault.results", "VaultStatus"),
    "WitnessGap": ("credvault.witness", "Gap"),
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562)."""
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'credvault' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from credvault.generators import Generated
    from credvault.importers import RawEntry, Skipped
    from credvault.integrity import CheckReport
    from credvault.results import (
        EngagementView,
        PurgePlan,
        Receipt,
        ReceiptDestroyed,
        ReceiptHold,
        ScheduledPurge,
        VaultInfo,
        VaultStatus,
    )


def verify_receipt(
    receipt: Receipt | dict[str, object] | str,
    public_key: bytes | str | ReceiptKeys | None = None,
) -> dict[str, object]:
    """Check a purge receipt's signature against the vault's public key, or against its
    receipt key history (:meth:`Vault.receipt_keys`, :meth:`ReceiptKeys.from_json`);
    returns its body.

    Raises :class:`IntegrityError` if the receipt was altered or signed by another key (or,
    with a history, by a key retired before the receipt's dates).
    """
    from credvault.purge import verify_receipt as _verify  # keeps `import credvault` light

    return _verify(receipt, public_key)


def check(
    path: Path | str, member: str, source: UnlockSource | bytes | str, **open_kw: Any
) -> CheckReport:
    """Full integrity check of the vault directory or backup file at ``path``: the key-slot
    file's MAC, every database page's MAC, SQLite's integrity check, the audit chain and the
    purge receipts. ``report.problems`` lists what is wrong (empty when sound)."""
    from pathlib import Path as _Path

    from credvault.unlock import Passphrase as _Passphrase
    from credvault.vault import Vault as _Vault

    src = _Passphrase(source) if isinstance(source, (bytes, str)) else source
    del source  # a str or bytes passphrase must not stay a local of this frame
    return _Vault.check_at(_Path(path), member, src, **open_kw)


def write_receipt(path: Path, receipt: Receipt | dict[str, object]) -> None:
    """Write a receipt (as ``vault.purger.receipt`` returns it) to a new 0600 file."""
    from credvault.purge import write_receipt as _write

    _write(path, receipt)


def generate_secret(length: int = 32) -> Secret:
    """A random password of ``length`` (8–1024) characters, safe in URLs and shells
    (letters, digits, ``-_.``; each class at least once). More in :mod:`credvault.generators`."""
    from credvault.credentials import generate

    return generate(length)


def generate_password(
    length: int = 24,
    *,
    classes: Iterable[str] = ("upper", "lower", "digits", "symbols"),
    symbols: str = "-_.",
    exclude: str = "",
    avoid_ambiguous: bool = False,
) -> Generated:
    """A password from character classes, each at least once (see :mod:`credvault.generators`);
    ``symbols`` may be ``"all"`` for every ASCII punctuation character."""
    from credvault import generators as g

    return g.password(
        length,
        classes=classes,
        symbols=g.ALL_SYMBOLS if symbols == "all" else symbols,
        exclude=exclude,
        avoid_ambiguous=avoid_ambiguous,
    )


def generate_token(nbytes: int = 32, encoding: str = "hex") -> Generated:
    """``nbytes`` random bytes as ``hex`` or unpadded ``base64url``."""
    from credvault.generators import token

    return token(nbytes, encoding)


def generate_passphrase(words: int = 6, *, separator: str = "-") -> Generated:
    """``words`` words from the bundled EFF large wordlist (12.9 bits each)."""
    from credvault.generators import passphrase

    return passphrase(words, separator=separator)


def read_import_source(
    fmt: str,
    path: Path,
    *,
    password: Secret | None = None,
    keyfile: Path | None = None,
    mapping: Mapping[str, str] | None = None,
) -> Iterable[RawEntry | Skipped]:
    """Read a KeePass, Bitwarden, pass or CSV source for ``v.credentials.import_entries``
    (see :mod:`credvault.importers`; nothing is stored by reading)."""
    from credvault.importers import read_source

    return read_source(fmt, path, password=password, keyfile=keyfile, mapping=mapping)


def parse_import_mapping(spec: str) -> dict[str, str]:
    """``name=Title,secret=Password,…`` → {field: column} for a generic CSV import."""
    from credvault.importers import parse_mapping

    return parse_mapping(spec)


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
    "EngagementView",
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
    "LedgerRestore",
    "Locked",
    "Migrated",
    "NotAVault",
    "NotFound",
    "NotOnTeam",
    "Passphrase",
    "PassphraseFile",
    "PasswdResult",
    "Prompt",
    "PurgePlan",
    "Purged",
    "Receipt",
    "ReceiptDestroyed",
    "ReceiptHold",
    "ReceiptKeys",
    "RestoreReport",
    "RetentionError",
    "Role",
    "ScheduledPurge",
    "Secret",
    "StoreError",
    "Team",
    "UnlockSource",
    "UnsupportedFormat",
    "Vault",
    "VaultInfo",
    "VaultStatus",
    "WitnessGap",
    "WrongPassphrase",
    "__version__",
    "check",
    "default_dir",
    "default_source",
    "generate_passphrase",
    "generate_password",
    "generate_secret",
    "generate_token",
    "identity_member",
    "migrate_vault",
    "parse_import_mapping",
    "parse_ttl",
    "read_import_source",
    "read_passphrase_file",
    "validate_name",
    "vault_target",
    "verify_receipt",
    "write_new_private",
    "write_receipt",
]
