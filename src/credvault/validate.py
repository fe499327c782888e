"""Input validation: names, references, addresses, ports, sizes and dates.

Every failure is :class:`InvalidInput` with a message that names the field but never echoes
a secret value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from credvault.errors import InvalidInput
from credvault.secret import Secret

MAX_SECRET = 1024 * 1024  # 1 MiB
MAX_TEXT = 64 * 1024
MAX_NAME = 64
# Explicit ASCII classes: with IGNORECASE, [a-z] would also match the Kelvin sign and
# dotless i, letting look-alike names in.
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_LABEL = re.compile(r"\A(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_ZONE = re.compile(r"\A[A-Za-z0-9._-]{1,32}\Z")
_NUMBER = re.compile(r"\A[0-9]{1,9}\Z")
# C0 (but tab and newline), DEL and C1: the C1 range holds 8-bit terminal escapes.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KINDS = ("password", "ssh-key", "token", "other")


def name(value: object, what: str = "name") -> str:
    """Engagement, credential, system, client and member names: 1–64 of [A-Za-z0-9._-]."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        shown = (
            value
            if isinstance(value, str) and len(value) <= MAX_NAME and not _CONTROL.search(value)
            else "<invalid>"
        )
        raise InvalidInput(
            f"invalid {what} {shown!r}: use 1-{MAX_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def ref(value: object) -> tuple[str, str]:
    """``ENGAGEMENT/NAME`` → (engagement, name)."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise InvalidInput("invalid reference: expected ENGAGEMENT/NAME")
    eng, item = value.split("/")
    return name(eng, "engagement name"), name(item, "item name")


def address(value: object) -> str:
    """An IPv4 or IPv6 address, or a DNS name (RFC 1123 labels)."""
    v = value.strip() if isinstance(value, str) else ""
    if not v or len(v) > 253 or not v.isascii() or any(c.isspace() for c in v):
        raise InvalidInput("invalid address: expected an IPv4 or IPv6 address or a DNS name")
    if _CONTROL_LINE.search(v):
        raise InvalidInput("invalid address: expected an IPv4 or IPv6 address or a DNS name")
    import ipaddress

    ip = v.strip("[]")
    zone = ip.partition("%")[2]
    if "%" in ip and not _ZONE.match(zone):
        raise InvalidInput("invalid address: bad IPv6 zone id")
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        pass
    labels = v.rstrip(".").split(".")
    if all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit():
        return v.rstrip(".").lower()
    raise InvalidInput("invalid address: expected an IPv4 or IPv6 address or a DNS name")


def port(value: int | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and not _NUMBER.match(value):  # int() takes "2_2" and "２２"
        raise InvalidInput("invalid port: expected a number from 1 to 65535")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("invalid port: expected a number from 1 to 65535") from None
    if not 1 <= n <= 65535:
        raise InvalidInput("invalid port: expected a number from 1 to 65535")
    return n


def text(
    value: str | None, what: str, *, max_len: int = MAX_TEXT, multiline: bool = True
) -> str | None:
    """Free text (notes, details, URLs, usernames): bounded, no control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"invalid {what}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # undecodable bytes from argv arrive as lone surrogates
        raise InvalidInput(f"{what} is not valid UTF-8") from None
    if size > max_len:
        raise InvalidInput(f"{what} is too long (limit {max_len} bytes)")
    bad = _CONTROL if multiline else _CONTROL_LINE
    if bad.search(value):
        raise InvalidInput(f"{what} contains control characters")
    return value


def url(value: str | None) -> str | None:
    """A credential's login URL: bounded text on one line, and never carrying a password
    (``https://user:pw@host``): the password belongs in the secret, not in a field shown by
    ``ls`` and exports."""
    v = text(value, "URL", max_len=4096, multiline=False)
    if v is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(v)
        has_password = parts.password is not None
    except ValueError:
        raise InvalidInput("invalid URL") from None
    if has_password:
        raise InvalidInput(
            "the URL carries a password (user:password@host): store the password as the "
            "secret and give the URL without it"
        )
    return v


def secret(value: Secret) -> Secret:
    """Size limits only: a secret may hold any bytes. Takes a :class:`Secret` so that the
    value never sits in a frame a traceback could print."""
    if not value:
        raise InvalidInput("the secret is empty")
    if len(value) > MAX_SECRET:
        raise InvalidInput(f"the secret is too large (limit {MAX_SECRET} bytes)")
    return value


def kind(value: str) -> str:
    if value not in KINDS:
        raise InvalidInput(f"invalid kind: expected one of {', '.join(KINDS)}")
    return value


def days(value: int | str, what: str) -> int:
    if isinstance(value, str) and not _NUMBER.match(value):
        raise InvalidInput(f"invalid {what}: expected a whole number of days")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"invalid {what}: expected a whole number of days") from None
    if not 0 <= n <= 36500:
        raise InvalidInput(f"invalid {what}: expected 0 to 36500 days")
    return n


def when(value: object, what: str = "date") -> datetime:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` in UTC (the end of the day for a bare date)."""
    if not isinstance(value, str) or _CONTROL.search(value) or len(value) > 32:
        raise InvalidInput(f"invalid {what}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    for fmt, end_of_day in (
        ("%Y-%m-%d", True),
        ("%Y-%m-%dT%H:%M", False),
        ("%Y-%m-%dT%H:%M:%S", False),
    ):
        try:
            dt = datetime.strptime(str(value), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        if end_of_day:
            dt = dt.replace(hour=23, minute=59, second=59)
        return dt
    raise InvalidInput(f"invalid {what}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


_ACTION = re.compile(r"\A[a-z][a-z-]{0,31}\Z")


def is_action(value: str) -> bool:
    """Audit action names are lower-case words joined by '-' (``get``, ``member-add``)."""
    return bool(_ACTION.match(value))


def reason(value: str | None) -> str | None:
    v = text(value, "reason", max_len=200, multiline=False)
    if v is not None and not v.strip():
        raise InvalidInput("the reason is empty")
    return v
