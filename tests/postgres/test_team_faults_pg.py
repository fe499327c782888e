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

``passwd``, ``join``, ``engagement close`` and ``engagement shred`` are also interrupted with
SIGINT and SIGTERM at the named steps of their kill -9 tests (the CLI's own handler,
:mod:`credvault.interrupts`: exit 130 or 143 in one line), with the same checks after.
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
_sig = spec.get("sig", 9)
if _sig != 9:  # SIGINT or SIGTERM: sent once, then the CLI's own handler (launch.main's)
    def _event(kind):
        _st[kind] += 1
        if _st["at"] is not None and (_st["kind"] == kind or _st["kind"] == "any"):
            n = _st[kind] if _st["kind"] == kind else _st["line"] + _st["sql"]
            if n >= _st["at"]:
                _st["at"] = None
                os.kill(os.getpid(), _sig)
    from credvault.interrupts import install_signal_handlers
    install_signal_handlers()
at = spec["at"]
if isinstance(at, str):  # "NAME#n+k": k lines after the n-th call of NAME (n: 1 if omitted)
    name, _, k = at.partition("+")
    name, _, n = name.partition("#")
    _target, at = [name, int(n or 1), int(k or 0)], None
from credvault.cli import main
from credvault.interrupts import interrupted
arm(at, "line")
try:
    code = main(spec["args"])
except KeyboardInterrupt as e:
    code = interrupted(e)
finally:
    lines, _ = disarm()
    with open(spec["report"], "w") as f:
        json.dump({"lines": lines, "marks": marks}, f)
