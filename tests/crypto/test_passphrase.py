"""Argon2id parameters are bounded (spec §4.6): new ones must lie in [FLOOR, CEILING], and
parameters read from a key-slot file outside that range are tampering, refused before any
key is derived (a 100 GiB demand must not run; a weakened KDF must not be accepted)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import Vault
from credvault.crypto import passphrase as kdf
from credvault.crypto.passphrase import CEILING, DEFAULT, FLOOR, MAX_WORK, KdfParams
from credvault.errors import IntegrityError, InvalidInput
from credvault.secret import Secret

HUNDRED_GIB_KIB = 100 * 1024 * 1024


def _params(m: int, t: int, p: int) -> KdfParams:
    return KdfParams(memory_kib=m, iterations=t, lanes=p)


def _in_range(x: KdfParams) -> bool:
    return (
        FLOOR.memory_kib <= x.memory_kib <= CEILING.memory_kib
        and FLOOR.iterations <= x.iterations <= CEILING.iterations
        and FLOOR.lanes <= x.lanes <= CEILING.lanes
        and x.memory_kib * x.iterations <= MAX_WORK
    )


# -- bounds ----------------------------------------------------------------------------------
def test_published_settings() -> None:
    assert (FLOOR.memory_kib, FLOOR.iterations, FLOOR.lanes) == (19456, 2, 1)  # OWASP minimum
    # RFC 9106 second recommended setting, at least
    assert DEFAULT.memory_kib >= 65536
    assert DEFAULT.iterations >= 3
    assert DEFAULT.lanes >= 4
    # What an unlock can afford (docs/format.md §2): at most 1 GiB, and 4 passes over it.
    assert CEILING.memory_kib == 1024 * 1024
    assert 4 * CEILING.memory_kib == MAX_WORK
    biggest = _params(CEILING.memory_kib, MAX_WORK // CEILING.memory_kib, CEILING.lanes)
    longest = _params(MAX_WORK // CEILING.iterations, CEILING.iterations, CEILING.lanes)
    for ok in (FLOOR, DEFAULT, biggest, longest):
        kdf.check(ok, from_disk=True)
        kdf.check(ok, from_disk=False)


def test_old_ceiling_is_refused_from_disk() -> None:
    """The issue-11 attack: a writable key-slot file demanding 4 GiB, t=16, p=16."""
    with pytest.raises(IntegrityError):
        kdf.check(_params(4 * 1024 * 1024, 16, 16), from_disk=True)
    with pytest.raises(IntegrityError):  # each part within range, the product not
        kdf.check(_params(CEILING.memory_kib, CEILING.iterations, CEILING.lanes), from_disk=True)


OUT_OF_RANGE = [
    _params(FLOOR.memory_kib - 1, FLOOR.iterations, FLOOR.lanes),
    _params(FLOOR.memory_kib, FLOOR.iterations - 1, FLOOR.lanes),
    _params(FLOOR.memory_kib, FLOOR.iterations, FLOOR.lanes - 1),
    _params(CEILING.memory_kib + 1, 2, CEILING.lanes),
    _params(FLOOR.memory_kib, CEILING.iterations + 1, CEILING.lanes),
    _params(FLOOR.memory_kib, 2, CEILING.lanes + 1),
    _params(CEILING.memory_kib, 5, 1),
    _params(HUNDRED_GIB_KIB, 3, 4),
    _params(1024, 1, 1),
    _params(0, 0, 0),
    _params(-1, 3, 4),
    _params(65536, -3, 4),
]


@pytest.mark.parametrize("params", OUT_OF_RANGE, ids=str)
def test_check_refuses_out_of_range(params: KdfParams) -> None:
    with pytest.raises(IntegrityError):
        kdf.check(params, from_disk=True)
    with pytest.raises(InvalidInput) as e:
        kdf.check(params, from_disk=False)
    assert not isinstance(e.value, IntegrityError)


@given(
    m=st.integers(-(2**40), 2**40),
    t=st.integers(-100, 100),
    p=st.integers(-100, 100),
)
def test_check_accepts_exactly_the_range(m: int, t: int, p: int) -> None:
    params = _params(m, t, p)
    if _in_range(params):
        kdf.check(params, from_disk=True)
    else:
        with pytest.raises(IntegrityError):
            kdf.check(params, from_disk=True)
        with pytest.raises(InvalidInput):
            kdf.check(params, from_disk=False)


def test_new_vault_refuses_weak_kdf(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        Vault.init(tmp_path / "v", "alice", "alice-pass", kdf=_params(1024, 1, 1))
    assert not (tmp_path / "v").exists()


# -- derive ----------------------------------------------------------------------------------
def test_derive_is_deterministic_and_salted() -> None:
    salt = kdf.new_salt()
    assert len(salt) == kdf.SALT_LEN == 16
    a = kdf.derive(Secret(b"passphrase"), salt, FLOOR)
    assert len(a) == 32
    assert a == kdf.derive(Secret(b"passphrase"), salt, FLOOR)
    assert a != kdf.derive(Secret(b"passphrase"), kdf.new_salt(), FLOOR)
    assert a != kdf.derive(Secret(b"passphrasE"), salt, FLOOR)


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_derive_refuses_malformed_salt(length: int) -> None:
    with pytest.raises(IntegrityError):
        kdf.derive(Secret(b"passphrase"), b"s" * length, FLOOR)


@pytest.mark.parametrize(
    ("params", "passphrase"),
    [(FLOOR, b"alice-pass"), (_params(FLOOR.memory_kib, 3, 2), b""), (FLOOR, "☃".encode() * 9)],
)
def test_derive_matches_cryptography_argon2id(params: KdfParams, passphrase: bytes) -> None:
    """Cross-implementation check: argon2-cffi (credvault) against OpenSSL's (cryptography)."""
    argon2 = pytest.importorskip("cryptography.hazmat.primitives.kdf.argon2")
    if not hasattr(argon2, "Argon2id"):
        pytest.skip("this cryptography has no Argon2id")
    salt = os.urandom(16)
    theirs = argon2.Argon2id(
        salt=salt,
        length=32,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    ).derive(passphrase)
    assert kdf.derive(Secret(passphrase), salt, params) == theirs


