"""A bytes wrapper that never shows its value by accident.

``repr``/``str``/format give ``Secret(<redacted>)``; pickling raises; equality is constant-time;
``reveal()`` is the only way out, so a grep for ``reveal`` finds every place a secret leaves.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

__all__ = ["Secret"]


class Secret:
    """A secret value (password, private key, token) held as bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        self._value = value.encode() if isinstance(value, str) else bytes(value)

    def reveal(self) -> bytes:
        """Return the secret bytes: the one deliberate way a value leaves this object."""
        return self._value

    def reveal_text(self) -> str:
        """The secret decoded as UTF-8 (replacement characters for other bytes)."""
        return self._value.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "Secret(<redacted>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        raise TypeError("Secret is not hashable")  # hashing would leak equality classes

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)