sys.exit(code)
"""
)


def _run(
    w: World,
    who: str,
    args: Sequence[str],
    at: int | str | None,
    env: dict[str, str],
    sig: int = 9,
) -> tuple[int, dict[str, object] | None, str]:
    """Run ``credvault ARGS`` as ``who``, killed at ``at`` (None: calibrate) with signal
    ``sig`` (9, or SIGINT/SIGTERM, which the CLI handles). Returns the exit code (-9:
    killed; 130 or 143: interrupted), the report of a run that ended, and stderr."""
    report = Path(w.root) / f"report-{secrets.token_hex(4)}.json"
    spec = {"args": list(args), "at": at, "report": str(report), "sig": sig}
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
    w: World, who: str, args: Sequence[str], env: dict[str, str] | None = None, ok: int = 0
) -> dict[str, object]:
    """Run ``credvault ARGS`` to its end (exit ``ok``), counting its lines and steps."""
    code, got, err = _run(w, who, args, None, env or {})
    assert code == ok, err
    assert got is not None
    return got


def kill(
    w: World,
    who: str,
    args: Sequence[str],
    at: int | str,
    env: dict[str, str],
    ok: int = 0,
    sig: int = 9,
) -> int:
    """Kill ``credvault ARGS`` at ``at`` with ``sig``; its exit code (-9 when SIGKILL
    reached the point; 128 + ``sig`` when the CLI says it was interrupted, in one line)."""
    code, _, err = _run(w, who, args, at, env, sig)
    if sig == 9:
        assert code in (-9, ok), (at, code, err)
        return code
    assert code in (128 + sig, ok), (at, sig, code, err)
    assert "Traceback" not in err, (at, sig, err)
    if code == 128 + sig:
        said = "credvault: terminated (SIGTERM)" if sig == 15 else "credvault: interrupted"
        assert said in err, (at, sig, err)
    return code


def kill_points(
    cal: dict[str, object],
    steps: Sequence[str],
    more: Sequence[str] = (),
    full: int = 12,
    spread: int = 1,
) -> list[int | str]:
    """``spread`` points over the calibrated line count (``full`` under
    ``CREDVAULT_TEST_KILLS=full``), then ``steps`` (``NAME#n+k``: ``k`` lines after the
    ``n``-th call of the credvault function ``NAME``; ``more`` of them under ``full``)
    whose function the calibration run called."""
    total = cal["lines"]
    marks = cal["marks"]
    assert isinstance(total, int)
    assert isinstance(marks, dict)
    n = kill_count(spread, full)
    found: list[int | str] = list(points(total, n)) if n else []
    named = dict.fromkeys([*steps, *(more if FULL_KILLS else ())])
    return found + [s for s in named if s.partition("+")[0].partition("#")[0] in marks]


def most_kills(
    steps: Sequence[str], more: Sequence[str] = (), full: int = 12, spread: int = 1
) -> int:
    """How many points :func:`kill_points` returns at most (for set-ups made before)."""
    return kill_count(spread, full) + len(steps) + (len(more) if FULL_KILLS else 0)


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


Step = tuple[str, Sequence[str], Path | None] | tuple[str, Sequence[str], Path | None, bytes]


def batch(w: World, *steps: Step) -> list[CliResult]:
    """Run ``(who, args, passphrase file or None[, stdin])`` steps in one process, in order."""
    import base64

    runs = []
    for step in steps:
        who, args, pw = step[:3]
        env = dict(w.envs[who])
        if pw is not None:
            env["CREDVAULT_PASSPHRASE_FILE"] = str(pw)
        given = step[3] if len(step) > 3 else b""
        runs.append([env, list(args), base64.b64encode(given).decode()])
    p = subprocess.run(
        [sys.executable, "-c", _BATCH],
        input=json.dumps(runs).encode(),
        capture_output=True,
        timeout=240,
        start_new_session=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr.decode("utf-8", errors="replace")
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


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster) -> World:
    """One world for the module (each test leaves it as a user would find it): the
    contract's team world, bob and dave engineers of acme-2026, which holds a secret each
    has read (their log witnesses keep its state); carol holds no role."""
    w = _postgresql(tmp_path_factory.mktemp("team-faults"), pg_cluster)
    invite, join = _newcomer(w, "dave")
    w.setup(
        [
            ("alice", invite),
            ("dave", tuple(join)),
            ("alice", ("grant", "acme-2026", "bob", "engineer")),
            ("alice", ("grant", "acme-2026", "dave", "engineer")),
            ("alice", ("put", "acme-2026/db"), SECRET + b"\n"),
            ("bob", ("get", "acme-2026/db")),
            ("dave", ("get", "acme-2026/db")),
        ],
        measured=False,
    )
    return w


def _passphrase(w: World, label: str, who: str = "bob") -> Path:
    f = Path(w.root) / f"{who}-{label}-{secrets.token_hex(3)}.pass"
    f.write_text(f"{who}'s passphrase {label} {secrets.token_hex(8)}\n")
    f.chmod(0o600)
    return f


def _rerun_from_either(
    w: World, who: str, old: Path, new: Path, check: Sequence[str], rerun: Sequence[str]
) -> Path:
    """After a kill: ``who``'s ``credvault CHECK`` with each passphrase (exactly one succeeds,
    never exit 6), alice's ``audit verify``, then ``who`` runs ``credvault RERUN`` (which names
    ``again``, his next passphrase) from each passphrase in turn: the one that opens
    completes it, the other changes nothing. One process. Returns the passphrase that
    opened."""
    a, b, audit, from_old, from_new = batch(
        w,
        (who, check, old),
        (who, check, new),
        ("alice", ("audit", "verify"), None),
        (who, rerun, old),
        (who, rerun, new),
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
    home = Path(w.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"])
    steps = ["change_login+0", "finish_pending+3"]
    for i, at in enumerate(kill_points(cal, steps, ["finish_pending+1"])):
        new = _passphrase(w, f"k{i}")
        args = ["passwd", "--passphrase-file", str(new)]
        code = kill(w, "bob", args, at, {"CREDVAULT_PASSPHRASE_FILE": str(cur)})
        again = _passphrase(w, f"r{i}")
        rerun = ("passwd", "--passphrase-file", str(again))
        opens = _rerun_from_either(w, "bob", cur, new, ("get", "acme-2026/db"), rerun)
        assert opens == new or code != 0, at  # "done" means done
        got = as_(w, "bob", "get", "acme-2026/db", pw=again)
        assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)
        cur = again
    home.write_bytes(cur.read_bytes())  # bob's passphrase file, for the tests after this


def test_passwd_compromised_killed_leaves_one_passphrase_and_a_rerun_finishes(
    team: World,
) -> None:
    """``passwd --compromised``: new keys, the new slot and the witnesses (MACed under the
    new key) beside the old ones, the server's hand-over, the moves. After each, alice
    certifies dave's new keys and rotates: dave reads again (bob's keys stay as they are)."""
    w = team
    new = _passphrase(w, "cal", "dave")
    cal = calibrate(w, "dave", ["passwd", "--compromised", "--passphrase-file", str(new)])
    _recertify(w, new)
    cur = new
    # finish_pending's moves: +1 before any, +3 (before the fix: after the slot's, before
    # the witnesses'), +12 between the two witnesses, +19 after both, before the slot's
    steps = ["finish_pending+3", "finish_pending+19"]
    more = ["replace_keys+0", *(f"finish_pending+{k}" for k in range(1, 30))]
    for i, at in enumerate(kill_points(cal, steps, more, spread=0)):
        new = _passphrase(w, f"k{i}", "dave")
        args = ["passwd", "--compromised", "--passphrase-file", str(new)]
        code = kill(w, "dave", args, at, {"CREDVAULT_PASSPHRASE_FILE": str(cur)})
        again = _passphrase(w, f"r{i}", "dave")
        rerun = ("passwd", "--compromised", "--passphrase-file", str(again))
        opens = _rerun_from_either(w, "dave", cur, new, ("ls", "acme-2026"), rerun)
        assert opens == new or code != 0, at
        _recertify(w, again, at)
        cur = again
    Path(w.envs["dave"]["CREDVAULT_PASSPHRASE_FILE"]).write_bytes(cur.read_bytes())


def _recertify(w: World, pw: Path, at: object = None) -> None:
    """After dave's ``passwd --compromised`` (his passphrase now ``pw``): alice certifies
    his new keys and rotates acme-2026; dave reads acme-2026/db again."""
    fp = as_(w, "dave", "info", "--fingerprint", pw=pw)
    assert fp.code == 0, (at, fp.err)
    certify, rotate, got = batch(
        w,
        ("alice", ("member", "certify", "dave", "--fingerprint", fp.text.strip()), None),
        ("alice", ("engagement", "rotate", "acme-2026"), None),
        ("dave", ("get", "acme-2026/db"), pw),
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


def _join_again(
    w: World, name: str, args: list[str], invite: tuple[str, ...], code: int, at: object
) -> None:
    """After ``name``'s join was cut short (``code``, at ``at``): the join again, then
    ``name``'s ``member ls``, alice's ``audit verify`` and alice's ``invite`` of the next
    joiner, in one batch. Done means done; otherwise it completes now."""
    again, ls, audit, invited = batch(
        w,
        (name, args, None),
        (name, ("member", "ls"), None),
        ("alice", ("audit", "verify"), None),
        ("alice", invite, None),
    )
    for r in (again, ls, audit):
        never_tampered(r)
    assert again.code == 0 or (code != 0 and "exists already" in again.err), (at, again.err)
    assert code != 0 or "exists already" in again.err, again.err
    assert ls.code == 0, (at, ls.err)
    assert audit.code == 0, (at, audit.err)
    assert invited.code == 0, invited.err


def test_join_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``join``: keys made here, the slot written, the public keys published with the new
    login (the invitation's password replaced). Killed anywhere, running ``join`` again
    with the same invitation completes, or says it was done; the newcomer then logs in."""
    w = team
    invite, args = _newcomer(w, "joiner")
    assert as_(w, "alice", *invite).code == 0
    cal = calibrate(w, "joiner", args)
    kills = kill_points(cal, ["join_proved+0", "join_proved+4"], ["write_new+0"])
    invite, args = _newcomer(w, "joiner0")
    assert as_(w, "alice", *invite).code == 0
    for i, at in enumerate(kills):
        name = f"joiner{i}"
        code = kill(w, name, args, at, {})
        this = args
        invite, args = _newcomer(w, f"joiner{i + 1}")  # the next one's, in the same batch
        _join_again(w, name, this, invite, code, at)


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
    for i, at in enumerate(kill_points(cal, steps[1:3], steps)):
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


