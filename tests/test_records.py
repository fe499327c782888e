"""Living with the records (issue 16), in the library: history and revert, the trash,
edits without the secret, system set, rename and move, search, import — and, as the
attacker with the database key, that versions are bound to their place, rotated with the
engagement and not readable without its key.
"""

from __future__ import annotations

import pytest

from conftest import VaultFixture
from credvault import AccessDenied, AlreadyExists, IntegrityError, InvalidInput, NotFound
from credvault.importers import RawEntry, Skipped
from credvault.secret import Secret

ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def _actions(v: object, eng: str = ENG) -> list[tuple[str, str | None, str]]:
    return [(e.action, e.item, e.detail) for e in v.audit_entries(engagement=eng)]  # type: ignore[attr-defined]


# -- history --------------------------------------------------------------------------------
def test_every_change_keeps_the_previous_version(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(REF, b"second", notes="n2")
        v.credentials.edit(REF, {"username": "admin"})
        hist = v.credentials.history(REF)
        assert [(h.version, h.changed, h.current) for h in hist] == [
            (1, "created", False),
            (2, "secret, notes", False),
            (3, "username", True),
        ]
        assert all(h.by == "alice" for h in hist)
        assert "hunter2" not in repr(hist)
        old = v.credentials.get(REF, version=1)
        assert old.secret.reveal() == b"hunter2"
        assert (old.username, old.notes) == ("root", None)
        assert v.credentials.get(REF, version=2).secret.reveal() == b"second"
        assert v.get(REF).username == "admin"
        with pytest.raises(NotFound, match="no version 9"):
            v.credentials.get(REF, version=9)
        v.credentials.revert(REF, 1)
        now = v.get(REF)
        assert (now.secret.reveal(), now.username, now.system) == (b"hunter2", "root", "web1")
        assert v.credentials.history(REF)[-1].changed == "revert to version 1"
        assert len(v.credentials.history(REF)) == 4  # the revert is a version, nothing lost
        acts = _actions(v)
        assert ("get", "web1-root", "version 1") in acts
        assert ("revert", "web1-root", "to version 1") in acts


def test_a_version_envelope_is_bound_to_its_place(vault: VaultFixture, engagement: str) -> None:
    """The attacker with the database key copies an old version over the live secret (a
    silent rollback) or onto another version number: both fail to decrypt."""
    with vault.open() as v:
        v.put(REF, b"second")
        v.put(REF, b"third")
        conn = v._s.store.conn
        conn.execute(
            "UPDATE credential_versions SET secret_env = (SELECT secret_env FROM "
            "credential_versions WHERE version = 1) WHERE version = 2"
        )
        with pytest.raises(IntegrityError):
            v.credentials.get(REF, version=2)
        conn.execute(
            "UPDATE credentials SET secret_env = (SELECT secret_env FROM credential_versions "
            "WHERE version = 1) WHERE name = 'web1-root'"
        )
        with pytest.raises(IntegrityError):
            v.get(REF)


def test_rotation_re_encrypts_history_and_trash(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(REF, b"second")
        v.put(f"{ENG}/binned", b"in the trash")
        v.credentials.remove(f"{ENG}/binned")
        v.systems.remove(f"{ENG}/web1")
        before = v.engagements.get(ENG).key_version
        v.engagements.revoke(ENG, "carol")
        after = v.engagements.get(ENG).key_version
        assert after == before + 1
        conn = v._s.store.conn
        for table, col in (
            ("credential_versions", "secret_env"),
            ("credential_trash", "secret_env"),
            ("system_trash", "address_env"),
        ):
            (blob,) = conn.execute(f"SELECT {col} FROM {table}").fetchone()  # noqa: S608
            assert int.from_bytes(bytes(blob)[1:5], "big") == after, table
        assert v.credentials.get(REF, version=1).secret.reveal() == b"hunter2"
        v.credentials.restore(f"{ENG}/binned")
        assert v.get(f"{ENG}/binned").secret.reveal() == b"in the trash"
        v.systems.restore(f"{ENG}/web1")
        assert v.get(REF).address == "10.0.0.1"  # the link came back with the system


def test_history_is_metadata_for_listers_and_versions_need_read(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open() as v:
        v.put(REF, b"second")
        v.members.add("dave", passphrase=b"dave-pass")
        v.engagements.grant(ENG, "dave", "auditor")
    with vault.open("dave") as v:
        assert len(v.credentials.history(REF)) == 2
        with pytest.raises(AccessDenied):
            v.credentials.get(REF, version=1)


# -- trash ----------------------------------------------------------------------------------
def test_rm_goes_to_the_trash_and_expires(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(REF, b"second")
        expires = v.credentials.remove(REF)
        with pytest.raises(NotFound):
            v.get(REF)
        (t,) = v.credentials.trash(ENG)
        assert (t.type, t.name, t.deleted_by, t.expires_at) == (
            "credential",
            "web1-root",
            "alice",
            expires,
        )
        v.put(REF, b"a new one")  # the name is free again
        with pytest.raises(AlreadyExists):
            v.credentials.restore(REF)
        v.credentials.move(REF, "web1-root-new")
        v.credentials.restore(REF)
        assert v.get(REF).secret.reveal() == b"second"
        assert len(v.credentials.history(REF)) == 2  # history came back with it
        v.credentials.remove(REF)
    vault.clock.advance(days=29)
    with vault.open() as v:
        assert len(v.credentials.trash(ENG)) == 1
    vault.clock.advance(days=2)
    with vault.open() as v:  # expiry runs on open, no key needed
        assert v.credentials.trash(ENG) == []
        assert (
            v._s.store.conn.execute(
                "SELECT count(*) FROM credential_versions WHERE name = 'web1-root'"
            ).fetchone()[0]
            == 0
        )
        assert [e.detail for e in v.audit_entries(action="trash-expire")] == [
            "1 credentials and 0 systems destroyed"
        ]
        with pytest.raises(NotFound):
            v.credentials.restore(REF)


def test_trash_period_is_a_vault_setting(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.set_setting("trash-days", "2")
        v.credentials.remove(REF)
    vault.clock.advance(days=3)
    with vault.open() as v:
        assert v.credentials.trash(ENG) == []


# -- edit, system set ------------------------------------------------------------------------
def test_edit_changes_fields_without_reading_the_secret(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open("bob") as v:
        v.credentials.edit(
            REF,
            {
                "notes": "rotated monthly",
                "url": "https://x.example",
                "kind": "token",
                "system": None,
            },
        )
        c = v.get(REF)
        assert (c.notes, c.url, c.kind, c.system) == (
            "rotated monthly",
            "https://x.example",
            "token",
            None,
        )
        assert c.secret.reveal() == b"hunter2"
        v.credentials.edit(REF, {"url": None})
        assert v.get(REF).url is None
        with pytest.raises(InvalidInput, match="cannot edit 'secret'"):
            v.credentials.edit(REF, {"secret": "x"})
        with pytest.raises(NotFound):
            v.credentials.edit(REF, {"system": "nope"})
    with vault.open() as v:
        acts = [a for a in _actions(v) if a[1] == "web1-root"]
    edits = [a for a in acts if a[0] == "edit"]
    assert edits[0][2] == "changed notes, url, kind, system"
    # the edits themselves were no reads: only the explicit gets are
    assert [a[0] for a in acts].count("get") == 2
    with vault.open("carol") as v, pytest.raises(AccessDenied):
        v.credentials.edit(REF, {"notes": "x"})


def test_system_set_and_add_never_wipe_what_was_not_named(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open() as v:
        v.systems.set(f"{ENG}/web1", {"address": "10.0.0.2"})
        s = v.systems.show(f"{ENG}/web1")
        assert (s.address, s.port, s.protocol, s.details) == ("10.0.0.2", 22, "ssh", "debian")
        v.systems.add(f"{ENG}/web1", "10.0.0.3")  # the old wiping path
        s = v.systems.show(f"{ENG}/web1")
        assert (s.address, s.port, s.protocol, s.details) == ("10.0.0.3", 22, "ssh", "debian")
        v.systems.set(f"{ENG}/web1", {"details": None, "port": 2222})
        s = v.systems.show(f"{ENG}/web1")
        assert (s.port, s.details) == (2222, None)
        with pytest.raises(NotFound):
            v.systems.set(f"{ENG}/nope", {"port": 1})
        with pytest.raises(InvalidInput):
            v.systems.set(f"{ENG}/web1", {"port": 70000})


# -- rename and move ---------------------------------------------------------------------------
def test_rename_and_move_across_engagements(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(REF, b"second")
        v.credentials.move(REF, "root-web1")
        assert v.get(f"{ENG}/root-web1").secret.reveal() == b"second"
        v.engagements.create("beta-2026", "beta")
        v.credentials.move(f"{ENG}/root-web1", "beta-2026/web1-root")
        with pytest.raises(NotFound):
            v.get(f"{ENG}/root-web1")
        moved = v.get("beta-2026/web1-root")
        assert (moved.secret.reveal(), moved.username, moved.system) == (b"second", "root", None)
        assert v.credentials.get("beta-2026/web1-root", version=1).secret.reveal() == b"hunter2"
        beta_uid = v.engagements.get("beta-2026").uid
        (blob,) = v._s.store.conn.execute(
            "SELECT secret_env FROM credentials WHERE name = 'web1-root'"
        ).fetchone()
        assert int.from_bytes(bytes(blob)[1:5], "big") == v.engagements.get("beta-2026").key_version
        assert beta_uid
        assert ("mv", "root-web1", "moved to beta-2026/web1-root") in _actions(v)
        assert ("mv", "web1-root", f"moved from {ENG}/root-web1") in _actions(v, "beta-2026")
        v.engagements.grant("beta-2026", "carol", "reader")
        v.engagements.grant("beta-2026", "bob", "engineer")
    with vault.open("bob") as v:  # engineer on acme, engineer on beta: allowed
        v.credentials.move("beta-2026/web1-root", f"{ENG}/back")
    with vault.open("carol") as v, pytest.raises(AccessDenied):  # reader on both
        v.credentials.move(f"{ENG}/back", "beta-2026/x")


# -- search --------------------------------------------------------------------------------------
def test_find_names_for_listers_fields_for_readers(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(f"{ENG}/db-admin", b"s", notes="lives on 203.0.113.10")
        v.systems.add(f"{ENG}/gw", "203.0.113.10")
        v.members.add("dave", passphrase=b"dave-pass")
        v.engagements.grant(ENG, "dave", "auditor")
        hits = v.credentials.find("203.0.113.10")
        assert [(h.type, h.name, h.field) for h in hits] == [
            ("credential", "db-admin", "notes"),
            ("system", "gw", "address"),
        ]
        assert [(h.type, h.name) for h in v.credentials.find("WEB1")] == [
            ("credential", "web1-root"),
            ("system", "web1"),
        ]
        assert any(a[0] == "find" and "fields searched" in a[2] for a in _actions(v))
    with vault.open("dave") as v:  # an auditor may list: names only
        assert v.credentials.find("203.0.113.10") == []
        assert [h.name for h in v.credentials.find("admin")] == ["db-admin"]
    with pytest.raises(InvalidInput):
        vault.open().credentials.find("  ")


# -- import --------------------------------------------------------------------------------------
def test_import_is_all_or_nothing_and_links_hosts(vault: VaultFixture, engagement: str) -> None:
    entries: list[RawEntry | Skipped] = [
        RawEntry("g/a", "web1 root", Secret(b"dup"), "root"),  # exists: skipped
        RawEntry(
            "g/b", "db", Secret(b"db-pw"), "postgres", host="10.0.0.1", port=22, protocol="ssh"
        ),
        RawEntry("g/c", "portal", Secret(b"p"), url="https://p.example", host="192.0.2.4"),
        Skipped("g/d", "card items are not imported"),
    ]
    with vault.open() as v:
        plan = v.credentials.import_entries(ENG, entries, dry_run=True)
        assert [i.name for i in plan.items] == ["db", "portal"]
        assert [s.name for s in plan.systems] == ["192.0.2.4"]  # 10.0.0.1:22/ssh is web1
        assert {s.source for s in plan.skipped} == {"g/a", "g/d"}
        with pytest.raises(NotFound):
            v.get(f"{ENG}/db")
        v.put(f"{ENG}/portal", b"created meanwhile")
        # "portal" now exists: a fresh plan skips it; the stale plan's names are re-checked
        plan = v.credentials.import_entries(ENG, entries)
        assert [i.name for i in plan.items] == ["db"]
        db = v.get(f"{ENG}/db")
        assert (db.secret.reveal(), db.username, db.system) == (b"db-pw", "postgres", "web1")
        assert ("import", None, "1 credentials, 0 systems, 3 skipped") in _actions(v)


def test_an_import_that_fails_midway_leaves_nothing(vault: VaultFixture, engagement: str) -> None:
    entries: list[RawEntry | Skipped] = [
        RawEntry("a", "first", Secret(b"1"), host="192.0.2.50"),
        RawEntry("b", "second", Secret(b"2")),
    ]
    with vault.open() as v:
        v._s.store.conn.execute(
            "CREATE TEMP TRIGGER fail_second BEFORE INSERT ON main.credentials "
            "WHEN NEW.name = 'second' BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
        )
        with pytest.raises(Exception, match=r"constraint|error"):
            v.credentials.import_entries(ENG, entries)
        v._s.store.conn.execute("DROP TRIGGER fail_second")
        assert [c.name for c in v.credentials.list(ENG)] == ["web1-root"]
        assert [s.name for s in v.systems.list(ENG)] == ["web1"]


def test_trash_purge_destroys_now_with_the_history(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(REF, b"second")
        v.credentials.remove(REF)
        (blob,) = v._s.store.conn.execute("SELECT secret_env FROM credential_versions").fetchone()
        blob = bytes(blob)
        db_key = v._s.db_key
    with vault.open("carol") as v, pytest.raises(AccessDenied):  # a reader may not
        v.purger.destroy_trashed(REF)
    with vault.open("bob") as v:
        v.purger.destroy_trashed(REF)
        assert v.credentials.trash(ENG) == []
        assert (
            v._s.store.conn.execute("SELECT count(*) FROM credential_versions").fetchone()[0] == 0
        )
        with pytest.raises(NotFound):
            v.purger.destroy_trashed(REF)
    from test_purge import decrypted_pages

    assert blob not in decrypted_pages(vault.path, db_key)


def test_every_history_envelope_column_is_re_encrypted(vault: VaultFixture) -> None:
    """A new ``*_env`` column in a format step missing from HISTORY_SEALED would escape
    rotation (the live tables are checked against schema.sql in test_model)."""
    from credvault.model import HISTORY_SEALED

    with vault.open() as v:
        conn = v._s.store.conn
        for table, fields in HISTORY_SEALED.items():
            cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            assert {c[: -len("_env")] for c in cols if c.endswith("_env")} == set(fields)


def test_client_export_includes_history_and_trash(vault: VaultFixture, engagement: str) -> None:
    """What the vault holds about a client includes earlier versions and the trash."""
    with vault.open() as v:
        v.put(REF, b"second", notes="n2")
        v.put(f"{ENG}/gone", b"binned-secret")
        v.credentials.remove(f"{ENG}/gone")
        v.systems.add(f"{ENG}/db", "192.0.2.77", details="old box")
        v.systems.remove(f"{ENG}/db")
        (eng,) = v.clients.export("acme")["engagements"]  # type: ignore[misc]
    assert [
        (h["name"], h["version"], h["secret"], h["notes"]) for h in eng["earlier_versions"]
    ] == [("web1-root", 1, "hunter2", None)]
    assert sorted((t["type"], t["name"]) for t in eng["trash"]) == [
        ("credential", "gone"),
        ("system", "db"),
    ]
    by_type = {t["type"]: t for t in eng["trash"]}
    assert by_type["credential"]["secret"] == "binned-secret"
    assert (by_type["system"]["address"], by_type["system"]["details"]) == ("192.0.2.77", "old box")


# -- --require-reason holds for every read of decrypted fields ------------------------------------
def test_edit_fields_respect_require_reason(vault: VaultFixture, engagement: str) -> None:
    """`get --field username|url|notes` is refused without --reason on an engagement set
    with --require-reason (exit 4); Credentials.fields() -- what `credvault edit` opens in
    $EDITOR -- decrypted the same username, URL and notes with no reason at all."""
    with vault.open() as v:
        v.put(REF, b"hunter2", notes="vpn backup code 7781-2231")
        v.engagements.set_options(ENG, require_reason=True)
        with pytest.raises(AccessDenied):
            v.get(REF)  # the policy is on
        with pytest.raises(AccessDenied):
            v.credentials.fields(REF)
        assert v.credentials.fields(REF, reason="T-4")["notes"] == "vpn backup code 7781-2231"


def test_find_respects_require_reason(vault: VaultFixture, engagement: str) -> None:
    """find decrypted usernames/URLs/notes of an engagement that requires a reason for
    reads and answered substring queries on them: an oracle that recovers the notes
    character by character without ever giving a reason. Names are still searched."""
    with vault.open() as v:
        v.put(REF, b"hunter2", notes="vpn backup code 7781-2231")
        v.engagements.set_options(ENG, require_reason=True)
        hits = v.credentials.find("7781-22")
        assert not [h for h in hits if h.field == "notes"], hits
        assert [h.name for h in v.credentials.find("web1-r")] == ["web1-root"]
        hits = v.credentials.find("7781-22", reason="T-5")
        assert [(h.name, h.field) for h in hits] == [("web1-root", "notes")]


def test_otp_and_client_export_respect_require_reason(vault: VaultFixture, engagement: str) -> None:
    with vault.open() as v:
        v.put(f"{ENG}/otp", "otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSW")
        v.engagements.set_options(ENG, require_reason=True)
        with pytest.raises(AccessDenied, match="requires --reason"):
            v.credentials.otp(f"{ENG}/otp")
        assert len(v.credentials.otp(f"{ENG}/otp", reason="T-6").code) == 6
        with pytest.raises(AccessDenied, match="requires --reason"):
            v.clients.export("acme")
        assert v.clients.export("acme", reason="T-6")["client"] == "acme"
        exports = [e.detail for e in v.audit_entries(engagement=ENG, action="export")]
    assert exports[0] == "this engagement requires --reason"
    assert exports[1].startswith("2 credentials exported; reason: T-6; sha256 ")


def test_revert_after_move_does_not_link_the_targets_system(
    vault: VaultFixture, engagement: str
) -> None:
    """A move drops the system link ("systems belong to one engagement"), but the
    versions kept the old system's *name*, and revert looked that name up in the engagement
    the credential is in now: it linked the credential to an unrelated system of the same
    name in the target engagement (where `credvault ssh` would then send it)."""
    with vault.open() as v:
        v.engagements.create("other-2026", "other")
        v.systems.add("other-2026/web1", "198.51.100.7", port=22, protocol="ssh")
        v.put(REF, b"second")  # version 1 (linked to acme's web1) is now history
        v.credentials.move(REF, "other-2026/web1-root")
        assert v.get("other-2026/web1-root").system is None  # the link did not travel
        v.credentials.revert("other-2026/web1-root", 1)
        got = v.get("other-2026/web1-root")
        assert got.system is None, f"linked to {got.system} at {got.address}"
        assert [h.system for h in v.credentials.history("other-2026/web1-root")] == [None] * 3


def test_credential_and_system_both_restored_keep_their_link(
    vault: VaultFixture, engagement: str
) -> None:
    """rm a linked credential, then system rm its system; restore both: the credential's
    link was gone (credential_trash.system_id is ON DELETE SET NULL when the system leaves
    the systems table, and the system's trash entry recorded only live links). The
    careless user's undo did not undo. Now it does, in either order of restore."""
    with vault.open() as v:
        assert v.get(REF).system == "web1"
        v.credentials.remove(REF)
        v.systems.remove(f"{ENG}/web1")
        v.systems.restore(f"{ENG}/web1")
        v.credentials.restore(REF)
        assert v.get(REF).system == "web1"


def test_credential_restored_before_its_system_gets_the_link_back(
    vault: VaultFixture, engagement: str
) -> None:
    with vault.open() as v:
        v.credentials.remove(REF)
        v.systems.remove(f"{ENG}/web1")
        v.credentials.restore(REF)
        assert v.get(REF).system is None  # its system is still in the trash
        v.systems.restore(f"{ENG}/web1")
        got = v.get(REF)
        assert (got.system, got.address) == ("web1", "10.0.0.1")
