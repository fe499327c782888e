"""Purge (issue 5): after a purge no byte of the engagement's ciphertext or sealed keys is
left in the vault's files, whether read raw, logically (sqlcipher_export to plaintext) or
page by page (every physical page of the database and WAL decrypted, free pages included);
the file shrinks, the WAL is empty, other engagements are untouched; a signed receipt
proves it, and `purge --dry-run` only lists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import credvault
from conftest import CANARY, KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import IntegrityError, Purged, RetentionError, Vault

ENG = "acme-2026"
OTHER = "other-2026"
PAGE = 4096
RESERVE = 16 + 64  # SQLCipher 4: IV + HMAC-SHA512 at the end of every page
WAL_HEADER, FRAME_HEADER = 32, 24


# -- looking inside the files -------------------------------------------------------------------
def _decrypt_page(page: bytes, key: bytes, first: bool) -> bytes:
    iv = page[PAGE - RESERVE : PAGE - RESERVE + 16]
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return d.update(page[16 if first else 0 : PAGE - RESERVE]) + d.finalize()


def decrypted_pages(vault_dir: Path, key: bytes) -> bytes:
    """Every physical page of vault.db and of every frame in vault.db-wal, decrypted.

    Unlike a logical export this includes free pages and stale WAL frames: exactly where
    deleted data would linger.
    """
    out = []
    db = (vault_dir / "vault.db").read_bytes()
    for off in range(0, len(db) - PAGE + 1, PAGE):
        out.append(_decrypt_page(db[off : off + PAGE], key, off == 0))
    assert out[0][:2] == PAGE.to_bytes(2, "big"), "not SQLCipher 4 with 4096-byte pages"
    assert out[0][4] == RESERVE, "unexpected reserved bytes per page"
    wal_path = vault_dir / "vault.db-wal"
    wal = wal_path.read_bytes() if wal_path.exists() else b""
    off = WAL_HEADER
    while off + FRAME_HEADER + PAGE <= len(wal):
        pgno = int.from_bytes(wal[off : off + 4], "big")
        page = wal[off + FRAME_HEADER : off + FRAME_HEADER + PAGE]
        out.append(_decrypt_page(page, key, pgno == 1))
        off += FRAME_HEADER + PAGE
    return b"".join(out)


def exported_plaintext(vault_dir: Path, key: bytes, work: Path) -> bytes:
    """A plaintext copy made by SQLCipher itself (ATTACH … KEY '' + sqlcipher_export)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    for name in ("vault.db", "vault.db-wal"):
        if (vault_dir / name).exists():
            shutil.copy2(vault_dir / name, work / name)
    conn = sqlcipher3.connect(str(work / "vault.db"), isolation_level=None)
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("ATTACH DATABASE ? AS plain KEY ''", (str(work / "plain.db"),))
        conn.execute("SELECT sqlcipher_export('plain')")
        conn.execute("DETACH DATABASE plain")
    finally:
        conn.close()
    data = (work / "plain.db").read_bytes()
    assert data.startswith(b"SQLite format 3\x00")
    return data


def raw_files(vault_dir: Path) -> bytes:
    return b"".join(
        (vault_dir / n).read_bytes()
        for n in ("vault.db", "vault.db-wal", "vault.db-shm")
        if (vault_dir / n).exists()
    )


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


def _blobs(v: Vault, sql: str, *params: object) -> list[bytes]:
    return [bytes(r[0]) for r in v._s.store.conn.execute(sql, params) if r[0] is not None]


