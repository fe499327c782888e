"""Record binding (issue 11, requirement 4), written as the insider.

A credential's name, kind and system link, and a system's name, port and protocol, are
clear columns; an insider with the database key and a SQL shell (``tests/insider.py``) can
write any of them. Each is bound in the AAD of its record's anchor envelope (the secret,
the address; docs/format.md §4), so every swap or edit below must end in an integrity
error, never in another record's data. The live rows, the history (credential_versions)
and the trash are attacked alike; then the honest operations that change those columns
(rename, edit, system removal and restore, revert, moves, rotation, import) must keep
working, and records of a vault written before binding must keep opening and get bound.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import sqlcipher3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    KDF,
    PASSWORDS,
    CliRunner,
    Clock,
    VaultFixture,
    copy_fixture_vault,
    separate_client,
)
from credvault import MIN_KDF, IntegrityError, NotFound, Vault
from credvault.crypto import envelope
from credvault.importers import RawEntry
from credvault.secret import Secret
from insider import Insider

ENG = "acme-2026"
FIXTURE = Path(__file__).parent / "fixtures" / "vault-format1"


def _setup(vault: VaultFixture) -> None:
    """alice leads; bob engineer, carol reader; two systems and two credentials each linked."""
    with vault.open() as v:
        v.engagements.create(ENG, "acme")
        v.engagements.grant(ENG, "bob", "engineer")
        v.engagements.grant(ENG, "carol", "reader")
        v.systems.add(f"{ENG}/prod", "10.0.0.1", port=22, protocol="ssh", details="prod box")
        v.systems.add(f"{ENG}/test", "10.9.9.9", port=2222, protocol="ssh", details="test box")
        v.put(f"{ENG}/prod-root", b"PROD-secret", username="root", system="prod")
        v.put(f"{ENG}/test-root", b"test-secret", username="tester", system="test")
        v.put(f"{ENG}/unlinked", b"unlinked-secret")


def _bob(vault: VaultFixture) -> tuple[Insider, int]:
    bob = Insider(vault.path, "bob", vault.clock)  # engineer: holds the key, but edits by SQL
    eid, _ = bob.engagement(ENG)
    return bob, eid


def _swap(bob: Insider, table: str, column: str, a: str, b: str) -> None:
    """Exchange ``column`` between the rows named ``a`` and ``b`` of ``table``."""
    ((va,),) = bob.sql(f"SELECT {column} FROM {table} WHERE name = ?", (a,))  # noqa: S608
    ((vb,),) = bob.sql(f"SELECT {column} FROM {table} WHERE name = ?", (b,))  # noqa: S608
    if column == "name":
        bob.sql(f"UPDATE {table} SET name = '~tmp' WHERE name = ?", (a,))  # noqa: S608
        a = "~tmp"
    bob.sql(f"UPDATE {table} SET {column} = ? WHERE name = ?", (va, b))  # noqa: S608
    bob.sql(f"UPDATE {table} SET {column} = ? WHERE name = ?", (vb, a))  # noqa: S608
    if column == "name":
        bob.sql(f"UPDATE {table} SET name = ? WHERE name = '~tmp'", (b,))  # noqa: S608


def _system_id(bob: Insider, name: str) -> int:
    ((sid,),) = bob.sql("SELECT id FROM systems WHERE name = ?", (name,))
    return int(sid)


# -- live credentials ----------------------------------------------------------------------------
def test_swapped_names_give_an_integrity_error_for_both(vault: VaultFixture) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    _swap(bob, "credentials", "name", "prod-root", "test-root")
    for name in ("prod-root", "test-root"):
        with vault.open("carol") as v, pytest.raises(IntegrityError):
            v.get(f"{ENG}/{name}")


def test_swapped_rows_under_kept_names_give_an_integrity_error(vault: VaultFixture) -> None:
    """Everything but the name exchanged (uid, kind, link, every envelope): the row named
    prod-root is now test-root's record under prod-root's name."""
    _setup(vault)
    bob, _ = _bob(vault)
    ((pu,),) = bob.sql("SELECT uid FROM credentials WHERE name = 'prod-root'")
    ((tu,),) = bob.sql("SELECT uid FROM credentials WHERE name = 'test-root'")
    bob.sql("UPDATE credentials SET uid = zeroblob(16) WHERE name = 'prod-root'")
    bob.sql("UPDATE credentials SET uid = ? WHERE name = 'test-root'", (pu,))
    bob.sql("UPDATE credentials SET uid = ? WHERE name = 'prod-root'", (tu,))
    for col in ("kind", "system_id", "secret_env", "username_env"):
        _swap(bob, "credentials", col, "prod-root", "test-root")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")


@pytest.mark.parametrize("kind", ["token", "ssh-key", "other"])
def test_edited_kind_gives_an_integrity_error(vault: VaultFixture, kind: str) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql("UPDATE credentials SET kind = ? WHERE name = 'prod-root'", (kind,))
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")
    with vault.open("carol") as v, pytest.raises(IntegrityError):  # the fields without the secret
        v.credentials.fields(f"{ENG}/prod-root")
    with vault.open("bob") as v, pytest.raises(IntegrityError):  # and no edit builds on it
        v.credentials.edit(f"{ENG}/prod-root", {"notes": "x"})


def test_link_moved_to_another_system_gives_an_integrity_error(vault: VaultFixture) -> None:
    """Point test-root at the production host: get must not hand out prod's address."""
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql(
        "UPDATE credentials SET system_id = ? WHERE name = 'test-root'", (_system_id(bob, "prod"),)
    )
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/test-root")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.credentials.fields(f"{ENG}/test-root")


