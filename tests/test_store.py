"""The SQLCipher store (spec §4.1, §4.6): a raw 256-bit key validated before it reaches
SQLCipher, the pragmas checked after opening, a file that plain SQLite cannot read, every
write transaction ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlcipher3
from hypothesis import given
from hypothesis import strategies as st

from conftest import KDF, PASSWORDS, Clock, VaultFixture
from credvault import Vault
from credvault.errors import IntegrityError, NotAVault
from credvault.store import Store, StoreError, _key_literal


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, bytes]:
    """A vault with alice (admin), bob, carol and engagement acme-2026; and its db key."""
    path = tmp_path_factory.mktemp("template") / "vault"
    clock = Clock()
    res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    assert res.recovery_key is not None
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create("acme-2026", "acme")
        v.engagements.grant("acme-2026", "bob", "engineer")
        v.systems.add("acme-2026/web1", "10.0.0.1", port=22)
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root", system="web1")
        key = bytes(v._s.db_key)
    return path, res.recovery_key, key


@pytest.fixture
def vault(template: tuple[Path, str, bytes], tmp_path: Path) -> VaultFixture:
    shutil.copytree(template[0], tmp_path / "vault")
    return VaultFixture(tmp_path / "vault", Clock(), template[1])


@pytest.fixture
def db_key(template: tuple[Path, str, bytes]) -> bytes:
    return template[2]


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


# -- pragmas ---------------------------------------------------------------------------------
def test_pragmas_after_open(vault: VaultFixture) -> None:
    with vault.open() as v:
        conn = v._s.store.conn

        def pragma(name: str) -> object:
            return conn.execute(f"PRAGMA {name}").fetchone()[0]

        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 2  # FULL
        assert pragma("secure_delete") == 1
        assert pragma("foreign_keys") == 1
        assert pragma("temp_store") == 2  # MEMORY
        assert str(pragma("cipher_use_hmac")) == "1"
        assert str(pragma("cipher_plaintext_header_size")) == "0"
        assert pragma("busy_timeout") >= 5000
        assert conn.execute("PRAGMA compile_options").fetchall()  # a real SQLCipher build
        assert str(pragma("cipher_version")).startswith("4.")


@pytest.mark.parametrize(
    "weaken",
    [
        "PRAGMA secure_delete = OFF",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA temp_store = FILE",
    ],
)
def test_weakened_pragmas_are_refused(vault: VaultFixture, db_key: bytes, weaken: str) -> None:
    store = Store.open(vault.path / "vault.db", db_key)
    try:
        store._check_pragmas("wal")  # as opened: fine
        store.conn.execute(weaken)
        with pytest.raises(StoreError, match="refusing to run"):
            store._check_pragmas("wal")
    finally:
        store.close()


def test_non_wal_journal_is_refused(vault: VaultFixture, db_key: bytes) -> None:
    store = Store.open(vault.path / "vault.db", db_key)
    try:
        with pytest.raises(StoreError, match="WAL"):
            store._check_pragmas("delete")
    finally:
        store.close()


# -- the raw key literal ---------------------------------------------------------------------
@given(key=st.binary(min_size=32, max_size=32))
def test_key_literal_is_exactly_64_hex_digits(key: bytes) -> None:
    literal = _key_literal(key)
    assert re.fullmatch(r"PRAGMA key = \"x'[0-9a-f]{64}'\"", literal)
    assert key.hex() in literal


@given(key=st.binary(max_size=80).filter(lambda b: len(b) != 32))
def test_key_literal_refuses_other_lengths(key: bytes) -> None:
    with pytest.raises(ValueError) as e:
        _key_literal(key)
    if len(key) >= 4:  # shorter hex strings may occur in any message by chance ("32")
        assert key.hex() not in str(e.value)


@pytest.mark.parametrize(
    "key",
    [b"", b"\x01" * 31, b"\x01" * 33, b"ab" * 32, b"x'" + b"0" * 62, b"0" * 64],
    ids=["empty", "31", "33", "64-hex-chars", "literal-62", "literal-64"],
)
def test_store_refuses_malformed_key_before_sqlcipher(
    vault: VaultFixture, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []
    real_connect = sqlcipher3.connect

    def spying_connect(*a: object, **k: object) -> object:
        conn = real_connect(*a, **k)
        conn.set_trace_callback(executed.append)
        return conn

    monkeypatch.setattr(sqlcipher3, "connect", spying_connect)
    before = _files(vault.path)
    with pytest.raises(ValueError):
        Store.open(vault.path / "vault.db", key)
    assert not [s for s in executed if "key" in s.lower()]  # never silently a passphrase
    assert _files(vault.path) == before


# -- the file --------------------------------------------------------------------------------
def test_database_is_not_plain_sqlite(vault: VaultFixture) -> None:
    data = (vault.path / "vault.db").read_bytes()
    assert not data.startswith(b"SQLite format 3\x00")
    assert b"SQLite format" not in data[:100]
    assert b"CREATE TABLE" not in data
    assert b"credentials" not in data
    conn = sqlite3.connect(vault.path / "vault.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
            conn.execute("SELECT * FROM sqlite_master").fetchall()
    finally:
        conn.close()


def test_the_right_raw_key_opens_it_by_hand(vault: VaultFixture, db_key: bytes) -> None:
    conn = sqlcipher3.connect(str(vault.path / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "engagements", "grants", "systems", "credentials", "audit"} <= tables
    finally:
        conn.close()


def test_key_as_passphrase_does_not_open_it(vault: VaultFixture, db_key: bytes) -> None:
    """Without ``x'…'`` SQLCipher would run PBKDF2 over the text: a different key."""
    conn = sqlcipher3.connect(str(vault.path / "vault.db"))
    try:
        conn.execute(f"PRAGMA key = '{db_key.hex()}'")
        with pytest.raises(sqlcipher3.DatabaseError):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


@pytest.mark.parametrize("key", [bytes(32), b"\xff" * 32, os.urandom(32)], ids=["0", "ff", "rnd"])
def test_wrong_raw_key_is_an_integrity_error(vault: VaultFixture, key: bytes) -> None:
    before = _files(vault.path)
    with pytest.raises(IntegrityError) as e:
        Store.open(vault.path / "vault.db", key)
    assert key.hex() not in str(e.value)
    assert _files(vault.path) == before


def test_missing_database_is_not_a_vault(tmp_path: Path) -> None:
    with pytest.raises(NotAVault):
        Store.open(tmp_path / "vault.db", os.urandom(32))
    assert not (tmp_path / "vault.db").exists()


def test_integrity_check_of_a_healthy_vault(vault: VaultFixture) -> None:
    with vault.open() as v:
        assert v.integrity_check() == []


# -- transactions ----------------------------------------------------------------------------
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def test_every_write_runs_in_begin_immediate(vault: VaultFixture) -> None:
    """A deferred read transaction upgraded to a write fails at once with "database is
    locked" whatever the busy timeout: no write may run inside a plain ``BEGIN``."""
    statements: list[str] = []
    with vault.open() as v:
        v._s.store.conn.set_trace_callback(statements.append)
        v.put("acme-2026/a", b"value", username="u", notes="n")
        v.put("acme-2026/a", b"value 2")
        v.get("acme-2026/a")
        v.credentials.list()
        v.systems.add("acme-2026/db1", "db1.example", port=5432)
        v.systems.show("acme-2026/db1")
        v.engagements.grant("acme-2026", "carol", "reader")
        v.engagements.revoke("acme-2026", "carol")
        v.engagements.rotate("acme-2026")
        v.audit_entries(limit=5)
        v.audit_verify()
        v.set_setting("purge-grace-days", "3")
        v.credentials.remove("acme-2026/a")
        v.systems.remove("acme-2026/db1")
    mode: str | None = None
    writes = 0
    for sql in statements:
        head = sql.lstrip().upper()
        if head.startswith("BEGIN"):
            assert mode is None, "nested BEGIN"
            mode = (
                "immediate"
                if head.startswith(("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"))
                else "deferred"
            )
        elif head.startswith(("COMMIT", "END", "ROLLBACK")):
            mode = None
        elif head.startswith(WRITES):
            writes += 1
            assert mode == "immediate", f"write outside BEGIN IMMEDIATE: {sql[:60]}"
    assert writes > 20