# -- key-slot files with edited parameters ---------------------------------------------------
def _edit_kdf(path: Path, member: str, **changes: object) -> None:
    f = path / "keyslots.json"
    d = json.loads(f.read_text())
    d["members"][member]["kdf"].update(changes)
    f.write_text(json.dumps(d, indent=1))


@pytest.fixture
def no_derive(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every Argon2id run (and refuse it): a refusal must come before deriving."""
    import argon2.low_level

    calls: list[object] = []

    def spy(**kw: object) -> bytes:
        calls.append(kw)
        raise AssertionError("Argon2id ran on refused parameters")

    monkeypatch.setattr(argon2.low_level, "hash_secret_raw", spy)
    return calls


@pytest.mark.parametrize(
    "changes",
    [
        {"m": HUNDRED_GIB_KIB},
        {"m": CEILING.memory_kib + 1},
        {"m": FLOOR.memory_kib - 1},
        {"m": 8},
        {"t": 1},
        {"t": 10_000},
        {"p": 0},
        {"p": 255},
        {"m": -1},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_edited_params_refused_before_deriving(
    vault: VaultFixture, no_derive: list[object], changes: dict[str, int]
) -> None:
    _edit_kdf(vault.path, "alice", **changes)
    before = (vault.path / "vault.db").read_bytes()
    with pytest.raises(IntegrityError):
        vault.open("alice")
    assert no_derive == []
    assert (vault.path / "vault.db").read_bytes() == before


def test_edited_salt_refused_before_deriving(vault: VaultFixture, no_derive: list[object]) -> None:
    _edit_kdf(vault.path, "bob", salt=base64.b64encode(b"short").decode())
    with pytest.raises(IntegrityError):
        vault.open("bob")
    assert no_derive == []


def test_other_members_params_are_not_derived_for_me(vault: VaultFixture) -> None:
    """Only the unlocking member's parameters are used; bob's tampered slot stops the MAC."""
    _edit_kdf(vault.path, "bob", m=HUNDRED_GIB_KIB)
    with pytest.raises(IntegrityError):  # the MAC over the file catches the edit
        Vault.open(vault.path, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock)


@pytest.mark.cli
def test_cli_refuses_edited_params_with_exit_6(cli: CliRunner, vault: VaultFixture) -> None:
    _edit_kdf(vault.path, "alice", m=HUNDRED_GIB_KIB)
    r = cli("ls", "--vault", str(vault.path), "--no-keyring")
    assert r.code == 6, r.err
    assert r.err.startswith("credvault: ")
    assert r.err.count("\n") == 1
    assert "Traceback" not in r.err
