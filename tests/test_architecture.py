"""The shape of the code (issue 10), checked by parsing every module with ``ast``.

Dependencies point one way: foundation ← crypto ← records/storage ← domain ← facade ← CLI.
A module may import from its own layer or a lower one, never a higher one; there is no
import cycle anywhere; and the CLI imports only ``credvault``'s public names and its own
modules. Every import counts: at module level, inside functions, and under
``TYPE_CHECKING`` (a lazy import is still a dependency; it only hides a cycle).

The checker is a plain function over a directory, so its own tests below run it on
synthetic packages with an injected upward import and an injected cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

import credvault

SRC = Path(credvault.__file__).resolve().parent  # src/credvault

# The layer order, lowest first, as data. A module belongs to the first layer that lists it
# (a trailing ".*" lists a package's modules).
LAYERS: Sequence[tuple[str, frozenset[str]]] = (
    (
        "foundation",
        frozenset(
            {
                "credvault.errors",
                "credvault.secret",
                "credvault.files",
                "credvault.validate",
                "credvault.interrupts",  # SIGINT/SIGTERM: one line, 130/143 (issue 13)
                "credvault.jcs",
                # the agent's wire format and client: standard library only (the fast path)
                "credvault.agent",
                "credvault.agent.protocol",
                "credvault.agent.client",
            }
        ),
    ),
    ("crypto", frozenset({"credvault.crypto", "credvault.crypto.*"})),
    (
        "records and storage",
        frozenset(
            {
                "credvault.model",
                "credvault.results",
                "credvault.changes",
                "credvault.layout",
                "credvault.access",
                "credvault.retention",
                "credvault.store",
                # the PostgreSQL team backend (issue 14): storage plus the member's own crypto
                "credvault.postgres",
                "credvault.postgres.*",
                "credvault.keyslots",
                # issue 11: pure formats of the membership log and the member's witness
                "credvault.memberlog",
                "credvault.witness",
                # issue 14: a team vault's certificates and log witness (pure, no vault)
                "credvault.team_log",
                # helpers without a vault (issues 16, 17): formats, generators, external tools
                "credvault.totp",
                "credvault.generators",
                "credvault.importers",
                "credvault.clipboard",
                "credvault.kernel_keys",  # the keyring entry's wrapping key (keyctl)
            }
        ),
    ),
    (
        "domain",
        frozenset(
            {
                "credvault.session",
                "credvault.slotfile",
                "credvault.clock",
                "credvault.receipts",
                "credvault.receipt_keys",  # issue 11: the receipt key history (pure)
                "credvault.ledger",
                "credvault.integrity",
                "credvault.audit",
                "credvault.keyring_cache",
                "credvault.unlock",
                "credvault.items",
                "credvault.roster",  # issue 11: the membership logs as the vault keeps them
                "credvault.grants",
                "credvault.engagement_keys",
                "credvault.lifecycle",
                "credvault.engagements",
                "credvault.credentials",
                "credvault.systems",
                "credvault.rekey",
                "credvault.members",
                "credvault.purge",
                "credvault.backup",
                "credvault.clients",
                "credvault.audit_trail",
                "credvault.witnessing",  # issue 11: when the member's witness is checked
                "credvault.team_handle",  # what the team vault's parts need of it (a Protocol)
                "credvault.team",  # the PostgreSQL team vault behind the CLI (issue 14)
                # its lifecycle and purge, passphrase change and client export (loaded when used)
                "credvault.team_lifecycle",
                "credvault.team_passwd",
                "credvault.team_export",
                "credvault.team_upgrade",  # a schema-1 vault's members certified (TOFU)
                "credvault.team_records",  # its systems, history, trash (imported lazily)
                "credvault.team_use",  # its otp, run and ssh reads (imported lazily)
                "credvault.team_engagements",  # engagement set/members (imported lazily)
                "credvault.team_keys",  # its info, receipt-keys, passwd --compromised (lazily)
                "credvault.team_ledger",  # its purge ledger, read again after a restore
                "credvault.team_check",  # `credvault check` on it (imported lazily)
                "credvault.team_witness",  # `credvault witness accept` on it (lazily)
            }
        ),
    ),
    # _bench_seam (the benchmarks' one documented seam) and handoff (issue 17: run/ssh with
    # secrets) take an open Vault, so they sit beside the facade, not below it.
    (
        "facade",
        frozenset(
            {
                "credvault.vault",
                "credvault",
                "credvault._bench_seam",
                "credvault.handoff",
                "credvault.migrate",  # issue 14: reads an open Vault's session, table by table
            }
        ),
    ),
    ("cli", frozenset({"credvault.cli", "credvault.cli.*"})),
    # The agent runs the CLI's own commands for its clients; the console script tries the
    # agent's client before it loads the CLI.
    (
        "agent and entry point",
        frozenset(
            {
                "credvault.agent.server",
                "credvault.agent.team_entry",  # a team member's keys in the agent (issue 14)
                "credvault.launch",
                "credvault.__main__",
            }
        ),
    ),
)

# What the CLI may import besides ``credvault``'s public names and ``credvault.cli.*``.
# Each entry needs a reason; the goal is an empty table.
CLI_ALLOWED: Mapping[str, str] = {
    # Issue 17 (terminal helpers) landed after the facade: the clipboard backend, TOTP codes
    # and the run/ssh hand-off are not yet exposed by `credvault` (TODO: public names, then
    # drop these three).
    "credvault.clipboard": "copy to the clipboard (Backend, copy_and_clear)",
    "credvault.totp": "otp codes",
    "credvault.handoff": "run / ssh with secrets handed over",
    # Issue 15: unlock hands the agent the keys, lock ends it, status asks it; the client is
    # standard library only and must stay importable without the library (the fast path).
    "credvault.agent.client": "talk to the agent (unlock, lock, status)",
    # Issue 13: an interruption is printed the same way by the entry point and the CLI.
    "credvault.interrupts": "the one line and exit status of SIGINT/SIGTERM",
}


class Import(NamedTuple):
    module: str  # the importing module
    target: str  # the imported module (a package's __init__ is the package name)
    names: tuple[str, ...]  # for ``from target import a, b``; empty for ``import target``
    line: int


def module_name(root: Path, file: Path) -> str:
    parts = [root.name, *file.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    return {module_name(root, f): f for f in sorted(root.rglob("*.py"))}


def imports(root: Path) -> list[Import]:
    """Every import of every module under ``root`` that names a module of the package.

    ``from pkg import sub`` where ``sub`` is a module counts as importing ``pkg.sub``;
    ``from pkg import name`` (a name defined in ``pkg/__init__``) as importing ``pkg``.
    """
    known = modules(root)
    out: list[Import] = []
    for mod, file in known.items():
        is_pkg = file.name == "__init__.py"
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                out += [Import(mod, a.name, (), node.lineno) for a in node.names if a.name in known]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                if base not in known and not base.startswith(root.name):
                    continue
                plain: list[str] = []
                for a in node.names:
                    if f"{base}.{a.name}" in known:
                        out.append(Import(mod, f"{base}.{a.name}", (), node.lineno))
                    else:
                        plain.append(a.name)
                if plain:
                    out.append(Import(mod, base, tuple(plain), node.lineno))
    return out


def layer_of(module: str, layers: Sequence[tuple[str, frozenset[str]]]) -> int:
    for i, (_, members) in enumerate(layers):
        for pattern in members:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return i
    raise LookupError(f"{module} is in no layer: add it to LAYERS")


def upward_imports(
    found: Iterable[Import], layers: Sequence[tuple[str, frozenset[str]]]
) -> list[str]:
    """``module:line imports target`` for each import of a higher layer."""
    out = []
    for imp in found:
        here, there = layer_of(imp.module, layers), layer_of(imp.target, layers)
        if there > here:
            out.append(
                f"{imp.module}:{imp.line} ({layers[here][0]}) imports {imp.target} "
                f"({layers[there][0]})"
            )
    return out


def cycles(found: Iterable[Import]) -> list[list[str]]:
    """The import cycles (strongly connected components with more than one module, or a
    module importing itself), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.module, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1 or v in graph[v]:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cli_violations(
    found: Iterable[Import],
    public: set[str],
    allowed: Mapping[str, str],
    package: str = "credvault",
) -> list[str]:
    """Imports by the CLI of anything but the package's public names and its own modules."""
    cli = f"{package}.cli"

    def in_cli(module: str) -> bool:
        return module == cli or module.startswith(cli + ".")

    out = []
    for imp in found:
        if not in_cli(imp.module) or in_cli(imp.target):
            continue
        if imp.target in allowed:
            continue
        if imp.target == package and imp.names and set(imp.names) <= public:
            continue
        what = f"{imp.target} ({', '.join(imp.names)})" if imp.names else imp.target
        out.append(f"{imp.module}:{imp.line} imports {what}")
    return out