# -- engagement new, grant, engagement rotate ---------------------------------------------------
def test_engagement_new_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``engagement new`` by its lead: the signed log's first link (server), the witness,
    then the first key (a rotation: server). Killed anywhere, running it again completes or
    says it exists; then a secret stored in it reads back."""
    w = team
    cal = calibrate(w, "alice", ["engagement", "new", "cal", "--client", "acme"])
    steps = ["rotate_records+0"]
    more = ["create_engagement_logged+0", "keep+0", "rotate_records+3"]
    for i, at in enumerate(kill_points(cal, steps, more, spread=0)):
        args = ["engagement", "new", f"e{i}", "--client", "acme"]
        code = kill(w, "alice", args, at, {})
        again, put, got, audit = batch(
            w,
            ("alice", args, None),
            ("alice", ("put", f"e{i}/db"), None, SECRET + b"\n"),
            ("alice", ("get", f"e{i}/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, put, got, audit):
            never_tampered(r)
        assert again.code == 0 or (code != 0 and "exists" in again.err), (at, again.err)
        assert code != 0 or "exists" in again.err, again.err
        assert put.code == 0, (at, put.err)
        assert got.code == 0, (at, got.err)
        assert audit.code == 0, (at, audit.err)


def test_grant_and_rotate_killed_are_done_or_a_rerun_finishes(team: World) -> None:
    """``grant`` (a copy sealed here, the signed grant link, one server transaction, the
    witness) and ``engagement rotate`` (every record re-sealed here, one server transaction,
    the witness). Killed anywhere: bob and carol read what their role says, a rerun
    completes, the audit trail verifies."""
    w = team
    grant = ["grant", "acme-2026", "carol", "reader"]
    rotate = ["engagement", "rotate", "acme-2026"]
    cal_grant = calibrate(w, "alice", grant)
    assert as_(w, "alice", "revoke", "acme-2026", "carol").code == 0
    cal_rotate = calibrate(w, "alice", rotate)
    runs = [(grant, at) for at in kill_points(cal_grant, ["put_grant+0"], ["keep+0"], spread=0)]
    runs += [
        (rotate, at) for at in kill_points(cal_rotate, ["rotate_records+0"], ["keep+0"], spread=0)
    ]
    for args, at in runs:
        code = kill(w, "alice", args, at, {})
        again, bob, carol, audit = batch(
            w,
            ("alice", args, None),
            ("bob", ("get", "acme-2026/db"), None),
            ("carol", ("get", "acme-2026/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, bob, carol, audit):
            never_tampered(r)
        assert again.code == 0, (args, at, code, again.err)
        assert (bob.code, bob.out) == (0, SECRET + b"\n"), (args, at, bob.err)
        assert carol.code == (0 if args is grant else 4), (args, at, carol.err)
        assert audit.code == 0, (at, audit.err)
        if args is grant:
            assert as_(w, "alice", "revoke", "acme-2026", "carol").code == 0


def test_revoke_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``revoke`` by the lead: the grant revoked on the server with a signed revoke link,
    the witness, then the key rotates (a second server transaction). Killed anywhere:
    carol reads nothing, and once ``revoke`` ran again the key has rotated since her
    revoke (what she may have kept opens nothing new); bob reads; the trail verifies."""
    w = team
    grant = ("grant", "acme-2026", "carol", "reader")
    revoke = ["revoke", "acme-2026", "carol"]
    assert as_(w, "alice", *grant).code == 0
    cal = calibrate(w, "alice", revoke)
    more = ["revoke_grant_logged+0", "rotate_records+0"]
    for at in kill_points(cal, ["rotate+0"], more, spread=0):
        assert as_(w, "alice", *grant).code == 0
        code = kill(w, "alice", revoke, at, {})
        again, carol, bob, audit, trail = batch(
            w,
            ("alice", revoke, None),
            ("carol", ("get", "acme-2026/db"), None),
            ("bob", ("get", "acme-2026/db"), None),
            ("alice", ("audit", "verify"), None),
            ("alice", ("audit", "--engagement", "acme-2026", "--json"), None),
        )
        for r in (again, carol, bob, audit):
            never_tampered(r)
        # the revoke, or the rotation a revoke cut short began; or done already
        assert again.code == 0 or (code == 0 and "holds no role" in again.err), (at, again.err)
        assert carol.code == 4, (at, carol.err)
        assert (bob.code, bob.out) == (0, SECRET + b"\n"), (at, bob.err)
        assert audit.code == 0, (at, audit.err)
        rows = [(e["action"], e["item"], str(e["detail"])) for e in json.loads(trail.out)]
        last = max(i for i, r in enumerate(rows) if r[:2] == ("revoke", "carol"))
        rotated = [r for r in rows[last:] if r[0] == "rotate" and "key version" in r[2]]
        assert rotated, (at, code, again.err, rows[last:])


