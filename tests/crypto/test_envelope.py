"""Envelopes (spec §4.3): round trips of any value, and every kind of move or damage fails.

A value sealed for one :class:`Place` must open only there, under the key it was sealed
with, at the key version it names; any other combination, and any truncation or flipped
bit, is :class:`IntegrityError` and never some other plaintext.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credvault.crypto import envelope, labels
from credvault.crypto.envelope import MIN_LEN, Place
from credvault.errors import IntegrityError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PLACE = Place(b"v" * 16, b"e" * 16, "credentials", b"r" * 16, "secret")

ids = st.binary(min_size=1, max_size=24)
names = st.text(min_size=1, max_size=16)
# A record's binding (format 0x02): text, bytes and 8-byte signed integers, or none (0x01).
parts_ = st.one_of(names, ids, st.integers(min_value=-(2**63), max_value=2**63 - 1))
bindings = st.one_of(st.just(()), st.lists(parts_, min_size=1, max_size=4).map(tuple))
places = st.builds(Place, ids, ids, names, ids, names, bindings)
versions = st.integers(min_value=0, max_value=2**32 - 1)


FIELDS = ("vault_id", "engagement_id", "table", "record_id", "field")


def _with(place: Place, attr: str, value: bytes | str) -> Place:
    return Place(*(value if f == attr else getattr(place, f) for f in FIELDS), place.binding)


def _other(place: Place, attr: str) -> Place:
    """The same place with one attribute changed (still non-empty, still the same type)."""
    value = getattr(place, attr)
    return _with(place, attr, value + (b"x" if isinstance(value, bytes) else "x"))


# Hypothesis draws at most a few KiB of raw bytes per example, so long values repeat a drawn
# seed up to a drawn length: every length from 0 to 70 KiB, any byte values.
plaintexts = st.one_of(
    st.binary(max_size=4096),
    st.builds(
        lambda seed, n: (seed * (n // len(seed) + 1))[:n],
        st.binary(min_size=1, max_size=64),
        st.integers(min_value=0, max_value=70 * 1024),
    ),
)


# -- round trips -----------------------------------------------------------------------------
@given(plaintext=plaintexts, place=places, version=versions)
def test_round_trip_any_bytes(plaintext: bytes, place: Place, version: int) -> None:
    blob = envelope.seal(place, plaintext, KEY, version)
    assert envelope.key_version_of(blob) == version
    assert envelope.open_(place, blob, KEY) == plaintext
    assert len(blob) == MIN_LEN + len(plaintext)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 65535, 65536, 70 * 1024])
def test_round_trip_boundary_lengths(size: int) -> None:
    plaintext = os.urandom(size)
    blob = envelope.seal(PLACE, plaintext, KEY, 1)
    assert envelope.open_(PLACE, blob, KEY) == plaintext
    if size >= 16:
        assert plaintext not in blob  # actually encrypted


def test_two_seals_of_the_same_plaintext_differ() -> None:
    a = envelope.seal(PLACE, b"same value", KEY, 1)
    b = envelope.seal(PLACE, b"same value", KEY, 1)
    assert a != b
    wrapped = slice(5, 5 + 60)
    body_nonce = slice(5 + 60, 5 + 60 + 12)
    assert a[wrapped] != b[wrapped]  # a fresh data key (and wrap nonce) per value
    assert a[5:17] != b[5:17]  # wrap nonce
    assert a[body_nonce] != b[body_nonce]  # data nonce
    assert envelope.open_(PLACE, a, KEY) == envelope.open_(PLACE, b, KEY) == b"same value"


def test_same_data_key_still_gets_fresh_nonces() -> None:
    dek = os.urandom(32)
    a = envelope._seal_from_parts(PLACE, b"value", KEY, 1, dek)
    b = envelope._seal_from_parts(PLACE, b"value", KEY, 1, dek)
    assert a != b
    assert envelope.open_(PLACE, a, KEY) == envelope.open_(PLACE, b, KEY) == b"value"


# -- moves -----------------------------------------------------------------------------------
@pytest.mark.parametrize("attr", FIELDS)
@given(place=places, plaintext=st.binary(max_size=256))
def test_moved_to_another_place_fails(attr: str, place: Place, plaintext: bytes) -> None:
    blob = envelope.seal(place, plaintext, KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(_other(place, attr), blob, KEY)


@given(a=places, b=places, plaintext=st.binary(max_size=256))
def test_any_other_place_fails(a: Place, b: Place, plaintext: bytes) -> None:
    blob = envelope.seal(a, plaintext, KEY, 7)
    if a == b:
        assert envelope.open_(b, blob, KEY) == plaintext
    else:
        with pytest.raises(IntegrityError):
            envelope.open_(b, blob, KEY)


def test_field_boundaries_are_part_of_the_place() -> None:
    """("a/b", "c") and ("a", "b/c") are different places, not one joined string."""
    a = Place(b"v", b"e", "credentials/x", b"r", "secret")
    b = Place(b"v", b"e", "credentials", b"r", "x/secret")
    blob = envelope.seal(a, b"value", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(b, blob, KEY)


@given(version=versions, new=versions)
def test_key_version_rewritten_fails(version: int, new: int) -> None:
    blob = envelope.seal(PLACE, b"value", KEY, version)
    moved = blob[:1] + new.to_bytes(4, "big") + blob[5:]
    if new == version:
        assert envelope.open_(PLACE, moved, KEY) == b"value"
    else:
        with pytest.raises(IntegrityError):
            envelope.open_(PLACE, moved, KEY)


def test_parts_spliced_between_versions_fail() -> None:
    dek = os.urandom(32)
    v1 = envelope._seal_from_parts(PLACE, b"value", KEY, 1, dek)
    v2 = envelope._seal_from_parts(PLACE, b"value", KEY, 2, dek)
    # the v2 header with v1's wrapped key, and the other way round
    for blob in (v2[:5] + v1[5:65] + v2[65:], v2[:65] + v1[65:], v1[:5] + v2[5:]):
        with pytest.raises(IntegrityError):
            envelope.open_(PLACE, blob, KEY)


def test_wrong_key_fails() -> None:
    blob = envelope.seal(PLACE, b"value", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, blob, OTHER_KEY)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, blob, bytes(32))


def test_data_key_wrapped_under_another_key_fails() -> None:
    """A blob whose wrapped data key comes from another engagement's envelope fails."""
    dek = os.urandom(32)
    mine = envelope._seal_from_parts(PLACE, b"value", KEY, 1, dek)
    theirs = envelope._seal_from_parts(PLACE, b"value", OTHER_KEY, 1, dek)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, theirs[:65] + mine[65:], KEY)