def test_link_removed_or_added_gives_an_integrity_error(vault: VaultFixture) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql("UPDATE credentials SET system_id = NULL WHERE name = 'prod-root'")
    bob.sql(
        "UPDATE credentials SET system_id = ? WHERE name = 'unlinked'", (_system_id(bob, "prod"),)
    )
    for name in ("prod-root", "unlinked"):
        with vault.open("carol") as v, pytest.raises(IntegrityError):
            v.get(f"{ENG}/{name}")


def test_anchor_relabelled_as_unbound_gives_an_integrity_error(vault: VaultFixture) -> None:
    """The format byte: a bound secret relabelled 0x01 does not open as an unbound one."""
    _setup(vault)
    bob, _ = _bob(vault)
    ((blob,),) = bob.sql("SELECT secret_env FROM credentials WHERE name = 'prod-root'")
    assert bytes(blob)[0] == 2
    bob.sql(
        "UPDATE credentials SET secret_env = ? WHERE name = 'prod-root'",
        (b"\x01" + bytes(blob)[1:],),
    )
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")


def test_the_audit_trail_records_the_failed_read(vault: VaultFixture) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    _swap(bob, "credentials", "name", "prod-root", "test-root")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")
    with vault.open() as v:
        failed = [e for e in v.audit_entries(action="get") if e.outcome == "error"]
    assert [(e.member, e.item) for e in failed] == [("carol", "prod-root")]


# -- systems -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE systems SET port = 2222 WHERE name = 'prod'",
        "UPDATE systems SET port = NULL WHERE name = 'prod'",
        "UPDATE systems SET port = 'x22' WHERE name = 'prod'",  # not even a number
        "UPDATE systems SET protocol = 'rdp' WHERE name = 'prod'",
        "UPDATE systems SET protocol = NULL WHERE name = 'prod'",
    ],
)
def test_edited_port_or_protocol_gives_an_integrity_error(vault: VaultFixture, sql: str) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql(sql)
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.systems.show(f"{ENG}/prod")
    with vault.open("carol") as v, pytest.raises(IntegrityError):  # the linked credential too
        v.get(f"{ENG}/prod-root")


def test_swapped_system_names_give_an_integrity_error(vault: VaultFixture) -> None:
    """Rename test to prod and back: `system show prod` must not give the test host (nor
    the reverse), and the credentials linked to either fail rather than point elsewhere."""
    _setup(vault)
    bob, _ = _bob(vault)
    _swap(bob, "systems", "name", "prod", "test")
    for name in ("prod", "test"):
        with vault.open("carol") as v, pytest.raises(IntegrityError):
            v.systems.show(f"{ENG}/{name}")
    for name in ("prod-root", "test-root"):
        with vault.open("carol") as v, pytest.raises(IntegrityError):
            v.get(f"{ENG}/{name}")


