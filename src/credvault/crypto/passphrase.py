"""Argon2id key derivation with bounded parameters.

New member keys use at least RFC 9106's second recommended setting (m=64 MiB, t=3, p=4).
Parameters read from disk must lie in [FLOOR, CEILING] and cost at most ``MAX_WORK``: a
tampered key-slot file can neither weaken the KDF nor make an unlock allocate more than
1 GiB or run more than four passes over a gibibyte (a few seconds on a laptop; the old
ceiling of 4 GiB and t=16 let anyone who can write the file stall every unlock). Tests pass
``TEST_PARAMS`` (the floor) explicitly; there is no environment switch that lowers the cost.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Protocol

from credvault.errors import IntegrityError, InvalidInput

SALT_LEN = 16


class Revealing(Protocol):
    """A wrapped secret (``credvault.Secret``): the bytes leave it only inside the call that
    needs them, so no frame of ours holds the plain passphrase as a local."""

    def reveal(self) -> bytes: ...


class KdfParams(NamedTuple):
    """Argon2id cost: memory in KiB, iterations, lanes."""

    memory_kib: int
    iterations: int
    lanes: int


FLOOR = KdfParams(memory_kib=19 * 1024, iterations=2, lanes=1)  # OWASP's minimum
# Largest value of each parameter on its own ...
CEILING = KdfParams(memory_kib=1024 * 1024, iterations=16, lanes=8)
# ... and of memory x passes together: what one unlock can afford (1 GiB x 4, 64 MiB x 16).
MAX_WORK = 4 * 1024 * 1024  # KiB-passes
DEFAULT = KdfParams(memory_kib=64 * 1024, iterations=3, lanes=4)  # RFC 9106 second setting
TEST_PARAMS = FLOOR


def check(params: KdfParams, *, from_disk: bool) -> None:
    """Refuse parameters outside [FLOOR, CEILING]; from disk that means tampering."""
    ok = (
        FLOOR.memory_kib <= params.memory_kib <= CEILING.memory_kib
        and FLOOR.iterations <= params.iterations <= CEILING.iterations
        and FLOOR.lanes <= params.lanes <= CEILING.lanes
        and params.memory_kib >= 8 * params.lanes
        and params.memory_kib * params.iterations <= MAX_WORK
    )
    if not ok:
        if from_disk:
            raise IntegrityError(
                "key-slot file demands Argon2id parameters outside the allowed range"
            )
        raise InvalidInput(
            f"Argon2id parameters must lie between m={FLOOR.memory_kib} KiB, t={FLOOR.iterations}, "
            f"p={FLOOR.lanes} and m={CEILING.memory_kib} KiB, t={CEILING.iterations}, p={CEILING.lanes}, "
            f"with m*t at most {MAX_WORK} KiB"
        )


def new_salt() -> bytes:
    return os.urandom(SALT_LEN)


def derive(passphrase: Revealing, salt: bytes, params: KdfParams) -> bytes:
    """The 256-bit key-encryption key for a member's private keys."""
    if len(salt) != SALT_LEN:
        raise IntegrityError("key-slot file holds a malformed salt")
    # Imported here: unlocking from the keyring or an identity file never derives a key.
    from argon2.low_level import Type, hash_secret_raw

    from credvault.crypto.primitives import KeyBytes

    return KeyBytes(
        hash_secret_raw(
            secret=passphrase.reveal(),
            salt=salt,
            time_cost=params.iterations,
            memory_cost=params.memory_kib,
            parallelism=params.lanes,
            hash_len=32,
            type=Type.ID,
        )
    )
