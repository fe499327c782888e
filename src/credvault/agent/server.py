"""The agent: holds members' unlocked keys in memory and runs commands for their clients.

One agent per user, listening on ``$XDG_RUNTIME_DIR/credvault/agent.sock`` (see
``protocol.socket_dir``). It never sends key material: a client sends a command line, the
agent parses it with the CLI's own parser and runs the CLI's own command on a vault it holds
open for that member, and sends back exit code, stdout and stderr. So the output, the exit
codes and every audit entry are exactly those of the command line without the agent, under
the member's name; the library commits the audit entry before the command returns, and the
reply is sent only after that.

Design choices (docs/security.md, "The agent"):

* ``Agent`` holds the state and answers requests, with no socket and an injected clock
  (tests move time); ``Server`` is a single-threaded ``selectors`` loop around it, so a
  hostile client can stall only its own connection (deadlines close it) and a vault is
  never used by two requests at once.
* Keys live for at most the unlock's lifetime (default 8 h) and are dropped after an idle
  timeout; when the agent holds nothing more it exits.
* Between requests the agent holds no vault lock (``Vault.release``): ``member rm`` never
  waits for it. Before each request it checks the database file and the key-slot file; if the
  member's own slot changed (removed, passphrase changed, reset) it drops the keys.
* Peers are checked with ``SO_PEERCRED``: a process of another uid is refused whatever the
  file modes say.
* A PostgreSQL team vault's entry (keyed by its connection string as given) holds the
  member's team key-slot keys and one logged-in connection (``agent.team_entry``); it
  serves the commands above that a team vault offers, each on a fresh ``Team``, and logs in
  again when the connection dropped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import fcntl
import functools
import io
import os
import pwd
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from credvault.agent.protocol import (
    HEADER,
    MAX_REQUEST,
    VERSION,
    ProtocolError,
    check_private_dir,
    decode,
    encode_json,
    peer_uid,
    socket_dir,
)
from credvault.errors import AccessDenied, CredvaultError, IntegrityError, Locked, NotFound
from credvault.keyslots import KeySlots, MemberKeys, MemberSlot
from credvault.layout import is_team_target
from credvault.unlock import InMemory
from credvault.vault import Vault

if TYPE_CHECKING:
    from credvault.agent.team_entry import TeamHold

DEFAULT_LIFETIME = timedelta(hours=8)
DEFAULT_IDLE = timedelta(hours=1)
MAX_LIFETIME = timedelta(days=7)
EMPTY_GRACE = 60.0  # a freshly started agent waits this long for its first keys
CONN_IDLE = 30.0  # a connection that sends nothing for this long is closed
MAX_CONNECTIONS = 128
MAX_ARGV = 256
MAX_ARG = 8192
# Commands run for a client. Everything else (init, passwd, member, unlock, backup, files…)
# takes the normal path: it asks for passphrases, writes files or changes keys.
SERVED = frozenset(
    ["get", "ls", "put", "rm", "system", "engagement", "grant", "revoke", "audit", "info", "config"]
)
# Read commands whose audit entries may share one transaction (group commit).
BATCHED = frozenset(["get", "ls"])
CLIENT_ENV = frozenset(
    [
        "CREDVAULT_VAULT",
        "CREDVAULT_MEMBER",
        "CREDVAULT_IDENTITY",
        "XDG_DATA_HOME",
        "HOME",
        "LOGNAME",
        "USER",
        "LNAME",
        "USERNAME",
    ]
)

Reply = dict[str, Any]


def _error(kind: str, message: str) -> Reply:
    return {"ok": False, "error": kind, "message": message}


class _Borrowed:
    """The held vault as a command sees it: ``with open_vault(args) as v`` must not close it."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def __enter__(self) -> Vault:
        return self._vault

    def __exit__(self, *_exc: object) -> None:
        return None


