"""Kill -9 campaign for the team vault's commands that write both local files and the server
(issue 14; the SQLCipher side's is tests/test_fault_campaign.py and tests/test_rekey_crash.py).

Each command runs as its own ``credvault`` process under the line tracer of
:data:`killpoints.KILL_HOOK`: a calibration run counts the lines of credvault code it
executes (and where each named step starts); then the same command is killed with SIGKILL
at points spread over that count, and at a few lines into the steps that follow the
server's commit (``NAME+k``: ``k`` lines after the first call of ``NAME``). A kill point is
a step of the operation, never a moment. After each kill, what a user needs: one of the
member's passphrases (the old or the new, whichever the outcome says) opens the vault, an
existing secret reads back (never exit 6: nobody tampered), ``audit verify`` passes, and
running the command again completes.

One team world per command (tests/postgres/test_contract.py's: alice admin and lead of
acme-2026, bob and carol), kills one after another in it: each recovery is the next kill's
starting point. ``CREDVAULT_TEST_KILLS=full`` spreads more kills (killpoints.kill_count).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import KDF_ARG, CliResult
from killpoints import FULL_KILLS, KILL_HOOK, kill_count, points, without_coverage
from pg_cluster import Cluster
from postgres.test_contract import SECRET, World, _machine, _postgresql

# The child: KILL_HOOK, plus a kill point named by a step ("NAME+k": k lines after the first
# call of the credvault function NAME), then the CLI's own main under it.
_CHILD = (
    KILL_HOOK
    + r"""
import json
_target = None
_first = _global

def _global(frame, event, arg):
    found = _first(frame, event, arg)
    if (found is not None and _target is not None and _st["at"] is None
            and frame.f_code.co_name == _target[0]):
        _target[1] -= 1
        if _target[1] == 0:
            _st.update(at=_st["line"] + _target[2], kind="line")
    return found

spec = json.loads(sys.argv[1])
at = spec["at"]
if isinstance(at, str):  # "NAME#n+k": k lines after the n-th call of NAME (n: 1 if omitted)
    name, _, k = at.partition("+")
    name, _, n = name.partition("#")
    _target, at = [name, int(n or 1), int(k or 0)], None
from credvault.cli import main
arm(at, "line")
try:
    code = main(spec["args"])
finally:
    lines, _ = disarm()
    with open(spec["report"], "w") as f:
        json.dump({"lines": lines, "marks": marks}, f)
