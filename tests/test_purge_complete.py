"""A purge is complete or says it is not (issue 12, item 3): while another process holds a
read snapshot older than the delete, SQLite cannot remove the old pages from the database
file and the WAL. The purge then says so (receipt without ``destruction_complete_at``,
``needs_vacuum`` kept, CLI exit 1), and the next opportunity finishes it: checked by
decrypting every page and WAL frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import Vault, verify_receipt
from credvault import purge as purge_mod
from test_purge import decrypted_pages

ENG = "acme-2026"


def open_as(vf: VaultFixture, member: str = "alice") -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock)


@contextlib.contextmanager
def reader_holding_a_snapshot(vault_dir: Path, key: bytes) -> Iterator[None]:
    """Another connection in a read transaction: a report, a SQL shell, a hostile member."""
    conn = sqlcipher3.connect(str(vault_dir / "vault.db"), isolation_level=None)
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("BEGIN")
        assert conn.execute("SELECT count(*) FROM credentials").fetchone()[0] > 0
        yield
    finally:
        conn.close()


def _targets(v: Vault) -> list[bytes]:
    eng_id = v.engagements.get(ENG).id
    rows: list[Any] = v._s.store.conn.execute(
        "SELECT secret_env FROM credentials WHERE engagement_id = ?1 UNION ALL "
        "SELECT address_env FROM systems WHERE engagement_id = ?1 UNION ALL "
        "SELECT sealed FROM grants WHERE engagement_id = ?1 AND sealed IS NOT NULL",
        (eng_id,),
    ).fetchall()
    return [bytes(r[0]) for r in rows]


def test_shred_beside_a_reader_is_not_reported_complete_and_finishes_later(
    vault: VaultFixture, engagement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purge_mod, "CHECKPOINT_WAIT_S", 0.2)
    with open_as(vault) as v:
        v.credentials.put_many(ENG, [(f"bulk{i}", b"B" * 200 + bytes([i])) for i in range(50)])
        targets = _targets(v)
        key = v._s.db_key
        public_key = v.public_key
    assert len(targets) == 51 + 1 + 4  # credentials, the system, four key copies

    with reader_holding_a_snapshot(vault.path, key), open_as(vault) as v:
        receipt = v.purger.shred(ENG)
        assert receipt.destruction_complete_at is None  # says it is not complete
        assert not v.purger.complete
        assert v._s.store.get_meta("needs_vacuum") == 1
        verify_receipt(receipt, public_key)
        pages = decrypted_pages(vault.path, key)
        assert [t for t in targets if t in pages]  # and it is not: the copies are there

    # the reader is gone: the next open, by anyone, finishes the destruction
    with open_as(vault, "carol") as v:
        assert v.purger.complete
    pages = decrypted_pages(vault.path, key)
    assert [t for t in targets if t in pages] == []
    assert b"B" * 200 not in pages
    with open_as(vault) as v:
        final = v.purger.receipt(ENG)
    assert final.destruction_complete_at is not None
    assert final.destruction_complete_at >= final.purged_at
    body = verify_receipt(final, public_key)
    assert body["audit_position"] == receipt.audit_position


def test_purge_run_completes_a_pending_purge(
    vault: VaultFixture, engagement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purge_mod, "CHECKPOINT_WAIT_S", 0.2)
    with open_as(vault) as v:
        key = v._s.db_key
        targets = _targets(v)
        with reader_holding_a_snapshot(vault.path, key):
            v.purger.shred(ENG)
            assert v.purge() == []  # nothing due, and still held up
            assert not v.purger.complete
        assert v.purge() == []  # the next run finishes it
        assert v.purger.complete
        assert v.purger.receipt(ENG).destruction_complete_at is not None
    assert [t for t in targets if t in decrypted_pages(vault.path, key)] == []


def test_cli_shred_beside_a_reader_exits_1_and_says_so(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    cli = cli_vault
    assert cli("put", f"{ENG}/db", input=b"pg-secret").code == 0
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        key = v._s.db_key
    with reader_holding_a_snapshot(Path(cli_env["CREDVAULT_VAULT"]), key):
        r = cli("engagement", "shred", ENG, "--yes")
        assert r.code == 1, r.err
        assert "NOT complete" in r.err
        r = cli("receipt", ENG)
        assert "NOT YET" in r.text
    r = cli("purge")
    assert r.code == 0, r.err
    r = cli("receipt", ENG)
    assert r.code == 0
    assert "NOT YET" not in r.text