class Entry:
    """One member's keys for one vault, with their lifetime."""

    def __init__(
        self,
        path: Path,
        keys: MemberKeys,
        slot: MemberSlot,
        *,
        now: float,
        lifetime: float,
        idle: float,
        until: str,
    ) -> None:
        self.path = path
        self.keys = keys
        self.slot = slot
        self.deadline = now + lifetime
        self.idle = idle
        self.last_used = now
        self.until = until
        self.vault: Vault | None = None
        self.slots_stat: tuple[int, int, int] | None = None
        self.team: TeamHold | None = None  # a team vault's entry (credvault.agent.team_entry)

    def __repr__(self) -> str:
        return f"Entry({self.label!r}, member={self.keys.name!r})"

    @property
    def label(self) -> str:
        """The vault as clients name it: a directory's real path, a team's connection string."""
        return self.team.target if self.team is not None else str(self.path)

    def expired(self, now: float) -> bool:
        return now >= self.deadline or (self.idle > 0 and now >= self.last_used + self.idle)

    def close(self) -> None:
        if self.vault is not None:
            with contextlib.suppress(Exception):
                self.vault.close()
            self.vault = None
        if self.team is not None:
            self.team.close()


def _slots_stat(path: Path) -> tuple[int, int, int]:
    st = (path / "keyslots.json").stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Agent:
    """The agent's state and request handling (no sockets: tests call ``handle``)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.entries: dict[tuple[str, str], Entry] = {}
        self.stopping = False
        self.served = 0
        self.ever_held = False
        # Group commit: during handle_many, read commands of one entry share a transaction.
        self._round: dict[tuple[str, str], tuple[Vault, contextlib.ExitStack]] | None = None
        self._round_replies: list[tuple[int, tuple[str, str]]] = []
        self._index = 0

    # -- lifetime ---------------------------------------------------------------------------
    def expire(self) -> None:
        """Drop every entry past its lifetime or idle timeout."""
        now = self.clock()
        for key, entry in list(self.entries.items()):
            if entry.expired(now):
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            entry.close()
            del entry

    def drop_all(self) -> None:
        for key in list(self.entries):
            self._drop(key)

    def next_deadline(self) -> float | None:
        times = [
            min(e.deadline, e.last_used + e.idle) if e.idle > 0 else e.deadline
            for e in self.entries.values()
        ]
        return min(times) if times else None

    # -- requests ---------------------------------------------------------------------------
    def handle(self, request: dict[str, Any], uid: int) -> Reply:
        """Answer one decoded request. Never raises; never returns key material."""
        if uid != os.getuid():
            return _error("denied", "refused: the agent serves only its own user")
        self.expire()
        op = request.get("op")
        try:
            if op == "run":
                return self._run(request)
            if op == "status":
                return self._status()
            if op == "add":
                return self._add(request)
            if op == "lock":
                held = bool(self.entries)
                self.drop_all()
                self.stopping = True
                return {"ok": True, "held": held}
            return _error("bad-request", "unknown operation")
        except ProtocolError as e:
            return _error("bad-request", str(e))
        except CredvaultError as e:
            return _error("failed", str(e))
        except Exception as e:  # noqa: BLE001 - the agent answers, whatever the request
            return _error("failed", f"internal error ({type(e).__name__})")

    def handle_many(self, items: list[tuple[dict[str, Any], int]]) -> list[Reply]:
        """Answer requests that arrived together; ``get``/``ls`` of one member share one
        transaction (one fsync: group commit). Replies are returned only after it committed;
        if the commit fails, those replies become errors and hand nothing out."""
        if len(items) < 2:
            return [self.handle(request, uid) for request, uid in items]
        self._round, self._round_replies = {}, []
        replies: list[Reply] = []
        try:
            for i, (request, uid) in enumerate(items):
                self._index = i
                replies.append(self.handle(request, uid))
        finally:
            failed = self._end_round()
        for i, key in self._round_replies:
            if key in failed:
                replies[i] = _result(
                    1, io.BytesIO(), io.BytesIO(b"credvault: the audit entry could not be saved\n")
                )
        return replies

    def _end_round(self, only: tuple[str, str] | None = None) -> set[tuple[str, str]]:
        """Commit the round's open transactions (or just ``only``'s); the keys that failed."""
        failed: set[tuple[str, str]] = set()
        if self._round is None:
            return failed
        for key in [only] if only is not None else list(self._round):
            held = self._round.pop(key, None)
            if held is None:
                continue
            vault, stack = held
            try:
                stack.close()
            except Exception:  # noqa: BLE001 - reported as failed replies
                failed.add(key)
            with contextlib.suppress(Exception):
                vault.release()
        if only is None:
            self._round = None
        return failed

    def _status(self) -> Reply:
        now = self.clock()
        return {
            "ok": True,
            "pid": os.getpid(),
            "served": self.served,
            "entries": [
                {
                    "vault": e.label,
                    "member": e.keys.name,
                    "until": e.until,
                    "idle_left": (
                        None if e.idle <= 0 else max(0, round(e.last_used + e.idle - now))
                    ),
                }
                for e in self.entries.values()
            ],
        }

    def _add(self, request: dict[str, Any]) -> Reply:
        vault = _str(request, "vault")
        member = _str(request, "member")
        lifetime = _seconds(request, "ttl")
        idle = _seconds(request, "idle", allow_zero=True)
        try:
            raw = base64.b64decode(_str(request, "keys"), validate=True)
        except binascii.Error:
            raise ProtocolError("keys is not base64") from None
        if is_team_target(vault):
            return self._add_team(request, vault, member, raw, lifetime, idle)
        path = Path(os.path.realpath(vault))
        slots = KeySlots.read(path / "keyslots.json")
        keys = MemberKeys.from_bytes(raw, slots.vault_id)
        del raw
        if keys.name != member or member not in slots.members:
            raise ProtocolError("the keys are not this member's")
        now = self.clock()
        until = (self.wall() + timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = Entry(
            path,
            keys,
            slots.members[member],
            now=now,
            lifetime=lifetime,
            idle=min(idle, lifetime),
            until=until,
        )
        self._open(entry)  # proves the keys open the vault before keeping them
        assert entry.vault is not None
        entry.vault.release()
        self._drop((str(path), member))
        self.entries[(str(path), member)] = entry
        self.ever_held = True
        return {"ok": True, "until": until, "pid": os.getpid()}

    def _add_team(
        self,
        request: dict[str, Any],
        target: str,
        member: str,
        raw: bytes,
        lifetime: float,
        idle: float,
    ) -> Reply:
        """A team member's keys: checked against their key slot (the client names its file),
        then proved by logging in, before they are kept."""
        from credvault.agent.team_entry import SlotChanged, TeamHold, read_keys

        slot_path = Path(_str(request, "slot"))
        if not slot_path.is_absolute():
            raise ProtocolError("slot must be an absolute path")
        try:
            slot, keys = read_keys(slot_path, member, raw)
        except SlotChanged:
            raise ProtocolError("the keys are not this member's") from None
        finally:
            del raw
        now = self.clock()
        until = (self.wall() + timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = Entry(
            slot_path,
            keys,
            cast(MemberSlot, None),  # a team member's slot is entry.team.slot
            now=now,
            lifetime=lifetime,
            idle=min(idle, lifetime),
            until=until,
        )
        entry.team = TeamHold(target, slot_path, slot, keys)
        try:
            entry.team.team()  # proves the keys log in and the server is the slot's vault
        except BaseException:
            entry.close()
            raise
        self._drop((target, member))
        self.entries[(target, member)] = entry
        self.ever_held = True
        return {"ok": True, "until": until, "pid": os.getpid()}

    def _run_team(
        self, entry: Entry, target: tuple[str, str], args: argparse.Namespace, stdin: bytes | None
    ) -> Reply:
        """A served command for a team member: the CLI's own handler on a fresh Team over
        the held connection (every read the server's two-phase audited read; nothing kept
        between requests). Only the handlers a team vault serves (``TEAM_COMMANDS``): any
        other takes the normal path, which refuses it in one line. A connection lost during
        a ``get`` is made again and the ``get`` run once more (a read whose request was
        committed before the loss stays on the record); any other command is not repeated
        (it may have written): its error is the reply, and the next request logs in again."""
        from credvault import cli
        from credvault.agent.team_entry import SlotChanged
        from credvault.cli import commands

        hold = entry.team
        assert hold is not None
        if getattr(getattr(args, "func", None), "__name__", "") not in commands.TEAM_COMMANDS:
            return _error("fallback", "not served on a team vault")
        retry = args.command == "get"
        try:
            for attempt in (1, 2):
                try:
                    hold.check_slot()
                    team = hold.team()
                except (SlotChanged, NotFound, AccessDenied, Locked, IntegrityError):
                    self._drop(target)  # removed, passphrase changed, or another vault
                    return _error(
                        "fallback",
                        "your key slot changed or the vault refused the held keys: keys dropped",
                    )
                except CredvaultError as e:  # the server is down: keep the keys, say why
                    return _error("failed", str(e))
                commands.borrowed_vault = lambda team=team: cast(Vault, _Borrowed(team))
                with _captured(stdin) as (out, err):
                    try:
                        code: object = cli.dispatch(args)
                    except SystemExit as e:
                        code = e.code
                    except _StdinWanted:
                        return {"ok": False, "error": "need-stdin"}
                if retry and attempt == 1 and hold.broken():
                    continue  # the connection dropped under the get: once more
                break
            return _result(code, out, err)
        finally:
            commands.borrowed_vault = None
            entry.last_used = self.clock()
            self.served += 1

    def _open(self, entry: Entry) -> None:
        entry.slots_stat = _slots_stat(entry.path)
        slots = KeySlots.read(entry.path / "keyslots.json")
        if slots.members.get(entry.keys.name) != entry.slot:
            raise _KeysChanged
        entry.vault = Vault.open(entry.path, entry.keys.name, InMemory(entry.keys))

    def _acquire(self, entry: Entry) -> Vault:
        """The entry's vault, under the shared lock, current with the files on disk."""
        if entry.vault is not None:
            fresh = entry.vault.reacquire()
            if not fresh or _slots_stat(entry.path) != entry.slots_stat:
                entry.close()  # re-keyed or slots changed: open again, checking our slot
        if entry.vault is None:
            self._open(entry)
        assert entry.vault is not None
        return entry.vault

    def _run(self, request: dict[str, Any]) -> Reply:
        argv = request.get("argv")
        if (
            not isinstance(argv, list)
            or len(argv) > MAX_ARGV
            or not all(isinstance(a, str) and len(a) <= MAX_ARG and "\0" not in a for a in argv)
        ):
            raise ProtocolError("argv must be a list of strings")
        cwd = _str(request, "cwd")
        if not Path(cwd).is_absolute():
            raise ProtocolError("cwd must be an absolute path")
        env = request.get("env", {})
        if not isinstance(env, dict) or not all(
            k in CLIENT_ENV and isinstance(v, str) and "\0" not in v for k, v in env.items()
        ):
            raise ProtocolError("env holds unknown or non-string entries")
        stdin: bytes | None = None
        if "stdin" in request:
            try:
                stdin = base64.b64decode(_str(request, "stdin"), validate=True)
            except binascii.Error:
                raise ProtocolError("stdin is not base64") from None

        from credvault import cli
        from credvault.cli import commands

        with _captured(b"") as (out, err):
            try:
                args = _parse(argv)
            except SystemExit as e:  # usage error or --help: the same bytes as the CLI
                return _result(e.code, out, err)
        if args.command not in SERVED or getattr(args, "no_keyring", False):
            return _error("fallback", "not served by the agent")
        if args.command == "engagement" and getattr(args, "verb", None) == "shred":
            return _error("fallback", "asks for confirmation on the terminal")
        if getattr(args, "clip", False):
            return _error("fallback", "the clipboard is the client's, not the agent's")
        target = _target(args, env, cwd)
        entry = self.entries.get(target) if target is not None else None
        if entry is None:
            return _error("fallback", "not unlocked in the agent")
        assert target is not None
        if entry.team is not None:
            return self._run_team(entry, target, args, stdin)
        batched = self._round is not None and args.command in BATCHED
        if (
            self._round is not None
            and not batched
            and target in self._round
            and self._end_round(target)  # a write follows reads: they commit first
        ):
            return _error("failed", "the audit entry could not be saved")
        held = self._round.get(target) if self._round is not None else None
        if held is not None:
            vault = held[0]
        else:
            try:
                vault = self._acquire(entry)
            except (_KeysChanged, NotFound, AccessDenied, Locked, IntegrityError):
                self._drop(target)  # removed, reset, passphrase changed, or tampered with
                return _error(
                    "fallback",
                    "your key slot changed or the vault refused the held keys: keys dropped",
                )
            except CredvaultError as e:  # busy, disk full…: keep the keys, say why, fall back
                return _error("failed", str(e))
            if batched and self._round is not None:
                stack = contextlib.ExitStack()
                try:
                    stack.enter_context(vault.batch())
                except Exception:
                    vault.release()
                    raise
                self._round[target] = (vault, stack)
        try:
            commands.borrowed_vault = lambda: cast(Vault, _Borrowed(vault))
            with _captured(stdin) as (out, err):
                try:
                    code: object = cli.dispatch(args)
                except SystemExit as e:
                    code = e.code
                except _StdinWanted:  # the command reads stdin (put): ask the client for it
                    return {"ok": False, "error": "need-stdin"}
            if batched:
                self._round_replies.append((self._index, target))
            return _result(code, out, err)
        finally:
            commands.borrowed_vault = None
            entry.last_used = self.clock()
            self.served += 1
            if not batched:
                with contextlib.suppress(Exception):
                    vault.release()