# -- damage ----------------------------------------------------------------------------------
@given(plaintext=st.binary(max_size=512), data=st.data())
def test_truncation_anywhere_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob = envelope.seal(PLACE, plaintext, KEY, 1)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, blob[:cut], KEY)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, blob[len(blob) - cut :] if cut else b"", KEY)


@given(plaintext=st.binary(max_size=512), data=st.data())
def test_bit_flip_anywhere_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob = bytearray(envelope.seal(PLACE, plaintext, KEY, 1))
    pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, bytes(blob), KEY)


def test_every_single_bit_flip_fails() -> None:
    blob = envelope.seal(PLACE, b"a short secret", KEY, 3)
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                envelope.open_(PLACE, bytes(bad), KEY)


@given(extra=st.binary(min_size=1, max_size=64))
def test_appended_bytes_fail(extra: bytes) -> None:
    blob = envelope.seal(PLACE, b"value", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, blob + extra, KEY)


@pytest.mark.parametrize("first", [0, 3, 0xFF])
def test_unknown_format_byte_fails(first: int) -> None:
    blob = envelope.seal(PLACE, b"value", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.key_version_of(bytes([first]) + blob[1:])
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, bytes([first]) + blob[1:], KEY)


def test_empty_place_is_refused_before_encrypting() -> None:
    for attr in ("vault_id", "engagement_id", "record_id", "field"):
        empty = _with(PLACE, attr, type(getattr(PLACE, attr))())
        with pytest.raises(ValueError):
            envelope.seal(empty, b"value", KEY, 1)


# -- labels ----------------------------------------------------------------------------------
def test_labels_are_distinct_and_prefix_free() -> None:
    found = {
        name: value
        for name, value in vars(labels).items()
        if name.isupper() and isinstance(value, bytes)
    }
    assert set(found.values()) == set(labels.ALL)  # ALL lists every label
    assert len(set(labels.ALL)) == len(labels.ALL)
    for a in labels.ALL:
        assert a.startswith(b"credvault/v1/")
        for b in labels.ALL:
            if a != b:
                assert not b.startswith(a), (a, b)  # label ‖ context never collides