# -- the package itself -------------------------------------------------------------------
@pytest.fixture(scope="module")
def found() -> list[Import]:
    return imports(SRC)


def test_every_module_has_a_layer() -> None:
    for mod in modules(SRC):
        layer_of(mod, LAYERS)  # raises for a module no layer lists


def test_no_upward_imports(found: list[Import]) -> None:
    assert upward_imports(found, LAYERS) == []


def test_no_import_cycles(found: list[Import]) -> None:
    assert cycles(found) == []


def test_cli_imports_only_public_names(found: list[Import]) -> None:
    assert cli_violations(found, set(credvault.__all__), CLI_ALLOWED) == []


def test_cli_allow_list_is_not_stale(found: list[Import]) -> None:
    cli_targets = {
        i.target
        for i in found
        if i.module == "credvault.cli" or i.module.startswith("credvault.cli.")
    }
    assert set(CLI_ALLOWED) <= cli_targets


def test_nothing_below_the_facade_takes_a_vault(found: list[Import]) -> None:
    """No module under ``vault.py`` refers to ``Vault`` (directly or by importing it)."""
    facade = layer_of("credvault.vault", LAYERS)
    for mod, file in modules(SRC).items():
        if layer_of(mod, LAYERS) >= facade:
            continue
        names = {n.id for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.Name)}
        assert "Vault" not in names, mod