class _KeysChanged(Exception):
    """The member's key slot is no longer the one the keys were unlocked from."""


def _str(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or len(value) > MAX_REQUEST:
        raise ProtocolError(f"{key} must be a string")
    return value


def _seconds(request: dict[str, Any], key: str, *, allow_zero: bool = False) -> float:
    value = request.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < (0 if allow_zero else 1)
        or value > MAX_LIFETIME.total_seconds()
    ):
        raise ProtocolError(f"{key} must be a number of seconds up to 7 days")
    return float(value)


def _result(code: object, out: io.BytesIO, err: io.BytesIO) -> Reply:
    if code is None:
        code = 0
    return {
        "ok": True,
        "code": code if isinstance(code, int) else 1,
        "stdout": base64.b64encode(out.getvalue()).decode(),
        "stderr": err.getvalue().decode("utf-8", errors="replace"),
    }


class _StdinWanted(BaseException):
    """The command read stdin, which the client has not sent (BaseException: the CLI's
    error mapping must not turn it into an exit code)."""


class _NoStdin(io.RawIOBase):
    """Standard input not sent yet: reading it asks the client for it (``need-stdin``)."""

    def readable(self) -> bool:
        return True

    def readinto(self, _buffer: Any) -> int:
        raise _StdinWanted


@contextlib.contextmanager
def _captured(stdin: bytes | None) -> Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """Run a command with its stdin, stdout and stderr in memory (one at a time: the loop
    is single-threaded, so swapping the process-wide streams is safe)."""
    out, err = io.BytesIO(), io.BytesIO()
    o = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    e = io.TextIOWrapper(err, encoding="utf-8", errors="replace", write_through=True)
    raw: io.RawIOBase | io.BytesIO = _NoStdin() if stdin is None else io.BytesIO(stdin)
    i = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = i, o, e
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for wrapper in (o, e, i):
            with contextlib.suppress(ValueError):
                wrapper.flush()
            wrapper.detach()


