"""The agent's wire format and socket location. Standard library only (the fast path).

Frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object.
Every request and reply carries ``"v": VERSION``; a peer speaking another version gets an
error reply naming the version it speaks, never a guess. Byte layout: docs/format.md.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums and selectors cost start-up time on the fast path
import json
import os
import stat
import struct
from typing import TYPE_CHECKING

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


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps({"v": VERSION, **message}, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """One frame's body as a dict; hostile input becomes ProtocolError, nothing else."""
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
    return decode(recv_exact(sock, length))