def test_no_private_method_called_across_modules() -> None:
    """``x._name(...)`` only for a ``_name`` the same module defines, or on ``self``/``cls``
    (NamedTuple's ``_replace``/``_asdict``/``_make`` are public API despite the underscore,
    as is ``os._exit``: the launcher ends a process the agent answered without teardown)."""
    public_underscore = {"_replace", "_asdict", "_make", "_fields", "_exit"}
    bad = []
    for mod, file in modules(SRC).items():
        tree = ast.parse(file.read_text())
        own = {
            n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("_")
                and not node.func.attr.startswith("__")
                and node.func.attr not in public_underscore | own
                and not (
                    isinstance(node.func.value, ast.Name) and node.func.value.id in {"self", "cls"}
                )
            ):
                bad.append(f"{mod}:{node.lineno} calls .{node.func.attr}()")
    assert bad == []


def test_permission_decisions_live_in_access() -> None:
    """Only access.py (the tables) and session.py (which asks them) use the role table
    directly; everyone else names an operation."""
    bad = []
    for mod, file in modules(SRC).items():
        if mod in ("credvault.access", "credvault.session", "credvault"):
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "credvault.access":
                bad += [
                    f"{mod}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name in {"Action", "allowed", "_TABLE", "_ADMIN"}
                ]
    assert bad == []