# -- member rm --------------------------------------------------------------------------------
def test_member_rm_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``member rm``: every log replayed here, revoke links signed here, one server
    transaction (links, revocation list, login off), then the admin's witness. Killed
    anywhere: running it again completes or says they are gone; the removed member no
    longer reads, bob still does, the audit trail verifies."""
    w = team
    steps, more = ["remove_member_logged+0"], ["keep+0"]
    names = [f"gone{i}" for i in range(1 + most_kills(steps, more))]
    setup: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        invite, join = _newcomer(w, name)
        setup += [("alice", invite), (name, tuple(join))]
        setup.append(("alice", ("grant", "acme-2026", name, "reader")))
    w.setup(setup, measured=False)
    cal = calibrate(w, "alice", ["member", "rm", names[0]])
    for name, at in zip(names[1:], kill_points(cal, steps, more), strict=False):
        code = kill(w, "alice", ["member", "rm", name], at, {})
        again, gone, bob, audit = batch(
            w,
            ("alice", ("member", "rm", name), None),
            (name, ("get", "acme-2026/db"), None),
            ("bob", ("get", "acme-2026/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, gone, bob, audit):
            never_tampered(r)
        assert again.code == 0 or code != 0, (at, again.err)
        assert gone.code in (4, 5), (at, gone.err)
        assert (bob.code, bob.out) == (0, SECRET + b"\n"), (at, bob.err)
        assert audit.code == 0, (at, audit.err)


# -- engagement shred, purge: the receipt and the ledger --------------------------------------
def test_shred_killed_is_done_with_its_receipt_and_ledger_line(team: World) -> None:
    """``engagement shred`` (the purge on request): the server destroys, the receipt is
    signed here and stored, and appended to this machine's purge ledger (which a restored
    dump cannot roll back). Killed anywhere: running it again, or the admin's next
    ``purge``, leaves the engagement destroyed, its receipt signed, and the ledger holding
    it; the audit trail verifies."""
    w = team
    steps, more = ["store_receipt+0", "keep+0"], ["destroy+0"]
    names = [f"s{i}" for i in range(1 + most_kills(steps, more, spread=0))]
    setup: list[tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], bytes]] = []
    for name in names:
        setup.append(("alice", ("engagement", "new", name, "--client", "acme")))
        setup.append(("alice", ("put", f"{name}/db"), SECRET + b"\n"))
    w.setup(setup, measured=False)
    env = w.envs["alice"]
    state = Path(env.get("XDG_STATE_HOME") or Path(env["HOME"], ".local", "state"))
    ledger = state / "credvault" / "team" / str(w.extra["db"]) / "purge-ledger.jsonl"
    # exit 1: "purge NOT complete" until the owner rewrites the table files (docs/team.md)
    cal = calibrate(w, "alice", ["engagement", "shred", names[0], "--yes"], ok=1)
    assert f'"engagement":"{names[0]}"' in ledger.read_text().replace(" ", "")
    for name, at in zip(names[1:], kill_points(cal, steps, more, spread=0), strict=False):
        code = kill(w, "alice", ["engagement", "shred", name, "--yes"], at, {}, ok=1)
        again, purge, receipt, gone, audit = batch(
            w,
            ("alice", ("engagement", "shred", name, "--yes"), None),
            ("alice", ("purge",), None),
            ("alice", ("receipt", name), None),
            ("alice", ("get", f"{name}/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, purge, receipt, gone, audit):
            never_tampered(r)
        assert again.code == 1 or code == -9, (at, again.err)
        assert purge.code in (0, 1), (at, purge.err)
        assert receipt.code == 0, (at, receipt.err)
        assert gone.code != 0
        assert audit.code == 0, (at, audit.err)
        assert f'"engagement":"{name}"' in ledger.read_text().replace(" ", ""), (at, code)


# -- member invite ----------------------------------------------------------------------------
def test_member_invite_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``member invite --invitation-file``: the invitation (its code's verifier) stored on
    the server, then the code written to the file. Killed anywhere: running it again
    completes, or says it was done and the file holds the code; the invitee then joins."""
    w = team
    invite, join = _newcomer(w, "inv")
    cal = calibrate(w, "alice", invite)
    assert as_(w, "inv", *join).code == 0
    kills = kill_points(cal, ["write_new_private+0"], ["invite_member+0"], spread=0)
    for i, at in enumerate(kills):
        name = f"inv{i}"
        invite, join = _newcomer(w, name)
        code = kill(w, "alice", invite, at, {})
        again, joined, ls, audit = batch(
            w,
            ("alice", invite, None),
            (name, join, None),
            (name, ("member", "ls"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, joined, ls, audit):
            never_tampered(r)
        # done (the file written): refused before the server, the file's code still good;
        # cut short before the file: the invitation made again, its code in the file
        assert again.code == 0 or "exists; not overwritten" in again.err, (at, again.err)
        assert code != 0 or again.code != 0, (at, again.err)
        assert joined.code == 0, (at, code, again.err, joined.err)
        assert ls.code == 0, (at, ls.err)
        assert audit.code == 0, (at, audit.err)


def test_inviting_again_a_member_who_never_joined_replaces_the_invitation(team: World) -> None:
    """What lets an invite cut short run again (section reinvite): a new code for a member
    still ``invited`` — an admin's too — the old code void; a member who joined is refused."""
    w = team
    first, join = _newcomer(w, "adm")
    first = (*first, "--admin")
    assert as_(w, "alice", *first).code == 0
    code = Path(first[4])
    old = code.read_text()
    again = as_(w, "alice", *first)
    assert again.code == 1
    assert "exists; not overwritten" in again.err  # before the server: the file's code holds
    code.unlink()
    r = as_(w, "alice", *first)
    assert r.code == 0, r.err
    assert code.read_text() != old
    stale = Path(w.root) / "adm.stale"
    stale.write_text(old)
    stale.chmod(0o600)
    refused = as_(w, "adm", *join[:2], str(stale), *join[3:])
    assert refused.code == 4, refused.err
    assert as_(w, "adm", *join).code == 0
    assert as_(w, "adm", "member", "ls").code == 0
    joined = as_(w, "alice", "member", "invite", "adm")
    assert joined.code == 1
    assert "exists already" in joined.err
    trail = as_(w, "alice", "audit", "--json").out.decode()
    assert "admin, invitation replaced" in trail


# -- witness accept ---------------------------------------------------------------------------
def test_witness_accept_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``witness accept --yes`` after the database lost a log link alice had verified (as
    a restore of an older dump does; here the DBA deletes it): the server's audit row, then
    the witness forgets that log. Killed anywhere: running it again accepts, or finds
    nothing to accept; alice then reads the engagement again, the audit trail verifies."""
    w = team
    steps, more = ["record_witness_accept+0", "forget+0"], ["gaps+0"]
    names = [f"wa{i}" for i in range(1 + most_kills(steps, more, spread=0))]
    setup: list[tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], bytes]] = []
    for name in names:
        setup.append(("alice", ("engagement", "new", name, "--client", "acme")))
        setup.append(("alice", ("put", f"{name}/db"), SECRET + b"\n"))
        setup.append(("alice", ("grant", name, "carol", "reader")))
        setup.append(("alice", ("get", f"{name}/db")))  # her witness: up to the grant
    w.setup(setup, measured=False)
    cluster = w.extra["cluster"]
    assert isinstance(cluster, Cluster)

    def lose_the_last_link(name: str) -> None:
        sql = (
            "DELETE FROM credvault.engagement_log l USING credvault.engagements e"  # noqa: S608
            f" WHERE l.engagement_id = e.id AND e.name = '{name}' AND l.seq ="
            " (SELECT max(seq) FROM credvault.engagement_log WHERE engagement_id = e.id)"
        )
        cluster.superuser_sql(sql, str(w.extra["db"]))

    lose_the_last_link(names[0])
    assert as_(w, "alice", "get", f"{names[0]}/db").code == 6  # as it should: refused
    cal = calibrate(w, "alice", ["witness", "accept", "--yes"])
    for name, at in zip(names[1:], kill_points(cal, steps, more, spread=0), strict=False):
        lose_the_last_link(name)
        code = kill(w, "alice", ["witness", "accept", "--yes"], at, {})
        again, got, audit = batch(
            w,
            ("alice", ("witness", "accept", "--yes"), None),
            ("alice", ("get", f"{name}/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, got, audit):
            never_tampered(r)
        assert again.code == 0, (at, again.err)
        assert code != 0 or "nothing to accept" in again.text, (at, again.text)
        assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)
        assert audit.code == 0, (at, audit.err)


# -- migrate ----------------------------------------------------------------------------------
def test_migrate_killed_is_done_or_a_rerun_finishes(tmp_path: Path, pg_cluster: Cluster) -> None:
    """``migrate`` (SQLCipher to a new database): the schema, then one owner transaction
    (everything copied, the invitations written before its commit), then the SQLCipher
    vault's own ``migrate`` entry. Killed anywhere: running it again (into a new
    invitations directory if the killed run made one) completes or says the database holds
    the vault; alice joins from the old vault with her invitation and reads; the old
    vault's trail records the migration."""
    from postgres.test_contract import _sqlcipher
    from postgres.test_migrate_pg import _target_db

    def world(i: int) -> tuple[World, list[str], Path]:
        old = _sqlcipher(tmp_path / f"old{i}")
        _, owner_target, _ = _target_db(pg_cluster, old)
        invitations = tmp_path / f"inv{i}"
        return (
            old,
            ["migrate", "--to", owner_target, "--invitations", str(invitations)],
            invitations,
        )

    old, args, _ = world(0)
    assert as_(old, "alice", "put", "acme-2026/db", input=SECRET + b"\n").code == 0
    cal = calibrate(old, "alice", args)
    for i, at in enumerate(kill_points(cal, ["database+0"], ["audit_append+0"], spread=0), 1):
        old, args, invitations = world(i)
        assert as_(old, "alice", "put", "acme-2026/db", input=SECRET + b"\n").code == 0
        code = kill(old, "alice", args, at, {})
        rerun = [*args[:-1], str(invitations) + "-again"]
        target = args[2].replace(args[2].split("@")[0].split("//")[1] + "@", "")
        team_env = {**old.envs["alice"], "CREDVAULT_VAULT": target}
        both = World("postgresql", old.root, target, {"alice": team_env, "old": old.envs["alice"]})
        pw = team_env["CREDVAULT_PASSPHRASE_FILE"]
        join = ["join", "--from-vault", old.target, "--passphrase-file", pw, "--kdf", KDF_ARG]
        join.append("--invitation-file")

        # the rerun, then alice joins with the invitation of whichever run committed (the
        # other's file is missing or its code void: that join changes nothing), and reads
        again, by_rerun, by_first, got, trail = batch(
            both,
            ("old", rerun, None),
            ("alice", [*join, str(Path(rerun[-1]) / "alice.invitation")], None),
            ("alice", [*join, str(invitations / "alice.invitation")], None),
            ("alice", ("get", "acme-2026/db"), None),
            ("old", ("audit", "--json"), None),
        )
        for r in (again, by_rerun, by_first, got):
            never_tampered(r)
        done = "already holds a credvault team vault" in again.err
        assert again.code == 0 or (code == -9 and done), (at, again.err)
        assert [by_rerun.code, by_first.code].count(0) == 1, (at, by_rerun.err, by_first.err)
        assert (by_first.code == 0) == done, (at, by_first.err)
        assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)
        assert '"migrate"' in trail.out.decode(), (at, code)


