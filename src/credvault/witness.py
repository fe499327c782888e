"""A member's witness of how far a vault has gone: rollback, fork and silent loss detection.

An insider can replace the whole vault directory with an older copy, delete membership-log
links or audit entries, or lose committed transactions to a damaged WAL (SQLite ends the log
at the first bad frame). Inside the vault every one of those is self-consistent. So each
member's client keeps, *outside* the vault, in its own XDG state directory, the latest
positions it has seen of every hash-linked chain in the vault (by name: ``audit`` for the
audit trail, ``log:<engagement uid>`` for a membership log; which chains there are is the
vault's business, see :mod:`credvault.witnessing`). Opening a vault that is behind a
witnessed position, or differs at it, is tampering (exit 6) and names what is missing; a
deliberate restore is accepted with an audited command that resets the witness.

The file is MACed under a key derived from the member's own private signing key, so an
insider who can write the member's files but does not hold that key cannot forge "all is
well"; they can delete it (the next open then starts afresh).

Every read appends one audit entry, so the audit chain's position moves on every ``get``.
Rewriting the whole (MACed JSON) file for that cost more than the rest of a read; instead
the audit position is appended to a *journal* beside it: one fixed-size MACed record per
commit, written with ``O_APPEND`` under the shared lock, folded into the file (and the
journal emptied) under the exclusive lock when it grows long or another chain moves. The
witness is the file advanced by the journal's highest record that verifies.

This module is pure apart from reading and writing its files (and its lock); the vault
decides when to check and when to advance. Format: docs/format.md §18.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.errors import IntegrityError
from credvault.files import FILE_MODE, atomic_write, make_private_dir

FORMAT = "credvault-witness/1"
EPOCH = 16  # bytes of a journal epoch
MAX_SIZE = 4 * 1024 * 1024
JOURNAL_CHAIN = "audit"  # the one chain the journal records (it moves on every read)
JOURNAL_HASH = 32  # an audit entry's chain MAC (HMAC-SHA256)
RECORD = 8 + JOURNAL_HASH + 32  # seq, hash, MAC
JOURNAL_FOLD = 256 * RECORD  # an appender folds the journal into the file from this size
JOURNAL_MAX = 4096 * RECORD  # a reader looks at no more than this (the rest: not there)
PAD = 4096  # a slot file is padded to a multiple of this, so most updates fit in place
CHAIN_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}(:[0-9a-f]{1,64})?")
ACCEPT_HINT = "if the vault was restored on purpose, run 'credvault witness accept'"


class Mark(NamedTuple):
    """A witnessed position: a sequence number and the hash or MAC found there."""

    seq: int
    hash: bytes


def _none(_seq: int) -> bytes | None:
    return None


class Chain(NamedTuple):
    """One hash-linked chain as the vault holds it now.

    ``head`` is its last position (None: empty); ``at(seq)`` the hash at an earlier
    position, or None where the vault no longer keeps it (pruned): a fork is then only
    seen at the head. ``gone`` says the chain ended legitimately (a purged engagement's log,
    as the audit trail records): the witness forgets it instead of calling it missing.
    """

    head: Mark | None
    at: Callable[[int], bytes | None] = _none
    gone: bool = False

    @classmethod
    def of_head(cls, head: Mark | None) -> Chain:
        """A chain that can only name its head (forks are then seen when the heads meet)."""
        if head is None:
            return cls(None)
        return cls(head, lambda seq: head.hash if seq == head.seq else None)


GONE = Chain(None, _none, True)


class Gap(NamedTuple):
    """What the vault lacks of one witnessed chain: ``kind`` is ``behind`` (positions after
    ``now`` up to ``seen`` are missing), ``forked`` (another hash at ``seen.seq``),
    ``missing`` (the whole chain) or ``unreadable`` (the witness file itself)."""

    chain: str
    kind: str
    seen: Mark | None
    now: Mark | None

    def describe(self) -> str:
        if self.kind == "unreadable":
            return f"the witness file does not verify ({self.chain})"
        assert self.seen is not None
        one, many, of = _names(self.chain)
        if self.kind == "missing":
            return f"{many}{of} are all missing (this client saw up to {self.seen.seq})"
        if self.kind == "forked":
            return (
                f"{one} {self.seen.seq}{of} differs from the one this client saw: the vault "
                "has forked (another copy of it was used?)"
            )
        start = 0 if of and self.chain != "revocations" else 1  # audit, list: from 1
        first = start if self.now is None else self.now.seq + 1
        span = (
            f"{one} {first} is" if first == self.seen.seq else f"{many} {first}–{self.seen.seq} are"
        )
        return (
            f"{span} missing{of}: the vault is older than this client last saw (restored "
            "from a backup? committed writes lost?)"
        )


def _names(chain: str) -> tuple[str, str, str]:
    """(one position, several, " of what"), for messages: ``audit entries 6–10``."""
    if chain == "audit":
        return "audit entry", "audit entries", ""
    if chain.startswith("log:"):
        return "link", "links", f" of the membership log of engagement {chain[4:]}"
    if chain == "revocations":  # a team vault's (team_log.py), numbered from 1
        return "version", "versions", " of the revocation list of member keys"
    return "position", "positions", f" of chain {chain}"


def refusal(member: str, gaps: list[Gap]) -> IntegrityError:
    """The one-line error for a vault behind or forked from ``member``'s witness."""
    return IntegrityError(
        f"rollback or fork detected for {member}: "
        + "; ".join(g.describe() for g in gaps)
        + f"; {ACCEPT_HINT}"
    )


