"""The agent's wire format and socket location. Standard library only (the fast path).

Frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object.
Every request and reply carries ``"v": VERSION``; a peer speaking another version gets an
error reply naming the version it speaks, never a guess. Byte layout: docs/format.md.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums and selectors cost start-up time on the fast path
import os
import stat
import struct

TYPE_CHECKING = False  # not `typing`: it costs the fast path several ms (mypy reads it as True)

if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Socket: TypeAlias = _socket.socket

VERSION = 1
HEADER = struct.Struct(">I")
MAX_REQUEST = 2 * 1024 * 1024  # a 1 MiB secret in base64, with room for argv
MAX_REPLY = 16 * 1024 * 1024
SOCKET_NAME = "agent.sock"


class ProtocolError(Exception):
    """The peer broke the protocol (too large, not JSON, wrong version); message is safe."""


def socket_dir() -> str:
    """``$XDG_RUNTIME_DIR/credvault``; without it ``/tmp/credvault-<uid>`` (checked as ours)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and base.startswith("/"):
        return f"{base.rstrip('/')}/credvault"
    return f"/tmp/credvault-{os.getuid()}"  # noqa: S108 - documented fallback, checked


def socket_path() -> str:
    return f"{socket_dir()}/{SOCKET_NAME}"


def check_private_dir(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a safe socket directory (None: it is): ours, 0700, no symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user"
    if st.st_mode & 0o077:
        return f"{path} is accessible to other users (mode {st.st_mode & 0o777:o})"
    return None


def peer_uid(sock: Socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED: pid, uid, gid as three ints)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def dumps(value: object) -> str:
    """Compact JSON of dicts, lists, strings, ints, bools and None, as ``json.dumps`` would
    read it back; without importing ``json`` (its regular expressions cost the fast path).
    Control characters and lone surrogates are escaped; other text is kept as is (UTF-8)."""
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Escapes(dict[int, str]):
    """str.translate table: built once per character, on demand."""

    def __missing__(self, code: int) -> str:
        if code < 0x20 or 0xD800 <= code <= 0xDFFF:
            out = f"\\u{code:04x}"
        elif code == 0x22:
            out = '\\"'
        elif code == 0x5C:
            out = "\\\\"
        else:
            out = chr(code)
        self[code] = out
        return out


_ESCAPES = _Escapes()


def encode(message: dict[str, Any]) -> bytes:
    """A frame (the client's encoder: no ``json`` import)."""
    body = dumps({"v": VERSION, **message}).encode("utf-8")
    return HEADER.pack(len(body)) + body


def encode_json(message: dict[str, Any]) -> bytes:
    """A frame, through ``json`` (the agent's replies: ASCII, fast on large outputs)."""
    import json

    body = json.dumps({"v": VERSION, **message}, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def loads(text: str) -> Any:
    """Parse JSON objects, arrays, strings, integers, true, false and null without ``json``.

    Anything else (floats, bad syntax) raises ValueError; the caller may then try ``json``.
    """
    value, end = _value(text, _skip(text, 0))
    if _skip(text, end) != len(text):
        raise ValueError("trailing data")
    return value


def _skip(t: str, i: int) -> int:
    while i < len(t) and t[i] in " \t\r\n":
        i += 1
    return i


def _value(t: str, i: int) -> tuple[Any, int]:
    c = t[i]
    if c == '"':
        return _string(t, i + 1)
    if c == "{":
        out: dict[str, Any] = {}
        i = _skip(t, i + 1)
        if t[i] == "}":
            return out, i + 1
        while True:
            if t[i] != '"':
                raise ValueError("key")
            key, i = _string(t, i + 1)
            i = _skip(t, i)
            if t[i] != ":":
                raise ValueError("colon")
            out[key], i = _value(t, _skip(t, i + 1))
            i = _skip(t, i)
            if t[i] == "}":
                return out, i + 1
            if t[i] != ",":
                raise ValueError("comma")
            i = _skip(t, i + 1)
    if c == "[":
        items: list[Any] = []
        i = _skip(t, i + 1)
        if t[i] == "]":
            return items, i + 1
        while True:
            item, i = _value(t, i)
            items.append(item)
            i = _skip(t, i)
            if t[i] == "]":
                return items, i + 1
            if t[i] != ",":
                raise ValueError("comma")
            i = _skip(t, i + 1)
    for word, val in (("true", True), ("false", False), ("null", None)):
        if t.startswith(word, i):
            return val, i + len(word)
    j = i + 1 if c == "-" else i
    start = j
    while j < len(t) and t[j] in "0123456789":
        j += 1
    if j == start or (t[start] == "0" and j > start + 1) or (j < len(t) and t[j] in ".eE"):
        raise ValueError("number")
    return int(t[i:j]), j


def _string(t: str, i: int) -> tuple[str, int]:
    parts: list[str] = []
    while True:
        j = t.find('"', i)
        k = t.find("\\", i, j if j >= 0 else len(t))
        if j < 0:
            raise ValueError("unterminated string")
        raw = t[i:j] if k < 0 else t[i:k]
        if not raw.isprintable():  # control characters (or exotic text): let json decide
            raise ValueError("unprintable character in string")
        parts.append(raw)
        if k < 0:
            break
        e = t[k + 1]
        if e == "u":
            parts.append(chr(int(t[k + 2 : k + 6], 16)))
            i = k + 6
        else:
            parts.append(_SIMPLE[e])
            i = k + 2
    text = "".join(parts)
    if any("\ud800" <= ch <= "\udfff" for ch in text):  # surrogate pairs from \u escapes
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    return text, j + 1


def decode(body: bytes) -> dict[str, Any]:
    """One frame's body as a dict; hostile input becomes ProtocolError, nothing else."""
    import json  # the server and slow paths; the fast client reads replies with loads_reply

    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("request is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("request is not a JSON object")
    if data.get("v") != VERSION or isinstance(data.get("v"), bool):
        raise ProtocolError(f"unsupported protocol version (this agent speaks {VERSION})")
    return data


def recv_exact(sock: Socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionResetError("the agent closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: Socket, limit: int) -> dict[str, Any]:
    """Read one frame (blocking, under the socket's timeout)."""
    (length,) = HEADER.unpack(recv_exact(sock, HEADER.size))
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    body = recv_exact(sock, length)
    try:
        data = loads(body.decode("utf-8"))
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, RecursionError):
        return decode(body)  # beyond the small parser: the real one decides
    if not isinstance(data, dict) or data.get("v") != VERSION or data.get("v") is True:
        return decode(body)
    return data