# -- engagement close: the close record in the ledger -----------------------------------------
def test_close_killed_is_done_with_its_close_record(team: World) -> None:
    """``engagement close``: the server closes, then the close record (signed here) goes
    into this machine's purge ledger, so a restored dump cannot reopen it unnoticed. Killed
    anywhere: once ``close`` ran again (refused if it was closed: done), the ledger holds
    the close record; the audit trail verifies."""
    w = team
    steps, more = ["keep_close+0"], ["close+0"]
    names = [f"c{i}" for i in range(1 + most_kills(steps, more, spread=0))]
    w.setup(
        [("alice", ("engagement", "new", n, "--client", "acme")) for n in names], measured=False
    )
    env = w.envs["alice"]
    state = Path(env.get("XDG_STATE_HOME") or Path(env["HOME"], ".local", "state"))
    ledger = state / "credvault" / "team" / str(w.extra["db"]) / "purge-ledger.jsonl"

    def recorded(name: str) -> bool:
        return ledger.exists() and f'"engagement":"{name}"' in ledger.read_text().replace(" ", "")

    cal = calibrate(w, "alice", ["engagement", "close", names[0]])
    assert recorded(names[0])
    for name, at in zip(names[1:], kill_points(cal, steps, more, spread=0), strict=False):
        code = kill(w, "alice", ["engagement", "close", name], at, {})
        again, audit = batch(
            w, ("alice", ("engagement", "close", name), None), ("alice", ("audit", "verify"), None)
        )
        for r in (again, audit):
            never_tampered(r)
        assert again.code == 0 or "closed" in again.err, (at, again.err)
        assert code != 0 or again.code != 0, (at, again.err)
        assert audit.code == 0, (at, audit.err)
        assert recorded(name), (at, code, again.err)


