"""Engagements made before the membership log (format 3), run by the current code's pre-log
rules: grants, lowering, revocation and recovery on a vault written by the format-1 release
(tests/fixtures/vault-prelog, made by ``make_prelog_vault.py`` with that release).

Only an engagement's first lead bootstraps its log (docs/security.md §12): alice is never
opened on acme-2026's side here and bob never on beta-2026's, so both stay pre-log and every
change below goes through the signed-row rules (role certificates chaining to the admin-signed
creation record, sealed copies signed by an entitled lead).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import copy_fixture_vault
from credvault import MIN_KDF, AccessDenied, IntegrityError, NotFound, Vault
from credvault.access import Role
from credvault.grants import creation_message, role_message

FIXTURE = Path(__file__).parent / "fixtures" / "vault-prelog"
RECOVERY_KEY = (FIXTURE.parent / "vault-prelog.recovery").read_text().strip()

Opener = Callable[[str], Vault]


@pytest.fixture
def prelog(tmp_path: Path) -> Path:
    return copy_fixture_vault(FIXTURE, tmp_path / "vault")


@pytest.fixture
def as_(prelog: Path) -> Opener:
    def open_(member: str) -> Vault:
        return Vault.open(prelog, member, f"{member}-pass", kdf=MIN_KDF)

    return open_


def _log_head(v: Vault, name: str) -> object:
    return v._s.store.log_head(v.engagements.get(name).id)


def test_a_second_lead_rotates_and_grants_under_the_prelog_rules(as_: Opener) -> None:
    with as_("bob") as v:
        # bob's open finished the rotation the upgrade left pending, under the pre-log rules
        # (signed copies, no log): key version 1 was sealed by the creating admin.
        eng = v.engagements.get("acme-2026")
        assert eng.key_version == 2
        assert [e.detail.split(";")[0] for e in v.audit_entries(action="rotate")][:1] == [
            "key version 2 (pending rotation)"
        ]
        v.engagements.grant("acme-2026", "dave", "engineer")
        assert _log_head(v, "acme-2026") is None  # still pre-log: bob is not its first lead
        assert v.engagements.get("acme-2026").key_version == 2  # a new reader: no rotation
        assert [(g.member, g.role, g.granted_by) for g in v.engagements.members("acme-2026")] == [
            ("alice", "lead", "alice"),
            ("bob", "lead", "alice"),
            ("carol", "engineer", "alice"),
            ("dave", "engineer", "bob"),
        ]
    with as_("dave") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"
        assert v.engagements.role_of(v.engagements.get("acme-2026")) is Role.ENGINEER


def test_a_lead_cannot_lower_the_lead_who_granted_their_own_role(as_: Opener) -> None:
    """bob's lead certificate is signed by alice: lowering her would void his own chain."""
    with as_("bob") as v:
        with pytest.raises(AccessDenied, match="they granted your lead role"):
            v.engagements.grant("acme-2026", "alice", "engineer")
        eng = v.engagements.get("acme-2026")
        assert v.engagements.role_of(eng, "alice") is Role.LEAD
        assert v.engagements.role_of(eng) is Role.LEAD
        denied = [e for e in v.audit_entries(action="grant") if e.outcome != "ok"]
        assert [(e.item, e.outcome) for e in denied] == [("alice", "denied")]


def test_lowering_to_a_role_without_the_key_rotates_it_away(as_: Opener) -> None:
    with as_("bob") as v:
        version = v.engagements.get("acme-2026").key_version
        v.engagements.grant("acme-2026", "carol", "auditor")
        assert v.engagements.get("acme-2026").key_version == version + 1
        assert "role lowered" in v.audit_entries(action="rotate")[-1].detail
        (carol,) = [g for g in v.engagements.members("acme-2026") if g.member == "carol"]
        assert (carol.role, carol.has_key) == ("auditor", False)
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"
    with as_("carol") as v, pytest.raises(AccessDenied):
        v.get("acme-2026/web1-root")


def test_lowering_a_lead_re_signs_the_grants_they_made(as_: Opener) -> None:
    """dave (lead, granted by bob) gives carol reader; bob lowers dave: carol's certificate,
    signed by a member who is no longer a lead, is re-signed by bob and keeps verifying."""
    with as_("bob") as v:
        v.engagements.grant("acme-2026", "dave", "lead")
    with as_("dave") as v:
        v.engagements.grant("acme-2026", "carol", "reader")
    with as_("bob") as v:
        v.engagements.grant("acme-2026", "dave", "engineer")
        eng = v.engagements.get("acme-2026")
        rows = {g.member: g for g in v.engagements.members("acme-2026")}
        assert (rows["carol"].role, rows["carol"].granted_by) == ("reader", "bob")
        assert v.engagements.role_of(eng, "carol") is Role.READER
        assert v.engagements.role_of(eng, "dave") is Role.ENGINEER
    with as_("carol") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"
    with as_("dave") as v, pytest.raises(AccessDenied):
        v.engagements.grant("acme-2026", "carol", "engineer")


