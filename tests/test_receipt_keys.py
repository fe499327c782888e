"""Former members keep no power over receipts or the audit trail (issue 11, property 6).

``member rm`` gives the receipt signing key and the audit MAC key successors, written only
into the re-keyed database (which the removed member cannot open): the new receipt key is
introduced by a link its predecessor signs, published with its validity period
(``credvault receipt-keys``), and checkable with openssl alone; the new MAC key is chained
by an ``audit-key`` entry. Written as the removed member (``tests/insider.py``): what they
copied while a member signs or MACs nothing the vault accepts as new. Old receipts and old
entries keep verifying.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import KDF, PASSWORDS, CliRunner, VaultFixture
from credvault import (
    AuditChainBroken,
    IntegrityError,
    Passphrase,
    ReceiptKeys,
    Vault,
    rekey,
    verify_receipt,
)
from credvault import audit as audit_mod
from credvault.crypto import primitives as p
from credvault.model import AuditRow
from credvault.purge import write_receipt
from credvault.receipt_keys import LINKS_META, key_id
from insider import Insider

ENG, LATER = "acme-2026", "later-2026"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _two_receipts(vault: VaultFixture) -> tuple[Any, Any, bytes, bytes]:
    """ENG shredded before bob is removed, LATER after; returns both receipts and the
    receipt private key and audit MAC key bob copied by SQL while a member."""
    with vault.open() as v:
        v.engagements.create(LATER, "globex")
        v.put(f"{LATER}/x", b"later")
        before = v.purger.shred(ENG)
    bob = Insider(vault.path, "bob", vault.clock)
    ((rkey,),) = bob.sql("SELECT value FROM meta WHERE key = 'receipt_key'")
    ((akey,),) = bob.sql("SELECT value FROM meta WHERE key = 'audit_key'")
    vault.clock.advance(hours=1)
    with vault.open() as v:
        v.members.remove("bob")
    vault.clock.advance(hours=1)
    with vault.open() as v:
        after = v.purger.shred(LATER)
    return before, after, bytes(rkey), bytes(akey)


def test_member_rm_hands_the_receipt_key_over_and_old_receipts_still_verify(
    vault: VaultFixture, engagement: str
) -> None:
    before, after, bob_rkey, _ = _two_receipts(vault)
    with vault.open() as v:
        history = v.receipt_keys()
        current = base64.b64decode(v.public_key)
        report = v.check()
        actions = [e.action for e in v.audit.entries()]
    assert len(history.keys) == 2
    first, second = history.keys
    assert first.public_key == p.ed25519_public(bob_rkey)  # what bob copied is retired
    assert second.public_key == current != first.public_key
    assert first.valid_until == second.valid_from is not None
    assert second.link is not None
    assert second.link["predecessor"] == first.key_id
    assert verify_receipt(before, history)["engagement"] == ENG  # old receipts keep verifying
    assert verify_receipt(after, history)["engagement"] == LATER
    assert verify_receipt(after, current)["engagement"] == LATER
    assert after.to_json()["key_id"] == key_id(current)  # the receipt names its key
    with pytest.raises(IntegrityError):
        verify_receipt(before, current)  # signed by the retired key
    assert report.ok, report.problems
    assert any("receipt keys: 2 verified" in line for line in report.checked)
    assert "receipt-key" in actions
    assert "audit-key" in actions


def test_removed_member_cannot_append_audit_entries_that_verify(
    vault: VaultFixture, engagement: str
) -> None:
    """bob kept the MAC key; after his removal the chain continues under a key he never
    saw. An entry he MACs (written here through a current member's SQL shell, the most he
    could ever get) is refused; the same entry under the live key would pass, so the check
    is the key, not the shape of the row."""
    _, _, _, bob_akey = _two_receipts(vault)
    alice = Insider(vault.path, "alice", vault.clock)
    ((head_seq, head_mac),) = alice.sql("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1")
    row = AuditRow(
        int(head_seq) + 1, "2026-01-01T00:00:00.000000Z", "alice", "get", ENG, "x", "ok", "", b""
    )
    canon = audit_mod._canonical(row)

    def insert(key: bytes) -> None:
        alice.sql("DELETE FROM audit WHERE seq = ?", (row.seq,))
        mac = p.mac(key, bytes(head_mac) + canon)
        alice.sql(
            "INSERT INTO audit (seq, ts, member, action, engagement, item, outcome, detail, mac)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row[:8], mac),
        )

    ((live,),) = alice.sql("SELECT value FROM meta WHERE key = 'audit_key'")
    assert bytes(live) != bob_akey
    insert(bytes(live))  # control: the live key makes the row verify
    with vault.open() as v:
        v.audit.verify()
    insert(bob_akey)
    with vault.open() as v, pytest.raises(AuditChainBroken) as e:
        v.audit.verify()
    assert e.value.position == row.seq


def test_rewriting_history_under_the_old_mac_key_breaks_at_the_change(
    vault: VaultFixture, engagement: str
) -> None:
    """bob re-MACs every entry up to the change with his copy of the old key, after editing
    one: the first entry under the new key no longer chains."""
    _, _, _, bob_akey = _two_receipts(vault)
    alice = Insider(vault.path, "alice", vault.clock)
    rows = [AuditRow(*r[:8], bytes(r[8])) for r in alice.sql("SELECT * FROM audit ORDER BY seq")]
    change = next(r.seq for r in rows if r.action == audit_mod.KEY_CHANGE)
    prev = audit_mod.GENESIS
    for r in rows:
        if r.seq > change:
            break
        if r.action == "member-rm":
            r = r._replace(detail="nothing happened")
        mac = p.mac(bob_akey, prev + audit_mod._canonical(r))
        alice.sql("UPDATE audit SET detail = ?, mac = ? WHERE seq = ?", (r.detail, mac, r.seq))
        prev = mac
    with vault.open() as v, pytest.raises(AuditChainBroken) as e:
        v.audit.verify()
    assert e.value.position == change + 1


@pytest.mark.parametrize(
    "edit", ["drop-entry-claim", "forget-prior-keys", "reorder-prior", "truncate-prior"]
)
def test_the_mac_key_change_is_itself_checked(
    vault: VaultFixture, engagement: str, edit: str
) -> None:
    _two_receipts(vault)
    alice = Insider(vault.path, "alice", vault.clock)
    if edit == "drop-entry-claim":
        alice.sql("UPDATE audit SET detail = 'x' WHERE action = 'audit-key'")
    elif edit == "forget-prior-keys":
        alice.sql("DELETE FROM meta WHERE key = 'audit_key_prior'")
    elif edit == "truncate-prior":
        alice.sql("UPDATE meta SET value = substr(value, 1, 39) WHERE key = 'audit_key_prior'")
    else:
        ((raw,),) = alice.sql("SELECT value FROM meta WHERE key = 'audit_key_prior'")
        raw = bytes(raw)
        assert len(raw) == 40  # one retired key: bound (8 bytes) and key (32)
        bound = int.from_bytes(raw[:8], "big")
        alice.sql(
            "UPDATE meta SET value = ? WHERE key = 'audit_key_prior'",
            (raw + (bound - 1).to_bytes(8, "big") + raw[8:],),
        )
    with vault.open() as v, pytest.raises(AuditChainBroken):
        v.audit.verify()


@pytest.mark.parametrize("edit", ["signature", "successor", "drop-first"])
def test_a_tampered_key_history_is_an_integrity_error(
    vault: VaultFixture, engagement: str, edit: str
) -> None:
    _two_receipts(vault)
    with vault.open() as v:
        v.members.remove("carol")  # a second link
    alice = Insider(vault.path, "alice", vault.clock)
    ((raw,),) = alice.sql("SELECT value FROM meta WHERE key = ?", (LINKS_META,))
    links = json.loads(raw)
    assert len(links) == 2
    if edit == "signature":
        links[1]["signature"] = links[0]["signature"]
    elif edit == "successor":
        _, other = p.ed25519_generate()
        links[1]["public_key"] = base64.b64encode(other).decode()
        links[1]["key_id"] = key_id(other)
    else:
        links = links[1:]
    alice.sql("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(links), LINKS_META))
    with vault.open() as v:
        with pytest.raises(IntegrityError):
            v.receipt_keys()
        report = v.check()
    assert not report.ok


def test_the_successors_never_reach_the_old_database_file(
    vault: VaultFixture, engagement: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash right after the COMMIT that removes bob (still under the key bob holds):
    that file has no successor in it; the next open finishes the re-key and only then
    makes them, once."""
    bob = Insider(vault.path, "bob", vault.clock)
    ((rkey,),) = bob.sql("SELECT value FROM meta WHERE key = 'receipt_key'")

    def crash(*_: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(rekey, "finish", crash)
    with vault.open() as v, pytest.raises(RuntimeError):
        v.members.remove("bob")
    assert bob.sql("SELECT value FROM meta WHERE key = 'receipt_key'") == [(rkey,)]
    assert bob.sql("SELECT value FROM meta WHERE key = ?", (LINKS_META,)) == []
    monkeypatch.undo()
    with vault.open() as v:
        assert len(v.receipt_keys().keys) == 2
        v.audit.verify()
    with vault.open() as v:
        assert len(v.receipt_keys().keys) == 2  # once, not at every open
        assert [e.action for e in v.audit.entries()].count("audit-key") == 1
    with pytest.raises(Exception):  # noqa: B017 - bob's key opens nothing now
        bob.sql("SELECT value FROM meta")


def test_restore_follows_the_links_to_receipts_signed_after_the_backup(
    vault: VaultFixture, engagement: str, tmp_path: Path
) -> None:
    """A backup from before bob left knows only the first receipt key; the ledger beside
    the backups carries the link to its successor, which signed the later purge. Without
    the link the receipt is not trusted (and the engagement would come back)."""
    with vault.open() as v:
        file, _ = v.backups.create()
        v.members.remove("bob")
        v.purger.shred(ENG)
    ledger = next(file.parent.glob("credvault-ledger-*.jsonl"))
    saved = ledger.read_text()
    assert '"credvault-receipt-key/1"' in saved

    def restore(target: Path) -> Any:
        return Vault.restore_report(
            file, target, "alice", Passphrase(PASSWORDS["alice"]), kdf=KDF, clock=vault.clock
        )

    shutil.rmtree(vault.path)
    ledger.write_text("".join(ln for ln in saved.splitlines(True) if "receipt-key/1" not in ln))
    assert restore(tmp_path / "r1").destroyed_after_backup == []
    ledger.write_text(saved)
    assert restore(tmp_path / "r2").destroyed_after_backup == [ENG]


# -- what a client runs: the CLI and openssl --------------------------------------------------
def _sh(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("dash") or "/bin/sh"
    return subprocess.run(
        [sh, str(DOCS / script), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.cli
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_client_follows_the_key_history_with_openssl_alone(
    cli_vault: CliRunner, tmp_path: Path
) -> None:
    cli = cli_vault
    first = cli("info", "--public-key").out.decode().strip()
    assert cli("member", "rm", "bob").code == 0
    r = cli("engagement", "shred", "acme-2026", "--yes")
    assert r.code == 0, r.err
    receipt = tmp_path / "receipt.json"
    assert cli("receipt", "acme-2026", "--output", str(receipt)).code == 0
    current = cli("info", "--public-key").out.decode().strip()
    assert current != first
    # with only the first key, the receipt does not verify ...
    assert _sh("verify-receipt.sh", str(receipt), first).returncode == 1
    # ... until the client checks the link the first key signed, and takes its successor
    r = cli("receipt-keys", "--links")
    assert r.code == 0, r.err
    lines = r.out.decode().splitlines()
    assert len(lines) == 1, lines
    (line,) = lines
    link = tmp_path / "link.json"
    link.write_text(line + "\n")
    ok = _sh("verify-receipt-key.sh", str(link), first)
    assert ok.returncode == 0, ok.stderr
    successor = ok.stdout.split("SUCCESSOR: ")[1].strip()
    assert successor == current
    assert _sh("verify-receipt.sh", str(receipt), successor).returncode == 0
    # a link checked against any other key, or altered, is refused
    _, other = p.ed25519_generate()
    assert _sh("verify-receipt-key.sh", str(link), base64.b64encode(other).decode()).returncode == 1
    forged = json.loads(line)
    forged["valid_from"] = "2000-01-01T00:00:00.000000Z"
    bad = tmp_path / "forged.json"
    write_receipt(bad, forged)  # the same canonical one-line form
    assert _sh("verify-receipt-key.sh", str(bad), first).returncode == 1
    # the JSON history, and verify-receipt following it from the first key
    hist = tmp_path / "keys.json"
    assert cli("receipt-keys", "--output", str(hist)).code == 0
    data = json.loads(hist.read_text())
    assert [k["valid_until"] is None for k in data["keys"]] == [False, True]
    assert ReceiptKeys.from_json(data, first).current.key_id == data["keys"][1]["key_id"]
    r = cli("verify-receipt", str(receipt), "--public-key", first)
    assert r.code == 6
    r = cli("verify-receipt", str(receipt), "--public-key", first, "--key-history", str(hist))
    assert r.code == 0, r.err
    assert "successor" in r.out.decode()
    table = cli("receipt-keys").out.decode()
    assert data["keys"][1]["key_id"][:16] in table


def test_pruning_across_a_mac_key_change_keeps_the_chain_verifiable(
    vault: VaultFixture, engagement: str
) -> None:
    """Entries under the retired key (and the hand-over entry itself) pruned by retention:
    what is left, all under the new key, still verifies from the anchor."""
    _two_receipts(vault)  # the first hand-over (bob), then 200 days later a second (carol)
    vault.clock.advance(days=200)
    with vault.open() as v:
        v.purger.run_due(automatic=False, confirm_clock=f"{vault.clock():%Y-%m-%d}")
        v.members.remove("carol")
    vault.clock.advance(days=200)
    with vault.open() as v:
        # prunes the audit trail older than 365 days (a jump of 400 days needs confirming)
        v.purger.run_due(automatic=False, confirm_clock=f"{vault.clock():%Y-%m-%d}")
        assert v.audit.verify() > 0
        actions = [e.action for e in v.audit.entries()]
    assert "audit-prune" in actions
    assert actions.count("audit-key") == 1  # the first hand-over pruned, the second kept


def test_a_broken_chain_shows_no_mac_key_in_traceback_locals(
    vault: VaultFixture, engagement: str
) -> None:
    """The retired and current MAC keys are handled as redacted key bytes: a verify that
    fails (the common error path of the trail) prints neither with its locals."""
    from test_leaks import _credvault_frames_text

    _, _, _, retired = _two_receipts(vault)
    alice = Insider(vault.path, "alice", vault.clock)
    ((live,),) = alice.sql("SELECT value FROM meta WHERE key = 'audit_key'")
    alice.sql("UPDATE audit SET detail = 'edited' WHERE seq = (SELECT max(seq) FROM audit)")
    with vault.open() as v, pytest.raises(AuditChainBroken) as e:
        v.audit.verify()
    text = _credvault_frames_text(e.value)
    assert "KeyBytes(<32 bytes redacted>)" in text  # the keys were locals, redacted
    for key in (retired, bytes(live)):
        assert key.hex() not in text
        assert repr(key)[2:-1] not in text
