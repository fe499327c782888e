"""No key, passphrase or secret in any error output (spec §4.6, property 23).

Every error path is run with DEBUG logging captured, a SQLite trace callback on the store
connection, and stdout/stderr captured at the file-descriptor level; then the exception's
``str``/``repr``/traceback, and its traceback formatted with ``capture_locals=True``, are
searched for the database key, the engagement key, member private keys, every passphrase
(right or wrong) and every secret value.
"""

from __future__ import annotations

import copy
import logging
import pickle  # noqa: TID251 - only to show that a Secret refuses to be pickled
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlcipher3

import credvault
from conftest import CANARY, KDF, PASSWORDS, Clock
from credvault import (
    AccessDenied,
    IntegrityError,
    InvalidInput,
    NotFound,
    Passphrase,
    PassphraseFile,
    Secret,
    Vault,
    WrongPassphrase,
)
from credvault.keyslots import MemberKeys
from credvault.store import Store

WRONG = "wrong-pass-Zq81x"
BIG = CANARY * (1024 * 1024 // len(CANARY) + 2)  # just over the 1 MiB limit
PKG = str(Path(credvault.__file__).parent)


class Template:
    def __init__(self, path: Path, db_key: bytes, eng_keys: list[bytes], keys: MemberKeys) -> None:
        self.path = path
        self.db_key = db_key
        self.eng_keys = eng_keys
        self.keys = keys


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("template") / "vault"
    clock = Clock()
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        for name in ("bob", "carol"):
            v.members.add(name, passphrase=PASSWORDS[name].encode())
        v.engagements.create("acme-2026", "acme")
        v.engagements.grant("acme-2026", "bob", "engineer")
        v.engagements.grant("acme-2026", "carol", "reader")
        v.systems.add("acme-2026/web1", "10.0.0.1", port=22, details="debian")
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root", system="web1")
        v.credentials.put("acme-2026/canary", Secret(CANARY), notes="n")
        v.engagements.create("beta-2026", "beta")
        v.credentials.put("beta-2026/db", Secret(CANARY))
        v.get("acme-2026/canary")
        v.get("beta-2026/db")
        return Template(
            path, bytes(v._s.db_key), list(v._s.engagement_keys.values()), v.member_keys()
        )


def _needles(t: Template) -> dict[str, str]:
    out = {
        "db key": t.db_key.hex(),
        "member kem key": t.keys.kem_private.hex(),
        "member sign key": t.keys.sign_private.hex(),
        "wrong passphrase": WRONG,
        "secret hunter2": "hunter2",
        "canary": CANARY.decode(),
        "canary ascii": CANARY.split(b"\xe2")[0].decode(),
    }
    for i, k in enumerate(t.eng_keys):
        out[f"engagement key {i}"] = k.hex()
    out.update({f"passphrase of {m}": pw for m, pw in PASSWORDS.items()})
    out.update({f"{k} (upper)": v.upper() for k, v in list(out.items()) if "key" in k})
    return out


def _raw_key_needles(t: Template) -> dict[str, str]:
    """The keys as Python shows bytes (``repr``): as good as hex to whoever reads a log."""
    out = {
        "db key repr": repr(bytes(t.db_key))[2:-1],
        "member kem key repr": repr(bytes(t.keys.kem_private))[2:-1],
    }
    for i, k in enumerate(t.eng_keys):
        out[f"engagement key {i} repr"] = repr(bytes(k))[2:-1]
    return out


class Ctx:
    """One error path's world: a copy of the vault and a trace of every SQL statement."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.trace: list[str] = []
        self.open_vaults: list[Vault] = []

    def open(self, member: str = "alice") -> Vault:
        v = Vault.open(self.path, member, Passphrase(PASSWORDS[member]), kdf=KDF)
        v._s.store.conn.set_trace_callback(self.trace.append)
        self.open_vaults.append(v)
        return v

    def sql(self, statement: str, key: bytes) -> None:
        conn = sqlcipher3.connect(str(self.path / "vault.db"), isolation_level=None)
        try:
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            conn.execute(statement)
        finally:
            conn.close()

    def close(self) -> None:
        for v in self.open_vaults:
            v.close()


def _flip_page_one(ctx: Ctx, t: Template) -> None:
    data = bytearray((ctx.path / "vault.db").read_bytes())
    data[64] ^= 1
    (ctx.path / "vault.db").write_bytes(bytes(data))


def _tamper_slots(ctx: Ctx, t: Template) -> None:
    f = ctx.path / "keyslots.json"
    f.write_text(f.read_text().replace('"admin": false', '"admin": true', 1))


def _swap_envelopes(ctx: Ctx, t: Template) -> None:
    ctx.sql(
        "UPDATE credentials SET secret_env = (SELECT secret_env FROM credentials "
        "WHERE name = 'web1-root') WHERE name = 'canary'",
        t.db_key,
    )


def _wrong_file(ctx: Ctx, t: Template) -> None:
    (ctx.path.parent / "wrong.pass").write_text(WRONG + "\n")


Setup = Callable[[Ctx, Template], None] | None
Action = Callable[[Ctx], object]

PATHS: dict[str, tuple[Setup, Action, type[BaseException]]] = {
    "wrong passphrase": (
        None,
        lambda c: Vault.open(c.path, "alice", Passphrase(WRONG), kdf=KDF),
        WrongPassphrase,
    ),
    "wrong passphrase file": (
        _wrong_file,
        lambda c: Vault.open(
            c.path, "alice", PassphraseFile(c.path.parent / "wrong.pass"), kdf=KDF
        ),
        WrongPassphrase,
    ),
    "tampered database": (_flip_page_one, lambda c: c.open(), IntegrityError),
    "tampered key slots": (_tamper_slots, lambda c: c.open(), IntegrityError),
    "wrong raw key": (
        None,
        lambda c: Store.open(c.path / "vault.db", bytes(range(32))),
        IntegrityError,
    ),
    "unknown member": (
        None,
        lambda c: Vault.open(c.path, "mallory", Passphrase(PASSWORDS["alice"]), kdf=KDF),
        NotFound,
    ),
    "oversized secret": (None, lambda c: c.open().put("acme-2026/x", Secret(BIG)), InvalidInput),
    "control character": (
        None,
        lambda c: c.open().put("acme-2026/x", Secret(CANARY), username="a\x01b"),
        InvalidInput,
    ),
    "bad reference": (None, lambda c: c.open().put("acme-2026", Secret(CANARY)), InvalidInput),
    "bad address": (
        None,
        lambda c: c.open().systems.add("acme-2026/x", "not an address!"),
        InvalidInput,
    ),
    "bad role": (
        None,
        lambda c: c.open().engagements.grant("acme-2026", "carol", "superuser"),
        InvalidInput,
    ),
    "missing credential": (None, lambda c: c.open().get("acme-2026/missing"), NotFound),
    "missing engagement": (None, lambda c: c.open().get("nope-2026/x"), NotFound),
    "denied write": (
        None,
        lambda c: c.open("carol").put("acme-2026/canary", Secret(CANARY)),
        AccessDenied,
    ),
    "denied read": (None, lambda c: c.open("bob").get("beta-2026/db"), AccessDenied),
    "denied admin": (None, lambda c: c.open("bob").audit_verify(), AccessDenied),
    "reason required": (
        None,
        lambda c: (
            c.open().engagements.set_options("acme-2026", require_reason=True),
            c.open_vaults[-1].get("acme-2026/canary"),
        ),
        AccessDenied,
    ),
    "tampered envelope": (
        _swap_envelopes,
        lambda c: c.open().get("acme-2026/canary"),
        IntegrityError,
    ),
}


def _run_path(
    name: str, template: Template, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> tuple[BaseException, Ctx]:
    setup, action, expected = PATHS[name]
    shutil.copytree(template.path, tmp_path / "vault")
    ctx = Ctx(tmp_path / "vault")
    if setup is not None:
        setup(ctx, template)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(expected) as e:
            action(ctx)
    finally:
        ctx.close()
    return e.value, ctx


def _credvault_frames_text(exc: BaseException) -> str:
    """Exception text plus, for every frame inside credvault, its line and its locals."""
    parts: list[str] = []
    te: traceback.TracebackException | None = traceback.TracebackException.from_exception(
        exc, capture_locals=True
    )
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        parts += list(te.format_exception_only())
        for frame in te.stack:
            if frame.filename.startswith(PKG):
                parts.append(f"{frame.filename}:{frame.lineno} {frame.line}")
                parts += [f"{k} = {v}" for k, v in (frame.locals or {}).items()]
        te = te.__cause__ or te.__context__
    return "\n".join(parts)


def _leaks(text: str, needles: dict[str, str]) -> list[str]:
    return sorted(name for name, needle in needles.items() if needle and needle in text)


@pytest.mark.parametrize("name", list(PATHS))
def test_error_path_leaks_nothing(
    name: str,
    template: Template,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    exc, ctx = _run_path(name, template, tmp_path, caplog)
    out, err = capfd.readouterr()
    texts = {
        "str": str(exc),
        "repr": repr(exc),
        "args": repr(exc.args),
        "traceback": "".join(traceback.format_exception(exc)),
        "logs": "\n".join(
            f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        ),
        "stdout": out,
        "stderr": err,
        "sql trace": "\n".join(ctx.trace),
    }
    needles = _needles(template)
    found = {where: _leaks(text, needles) for where, text in texts.items()}
    assert {k: v for k, v in found.items() if v} == {}
    assert isinstance(exc, credvault.CredvaultError)
    assert str(exc)
    assert "\n" not in str(exc)
    assert (out, err) == ("", "")  # and no SQLCipher log lines on the terminal


@pytest.mark.parametrize(
    "name",
    PATHS,
)
def test_error_path_captured_locals_leak_nothing(
    name: str, template: Template, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exc, _ = _run_path(name, template, tmp_path, caplog)
    text = _credvault_frames_text(exc)
    assert _leaks(text, _needles(template)) == []


RAW_KEY_PATHS = [
    "tampered database",
    "tampered key slots",
    "missing credential",
    "tampered envelope",
]


@pytest.mark.parametrize("name", RAW_KEY_PATHS)
def test_error_path_captured_locals_show_no_raw_keys(
    name: str, template: Template, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exc, _ = _run_path(name, template, tmp_path, caplog)
    assert _leaks(_credvault_frames_text(exc), _raw_key_needles(template)) == []


def test_successful_operations_trace_no_secret(template: Template, tmp_path: Path) -> None:
    """The trace callback sees expanded SQL: values must be ciphertext by then."""
    shutil.copytree(template.path, tmp_path / "vault")
    ctx = Ctx(tmp_path / "vault")
    try:
        v = ctx.open()
        v.put("acme-2026/new", Secret(CANARY), username="u-hunter2", notes="hunter2 notes")
        assert v.get("acme-2026/new").secret.reveal() == CANARY
        v.systems.add("acme-2026/db", "10.9.9.9", details="hunter2 details")
        v.engagements.rotate("acme-2026")
        v.members.add("dave", passphrase=PASSWORDS["dave"].encode())
        v.members.passwd(PASSWORDS["alice"].encode())
    finally:
        ctx.close()
    assert any("INSERT INTO credentials" in s for s in ctx.trace)
    assert _leaks("\n".join(ctx.trace), _needles(template)) == []


# -- the Secret type ------------------------------------------------------------------------
def test_secret_never_shows_its_value() -> None:
    s = Secret(CANARY)
    shown = [repr(s), str(s), f"{s}", f"{s!r}", f"{s!s}", f"{s:>40}", format(s)]
    shown.append("%s %r" % (s, s))  # noqa: UP031 - %-formatting is a path of its own
    shown.append("{} {!r}".format(s, s))  # noqa: UP032 - str.format is a path of its own
    shown.append(repr([s, {"k": s}, (s,)]))
    for text in shown:
        assert "CANARY" not in text
        assert "redacted" in text
    assert s.reveal() == CANARY
    assert s.reveal_text() == CANARY.decode()
    assert len(s) == len(CANARY)
    assert s
    assert Secret("text").reveal() == b"text"
    assert not hasattr(s, "__dict__")


def test_secret_refuses_pickling_and_copying_by_reduce() -> None:
    s = Secret(CANARY)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(s, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(s)
    with pytest.raises(TypeError):
        hash(s)


def test_secret_in_logging_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("value %s %r", Secret(CANARY), Secret(CANARY))
    assert "CANARY" not in caplog.text
    assert "redacted" in caplog.text


def test_secret_equality_is_by_value() -> None:
    assert Secret(b"a") == Secret(b"a")
    assert Secret(b"a") != Secret(b"b")
    assert Secret(b"a") != b"a"


def test_credential_and_session_reprs_redact(template: Template, tmp_path: Path) -> None:
    shutil.copytree(template.path, tmp_path / "vault")
    with Vault.open(tmp_path / "vault", "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF) as v:
        cred = v.get("acme-2026/canary")
        assert cred.secret.reveal() == CANARY
        shown = [
            repr(cred),
            str(cred),
            f"{cred}",
            repr(v),
            repr(v._s),
            repr(v.member_keys()),
            repr(Passphrase(PASSWORDS["alice"])),
        ]
    needles = {**_needles(template), **_raw_key_needles(template)}
    for text in shown:
        assert _leaks(text, needles) == [], text
    assert "redacted" in repr(cred)


# -- plain str/bytes forms of the documented APIs (issue 11) ----------------------------------
PLAIN_PASS = "plain-pass-Kq7-never-a-local"
PLAIN_SECRET = "plain-secret-Wv3-never-a-local"

PLAIN_FORMS: dict[str, Callable[[Path, Vault | None], object]] = {
    "Vault.init(str)": lambda p, v: Vault.init(p, "alice", PLAIN_PASS, kdf=KDF),
    "Vault.init(bytes)": lambda p, v: Vault.init(p, "alice", PLAIN_PASS.encode(), kdf=KDF),
    "Vault.open(str)": lambda p, v: Vault.open(p, "alice", PLAIN_PASS, kdf=KDF),
    "Vault.open(bytes)": lambda p, v: Vault.open(p, "alice", PLAIN_PASS.encode(), kdf=KDF),
    "Vault.put(str)": lambda p, v: v and v.put("nope-2026/x", PLAIN_SECRET),
    "Vault.put(bytes)": lambda p, v: v and v.put("nope-2026/x", PLAIN_SECRET.encode()),
    "put_many": lambda p, v: (
        v and v.credentials.put_many("nope-2026", [("x", PLAIN_SECRET.encode())])
    ),
    "members.add(str)": lambda p, v: v and v.members.add("bob", passphrase=PLAIN_PASS),
    "members.add(bytes)": lambda p, v: v and v.members.add("bob", passphrase=PLAIN_PASS.encode()),
    "members.reset(str)": lambda p, v: v and v.members.reset("nobody", PLAIN_PASS),
    "members.reset(bytes)": lambda p, v: v and v.members.reset("nobody", PLAIN_PASS.encode()),
    # a member that exists: it fails later, when the key-slot file is read for the change
    "members.reset(str), late": lambda p, v: (
        v
        and (
            _break(p),
            v.members.reset("bob", PLAIN_PASS),
        )
    ),
    "Vault.restore(str)": lambda p, v: Vault.restore(
        p / "no-such.cvb", p / "r", "alice", PLAIN_PASS
    ),
    "Vault.restore(bytes)": lambda p, v: Vault.restore(
        p / "no-such.cvb", p / "r", "alice", PLAIN_PASS.encode()
    ),
    "Vault.restore_report(str)": lambda p, v: Vault.restore_report(
        p / "no-such.cvb", p / "r", "alice", PLAIN_PASS
    ),
    "credentials.put(str)": lambda p, v: v and v.credentials.put("nope-2026/x", PLAIN_SECRET),
    "credvault.check(str)": lambda p, v: credvault.check(p, "alice", PLAIN_PASS, kdf=KDF),
    "Vault.check_at(bytes)": lambda p, v: Vault.check_at(p, "alice", PLAIN_PASS.encode(), kdf=KDF),
    # passwd made to fail after it has the value: the key-slot file is broken meanwhile
    "members.passwd(str)": lambda p, v: v and (_break(p), v.members.passwd(PLAIN_PASS)),
    "members.passwd(bytes)": lambda p, v: v and (_break(p), v.members.passwd(PLAIN_PASS.encode())),
    "members.passwd(str, compromised)": lambda p, v: (
        v
        and (
            _break(p),
            v.members.passwd(PLAIN_PASS, compromised=True),
        )
    ),
    "members.passwd(bytes, compromised)": lambda p, v: (
        v
        and (
            _break(p),
            v.members.passwd(PLAIN_PASS.encode(), compromised=True),
        )
    ),
}


def _break(path: Path) -> None:
    (path / "keyslots.json").write_text("{}")


def _open(path: Path) -> Vault:
    return Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=Clock())


@pytest.mark.parametrize("form", list(PLAIN_FORMS))
def test_plain_str_and_bytes_forms_leave_no_plain_local(
    form: str, template: Template, tmp_path: Path
) -> None:
    """Each documented API given a plain ``str``/``bytes`` passphrase or secret, made to fail
    after it has the value: no credvault frame of the traceback holds it as a local."""
    path = tmp_path / "vault"
    shutil.copytree(template.path, path)
    v = None if form.startswith("Vault.") and "put" not in form else _open(path)
    try:
        with pytest.raises(credvault.CredvaultError) as e:
            PLAIN_FORMS[form](path, v)
    finally:
        if v is not None:
            v.close()
    text = _credvault_frames_text(e.value)
    assert "Secret(<redacted>)" in text or "Passphrase(<redacted>)" in text  # it was a local
    assert PLAIN_PASS not in text
    assert PLAIN_SECRET not in text
    assert repr(PLAIN_PASS.encode())[2:-1] not in text
