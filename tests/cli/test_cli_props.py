"""Properties of the ``credvault`` command, run as a subprocess: arbitrary secret bytes survive
``put`` (stdin) → ``get -n``; arbitrary bad names, addresses, ports, dates and roles always get
exit 2 and one line on stderr, and never change what the vault holds.

Each example costs one or two CLI processes, so the example counts are kept small.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import KDF, KDF_ARG, PASSWORDS
from credvault import Vault

from .test_cli import CliVault, assert_one_error_line, build_vault, cli_snapshot

pytestmark = pytest.mark.cli

ROLES = {"lead", "engineer", "reader", "auditor"}
# Non-ASCII letters that credvault's name check wrongly accepts (re.IGNORECASE); covered by the
# strict xfail test_bug_name_accepts_case_folding_non_ascii in test_cli.py, kept out of here so
# that this property stays deterministic until it is fixed.
CASE_FOLDING = "\u0130\u0131\u017f\u212a"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def valid_name(s: str) -> bool:
    """The documented rule: 1-64 of [A-Za-z0-9._-], starting with a letter or digit."""
    return bool(_NAME.fullmatch(s)) and s not in (".", "..")


def valid_address(s: str) -> bool:
    """An IPv4/IPv6 address or an RFC 1123 DNS name (surrounding blanks ignored)."""
    t = s.strip()
    if not t or len(t) > 253 or any(ord(ch) < 32 or ord(ch) == 127 for ch in t):
        return False
    try:
        ipaddress.ip_address(t.strip("[]"))
        return True
    except ValueError:
        pass
    labels = t.rstrip(".").split(".")
    return all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def int_parses(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


# argv strings: any Unicode but NUL (impossible in argv), lone surrogates and the known bug
argv_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00" + CASE_FOLDING), max_size=70
)
bad_names = st.one_of(
    argv_text.filter(lambda s: not valid_name(s)),
    st.text(string.ascii_lowercase + string.digits, min_size=65, max_size=80),
    st.sampled_from(["", ".", "..", "-x", "_x", "a/b", "a b", "a\nb", "a\x7f", "é", "a:b"]),
)
bad_addresses = st.one_of(
    # no ':' or '%': IPv6 zone ids are a separate, known bug (test_bug_address_ipv6_zone_*)
    argv_text.filter(lambda s: ":" not in s and "%" not in s and not valid_address(s)),
    st.tuples(*[st.integers(0, 999)] * 4)
    .filter(lambda t: max(t) > 255)
    .map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["a..b", "-x.com", "x-.com", "a b", "a_b.com", "1.2.3", "x" * 64 + ".io"]),
)
bad_ports = st.one_of(
    st.integers(max_value=0).map(str),
    st.integers(min_value=65536).map(str),
    # int() leniencies ('2_2', full-width digits) are a known bug (test_bug_port_only_*)
    argv_text.filter(lambda s: not int_parses(s)),
)
_today = datetime.now(UTC).date()
bad_dates = st.one_of(
    st.text(
        st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Nd",)),
        max_size=30,
    ),
    st.builds(
        "{:04d}-{:02d}-{:02d}".format,
        st.integers(2030, 2999),
        st.integers(13, 99),
        st.integers(1, 28),
    ),
    st.builds(
        "{:04d}-{:02d}-{:02d}".format,
        st.integers(2030, 2999),
        st.integers(1, 12),
        st.integers(32, 99),
    ),
    st.dates(max_value=_today - timedelta(days=2)).map(lambda d: d.strftime("%Y-%m-%d")),
)
bad_roles = argv_text.filter(lambda s: s not in ROLES)

Cmd = tuple[str, list[str], bytes]
bad_commands: st.SearchStrategy[Cmd] = st.one_of(
    bad_names.map(lambda n: ("engagement", ["engagement", "new", "--client", "acme", "--", n], b"")),
    bad_names.map(lambda n: ("credential", ["put", "--", f"acme-2026/{n}"], b"x\n")),
    bad_names.map(lambda n: ("client", ["engagement", "new", "fresh", f"--client={n}"], b"")),
    bad_names.map(
        lambda n: ("member", ["member", "add", "--passphrase-file", "{bob}", "--kdf", KDF_ARG, "--", n], b"")
    ),
    bad_addresses.map(lambda a: ("address", ["system", "add", "acme-2026/web1", f"--address={a}"], b"")),
    bad_ports.map(
        lambda p: ("port", ["system", "add", "acme-2026/web1", "--address", "10.0.0.1", f"--port={p}"], b"")
    ),
    bad_dates.map(
        lambda d: ("hold", ["engagement", "retain", "old-2025", f"--until={d}", "--reason", "asked"], b"")
    ),
    bad_dates.map(lambda d: ("expiry", ["grant", "acme-2026", "bob", "reader", f"--until={d}"], b"")),
    bad_roles.map(lambda r: ("role", ["grant", "--", "acme-2026", "bob", r], b"")),
)  # fmt: skip


def lib_snapshot(path: Path) -> dict[str, object]:
    """Everything the vault holds that a bad command could change, read through the library."""
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        engs = v.engagements.list()
        return {
            "engagements": [e.to_json() for e in engs],
            "credentials": [c.to_json() for c in v.credentials.list()],
            "systems": {e.name: [s.to_json() for s in v.systems.list(e.name)] for e in engs},
            "grants": {e.name: [g.to_json() for g in v.engagements.members(e.name)] for e in engs},
            "members": [m.to_json() for m in v.members.list()],
            "settings": v.info().settings,
            "web1": v.systems.show("acme-2026/web1").to_json(),
            "web1-root": v.credentials.get("acme-2026/web1-root").to_json(),
        }


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> CliVault:
    return build_vault(tmp_path_factory.mktemp("cli-props"), closed_engagement=True)


_serial = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.binary(min_size=1, max_size=4096), newline=st.booleans())
def test_secret_bytes_round_trip(pv: CliVault, value: bytes, newline: bool) -> None:
    # piped input loses exactly one trailing newline: either add one, or send none
    assume(newline or not value.endswith(b"\n"))
    ref = f"acme-2026/rt-{next(_serial)}"
    r = pv.run("put", ref, input=value + (b"\n" if newline else b""))
    assert r.code == 0, r.err
    r = pv.run("get", ref, "-n")
    assert r.code == 0, r.err
    assert r.out == value


def test_bad_input_is_refused_and_changes_nothing(pv: CliVault) -> None:
    before_cli = cli_snapshot(pv)
    assert all(not isinstance(v, str) for v in before_cli.values()), before_cli
    before = lib_snapshot(pv.vault)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cmd=bad_commands)
    def bad_command(cmd: Cmd) -> None:
        _what, argv, stdin = cmd
        r = pv.run(*[a.replace("{bob}", pv.env["TEST_PASS_BOB"]) for a in argv], input=stdin)
        assert r.code == 2, (argv, r.code, r.err)
        assert_one_error_line(r)
        assert lib_snapshot(pv.vault) == before

    bad_command()
    assert cli_snapshot(pv) == before_cli
