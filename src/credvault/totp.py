"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP), from a stored seed.

A TOTP seed is stored as an ordinary credential whose secret is an ``otpauth://totp/…`` URI
(the form QR codes carry). A bare base32 seed (RFC 4648, what portals show under "can't
scan?") is turned into such a URI by :func:`to_uri` before it is stored (``put --totp``), so a
stored value says by itself that it is a seed and with which parameters. Keeping it a
credential means no new schema, no new kind and no new envelope field: the seed gets the same
envelope, AAD binding, audit and shredding as any secret. docs/format.md has the reasons.

Only the standard library is used; the seed stays inside :class:`Secret` until the HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from credvault.errors import InvalidInput
from credvault.secret import Secret

__all__ = [
    "ALGORITHMS",
    "TotpParams",
    "code",
    "hotp",
    "parse",
    "parse_stored",
    "seconds_left",
    "to_uri",
]

ALGORITHMS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
DEFAULT_PERIOD = 30
DEFAULT_DIGITS = 6
_BAD_SEED = (
    "invalid TOTP seed: expected an otpauth://totp/ URI or a base32 secret "
    "(letters A-Z and digits 2-7)"
)


class TotpParams(NamedTuple):
    """A parsed seed: the key (redacted in ``repr``) and RFC 6238's parameters."""

    key: Secret
    algorithm: str = "SHA1"
    digits: int = DEFAULT_DIGITS
    period: int = DEFAULT_PERIOD
    label: str | None = None


def _base32(text: str) -> Secret:
    """Decode a base32 seed as portals print it: any case, spaces/dashes, padding optional."""
    cleaned = "".join(ch for ch in text if ch not in " -\t").upper().rstrip("=")
    if not cleaned or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in cleaned):
        raise InvalidInput(_BAD_SEED)
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        key = base64.b32decode(padded)
    except ValueError:  # binascii.Error: an impossible length such as 1, 3 or 6 characters
        raise InvalidInput(_BAD_SEED) from None
    if len(key) < 10:  # RFC 4226 §4: at least 128 bits; 80 is what real portals hand out
        raise InvalidInput("invalid TOTP seed: shorter than 80 bits")
    return Secret(key)


def parse(value: Secret | bytes | str) -> TotpParams:
    """Parse a stored seed (URI or base32). Errors never quote the value.

    The parsing frames hold the seed as plain text; an error is raised again from here, after
    the ``except`` block has dropped them, so no traceback carries those frames' locals.
    """
    seed = value if isinstance(value, Secret) else Secret(value)
    del value
    message = ""
    try:
        return _parse(seed)
    except InvalidInput as e:
        message = str(e)
    raise InvalidInput(message)


def _parse(value: Secret) -> TotpParams:
    raw = value.reveal()
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput(_BAD_SEED) from None
    if not text.lower().startswith("otpauth:"):
        return TotpParams(_base32(text))
    parts = urlsplit(text)
    if parts.netloc.lower() != "totp":
        raise InvalidInput("unsupported otpauth URI: only otpauth://totp/ (time-based) codes")
    q = {k.lower(): v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if "secret" not in q:
        raise InvalidInput("invalid otpauth URI: no secret= parameter")
    algorithm = q.get("algorithm", "SHA1").upper().replace("-", "")
    if algorithm not in ALGORITHMS:
        raise InvalidInput("unsupported TOTP algorithm: expected SHA1, SHA256 or SHA512")
    try:
        digits = int(q.get("digits", DEFAULT_DIGITS))
        period = int(q.get("period", DEFAULT_PERIOD))
    except ValueError:
        raise InvalidInput("invalid otpauth URI: digits and period must be numbers") from None
    if not 6 <= digits <= 8:
        raise InvalidInput("unsupported TOTP digits: expected 6, 7 or 8")
    if not 1 <= period <= 86400:
        raise InvalidInput("invalid TOTP period: expected 1 to 86400 seconds")
    label = unquote(parts.path.lstrip("/")) or None
    return TotpParams(_base32(q["secret"]), algorithm, digits, period, label)


def parse_stored(value: Secret) -> TotpParams:
    """A stored seed: only an ``otpauth://totp/`` URI counts (a password is never a seed)."""
    if not value.reveal()[:10].lower().startswith(b"otpauth://"):
        raise InvalidInput("holds no TOTP seed (store one with `credvault put --totp`)")
    return parse(value)


def to_uri(value: Secret | bytes | str, label: str) -> Secret:
    """A seed as typed (URI or base32) in the canonical stored form, checked by parsing it."""
    from urllib.parse import quote

    p = parse(value)
    del value
    return Secret(
        f"otpauth://totp/{quote(p.label or label, safe=':@')}"
        f"?secret={base64.b32encode(p.key.reveal()).decode().rstrip('=')}"
        f"&algorithm={p.algorithm}&digits={p.digits}&period={p.period}"
    )


def hotp(key: Secret, counter: int, *, digits: int = 6, algorithm: str = "SHA1") -> str:
    """RFC 4226 HOTP with dynamic truncation, for ``digits`` of 6 to 8."""
    mac = hmac.new(key.reveal(), struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def code(params: TotpParams, at: float | None = None) -> str:
    """The TOTP code at Unix time ``at`` (default now): RFC 6238 with T0 = 0."""
    t = time.time() if at is None else at
    return hotp(
        params.key, int(t) // params.period, digits=params.digits, algorithm=params.algorithm
    )


def seconds_left(params: TotpParams, at: float | None = None) -> int:
    """How long the current code stays valid (shown beside it, as authenticator apps do)."""
    t = time.time() if at is None else at
    return params.period - int(t) % params.period