sys.exit(code)
"""
)


def _run(
    w: World, who: str, args: Sequence[str], at: int | str | None, env: dict[str, str]
) -> tuple[int, dict[str, object] | None, str]:
    """Run ``credvault ARGS`` as ``who``, killed at ``at`` (None: calibrate). Returns the
    exit code (-9: killed), the report of a run that ended, and stderr."""
    report = Path(w.root) / f"report-{secrets.token_hex(4)}.json"
    spec = {"args": list(args), "at": at, "report": str(report)}
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        env=without_coverage({**w.envs[who], **env}),
        capture_output=True,
        timeout=120,
        start_new_session=True,
        check=False,
    )
    got = json.loads(report.read_text()) if report.exists() else None
    report.unlink(missing_ok=True)
    return p.returncode, got, p.stderr.decode("utf-8", errors="replace")


def calibrate(
    w: World, who: str, args: Sequence[str], env: dict[str, str] | None = None
) -> dict[str, object]:
    code, got, err = _run(w, who, args, None, env or {})
    assert code == 0, err
    assert got is not None
    return got


def kill(w: World, who: str, args: Sequence[str], at: int | str, env: dict[str, str]) -> int:
    """Kill ``credvault ARGS`` at ``at``; its exit code (-9 when the point was reached)."""
    code, _, err = _run(w, who, args, at, env)
    assert code in (-9, 0), (at, code, err)
    return code


def kill_points(cal: dict[str, object], steps: Sequence[str], default: int, full: int) -> list:
    """Points spread over the calibrated line count, then ``steps`` (``NAME#n+k``: ``k``
    lines after the ``n``-th call of the credvault function ``NAME``) whose function the
    calibration run called."""
    total = cal["lines"]
    marks = cal["marks"]
    assert isinstance(total, int)
    assert isinstance(marks, dict)
    spread: list[int | str] = list(points(total, kill_count(default, full)))
    return spread + [s for s in steps if s.partition("+")[0].partition("#")[0] in marks]


# Several commands in one process, each through the CLI's own main in its person's
# environment (as test_contract's set-up runner), each one's exit code and output kept: the
# checks after a kill cost one interpreter start, not one per command.
_BATCH = """
import base64, io, json, os, sys
from credvault.cli import main
done = []
for env, args, given in json.loads(sys.stdin.buffer.read()):
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = io.TextIOWrapper(io.BytesIO(base64.b64decode(given)))
    out, err = io.BytesIO(), io.BytesIO()
    sys.stdout = io.TextIOWrapper(out, write_through=True)
    sys.stderr = io.TextIOWrapper(err, write_through=True)
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    done.append([code, base64.b64encode(out.getvalue()).decode(), err.getvalue().decode()])
sys.__stdout__.write(json.dumps(done))
"""


def batch(w: World, *steps: tuple[str, Sequence[str], Path | None]) -> list[CliResult]:
    """Run ``(who, args, passphrase file or None)`` steps in one process, in order."""
    runs = []
    for who, args, pw in steps:
        env = dict(w.envs[who])
        if pw is not None:
            env["CREDVAULT_PASSPHRASE_FILE"] = str(pw)
        runs.append([env, list(args), ""])
    p = subprocess.run(
        [sys.executable, "-c", _BATCH],
        input=json.dumps(runs).encode(),
        capture_output=True,
        timeout=240,
        start_new_session=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode("utf-8", errors="replace")
    import base64

    return [CliResult(c, base64.b64decode(o), e) for c, o, e in json.loads(p.stdout)]


def as_(w: World, who: str, *args: str, pw: Path | None = None, input: bytes = b"") -> CliResult:
    """``credvault ARGS`` as ``who``, with the passphrase file ``pw`` if given."""
    saved = w.envs[who]
    if pw is not None:
        w.envs[who] = {**saved, "CREDVAULT_PASSPHRASE_FILE": str(pw)}
    try:
        return w.run(who, *args, input=input)
    finally:
        w.envs[who] = saved


def never_tampered(r: CliResult) -> None:
    assert r.code != 6, r.err
    assert "Traceback" not in r.err, r.err


@pytest.fixture
def team(tmp_path: Path, pg_cluster: Cluster) -> World:
    """The contract's team world; bob an engineer of acme-2026, which holds a secret that
    bob has read (his log witness keeps the engagement's state)."""
    w = _postgresql(tmp_path, pg_cluster)
    w.setup(
        [
            ("alice", ("grant", "acme-2026", "bob", "engineer")),
            ("alice", ("put", "acme-2026/db"), SECRET + b"\n"),
            ("bob", ("get", "acme-2026/db")),
        ],
        measured=False,
    )
    return w


def _passphrase(w: World, label: str) -> Path:
    f = Path(w.root) / f"bob-{label}-{secrets.token_hex(3)}.pass"
    f.write_text(f"bob's passphrase {label} {secrets.token_hex(8)}\n")
    f.chmod(0o600)
    return f


def _rerun_from_either(
    w: World, old: Path, new: Path, check: Sequence[str], rerun: Sequence[str]
) -> Path:
    """After a kill: bob's ``credvault CHECK`` with each passphrase (exactly one succeeds,
    never exit 6), alice's ``audit verify``, then bob runs ``credvault RERUN`` (which names
    ``again``, his next passphrase) from each passphrase in turn: the one that opens
    completes it, the other changes nothing. One process. Returns the passphrase that
    opened."""
    a, b, audit, from_old, from_new = batch(
        w,
        ("bob", check, old),
        ("bob", check, new),
        ("alice", ("audit", "verify"), None),
        ("bob", rerun, old),
        ("bob", rerun, new),
    )
    for r in (a, b, audit, from_old, from_new):
        never_tampered(r)
    assert audit.code == 0, audit.err
    # the one that does not open: a wrong passphrase (5), or the slot of a change the
    # server never took, whose login it refuses (4)
    if a.code == 0:
        assert b.code in (4, 5), b.err
        assert from_old.code == 0, from_old.err
        assert from_new.code == 5, from_new.err
        return old
    assert a.code in (4, 5), a.err
    assert b.code == 0, b.err
    assert from_old.code in (4, 5), from_old.err
    assert from_new.code == 0, from_new.err
    return new


# -- passwd -----------------------------------------------------------------------------------
def test_passwd_killed_leaves_one_passphrase_and_a_rerun_finishes(team: World) -> None:
    """``passwd``: the new slot beside the old, the server's verifier, the move."""
    w = team
    new = _passphrase(w, "cal")
    cal = calibrate(w, "bob", ["passwd", "--passphrase-file", str(new)])
    cur = new
    steps = ["change_login+0", "finish_pending+1", "finish_pending+3"]
    for i, at in enumerate(kill_points(cal, steps, 2, 16)):
        new = _passphrase(w, f"k{i}")
        args = ["passwd", "--passphrase-file", str(new)]
        code = kill(w, "bob", args, at, {"CREDVAULT_PASSPHRASE_FILE": str(cur)})
        again = _passphrase(w, f"r{i}")
        rerun = ("passwd", "--passphrase-file", str(again))
        opens = _rerun_from_either(w, cur, new, ("get", "acme-2026/db"), rerun)
        assert opens == new or code != 0, at  # "done" means done
        got = as_(w, "bob", "get", "acme-2026/db", pw=again)
        assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)
        cur = again


