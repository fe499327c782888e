"""Tampering (spec §4.3, §10): ciphertext moved by direct SQL with the database key fails
its AEAD instead of returning another secret; a damaged database or key-slot file and a
wrong passphrase get their distinct errors (6 and 5), and nothing in the vault changes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3

from conftest import KDF, PASSWORDS, CliRunner, Clock, VaultFixture
from credvault import InMemory, Vault
from credvault.errors import (
    AccessDenied,
    CredvaultError,
    IntegrityError,
    NotAVault,
    NotFound,
    UnsupportedFormat,
    WrongPassphrase,
)
from credvault.keyslots import MemberKeys

PAGE = 4096


class Template:
    def __init__(self, path: Path, recovery_key: str, db_key: bytes, keys: MemberKeys) -> None:
        self.path = path
        self.recovery_key = recovery_key
        self.db_key = db_key
        self.keys = keys


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Two engagements led by alice: acme-2026 (web1, db1; web1-root, db-root, bob engineer)
    and beta-2026 (db-pass)."""
    path = tmp_path_factory.mktemp("template") / "vault"
    clock = Clock()
    res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    assert res.recovery_key is not None
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create("acme-2026", "acme")
        v.engagements.grant("acme-2026", "bob", "engineer")
        v.systems.add("acme-2026/web1", "10.0.0.1", port=22, details="debian")
        v.systems.add("acme-2026/db1", "10.0.0.2", port=5432, details="postgres")
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root", system="web1")
        v.credentials.put("acme-2026/db-root", b"second-secret", username="postgres")
        v.engagements.create("beta-2026", "beta")
        v.credentials.put("beta-2026/db-pass", b"other-secret", username="admin")
        return Template(path, res.recovery_key, bytes(v._s.db_key), v.member_keys())


@pytest.fixture
def vault(template: Template, tmp_path: Path) -> VaultFixture:
    shutil.copytree(template.path, tmp_path / "vault")
    return VaultFixture(tmp_path / "vault", Clock(), template.recovery_key)


