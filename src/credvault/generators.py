"""Secret generators: passwords from character classes, hex/base64url tokens, passphrases.

Why a module of its own: the old ``--generate`` drew from a 90-symbol alphabet whose
``$ & ( ) ? ; | { } # @ /`` break URLs and shell quoting. The defaults here are safe to
paste into a URL, a shell word or a config file (letters, digits and ``-_.``), and the full
punctuation set is an explicit choice.

Every generator reports the entropy of what it drew from, computed exactly: for a password
that must contain each class, the number of admissible strings is counted by
inclusion-exclusion (rejection sampling draws uniformly among exactly those), so the figure
is log2 of that count, not the optimistic ``length × log2(alphabet)``.

Values come back inside :class:`Secret`; nothing here logs or prints.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Iterable
from functools import cache
from itertools import combinations
from typing import NamedTuple

from credvault.errors import InvalidInput
from credvault.secret import Secret

__all__ = [
    "AMBIGUOUS",
    "CLASSES",
    "Generated",
    "passphrase",
    "password",
    "token",
    "wordlist",
]

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
#: Safe in URLs (RFC 3986 unreserved) and never special in a POSIX shell word.
SAFE_SYMBOLS = "-_."
#: The full printable ASCII punctuation, for systems that demand "special characters".
ALL_SYMBOLS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
CLASSES = {"upper": UPPER, "lower": LOWER, "digits": DIGITS, "symbols": SAFE_SYMBOLS}
#: Characters easily confused when read aloud or from a screen.
AMBIGUOUS = "Il1|O0o`'\""
MIN_LENGTH, MAX_LENGTH = 8, 1024
MIN_WORDS, MAX_WORDS = 4, 64
WORDLIST_NAME = "eff_large_wordlist.txt"


class Generated(NamedTuple):
    """A generated secret with how it was made; ``secret`` is redacted in ``repr``."""

    secret: Secret
    entropy_bits: float
    description: str


def password(
    length: int = 24,
    *,
    classes: Iterable[str] = ("upper", "lower", "digits", "symbols"),
    symbols: str = SAFE_SYMBOLS,
    require_each: bool = True,
    exclude: str = "",
    avoid_ambiguous: bool = False,
) -> Generated:
    """A random password over the union of the chosen classes, minus exclusions.

    ``classes`` names any of upper, lower, digits, symbols; ``symbols`` is the symbol set
    (default the URL- and shell-safe ``-_.``; pass :data:`ALL_SYMBOLS` for every
    punctuation character). With ``require_each`` every chosen class appears at least once.
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(f"generated length must be {MIN_LENGTH} to {MAX_LENGTH}")
    chosen = list(dict.fromkeys(classes))
    unknown = [c for c in chosen if c not in CLASSES]
    if unknown or not chosen:
        raise InvalidInput(
            f"unknown character class {unknown[0]!r}" if unknown else "no character class chosen"
        )
    if any(not (c.isascii() and c.isprintable()) or c.isalnum() or c == " " for c in symbols):
        raise InvalidInput("symbols must be printable ASCII punctuation")
    removed = set(exclude) | (set(AMBIGUOUS) if avoid_ambiguous else set())
    sets: list[str] = []
    for c in chosen:
        pool = symbols if c == "symbols" else CLASSES[c]
        kept = "".join(ch for ch in dict.fromkeys(pool) if ch not in removed)
        if not kept:
            raise InvalidInput(f"every character of class {c!r} is excluded")
        sets.append(kept)
    # Classes may overlap only if the caller passes letters as symbols, refused above.
    alphabet = "".join(sets)
    if require_each and len(sets) > length:
        raise InvalidInput(f"length {length} cannot hold one of each of {len(sets)} classes")
    while True:  # rejection sampling: uniform over the admissible strings
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if not require_each or all(any(ch in s for ch in value) for s in sets):
            break
    bits = _class_entropy(tuple(len(s) for s in sets), length, require_each)
    desc = f"{length} characters from {len(alphabet)} ({', '.join(chosen)})"
    if require_each and len(sets) > 1:
        desc += ", each class at least once"
    return Generated(Secret(value), bits, desc)


def _class_entropy(sizes: tuple[int, ...], length: int, require_each: bool) -> float:
    """log2 of the number of strings the sampler can return (inclusion-exclusion)."""
    n = sum(sizes)
    if not require_each:
        return length * math.log2(n)
    count = 0
    for k in range(len(sizes) + 1):
        for missing in combinations(sizes, k):
            count += (-1) ** k * (n - sum(missing)) ** length
    return math.log2(count)


def token(nbytes: int = 32, encoding: str = "hex") -> Generated:
    """``nbytes`` random bytes as lowercase hex or unpadded base64url (RFC 4648 §5)."""
    if not 8 <= nbytes <= 512:
        raise InvalidInput("token size must be 8 to 512 bytes")
    raw = secrets.token_bytes(nbytes)
    if encoding == "hex":
        text = raw.hex()
    elif encoding == "base64url":
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    else:
        raise InvalidInput("token encoding must be hex or base64url")
    return Generated(Secret(text), nbytes * 8.0, f"{nbytes} random bytes as {encoding}")


def passphrase(words: int = 6, *, separator: str = "-", capitalize: bool = False) -> Generated:
    """``words`` words drawn uniformly from the bundled EFF large wordlist (7,776 words).

    The separator defaults to ``-`` (URL- and shell-safe); it does not add entropy.
    """
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise InvalidInput(f"passphrase length must be {MIN_WORDS} to {MAX_WORDS} words")
    if len(separator) > 4 or any(not (c.isascii() and c.isprintable()) for c in separator):
        raise InvalidInput("separator must be at most 4 printable ASCII characters")
    wl = wordlist()
    picked = [secrets.choice(wl) for _ in range(words)]
    if capitalize:
        picked = [w.capitalize() for w in picked]
    bits = words * math.log2(len(wl))
    return Generated(
        Secret(separator.join(picked)), bits, f"{words} words from a list of {len(wl)}"
    )


@cache
def wordlist() -> tuple[str, ...]:
    """The bundled EFF large wordlist (CC BY 3.0, see ``wordlists/NOTICE``), words only."""
    from importlib.resources import files

    text = files("credvault").joinpath("wordlists", WORDLIST_NAME).read_text("ascii")
    out = tuple(line.split("\t")[-1].strip() for line in text.splitlines() if line.strip())
    if len(out) != len(set(out)) or len(out) < 7776:  # a damaged install must not shrink it
        raise RuntimeError("the bundled wordlist is damaged; reinstall credvault")
    return out
