"""``credvault passwd`` on a PostgreSQL team vault (issue 14): the member changes the
passphrase of their own team key slot, on their machine, and with it their login.

The member's PostgreSQL password is derived from their signing key (:mod:`credvault.
postgres.slot`); a slot re-wrapped by ``passwd`` (slot version 3) also binds it to the
slot's new Argon2id salt, so the new passphrase brings a new login password. Only its SCRAM
verifier, made here, goes to the server (``credvault.change_login``, audited ``passwd``):
the password never travels. Crash-safe: the new slot is written beside the old one
(``<slot>.new``) before the server changes the verifier, and moved over the old one after;
an open that finds the server already changed finishes the move (:func:`finish_pending`).

What a plain change protects, and what it does not, is in docs/team.md ("Changing your
passphrase"): the private keys stay the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from credvault.errors import InvalidInput
from credvault.files import fsync_dir, write_new_private
from credvault.layout import team_slot_path
from credvault.postgres.server import scram_verifier
from credvault.postgres.slot import TeamSlot, new_slot
from credvault.secret import Secret

if TYPE_CHECKING:
    from credvault.members import PasswdResult
    from credvault.team_handle import TeamHandle


def pending_path(path: Path) -> Path:
    """Where a passphrase change keeps the new slot until the server has its verifier."""
    return path.with_name(path.name + ".new")


def passwd(t: TeamHandle, new_passphrase: bytes | Secret) -> PasswdResult:
    """Re-wrap the member's own slot under ``new_passphrase`` (same keys, new salt, same
    Argon2id cost) and change their login to the one the new slot derives. (``--compromised``,
    new keys too: :func:`credvault.team_keys.compromised`.)"""
    from credvault.members import PasswdResult
    from credvault.postgres import lifecycle_store as ls

    pw = new_passphrase if isinstance(new_passphrase, Secret) else Secret(bytes(new_passphrase))
    if not pw.reveal():
        raise InvalidInput("the passphrase is empty")
    path = team_slot_path(t.store.database(), t.member)
    old = TeamSlot.read(path)
    slot, _ = new_slot(old.vault_id, old.database, t.member, pw, old.kdf, keys=t.keys)
    slot = slot._replace(salted_login=True)
    pending = pending_path(path)
    pending.unlink(missing_ok=True)  # an earlier change the server never took
    # ... and the witnesses an interrupted ``--compromised`` MACed for keys never used
    for witness in witness_paths(path):
        pending_path(witness).unlink(missing_ok=True)
    write_new_private(pending, slot.to_bytes())
    ls.change_login(t.store, scram_verifier(slot.login_password(t.keys)))
    finish_pending(path)
    return PasswdResult(False, [], [], 0)


def witness_paths(slot: Path) -> list[Path]:
    """The files MACed under the signing key of the member whose key slot is ``slot``: the
    log witness and the witness of key hand-overs seen (``credvault.team_keys``)."""
    from credvault.team_log import LogWitness

    logs = LogWitness.path_for(slot.parent.name, slot.name.removesuffix(".slot"))
    return [logs, logs.with_suffix(".handovers")]


def finish_pending(path: Path) -> None:
    """The server took the new verifier but the move did not happen: move it now (and,
    after ``passwd --compromised``, the witnesses MACed under the new signing key).

    The witnesses first, the slot last: an open finds the change unfinished only by the
    new slot still beside the old one, and finishes it by calling this again. Killed
    after the slot's move, the old witnesses (MACed under the old key, which the new slot
    no longer holds) would stay, and every later read of them would be exit 6."""
    moved = False
    for witness in witness_paths(path):
        if pending_path(witness).exists():
            os.replace(pending_path(witness), witness)
            moved = True
    if moved:
        fsync_dir(witness_paths(path)[0].parent)
    os.replace(pending_path(path), path)
    fsync_dir(path.parent)