def test_settings_are_read_through_the_one_reader() -> None:
    """A stored setting is read only through retention.value (Session.setting): nobody
    calls get_meta with a setting's meta key (trash_expiry once did, with its own default)."""
    from credvault.retention import SETTINGS

    keys = {key for key, _ in SETTINGS.values()}
    bad = []
    for mod, file in modules(SRC).items():
        for node in ast.walk(ast.parse(file.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get_meta"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in keys
            ):
                bad.append(f"{mod}:{node.lineno} reads {node.args[0].value}")
    assert bad == []


# -- the checker's own tests, on synthetic packages ---------------------------------------
SYNTH_LAYERS: Sequence[tuple[str, frozenset[str]]] = (
    ("low", frozenset({"pkg.low", "pkg.util.*", "pkg.util"})),
    ("mid", frozenset({"pkg.mid", "pkg.mid2", "pkg.clients"})),
    ("high", frozenset({"pkg", "pkg.high"})),
    ("cli", frozenset({"pkg.cli", "pkg.cli.*"})),
)


def _package(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "__all__ = ['Thing']\nThing = 1\n", **files}.items():
        f = pkg / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return pkg


CLEAN = {
    "low.py": "X = 1\n",
    "util/__init__.py": "",
    "util/helpers.py": "from pkg.low import X\n",
    "mid.py": "from pkg import low\nfrom pkg.util.helpers import X\n",
    "mid2.py": "import pkg.mid\n",
    "high.py": "from pkg.mid import low\n",
    "cli/__init__.py": "from pkg import Thing\nfrom pkg.cli import parts\n",
    "cli/parts.py": "Y = 1\n",
    "clients.py": "from pkg.low import X\n",  # not part of the CLI despite its name
}


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    pkg = _package(tmp_path, CLEAN)
    found = imports(pkg)
    assert ("pkg.mid", "pkg.low") in {(i.module, i.target) for i in found}
    assert ("pkg.high", "pkg.mid") in {(i.module, i.target) for i in found}
    assert upward_imports(found, SYNTH_LAYERS) == []
    assert cycles(found) == []
    assert cli_violations(found, {"Thing"}, {}, "pkg") == []


@pytest.mark.parametrize(
    "where",
    [
        "from pkg.high import Y\n",  # module level
        "def f():\n    from pkg import high\n",  # inside a function (a lazy import)
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.high\n",
        "from .high import Y\n",  # relative
    ],
)
def test_checker_catches_an_injected_upward_import(tmp_path: Path, where: str) -> None:
    pkg = _package(tmp_path, {**CLEAN, "low.py": "X = 1\n" + where})
    found = imports(pkg)
    line = where.count("\n") + 1  # the import is the last line, after "X = 1"
    assert [v.split(" (")[0] for v in upward_imports(found, SYNTH_LAYERS)] == [f"pkg.low:{line}"]


def test_checker_catches_an_injected_cycle(tmp_path: Path) -> None:
    """Two modules of one layer importing each other, one of them lazily: allowed by the
    layer rule, caught as a cycle."""
    pkg = _package(
        tmp_path,
        {**CLEAN, "mid2.py": "import pkg.mid\n", "mid.py": "def f():\n    import pkg.mid2\n"},
    )
    found = imports(pkg)
    assert upward_imports(found, SYNTH_LAYERS) == []
    assert cycles(found) == [["pkg.mid", "pkg.mid2"]]


def test_checker_catches_a_three_module_cycle_and_a_self_import(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            **CLEAN,
            "low.py": "import pkg.util.helpers\n",
            "util/helpers.py": "from pkg.util import __name__ as n\n",
            "util/__init__.py": "from pkg import low\n",
            "mid2.py": "import pkg.mid2\n",
        },
    )
    assert cycles(imports(pkg)) == [["pkg.low", "pkg.util", "pkg.util.helpers"], ["pkg.mid2"]]


def test_checker_catches_the_cli_importing_internals(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            **CLEAN,
            "cli/parts.py": "from pkg import Thing, Secret\nfrom pkg.mid import low\n",
        },
    )
    found = imports(pkg)
    assert cli_violations(found, {"Thing"}, {}, "pkg") == [
        "pkg.cli.parts:1 imports pkg (Thing, Secret)",
        "pkg.cli.parts:2 imports pkg.mid (low)",
    ]
    assert cli_violations(found, {"Thing", "Secret"}, {"pkg.mid": "test"}, "pkg") == []


def test_a_module_in_no_layer_is_an_error(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {**CLEAN, "stray.py": ""})
    assert "pkg.stray" in modules(pkg)
    with pytest.raises(LookupError, match=r"pkg\.stray is in no layer"):
        layer_of("pkg.stray", SYNTH_LAYERS)
