"""Generators: classes, exclusions, tokens, passphrases and the entropy they report."""

from __future__ import annotations

import base64
import math
import re
import shlex
import urllib.parse

import pytest

from credvault import generators as g
from credvault.errors import InvalidInput


def test_default_password_is_safe_in_urls_and_shells() -> None:
    for _ in range(200):
        v = g.password().secret.reveal_text()
        assert len(v) == 24
        assert urllib.parse.quote(v, safe="") == v  # nothing to escape in a URL
        assert shlex.quote(v) == v  # nothing to quote in a shell word
        assert re.search("[A-Z]", v)
        assert re.search("[a-z]", v)
        assert re.search("[0-9]", v)
        assert re.search(r"[-_.]", v)


def test_require_each_holds_even_when_a_class_is_tiny() -> None:
    for _ in range(300):
        v = g.password(8, classes=("lower", "digits"), exclude="123456789").secret.reveal_text()
        assert "0" in v  # the only digit left must appear every time
        assert not set(v) & set("123456789")


def test_exclusions_and_ambiguous_characters_never_appear() -> None:
    seen: set[str] = set()
    for _ in range(200):
        v = g.password(64, avoid_ambiguous=True, exclude="xyz").secret.reveal_text()
        seen |= set(v)
    assert not seen & set(g.AMBIGUOUS + "xyz")
    assert "a" in seen
    assert "9" in seen


def test_all_symbols_is_an_explicit_choice() -> None:
    v = "".join(g.password(64, symbols=g.ALL_SYMBOLS).secret.reveal_text() for _ in range(20))
    assert set(v) & set("$&;|{}#@/")


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"length": 7}, "length"),
        ({"classes": ("upper", "emoji")}, "unknown character class"),
        ({"classes": ()}, "no character class"),
        ({"classes": ("digits",), "exclude": "0123456789"}, "every character"),
        ({"symbols": "ab"}, "punctuation"),
    ],
)
def test_bad_requests_are_invalid_input(kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(InvalidInput, match=msg):
        g.password(**kwargs)  # type: ignore[arg-type]


def test_entropy_is_exact_for_required_classes() -> None:
    # Two classes of 1 and 1 character, length 2: admissible strings "ab", "ba" → 1 bit.
    assert g._class_entropy((1, 1), 2, True) == pytest.approx(1.0)
    # Without the requirement: 2^2 strings → 2 bits.
    assert g._class_entropy((1, 1), 2, False) == pytest.approx(2.0)
    r = g.password(24)
    naive = 24 * math.log2(26 + 26 + 10 + 3)
    assert naive - 1 < r.entropy_bits < naive  # the requirement costs a little, not nothing


def test_tokens_hex_and_base64url() -> None:
    h = g.token(16, "hex")
    assert re.fullmatch("[0-9a-f]{32}", h.secret.reveal_text())
    assert h.entropy_bits == 128
    b = g.token(32, "base64url")
    text = b.secret.reveal_text()
    assert re.fullmatch("[A-Za-z0-9_-]{43}", text)
    assert len(base64.urlsafe_b64decode(text + "=")) == 32
    with pytest.raises(InvalidInput):
        g.token(16, "base32")


def test_passphrase_words_come_from_the_bundled_eff_list() -> None:
    wl = g.wordlist()
    assert len(wl) == 7776
    assert wl[0] == "abacus"
    assert wl[-1] == "zoom"
    p = g.passphrase(6, separator=" ")
    words = p.secret.reveal_text().split(" ")
    assert len(words) == 6
    assert all(w in wl for w in words)
    assert p.entropy_bits == pytest.approx(6 * math.log2(7776))
    assert g.passphrase(5, capitalize=True).secret.reveal_text()[0].isupper()
    with pytest.raises(InvalidInput):
        g.passphrase(3)


def test_generated_repr_never_shows_the_value() -> None:
    r = g.password()
    assert r.secret.reveal_text() not in repr(r)
    assert "redacted" in repr(r)
