"""keepassxc-cli and pykeepass peers.

Two kinds of KDBX database are built:

* "aes-kdf": what `keepassxc-cli db-create` / `import` make by default in
  KeePassXC 2.7: KDBX 3.1, AES-256, AES-KDF with 1,000,000 rounds. The CLI
  has no option for Argon2 (`--decryption-time` only raises AES-KDF rounds).
* "argon2d": what the KeePassXC desktop wizard makes by default: KDBX 4,
  AES-256, Argon2d, 64 MiB, parallelism = CPU threads, iterations benchmarked
  for a 1,000 ms target the way KeePassXC 2.7 does it (two benchmark threads
  at once, keep the lower count). Built with pykeepass, since the 2.7 CLI
  cannot choose a KDF.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

from benchmarks.peers import (
    INSTALL_HINT,
    WRITTEN_SECRET,
    Command,
    Peer,
    entry_name,
    read_index,
    secret_for,
    skip,
    which,
)

DB_PASSWORD = "peer-bench-master"  # noqa: S105 - throwaway benchmark databases
_ARGON2_MEMORY_KIB = 1 << 16
_DESKTOP_TARGET_MS = 1000

_READ_SCRIPT = """\
import sys
from pykeepass import PyKeePass
db, path = sys.argv[1], sys.argv[2]
kp = PyKeePass(db, password=sys.stdin.readline().rstrip("\\n"))
entry = kp.find_entries(path=path.split("/"), first=True)
if entry is None:
    sys.exit(f"no entry {path}")
