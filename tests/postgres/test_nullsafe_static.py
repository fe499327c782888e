"""Static guard: no role check in the team schema that NULL (no role) lets through.

`role_in(e)` is NULL for a member who holds no role on engagement e, so a check written
`IF NOT (is_admin() OR role_in(e) = 'lead') THEN RAISE` is NULL for her, the IF does not
fire, and she passes (upgrade-2.sql section pgexport fixed five such functions). This test
needs no server: it reads schema.sql and upgrade-2.sql in the order the owner applies them,
keeps each function's last definition (the one a database runs) and fails on `role_in(...)`
compared with `=`, `<>`, `!=`, `IN` or `NOT IN` in an IF/ELSIF condition unless the call is
the first argument of `coalesce(`.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "src" / "credvault" / "postgres"
FILES = ("schema.sql", "upgrade-2.sql")

_CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+credvault\.(\w+)\s*\((.*?)\)\s*RETURNS.*?"
    r"AS\s+\$\$(.*?)\$\$",
    re.S | re.I,
)
_DROP = re.compile(
    r"DROP\s+FUNCTION\s+(?:IF\s+EXISTS\s+)?credvault\.(\w+)\s*\((.*?)\)", re.S | re.I
)
_CONDITION = re.compile(r"\b(?:ELS)?IF\b(.*?)\bTHEN\b", re.S | re.I)
_COMPARED_AFTER = re.compile(r"\s*(?:=|<>|!=|NOT\s+IN\b|IN\b)", re.I)
_COMPARED_BEFORE = re.compile(r"(?:=|<>|!=|\bIN)\s*$", re.I)

# Final definitions that keep the pattern, each with why it cannot let a member through.
ALLOWED = {
    "rotation_fetch(bigint)": "version 1's; EXECUTE revoked from members (section pgv1, "
    "test_version_1_entry_points_are_closed_to_an_admin_lead_with_psql)",
    "rotate_key(text,integer,text,bytea[],bytea[],bytea[],bytea[],bytea[],text[],bytea[],"
    "bytea[])": "version 1's; EXECUTE revoked from members (section pgcmds, "
    "test_an_engineer_can_neither_rotate_nor_revoke)",
}


def _signature(args: str) -> str:
    """The argument types of a parameter list (names, defaults and OUT parameters dropped)."""
    parts, depth, cur = [], 0, ""
    for ch in args:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    types = []
    for part in parts:
        words = re.split(r"\s+DEFAULT\s+|\s*=\s*", part.strip(), flags=re.I)[0].split()
        if words and words[0].upper() in ("IN", "OUT", "INOUT", "VARIADIC"):
            if words[0].upper() == "OUT":
                continue
            words = words[1:]
        if len(words) > 1:
            words = words[1:]
        types.append(" ".join(words).lower())
    return ",".join(types)


def final_definitions(texts: list[tuple[str, str]]) -> dict[str, tuple[str, int, str]]:
    """name(types) -> (file, line, body) of the last definition, in application order."""
    found: dict[str, tuple[str, int, str]] = {}
    for file, text in texts:
        events: list[tuple[int, str, re.Match[str]]] = [
            (m.start(), "create", m) for m in _CREATE.finditer(text)
        ] + [(m.start(), "drop", m) for m in _DROP.finditer(text)]
        for start, kind, m in sorted(events, key=lambda e: e[0]):
            key = f"{m.group(1)}({_signature(m.group(2))})"
            if kind == "drop":
                found.pop(key, None)
            else:
                found[key] = (file, text.count("\n", 0, start) + 1, m.group(3))
    return found


def _call_end(text: str, open_paren: int) -> int:
    depth = 0
    for i in range(open_paren, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if depth == 0:
            return i + 1
    return len(text)


def null_unsafe_role_checks(body: str) -> list[str]:
    """IF/ELSIF conditions comparing role_in(...) with =, <>, IN outside coalesce()."""
    body = re.sub(r"--[^\n]*", "", body)
    hits = []
    for cond in _CONDITION.finditer(body):
        c = cond.group(1)
        for call in re.finditer(r"\brole_in\s*\(", c):
            end = _call_end(c, call.end() - 1)
            before = c[: call.start()]
            if re.search(r"coalesce\s*\(\s*$", before, re.I):
                continue
            if _COMPARED_AFTER.match(c, end) or _COMPARED_BEFORE.search(before):
                hits.append(" ".join(c.split()))
    return hits


def _sources() -> list[tuple[str, str]]:
    return [(f, (SQL_DIR / f).read_text(encoding="utf-8")) for f in FILES]


def test_no_final_definition_lets_a_member_without_a_role_through() -> None:
    bad = {}
    for key, (file, line, body) in final_definitions(_sources()).items():
        hits = null_unsafe_role_checks(body)
        if hits and key not in ALLOWED:
            bad[f"{file}:{line} {key}"] = hits
    assert not bad, (
        "role_in(...) compared without coalesce in an IF condition is NULL for a member "
        f"with no role, and the IF does not fire: {bad}"
    )


def test_every_allowed_exception_still_has_the_pattern() -> None:
    """A stale allowlist entry would hide a future regression under the same name."""
    finals = final_definitions(_sources())
    for key in ALLOWED:
        assert key in finals, key
        assert null_unsafe_role_checks(finals[key][2]), key


def test_the_guard_catches_version_1s_holes() -> None:
    """Version 1 alone has the holes pgexport fixed: the scanner must see them."""
    v1 = final_definitions(_sources()[:1])
    flagged = {
        key.split("(")[0] for key, (_, _, body) in v1.items() if null_unsafe_role_checks(body)
    }
    assert {"audit_rows", "put_grant", "request_rotation", "rotation_grantees"} <= flagged
    assert null_unsafe_role_checks("IF NOT ('lead' = role_in(e.id)) THEN RAISE; END IF;")
    assert null_unsafe_role_checks("IF role_in(e.id) NOT IN ('lead') THEN RAISE; END IF;")
    assert not null_unsafe_role_checks(
        "IF coalesce(role_in(e.id), '') <> 'lead' THEN RAISE; END IF;"
    )
    assert not null_unsafe_role_checks("IF role_in(e.id) IS NULL THEN RAISE; END IF;")


def test_later_definitions_and_drops_win() -> None:
    texts = [
        ("a.sql", "CREATE FUNCTION credvault.f(x bigint) RETURNS int AS $$ one $$;"),
        (
            "b.sql",
            "CREATE OR REPLACE FUNCTION credvault.f(y bigint) RETURNS int AS $$ two $$;\n"
            "CREATE FUNCTION credvault.g(a text DEFAULT '') RETURNS int AS $$ g $$;\n"
            "DROP FUNCTION credvault.g(text);",
        ),
    ]
    finals = final_definitions(texts)
    assert finals == {"f(bigint)": ("b.sql", 1, " two ")}