@functools.lru_cache(maxsize=32)
def _parser(command: str) -> argparse.ArgumentParser:
    from credvault import cli

    return cli.build_parser(command)


def _parse(argv: list[str]) -> argparse.Namespace:
    """As ``cli.parse``, with each command's parser built once (it costs ~1 ms a request)."""
    from credvault import cli

    if argv and argv[0] in cli.COMMANDS and argv[0] in SERVED:
        return _parser(argv[0]).parse_args(argv)
    return cli.parse(argv)


def _target(args: Any, env: dict[str, str], cwd: str) -> tuple[str, str] | None:
    """(vault real path, member) exactly as the CLI would resolve them in the client's
    environment; None when the client acts through a service identity file."""
    from credvault.validate import name as validate_name

    if args.vault:
        vault = args.vault
    elif env.get("CREDVAULT_VAULT"):
        vault = env["CREDVAULT_VAULT"]
    else:
        xdg = env.get("XDG_DATA_HOME")
        home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        vault = str(Path(xdg or Path(home) / ".local" / "share") / "credvault")
    if not is_team_target(vault):  # a team vault: its connection string, exactly as given
        vault = os.path.realpath(Path(cwd) / vault)
    if getattr(args, "as_member", None) is not None:
        member = validate_name(str(args.as_member), "member name")
    elif env.get("CREDVAULT_MEMBER"):
        member = env["CREDVAULT_MEMBER"]
    elif env.get("CREDVAULT_IDENTITY"):
        return None
    else:
        member = next(
            (env[k] for k in ("LOGNAME", "USER", "LNAME", "USERNAME") if env.get(k)),
            pwd.getpwuid(os.getuid()).pw_name,
        )
    return (vault, member)