def test_lowering_a_lead_that_would_break_another_leads_chain_is_refused(as_: Opener) -> None:
    """alice -> bob -> dave -> carol, all leads. carol lowering bob re-signs dave's grant
    with carol's key, whose own grant is dave's: a cycle, so neither would verify. Refused,
    and nothing is written."""
    with as_("bob") as v:
        v.engagements.grant("acme-2026", "dave", "lead")
    with as_("dave") as v:
        v.engagements.grant("acme-2026", "carol", "lead")
    with as_("carol") as v:
        version = v.engagements.get("acme-2026").key_version
        with pytest.raises(AccessDenied, match="would leave a lead whose grant no longer"):
            v.engagements.grant("acme-2026", "bob", "engineer")
        eng = v.engagements.get("acme-2026")
        assert eng.key_version == version
        for member in ("bob", "dave", "carol"):
            assert v.engagements.role_of(eng, member) is Role.LEAD, member
        assert v.audit_entries(action="grant")[-1].outcome == "denied"
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"


def test_revoke_rotates_and_names_what_was_read(as_: Opener) -> None:
    with as_("carol") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"
    with as_("bob") as v:
        with pytest.raises(NotFound):
            v.engagements.revoke("acme-2026", "dave")  # never granted
        with pytest.raises(AccessDenied, match="cannot revoke themselves"):
            v.engagements.revoke("acme-2026", "bob")
        version = v.engagements.get("acme-2026").key_version
        report = v.engagements.revoke("acme-2026", "carol")
        assert list(report) == ["web1-root"]
        assert v.engagements.get("acme-2026").key_version == version + 1
        assert "revoked carol" in v.audit_entries(action="rotate")[-1].detail
        assert "carol" not in {g.member for g in v.engagements.members("acme-2026")}
        with pytest.raises(NotFound):
            v.engagements.revoke("acme-2026", "carol")  # already revoked
    with as_("carol") as v, pytest.raises(AccessDenied):
        v.get("acme-2026/web1-root")


def test_recovery_grants_on_an_engagement_the_admin_does_not_lead(as_: Opener) -> None:
    """beta-2026 is bob's (alice created it for him): alice, admin without a grant, uses the
    recovery key to give carol a copy; carol reads, and the engagement stays pre-log."""
    with as_("alice") as v:
        with pytest.raises(AccessDenied):
            v.get("beta-2026/db")
        v.recover("beta-2026", RECOVERY_KEY, "carol", "engineer")
        assert _log_head(v, "beta-2026") is None
        (rec,) = v.audit_entries(action="recover")
        assert (rec.engagement, rec.item, rec.outcome) == ("beta-2026", "carol", "ok")
    with as_("carol") as v:
        assert v.get("beta-2026/db").secret.reveal() == b"beta-secret"
        eng = v.engagements.get("beta-2026")
        assert v.engagements.role_of(eng) is Role.ENGINEER


def test_recovery_lowering_the_lead_re_signs_their_grants_and_rotates(as_: Opener) -> None:
    with as_("alice") as v:
        v.recover("beta-2026", RECOVERY_KEY, "carol", "lead")
        version = v.engagements.get("beta-2026").key_version
        v.recover("beta-2026", RECOVERY_KEY, "bob", "reader")
        eng = v.engagements.get("beta-2026")
        assert eng.key_version == version + 1
        assert "role changed by recovery" in v.audit_entries(action="rotate")[-1].detail
        assert v.engagements.role_of(eng, "bob") is Role.READER
        assert v.engagements.role_of(eng, "carol") is Role.LEAD
    with as_("bob") as v:  # a reader now: no bootstrap, still reads under the new key
        assert v.get("beta-2026/db").secret.reveal() == b"beta-secret"
        with pytest.raises(AccessDenied):
            v.engagements.grant("beta-2026", "dave", "reader")
        assert _log_head(v, "beta-2026") is None