# -- no trace -----------------------------------------------------------------------------------
def test_purge_leaves_no_envelope_or_key_copy_in_any_file(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    text = CANARY.decode()
    with open_as(vault) as v:
        v.put(f"{ENG}/canary", CANARY, username=f"u-{text}", url=f"https://{text}", notes=text)
        v.systems.add(f"{ENG}/db1", "192.0.2.7", details=f"details {text}")
        v.credentials.put_many(ENG, [(f"bulk{i}", b"B" * 300 + bytes([i])) for i in range(200)])
        v.engagements.create(OTHER, "globex")
        v.put(f"{OTHER}/keep", b"globex-secret")
        # history and trash are engagement data too: an earlier version, a removed
        # credential and a removed system must leave with the purge
        v.put(f"{ENG}/canary", b"second version")
        v.put(f"{ENG}/binned", b"T" * 300 + CANARY)
        v.credentials.remove(f"{ENG}/binned")
        v.systems.add(f"{ENG}/gone", "192.0.2.8", details=f"gone {text}")
        v.systems.remove(f"{ENG}/gone")
        db_key = v._s.db_key
        eng_id = v.engagements.get(ENG).id
        other_id = v.engagements.get(OTHER).id
        targets = _blobs(
            v,
            "SELECT secret_env FROM credentials WHERE engagement_id = ? UNION ALL "
            "SELECT username_env FROM credentials WHERE name = 'canary' UNION ALL "
            "SELECT url_env FROM credentials WHERE name = 'canary' UNION ALL "
            "SELECT notes_env FROM credentials WHERE name = 'canary'",
            eng_id,
        )
        targets += _blobs(
            v,
            "SELECT address_env FROM systems WHERE engagement_id = ? UNION ALL "
            "SELECT details_env FROM systems WHERE engagement_id = ?",
            eng_id,
            eng_id,
        )
        history = _blobs(
            v,
            "SELECT secret_env FROM credential_versions WHERE engagement_id = ? UNION ALL "
            "SELECT notes_env FROM credential_versions WHERE engagement_id = ? UNION ALL "
            "SELECT secret_env FROM credential_trash WHERE engagement_id = ? UNION ALL "
            "SELECT address_env FROM system_trash WHERE engagement_id = ? UNION ALL "
            "SELECT details_env FROM system_trash WHERE engagement_id = ?",
            *[eng_id] * 5,
        )
        assert len(history) == 5
        targets += history
        sealed = _blobs(v, "SELECT sealed FROM grants WHERE engagement_id = ?", eng_id)
        (canary_env,) = _blobs(v, "SELECT secret_env FROM credentials WHERE name = 'canary'")
        other_env = _blobs(
            v, "SELECT secret_env FROM credentials WHERE engagement_id = ?", other_id
        )
    assert len(targets) == 202 + 3 + 4 + 5
    assert len(sealed) == 4  # alice, bob, carol and the recovery key
    size_before = (vault.path / "vault.db").stat().st_size

    # the scans work: before the purge they find what is there
    pages = decrypted_pages(vault.path, db_key)
    plain = exported_plaintext(vault.path, db_key, tmp_path / "before")
    for blob in [canary_env, *sealed, *targets[-9:]]:
        assert blob in pages
        assert blob in plain
    assert canary_env not in raw_files(vault.path)  # SQLCipher encrypts every page

    with open_as(vault) as v:
        receipt = v.purger.shred(ENG).to_json()
        wal = vault.path / "vault.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # truncated by the purge
        assert v._s.store.get_meta("needs_vacuum") == 0
    assert receipt["destroyed"]["credentials"] == 202  # type: ignore[index]
    assert receipt["destroyed"]["credential_versions"] == 1  # type: ignore[index]
    assert receipt["destroyed"]["trashed_credentials"] == 1  # type: ignore[index]
    assert receipt["destroyed"]["trashed_systems"] == 1  # type: ignore[index]

    size_after = (vault.path / "vault.db").stat().st_size
    assert size_after <= size_before
    pages = decrypted_pages(vault.path, db_key)
    plain = exported_plaintext(vault.path, db_key, tmp_path / "after")
    raw = raw_files(vault.path)
    for blob in [*targets, *sealed]:
        assert blob not in pages
        assert blob not in plain
        assert blob not in raw
    for needle in (CANARY, text.encode(), b"192.0.2.7", b"192.0.2.8", b"second version"):
        assert needle not in pages
        assert needle not in plain
    assert b"B" * 300 not in pages

    # the other engagement is untouched, byte for byte, and readable
    assert all(env in plain for env in other_env)
    with open_as(vault) as v:
        assert _blobs(
            v, "SELECT secret_env FROM credentials WHERE engagement_id = ?", other_id
        ) == (other_env)
        assert v.get(f"{OTHER}/keep").secret.reveal() == b"globex-secret"
        assert v.integrity_check() == []
        v.audit_verify()


def test_the_page_scanner_reads_wal_frames(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.put(f"{ENG}/fresh", b"in the wal")
        (env,) = _blobs(v, "SELECT secret_env FROM credentials WHERE name = 'fresh'")
        wal = (vault.path / "vault.db-wal").read_bytes()
        db = (vault.path / "vault.db").read_bytes()
        assert len(wal) > WAL_HEADER  # not yet checkpointed
        key = v._s.db_key
        assert env in decrypted_pages(vault.path, key)
        only_db = b"".join(
            _decrypt_page(db[o : o + PAGE], key, o == 0) for o in range(0, len(db), PAGE)
        )
        assert env not in only_db  # found in the WAL part


def test_the_file_shrinks_after_a_large_purge(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.credentials.put_many(ENG, [(f"c{i}", bytes(2000)) for i in range(300)])
    before = (vault.path / "vault.db").stat().st_size
    with open_as(vault) as v:
        v.purger.shred(ENG)
    after = (vault.path / "vault.db").stat().st_size
    assert after < before / 2


def test_key_copies_and_items_are_deleted_but_the_tombstone_remains(
    vault: VaultFixture, engagement: str
) -> None:
    with open_as(vault) as v:
        eng = v.engagements.get(ENG)
        v.purger.shred(ENG)
        conn = v._s.store.conn
        for table in ("credentials", "systems", "grants"):
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE engagement_id = ?", (eng.id,))  # noqa: S608
            assert n.fetchone()[0] == 0
        tomb = v.engagements.get(ENG, allow_purged=True)
    assert (tomb.name, tomb.client, tomb.state) == (ENG, "acme", "purged")
    assert tomb.created_at == eng.created_at
    with open_as(vault, "bob") as v, pytest.raises(Purged):
        v.get(f"{ENG}/web1-root")


# -- receipts -----------------------------------------------------------------------------------
def test_receipt_fields_and_signature(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.put(f"{ENG}/second", b"x")
        v.put(f"{ENG}/second", b"x2")  # one earlier version
        v.put(f"{ENG}/third", b"x3")
        v.credentials.remove(f"{ENG}/third")  # one credential in the trash
        v.engagements.close(ENG)
        v.engagements.retain(ENG, "2099-01-01", "asked by client")
        before = v.engagements.get(ENG)
        vault.clock.advance(hours=1)
        receipt = v.purger.shred(ENG).to_json()
        stored = v.purger.receipt(ENG).to_json()
        public_key = v.public_key
        purge_entries = [e for e in v.audit_entries(engagement=ENG) if e.action == "purge"]
        now = v._s.now()
    assert stored == receipt
    assert receipt["format"] == "credvault-purge-receipt/2"
    assert receipt["destruction_complete_at"] >= now  # nobody held a snapshot: complete
    assert receipt["key_id"] == hashlib.sha256(base64.b64decode(public_key)).hexdigest()
    assert receipt["client_exports"] == []
    assert receipt["engagement"] == ENG
    assert receipt["client"] == "acme"
    assert receipt["created_at"] == before.created_at
    assert receipt["closed_at"] == before.closed_at
    assert receipt["purged_at"] == now
    assert receipt["reason"] == "client request"
    assert receipt["purged_by"] == "alice"
    assert receipt["destroyed"] == {
        "credentials": 2,
        "systems": 1,
        "credential_versions": 1,
        "trashed_credentials": 1,
        "trashed_systems": 0,
        "key_copies": 4,
        "key_version": before.key_version,
        "key_fingerprints": [before.key_fp],
    }
    assert receipt["hold"] == {
        "until": before.hold_until,
        "reason": "asked by client",
        "by": "alice",
    }
    assert len(purge_entries) == 1
    assert receipt["audit_position"] == purge_entries[0].seq
    assert receipt["public_key"] == public_key
    body = credvault.verify_receipt(receipt, public_key)
    assert "signature" not in body
    assert body["engagement"] == ENG
    assert credvault.verify_receipt(json.dumps(receipt), base64.b64decode(public_key))
    assert credvault.verify_receipt(receipt)  # embedded key: integrity only


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.__setitem__("reason", "grace period expired"),
        lambda r: r["destroyed"].__setitem__("credentials", 0),
        lambda r: r.__setitem__("purged_by", "nobody"),
        lambda r: r.__setitem__("audit_position", 1),
        lambda r: r.__setitem__("extra", "field"),
        lambda r: r.pop("hold"),
    ],
    ids=["reason", "count", "purged_by", "position", "added-field", "removed-field"],
)
def test_a_tampered_receipt_fails(vault: VaultFixture, engagement: str, tamper: Any) -> None:
    with open_as(vault) as v:
        receipt = v.purger.shred(ENG).to_json()
        key = v.public_key
    forged = json.loads(json.dumps(receipt))
    tamper(forged)
    with pytest.raises(IntegrityError):
        credvault.verify_receipt(forged, key)
    with pytest.raises(IntegrityError):
        credvault.verify_receipt(forged)


def test_receipt_of_another_vault_or_unsigned_fails(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    Vault.init(tmp_path / "other", "dave", PASSWORDS["dave"], kdf=KDF)
    with Vault.open(tmp_path / "other", "dave", PASSWORDS["dave"], kdf=KDF) as o:
        other_key = o.public_key
    with open_as(vault) as v:
        receipt = v.purger.shred(ENG).to_json()
        v.engagements.create("live-2026", "acme")
        with pytest.raises(RetentionError):  # nothing to show for a live engagement
            v.purger.receipt("live-2026")
    with pytest.raises(IntegrityError):
        credvault.verify_receipt(receipt, other_key)
    unsigned = {k: val for k, val in receipt.items() if k != "signature"}
    with pytest.raises(IntegrityError):
        credvault.verify_receipt(unsigned)


def test_receipt_needs_a_role_or_admin(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.purger.shred(ENG)
    with open_as(vault, "bob") as v, pytest.raises(credvault.AccessDenied):
        v.purger.receipt(ENG)  # grants were destroyed with the engagement


def test_cli_receipt_verify_and_tamper(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    cli = cli_vault
    r = cli("put", f"{ENG}/db", input=b"pg\n")
    assert r.code == 0, r.err
    r = cli("engagement", "shred", ENG, "--yes")
    assert r.code == 0, r.err
    out = Path(cli_env["CREDVAULT_VAULT"]).parent / "receipt.json"
    r = cli("receipt", ENG, "--output", str(out))
    assert r.code == 0, r.err
    assert out.stat().st_mode & 0o777 == 0o600
    r = cli("receipt", ENG, "--output", str(out))
    assert r.code != 0  # never overwrites
    r = cli("info", "--public-key")
    assert r.code == 0, r.err
    key = r.text.strip()
    assert len(base64.b64decode(key)) == 32
    r = cli("verify-receipt", str(out), "--public-key", key)
    assert r.code == 0, r.err
    assert "valid receipt" in r.text
    assert ENG in r.text
    receipt = json.loads(out.read_text())
    assert receipt["destroyed"]["credentials"] == 1
    assert receipt["reason"] == "client request"

    forged = dict(receipt, destroyed={**receipt["destroyed"], "credentials": 0})
    bad = out.parent / "forged.json"
    bad.write_text(json.dumps(forged))
    r = cli("verify-receipt", str(bad), "--public-key", key)
    assert r.code == 6
    assert r.err.startswith("credvault: ")
    r = cli("verify-receipt", str(bad))
    assert r.code == 6
    other = base64.b64encode(bytes(32)).decode()
    r = cli("verify-receipt", str(out), "--public-key", other)
    assert r.code == 6
    junk = out.parent / "junk.json"
    junk.write_text("not json")  # a receipt damaged past parsing is corruption, not usage
    assert cli("verify-receipt", str(junk)).code == 6
    assert cli("verify-receipt", str(out.parent / "missing.json")).code == 2


# -- purge runs and dry runs --------------------------------------------------------------------
def test_purge_run_and_dry_run(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        v.engagements.create(OTHER, "globex")
        v.engagements.close(ENG)
        v.engagements.close(OTHER)
    vault.clock.advance(days=8)
    with open_as(vault, auto_purge=False) as v:
        due = v.purge(dry_run=True)
        assert [(d.engagement, d.reason) for d in due] == [
            (ENG, "grace"),
            (OTHER, "grace"),
        ]
        assert v.purge(dry_run=True) == due  # listing destroys nothing
        assert v.engagements.get(ENG).state == "closed"
        # ...but it shows what is due (engagements, clients): on the record
        plans = v.audit.entries(action="purge-plan")
        assert [(e.member, e.outcome, e.detail) for e in plans] == [
            ("alice", "ok", "2 engagements due"),
            ("alice", "ok", "2 engagements due"),
        ]
    with open_as(vault, "bob", auto_purge=False) as v:
        assert v.get(f"{ENG}/web1-root").secret.reveal() == b"hunter2"
        with pytest.raises(credvault.AccessDenied):
            v.purge()  # not an admin
    with open_as(vault, auto_purge=False) as v:
        done = v.purge()
        assert [d.engagement for d in done] == [ENG, OTHER]
        assert v.purge(dry_run=True) == []
        assert v.purge() == []
        assert v.engagements.get(ENG, allow_purged=True).state == "purged"


@pytest.mark.cli
def test_cli_purge_dry_run_lists_without_destroying(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    cli = cli_vault
    r = cli("put", f"{ENG}/db", input=b"pg\n")
    assert r.code == 0, r.err
    r = cli("engagement", "close", ENG, "--grace-days", "0")  # due at once
    assert r.code == 0, r.err
    r = cli("purge", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert [d["engagement"] for d in json.loads(r.out)] == [ENG]
    r = cli("purge", "--dry-run")
    assert r.code == 0, r.err
    assert f"due: {ENG}" in r.text
    with Vault.open(
        Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF, auto_purge=False
    ) as v:
        assert v.engagements.get(ENG).state == "closed"
    r = cli("purge", "--json")
    assert r.code == 0, r.err
    assert [d["engagement"] for d in json.loads(r.out)] == [ENG]
    r = cli("purge")
    assert (r.code, r.text.strip()) == (0, "nothing due")
    r = cli("get", f"{ENG}/db")
    assert r.code == 3
    assert "purged on" in r.err
