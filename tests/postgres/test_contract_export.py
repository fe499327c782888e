"""The backend contract for ``client export`` (issue 14): the same JSON, file mode, output
and audit on SQLCipher and PostgreSQL; on PostgreSQL every secret in it was an audited
two-phase read (a committed ``get`` row with the reason first). The export's SHA-256 is on
the record and in a later purge receipt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from postgres.test_contract import SECRET, World, one_line

ENG = "acme-2026"
OLD = "acme-2019"


def test_client_export_is_complete_audited_and_named_in_the_receipt(
    world: World, tmp_path: Path
) -> None:
    fields = tmp_path / "f.json"
    fields.write_text('{"username": "root"}')
    # an engagement of the client purged already: in the export as a tombstone
    world.setup([("alice", ("engagement", "new", OLD, "--client", "acme"))])
    assert world.run("alice", "engagement", "shred", OLD, "--yes").code in (0, 1)
    world.ok("alice", "put", f"{ENG}/db", "--fields-from", str(fields), input=SECRET + b"\n")
    world.ok("alice", "put", f"{ENG}/api", "--kind", "token", input=b"tok\n")
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
    digest = hashlib.sha256(raw).hexdigest()
    trail = json.loads(world.ok("alice", "audit", "--engagement", ENG, "--json").out)
    exports = [e for e in trail if e["action"] == "export"]
    assert [e["detail"] for e in exports] == [
        f"2 credentials exported; reason: T-1; sha256 {digest}"
    ]
    if world.backend == "postgresql":  # every secret was an audited two-phase read first
        gets = [e for e in trail if e["action"] == "get" and e["detail"] == "reason: T-1"]
        assert sorted(e["item"] for e in gets) == ["api", "db"]
        assert all(e["outcome"] == "ok" for e in gets)
        assert max(e["seq"] for e in gets) < exports[0]["seq"]
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
