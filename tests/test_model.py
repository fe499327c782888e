"""Records and time formats (issue 10): ``model.py`` is the one place that says which columns
hold envelopes and how timestamps are written; the store decodes rows into these records."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

from conftest import VaultFixture
from credvault import model
from credvault.model import SEALED_FIELDS, CredentialRow, Engagement, Grant, SystemRow
from credvault.retention import purge_due


def _env_columns() -> dict[str, set[str]]:
    ddl = resources.files("credvault").joinpath("schema.sql").read_text()
    out: dict[str, set[str]] = {}
    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", ddl, re.S):
        cols = set(re.findall(r"^\s+(\w+)_env\s", body, re.M))
        if cols:
            out[table] = cols
    return out


def test_sealed_fields_are_exactly_the_envelope_columns() -> None:
    """A new ``*_env`` column missing from SEALED_FIELDS would not be re-encrypted on rotation."""
    assert _env_columns() == {t: set(f) for t, f in SEALED_FIELDS.items()}


def test_rotation_reseals_every_envelope_column(vault: VaultFixture) -> None:
    """Every envelope, of every sealed field, is different after a rotation and still opens."""
    with vault.open() as v:
        v.engagements.create("e", "c")
        v.systems.add("e/h", "10.0.0.9", details="rack 4")
        v.credentials.put("e/x", b"s3", username="u", url="https://x", notes="n", system="h")
        eng = v.engagements.get("e")
        before = {t: v._s.store.sealed_rows(t, eng.id) for t in SEALED_FIELDS}
        assert all(b is not None for rows in before.values() for r in rows for b in r.blobs)
        v.engagements.rotate("e")
        after = {t: v._s.store.sealed_rows(t, eng.id) for t in SEALED_FIELDS}
        for table in SEALED_FIELDS:
            for old, new in zip(before[table], after[table], strict=True):
                assert (old.id, old.uid) == (new.id, new.uid)
                assert all(a != b for a, b in zip(old.blobs, new.blobs, strict=True)), table
        c = v.credentials.get("e/x")
        assert (c.secret.reveal(), c.username, c.url, c.notes, c.address) == (
            b"s3",
            "u",
            "https://x",
            "n",
            "10.0.0.9",
        )
        assert v.systems.show("e/h").details == "rack 4"


def test_store_returns_records(vault: VaultFixture) -> None:
    with vault.open() as v:
        v.engagements.create("e", "c")
        v.systems.add("e/h", "10.0.0.9")
        v.credentials.put("e/x", b"s3", system="h")
        eng = v._s.store.engagement_by_name("e")
        assert isinstance(eng, Engagement)
        assert eng.name == "e"
        assert eng.key_version == 1
        grant = v._s.store.grant_of(eng.id, "alice")
        assert isinstance(grant, Grant)
        assert grant.role == "lead"
        assert grant.sealed is not None
        assert grant.live(v._s.now())
        cred = v._s.store.credential(eng.id, "x")
        assert isinstance(cred, CredentialRow)
        assert cred.system == "h"
        system = v._s.store.system(eng.id, "h")
        assert isinstance(system, SystemRow)
        assert cred.system_id == system.id
        assert v._s.store.names("credentials", eng.id) == ["x"]


def test_time_formats_round_trip() -> None:
    t = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    assert model.iso(t) == "2026-03-04T05:06:07.890123Z"
    assert model.parse_iso(model.iso(t)) == t
    assert model.backup_stamp(t) == "20260304T050607Z"
    assert model.parse_backup_stamp("20260304T050607Z") == t.replace(microsecond=0)
    assert model.expiry_stamp(t) == "2026-03-04T05:06:07Z"


def test_purge_due_is_the_later_of_grace_and_hold() -> None:
    closed = "2026-01-01T00:00:00.000000Z"
    assert purge_due(closed, 7, None) == "2026-01-08T00:00:00.000000Z"
    assert purge_due(closed, 0, None) == closed
    assert purge_due(closed, 7, "2026-02-01T00:00:00.000000Z") == "2026-02-01T00:00:00.000000Z"
    assert purge_due(closed, 7, "2026-01-02T00:00:00.000000Z") == "2026-01-08T00:00:00.000000Z"


def test_parse_iso_reads_exactly_what_strptime_read() -> None:
    """The fast path (no ``strptime`` on the ``get`` path) accepts and returns exactly what
    ``strptime`` with the stored format did; anything else is still ``strptime``'s call,
    with its own errors."""
    from hypothesis import given
    from hypothesis import strategies as st

    def old(text: object) -> tuple[str, object]:
        try:
            return "ok", datetime.strptime(text, model._ISO).replace(tzinfo=UTC)  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:
            return type(e).__name__, str(e)

    def new(text: object) -> tuple[str, object]:
        try:
            return "ok", model.parse_iso(text)  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:
            return type(e).__name__, str(e)

    low, high = (datetime(y, 1, 1, tzinfo=UTC).replace(tzinfo=None) for y in (1000, 9999))

    @given(st.datetimes(min_value=low, max_value=high))
    def round_trip(t: datetime) -> None:
        t = t.replace(tzinfo=UTC)
        assert model.parse_iso(model.iso(t)) == t
        assert new(model.iso(t)) == old(model.iso(t))

    round_trip()
    odd = [
        "2026-13-01T00:00:00.000000Z",  # month out of range
        "2026-02-30T00:00:00.000000Z",  # no such day
        "2026-01-01T00:00:60.000000Z",  # leap second
        "2026-1-01T00:00:00.000000Z",  # strptime takes one digit
        "2026-01-01T00:00:00.0Z",
        "\u0662\u0660\u0662\u0666-01-01T00:00:00.000000Z",  # other digits
        "2026-01-01T00:00:00.000000Z\n",
        "",
        None,
        b"2026-01-01T00:00:00.000000Z",
    ]
    for text in odd:
        assert new(text) == old(text), text

    @given(st.text(alphabet="0123456789-:.TZ\u0662 ", max_size=30))
    def same(text: str) -> None:
        assert new(text) == old(text)

    same()