# -- engagement retain / release, config set purge-grace-days: their close records -----------
def _ledger(w: World) -> Path:
    """alice's purge ledger of the world's database (beside her log witness)."""
    env = w.envs["alice"]
    state = Path(env.get("XDG_STATE_HOME") or Path(env["HOME"], ".local", "state"))
    return state / "credvault" / "team" / str(w.extra["db"]) / "purge-ledger.jsonl"


def _newest_close(ledger: Path, name: str) -> dict[str, object] | None:
    """The close record of ``name`` last appended to ``ledger`` (None: none)."""
    found = None
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        item = json.loads(line) if line.strip() else None
        if isinstance(item, dict) and item.get("engagement") == name and "closed_at" in item:
            found = item
    return found


def _records_the_state(w: World, shown: CliResult, name: str, at: object) -> None:
    """The newest close record of ``name`` in alice's ledger states what ``engagement show
    NAME --json`` (``shown``) says: its purge date and its hold."""
    assert shown.code == 0, (at, shown.err)
    state = json.loads(shown.out)
    rec = _newest_close(_ledger(w), name)
    assert rec is not None, (at, name)
    got = (rec["purge_due"], rec["hold_until"], rec["hold_reason"])
    assert got == (state["purge_due"], state["hold_until"], state["hold_reason"]), (at, rec)


