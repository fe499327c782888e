"""Unlock once per day: the OS keyring cache, against a real Secret Service.

The daemon is a private gnome-keyring under its own D-Bus (tests/keyring_daemon.py); the
Debian packages come from .ci/system-deps.sh, which the test command runs. As root without
the binaries these tests fail rather than skip: CI must exercise the real thing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KDF, KDF_ARG, PASSWORDS, offset_env
from credvault import Vault

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from keyring_daemon import READ_ENTRY  # noqa: E402

pytestmark = pytest.mark.keyring_real


class Env:
    def __init__(self, base: dict[str, str], tmp: Path) -> None:
        self.vault = tmp / "vault"
        self.pwfile = tmp / "alice.pass"
        self.pwfile.write_text(PASSWORDS["alice"] + "\n")
        self.env = {k: v for k, v in base.items() if not k.startswith("CREDVAULT_")}
        self.env.pop("PYTHON_KEYRING_BACKEND", None)
        self.env.update(
            CREDVAULT_VAULT=str(self.vault),
            CREDVAULT_MEMBER="alice",
            XDG_CACHE_HOME=str(tmp / "cache"),
        )

    def run(
        self, *args: str, passphrase: bool = False, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **extra)
        if passphrase:
            env["CREDVAULT_PASSPHRASE_FILE"] = str(self.pwfile)
        return subprocess.run(
            [sys.executable, "-m", "credvault", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
            check=False,
        )

    def entry(self, vault_id: str) -> str:
        p = subprocess.run(
            [sys.executable, "-c", READ_ENTRY, f"credvault:{vault_id}", "alice"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return p.stdout.strip()


@pytest.fixture
def kenv(service_env: dict[str, str], tmp_path: Path) -> Env:
    """A vault with acme-2026/db (``s3cret``), built through the library in-process: the
    keyring behaviour under test is in the CLI processes each test runs, not in the set-up."""
    e = Env(service_env, tmp_path)
    Vault.init(e.vault, "alice", PASSWORDS["alice"], kdf=KDF, recovery_file=tmp_path / "rec")
    with Vault.open(e.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-2026", "acme")
        v.credentials.put("acme-2026/db", b"s3cret")
    return e


def _vault_id(e: Env) -> str:
    return json.loads((e.vault / "keyslots.json").read_text())["vault_id"]


def test_unlock_get_lock_expiry(kenv: Env, faketime: str) -> None:
    # Locked: no passphrase source and no terminal → exit 5.
    r = kenv.run("get", "acme-2026/db")
    assert r.returncode == 5, r.stderr
    assert r.stdout == ""

    r = kenv.run("unlock", "--keyring", "--ttl", "1h", passphrase=True)
    assert r.returncode == 0, r.stderr
    # Unlocked: works without any passphrase source.
    r = kenv.run("get", "acme-2026/db")
    assert (r.returncode, r.stdout) == (0, "s3cret\n"), r.stderr
    r = kenv.run("status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["keyring"]["unlocked"] is True

    r = kenv.run("lock")
    assert r.returncode == 0, r.stderr
    assert kenv.entry(_vault_id(kenv)) == "NONE"
    r = kenv.run("get", "acme-2026/db")
    assert r.returncode == 5
    assert r.stdout == ""

    # Expiry honoured: once an unlock's time is up (the clock moved a day on with libfaketime,
    # not waited for) it stops working, and the entry is deleted on sight.
    assert kenv.run("unlock", "--keyring", "--ttl", "2h", passphrase=True).returncode == 0
    assert kenv.run("get", "acme-2026/db").returncode == 0
    r = kenv.run("get", "acme-2026/db", **offset_env(faketime, 1))
    assert r.returncode == 5, r.stderr
    assert kenv.entry(_vault_id(kenv)) == "NONE"
    # ... and the passphrase still works as the fallback.
    assert kenv.run("get", "acme-2026/db", passphrase=True).returncode == 0


def _key_forms(kenv: Env) -> list[bytes]:
    """Every encoding of alice's private keys (and other secrets) a leak could take."""
    import base64

    with Vault.open(kenv.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        keys = v.member_keys()
        db_key = v._s.db_key
        eng_key = v.engagements.key(v.engagements.get("acme-2026"), "engagement.key")
    out = []
    for secret in (keys.kem_private, keys.sign_private, db_key, eng_key, b"s3cret"):
        out += [secret, secret.hex().encode(), base64.b64encode(secret)]
    return [*out, PASSWORDS["alice"].encode()]


def test_entry_holds_wrapped_keys_only(kenv: Env) -> None:
    """The entry is ciphertext under a kernel-held key: no raw key in it, even when read."""
    import base64

    assert kenv.run("unlock", "--keyring", passphrase=True).returncode == 0
    raw = kenv.entry(_vault_id(kenv))
    entry = json.loads(raw)
    assert set(entry) == {"format", "expires", "keys"}
    assert entry["format"] == "credvault-keyring-2"
    blob = base64.b64decode(entry["keys"])
    for form in _key_forms(kenv):
        assert form not in raw.encode()
        assert form not in blob


def test_entry_useless_after_expiry_when_read_directly(kenv: Env) -> None:
    """At expiry the kernel destroys the wrapping key: the entry, read directly by an
    attacker who skips credvault's own expiry check, decrypts to nothing."""
    import base64

    from credvault import kernel_keys
    from credvault.crypto import labels
    from credvault.crypto import primitives as p
    from credvault.errors import IntegrityError

    assert kenv.run("unlock", "--keyring", "--ttl", "1s", passphrase=True).returncode == 0
    vid = _vault_id(kenv)
    raw = kenv.entry(vid)
    assert raw != "NONE"
    entry = json.loads(raw)
    deadline = time.monotonic() + 30
    while kernel_keys.read(f"credvault:{vid}:alice") is not None:  # observe the expiry
        assert time.monotonic() < deadline, "the kernel never expired the wrapping key"
        time.sleep(0.05)
    # The attacker holds the entry but not the wrapping key; guessing one gets nothing.
    blob = base64.b64decode(entry["keys"])
    aad = labels.KEYRING_ENTRY + labels.encode(bytes.fromhex(vid), "alice", entry["expires"])
    with pytest.raises(IntegrityError):
        p.aead_decrypt(bytes(32), blob, aad)
    assert kenv.entry(vid) == raw  # still there until credvault next runs: and still useless
    r = kenv.run("get", "acme-2026/db")
    assert r.returncode == 5, r.stderr
    assert kenv.entry(vid) == "NONE"  # deleted on sight


def test_old_raw_entries_are_deleted_not_used(kenv: Env) -> None:
    import base64

    from credvault.layout import keyring_marker

    vid = _vault_id(kenv)
    with Vault.open(kenv.vault, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        old = json.dumps(
            {
                "expires": "2999-01-01T00:00:00Z",
                "keys": base64.b64encode(v.member_keys().to_bytes(bytes.fromhex(vid))).decode(),
            }
        )
    write = "import keyring, sys; keyring.set_password(sys.argv[1], 'alice', sys.argv[2])"
    subprocess.run([sys.executable, "-c", write, f"credvault:{vid}", old], env=kenv.env, check=True)
    marker = Path(kenv.env["XDG_CACHE_HOME"]) / "credvault" / keyring_marker(vid, "alice").name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("2999-01-01T00:00:00Z")
    r = kenv.run("get", "acme-2026/db")
    assert r.returncode == 5, r.stderr
    assert kenv.entry(vid) == "NONE"


def test_member_rm_and_passwd_forget_cached_key(kenv: Env, tmp_path: Path) -> None:
    assert kenv.run("unlock", "--keyring", passphrase=True).returncode == 0
    newpw = tmp_path / "new.pass"
    newpw.write_text("another-pass\n")
    r = kenv.run("passwd", "--passphrase-file", str(newpw), "--kdf", KDF_ARG)
    assert r.returncode == 0, r.stderr
    assert kenv.entry(_vault_id(kenv)) == "NONE"
    assert kenv.run("get", "acme-2026/db").returncode == 5


def test_fail_backend_one_line_and_fallback(kenv: Env) -> None:
    fail = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    r = kenv.run("unlock", "--keyring", passphrase=True, **fail)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no usable OS keyring" in lines[0]
    assert "CREDVAULT_PASSPHRASE_FILE" in lines[0]
    r = kenv.run("get", "acme-2026/db", passphrase=True, **fail)
    assert (r.returncode, r.stdout) == (0, "s3cret\n")


PLAIN_BACKEND = """\
from keyring.backend import KeyringBackend

class PlainKeyring(KeyringBackend):
    priority = 1
    store: dict = {}

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def get_password(self, service, username):
        return self.store.get((service, username))

    def delete_password(self, service, username):
        self.store.pop((service, username), None)
"""


def test_plaintext_backend_refused(kenv: Env, tmp_path: Path) -> None:
    mod = tmp_path / "plainbackend.py"
    mod.write_text(PLAIN_BACKEND)
    r = kenv.run(
        "unlock",
        "--keyring",
        passphrase=True,
        PYTHON_KEYRING_BACKEND="plainbackend.PlainKeyring",
        PYTHONPATH=str(tmp_path),
    )
    assert r.returncode == 1
    assert "plainbackend.PlainKeyring" in r.stderr
    assert not list((Path(kenv.env["XDG_CACHE_HOME"]) / "credvault").glob("unlocked-*"))


def test_no_key_material_in_files_after_lock_and_expiry(kenv: Env, tmp_path: Path) -> None:
    """Every file the keyring daemon, credvault's marker or the vault left behind, scanned for
    the member's private keys (raw, hex, base64) after `lock` and after an expiry."""
    forms = _key_forms(kenv)[:-1]  # not the passphrase: the test's own file holds it
    roots = {Path(kenv.env[k]) for k in ("HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")}
    roots |= {Path(kenv.env["XDG_RUNTIME_DIR"]), tmp_path}

    def scan() -> None:
        for root in roots:
            for f in root.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    data = f.read_bytes()
                    for form in forms:
                        assert form not in data, f"key material in {f}"

    assert kenv.run("unlock", "--keyring", passphrase=True).returncode == 0
    assert kenv.run("get", "acme-2026/db").returncode == 0
    scan()  # even while valid, no file holds the raw keys
    assert kenv.run("lock").returncode == 0
    scan()
    assert kenv.run("unlock", "--keyring", "--ttl", "1s", passphrase=True).returncode == 0
    from credvault import kernel_keys

    vid = _vault_id(kenv)
    deadline = time.monotonic() + 30
    while kernel_keys.read(f"credvault:{vid}:alice") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    scan()