class Witness(NamedTuple):
    """What one member has seen of one vault: chain name -> last position seen.

    ``epoch`` names the journal records that count with this file (their MAC covers it):
    a reset picks a new one, so records of positions from before it cannot come back."""

    vault_id: bytes
    member: str
    marks: Mapping[str, Mark]
    epoch: bytes = b""

    def gaps(self, chains: Mapping[str, Chain]) -> list[Gap]:
        """Where the vault (``chains``, as it is now) is behind or forked from this witness.

        A chain ahead of its mark is fine (others, or this member elsewhere, went on); a
        chain the witness never saw is fine (new).
        """
        out = []
        for name, seen in sorted(self.marks.items()):
            chain = chains.get(name)
            if chain is None:
                out.append(Gap(name, "missing", seen, None))
                continue
            if chain.gone:
                continue
            head = chain.head
            if head is None or head.seq < seen.seq:
                out.append(Gap(name, "behind", seen, head))
                continue
            found = head.hash if head.seq == seen.seq else chain.at(seen.seq)
            if found is not None and found != seen.hash:
                out.append(Gap(name, "forked", seen, head))
        return out

    def advanced(self, heads: Mapping[str, Mark]) -> Witness:
        """This witness moved forward to ``heads`` (never backward: a position behind the
        one already witnessed is one another process had already recorded past)."""
        new = dict(self.marks)
        for name, mark in heads.items():
            old = new.get(name)
            if old is None or mark.seq > old.seq:
                new[name] = mark
        return self._replace(marks=new)

    def without(self, names: set[str]) -> Witness:
        return self._replace(marks={n: m for n, m in self.marks.items() if n not in names})

    # -- file ------------------------------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        body = {
            "format": FORMAT,
            "vault_id": self.vault_id.hex(),
            "member": self.member,
            "chains": {n: [m.seq, m.hash.hex()] for n, m in sorted(self.marks.items())},
        }
        if self.epoch:
            body["journal"] = self.epoch.hex()
        return body

    def to_bytes(self, mac_key: bytes, gen: int = 0) -> bytes:
        """The MACed file body; ``gen`` orders the two slots (the higher valid one counts)."""
        body = self._body()
        body["gen"] = gen
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["mac"] = p.mac(mac_key, canonical).hex()
        return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, mac_key: bytes, vault_id: bytes, member: str) -> Witness:
        return _decode(data, mac_key, vault_id, member)[0]


def _decode(data: bytes, mac_key: bytes, vault_id: bytes, member: str) -> tuple[Witness, int]:
    """(witness, generation) from one slot's bytes (trailing padding allowed)."""
    try:
        d = json.loads(data)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError
        mac = bytes.fromhex(d.pop("mac"))
        chains = d["chains"]
        gen = d.get("gen", 0)
        if not isinstance(chains, dict) or type(gen) is not int or not 0 <= gen < 2**63:
            raise ValueError
        marks = {_name(n): _mark(m) for n, m in chains.items()}
        epoch = bytes.fromhex(d.get("journal", ""))
        if len(epoch) not in (0, EPOCH):
            raise ValueError
        w = Witness(bytes.fromhex(d["vault_id"]), d["member"], marks, epoch)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise IntegrityError("witness file is corrupt") from None
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    p.mac_verify(mac_key, canonical, mac, "witness file")
    if w.vault_id != vault_id or w.member != member:
        raise IntegrityError("witness file belongs to another vault or member")
    return w, gen


