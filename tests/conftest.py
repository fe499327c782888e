"""Shared fixtures: a temporary vault with the cheapest Argon2id the vault accepts (passed
explicitly, never through an environment switch), members, a movable clock, and a CLI runner
that runs ``python -m credvault`` as a subprocess, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from credvault import MIN_KDF, Vault

settings.register_profile(
    "dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """With ``CREDVAULT_TEST_CLAIMS`` set (scripts/test), run only the test files this
    process claims (tests/shards.py); otherwise pytest's own loop. Like pytest's loop, each
    test learns the next one, so module fixtures end when this process leaves their file."""
    claims = os.environ.get("CREDVAULT_TEST_CLAIMS")
    if not claims or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} errors during collection")
    from shards import claimed

    files: dict[str, list[pytest.Item]] = {}
    for item in session.items:
        files.setdefault(
            Path(str(item.path)).relative_to(session.config.rootpath).as_posix(), []
        ).append(item)
    mine = claimed(list(files.items()), Path(claims))
    current = next(mine, None)
    while current is not None:
        following = None
        for i, item in enumerate(current):
            if i + 1 < len(current):
                nextitem: pytest.Item | None = current[i + 1]
            else:
                following = next(mine, None)
                nextitem = following[0] if following else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        current = following
    return True


KDF = MIN_KDF
KDF_ARG = f"m={KDF.memory_kib},t={KDF.iterations},p={KDF.lanes}"
PASSWORDS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "dave": "dave-pass"}
CANARY = b"CANARY-7f3a9c-s3cr3t-\xe2\x98\x83"


class Clock:
    """A clock tests move forward; the library reads time only through it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path) -> Iterator[Path]:
    """Each test's own ``$XDG_STATE_HOME``, where members' witnesses live (issue 11): a
    vault copied from a template in one test is never measured against another's witness.
    CLI subprocesses inherit it (``cli_env``). Set apart from the test's ``monkeypatch``, so
    a test's ``monkeypatch.undo()`` keeps it (its witnesses never reach the real home,
    where the copies of ``vault_template``, one vault id, would meet)."""
    path = tmp_path / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(path))
        mp.setenv("TEST_STATE_ROOT", str(path))
        yield path


def separate_client(copy: Path) -> None:
    """From now on this test is a new client that has seen only ``copy``, one of several copies
    of one vault a test makes (a calibration run, then trials from the same template): to
    one client those copies would be forks or rollbacks of each other (the witness, issue
    11). Subprocesses started afterwards inherit it; the test's teardown restores it."""
    import secrets

    # the test's own state root; a fixture set up before the test has none yet
    root = os.environ.get("TEST_STATE_ROOT") or str(copy.parent)
    os.environ["XDG_STATE_HOME"] = str(Path(root) / f"client-{secrets.token_hex(6)}")


@dataclass
class VaultFixture:
    path: Path
    clock: Clock
    recovery_key: str

    def open(self, member: str = "alice", passphrase: str | None = None) -> Vault:
        return Vault.open(
            self.path, member, passphrase or PASSWORDS[member], kdf=KDF, clock=self.clock
        )