def test_a_deleted_recovery_copy_is_tampering_not_a_silent_skip(as_: Opener) -> None:
    """The insider deletes beta-2026's recovery grant row: using the recovery key there is
    an integrity error, and nothing is granted."""
    with as_("alice") as v:
        eng = v.engagements.get("beta-2026")
        v._s.store.conn.execute(
            "DELETE FROM grants WHERE engagement_id = ? AND member = '@recovery'", (eng.id,)
        )
        with pytest.raises(IntegrityError, match="has no recovery copy"):
            v.recover("beta-2026", RECOVERY_KEY, "carol", "engineer")
        assert "carol" not in {g.member for g in v.engagements.members("beta-2026")}


# -- passwd --compromised on pre-log engagements (members.py) ---------------------------------
def _open_with(prelog: Path, member: str, passphrase: str) -> Vault:
    return Vault.open(prelog, member, passphrase, kdf=MIN_KDF)


def test_a_compromised_lead_re_signs_their_pre_log_grants_and_rotates(
    as_: Opener, prelog: Path
) -> None:
    """bob granted dave and sealed his copy; after bob's new key pair the old signatures
    are re-made by the new key (the old key verifies nothing bob signs any more): dave
    still reads under the rotated key, and the engagement is still pre-log."""
    with as_("bob") as v:
        v.engagements.grant("acme-2026", "dave", "engineer")
        version = v.engagements.get("acme-2026").key_version
        result = v.members.passwd("bob-new-pass", compromised=True)
        assert result.compromised is True
        assert "acme-2026" in result.rotated
        assert result.resigned >= 2  # dave's role certificate and his key copy at least
    with _open_with(prelog, "bob", "bob-new-pass") as v:
        eng = v.engagements.get("acme-2026")
        assert eng.key_version > version
        assert _log_head(v, "acme-2026") is None
        assert v.engagements.role_of(eng, "dave") is Role.ENGINEER
        g = v._s.store.grant_of(eng.id, "dave")
        assert g is not None
        msg = role_message(v._s, eng, "dave", g.role, g.expires_at, "bob")
        assert v.engagements.grants.signed_by("bob", msg, g.role_sig) == "live"
    with as_("dave") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"


def test_a_compromised_engineer_waits_for_the_leads_rotation(as_: Opener, prelog: Path) -> None:
    """carol (engineer, pre-log) replaces her keys: her old copy is dropped and the
    engagement marked; she cannot read until bob, a lead, rotates on his next command."""
    with as_("carol") as v:
        result = v.members.passwd("carol-new-pass", compromised=True)
        assert (result.rotated, result.pending) == ([], ["acme-2026"])
    with _open_with(prelog, "carol", "carol-new-pass") as v, pytest.raises(AccessDenied):
        v.get("acme-2026/web1-root")
    with as_("bob") as v:  # the lead's open finishes the pending rotation
        assert v.engagements.get("acme-2026").needs_rotation is False
    with _open_with(prelog, "carol", "carol-new-pass") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"


def test_a_compromised_admin_re_signs_the_creation_record_of_a_pre_log_engagement(
    as_: Opener, prelog: Path
) -> None:
    """beta-2026's admin-signed creation record (alice made it for bob) is re-signed by
    alice's new key: the recovery grant chain still verifies and carol reads."""
    with as_("alice") as v:
        v.members.passwd("alice-new-pass", compromised=True)
    with _open_with(prelog, "alice", "alice-new-pass") as v:
        assert _log_head(v, "beta-2026") is None
        eng = v.engagements.get("beta-2026")
        msg = creation_message(v._s, eng.uid, eng.name, eng.client, eng.lead, eng.created_by)
        # "live": alice's new key made it; the old (retired) one would only say "retired"
        assert v.engagements.grants.signed_by("alice", msg, eng.creation_sig) == "live"
        v.recover("beta-2026", RECOVERY_KEY, "carol", "engineer")
    with as_("carol") as v:
        assert v.get("beta-2026/db").secret.reveal() == b"beta-secret"


# -- the insider (database key in hand) edits pre-log grant rows (engagement_keys.py) --------
def _carols_row(v: Vault) -> tuple[int, int]:
    eng = v.engagements.get("acme-2026")
    return eng.id, eng.key_version


def _resealed_by_carol(v: Vault) -> None:
    """carol (engineer) seals her own copy again and signs it herself."""
    eng_id, version = _carols_row(v)
    eng = v.engagements.get("acme-2026")
    key = v.engagements.keys.key(eng, "credential.get")
    sealed, sig = v.engagements.keys.seal_copy(
        eng, "carol", version, key, "carol", v._s.keys.sign_private
    )
    v._s.store.conn.execute(
        "UPDATE grants SET sealed = ?, sealed_by = 'carol', copy_sig = ? "
        "WHERE engagement_id = ? AND member = 'carol'",
        (sealed, sig, eng_id),
    )