def test_encode_is_unambiguous_on_slashes() -> None:
    assert labels.encode("a/b", "c") != labels.encode("a", "b/c")
    assert labels.encode(b"a/b", b"c") != labels.encode(b"a", b"b/c")
    assert labels.encode("ab", "") != labels.encode("a", "b")
    assert labels.encode("a") != labels.encode("a", "")


parts = st.lists(st.text(max_size=8), max_size=5)
byte_parts = st.lists(st.binary(max_size=8), max_size=5)


@given(a=parts, b=parts)
def test_encode_is_injective_on_text_tuples(a: list[str], b: list[str]) -> None:
    assert (labels.encode(*a) == labels.encode(*b)) == (a == b)


@given(a=byte_parts, b=byte_parts)
def test_encode_is_injective_on_byte_tuples(a: list[bytes], b: list[bytes]) -> None:
    assert (labels.encode(*a) == labels.encode(*b)) == (a == b)


@given(a=st.integers(-(2**63), 2**63 - 1), b=st.integers(-(2**63), 2**63 - 1))
def test_encode_is_injective_on_integers(a: int, b: int) -> None:
    assert (labels.encode("x", a) == labels.encode("x", b)) == (a == b)


# -- record binding (format 0x02, issue 11) --------------------------------------------------
BOUND = PLACE._replace(binding=("credential", "prod-root", "password", b"s" * 16))


def test_a_place_with_a_binding_seals_format_2_and_without_format_1() -> None:
    assert envelope.seal(BOUND, b"v", KEY, 1)[0] == 2
    assert envelope.seal(PLACE, b"v", KEY, 1)[0] == 1
    assert envelope.is_bound(envelope.seal(BOUND, b"v", KEY, 1))
    assert not envelope.is_bound(envelope.seal(PLACE, b"v", KEY, 1))


@given(place=places, other=bindings, plaintext=st.binary(max_size=64))
def test_any_other_binding_fails(
    place: Place, other: tuple[bytes | str | int, ...], plaintext: bytes
) -> None:
    if not place.binding:
        place = place._replace(binding=("x",))
    blob = envelope.seal(place, plaintext, KEY, 1)
    if other == place.binding:
        assert envelope.open_(place._replace(binding=other), blob, KEY) == plaintext
    else:
        with pytest.raises(IntegrityError):
            envelope.open_(place._replace(binding=other), blob, KEY)


@pytest.mark.parametrize(
    "changed",
    [
        ("credential", "test-root", "password", b"s" * 16),  # renamed / swapped
        ("credential", "prod-root", "token", b"s" * 16),  # kind edited
        ("credential", "prod-root", "password", b"t" * 16),  # linked to another system
        ("credential", "prod-root", "password", b""),  # link removed
        ("credential", "prod-root", "password"),  # a part dropped
        ("system", "prod-root", "password", b"s" * 16),  # another kind of record
    ],
)
def test_each_bound_column_is_checked(changed: tuple[bytes | str | int, ...]) -> None:
    blob = envelope.seal(BOUND, b"PROD", KEY, 4)
    assert envelope.open_(BOUND, blob, KEY) == b"PROD"
    with pytest.raises(IntegrityError):
        envelope.open_(BOUND._replace(binding=changed), blob, KEY)


def test_the_format_byte_is_authenticated_both_ways() -> None:
    """A bound envelope relabelled 0x01 does not open as an unbound one (a downgrade), nor
    an unbound one relabelled 0x02 as bound: each format has its own AAD labels."""
    bound = envelope.seal(BOUND, b"PROD", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(PLACE, b"\x01" + bound[1:], KEY)
    with pytest.raises(IntegrityError):
        envelope.open_(BOUND, b"\x01" + bound[1:], KEY)
    plain = envelope.seal(PLACE, b"PROD", KEY, 1)
    with pytest.raises(IntegrityError):
        envelope.open_(BOUND, b"\x02" + plain[1:], KEY)


def test_a_bound_envelope_needs_its_binding() -> None:
    blob = envelope.seal(BOUND, b"PROD", KEY, 1)
    with pytest.raises(IntegrityError, match="none belongs"):
        envelope.open_(PLACE, blob, KEY)


def test_an_unbound_envelope_opens_with_its_place_alone() -> None:
    """Format 0x01 (records written before binding) ignores a binding: whether an unbound
    anchor is acceptable is decided above the envelope (``items._legacy_anchor``)."""
    blob = envelope.seal(PLACE, b"OLD", KEY, 1)
    assert envelope.open_(BOUND, blob, KEY) == b"OLD"