# -- the socket loop --------------------------------------------------------------------------
class _Conn:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.deadline = now + CONN_IDLE
        self.closing = False


class AlreadyRunning(Exception):
    """Another agent of this user holds the lock file."""


class Server:
    """A single-threaded loop serving an ``Agent`` on a Unix socket."""

    def __init__(
        self,
        agent: Agent,
        listener: socket.socket,
        *,
        path: Path | None = None,
        lock_fd: int | None = None,
        empty_grace: float = EMPTY_GRACE,
    ) -> None:
        self.agent = agent
        self.listener = listener
        self.path = path
        self.lock_fd = lock_fd
        self.started = time.monotonic()
        self.empty_grace = empty_grace
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self._pending: list[tuple[_Conn, dict[str, Any], int]] = []
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, None)

    def _done(self) -> bool:
        a = self.agent
        if a.stopping:
            return True
        if a.entries:
            return False
        return a.ever_held or time.monotonic() - self.started > self.empty_grace

    def serve(self) -> None:
        try:
            while not self._done():
                timeout = 1.0
                deadline = self.agent.next_deadline()
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - self.agent.clock()))
                if self._pending:
                    timeout = 0.0
                for key, events in self.sel.select(timeout):
                    if key.data is None:
                        self._accept()
                    else:
                        self._service(cast(_Conn, key.data), events)
                if self._pending:
                    pending, self._pending = self._pending, []
                    replies = self.agent.handle_many([(r, u) for _, r, u in pending])
                    for (conn, _, _), reply in zip(pending, replies, strict=True):
                        if conn.sock.fileno() >= 0:
                            self._reply(conn, reply)
                    for conn, _, _ in pending:  # pipelined requests: their turn next round
                        if conn.inbuf and conn.sock.fileno() >= 0:
                            self._frames(conn)
                self.agent.expire()
                now = time.monotonic()
                for conn in list(self.conns.values()):
                    if now > conn.deadline:
                        self._close(conn)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.agent.drop_all()
        for conn in list(self.conns.values()):
            self._close(conn)
        with contextlib.suppress(Exception):
            self.sel.unregister(self.listener)
        self.listener.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                return  # out of descriptors: refuse by not accepting
            raise
        try:
            uid = peer_uid(sock)
        except OSError:
            sock.close()
            return
        if uid != os.getuid() or len(self.conns) >= MAX_CONNECTIONS:
            # Another user's process (even if the modes were loosened), or too many: one
            # error frame, best effort, without reading anything it sent.
            why = (
                "refused: the agent serves only its own user"
                if uid != os.getuid()
                else "refused: too many connections"
            )
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                sock.send(encode_json(_error("denied", why)))
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock, time.monotonic())
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(Exception):
            self.sel.unregister(conn.sock)
        conn.sock.close()

    def _service(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close(conn)
                return
            if data is not None:
                if not data:
                    self._close(conn)
                    return
                conn.inbuf += data
                conn.deadline = time.monotonic() + CONN_IDLE
                self._frames(conn)
        if events & selectors.EVENT_WRITE or conn.outbuf:
            self._flush(conn)

    def _frames(self, conn: _Conn) -> None:
        while not conn.closing and len(conn.inbuf) >= HEADER.size:
            (length,) = HEADER.unpack_from(conn.inbuf)
            if length > MAX_REQUEST:
                conn.closing = True  # answer, then close without reading the rest
                conn.inbuf.clear()
                self._reply(conn, _error("too-large", f"request over {MAX_REQUEST} bytes"))
                return
            if len(conn.inbuf) < HEADER.size + length:
                return
            body = bytes(conn.inbuf[HEADER.size : HEADER.size + length])
            del conn.inbuf[: HEADER.size + length]
            try:
                request = decode(body)
            except ProtocolError as e:
                conn.closing = True
                self._reply(conn, _error("bad-request", str(e)))
                return
            try:
                uid = peer_uid(conn.sock)
            except OSError:
                uid = -1
            self._pending.append((conn, request, uid))  # answered after this round
            if len(conn.inbuf) >= HEADER.size:
                return  # one request per connection per round: the rest waits its turn

    def _reply(self, conn: _Conn, reply: Reply) -> None:
        conn.outbuf += encode_json(reply)
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.outbuf:
            try:
                n = conn.sock.send(conn.outbuf)
                del conn.outbuf[:n]
                conn.deadline = time.monotonic() + CONN_IDLE
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(conn)
                return
        if conn.outbuf:
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        elif conn.closing:
            self._close(conn)
        else:
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)