def _sql(statement: str) -> Callable[[Vault], None]:
    def edit(v: Vault) -> None:
        eng_id, _ = _carols_row(v)
        v._s.store.conn.execute(statement, (eng_id,))

    return edit


EDITS = {
    "copy-of-an-old-version": (
        _sql(
            "UPDATE grants SET key_version = key_version - 1 WHERE engagement_id = ? AND member = 'carol'"
        ),
        IntegrityError,
        "key copy of an old version",
    ),
    "copy-signature-flipped": (
        _sql(
            "UPDATE grants SET copy_sig = zeroblob(64) WHERE engagement_id = ? AND member = 'carol'"
        ),
        IntegrityError,
        "signature check failed",
    ),
    "copy-sealed-by-an-engineer": (
        _resealed_by_carol,
        IntegrityError,
        "sealed by someone not entitled",
    ),
    "copy-removed": (
        _sql("UPDATE grants SET sealed = NULL WHERE engagement_id = ? AND member = 'carol'"),
        AccessDenied,
        "no key held",
    ),
    "fingerprint-changed": (
        _sql("UPDATE engagements SET key_fp = '00000000000000000000000000000000' WHERE id = ?"),
        IntegrityError,
        "key fingerprint mismatch",
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_key_copy_gives_no_key(as_: Opener, edit: str) -> None:
    change, error, message = EDITS[edit]
    with as_("carol") as v:
        assert v.get("acme-2026/web1-root").secret.reveal() == b"prelog-secret"
        change(v)
    with as_("carol") as v, pytest.raises(error, match=message):
        v.get("acme-2026/web1-root")


def test_an_engineer_cannot_forge_a_grant_for_a_stranger(as_: Opener) -> None:
    """carol (engineer) writes dave a grant row with a role certificate and a key copy she
    signed herself: the certificate does not chain to a lead, so dave gets an integrity
    error, and the lead's next rotation seals nothing to him."""
    from credvault.model import Grant

    with as_("carol") as v:
        eng = v.engagements.get("acme-2026")
        key = v.engagements.keys.key(eng, "credential.get")
        priv = v._s.keys.sign_private
        sealed, sig = v.engagements.keys.seal_copy(eng, "dave", eng.key_version, key, "carol", priv)
        role_sig = v.engagements.grants.sign_role(eng, "dave", "engineer", None, "carol", priv)
        row = Grant("dave", "engineer", "carol", v._s.now(), None, role_sig,
                    eng.key_version, sealed, "carol", sig, None)  # fmt: skip
        with v._s.store.write():
            v._s.store.put_grant(eng.id, row)
    with as_("dave") as v, pytest.raises(IntegrityError, match="fails its signature check"):
        v.get("acme-2026/web1-root")
    with as_("bob") as v:  # bob's open rotates (pending): no copy of the new key for dave
        eng = v.engagements.get("acme-2026")
        assert v.engagements.role_of(eng, "dave") is None
        dave = v._s.store.grant_of(eng.id, "dave")
        assert dave is not None
        assert dave.key_version != eng.key_version


def test_a_forged_grant_row_is_not_listed_as_a_member(as_: Opener) -> None:
    """``engagement members`` and ``show`` list the grants whose certificate verifies, as
    the membership log's roster does: a row carol (engineer) wrote for dave as a lead is a
    claim that grants nothing, and is not shown as one."""
    from credvault.model import Grant

    with as_("carol") as v:
        eng = v.engagements.get("acme-2026")
        priv = v._s.keys.sign_private
        role_sig = v.engagements.grants.sign_role(eng, "dave", "lead", None, "carol", priv)
        row = Grant("dave", "lead", "carol", v._s.now(), None, role_sig,
                    None, None, None, None, None)  # fmt: skip
        with v._s.store.write():
            v._s.store.put_grant(eng.id, row)
    with as_("bob") as v:
        eng = v.engagements.get("acme-2026")
        assert v.engagements.role_of(eng, "dave") is None
        listed = {g.member: g.role for g in v.engagements.members("acme-2026")}
        assert listed == {"alice": "lead", "bob": "lead", "carol": "engineer"}
        assert [g.member for g in v.engagements.show("acme-2026").members] == [
            "alice",
            "bob",
            "carol",
        ]