print(entry.password)
"""

_WRITE_SCRIPT = """\
import sys
from pykeepass import PyKeePass
db, path = sys.argv[1], sys.argv[2]
password, secret = sys.stdin.read().splitlines()[:2]
kp = PyKeePass(db, password=password)
group_path, title = path.rsplit("/", 1)
group = kp.find_groups(path=group_path.split("/"), first=True)
kp.add_entry(group, title, "", secret)
kp.save()
"""


def have_pykeepass() -> bool:
    return importlib.util.find_spec("pykeepass") is not None


@functools.cache
def desktop_argon2_rounds(target_ms: int = _DESKTOP_TARGET_MS) -> int:
    """Argon2d iterations KeePassXC 2.7's new-database wizard would pick here.

    Kdf::benchmark runs two threads at once, each timing one transform at the
    default 10 rounds and scaling to target_ms; the lower result wins. With
    both threads competing for the cores, the chosen setting decrypts in
    roughly half the target on an otherwise idle machine.
    """
    from argon2.low_level import Type, hash_secret_raw

    start_rounds = 10
    lanes = os.cpu_count() or 1
    results: list[int] = []

    def bench() -> None:
        t0 = time.perf_counter()
        hash_secret_raw(
            b"\x7e" * 16, b"\x4b" * 32, start_rounds, _ARGON2_MEMORY_KIB, lanes, 32, Type.D, 0x13
        )
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        results.append(int(start_rounds * target_ms / elapsed_ms))

    threads = [threading.Thread(target=bench) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(1, min(results))


def make_argon2_db(path: Path, n: int, rounds: int) -> None:
    """An n-entry KDBX 4 / Argon2d database with desktop-style KDF settings."""
    from pykeepass import create_database
    from pykeepass.entry import Entry

    kp = create_database(str(path), password=DB_PASSWORD)
    params = kp.kdbx.header.value.dynamic_header.kdf_parameters.data.dict
    params["I"].value = rounds
    params["M"].value = _ARGON2_MEMORY_KIB * 1024
    params["P"].value = os.cpu_count() or 1
    group = kp.add_group(kp.root_group, "bench")
    for i in range(n):
        title = entry_name(i).rsplit("/", 1)[1]
        group.append(Entry(title=title, username="", password=secret_for(i), kp=kp))
    kp.save()


def entries_xml(n: int) -> str:
    """A KeePass 2 XML export holding n entries under Root/bench."""
    parts = [
        '<?xml version="1.0" encoding="utf-8" standalone="yes"?>\n<KeePassFile>'
        "<Meta><Generator>credvault-peer-bench</Generator></Meta>"
        "<Root><Group><Name>Root</Name><Group><Name>bench</Name>"
    ]
    for i in range(n):
        title = escape(entry_name(i).rsplit("/", 1)[1])
        parts.append(
            f"<Entry><String><Key>Title</Key><Value>{title}</Value></String>"
            '<String><Key>Password</Key><Value ProtectInMemory="True">'
            f"{escape(secret_for(i))}</Value></String></Entry>"
        )
    parts.append("</Group></Group></Root></KeePassFile>\n")
    return "".join(parts)


def _import_argv(xml: Path, db: Path) -> list[str]:
    return ["keepassxc-cli", "import", "-q", "-p", str(xml), str(db)]


_IMPORT_STDIN = f"{DB_PASSWORD}\n{DB_PASSWORD}\n".encode()


def make_aes_db(tmp: Path, db: Path, n: int) -> None:
    """An n-entry database made the keepassxc-cli way (import = db-create + entries)."""
    xml = tmp / f"{db.stem}.xml"
    xml.write_text(entries_xml(n))
    proc = subprocess.run(
        _import_argv(xml, db), input=_IMPORT_STDIN, capture_output=True, check=False
    )
    xml.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"keepassxc-cli import failed: {proc.stderr.decode().strip()}")


def import_command(tmp: Path, n: int) -> Command:
    """`keepassxc-cli import` of an n-entry XML; each run writes a fresh database."""
    tmp.mkdir(parents=True, exist_ok=True)
    xml = tmp / f"import-{n}.xml"
    xml.write_text(entries_xml(n))
    counter = itertools.count()
    return Command(
        lambda: _import_argv(xml, tmp / f"import-{n}-{next(counter)}.kdbx"), stdin=_IMPORT_STDIN
    )


def _timed(fn: functools.partial[None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _databases(
    tmp: Path, n: int, iterations: int | None
) -> list[tuple[str, Path, float, list[str]]]:
    """(kind, path, build seconds, notes) for each database buildable here."""
    tmp.mkdir(parents=True, exist_ok=True)
    dbs: list[tuple[str, Path, float, list[str]]] = []
    if which("keepassxc-cli") is not None:
        db = tmp / "aes-kdf.kdbx"
        secs = _timed(functools.partial(make_aes_db, tmp, db, n))
        dbs.append(("aes-kdf", db, secs, ["KDBX 3.1, AES-KDF 1e6 rounds (CLI default)"]))
    if have_pykeepass():
        rounds = iterations or desktop_argon2_rounds()
        db = tmp / "argon2d.kdbx"
        secs = _timed(functools.partial(make_argon2_db, db, n, rounds))
        how = "pinned" if iterations else "benchmarked for 1 s as KeePassXC 2.7 does"
        note = f"KDBX 4, Argon2d {rounds} it ({how}), 64 MiB, {os.cpu_count()} lanes"
        dbs.append(("argon2d", db, secs, [note]))
    return dbs


def setup_keepassxc(tmp: Path, n: int, argon2_iterations: int | None = None) -> list[Peer]:
    if which("keepassxc-cli") is None:
        skip("keepassxc-cli: install with `apt-get install keepassxc`")
        return []
    if not have_pykeepass():
        skip(
            "keepassxc-cli (argon2d): building the desktop-style database needs "
            f"pykeepass; run {INSTALL_HINT}"
        )
    i = read_index(n)
    stdin_pw = f"{DB_PASSWORD}\n".encode()
    peers = []
    for kind, db, secs, notes in _databases(tmp, n, argon2_iterations):
        counter = itertools.count()

        def show(name: str, db: Path = db) -> Command:
            argv = ["keepassxc-cli", "show", "-q", "-s", "-a", "Password", str(db), name]
            return Command(argv, stdin=stdin_pw)

        def write_argv(db: Path = db, counter: itertools.count[int] = counter) -> list[str]:
            return ["keepassxc-cli", "add", "-q", "-p", str(db), f"bench/written-{next(counter)}"]

        peers.append(
            Peer(
                name=f"keepassxc-cli ({kind})",
                show=show,
                write=Command(write_argv, stdin=stdin_pw + f"{WRITTEN_SECRET}\n".encode()),
                read_entry=entry_name(i),
                expected=secret_for(i),
                written_entry="bench/written-0",
                setup_s=secs,
                notes=notes,
            )
        )
    return peers


def setup_pykeepass(
    tmp: Path, n: int, argon2_iterations: int | None = None, *, quick: bool = False
) -> list[Peer]:
    """quick: only the Argon2d database (pure-Python AES-KDF of 1e6 rounds takes seconds
    per process, too long for a smoke run)."""
    if not have_pykeepass():
        skip(f"pykeepass: install with `pip install pykeepass` (or {INSTALL_HINT})")
        return []
    tmp.mkdir(parents=True, exist_ok=True)
    read_py, write_py = tmp / "pykeepass_read.py", tmp / "pykeepass_write.py"
    read_py.write_text(_READ_SCRIPT)
    write_py.write_text(_WRITE_SCRIPT)
    i = read_index(n)
    peers = []
    for kind, db, secs, notes in _databases(tmp, n, argon2_iterations):
        if quick and kind == "aes-kdf":
            skip("pykeepass script (aes-kdf): left out of a smoke run (seconds per process)")
            continue
        counter = itertools.count()

        def show(name: str, db: Path = db) -> Command:
            argv = [sys.executable, str(read_py), str(db), name]
            return Command(argv, stdin=f"{DB_PASSWORD}\n".encode())

        def write_argv(db: Path = db, counter: itertools.count[int] = counter) -> list[str]:
            return [sys.executable, str(write_py), str(db), f"bench/written-{next(counter)}"]

        peers.append(
            Peer(
                name=f"pykeepass script ({kind})",
                show=show,
                write=Command(write_argv, stdin=f"{DB_PASSWORD}\n{WRITTEN_SECRET}\n".encode()),
                read_entry=entry_name(i),
                expected=secret_for(i),
                written_entry="bench/written-0",
                setup_s=secs,
                notes=notes,
            )
        )
    return peers


def pykeepass_bulk_insert(
    tmp: Path,
    n: int = 10_000,
    *,
    via_add_entry: bool = False,
    argon2_iterations: int | None = None,
) -> dict[str, float]:
    """In-process: open an empty desktop-style Argon2d database, add n entries,
    save. Returns seconds per phase and in total.

    PyKeePass.add_entry runs an XPath duplicate search of the group on every
    call, even with force_creation=True (pykeepass 4.2.0), which grows worse
    than quadratically: about 1 s for 1,000 entries and 55 s for 4,000 here.
    So by default entries are built with pykeepass.Entry and appended to the
    group, which is add_entry minus that search; via_add_entry=True times the
    public call instead.
    """
    from pykeepass import PyKeePass
    from pykeepass.entry import Entry

    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / f"bulk-{n}.kdbx"
    make_argon2_db(db, 0, argon2_iterations or desktop_argon2_rounds())
    t0 = time.perf_counter()
    kp = PyKeePass(str(db), password=DB_PASSWORD)
    group = kp.find_groups(path=["bench"], first=True)
    t1 = time.perf_counter()
    for i in range(n):
        title = entry_name(i).rsplit("/", 1)[1]
        if via_add_entry:
            kp.add_entry(group, title, "", secret_for(i), force_creation=True)
        else:
            group.append(Entry(title=title, username="", password=secret_for(i), kp=kp))
    t2 = time.perf_counter()
    kp.save()
    t3 = time.perf_counter()
    return {"open": t1 - t0, "add": t2 - t1, "save": t3 - t2, "total": t3 - t0}
