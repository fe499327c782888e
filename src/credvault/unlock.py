"""Ways to unlock a member's keys, tried in a fixed order.

Order used by the CLI (and by :func:`default_source` for tooling): identity file, OS keyring,
passphrase file, interactive prompt. Each source either returns the member's keys, says
"not mine" (``None``: try the next one), or raises (wrong passphrase, tampered slot).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from credvault.errors import InvalidInput, Locked, NotFound, WrongPassphrase
from credvault.keyslots import KeySlots, MemberKeys, decrypt_private
from credvault.secret import Secret

MAX_PASSPHRASE = 4096


class UnlockSource(Protocol):
    """Something that can produce a member's unlocked keys."""

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None: ...


def _slot(slots: KeySlots, member: str) -> None:
    if member not in slots.members:
        raise NotFound(
            "member",
            member,
            f"no member {member!r} in this vault (choose with --as NAME or CREDVAULT_MEMBER)",
        )


def read_passphrase_file(path: Path) -> bytes:
    """The first line of the file, without its newline."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PASSPHRASE + 2)
    except OSError:
        raise InvalidInput(f"cannot read passphrase file {path}") from None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    del data
    if not line or len(line) > MAX_PASSPHRASE:
        problem = "is empty" if not line else "holds a passphrase that is too long"
        line = b""  # never leave the passphrase in a frame a traceback could print
        raise InvalidInput(f"passphrase file {path} {problem}")
    return line


def identity_member(path: Path) -> str:
    """The member an identity file belongs to (so ``CREDVAULT_IDENTITY`` alone suffices)."""
    try:
        data = json.loads(Path(path).read_bytes()[:65536])
        name = data["member"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InvalidInput(f"{path} is not a credvault identity file") from None
    if not isinstance(name, str):
        raise InvalidInput(f"{path} is not a credvault identity file")
    return name


class Passphrase:
    """A passphrase held in memory (library use and tests)."""

    def __init__(self, passphrase: bytes | str | Secret) -> None:
        # Wrapped at once: the plain form never outlives this call in any frame of ours.
        self.passphrase = passphrase if isinstance(passphrase, Secret) else Secret(passphrase)
        del passphrase

    def __repr__(self) -> str:
        return "Passphrase(<redacted>)"

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        _slot(slots, member)
        return decrypt_private(slots.vault_id, slots.members[member], self.passphrase)


class PassphraseFile:
    """A file whose first line is the passphrase (``CREDVAULT_PASSPHRASE_FILE``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"PassphraseFile({str(self.path)!r})"

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        _slot(slots, member)
        if slots.members[member].service:
            return None
        return decrypt_private(
            slots.vault_id, slots.members[member], Secret(read_passphrase_file(self.path))
        )


class IdentityFile:
    """A service identity's key file (``CREDVAULT_IDENTITY``): the file is the secret."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"IdentityFile({str(self.path)!r})"

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        try:
            data = self.path.read_bytes()[:65536]
        except OSError:
            raise InvalidInput(f"cannot read identity file {self.path}") from None
        keys = MemberKeys.from_bytes(data, slots.vault_id)
        if keys.name != member:
            raise WrongPassphrase(f"identity file is for member {keys.name!r}, not {member!r}")
        _slot(slots, keys.name)
        return keys


class Prompt:
    """Ask on the terminal (the CLI passes a function that reads without echo)."""

    def __init__(self, ask: Callable[[str], bytes]) -> None:
        self.ask = ask

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        _slot(slots, member)
        if slots.members[member].service:
            return None
        return decrypt_private(
            slots.vault_id, slots.members[member], Secret(self.ask(f"Passphrase for {member}: "))
        )


class InMemory:
    """Already-unlocked keys (tests, and the keyring cache after a hit)."""

    def __init__(self, keys: MemberKeys) -> None:
        self.keys = keys

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        return self.keys if self.keys.name == member else None


class FirstOf:
    """Try sources in order; the first that answers wins."""

    def __init__(self, sources: Sequence[UnlockSource]) -> None:
        self.sources = list(sources)

    def __repr__(self) -> str:
        return f"FirstOf({self.sources!r})"

    def unlock(self, slots: KeySlots, member: str) -> MemberKeys | None:
        for src in self.sources:
            keys = src.unlock(slots, member)
            if keys is not None:
                return keys
        return None


def resolve(source: UnlockSource, slots: KeySlots, member: str) -> MemberKeys:
    keys = source.unlock(slots, member)
    if keys is None:
        raise Locked(
            f"vault is locked for {member!r}: no passphrase available (set "
            "CREDVAULT_PASSPHRASE_FILE, CREDVAULT_IDENTITY, run `credvault unlock`, "
            "or use a terminal)"
        )
    return keys


def default_source(
    vault: Path,
    *,
    identity_file: Path | None = None,
    use_keyring: bool = True,
    passphrase_file: Path | None = None,
    prompt: Callable[[str], bytes] | None = None,
) -> FirstOf:
    """The standard order: identity file, OS keyring, passphrase file, prompt.

    ``use_keyring=False`` forbids the keyring (tooling that must not depend on a desktop
    session); the keyring is only consulted after ``credvault unlock`` ran for this vault.
    """
    from credvault.keyring_cache import KeyringSource

    sources: list[UnlockSource] = []
    if identity_file is not None:
        sources.append(IdentityFile(identity_file))
    if use_keyring:
        sources.append(KeyringSource(vault))
    if passphrase_file is not None:
        sources.append(PassphraseFile(passphrase_file))
    if prompt is not None:
        sources.append(Prompt(prompt))
    return FirstOf(sources)
