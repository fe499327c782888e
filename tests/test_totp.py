"""TOTP: RFC 6238's own test vectors, the real ``oathtool`` on random seeds, seed parsing, and
the vault path (a seed stored as an otpauth URI, its read audited as ``otp``)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import VaultFixture
from credvault import InvalidInput, Secret, totp

# RFC 6238 Appendix B: seeds are the ASCII digits repeated to the hash's block of key bytes.
SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890" * 6 + b"1234",
}
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
OATHTOOL = shutil.which("oathtool")
needs_oathtool = pytest.mark.skipif(
    OATHTOOL is None,
    reason="LOUD SKIP: oathtool not installed (Debian package oathtool; .ci/system-deps.sh)",
)


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


@pytest.mark.parametrize(("at", "sha1", "sha256", "sha512"), VECTORS)
def test_rfc6238_appendix_b(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for algorithm, want in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        uri = f"otpauth://totp/x?secret={b32(SEEDS[algorithm])}&algorithm={algorithm}&digits=8"
        assert totp.code(totp.parse(uri), at) == want, (algorithm, at)


def test_rfc4226_hotp_vectors() -> None:
    """RFC 4226 Appendix D: the HOTP that TOTP is built on, counters 0-9."""
    want = [
        "755224",
        "287082",
        "359152",
        "969429",
        "338314",
        "254676",
        "287922",
        "162583",
        "399871",
        "520489",
    ]
    key = Secret(b"12345678901234567890")
    assert [totp.hotp(key, c) for c in range(10)] == want


def oathtool(key: bytes, algorithm: str, digits: int, period: int, at: int) -> str:
    assert OATHTOOL is not None
    p = subprocess.run(
        [
            OATHTOOL,
            f"--totp={algorithm.lower()}",
            "-d",
            str(digits),
            "-s",
            f"{period}s",
            "--now",
            f"@{at}",
            key.hex(),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return p.stdout.strip()


@needs_oathtool
@given(
    key=st.binary(min_size=10, max_size=64),
    algorithm=st.sampled_from(["SHA1", "SHA256", "SHA512"]),
    digits=st.integers(6, 8),
    period=st.sampled_from([15, 30, 60, 90]),
    at=st.integers(0, 2**33),
)
def test_matches_real_oathtool(
    key: bytes, algorithm: str, digits: int, period: int, at: int
) -> None:
    uri = (
        f"otpauth://totp/Acme:bob?secret={b32(key)}&algorithm={algorithm}"
        f"&digits={digits}&period={period}&issuer=Acme"
    )
    assert totp.code(totp.parse(uri), at) == oathtool(key, algorithm, digits, period, at)


def test_base32_as_portals_print_it() -> None:
    key = os.urandom(20)
    spaced = " ".join(b32(key).lower()[i : i + 4] for i in range(0, 32, 4))
    p = totp.parse(spaced)
    assert p.key == Secret(key)
    assert (p.algorithm, p.digits, p.period) == ("SHA1", 6, 30)
    assert totp.parse(b32(key) + "====").key == Secret(key)


def test_uri_label_and_parameters() -> None:
    p = totp.parse(
        "otpauth://totp/ACME%20Portal:bob?secret=JBSWY3DPEHPK3PXPJBSW&period=60&digits=7"
    )
    assert (p.label, p.period, p.digits) == ("ACME Portal:bob", 60, 7)
    assert totp.seconds_left(p, 125) == 55
    assert "JBSW" not in repr(p)  # the key is a redacted Secret


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base32!", "invalid TOTP seed"),
        ("ABC", "invalid TOTP seed"),
        ("JBSWY3DP", "shorter than 80 bits"),
        ("otpauth://hotp/x?secret=JBSWY3DPEHPK3PXPJBSW&counter=1", "only otpauth://totp/"),
        ("otpauth://totp/x?issuer=y", "no secret="),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSW&algorithm=MD5", "SHA1, SHA256 or SHA512"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSW&digits=9", "6, 7 or 8"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSW&period=0", "1 to 86400"),
        ("otpauth://totp/x?secret=JBSWY3DPEHPK3PXPJBSW&digits=x", "must be numbers"),
    ],
)
def test_bad_seeds_refused_without_quoting(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        totp.parse(value.encode())
    assert message in str(e.value)
    assert "JBSWY3DPEHPK3PXPJBSW" not in str(e.value)


def test_to_uri_round_trip() -> None:
    key = os.urandom(32)
    stored = totp.to_uri(b32(key).lower(), "acme:portal")
    assert stored.reveal().startswith(b"otpauth://totp/acme:portal?secret=")
    assert totp.parse_stored(stored) == totp.TotpParams(Secret(key), "SHA1", 6, 30, "acme:portal")
    uri = f"otpauth://totp/Acme:bob?secret={b32(key)}&algorithm=SHA512&digits=8&period=45"
    again = totp.parse_stored(totp.to_uri(uri, "ignored"))
    assert again == totp.TotpParams(Secret(key), "SHA512", 8, 45, "Acme:bob")
    with pytest.raises(InvalidInput, match="holds no TOTP seed"):
        totp.parse_stored(Secret(b32(key)))  # a bare base32 string may be a password


def test_otp_read_audited_as_otp(vault: VaultFixture, engagement: str) -> None:
    key = os.urandom(20)
    with vault.open() as v:
        v.credentials.put("acme-2026/portal-otp", totp.to_uri(b32(key), "p"), kind="other")
        got = v.credentials.otp("acme-2026/portal-otp", reason="T-1", at=1_700_000_000)
        assert got.code == totp.hotp(Secret(key), 1_700_000_000 // 30)
        assert (got.seconds_left, got.period) == (30 - 1_700_000_000 % 30, 30)
        with pytest.raises(InvalidInput, match="web1-root: holds no TOTP seed"):
            v.credentials.otp("acme-2026/web1-root")
        entries = v.audit_entries(engagement="acme-2026", action="otp")
        gets = v.audit_entries(engagement="acme-2026", action="get")
    outcomes = [(e.item, e.outcome, e.detail) for e in entries]
    assert ("portal-otp", "ok", "reason: T-1") in outcomes
    assert (
        "web1-root",
        "error",
        "holds no TOTP seed (store one with `credvault put --totp`)",
    ) in outcomes
    assert not [e for e in gets if e.item == "portal-otp"]  # an OTP read is not a `get`
    text = str([e.to_json() for e in entries])
    assert b32(key) not in text
    assert "hunter2" not in text


def test_otp_reads_are_listed_at_revoke(vault: VaultFixture, engagement: str) -> None:
    """Whoever asked for a code could have kept the seed: revoke lists it to be changed."""
    with vault.open() as v:
        v.credentials.put("acme-2026/portal-otp", totp.to_uri(b32(os.urandom(20)), "p"))
    with vault.open("bob") as v:
        v.credentials.otp("acme-2026/portal-otp")
    with vault.open() as v:
        assert v.engagements.revoke("acme-2026", "bob") == ["portal-otp"]


@pytest.mark.parametrize(
    "value",
    [
        "otpauth://totp/acme?secret=JBSWY3DPEHPK3PXPJBSWY3DP&digits=9",
        "otpauth://totp/acme?secret=JBSWY3DPEHPK3PXPJBSWY3DP&algorithm=MD5",
        "JBSWY3DPEHPK3PXPJBSWY3DP!",
    ],
)
@pytest.mark.parametrize("form", [str, Secret])
def test_refused_seed_is_in_no_traceback_local(value: str, form: type) -> None:
    """The parsing frames hold the seed as text; none of them may reach the traceback."""
    import traceback

    with pytest.raises(InvalidInput) as e:
        totp.parse(form(value))
    te = traceback.TracebackException.from_exception(e.value, capture_locals=True)
    frames = [f for f in te.stack if "credvault" in f.filename and "tests" not in f.filename]
    assert frames  # the credvault frames are there, with their locals
    text = repr([(f.name, f.locals) for f in frames]) + "".join(te.format())
    assert "JBSWY3DPEHPK3PXP" not in repr([f.locals for f in frames])
    assert "_parse" not in text  # the frames that held it are gone, not just redacted
