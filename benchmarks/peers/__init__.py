"""Peer password stores for the credvault benchmark.

Each ``setup_*`` function takes a scratch directory and an entry count, builds
a store of that many entries for one peer tool, and returns ``Peer`` objects
whose ``read``/``write`` commands are timed as whole processes by
``benchmarks._report`` (``round_robin``, ``time_command``). A peer whose tool is not installed is
skipped: the function prints one ``skipped: ...`` line and returns None (or
leaves it out of the returned list). Nothing here installs anything; see
``install.sh`` beside this file.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._report import Command

__all__ = ["Command", "Peer", "entry_name", "read_index", "secret_for", "setup_all", "skip"]

INSTALL_HINT = "benchmarks/peers/install.sh"
WRITTEN_SECRET = "new-secret"  # noqa: S105 - throwaway benchmark data


@dataclass
class Peer:
    name: str
    show: Callable[[str], Command]  # prints one entry's secret
    write: Command  # stores WRITTEN_SECRET under a (possibly per-run) name
    read_entry: str  # the entry `read` shows
    expected: str  # what `read` prints, sans trailing newline
    written_entry: str  # the entry the first `write` run creates
    setup_s: float  # wall time to build the n-entry store
    notes: list[str] = field(default_factory=list)
    cleanup: Callable[[], None] = lambda: None

    @property
    def read(self) -> Command:
        return self.show(self.read_entry)


def entry_name(i: int) -> str:
    return f"bench/entry-{i:05d}"


def secret_for(i: int) -> str:
    return hashlib.sha256(f"credvault-peer-bench-{i}".encode()).hexdigest()[:32]


def read_index(n: int) -> int:
    return n // 2


def skip(message: str) -> None:
    print(f"skipped: {message}", file=sys.stderr)


def which(tool: str) -> str | None:
    return shutil.which(tool)


def setup_all(
    tmp: Path, n: int, argon2_iterations: int | None = None, *, quick: bool = False
) -> list[Peer]:
    """Every installed peer, each in its own subdirectory of tmp.

    argon2_iterations pins the desktop-style Argon2d databases' iteration count;
    by default it is benchmarked like KeePassXC does, which depends on load. quick leaves
    out what takes seconds per run (a smoke run).
    """
    from benchmarks.peers import keepass, passstore

    peers: list[Peer] = []
    try:
        for setup, sub in ((passstore.setup_pass, "pass"), (passstore.setup_gopass, "gopass")):
            peer = setup(tmp / sub, n)
            if peer is not None:
                peers.append(peer)
        peers += keepass.setup_keepassxc(tmp / "keepassxc", n, argon2_iterations)
        peers += keepass.setup_pykeepass(tmp / "pykeepass", n, argon2_iterations, quick=quick)
    except BaseException:
        for peer in peers:
            peer.cleanup()  # stop gpg-agents already started
        raise
    return peers
