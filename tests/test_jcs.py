"""credvault's own RFC 8785 canonicalizer against the ``rfc8785`` package (a test-only
oracle): same bytes for every value credvault may sign, including non-ASCII and control
characters and names whose UTF-16 order differs from their code-point order."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from credvault.jcs import canonical

_text = st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=12
)  # any code point but lone surrogates
_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _text
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(_values)
def test_same_bytes_as_the_oracle(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": "é", "\U0001f600": 0, "\ufb01": 1},  # astral vs BMP: UTF-16 order
        {"reason": 'Kund\u00e4nd "hält" \\ \u2028 \x7f \x00 \x1f \t\n'},
        [None, True, False, 0, -1, 2**53 - 1],
    ],
)
def test_known_cases(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)
    assert json.loads(canonical(value)) == value


@pytest.mark.parametrize("bad", [1.5, 2**53, {1: "x"}, b"raw", "\ud800"])
def test_refuses_what_it_cannot_sign_exactly(bad: object) -> None:
    with pytest.raises(ValueError, match="JCS"):
        canonical(bad)