def test_retain_and_release_killed_are_done_with_their_close_record(team: World) -> None:
    """``engagement retain`` and ``engagement release``: the server holds (or lifts the
    hold of) a closed engagement and moves its purge date, then the close record of its new
    state (signed here) goes into this machine's purge ledger, as ``close``'s. Killed
    anywhere: once it ran again (a release refused as 'no retention hold': done), the
    ledger's newest record of it states the hold and the purge date the server shows; the
    audit trail verifies."""
    w = team
    steps, more = ["keep_close+0"], ["append_to_ledger+0"]
    names = [f"h{i}" for i in range(1 + most_kills(steps, [*more, "set_hold+0"], spread=0))]

    def retain(name: str, day: int = 1) -> list[str]:
        until = f"2099-01-{day:02}"
        return ["engagement", "retain", name, "--until", until, "--reason", f"audit {day}"]

    setup: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        setup.append(("alice", ("engagement", "new", name, "--client", "acme")))
        setup.append(("alice", ("engagement", "close", name)))
        setup.append(("alice", tuple(retain(name))))
    w.setup(setup, measured=False)
    cal_retain = calibrate(w, "alice", retain(names[0], 2))
    cal_release = calibrate(w, "alice", ["engagement", "release", names[0]])
    retains = kill_points(cal_retain, steps, [*more, "set_hold+0"], spread=0)
    runs = [(retain(name, 3), at) for name, at in zip(names[1:], retains, strict=False)]
    releases = kill_points(cal_release, steps, [*more, "release_hold+0"], spread=0)
    runs += [
        (["engagement", "release", name], at) for name, at in zip(names[1:], releases, strict=False)
    ]
    for args, at in runs:
        name = args[2]
        code = kill(w, "alice", args, at, {})
        again, shown, audit = batch(
            w,
            ("alice", args, None),
            ("alice", ("engagement", "show", name, "--json"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, shown, audit):
            never_tampered(r)
        released = args[1] == "release"
        refused = released and "no retention hold" in again.err
        assert again.code == 0 or (refused and code != 0), (at, again.err)
        assert audit.code == 0, (at, audit.err)
        _records_the_state(w, shown, name, at)
        assert (json.loads(shown.out)["hold_until"] is None) == released, (at, shown.out)


def test_config_set_purge_grace_killed_is_done_with_its_close_records(team: World) -> None:
    """``config set purge-grace-days N``: the server moves the purge date of every closed
    engagement that follows the vault's grace period, then the close record of each (its
    new date, signed here) goes into this machine's purge ledger. Killed anywhere: once it
    ran again, the ledger's newest record of each states the purge date the server shows;
    the audit trail verifies."""
    w = team
    names = ["g0", "g1"]
    setup: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        setup.append(("alice", ("engagement", "new", name, "--client", "acme")))
        setup.append(("alice", ("engagement", "close", name)))
    w.setup(setup, measured=False)
    cal = calibrate(w, "alice", ["config", "set", "purge-grace-days", "8"])
    more = ["append_to_ledger+0", "set_purge_grace+0"]
    for i, at in enumerate(kill_points(cal, ["keep_closes+0"], more, spread=0)):
        args = ["config", "set", "purge-grace-days", str(9 + i)]
        kill(w, "alice", args, at, {})
        again, audit, *shown = batch(
            w,
            ("alice", args, None),
            ("alice", ("audit", "verify"), None),
            *[("alice", ("engagement", "show", name, "--json"), None) for name in names],
        )
        for r in (again, audit, *shown):
            never_tampered(r)
        assert again.code == 0, (at, again.err)
        assert audit.code == 0, (at, audit.err)
        for name, got in zip(names, shown, strict=True):
            _records_the_state(w, got, name, at)
    assert as_(w, "alice", "config", "set", "purge-grace-days", "7").code == 0


# -- SIGINT and SIGTERM at the same points --------------------------------------------------
INTERRUPTS = (2, 15)  # SIGINT, SIGTERM: the CLI's handler (credvault.interrupts)


def _interrupts(steps: Sequence[str], more: Sequence[str] = ()) -> list[tuple[str, int]]:
    """The named steps (``more`` too under ``full``), each with SIGINT or SIGTERM in turn
    (with both under ``full``). No calibration: each step is one the kill -9 test reaches,
    and each run must be interrupted there (exit 128 + signal)."""
    kills = [*steps, *(more if FULL_KILLS else ())]
    if FULL_KILLS:
        return [(at, sig) for at in kills for sig in INTERRUPTS]
    return [(at, INTERRUPTS[i % 2]) for i, at in enumerate(kills)]


def test_passwd_interrupted_leaves_one_passphrase_and_a_rerun_finishes(team: World) -> None:
    """``passwd`` interrupted (SIGINT, SIGTERM) at the points of its kill -9 test: exit 130
    or 143 in one line, and the same state: one passphrase opens, a rerun finishes."""
    w = team
    home = Path(w.envs["bob"]["CREDVAULT_PASSPHRASE_FILE"])
    cur = _passphrase(w, "icur")
    cur.write_bytes(home.read_bytes())
    kills = _interrupts(["finish_pending+3"], ["change_login+0", "finish_pending+1"])
    for i, (at, sig) in enumerate(kills):
        new = _passphrase(w, f"i{i}")
        args = ["passwd", "--passphrase-file", str(new)]
        code = kill(w, "bob", args, at, {"CREDVAULT_PASSPHRASE_FILE": str(cur)}, sig=sig)
        assert code == 128 + sig, (at, sig, code)
        again = _passphrase(w, f"ir{i}")
        rerun = ("passwd", "--passphrase-file", str(again))
        opens = _rerun_from_either(w, "bob", cur, new, ("get", "acme-2026/db"), rerun)
        assert opens == new or code != 0, (at, sig)
        cur = again
    home.write_bytes(cur.read_bytes())


def test_join_interrupted_is_done_or_a_rerun_finishes(team: World) -> None:
    """``join`` interrupted at the points of its kill -9 test: running it again completes,
    or says it was done; the newcomer then logs in."""
    w = team
    invite, args = _newcomer(w, "ijoiner0")
    assert as_(w, "alice", *invite).code == 0
    # join_proved+2: the server's answer back, before join's own code sees it
    more = ["join_proved+0", "join_proved+2", "join_proved+3", "write_new+0"]
    for i, (at, sig) in enumerate(_interrupts(["join_proved+4"], more)):
        name = f"ijoiner{i}"
        code = kill(w, name, args, at, {}, sig=sig)
        assert code == 128 + sig, (at, sig, code)
        this = args
        invite, args = _newcomer(w, f"ijoiner{i + 1}")
        _join_again(w, name, this, invite, code, (at, sig))


def test_close_and_shred_interrupted_are_done_with_their_ledger_lines(team: World) -> None:
    """``engagement close`` and ``engagement shred`` interrupted at the points of their
    kill -9 tests: once run again (refused as closed, or shredded: done), the ledger holds
    the close record, or the receipt; the audit trail verifies."""
    w = team
    closes = _interrupts(["keep_close+0"], ["close+0"])
    shreds = _interrupts(["keep+0"], ["store_receipt+0", "destroy+0"])
    names = [f"ic{i}" for i in range(len(closes) + len(shreds))]
    setup: list[tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], bytes]] = []
    for name in names:
        setup.append(("alice", ("engagement", "new", name, "--client", "acme")))
        setup.append(("alice", ("put", f"{name}/db"), SECRET + b"\n"))
    w.setup(setup, measured=False)
    ledger = _ledger(w)

    def recorded(name: str) -> bool:
        return ledger.exists() and f'"engagement":"{name}"' in ledger.read_text().replace(" ", "")

    runs = [(["engagement", "close"], at, sig) for at, sig in closes]
    runs += [(["engagement", "shred"], at, sig) for at, sig in shreds]
    for name, (verb, at, sig) in zip(names, runs, strict=True):
        shred = verb[1] == "shred"
        args = [*verb, name, *(["--yes"] if shred else [])]
        code = kill(w, "alice", args, at, {}, ok=1 if shred else 0, sig=sig)
        assert code == 128 + sig, (at, sig, code)
        again, purge, audit = batch(
            w,
            ("alice", args, None),
            ("alice", ("purge",), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, purge, audit):
            never_tampered(r)
        if shred:
            assert again.code == 1 or code == 128 + sig, (at, sig, again.err)
            receipt = as_(w, "alice", "receipt", name)
            assert receipt.code == 0, (at, sig, receipt.err)
        else:
            assert again.code == 0 or "closed" in again.err, (at, sig, again.err)
            assert code != 0 or again.code != 0, (at, sig, again.err)
        assert purge.code in (0, 1), (at, sig, purge.err)
        assert audit.code == 0, (at, sig, audit.err)
        assert recorded(name), (at, sig, code, again.err)


# -- member certify -------------------------------------------------------------------------
def test_member_certify_killed_is_done_or_a_rerun_finishes(team: World) -> None:
    """``member certify`` of dave's keys after his ``passwd --compromised``: signed here,
    one server transaction (the certificate, the revocation list, the succeed links), then
    the admin's witness. Killed anywhere: running it again certifies, or says there is
    nothing to certify (done); alice reads (never exit 6), rotates, dave reads again, the
    audit trail verifies."""
    w = team
    home = Path(w.envs["dave"]["CREDVAULT_PASSPHRASE_FILE"])
    steps, more = ["keep_revocations+0"], ["certify_keys+0", "keep+0"]
    for i, at in enumerate([*steps, *(more if FULL_KILLS else ())]):
        new = _passphrase(w, f"cert{i}", "dave")
        assert as_(w, "dave", "passwd", "--compromised", "--passphrase-file", str(new)).code == 0
        home.write_bytes(new.read_bytes())
        fp = as_(w, "dave", "info", "--fingerprint")
        assert fp.code == 0, fp.err
        args = ["member", "certify", "dave", "--fingerprint", fp.text.strip()]
        code = kill(w, "alice", args, at, {})
        assert code == -9, (at, code)  # each step is one certify reaches
        again, got, rotate, dave, audit = batch(
            w,
            ("alice", args, None),
            ("alice", ("get", "acme-2026/db"), None),
            ("alice", ("engagement", "rotate", "acme-2026"), None),
            ("dave", ("get", "acme-2026/db"), None),
            ("alice", ("audit", "verify"), None),
        )
        for r in (again, got, rotate, dave, audit):
            never_tampered(r)
        done = "no new keys to certify" in again.err
        assert again.code == 0 or (code != 0 and done), (at, code, again.err)
        assert code != 0 or done, (at, again.err)
        assert (got.code, got.out) == (0, SECRET + b"\n"), (at, got.err)
        assert rotate.code == 0, (at, rotate.err)
        assert (dave.code, dave.out) == (0, SECRET + b"\n"), (at, dave.err)
        assert audit.code == 0, (at, audit.err)