@pytest.fixture(scope="session")
def vault_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The vault of ``vault``, built once per test process (~0.12 s of CPU: Argon2id, key
    pairs, a new SQLCipher database) and copied into each test: the vault directory and
    alice's witness (``state/``), as a build in the test would leave them. Its times are
    those of the build, minutes before a test at most. Returns the directory and the
    recovery key."""
    root = tmp_path_factory.mktemp("vault-template")
    path = root / "vault"
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(root / "state")  # alice's witness, copied with it
    try:
        clock = Clock()
        res = Vault.init(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock)
        assert res.recovery_key is not None
        with Vault.open(path, "alice", PASSWORDS["alice"], kdf=KDF, clock=clock) as v:
            for name in ("bob", "carol"):
                v.members.add(name, passphrase=PASSWORDS[name].encode())
    finally:
        if before is None:
            del os.environ["XDG_STATE_HOME"]
        else:
            os.environ["XDG_STATE_HOME"] = before
    return root, res.recovery_key


@pytest.fixture
def vault(
    tmp_path: Path, clock: Clock, state_home: Path, vault_template: tuple[Path, str]
) -> VaultFixture:
    """A vault with admin alice and members bob and carol (not admins): a copy of
    ``vault_template`` (every test gets the same vault id, keys and passphrases)."""
    root, recovery_key = vault_template
    path = tmp_path / "vault"
    shutil.copytree(root / "vault", path)
    shutil.copytree(root / "state", state_home, dirs_exist_ok=True)
    return VaultFixture(path, clock, recovery_key)


@pytest.fixture
def engagement(vault: VaultFixture) -> str:
    """``acme-2026`` led by alice, bob engineer, carol reader, one system and one credential."""
    with vault.open() as v:
        v.engagements.create("acme-2026", "acme")
        v.engagements.grant("acme-2026", "bob", "engineer")
        v.engagements.grant("acme-2026", "carol", "reader")
        v.systems.add("acme-2026/web1", "10.0.0.1", port=22, protocol="ssh", details="debian")
        v.credentials.put("acme-2026/web1-root", b"hunter2", username="root", system="web1")
    return "acme-2026"


@dataclass
class CliResult:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", errors="replace")


CliRunner = Callable[..., CliResult]


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A private ``$XDG_RUNTIME_DIR`` (short: a Unix socket path has ~107 bytes), so an agent
    started by a test is that test's alone; any agent left in it is ended afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cv-run-", dir="/tmp"))
    try:
        yield path
    finally:
        _end_agent(path)
        shutil.rmtree(path, ignore_errors=True)


def _end_agent(runtime: Path) -> None:
    sock = runtime / "credvault" / "agent.sock"
    if not sock.exists():
        return
    from credvault.agent import client

    reply = client.status(sock)
    if reply is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(reply["pid"]), signal.SIGKILL)


@pytest.fixture
def cli_env(tmp_path: Path, runtime_dir: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: an isolated HOME and runtime directory (so no agent
    but the test's own), no keyring, passphrase files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(
        XDG_RUNTIME_DIR=str(runtime_dir),
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        CREDVAULT_VAULT=str(tmp_path / "clivault"),
        CREDVAULT_MEMBER="alice",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    for name, pw in PASSWORDS.items():
        f = tmp_path / f"{name}.pass"
        f.write_text(pw + "\n")
        f.chmod(0o600)
        env[f"TEST_PASS_{name.upper()}"] = str(f)
    env["CREDVAULT_PASSPHRASE_FILE"] = env["TEST_PASS_ALICE"]
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]) -> CliRunner:
    def run(
        *args: str,
        input: bytes | None = b"",
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> CliResult:
        e = dict(cli_env)
        if env:
            e.update(env)
        p = subprocess.run(
            [sys.executable, "-m", "credvault", *args],
            input=input,
            capture_output=True,
            env=e,
            timeout=timeout,
            start_new_session=True,  # no controlling terminal: never prompts
        )
        return CliResult(p.returncode, p.stdout, p.stderr.decode("utf-8", errors="replace"))

    return run


@pytest.fixture(scope="session")
def cli_vault_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vault of ``cli_vault``, built once with the CLI (three processes) and copied into
    each test: the same files a per-test build would make, at a third of the cost."""
    root = tmp_path_factory.mktemp("cli-template")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDVAULT_")}
    home = root / "home"
    home.mkdir()
    bob = root / "bob.pass"
    bob.write_text(PASSWORDS["bob"] + "\n")
    alice = root / "alice.pass"
    alice.write_text(PASSWORDS["alice"] + "\n")
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_STATE_HOME=str(home / "state"),
        CREDVAULT_VAULT=str(root / "clivault"),
        CREDVAULT_MEMBER="alice",
        CREDVAULT_PASSPHRASE_FILE=str(alice),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    for args in (
        ("init", "--kdf", KDF_ARG, "--recovery-file", str(root / "clivault.recovery")),
        ("member", "add", "bob", "--passphrase-file", str(bob), "--kdf", KDF_ARG),
        ("engagement", "new", "acme-2026", "--client", "acme"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "credvault", *args],
            capture_output=True,
            env=env,
            timeout=120,
            start_new_session=True,
            check=False,
        )
        assert p.returncode == 0, p.stderr.decode()
    return root


@pytest.fixture
def cli_vault(cli: CliRunner, cli_env: dict[str, str], cli_vault_template: Path) -> CliRunner:
    """A CLI vault with admin alice, member bob, engagement acme-2026 (alice lead)."""
    target = Path(cli_env["CREDVAULT_VAULT"])
    shutil.copytree(cli_vault_template / "clivault", target)
    shutil.copy2(cli_vault_template / "clivault.recovery", f"{target}.recovery")
    return cli


# -- faketime -----------------------------------------------------------------------------------
def _libfaketime() -> str | None:
    lib = Path("/usr/lib")
    found = sorted(lib.glob("*/faketime/libfaketime.so.1")) + sorted(
        lib.glob("faketime/libfaketime.so.1")
    )
    return str(found[0]) if found else None


@pytest.fixture(scope="session")
def faketime() -> str:
    """The libfaketime library to preload; installs Debian's package when root and missing."""
    if (shutil.which("faketime") is None or _libfaketime() is None) and os.geteuid() == 0:
        cmd = ["apt-get", "install", "-y", "-q", "faketime"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(cmd, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(cmd, capture_output=True, env=env, check=False)
    lib = _libfaketime()
    if lib is None:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    # It must move Python's datetime.now(UTC), which is the only clock credvault reads.
    probe = subprocess.run(
        [sys.executable, "-c", "from datetime import UTC, datetime; print(datetime.now(UTC))"],
        capture_output=True,
        text=True,
        env={**os.environ, **offset_env(lib, 8)},
        check=True,
    )
    shifted = datetime.fromisoformat(probe.stdout.strip())
    delta = shifted - datetime.now(UTC)
    assert timedelta(days=7, hours=23) < delta < timedelta(days=8, hours=1), delta
    return lib


def offset_env(lib: str, days: float) -> dict[str, str]:
    return {
        "LD_PRELOAD": lib,
        "FAKETIME": f"+{days}d",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def copy_fixture_vault(fixture: Path, target: Path) -> Path:
    """A fixture vault directory copied to ``target`` with the modes a vault has (0700
    directory, 0600 files), as a vault made by a previous release is found on disk."""
    shutil.copytree(fixture, target)
    target.chmod(0o700)
    for f in target.iterdir():
        f.chmod(0o600)
    return target


@pytest.fixture(scope="module")
def service_env() -> Iterator[dict[str, str]]:
    """A real Secret Service (gnome-keyring on a private D-Bus) for one module's tests:
    the environment that reaches it (tests/keyring_daemon.py)."""
    from keyring_daemon import missing_binaries, secret_service

    missing = missing_binaries()
    if missing:
        if os.geteuid() == 0:
            pytest.fail(f"missing {', '.join(missing)} although root: run .ci/system-deps.sh")
        pytest.skip(f"missing {', '.join(missing)} and not root")
    with secret_service() as env:
        yield env
