"""RFC 8785 JSON Canonicalization Scheme (JCS) for the values credvault signs.

Receipts are signed over these bytes so that anyone can recompute them without credvault:
members sorted by the UTF-16 code units of their names, no whitespace, strings as UTF-8
with only ``"``, ``\\`` and the C0 controls escaped (``\\b \\t \\n \\f \\r``, else
``\\u00xx`` in lower-case hex), integers in plain decimal. Floats are refused rather than
formatted: nothing credvault signs holds one, and ECMAScript number formatting is the
part of JCS most easily got wrong. Lone surrogates are refused (not valid UTF-8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
# JSON numbers that are exactly representable as an IEEE double (JCS, section 3.2.2.3).
_MAX_SAFE = 2**53 - 1


def canonical(value: object) -> bytes:
    """The JCS serialisation of ``value`` as UTF-8 bytes."""
    out: list[str] = []
    _emit(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("JCS: a string holds a lone surrogate") from None


def _string(s: str) -> str:
    parts = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            parts.append(esc)
        elif ch < " ":
            parts.append(f"\\u{ord(ch):04x}")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _emit(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE:
            raise ValueError("JCS: integer beyond 2**53 - 1 cannot be represented")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise ValueError("JCS: floating-point numbers are not used in signed data")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in sorted(value, key=_key_order):
            if not first:
                out.append(",")
            first = False
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise ValueError(f"JCS: cannot serialise {type(value).__name__}")


def _key_order(key: object) -> bytes:
    if not isinstance(key, str):
        raise ValueError("JCS: object member names must be strings")
    return _utf16_key(key)
