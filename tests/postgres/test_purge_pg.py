"""Purge on a server that keeps the past: envelopes and sealed copies leave the live table
files (after the owner's VACUUM FULL; a plain DELETE leaves them there, as measured in the
issue), WAL still holds them (the reason for the documented retention rule), and the
receipt is signed on the admin's machine and states the horizon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from credvault.keyslots import MemberKeys
from credvault.postgres.server import rewrite_after_purge
from credvault.receipts import verify_receipt
from credvault.team_lifecycle import sign_receipt


def _files(root: Path) -> bytes:
    out = b""
    for f in sorted(root.rglob("*")):
        if f.is_file():
            out += f.read_bytes()
    return out


def test_purge_removes_envelopes_and_copies_from_live_files(pg: Any) -> None:
    # The WAL written from here on is kept until the slot goes, however many checkpoints
    # this test (and the cluster) makes: whether a segment survives otherwise depends on
    # where in the WAL the shared test cluster happens to be.
    slot = f"purge_{os.urandom(4).hex()}"
    pg.cluster.superuser_sql(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    try:
        _purge_removes_envelopes_and_copies_from_live_files(pg)
    finally:
        pg.cluster.superuser_sql(f"SELECT pg_drop_replication_slot('{slot}')")


def _purge_removes_envelopes_and_copies_from_live_files(pg: Any) -> None:
    envelope = b"PURGE-ENVELOPE-" + os.urandom(24).hex().encode()
    sealed = b"PURGE-SEALED-COPY-" + os.urandom(24).hex().encode()
    pg.add("bob")
    pg.engagement("alpha")
    with pg.connect("alice") as alice:
        alice.execute(
            "SELECT credvault.put_grant('alpha', 'bob', 'engineer', '\\x00', 1, %s, '\\x00')",
            (sealed,),
        )
    pg.put("alice", "alpha", "db", envelope)
    with pg.connect() as owner:
        dboid = owner.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
    dbdir = pg.cluster.datadir / "base" / str(dboid)

    def checkpoint() -> None:
        pg.cluster.superuser_sql("CHECKPOINT")

    checkpoint()
    assert envelope in _files(dbdir)

    # version 1's purge is closed to members (schema 2, section pgv1); the purge is
    # destroy_engagement, its receipt signed on the admin's machine (store_receipt)
    with pg.connect("bob") as bob, pytest.raises(psycopg.errors.InsufficientPrivilege):
        bob.execute("SELECT credvault.purge_engagement('alpha', '{}')")
    with pg.connect("alice") as alice:
        assert alice.execute("SELECT credvault.close_engagement('alpha', 0)").fetchone() == ("ok",)
        facts = alice.execute(
            "SELECT credvault.destroy_engagement('alpha', 'grace', false)"
        ).fetchone()[0]
        assert facts["destroyed"]["credentials"] == 1
        k = pg.keys["alice"]
        receipt = sign_receipt(MemberKeys("alice", k.kem_private, k.sign_private, b""), facts, None)
        alice.execute("SELECT credvault.store_receipt('alpha', %s)", (receipt,))
    checkpoint()
    # DELETE alone: the bytes are still in the table file (dead tuples)
    assert envelope in _files(dbdir)

    with pg.connect() as owner:
        rewrite_after_purge(owner)
    checkpoint()
    live = _files(dbdir)
    assert envelope not in live
    assert sealed not in live
    # ...but the WAL still has them: hence the backup/WAL retention rule and the horizon
    assert envelope in _files(pg.cluster.datadir / "pg_wal")

    with pg.connect("alice") as alice:
        (sign_pub,) = alice.execute(
            "SELECT sign_pub FROM credvault.members WHERE name = 'alice'"
        ).fetchone()
    with pg.connect() as owner:
        stored = owner.execute(
            "SELECT receipt FROM credvault.engagements WHERE name = 'alpha'"
        ).fetchone()[0]
    body = verify_receipt(stored, bytes(sign_pub))
    assert body["backups_expire_at"] == facts["backups_expire_at"]  # the horizon
    assert body["engagement"] == "alpha"
