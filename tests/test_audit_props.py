"""Property: any sequence of operations (puts, gets, removals, grants, revokes and attempts
the role table refuses) leaves a trail that verifies, and whose entries are exactly the
operations performed, in order, with the right outcome.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import KDF, PASSWORDS
from credvault import AccessDenied, InMemory, NotFound, Vault
from credvault.keyslots import MemberKeys

MEMBERS = ("alice", "bob", "carol")
OTHERS = ("bob", "carol")
NAMES = ("db", "web", "api")
READERS = {"lead", "engineer", "reader"}
WRITERS = {"lead", "engineer"}


@dataclass
class Shared:
    path: Path
    keys: dict[str, MemberKeys]
    counter: Iterator[int] = field(default_factory=itertools.count)

    def open(self, member: str) -> Vault:
        return Vault.open(self.path, member, InMemory(self.keys[member]), kdf=KDF)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """One vault for every example (each example works in its own new engagement)."""
    path = tmp_path_factory.mktemp("props") / "vault"
    Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF)
    keys: dict[str, MemberKeys] = {}
    with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF) as v:
        keys["alice"] = v.member_keys()
        for name in OTHERS:
            v.members.add(name, passphrase=PASSWORDS[name].encode())
    for name in OTHERS:
        with Vault.open(path, name, PASSWORDS[name], kdf=KDF) as v:
            keys[name] = v.member_keys()
    return Shared(path, keys)


ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(MEMBERS), st.sampled_from(NAMES)),
    st.tuples(st.just("get"), st.sampled_from(MEMBERS), st.sampled_from(NAMES)),
    st.tuples(st.just("rm"), st.sampled_from(MEMBERS), st.sampled_from(NAMES)),
    st.tuples(
        st.just("grant"),
        st.sampled_from(MEMBERS),  # only alice (the lead) is allowed
        st.tuples(st.sampled_from(OTHERS), st.sampled_from(["engineer", "reader", "auditor"])),
    ),
    st.tuples(st.just("revoke"), st.sampled_from(MEMBERS), st.sampled_from(OTHERS)),
)


def _role(roles: dict[str, str | None], member: str) -> str | None:
    return "lead" if member == "alice" else roles[member]


@given(st.lists(ops, min_size=1, max_size=12))
def test_any_sequence_leaves_a_verifying_trail_matching_the_operations(
    shared: Shared, seq: list[tuple[str, str, Any]]
) -> None:
    eng = f"p{next(shared.counter)}"
    with shared.open("alice") as v:
        v.engagements.create(eng, "props")
        start = int(v._s.store.conn.execute("SELECT max(seq) FROM audit").fetchone()[0])

    roles: dict[str, str | None] = dict.fromkeys(OTHERS)
    stored: dict[str, bytes] = {}
    expected: list[tuple[str, str, str | None, str]] = []
    for n, (kind, actor, arg) in enumerate(seq):
        role = _role(roles, actor)
        with shared.open(actor) as v:
            if kind == "put":
                value = f"{eng}-{arg}-{n}".encode()
                if role in WRITERS:
                    v.put(f"{eng}/{arg}", value)
                    expected.append((actor, "update" if arg in stored else "put", arg, "ok"))
                    stored[arg] = value
                else:
                    with pytest.raises(AccessDenied):
                        v.put(f"{eng}/{arg}", value)
                    expected.append((actor, "put", arg, "denied"))
            elif kind == "get":
                if role not in READERS:
                    with pytest.raises(AccessDenied):
                        v.get(f"{eng}/{arg}")
                    expected.append((actor, "get", arg, "denied"))
                elif arg in stored:
                    assert v.get(f"{eng}/{arg}").secret.reveal() == stored[arg]
                    expected.append((actor, "get", arg, "ok"))
                else:
                    with pytest.raises(NotFound):
                        v.get(f"{eng}/{arg}")
                    expected.append((actor, "get", arg, "error"))
            elif kind == "rm":
                if role not in WRITERS:
                    with pytest.raises(AccessDenied):
                        v.credentials.remove(f"{eng}/{arg}")
                    expected.append((actor, "rm", arg, "denied"))
                elif arg in stored:
                    v.credentials.remove(f"{eng}/{arg}")
                    del stored[arg]
                    expected.append((actor, "rm", arg, "ok"))
                # (removing what is not there is not modelled: see test_audit.py)
            elif kind == "grant":
                member, new_role = arg
                if member == actor:
                    continue  # granting oneself is a separate rule
                if role == "lead":
                    v.engagements.grant(eng, member, new_role)
                    expected.append((actor, "grant", member, "ok"))
                    if roles[member] in READERS and new_role not in READERS:
                        expected.append((actor, "rotate", None, "ok"))
                    roles[member] = new_role
                else:
                    with pytest.raises(AccessDenied):
                        v.engagements.grant(eng, member, new_role)
                    expected.append((actor, "grant", member, "denied"))
            elif kind == "revoke":
                if role != "lead":
                    with pytest.raises(AccessDenied):
                        v.engagements.revoke(eng, arg)
                    expected.append((actor, "revoke", arg, "denied"))
                elif roles[arg] is not None:
                    v.engagements.revoke(eng, arg)
                    expected.append((actor, "rotate", None, "ok"))
                    expected.append((actor, "revoke", arg, "ok"))
                    roles[arg] = None

    with shared.open("alice") as v:
        rows = list(
            v._s.store.conn.execute(
                "SELECT member, action, engagement, item, outcome FROM audit "
                "WHERE seq > ? ORDER BY seq",
                (start,),
            )
        )
        assert v.audit_verify() >= start + len(expected)
    assert {r[2] for r in rows} <= {eng}, rows  # nothing else happened meanwhile
    assert [(m, a, i, o) for m, a, _, i, o in rows] == expected