def test_swapped_system_addresses_give_an_integrity_error(vault: VaultFixture) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    _swap(bob, "systems", "address_env", "prod", "test")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.systems.show(f"{ENG}/prod")


# -- history -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE credential_versions SET name = 'test-root'",
        "UPDATE credential_versions SET kind = 'token'",
        "UPDATE credential_versions SET system = 'test'",
        "UPDATE credential_versions SET system = NULL",
    ],
)
def test_edited_history_row_gives_an_integrity_error(vault: VaultFixture, sql: str) -> None:
    """Version 1 of prod-root (linked to prod) is kept when version 2 is written; its clear
    columns are what a revert restores, so they are bound like the live row's."""
    _setup(vault)
    with vault.open() as v:
        v.put(f"{ENG}/prod-root", b"PROD-secret-2")
    bob, _ = _bob(vault)
    bob.sql(sql)
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.credentials.get(f"{ENG}/prod-root", version=1)
    with vault.open("bob") as v, pytest.raises(IntegrityError):  # revert would link `test`
        v.credentials.revert(f"{ENG}/prod-root", 1)
    with vault.open() as v:  # nothing was written by the refused revert
        assert v.get(f"{ENG}/prod-root").secret.reveal() == b"PROD-secret-2"


def test_history_rows_swapped_between_credentials_give_an_integrity_error(
    vault: VaultFixture,
) -> None:
    _setup(vault)
    with vault.open() as v:
        v.put(f"{ENG}/prod-root", b"PROD-2")
        v.put(f"{ENG}/test-root", b"test-2")
    bob, _ = _bob(vault)
    rows = bob.sql("SELECT id, name, kind, system, secret_env FROM credential_versions")
    (p_id, *p), (t_id, *t) = sorted(rows, key=lambda r: r[1])
    for rid, (name, kind, system, env) in ((p_id, t), (t_id, p)):
        bob.sql(
            "UPDATE credential_versions SET name = ?, kind = ?, system = ?, secret_env = ? "
            "WHERE id = ?",
            (name, kind, system, env, rid),
        )
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.credentials.get(f"{ENG}/prod-root", version=1)


# -- trash ---------------------------------------------------------------------------------------
def test_edited_trashed_credential_gives_an_integrity_error_after_restore(
    vault: VaultFixture,
) -> None:
    _setup(vault)
    with vault.open() as v:
        v.credentials.remove(f"{ENG}/prod-root")
        v.credentials.remove(f"{ENG}/test-root")
    bob, _ = _bob(vault)
    _swap(bob, "credential_trash", "name", "prod-root", "test-root")
    with vault.open() as v, pytest.raises(IntegrityError):  # the export reads the trash
        v.clients.export("acme")
    with vault.open("bob") as v:
        v.credentials.restore(f"{ENG}/prod-root")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.get(f"{ENG}/prod-root")