def _sql(path: Path, key: bytes, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL by hand on the closed vault, as an insider holding the database key would."""
    conn = sqlcipher3.connect(str(path / "vault.db"), isolation_level=None)
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return rows


def _files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


def _unchanged(path: Path, before: dict[str, bytes]) -> None:
    """Every file as it was; SQLite may leave an empty WAL and its index behind."""
    after = _files(path)
    if "vault.db-wal" not in before and after.get("vault.db-wal", b"") == b"":
        after.pop("vault.db-wal", None)
        after.pop("vault.db-shm", None)
    assert after == before


def _audit_outcomes(vault: VaultFixture, item: str) -> list[str]:
    with vault.open() as v:
        return [e.outcome for e in v.audit_entries(action="get") if e.item == item]


# -- moved ciphertext ------------------------------------------------------------------------
def _swap(path: Path, key: bytes, table: str, column: str, a: str, b: str) -> None:
    rows = dict(_sql(path, key, f"SELECT name, {column} FROM {table} WHERE name IN (?, ?)", (a, b)))  # noqa: S608
    assert rows[a] != rows[b]
    for name, other in ((a, b), (b, a)):
        _sql(path, key, f"UPDATE {table} SET {column} = ? WHERE name = ?", (rows[other], name))  # noqa: S608


def test_secrets_swapped_between_credentials(vault: VaultFixture, template: Template) -> None:
    _swap(vault.path, template.db_key, "credentials", "secret_env", "web1-root", "db-root")
    with vault.open() as v:
        for ref in ("acme-2026/web1-root", "acme-2026/db-root"):
            with pytest.raises(IntegrityError):
                v.get(ref)
        assert v.get("beta-2026/db-pass").secret.reveal() == b"other-secret"
    assert _audit_outcomes(vault, "web1-root") == ["error"]  # the failed read is on record


def test_whole_envelope_rows_swapped(vault: VaultFixture, template: Template) -> None:
    for column in ("secret_env", "username_env"):
        _swap(vault.path, template.db_key, "credentials", column, "web1-root", "db-root")
    with vault.open() as v:
        for ref in ("acme-2026/web1-root", "acme-2026/db-root"):
            with pytest.raises(IntegrityError):
                v.get(ref)


def test_value_moved_to_another_field(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE credentials SET username_env = secret_env WHERE name = 'web1-root'",
    )
    with vault.open() as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")


def test_ciphertext_copied_into_another_engagement(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE credentials SET secret_env = "
        "(SELECT secret_env FROM credentials WHERE name = 'web1-root') WHERE name = 'db-pass'",
    )
    with vault.open() as v:
        with pytest.raises(IntegrityError):
            v.get("beta-2026/db-pass")
        assert v.get("acme-2026/web1-root").secret.reveal() == b"hunter2"


def test_row_moved_to_another_engagement(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE credentials SET engagement_id = (SELECT id FROM engagements "
        "WHERE name = 'beta-2026'), system_id = NULL WHERE name = 'web1-root'",
    )
    with vault.open() as v:
        with pytest.raises(IntegrityError):
            v.get("beta-2026/web1-root")
        with pytest.raises(NotFound):
            v.get("acme-2026/web1-root")


def test_row_given_another_record_id(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE credentials SET uid = randomblob(16) WHERE name = 'web1-root'",
    )
    with vault.open() as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")


def test_system_addresses_swapped(vault: VaultFixture, template: Template) -> None:
    _swap(vault.path, template.db_key, "systems", "address_env", "web1", "db1")
    with vault.open() as v:
        for ref in ("acme-2026/web1", "acme-2026/db1"):
            with pytest.raises(IntegrityError):
                v.systems.show(ref)
        with pytest.raises(IntegrityError):  # web1-root shows web1's address
            v.get("acme-2026/web1-root")


def test_system_details_moved_to_a_credential(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE credentials SET notes_env = (SELECT details_env FROM systems WHERE name = 'web1') "
        "WHERE name = 'web1-root'",
    )
    with vault.open() as v, pytest.raises(IntegrityError):
        v.get("acme-2026/web1-root")


def test_envelope_key_version_rewritten(vault: VaultFixture, template: Template) -> None:
    blob = bytes(
        _sql(
            vault.path, template.db_key, "SELECT secret_env FROM credentials WHERE name = 'db-root'"
        )[0][0]
    )
    for version in (0, 2):
        forged = blob[:1] + version.to_bytes(4, "big") + blob[5:]
        _sql(
            vault.path,
            template.db_key,
            "UPDATE credentials SET secret_env = ? WHERE name = 'db-root'",
            (forged,),
        )
        with vault.open() as v, pytest.raises(CredvaultError) as e:
            v.get("acme-2026/db-root")
        assert isinstance(e.value, IntegrityError)


def test_engagement_id_rewritten(vault: VaultFixture, template: Template) -> None:
    """Every grant and envelope is bound to the engagement id: no secret comes out (the
    grants' signatures fail first, which credvault reports as "no grant")."""
    _sql(
        vault.path,
        template.db_key,
        "UPDATE engagements SET uid = randomblob(16) WHERE name = 'acme-2026'",
    )
    with vault.open() as v, pytest.raises((IntegrityError, AccessDenied)):
        v.get("acme-2026/web1-root")


def test_database_of_another_vault(vault: VaultFixture, template: Template) -> None:
    _sql(
        vault.path,
        template.db_key,
        "UPDATE meta SET value = ? WHERE key = 'vault_id'",
        ("00" * 16,),
    )
    before = _files(vault.path)
    with pytest.raises(IntegrityError):
        vault.open()
    assert _files(vault.path) == before


def test_newer_database_format_is_refused(vault: VaultFixture, template: Template) -> None:
    _sql(vault.path, template.db_key, "UPDATE meta SET value = 99 WHERE key = 'format_version'")
    with pytest.raises(UnsupportedFormat, match="newer"):
        vault.open()


# -- damaged files ---------------------------------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _reset(path: Path, clean: bytes) -> None:
    """The database as it was, with no WAL left over from the previous round."""
    for name in ("vault.db-wal", "vault.db-shm"):
        (path / name).unlink(missing_ok=True)
    (path / "vault.db").write_bytes(clean)


def _open_cheap(path: Path, keys: MemberKeys) -> Vault:
    """Open without Argon2id (the unlocked keys held in memory)."""
    return Vault.open(path, "alice", InMemory(keys), kdf=KDF)


@pytest.mark.parametrize("offset", [0, 20, 100, PAGE - 1], ids=lambda o: f"byte{o}")
def test_flipped_byte_in_page_one(vault: VaultFixture, offset: int) -> None:
    _flip(vault.path / "vault.db", offset)
    before = _files(vault.path)
    with pytest.raises(IntegrityError):
        vault.open()
    assert _files(vault.path) == before


def test_flipped_byte_in_a_later_page(vault: VaultFixture, template: Template) -> None:
    """Every later page whose damage stops the open gives IntegrityError and no change; a
    page the open does not need is caught when read, and never yields a wrong value."""
    db = vault.path / "vault.db"
    clean = db.read_bytes()
    refused = []
    for page in range(1, len(clean) // PAGE):
        _reset(vault.path, clean)
        _flip(db, page * PAGE + 200)
        before = _files(vault.path)
        try:
            v = _open_cheap(vault.path, template.keys)
        except IntegrityError:
            refused.append(page)
            _unchanged(vault.path, before)
            continue
        with v:
            for ref, value in (
                ("acme-2026/web1-root", b"hunter2"),
                ("beta-2026/db-pass", b"other-secret"),
            ):
                try:
                    got = v.get(ref).secret.reveal()
                except IntegrityError:
                    continue
                assert got == value, (page, ref)
    assert refused, "no later page stopped the open"


def test_flipped_byte_in_every_later_page_is_an_integrity_error(
    vault: VaultFixture, template: Template
) -> None:
    db = vault.path / "vault.db"
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // PAGE):
        data[page * PAGE + 300] ^= 0x80
    db.write_bytes(bytes(data))
    before = _files(vault.path)
    with pytest.raises(IntegrityError):
        _open_cheap(vault.path, template.keys)
    assert _files(vault.path) == before


@pytest.mark.parametrize("keep", [2, 100, PAGE, PAGE + 1, "half", "all-but-a-page"])
def test_truncated_database(vault: VaultFixture, template: Template, keep: int | str) -> None:
    db = vault.path / "vault.db"
    data = db.read_bytes()
    n = {"half": len(data) // 2, "all-but-a-page": len(data) - PAGE}.get(str(keep), keep)
    assert isinstance(n, int)
    db.write_bytes(data[:n])
    before = _files(vault.path)

    def open_and_read() -> None:
        with _open_cheap(vault.path, template.keys) as v:
            v.get("acme-2026/web1-root")
            v.get("beta-2026/db-pass")

    with pytest.raises(IntegrityError):
        open_and_read()
    _unchanged(vault.path, before)


@pytest.mark.parametrize("data", [b"", b"S"], ids=["0", "1"])
def test_database_truncated_to_nothing(
    vault: VaultFixture, template: Template, data: bytes
) -> None:
    (vault.path / "vault.db").write_bytes(data)
    before = _files(vault.path)
    try:
        with pytest.raises(IntegrityError):
            _open_cheap(vault.path, template.keys)
    finally:
        assert _files(vault.path) == before


def test_database_missing_its_last_byte_is_refused(vault: VaultFixture, template: Template) -> None:
    db = vault.path / "vault.db"
    db.write_bytes(db.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        _open_cheap(vault.path, template.keys).close()


@pytest.fixture(scope="module")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A vault whose credentials table spans many pages."""
    path = tmp_path_factory.mktemp("big") / "vault"
    res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    assert res.recovery_key is not None
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-2026", "acme")
        v.credentials.put_many("acme-2026", [(f"c{i:03d}", b"x" * 200) for i in range(200)])
        return Template(path, res.recovery_key, bytes(v._s.db_key), v.member_keys())


def test_every_damaged_page_gives_integrity_errors_only(
    big_template: Template, tmp_path: Path
) -> None:
    shutil.copytree(big_template.path, tmp_path / "vault")
    db = tmp_path / "vault" / "vault.db"
    clean = db.read_bytes()
    raw: list[tuple[int, str, str]] = []
    for page in range(1, len(clean) // PAGE):
        _reset(tmp_path / "vault", clean)
        _flip(db, page * PAGE + 300)
        step = "open"
        try:
            with _open_cheap(tmp_path / "vault", big_template.keys) as v:
                step = "list"
                assert len(v.credentials.list("acme-2026")) == 200
                step = "audit verify"
                v.audit_verify()
                step = "integrity check"
                v.integrity_check()
        except CredvaultError as e:
            if not isinstance(e, IntegrityError):
                raw.append((page, step, type(e).__name__))
        except Exception as e:
            raw.append((page, step, f"{type(e).__module__}.{type(e).__name__}"))
    assert raw == []


# -- wrong passphrase and the CLI's distinct exit codes --------------------------------------
def test_wrong_passphrase_changes_nothing(vault: VaultFixture) -> None:
    before = _files(vault.path)
    for member, pw in (("alice", "bob-pass"), ("bob", "alice-pass"), ("alice", "")):
        with pytest.raises(WrongPassphrase):
            Vault.open(vault.path, member, pw or "x", kdf=KDF)
    after = _files(vault.path)
    for name in ("vault.db", "keyslots.json"):
        assert after[name] == before[name]
    assert not {n for n in after if n.startswith("vault.db-")}  # nothing opened the database


def test_not_a_vault(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(NotAVault):
            Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF)
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.fixture
def fresh(template: Template, tmp_path: Path) -> Path:
    target = tmp_path / "cli-vault"
    shutil.copytree(template.path, target)
    return target


def _damage_slots(path: Path) -> None:
    text = (path / "keyslots.json").read_text()
    (path / "keyslots.json").write_text(text.replace('"admin": false', '"admin": true', 1))


def _truncate_db(path: Path) -> None:
    data = (path / "vault.db").read_bytes()
    (path / "vault.db").write_bytes(data[: len(data) // 2])


CASES = [
    ("wrong-passphrase", None, {"CREDVAULT_PASSPHRASE_FILE": "TEST_PASS_BOB"}, 5),
    ("tampered-key-slots", _damage_slots, {}, 6),
    ("flipped-page-1", lambda p: _flip(p / "vault.db", 64), {}, 6),
    ("truncated-db", _truncate_db, {}, 6),
    ("unknown-member", None, {"CREDVAULT_MEMBER": "mallory"}, 3),
]


@pytest.mark.cli
@pytest.mark.parametrize(("case", "damage", "env", "code"), CASES, ids=[c[0] for c in CASES])
def test_cli_distinct_exit_codes_and_nothing_changed(
    cli: CliRunner,
    cli_env: dict[str, str],
    fresh: Path,
    case: str,
    damage: Any,
    env: dict[str, str],
    code: int,
) -> None:
    if damage is not None:
        damage(fresh)
    before = _files(fresh)
    e = {k: cli_env.get(v, v) for k, v in env.items()}
    # a write: it must change nothing (a read's output is checked for the wrong passphrase)
    args = (
        ("get", "acme-2026/web1-root") if case == "wrong-passphrase" else ("put", "acme-2026/new")
    )
    r = cli(*args, "--vault", str(fresh), "--no-keyring", input=b"new-value\n", env=e)
    assert r.code == code, (args, r.err)
    assert r.out == b""
    assert r.err.startswith("credvault: "), r.err
    assert r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err
    assert "hunter2" not in r.err
    after = _files(fresh)
    after.pop("failed-unlocks.log", None)  # a failed unlock is noted for the audit trail
    assert after == before


@pytest.mark.cli
def test_cli_not_a_vault(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("ls", "--vault", str(tmp_path / "nowhere"), "--no-keyring")
    assert r.code == 1
    assert "not a credvault vault" in r.err
    assert not (tmp_path / "nowhere").exists()


# -- the insider edits the history tables (review of issue 16): exit 6, never 1 ----------------
ENG = "acme-2026"
REF = f"{ENG}/web1-root"


def _code(exc: BaseException) -> int | str:
    return exc.exit_code if isinstance(exc, CredvaultError) else type(exc).__name__


def test_rewound_version_number_is_tampering(vault: VaultFixture) -> None:
    """The insider sets the live row's version back to one the history already holds:
    the next put failed on UNIQUE (credential_uid, version) as StoreError, exit 1 ('an I/O
    error'), with nothing saying the vault was tampered with."""
    with vault.open() as v:
        v.put(REF, b"second")
        v._s.store.conn.execute("UPDATE credentials SET version = 1")
        with pytest.raises(Exception) as info:
            v.put(REF, b"third")
        assert _code(info.value) == 6, f"{type(info.value).__name__}: {info.value}"


def test_version_kind_rewritten_is_tampering(vault: VaultFixture) -> None:
    """A version row's kind (clear, unauthenticated) set to a value the schema refuses:
    revert failed with StoreError exit 1."""
    with vault.open() as v:
        v.put(REF, b"second")
        v._s.store.conn.execute("UPDATE credential_versions SET kind = 'bogus'")
        with pytest.raises(Exception) as info:
            v.credentials.revert(REF, 1)
        assert _code(info.value) == 6, f"{type(info.value).__name__}: {info.value}"


def test_non_numeric_version_is_corruption(vault: VaultFixture) -> None:
    """SQLite stores 'abc' in an INTEGER column; the store's int() raised ValueError,
    which the CLI turned into 'internal error (ValueError)', exit 1."""
    with vault.open() as v:
        v.put(REF, b"second")
        v._s.store.conn.execute("UPDATE credential_versions SET version = 'abc'")
        with pytest.raises(Exception) as info:
            v.credentials.history(REF)
        assert _code(info.value) == 6, f"{type(info.value).__name__}: {info.value}"


def test_format_version_rewound_is_tampering(vault: VaultFixture) -> None:
    """The insider sets meta.format_version back to 1 on a format-2 vault: every open
    re-ran MIGRATIONS[2] ('ALTER TABLE ... ADD COLUMN version' on a table that has it)
    and failed with StoreError 'database error (OperationalError)', exit 1 -- after writing
    yet another backup each time. The tables are checked against the claim first."""

    with vault.open() as v:
        v._s.store.conn.execute("UPDATE meta SET value = 1 WHERE key = 'format_version'")
    for _attempt in range(2):
        with pytest.raises(Exception) as info:
            Vault.open(vault.path, "alice", PASSWORDS["alice"], kdf=KDF, clock=vault.clock).close()
        assert _code(info.value) == 6, f"{type(info.value).__name__}: {info.value}"
    assert not list(vault.path.parent.rglob("*.cvb"))  # no backup per failed attempt
