"""The key-slot parser is strict (issue 11, property 9).

The file is read before anything can authenticate it (its MAC key comes out of the slot it
holds), so each field is hostile until checked: wrong JSON types, unbounded integers and
wrong blob lengths are corruption (``IntegrityError``, exit 6), never "internal error"
(exit 1) and never a truthy ``"false"``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, Clock
from credvault import Vault
from credvault.errors import IntegrityError, WrongPassphrase
from credvault.keyslots import GENERATION_MAX, KeySlots, MemberKeys

Json = dict[str, Any]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("strict") / "vault"
    clock = Clock()
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
        v.members.add("bob", passphrase=PASSWORDS["bob"])
    return path


def _doc(path: Path) -> Json:
    d: Json = json.loads((path / "keyslots.json").read_text())
    return d


def _set(*path: Any) -> Callable[[Json], None]:
    """``_set("a", "b", v)`` sets ``d["a"]["b"] = v``."""
    *keys, value = path

    def edit(d: Json) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    edit.__name__ = "/".join(keys) + "=" + repr(value)[:20]
    return edit


def _drop(*keys: str) -> Callable[[Json], None]:
    def edit(d: Json) -> None:
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    edit.__name__ = "del " + "/".join(keys)
    return edit


B64_31 = base64.b64encode(b"x" * 31).decode()
B64_64 = base64.b64encode(b"x" * 64).decode()

HOSTILE = [
    _set("generation", 2**70),
    _set("generation", GENERATION_MAX + 1),
    _set("generation", 0),
    _set("generation", -1),
    _set("generation", 1.0),
    _set("generation", "1"),
    _set("generation", True),
    _set("members", "bob", "admin", "false"),
    _set("members", "bob", "admin", 1),
    _set("members", "bob", "admin", None),
    _set("members", "bob", "service", "true"),
    _set("members", "bob", "created", 17),
    _set("members", "bob", "kdf", "m", 2**70),
    _set("members", "bob", "kdf", "m", "65536"),
    _set("members", "bob", "kdf", "t", 3.5),
    _set("members", "bob", "kdf", "p", False),
    _set("members", "bob", "kdf", "salt", B64_31),
    _set("members", "bob", "kdf", []),
    _set("members", "bob", "kem", B64_31),
    _set("members", "bob", "sign", B64_31),
    _set("members", "bob", "cert", B64_31),
    _set("members", "bob", "db_key", B64_31),
    _set("members", "bob", "db_key", 5),
    _set("members", "bob", "kem", "not base64!"),
    _set("members", "bob", []),
    _set("members", []),
    _set("recovery", "kem", B64_31),
    _set("recovery", None),
    _set("admin_sign_pub", B64_31),
    _set("receipt_pub", B64_31),
    _set("mac", B64_31),
    _set("vault_id", "00" * 15),
    _set("vault_id", "zz" * 16),
    _set("vault_id", 5),
    _set("pending", []),
    _set("pending", {"bob": B64_31}),
    _set("retired", {"bob": {"sign": B64_31}}),
    _set("retired", {"bob": [5]}),
    _drop("members", "bob", "kdf"),
    _drop("members", "bob", "private"),
    _drop("members", "bob", "admin_key"),
    _drop("pending"),
    _drop("generation"),
]


def _rename(section: str, new: str) -> Callable[[Json], None]:
    """Give bob's entry of ``section`` another name (one ``member add`` would refuse)."""

    def edit(d: Json) -> None:
        if section == "pending":
            d["pending"] = {"alice": d["members"]["alice"]["db_key"]}
        elif section == "retired":
            d["retired"] = {"bob": [{"sign": d["members"]["bob"]["sign"], "cert": B64_64}]}
        d[section][new] = d[section].pop("alice" if section == "pending" else "bob")

    edit.__name__ = f"{section}/rename={new[:20]!r}"
    return edit


BAD_NAMES = ["@x", "@recovery", "", "a/b", "x" * 65, ".", "-x", "bob\n", "bo b", "b\u00f6b"]
HOSTILE += [_rename(section, n) for section in ("members", "pending", "retired") for n in BAD_NAMES]


@pytest.mark.parametrize("edit", HOSTILE, ids=lambda f: f.__name__)
def test_hostile_field_is_corruption(good: Path, edit: Callable[[Json], None]) -> None:
    d = _doc(good)
    edit(d)
    with pytest.raises(IntegrityError):
        KeySlots.from_bytes(json.dumps(d).encode())


def test_the_good_file_parses_and_round_trips(good: Path) -> None:
    data = (good / "keyslots.json").read_bytes()
    slots = KeySlots.from_bytes(data)
    assert slots.to_bytes() == data
    assert slots.members["bob"].admin is False
    assert slots.members["alice"].admin is True


@pytest.mark.cli
@pytest.mark.parametrize(
    "edit",
    [_set("generation", 2**70), _set("members", "alice", "admin", "false")],
    ids=lambda f: f.__name__,
)
def test_cli_exit_6_on_hostile_key_slot_file(
    cli: CliRunner, good: Path, tmp_path: Path, edit: Callable[[Json], None]
) -> None:
    import shutil

    path = tmp_path / "vault"
    shutil.copytree(good, path)
    d = _doc(path)
    edit(d)
    (path / "keyslots.json").write_text(json.dumps(d))
    r = cli("ls", "--vault", str(path), "--no-keyring")
    assert r.code == 6, r.err
    assert "internal error" not in r.err
    assert len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("field", ["kem", "sign", "admin_sign_pub"])
@pytest.mark.parametrize("length", [0, 5, 31, 33, 64])
def test_identity_with_a_wrong_key_length_is_refused(field: str, length: int) -> None:
    """An identity file or keyring entry whose key has the wrong length is refused at once
    (exit 5), not deep inside X25519 or Ed25519 as an internal error."""
    vault_id = bytes(16)
    d = {
        "format": "credvault-identity",
        "vault_id": vault_id.hex(),
        "member": "svc",
        "kem": base64.b64encode(b"k" * 32).decode(),
        "sign": base64.b64encode(b"s" * 32).decode(),
        "admin_sign_pub": base64.b64encode(b"a" * 32).decode(),
    }
    assert MemberKeys.from_bytes(json.dumps(d).encode(), vault_id).name == "svc"
    d[field] = base64.b64encode(b"x" * length).decode()
    with pytest.raises(WrongPassphrase, match="incomplete or corrupt"):
        MemberKeys.from_bytes(json.dumps(d).encode(), vault_id)