def test_edited_trashed_system_gives_an_integrity_error(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open() as v:
        v.systems.remove(f"{ENG}/prod")
    bob, _ = _bob(vault)
    bob.sql("UPDATE system_trash SET port = 3389, protocol = 'rdp'")
    with vault.open() as v, pytest.raises(IntegrityError):
        v.clients.export("acme")
    with vault.open("bob") as v:
        v.systems.restore(f"{ENG}/prod")
    with vault.open("carol") as v, pytest.raises(IntegrityError):
        v.systems.show(f"{ENG}/prod")


# -- the honest operations that change bound columns keep working --------------------------------
def test_rename_edit_and_revert_keep_working(vault: VaultFixture) -> None:
    _setup(vault)
    with vault.open("bob") as v:
        v.credentials.move(f"{ENG}/prod-root", "prod-admin")
        v.credentials.edit(f"{ENG}/prod-admin", {"kind": "token", "system": "test"})
        c = v.get(f"{ENG}/prod-admin")
        assert (c.secret.reveal(), c.kind, c.system, c.address, c.port) == (
            b"PROD-secret",
            "token",
            "test",
            "10.9.9.9",
            2222,
        )
        v.credentials.edit(f"{ENG}/prod-admin", {"system": None})
        assert v.get(f"{ENG}/prod-admin").address is None
        v.credentials.revert(f"{ENG}/prod-admin", 1)  # kind password, linked to prod again
        c = v.get(f"{ENG}/prod-admin")
        assert (c.kind, c.system, c.address) == ("password", "prod", "10.0.0.1")
        assert v.credentials.get(f"{ENG}/prod-admin", version=2).kind == "token"
        assert v.credentials.fields(f"{ENG}/prod-admin")["system"] == "prod"
        v.put(f"{ENG}/prod-admin", b"PROD-3", kind="ssh-key", system="test")
        assert v.get(f"{ENG}/prod-admin").address == "10.9.9.9"


def test_system_removal_and_restore_keep_linked_credentials_readable(
    vault: VaultFixture,
) -> None:
    """Removing a system drops the link of the credentials (live and trashed) linked to it,
    restoring it brings the link back: both seal their anchors again."""
    _setup(vault)
    with vault.open("bob") as v:
        v.credentials.remove(f"{ENG}/test-root")
        v.credentials.edit(f"{ENG}/unlinked", {"system": "prod"})
        v.systems.remove(f"{ENG}/prod")
        c = v.get(f"{ENG}/prod-root")
        assert (c.secret.reveal(), c.system, c.address) == (b"PROD-secret", None, None)
        v.systems.set(f"{ENG}/test", {"port": 2200, "protocol": "sftp"})
        v.systems.remove(f"{ENG}/test")  # test-root is in the trash, linked to it
        v.systems.restore(f"{ENG}/prod")
        v.systems.restore(f"{ENG}/test")
        v.credentials.restore(f"{ENG}/test-root")
    with vault.open("carol") as v:
        for name, addr in (("prod-root", "10.0.0.1"), ("unlinked", "10.0.0.1")):
            assert v.get(f"{ENG}/{name}").address == addr
        c = v.get(f"{ENG}/test-root")
        assert (c.secret.reveal(), c.address, c.port) == (b"test-secret", "10.9.9.9", 2200)
        assert v.systems.show(f"{ENG}/test").protocol == "sftp"


def test_rotation_move_import_and_export_keep_working(vault: VaultFixture, tmp_path: Path) -> None:
    _setup(vault)
    with vault.open() as v:
        v.engagements.create("other-2026", "acme")
        v.put(f"{ENG}/prod-root", b"PROD-2")
        v.credentials.remove(f"{ENG}/unlinked")
        v.systems.remove(f"{ENG}/test")
        v.engagements.rotate(ENG)
        v.credentials.move(f"{ENG}/prod-root", "other-2026/moved")
        assert v.credentials.get("other-2026/moved", version=1).secret.reveal() == b"PROD-secret"
        v.engagements.rotate("other-2026")
        v.credentials.revert("other-2026/moved", 1)  # its system stayed behind: no link
        assert v.get("other-2026/moved").system is None
        v.credentials.import_entries(
            ENG,
            [
                RawEntry(
                    "line 1", "db-root", Secret(b"db-secret"), username="root",
                    host="10.0.0.5", port=5432, protocol="postgres",
                )
            ],
        )  # fmt: skip
        v.credentials.put_many(ENG, [("bulk-1", b"b1")], kind="token")
        v.credentials.restore(f"{ENG}/unlinked")
        v.systems.restore(f"{ENG}/test")
        v.engagements.rotate(ENG)
        doc = v.clients.export("acme")
    with vault.open("carol") as v:
        assert v.get(f"{ENG}/db-root").port == 5432
        assert v.get(f"{ENG}/bulk-1").kind == "token"
        assert v.get(f"{ENG}/test-root").address == "10.9.9.9"
        assert v.get(f"{ENG}/unlinked").secret.reveal() == b"unlinked-secret"
    assert doc is not None


# -- through the CLI -----------------------------------------------------------------------------
def test_cli_get_of_a_swapped_record_exits_6_with_one_line(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    path = Path(cli_env["CREDVAULT_VAULT"])
    clock = Clock()
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        v.systems.add(f"{ENG}/prod", "10.0.0.1", port=22, protocol="ssh")
        v.put(f"{ENG}/prod-root", b"PROD-secret", system="prod")
        v.put(f"{ENG}/test-root", b"test-secret")
    alice = Insider(path, "alice", clock)
    _swap(alice, "credentials", "name", "prod-root", "test-root")
    alice.sql("UPDATE systems SET port = 2222")
    for args in (("get", f"{ENG}/prod-root"), ("get", f"{ENG}/test-root", "--json")):
        r = cli_vault(*args)
        assert r.code == 6, r.err
        assert r.out == b""
        assert len(r.err.strip().splitlines()) == 1, r.err
        assert b"secret" not in r.err.encode()
    r = cli_vault("system", "show", f"{ENG}/prod")
    assert (r.code, r.out, len(r.err.strip().splitlines())) == (6, b"", 1), r.err


# -- records written before binding (upgraded vaults) --------------------------------------------
@pytest.fixture
def old_vault(tmp_path: Path) -> Path:
    return copy_fixture_vault(FIXTURE, tmp_path / "vault")


def _open(path: Path, member: str = "alice") -> Vault:
    return Vault.open(path, member, f"{member}-pass", kdf=MIN_KDF)


def _anchors(ins: Insider) -> dict[str, int]:
    rows = ins.sql("SELECT name, secret_env FROM credentials")
    rows += ins.sql("SELECT name, address_env FROM systems")
    return {str(n): bytes(b)[0] for n, b in rows}


def test_upgraded_records_open_unbound_and_the_next_lead_binds_them(
    old_vault: Path, tmp_path: Path
) -> None:
    """The upgrade changes no envelope (bob, an engineer, upgrades it and reads the old
    records) but marks every engagement for rotation; the lead's next open rotates, which
    binds every record. An unbound anchor kept from before does not open afterwards."""
    with _open(old_vault, "bob") as v:
        assert v.get("acme-2026/web1-root").address == "203.0.113.10"
    clock = Clock()
    bob = Insider(old_vault, "bob", clock)
    assert set(_anchors(bob).values()) == {1}  # nothing re-sealed by the upgrade
    assert bob.sql("SELECT name, needs_rotation, key_version FROM engagements") == [
        ("acme-2026", 1, 1)
    ]
    assert bob.sql("SELECT * FROM record_binding") == []
    ((old_secret,),) = bob.sql("SELECT secret_env FROM credentials WHERE name = 'web1-root'")
    with _open(old_vault) as v:  # alice leads acme-2026 in the fixture: her open rotates
        rotations = v.audit_entries(action="rotate")
    assert [e.engagement for e in rotations] == ["acme-2026"]
    assert set(_anchors(bob).values()) == {2}
    ((eid, since),) = bob.sql("SELECT engagement_id, key_version FROM record_binding")
    assert bob.sql("SELECT key_version, needs_rotation FROM engagements WHERE id = ?", (eid,)) == [
        (since, 0)
    ]
    _swap(bob, "credentials", "name", "web1-root", "api-token")
    with _open(old_vault, "bob") as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")
    _swap(bob, "credentials", "name", "web1-root", "api-token")
    with _open(old_vault, "bob") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"format1-secret"
    # The unbound anchor kept from before the rotation does not open any more.
    bob.sql("UPDATE credentials SET secret_env = ? WHERE name = 'web1-root'", (old_secret,))
    with _open(old_vault, "bob") as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")


def test_before_the_lead_comes_by_unbound_records_can_still_be_swapped(
    old_vault: Path,
) -> None:
    """The documented window (docs/limitations.md): between the upgrade and the lead's
    rotation, records written before the upgrade are not bound. A record created bound in
    that window is not: swapping its name with an unbound one fails on the bound side."""
    with _open(old_vault, "bob") as v:
        v.put("acme-2026/new-root", b"NEW-secret")
    bob = Insider(old_vault, "bob", Clock())
    _swap(bob, "credentials", "name", "web1-root", "new-root")
    with _open(old_vault, "bob") as v:
        with pytest.raises(IntegrityError):
            v.get("acme-2026/web1-root")  # the bound record under another name
        # the unbound one under the bound one's name: not detectable until bound
        assert v.get("acme-2026/new-root").secret.reveal() == b"format1-secret"


def test_a_write_binds_an_upgraded_record(old_vault: Path) -> None:
    with _open(old_vault, "bob") as v:  # an engineer: no rotation at open
        v.credentials.edit("acme-2026/web1-root", {"notes": "rack 5"})
        v.systems.set("acme-2026/web1", {"details": "moved"})
    bob = Insider(old_vault, "bob", Clock())  # not alice: her open would rotate
    anchors = _anchors(bob)
    assert (anchors["web1-root"], anchors["web1"], anchors["api-token"]) == (2, 2, 1)
    bob.sql("UPDATE credentials SET kind = 'token' WHERE name = 'web1-root'")
    with _open(old_vault, "bob") as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")
    bob.sql("UPDATE systems SET port = 1")
    with _open(old_vault, "bob") as v, pytest.raises(IntegrityError):
        v.systems.show("acme-2026/web1")


def test_unbound_anchor_under_a_bound_key_version_is_refused(vault: VaultFixture) -> None:
    """No code writes an unbound anchor any more, so under a key version from which every
    record is bound one can only be forged (with the key): refused by name, not opened."""
    _setup(vault)
    with vault.open() as v:
        v.engagements.rotate(ENG)
        eng = v.engagements.get(ENG)
        key = v.engagements.key(eng, "credential.get")
        bob, _ = _bob(vault)
        ((uid,),) = bob.sql("SELECT uid FROM credentials WHERE name = 'test-root'")
        place = envelope.Place(bytes(v._s.vault_id), eng.uid, "credentials", bytes(uid), "secret")
        forged = envelope.seal(place, b"forged", key, eng.key_version)
    assert forged[0] == 1
    bob.sql("UPDATE credentials SET secret_env = ? WHERE name = 'test-root'", (forged,))
    with vault.open("carol") as v, pytest.raises(IntegrityError, match="without its binding"):
        v.get(f"{ENG}/test-root")


def test_rotation_refuses_to_bind_a_tampered_record(vault: VaultFixture) -> None:
    """Rotation opens every anchor with its binding first: tampered columns are not
    laundered into a fresh seal."""
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql("UPDATE credentials SET kind = 'token' WHERE name = 'prod-root'")
    with vault.open() as v, pytest.raises(IntegrityError):
        v.engagements.rotate(ENG)
    bob.sql("UPDATE credentials SET kind = 'password' WHERE name = 'prod-root'")
    with vault.open("carol") as v:
        assert v.get(f"{ENG}/prod-root").secret.reveal() == b"PROD-secret"


def test_format_version_rewound_from_3_is_tampering(vault: VaultFixture) -> None:
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql("UPDATE meta SET value = 2 WHERE key = 'format_version'")
    with pytest.raises(IntegrityError):  # a client that saw the logs: its witness refuses
        vault.open().close()
    separate_client(vault.path)  # and a new client: the upgrade's own check refuses
    with pytest.raises(IntegrityError, match="claims format 2"):
        vault.open().close()


def test_export_document_carries_the_bound_values(vault: VaultFixture, tmp_path: Path) -> None:
    _setup(vault)
    with vault.open() as v:
        v.put(f"{ENG}/prod-root", b"PROD-2")
        v.credentials.remove(f"{ENG}/test-root")
        doc = json.loads(v.clients.export_bytes("acme"))
    (eng,) = doc["engagements"]
    assert [c["name"] for c in eng["earlier_versions"]] == ["prod-root"]
    assert [t["name"] for t in eng["trash"]] == ["test-root"]


def test_writes_on_a_tampered_record_are_refused_and_change_nothing(vault: VaultFixture) -> None:
    """A rename, an edit, or removing the linked system each open the anchor with the
    columns as they are before re-sealing it: a tampered record is refused (exit 6) inside
    the transaction, and no fresh seal launders the edited columns."""
    _setup(vault)
    bob, _ = _bob(vault)
    bob.sql("UPDATE credentials SET kind = 'token' WHERE name = 'prod-root'")
    before = bob.sql("SELECT * FROM credentials ORDER BY id")
    with vault.open("bob") as v:
        for attempt in (
            lambda: v.credentials.move(f"{ENG}/prod-root", "renamed"),
            lambda: v.credentials.edit(f"{ENG}/prod-root", {"system": "test"}),
            lambda: v.systems.remove(f"{ENG}/prod"),
            lambda: v.put(f"{ENG}/prod-root", b"overwrite"),
        ):
            with pytest.raises(IntegrityError):
                attempt()
    assert bob.sql("SELECT * FROM credentials ORDER BY id") == before
    assert [r[0] for r in bob.sql("SELECT name FROM systems ORDER BY name")] == ["prod", "test"]


# -- the property: any SQL edit of bound columns, never another record's data ----------------
BOUND_EDITS = {
    "credentials": ("name", "kind", "system_id"),
    "systems": ("name", "port", "protocol"),
}
CRED_NAMES = ("prod-root", "test-root", "unlinked")
SYS_NAMES = ("prod", "test")


def _truth(v: Vault) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for n in CRED_NAMES:
        c = v.get(f"{ENG}/{n}")
        out[n] = (c.secret.reveal(), c.kind, c.system, c.address, c.port, c.username)
    for n in SYS_NAMES:
        s = v.systems.show(f"{ENG}/{n}")
        out[n] = (s.address, s.port, s.protocol, s.details)
    return out


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_edit_of_bound_columns_never_returns_another_records_data(
    vault: VaultFixture, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Random swaps and edits of the bound columns (one to three); then every read either
    refuses (IntegrityError, NotFound) or returns exactly what that name held before."""
    if not (vault.path / "ready").exists():
        _setup(vault)
        (vault.path / "ready").touch()
    separate_client(vault.path)  # each example's edited copy is a fork of this vault
    with vault.open("carol") as v:
        truth = _truth(v)
    path = tmp_path_factory.mktemp("edited") / "vault"
    shutil.copytree(vault.path, path)
    ins = Insider(path, "alice", vault.clock)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        table = data.draw(st.sampled_from(sorted(BOUND_EDITS)), label="table")
        column = data.draw(st.sampled_from(BOUND_EDITS[table]), label="column")
        names = CRED_NAMES if table == "credentials" else SYS_NAMES
        a, b = data.draw(st.permutations(names), label="rows")[:2]
        if data.draw(st.booleans(), label="swap"):
            with contextlib.suppress(sqlcipher3.Error, ValueError):  # a row renamed away
                _swap(ins, table, column, a, b)
        else:
            pool = {
                "name": ["renamed"],
                "kind": ["password", "token", "ssh-key", "other"],
                "system_id": [None, *(r[0] for r in ins.sql("SELECT id FROM systems"))],
                "port": [None, 22, 2222, 1],
                "protocol": [None, "ssh", "rdp"],
            }[column]
            value = data.draw(st.sampled_from(pool), label="value")
            with contextlib.suppress(sqlcipher3.Error):
                ins.sql(f"UPDATE {table} SET {column} = ? WHERE name = ?", (value, a))  # noqa: S608
    separate_client(path)
    with Vault.open(path, "carol", PASSWORDS["carol"], kdf=KDF, clock=vault.clock) as v:
        for n in CRED_NAMES:
            try:
                c = v.get(f"{ENG}/{n}")
            except (IntegrityError, NotFound):
                continue
            got = (c.secret.reveal(), c.kind, c.system, c.address, c.port, c.username)
            assert got == truth[n], n
        for n in SYS_NAMES:
            try:
                s = v.systems.show(f"{ENG}/{n}")
            except (IntegrityError, NotFound):
                continue
            assert (s.address, s.port, s.protocol, s.details) == truth[n], n
    shutil.rmtree(path.parent)
