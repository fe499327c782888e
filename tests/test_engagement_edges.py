"""Engagement changes a user can get wrong, in-process: creating over a name or for a
stranger, granting before the lead made the first key (refused, the admin holds no grant),
and the recovery key on an engagement with no key yet (granted; the lead's first command
seals the newcomer a copy)."""

from __future__ import annotations

import pytest

from conftest import VaultFixture
from credvault import AccessDenied, AlreadyExists, InvalidInput, NotFound, Role


def test_create_refuses_a_taken_name_and_an_unknown_lead(vault: VaultFixture) -> None:
    with vault.open() as v:
        v.engagements.create("acme-2026", "acme")
        with pytest.raises(AlreadyExists, match="already exists"):
            v.engagements.create("acme-2026", "other")
        with pytest.raises(NotFound, match="mallory"):
            v.engagements.create("beta-2026", "beta", lead="mallory")
        with pytest.raises(InvalidInput):
            v.engagements.create("beta-2026", "beta", grace_days=-1)
        assert [e.name for e in v.engagements.visible()] == ["acme-2026"]
        assert v.engagements.get("acme-2026").client == "acme"


def test_before_the_first_key_only_the_lead_may_grant(vault: VaultFixture) -> None:
    """alice (admin) creates beta-2026 for bob: no key exists until bob's first command, and
    alice, holding no grant, may not grant on it (admins manage people, not access)."""
    with vault.open() as v:
        v.engagements.create("beta-2026", "beta", lead="bob")
        with pytest.raises(AccessDenied):
            v.engagements.grant("beta-2026", "carol", "engineer")
        with pytest.raises(NotFound):
            v.recover("beta-2026", vault.recovery_key, "mallory", "engineer")
        assert {g.member for g in v.engagements.members("beta-2026")} == {"bob"}


def test_recovery_on_an_engagement_without_a_key_grants_and_the_lead_seals_later(
    vault: VaultFixture,
) -> None:
    with vault.open() as v:
        v.engagements.create("beta-2026", "beta", lead="bob")
        v.recover("beta-2026", vault.recovery_key, "carol", "engineer")
        (carol,) = [g for g in v.engagements.members("beta-2026") if g.member == "carol"]
        assert (carol.role, carol.has_key) == ("engineer", False)
    with vault.open("carol") as v, pytest.raises(AccessDenied, match="no key yet"):
        v.put("beta-2026/early", b"too-early")  # nothing to seal it under yet
    with vault.open("bob") as v:  # the first lead's first command makes the key
        v.put("beta-2026/db", b"beta-secret")
        eng = v.engagements.get("beta-2026")
        assert v.engagements.role_of(eng, "carol") is Role.ENGINEER
    with vault.open("carol") as v:
        assert v.get("beta-2026/db").secret.reveal() == b"beta-secret"
