"""The backend contract for ``client export`` (issue 14): the same JSON, file mode, output
and audit on SQLCipher and PostgreSQL; on PostgreSQL every secret in it was an audited
two-phase read (a committed ``get`` row with the reason first). The export's SHA-256 is on
the record and in a later purge receipt."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from postgres.test_contract import SECRET, World, one_line

ENG = "acme-2026"
OLD = "acme-2019"


_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def normalised(doc: object) -> object:
    """An export with what legitimately differs between two vaults holding the same data
    made out of its values: dates (only in the full form, microseconds: a date rounded to
    whole seconds stays as it is, and differs), the vault's id, key fingerprints."""
    if isinstance(doc, dict):
        return {
            k: ("<fp>" if k in ("key_fp", "vault_id") and v else normalised(v))
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [normalised(x) for x in doc]
    if isinstance(doc, str) and _WHEN.fullmatch(doc):
        return "<when>"
    return doc


# an active engagement's public fields in the export, normalised
LIVE = {"name": "", "client": "acme", "state": "active", "key_fp": "<fp>",
        "require_reason": False, "grace_days": None, "created_at": "<when>",
        "created_by": "alice", "lead": "alice", "closed_at": None, "purge_due": None,
        "hold_until": None, "hold_reason": None, "hold_by": None, "purged_at": None}  # fmt: skip

# what SQLCipher's export holds of acme-2026's records in the test below, normalised
ACME_2026: dict[str, object] = {
    "systems": [
        {"engagement": ENG, "name": "web", "address": "10.0.0.5", "port": 22,
         "protocol": "ssh", "details": "rack 4", "created_at": "<when>",
         "updated_at": "<when>"},
    ],
    "credentials": [
        {"engagement": ENG, "name": "api", "kind": "token", "secret": "tok",
         "username": None, "system": None, "address": None, "port": None, "url": None,
         "notes": None, "created_at": "<when>", "updated_at": "<when>"},
        {"engagement": ENG, "name": "db", "kind": "password", "secret": SECRET.decode(),
         "username": "root", "system": "web", "address": None, "port": None, "url": None,
         "notes": "v2", "created_at": "<when>", "updated_at": "<when>"},
    ],
    "earlier_versions": [
        {"name": "db", "version": 1, "kind": "password", "system": None,
         "created_at": "<when>", "created_by": "alice", "changed": "created",
         "secret": "first", "username": None, "url": None, "notes": "v1"},
    ],
    "trash": [  # newest first
        {"type": "system", "name": "gone", "deleted_at": "<when>", "deleted_by": "alice",
         "expires_at": "<when>", "address": "gone.example", "details": None},
        {"type": "credential", "name": "old", "deleted_at": "<when>", "deleted_by": "alice",
         "expires_at": "<when>", "secret_base64": "/wBvbGQ=", "username": None,
         "url": "https://old.example", "notes": None},
    ],
}  # fmt: skip


def test_client_export_is_complete_audited_and_named_in_the_receipt(
    world: World, tmp_path: Path
) -> None:
    fields = tmp_path / "f.json"
    fields.write_text('{"username": "root"}')
    # an engagement of the client (purged below: in the export as a tombstone); a system
    # (db linked to it), an earlier version of db, a credential and a system in the trash:
    # everything SQLCipher's export holds
    world.setup(
        [
            ("alice", ("engagement", "new", OLD, "--client", "acme")),
            ("alice", ("system", "add", f"{ENG}/web", "--address", "10.0.0.5", "--port", "22",
                       "--protocol", "ssh", "--details", "rack 4")),
            ("alice", ("put", f"{ENG}/db", "--notes", "v1"), b"first\n"),
            ("alice", ("put", f"{ENG}/db", "--fields-from", str(fields), "--notes", "v2",
                       "--system", "web"), SECRET + b"\n"),
            ("alice", ("put", f"{ENG}/api", "--kind", "token"), b"tok\n"),
            ("alice", ("put", f"{ENG}/old", "--url", "https://old.example"), b"\xff\x00old\n"),
            ("alice", ("rm", f"{ENG}/old")),
            ("alice", ("system", "add", f"{ENG}/gone", "--address", "gone.example")),
            ("alice", ("system", "rm", f"{ENG}/gone")),
        ]
    )  # fmt: skip
    assert world.run("alice", "engagement", "shred", OLD, "--yes").code in (0, 1)
    out = tmp_path / "acme.json"
    r = world.ok("alice", "client", "export", "acme", "--reason", "T-1", "--output", str(out))
    assert r.text == f"exported acme to {out} (mode 0600)\n"
    assert out.stat().st_mode & 0o777 == 0o600
    raw = out.read_bytes()
    doc = json.loads(raw)
    assert doc["format"] == "credvault-client-export/1"
    assert doc["client"] == "acme"
    old, eng = doc["engagements"]  # by name
    assert (old["name"], eng["name"]) == (OLD, ENG)
    assert (old["state"], old["client"], old["lead"]) == ("purged", "acme", "alice")
    assert old["purged_at"]
    assert old["key_fp"]
    assert [old[k] for k in ("systems", "credentials", "earlier_versions", "trash")] == [[]] * 4
    got = {c["name"]: (c["secret"], c["username"], c["kind"]) for c in eng["credentials"]}
    assert got == {"db": (SECRET.decode(), "root", "password"), "api": ("tok", None, "token")}
    # the same file on both backends, but for the ids and dates of the world; order and
    # shape included (the dates with SQLCipher's microseconds)
    assert normalised(doc) == {
        "format": "credvault-client-export/1",
        "client": "acme",
        "vault_id": "<fp>",
        "engagements": [normalised(old), {**LIVE, "name": ENG, **ACME_2026}],
    }
    digest = hashlib.sha256(raw).hexdigest()
    trail = json.loads(world.ok("alice", "audit", "--engagement", ENG, "--json").out)
    exports = [e for e in trail if e["action"] == "export"]
    assert [e["detail"] for e in exports] == [
        f"2 credentials exported; reason: T-1; sha256 {digest}"
    ]
    if world.backend == "postgresql":  # every secret was an audited two-phase read first
        gets = [e for e in trail if e["action"] == "get" and e["detail"] == "reason: T-1"]
        assert sorted(e["item"] for e in gets) == ["api", "db"]
        # and every other record, under the action and detail of its own read
        rest = [
            (e["action"], e["item"], re.sub(r"removed \S+;", "removed T;", e["detail"]))
            for e in trail
            if e["action"] == "system-show"
            or (e["action"] == "get" and e["detail"] != "reason: T-1")
        ]
        assert rest == [
            ("system-show", "web", "reason: T-1"),
            ("get", "db", "version 1; reason: T-1"),
            ("system-show", "gone", "in the trash, removed T; reason: T-1"),
            ("get", "old", "in the trash, removed T; reason: T-1"),
        ]
        reads = [e for e in trail if e["action"] in ("get", "system-show")]
        assert all(e["outcome"] == "ok" for e in reads)
        assert max(e["seq"] for e in reads) < exports[0]["seq"]
    stdout = world.ok("alice", "client", "export", "acme").out
    assert json.loads(stdout) == doc
    r = world.run("alice", "engagement", "shred", ENG, "--yes")
    assert r.code in (0, 1)  # 1 on PostgreSQL: the owner's rewrite is pending
    receipt = json.loads(world.ok("alice", "receipt", ENG, "--json").out)
    assert digest in [x["sha256"] for x in receipt["client_exports"]]
    # every engagement purged: tombstones only, for an admin, on the record under the client
    tombs = json.loads(world.ok("alice", "client", "export", "acme").out)["engagements"]
    assert [(e["name"], e["state"], e["credentials"]) for e in tombs] == [
        (OLD, "purged", []),
        (ENG, "purged", []),
    ]
    assert tombs[0] == old
    trail = json.loads(world.ok("alice", "audit", "--action", "export", "--json").out)
    assert [(e["engagement"], e["item"], e["outcome"], e["detail"]) for e in trail][-1] == (
        None,
        "acme",
        "ok",
        "2 purged engagements (tombstones)",
    )


def test_client_export_needs_a_reading_role(world: World) -> None:
    world.ok("alice", "put", f"{ENG}/db", input=SECRET + b"\n")
    world.ok("alice", "grant", ENG, "bob", "auditor")
    for who in ("bob", "carol"):
        r = world.run(who, "client", "export", "acme")
        assert r.code == 4, (who, r.err)
        assert "access denied" in one_line(r)
        assert SECRET not in r.out
    trail = json.loads(world.ok("alice", "audit", "--engagement", ENG, "--json").out)
    assert ("bob", "export", "denied") in [(e["member"], e["action"], e["outcome"]) for e in trail]