def test_passwd_compromised_killed_leaves_one_passphrase_and_a_rerun_finishes(
    team: World,
) -> None:
    """``passwd --compromised``: new keys, the new slot and the witnesses (MACed under the
    new key) beside the old ones, the server's hand-over, the moves. After each, alice
    certifies bob's new keys and rotates: bob reads again."""
    w = team
    new = _passphrase(w, "cal")
    cal = calibrate(w, "bob", ["passwd", "--compromised", "--passphrase-file", str(new)])
    _recertify(w, new)
    cur = new
    # finish_pending's moves: +1 before any, +3 (before the fix: after the slot's, before
    # the witnesses'), +12 between the two witnesses, +19 after both, before the slot's
    into = range(1, 30) if FULL_KILLS else (3, 19)
    steps = ["replace_keys+0", *(f"finish_pending+{k}" for k in into)]
    for i, at in enumerate(kill_points(cal, steps, 1, 16)):
        new = _passphrase(w, f"k{i}")
        args = ["passwd", "--compromised", "--passphrase-file", str(new)]
        code = kill(w, "bob", args, at, {"CREDVAULT_PASSPHRASE_FILE": str(cur)})
        again = _passphrase(w, f"r{i}")
        rerun = ("passwd", "--compromised", "--passphrase-file", str(again))
        opens = _rerun_from_either(w, cur, new, ("ls", "acme-2026"), rerun)
        assert opens == new or code != 0, at
        _recertify(w, again, at)
        cur = again


def _recertify(w: World, pw: Path, at: object = None) -> None:
    """After bob's ``passwd --compromised`` (his passphrase now ``pw``): alice certifies his
    new keys and rotates acme-2026; bob reads acme-2026/db again."""
    fp = as_(w, "bob", "info", "--fingerprint", pw=pw)
    assert fp.code == 0, (at, fp.err)
    certify, rotate, got = batch(
        w,
        ("alice", ("member", "certify", "bob", "--fingerprint", fp.text.strip()), None),
        ("alice", ("engagement", "rotate", "acme-2026"), None),
        ("bob", ("get", "acme-2026/db"), pw),
    )
    for x in (certify, rotate, got):
        never_tampered(x)
    assert certify.code == 0, (at, certify.err)
    assert rotate.code == 0, (at, rotate.err)
    assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)


