"""`member rm` on a team vault against an admin with psql and against the DBA (issue 14).

The DBA who hides an engagement from `member rm`, or cuts its revoke link before the lead
replayed it, and puts the member's rows back, gets nothing sealed to them: the removal is
also in the admin-signed revocation list (docs/format.md §19.7), which the lead checks
before sealing, and the lead signs the revoke link itself (tests/postgres/test_crl_pg.py
tries the list itself as the DBA).
"""

from __future__ import annotations

import psycopg
import pytest

from credvault import memberlog as ml

from .test_contract import SECRET, World
from .test_memberlog_pg import copies, dba, links, member_conn, team  # noqa: F401  (fixture)

_HIDE = """
CREATE OR REPLACE FUNCTION credvault.engagement_logs()
RETURNS TABLE (e_uid bytea, e_name text, e_links bytea[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = credvault, pg_temp
AS $$
BEGIN
    PERFORM require_admin();
    RETURN QUERY SELECT e.uid, e.name,
            ARRAY(SELECT l.link FROM engagement_log l WHERE l.engagement_id = e.id ORDER BY l.seq)
        FROM engagements e
        WHERE e.state <> 'purged' AND e.name <> 'beta'
          AND EXISTS (SELECT 1 FROM engagement_log l WHERE l.engagement_id = e.id)
        ORDER BY e.name;
END $$;
"""


def test_dba_hides_an_engagement_from_member_rm(team: World) -> None:  # noqa: F811
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.setup(
        [
            ("alice", ("grant", "acme-2026", "bob", "reader")),
            ("alice", ("engagement", "new", "beta", "--client", "b", "--lead", "carol")),
            ("carol", ("grant", "beta", "bob", "reader")),  # carol's first use makes the key
        ]
    )
    # alice has seen beta's log before (any admin listing or rm would have): not required
    dba(team, _HIDE)
    r = team.run("alice", "member", "rm", "bob")
    hidden_ok = r.code == 0
    kinds = [
        (ml.Link.from_bytes(b).kind, ml.Link.from_bytes(b).fields) for b in links(team, "beta")
    ]
    still_named = ("revoke", ("bob",)) not in kinds
    # the DBA puts bob's row back; carol's next command rotates beta (bob's copy was dropped)
    dba(team, "UPDATE credvault.members SET state = 'active', removed_at = NULL WHERE name = 'bob'")
    dba(team, "UPDATE credvault.grants SET revoked_at = NULL WHERE member = 'bob'")
    team.ok("carol", "grant", "beta", "alice", "reader")
    sealed_to_bob = copies(team, "beta").get("bob") is not None
    # the property member rm promises: the removal is signed everywhere, or it says it is not
    assert not (hidden_ok and still_named and sealed_to_bob), (r.code, r.out, r.err, kinds)
    assert not sealed_to_bob
    # carol found bob on the signed list: she signed him out of beta herself, then rotated
    tail = [ml.Link.from_bytes(b) for b in links(team, "beta")[-3:]]
    assert [(x.kind, x.signer, x.fields[:1]) for x in tail[:2]] == [
        (ml.REVOKE, "carol", ("bob",)),
        (ml.ROTATE, "carol", (2,)),
    ]


def test_an_admin_appends_only_a_revoke_of_the_member_signed_by_herself(team: World) -> None:  # noqa: F811
    """An admin who leads nothing in beta, with psql and no DBA, passes a grant link as
    bob's removal: the server refuses it (the log and the audit stay as they were)."""
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.setup(
        [
            ("alice", ("engagement", "new", "beta", "--client", "b", "--lead", "carol")),
            ("carol", ("grant", "beta", "alice", "reader")),
        ]
    )
    chain = links(team, "beta")
    head = ml.Link.from_bytes(chain[-1])
    junk = ml.Link(
        head.vault_id, head.engagement_uid, head.seq + 1, ml.chain_hash(chain[-1]), head.time,
        ml.GRANT, "alice", head.signer_key,
        ("alice", "lead", "", bytes(32), bytes(32)), bytes(64),
    ).to_bytes()  # fmt: skip
    with (
        member_conn(team, "alice") as alice,  # bob holds no role in beta
        pytest.raises(psycopg.errors.InvalidParameterValue, match="not a revoke of bob"),
    ):
        alice.execute(
            "SELECT credvault.remove_member_logged('bob', %s::text[], %s::bytea[], NULL)",
            (["beta"], [junk]),
        )
    assert links(team, "beta") == chain
    r = team.run("carol", "grant", "beta", "bob", "reader")
    assert r.code == 0, r.err


def test_dba_truncates_the_revocation_before_the_lead_sees_it(team: World) -> None:  # noqa: F811
    team.ok("alice", "put", "acme-2026/db", input=SECRET + b"\n")
    team.setup(
        [
            ("alice", ("engagement", "new", "beta", "--client", "b", "--lead", "carol")),
            ("carol", ("grant", "beta", "bob", "reader")),  # carol's first use makes the key
        ]
    )
    before = links(team, "beta")
    r = team.ok("alice", "member", "rm", "bob")
    assert "revocation signed in 1 engagement log(s)" in r.text
    assert len(links(team, "beta")) == len(before) + 1
    dba(
        team,
        "DELETE FROM credvault.engagement_log l USING credvault.engagements e "
        "WHERE e.id = l.engagement_id AND e.name = 'beta' AND l.seq = %s",
        (len(before),),
    )
    dba(team, "UPDATE credvault.members SET state = 'active', removed_at = NULL WHERE name = 'bob'")
    dba(team, "UPDATE credvault.grants SET revoked_at = NULL WHERE member = 'bob'")
    team.ok("carol", "grant", "beta", "alice", "reader")
    assert copies(team, "beta").get("bob") is None
    # the lead signed the revocation the DBA cut, from the signed list, and rotated
    tail = [ml.Link.from_bytes(b) for b in links(team, "beta")[len(before) :]]
    assert [(x.kind, x.signer) for x in tail[:2]] == [(ml.REVOKE, "carol"), (ml.ROTATE, "carol")]
