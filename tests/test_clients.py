"""Client requests (issue 5): export exactly what is held for one client (and nothing of
another), only with a reading role on each engagement; shred a whole client; list clients.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import CANARY, KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import AccessDenied, NotFound, Purged, Vault

ENG = "acme-2026"
CANARY_TEXT = CANARY.decode()
GLOBEX_ADDR = "203.0.113.99"


def open_as(vf: VaultFixture, member: str = "alice", **kw: Any) -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock, **kw)


@pytest.fixture
def clients(vault: VaultFixture, engagement: str) -> VaultFixture:
    """acme: acme-2026 (fixture), acme-2027 (one system, one binary credential), acme-2025
    (purged); globex: globex-1 full of canaries."""
    with open_as(vault) as v:
        v.engagements.create("acme-2027", "acme")
        v.systems.add("acme-2027/db1", "10.0.0.2", port=5432, protocol="pg", details="pg 16")
        v.put(
            "acme-2027/db-admin",
            b"pg-secret",
            username="postgres",
            system="db1",
            url="postgres://10.0.0.2",
            notes="rotate monthly",
        )
        v.put("acme-2027/ssh-key", b"\xff\x00binary", kind="ssh-key")
        v.engagements.create("acme-2025", "acme")
        v.put("acme-2025/old", b"old-secret")
        v.purger.shred("acme-2025")
        v.engagements.create("globex-1", "globex")
        v.systems.add("globex-1/gw", GLOBEX_ADDR, details=f"gw {CANARY_TEXT}")
        v.put("globex-1/root", CANARY, username=f"u-{CANARY_TEXT}", notes=CANARY_TEXT)
    return vault


def test_export_holds_exactly_the_clients_data(clients: VaultFixture) -> None:
    with open_as(clients) as v:
        data = v.clients.export("acme")
        vault_id = v.vault_id
    text = json.dumps(data)
    assert set(data) == {"format", "client", "vault_id", "engagements"}
    assert (data["format"], data["client"], data["vault_id"]) == (
        "credvault-client-export/1",
        "acme",
        vault_id,
    )
    engs = {e["name"]: e for e in data["engagements"]}  # type: ignore[attr-defined]
    assert set(engs) == {"acme-2025", "acme-2026", "acme-2027"}
    assert all(e["client"] == "acme" for e in engs.values())

    assert engs["acme-2025"]["state"] == "purged"
    assert (engs["acme-2025"]["systems"], engs["acme-2025"]["credentials"]) == ([], [])

    (web1,) = engs[ENG]["systems"]
    assert (web1["name"], web1["address"], web1["port"], web1["details"]) == (
        "web1",
        "10.0.0.1",
        22,
        "debian",
    )
    (root,) = engs[ENG]["credentials"]
    assert (root["name"], root["secret"], root["username"], root["system"]) == (
        "web1-root",
        "hunter2",
        "root",
        "web1",
    )

    (db1,) = engs["acme-2027"]["systems"]
    assert (db1["address"], db1["protocol"], db1["details"]) == ("10.0.0.2", "pg", "pg 16")
    creds = {c["name"]: c for c in engs["acme-2027"]["credentials"]}
    assert set(creds) == {"db-admin", "ssh-key"}
    admin = creds["db-admin"]
    assert (admin["secret"], admin["username"], admin["url"], admin["notes"]) == (
        "pg-secret",
        "postgres",
        "postgres://10.0.0.2",
        "rotate monthly",
    )
    key = creds["ssh-key"]
    assert key["kind"] == "ssh-key"
    secret = key.get("secret_base64")
    assert secret is not None
    assert base64.b64decode(secret) == b"\xff\x00binary"

    # nothing of the other client, nothing of the purged engagement, no key material
    for needle in (CANARY_TEXT, "globex", GLOBEX_ADDR, "old-secret", "creation_sig", "sealed"):
        assert needle not in text
    for e in engs.values():
        assert not {"uid", "creation_sig", "receipt", "key_version"} & set(e)


def test_export_is_audited_per_engagement(clients: VaultFixture) -> None:
    with open_as(clients) as v:
        v.clients.export("acme")
        entries = v.audit_entries(action="export")
    assert {(e.member, e.engagement, e.outcome) for e in entries} == {
        ("alice", ENG, "ok"),
        ("alice", "acme-2027", "ok"),
    }
    details = {e.engagement: e.detail.split("; sha256 ")[0] for e in entries}
    assert details == {ENG: "1 credentials exported", "acme-2027": "2 credentials exported"}


def test_export_needs_a_reading_role_on_every_engagement(clients: VaultFixture) -> None:
    with open_as(clients) as v:
        v.engagements.create("acme-2028", "acme", lead="bob")  # alice: admin, no grant
    with open_as(clients) as v, pytest.raises(AccessDenied):
        v.clients.export("acme")
    with open_as(clients, "carol") as v, pytest.raises(AccessDenied):
        v.clients.export("acme")  # reader on acme-2026 only
    with open_as(clients) as v:
        v.engagements.grant("acme-2027", "carol", "auditor")
    with open_as(clients, "carol") as v, pytest.raises(AccessDenied):
        v.clients.export("acme")  # an auditor does not read secrets
    with open_as(clients) as v:
        denied = [e for e in v.audit_entries(action="export") if e.outcome == "denied"]
        assert {(e.member, e.engagement) for e in denied} >= {
            ("alice", "acme-2028"),
            ("carol", "acme-2027"),
        }
        with pytest.raises(NotFound):
            v.clients.export("nobody")


def test_revoke_lists_what_the_member_exported(clients: VaultFixture) -> None:
    with open_as(clients) as v:
        v.engagements.grant("acme-2027", "bob", "engineer")
    with open_as(clients, "bob") as v:
        v.clients.export("acme")  # every secret of acme, read in one go
    with open_as(clients) as v:
        read = v.engagements.revoke("acme-2027", "bob")
    assert set(read) >= {"db-admin", "ssh-key"}


@pytest.mark.cli
def test_cli_export_to_a_private_file_and_stdout(
    cli_vault: CliRunner, cli_env: dict[str, str]
) -> None:
    cli = cli_vault
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.put(f"{ENG}/db", b"pg-secret", username="postgres")
        v.engagements.create("globex-1", "globex")
        v.put("globex-1/root", CANARY)
    out = Path(cli_env["CREDVAULT_VAULT"]).parent / "acme-export.json"
    r = cli("client", "export", "acme", "--output", str(out))
    assert r.code == 0, r.err
    assert out.stat().st_mode & 0o777 == 0o600
    data = json.loads(out.read_text())
    (eng,) = data["engagements"]
    assert [(c["name"], c["secret"]) for c in eng["credentials"]] == [("db", "pg-secret")]
    assert CANARY_TEXT not in out.read_text()
    r = cli("client", "export", "acme", "--output", str(out))
    assert r.code == 1  # never overwrites
    assert json.loads(out.read_text()) == data
    r = cli("client", "export", "acme")
    assert r.code == 0, r.err
    assert json.loads(r.out) == data
    assert CANARY not in r.out
    r = cli("client", "export", "nobody")
    assert r.code == 3
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    r = cli("client", "export", "acme", env=bob)
    assert r.code == 4
    assert r.out == b""


@pytest.mark.cli
def test_cli_client_shred_and_ls(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    cli = cli_vault
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.put(f"{ENG}/db", b"pg-secret")
        v.engagements.create("acme-2027", "acme")
        v.put("acme-2027/x", b"x")
        v.engagements.close("acme-2027")
        v.engagements.create("globex-1", "globex")
        v.put("globex-1/root", b"globex-secret")
        v.engagements.grant("globex-1", "bob", "reader")
    r = cli("client", "ls", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {
        "acme": ["acme-2026(active)", "acme-2027(closed)"],
        "globex": ["globex-1(active)"],
    }
    r = cli("client", "ls")
    assert r.code == 0, r.err
    assert "acme" in r.text
    assert "globex-1(active)" in r.text
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    r = cli("client", "ls", "--json", env=bob)
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"globex": ["globex-1(active)"]}  # not acme's names

    r = cli("client", "shred", "acme")
    assert r.code == 2
    assert "--yes" in r.err
    r = cli("client", "shred", "acme", "--yes")
    assert r.code == 0, r.err
    assert "shredded acme-2026" in r.text
    assert "shredded acme-2027" in r.text
    r = cli("client", "ls", "--json")
    assert json.loads(r.out) == {
        "acme": ["acme-2026(purged)", "acme-2027(purged)"],
        "globex": ["globex-1(active)"],
    }
    for name in (ENG, "acme-2027"):
        r = cli("receipt", name, "--json")
        assert json.loads(r.out)["reason"] == "client request"
    r = cli("get", "globex-1/root")
    assert (r.code, r.out) == (0, b"globex-secret\n")
    r = cli("client", "shred", "acme", "--yes")
    assert r.code == 3
    assert "nothing left" in r.err


@pytest.mark.cli
def test_cli_client_shred_is_all_or_nothing(cli_vault: CliRunner, cli_env: dict[str, str]) -> None:
    with Vault.open(Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF) as v:
        v.engagements.create("acme-1999", "acme", lead="bob")  # bob may shred this one ...
        v.put(f"{ENG}/db", b"pg-secret")  # ... but not acme-2026 (alice's)
        v.engagements.grant(ENG, "bob", "engineer")
    bob = {"CREDVAULT_MEMBER": "bob", "CREDVAULT_PASSPHRASE_FILE": cli_env["TEST_PASS_BOB"]}
    r = cli_vault("client", "shred", "acme", "--yes", env=bob)
    assert r.code == 4
    with Vault.open(
        Path(cli_env["CREDVAULT_VAULT"]), "alice", PASSWORDS["alice"], kdf=KDF, auto_purge=False
    ) as v:
        assert v.engagements.get("acme-1999", allow_purged=True).state == "active"
        assert v.engagements.get(ENG).state == "active"


def test_shredded_client_engagements_read_as_purged(clients: VaultFixture) -> None:
    with open_as(clients) as v:
        for e in v.engagements.list("acme"):
            if e.state != "purged":
                v.purger.shred(e.name)
        assert {e.state for e in v.engagements.list("acme")} == {"purged"}
        assert v.engagements.get("globex-1").state == "active"
        data = v.clients.export("acme")
    assert all(e["credentials"] == [] for e in data["engagements"])  # type: ignore[attr-defined]
    with open_as(clients, "bob") as v, pytest.raises(Purged):
        v.get(f"{ENG}/web1-root")
