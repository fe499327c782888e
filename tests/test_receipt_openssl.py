"""Proof a client can check without credvault (issue 12, item 7): receipts are signed over
their RFC 8785 form, name their key, and docs/verify-receipt.sh checks them with the real
``openssl`` binary and POSIX tools only (run by ``dash`` when present), also when texts hold
non-ASCII letters, quotes and backslashes. Nothing verifies without a trusted key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import rfc8785

import credvault
from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import IntegrityError, Vault
from credvault.crypto import labels
from credvault.crypto import primitives as p
from credvault.purge import receipt_key, write_receipt

ENG = "acme-2026"
SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "verify-receipt.sh"
SHELL = shutil.which("dash") or "/bin/sh"
REASON = 'Prüfung "§147 AO" \\ Aufbewahrung — 日本 ✓'

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def verify_sh(receipt: Path, key: str | None) -> subprocess.CompletedProcess[str]:
    args = [SHELL, str(SCRIPT), str(receipt)] + ([key] if key is not None else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def open_as(vf: VaultFixture, member: str = "alice") -> Vault:
    return Vault.open(vf.path, member, PASSWORDS[member], kdf=KDF, clock=vf.clock)


@pytest.fixture
def held_receipt(vault: VaultFixture, engagement: str, tmp_path: Path) -> tuple[Path, str, str]:
    """A shredded engagement that had a hold with a non-ASCII reason and a client export."""
    with open_as(vault) as v:
        v.engagements.close(ENG)
        v.engagements.retain(ENG, "2099-01-01", REASON)
        export = v.clients.export_bytes("acme")
        receipt = v.purger.shred(ENG)
        key = v.public_key
    out = tmp_path / "receipt.json"
    write_receipt(out, receipt)
    return out, key, hashlib.sha256(export).hexdigest()


def test_openssl_alone_verifies_a_receipt_with_non_ascii_texts(
    held_receipt: tuple[Path, str, str],
) -> None:
    file, key, export_digest = held_receipt
    raw = file.read_bytes()
    data = json.loads(raw)
    assert data["hold"]["reason"] == REASON
    assert REASON.encode() not in raw  # quotes and backslash escaped, letters raw UTF-8
    assert "Prüfung".encode() in raw
    assert raw == rfc8785.dumps(data) + b"\n"  # the file is the canonical form
    assert data["client_exports"][0]["sha256"] == export_digest
    r = verify_sh(file, key)
    assert r.returncode == 0, r.stderr
    assert "VERIFIED" in r.stdout
    assert ENG in r.stdout
    assert "retention hold expired" not in r.stdout
    assert "client request" in r.stdout
    assert export_digest in r.stdout  # what the client received, tied to what was destroyed
    assert "NOT YET" not in r.stdout


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.replace("Prüfung".encode(), b"Prufung"),
        lambda b: b.replace("日本".encode(), "日木".encode()),
        lambda b: b.replace(b'"client request"', b'"grace period expired"'),
        lambda b: b.replace(b'"credentials":1', b'"credentials":0'),
        lambda b: json.dumps(json.loads(b), indent=1).encode(),  # no longer canonical
        lambda b: b.replace(b'{"audit_position"', b'{"signature":"AAAA","audit_position"'),
    ],
    ids=["letter", "cjk", "reason", "count", "pretty-printed", "second-signature"],
)
def test_openssl_verifier_rejects_any_change(
    held_receipt: tuple[Path, str, str], tamper: object, tmp_path: Path
) -> None:
    file, key, _ = held_receipt
    forged_bytes = tamper(file.read_bytes())  # type: ignore[operator]
    assert forged_bytes != file.read_bytes()
    forged = tmp_path / "forged.json"
    forged.write_bytes(forged_bytes)
    r = verify_sh(forged, key)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "VERIFIED:" not in r.stdout


def test_openssl_verifier_needs_the_trusted_key(
    held_receipt: tuple[Path, str, str], tmp_path: Path
) -> None:
    file, key, _ = held_receipt
    assert verify_sh(file, None).returncode == 2  # no key: never "valid"
    other_priv, other_pub = p.ed25519_generate()
    r = verify_sh(file, base64.b64encode(other_pub).decode())
    assert r.returncode == 1
    # a receipt re-signed by an attacker's key, naming that key, fails against the real one
    data = json.loads(file.read_bytes())
    data.pop("signature")
    data["public_key"] = base64.b64encode(other_pub).decode()
    data["key_id"] = hashlib.sha256(other_pub).hexdigest()
    data["reason"] = "grace period expired"
    sig = p.sign(other_priv, labels.RECEIPT_SIG, rfc8785.dumps(data))
    data["signature"] = base64.b64encode(sig).decode()
    forged = tmp_path / "resigned.json"
    forged.write_bytes(rfc8785.dumps(data) + b"\n")
    assert verify_sh(forged, base64.b64encode(other_pub).decode()).returncode == 0
    r = verify_sh(forged, key)
    assert r.returncode == 1
    with pytest.raises(IntegrityError):
        credvault.verify_receipt(forged.read_text(), key)


def test_cli_verify_receipt_without_a_key_never_exits_0(
    cli_vault: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli = cli_vault
    assert cli("engagement", "shred", ENG, "--yes").code == 0
    out = tmp_path / "r.json"
    assert cli("receipt", ENG, "--output", str(out)).code == 0
    r = cli("verify-receipt", str(out))
    assert r.code == 6
    assert "valid receipt" not in r.text
    assert "--public-key" in r.err
    key = cli("info", "--public-key").text.strip()
    r = cli("verify-receipt", str(out), "--public-key", key)
    assert r.code == 0, r.err
    assert verify_sh(out, key).returncode == 0  # the CLI's file is what the script checks


def test_format_1_receipts_still_verify(vault: VaultFixture, engagement: str) -> None:
    with open_as(vault) as v:
        receipt = v.purger.shred(ENG).to_json()
        body = {
            k: val
            for k, val in receipt.items()
            if k not in ("signature", "public_key", "key_id", "destruction_complete_at")
        }
        body["format"] = "credvault-purge-receipt/1"
        msg = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        sig = p.sign(receipt_key(v._s), labels.RECEIPT_SIG, msg)
        key = v.public_key
    old = {**body, "signature": base64.b64encode(sig).decode(), "public_key": key}
    assert credvault.verify_receipt(old, key)["engagement"] == ENG
    with pytest.raises(IntegrityError):
        credvault.verify_receipt({**old, "reason": "grace period expired"}, key)