# -- join -------------------------------------------------------------------------------------
def _newcomer(w: World, name: str) -> tuple[tuple[str, ...], list[str]]:
    """A machine for ``name``: alice's ``member invite`` and ``name``'s ``join`` args."""
    w.envs[name] = _machine(Path(w.root), name, w.target)
    code = str(Path(w.root) / f"{name}.invitation")
    pw = w.envs[name]["CREDVAULT_PASSPHRASE_FILE"]
    return (
        ("member", "invite", name, "--invitation-file", code),
        ["join", "--invitation-file", code, "--passphrase-file", pw, "--kdf", KDF_ARG],
    )


def test_join_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``join``: keys made here, the slot written, the public keys published with the new
    login (the invitation's password replaced). Killed anywhere, running ``join`` again
    with the same invitation completes, or says it was done; the newcomer then logs in."""
    w = team
    invite, args = _newcomer(w, "joiner")
    assert as_(w, "alice", *invite).code == 0
    cal = calibrate(w, "joiner", args)
    steps = ["write_new+0", "join_proved+0", "join_proved+4"]
    kills = kill_points(cal, steps, 3, 16)
    invite, args = _newcomer(w, "joiner0")
    assert as_(w, "alice", *invite).code == 0
    for i, at in enumerate(kills):
        name = f"joiner{i}"
        code = kill(w, name, args, at, {})
        this = args
        invite, args = _newcomer(w, f"joiner{i + 1}")  # the next one's, in the same batch
        again, ls, audit, invited = batch(
            w,
            (name, this, None),
            (name, ("member", "ls"), None),
            ("alice", ("audit", "verify"), None),
            ("alice", invite, None),
        )
        for r in (again, ls, audit):
            never_tampered(r)
        # done means done; otherwise it completes now
        assert again.code == 0 or (code != 0 and "exists already" in again.err), (at, again.err)
        assert code != 0 or "exists already" in again.err, again.err
        assert ls.code == 0, (at, ls.err)
        assert audit.code == 0, (at, audit.err)
        assert invited.code == 0, invited.err


# -- init -------------------------------------------------------------------------------------
def _empty_database(root: Path, cluster: Cluster, n: int) -> tuple[World, list[str]]:
    """A new database (its owner's password in alice's ~/.pgpass, as the DBA hands it
    over) and alice's machine: the world and ``init``'s args."""
    from credvault.postgres import bootstrap_sql, scram_verifier

    db = f"fi{n}_{secrets.token_hex(3)}"
    owner, owner_pw = f"{db}_owner", secrets.token_urlsafe(16)
    cluster.superuser_sql(bootstrap_sql(db, owner, scram_verifier(owner_pw)))
    root = root / db
    root.mkdir()
    w = World("postgresql", root, f"postgresql://127.0.0.1:{cluster.port}/{db}")
    w.envs["alice"] = _machine(root, "alice", w.target)
    pgpass = Path(w.envs["alice"]["HOME"]) / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:{db}:{owner}:{owner_pw}\n")
    pgpass.chmod(0o600)
    owner_target = f"postgresql://{owner}@127.0.0.1:{cluster.port}/{db}"
    return w, ["init", "--vault", owner_target, "--kdf", KDF_ARG]


def test_init_killed_is_done_or_a_rerun_finishes(tmp_path: Path, pg_cluster: Cluster) -> None:
    """``init`` against PostgreSQL: the schema (one transaction), alice's key slot, her
    login role and invitation, her join. Killed anywhere, running ``init`` again completes
    or says it was done; alice then logs in and the audit trail verifies."""
    w, args = _empty_database(tmp_path, pg_cluster, 0)
    cal = calibrate(w, "alice", args)
    steps = [
        "apply_schema+0",
        "write_new+0",
        "create_member_role+0",
        "owner_certificate+0",
        "join_proved+0",
    ]
    for i, at in enumerate(kill_points(cal, steps, 2, 12)):
        w, args = _empty_database(tmp_path, pg_cluster, i + 1)
        code = kill(w, "alice", args, at, {})
        again, ls, audit = batch(
            w,
            ("alice", args, None),
            ("alice", ("member", "ls"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, ls, audit):
            never_tampered(r)
        done = "already holds a credvault team vault" in again.err
        assert again.code == 0 or (code != 0 and done), (at, again.err)
        assert code != 0 or done, again.err
        assert ls.code == 0, (at, ls.err)
        assert audit.code == 0, (at, audit.err)