def bind(directory: Path | None = None) -> tuple[socket.socket, Path, int]:
    """Create the socket directory (0700) and a listening socket (0600) in it.

    The lock file makes one agent per user; the socket is bound under a temporary name and
    renamed into place once it listens, so a client that is refused knows nobody listens.
    """
    d = Path(directory) if directory is not None else Path(socket_dir())
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    problem = check_private_dir(d)
    if problem is not None:
        raise CredvaultError(f"refusing to start the agent: {problem}")
    lock_fd = os.open(d / "agent.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise AlreadyRunning from None
    path = d / "agent.sock"
    tmp = d / f".agent.{os.getpid()}.sock"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(tmp))
        tmp.chmod(0o600)
        s.listen(MAX_CONNECTIONS)
        os.replace(tmp, path)
    except BaseException:
        s.close()
        os.close(lock_fd)
        raise
    return s, path, lock_fd


def _systemd_listener() -> socket.socket | None:
    """The socket passed by systemd socket activation (LISTEN_FDS), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=3)


def run() -> int:
    """``credvault agent``: serve until locked, expired or signalled. Exit 0 when done."""
    os.umask(0o077)
    agent = Agent()

    def stop(_signum: int, _frame: object) -> None:
        agent.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    activated = _systemd_listener()
    if activated is not None:
        server = Server(agent, activated)
    else:
        try:
            listener, path, lock_fd = bind()
        except AlreadyRunning:
            sys.stderr.write("credvault: an agent is already running for this user\n")
            return 1
        server = Server(agent, listener, path=path, lock_fd=lock_fd)
    server.serve()
    return 0


__all__ = ["VERSION", "Agent", "AlreadyRunning", "Server", "bind", "run"]

if __name__ == "__main__":  # `credvault agent` execs this
    sys.exit(run())