def _mark(v: Any) -> Mark:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or type(v[0]) is not int
        or not 0 <= v[0] < 2**63
        or not isinstance(v[1], str)
    ):
        raise ValueError
    h = bytes.fromhex(v[1])
    if not 16 <= len(h) <= 64:
        raise ValueError
    return Mark(v[0], h)


def _name(n: Any) -> str:
    if not isinstance(n, str) or not CHAIN_NAME.fullmatch(n):
        raise ValueError
    return n


def mac_key(sign_private: bytes) -> bytes:
    """The witness MAC key: the member's own, never in the vault."""
    return p.hkdf(sign_private, labels.WITNESS_MAC)


def state_dir() -> Path:
    """``$XDG_STATE_HOME/credvault``, else ``~/.local/state/credvault``."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "credvault"


def path_for(
    vault_id: bytes, member: str, directory: Path | None = None, key: bytes | None = None
) -> Path:
    """The witness file of ``member`` on ``vault_id``; given the MAC ``key``, the name also
    carries a short digest of it, so new member keys (an admin's ``member reset``) start a
    new witness instead of meeting one they cannot verify."""
    tag = "" if key is None else "-" + p.digest(key)[:4].hex()
    return (directory or state_dir()) / f"witness-{vault_id.hex()}-{member}{tag}.json"


class Stored(NamedTuple):
    """What the two slots hold: the newest valid witness (None: none yet), its generation,
    and which slot holds it (-1: neither)."""

    witness: Witness | None
    gen: int
    slot: int


def slots(path: Path) -> tuple[Path, Path]:
    """The witness's two slot files: ``<name>.json`` and ``<name>.b.json``."""
    return path, path.with_name(path.stem + ".b" + path.suffix)


def load(path: Path, key: bytes, vault_id: bytes, member: str) -> Witness | None:
    """The witness at ``path`` with its journal, or None if there is none yet (under the
    shared lock)."""
    if not path.parent.is_dir():
        return None
    with locked(path, exclusive=False):
        return with_journal(read(path, key, vault_id, member).witness, path, key, vault_id, member)


def with_journal(
    w: Witness | None, path: Path, key: bytes, vault_id: bytes, member: str
) -> Witness | None:
    """``w`` (the file's witness, None: no file) advanced by its journal's highest record."""
    epoch = b"" if w is None else w.epoch
    mark = read_journal(path, key, journal_prefix(vault_id, member, epoch))
    if mark is None:
        return w
    return (w or Witness(vault_id, member, {})).advanced({JOURNAL_CHAIN: mark})


# -- the journal: one MACed audit position appended per commit ------------------------------
def journal_path(path: Path) -> Path:
    """The journal beside the witness file ``<name>.json``: ``<name>.journal``."""
    return path.with_name(path.stem + ".journal")


def journal_prefix(vault_id: bytes, member: str, epoch: bytes) -> bytes:
    """What every record's MAC covers before its own position (computed once per open)."""
    return labels.encode(labels.WITNESS_JOURNAL, vault_id, member, epoch, JOURNAL_CHAIN)


def journal_record(key: bytes, prefix: bytes, mark: Mark) -> bytes:
    """One record: ``seq`` (8 bytes, big endian), the hash (32), and
    ``HMAC-SHA256(key, prefix ‖ encode(seq, hash))`` (32)."""
    if len(mark.hash) != JOURNAL_HASH or not 0 <= mark.seq < 2**63:
        raise ValueError("not a journal position")
    seq = mark.seq.to_bytes(8, "big")
    tail = b"\0\0\0\x08" + seq + b"\0\0\0\x20" + mark.hash  # encode(seq, hash)
    return seq + mark.hash + p.mac(key, prefix + tail)


def read_journal(path: Path, key: bytes, prefix: bytes) -> Mark | None:
    """The highest position among the journal's records that verify (None: none).

    Records are read at multiples of :data:`RECORD`. One that does not verify is not there:
    a write cut short by a crash, a record of another epoch (before a reset), or an edit,
    which is no better than deleting the journal (which anyone who can write it can do).
    """
    try:
        with journal_path(path).open("rb") as f:
            data = f.read(JOURNAL_MAX)
    except FileNotFoundError:
        return None
    view = memoryview(data)
    found = sorted(
        (
            (int.from_bytes(view[i : i + 8], "big"), i)
            for i in range(0, len(data) - RECORD + 1, RECORD)
        ),
        reverse=True,
    )
    for seq, i in found:
        mark = Mark(seq, bytes(view[i + 8 : i + 8 + JOURNAL_HASH]))
        if seq < 2**63 and hmac.compare_digest(
            journal_record(key, prefix, mark), bytes(view[i : i + RECORD])
        ):
            return mark
    return None


def open_journal(path: Path) -> int:
    """A descriptor appending to the journal (created 0600), for :func:`append`."""
    return os.open(
        journal_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE
    )


def append(fd: int, lock: int, record: bytes) -> int:
    """Append one record under the shared lock (a fold takes the exclusive one: no record
    lands between its read and its truncation); returns the journal's length just after it.
    One ``write`` with ``O_APPEND``: records of several processes never interleave; no
    fsync (as the file's own get-path write)."""
    fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        if os.write(fd, record) != len(record):
            raise OSError("short write to the witness journal")
        return os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def clear_journal(path: Path) -> None:
    """Empty the journal (the caller holds the exclusive lock, its records already in the
    file)."""
    with contextlib.suppress(FileNotFoundError):
        os.truncate(journal_path(path), 0)


def read(path: Path, key: bytes, vault_id: bytes, member: str) -> Stored:
    """Both slots, the caller holding the lock: the valid one with the higher generation.

    A slot that does not verify while the other does is a write cut short by a crash (only
    the older slot is ever written: the newer stays whole) and is ignored; so is an empty
    one (a file created without fsync). If neither verifies, that is an
    :class:`IntegrityError`: altered, or made with other keys.
    """
    best: Stored = Stored(None, -1, -1)
    error: IntegrityError | None = None
    for i, slot in enumerate(slots(path)):
        try:
            with slot.open("rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            continue
        if not data or (data[:1] != b"{" and not data.strip(b"\0 \n")):
            continue
        try:
            if len(data) > MAX_SIZE:
                raise IntegrityError("witness file is too large")
            w, gen = _decode(data, key, vault_id, member)
        except IntegrityError as e:
            error = error or e
            continue
        if gen > best.gen:
            best = Stored(w, gen, i)
    if best.witness is None and error is not None:
        raise error
    return best


def target_slot(at: Stored) -> int:
    """The slot the next write goes to: the one not holding the newest witness."""
    return 1 if at.slot == 0 else 0


def save(
    path: Path, witness: Witness, key: bytes, *, durable: bool = True, at: Stored | None = None
) -> None:
    """Write ``witness`` over the *older* slot (the caller holds the exclusive lock; ``at``
    is what :func:`read` found, read again if not given), one generation above the newer.

    The get path's write (``durable=False``) overwrites the existing slot file in place,
    padded to its size: no new file, no rename, no fsync, so it adds nothing to the next
    database commit's journal flush (replacing a file by rename made every durable get
    twice as slow on ext4: see benchmarks/bench_witness.py). A crash that tears it leaves
    the other slot, one write older, in force. A slot too small, or missing, is created
    whole by an atomic replace.
    """
    if at is None:
        try:
            at = read(path, key, witness.vault_id, witness.member)
        except IntegrityError:  # neither slot verifies: both are overwritten in turn
            at = Stored(None, -1, -1)
    target = slots(path)[target_slot(at)]
    data = witness.to_bytes(key, at.gen + 1)
    size = -(-len(data) // PAD) * PAD
    fd = -1
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW)
        if os.fstat(fd).st_size < size:
            raise FileNotFoundError
        data += b" " * (os.fstat(fd).st_size - len(data))
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)) :]
        if durable:
            os.fsync(fd)
    except FileNotFoundError:
        make_private_dir(path.parent)
        atomic_write(target, data + b" " * (size - len(data)), durable=durable)
    finally:
        if fd >= 0:
            os.close(fd)


def lock_fd(path: Path) -> int:
    """An open descriptor of the witness's lock file (``<file>.lock``), for :func:`locked`."""
    make_private_dir(path.parent)
    return os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, FILE_MODE)


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool = True, fd: int | None = None) -> Iterator[None]:
    """Hold the witness's own lock: exclusive while reading, merging and writing it, so two
    processes of the same member never write over each other's advance; shared while only
    reading, so a reader never meets both slots mid-write. ``fd`` (from :func:`lock_fd`)
    saves opening the lock file each time."""
    own = fd is None
    use = lock_fd(path) if fd is None else fd
    try:
        fcntl.flock(use, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(use, fcntl.LOCK_UN)
    finally:
        if own:
            os.close(use)
