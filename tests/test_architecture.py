"""The package's layering, checked on the source (issue 13, point 8).

The import graph is read with :mod:`ast` from every module under ``ltxcli/``: module-level and function-level
``import`` / ``from ... import`` alike (a function-level import that closes a cycle is still a cycle: it only
moves the failure from import time to the first call), relative imports resolved, ``from pkg import sub``
counted as an edge to the submodule ``pkg.sub``. Imports under ``if TYPE_CHECKING:`` never run and are not
edges of the run-time graph; a second check counts them too, so that no two modules depend on each other even
through their annotations. Importing ``pkg.sub`` runs ``pkg/__init__.py`` too, but that
parent edge is not counted: a package importing its own submodules is the normal shape of a package, not a
cycle. The lazy public API of ``ltxcli/__init__.py`` (a name -> ``"module:attr"`` table read by PEP 562
``__getattr__``) is not an import either; instead no module of the package may reach a lazily exported name
through the package root (that would be a hidden edge back into it).
"""

from __future__ import annotations

import ast
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ltxcli"
HEAVY = ("torch", "numpy", "av", "transformers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _sources()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never executed, so no import at run time)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str, path: Path, *, typing: bool = False) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement in ``path`` that can run, at any depth (``typing``:
    those under ``if TYPE_CHECKING:`` too)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    # a package's __init__ names its public API for type checkers: re-exports, not a dependency of the package
    skip = set() if typing and not is_package else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def _owner(target: str) -> str | None:
    """The ltxcli module that ``target`` names (the deepest existing one), or None outside the package."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(*, typing: bool = False) -> dict[str, dict[str, int]]:
    """module -> {imported ltxcli module: first line}, self-edges dropped (``typing``: type-checking imports too)."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, typing=typing):
            if target.split(".")[0] != "ltxcli":
                continue
            owner = _owner(target)
            if owner is not None and owner != name:
                edges.setdefault(owner, line)
        graph[name] = edges
    return graph


GRAPH = import_graph()


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_in(component: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """One shortest cycle through the component's first module (breadth-first), closed at both ends."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def describe_cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    lines = []
    for comp in strongly_connected(graph):
        cycle = _cycle_in(comp, graph)
        hops = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)) + f" -> {cycle[-1]}"
        lines.append(f"{len(comp)} modules {comp}: e.g. {hops}")
    return lines


def test_graph_sees_function_level_and_relative_imports() -> None:
    # the parser itself: a relative function-level import and a `from pkg import submodule` both give edges
    assert "ltxcli.models" in MODULES and "ltxcli.cli" in MODULES
    assert any(t.startswith("ltxcli.") for t in GRAPH["ltxcli.cli"]), GRAPH["ltxcli.cli"]


def test_cycle_finder() -> None:
    # the checker itself, on a made-up graph: a -> b -> c -> a is one cycle, d -> a is not part of it
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert describe_cycles(graph) == ["3 modules ['a', 'b', 'c']: e.g. a (line 1) -> b (line 2) -> c (line 3) -> a"]


def test_no_import_cycles() -> None:
    cycles = describe_cycles(GRAPH)
    print("\n".join(cycles) or f"no import cycles among {len(GRAPH)} ltxcli modules")
    assert not cycles, "import cycles among ltxcli modules:\n" + "\n".join(cycles)


def test_no_cycles_through_type_annotations_either() -> None:
    # a type-only import that closes a cycle runs nothing, but it still says that two modules depend on each
    # other: the lower one names a type of the upper one (here each such place takes a Protocol or a lower module)
    cycles = describe_cycles(import_graph(typing=True))
    assert not cycles, "cycles among ltxcli modules counting TYPE_CHECKING imports:\n" + "\n".join(cycles)


def test_models_import_nothing_else_from_ltxcli() -> None:
    bad = {
        f"{mod} imports {dep} (line {line})"
        for mod, deps in GRAPH.items() if mod == "ltxcli.models" or mod.startswith("ltxcli.models.")
        for dep, line in deps.items() if not (dep == "ltxcli.models" or dep.startswith("ltxcli.models."))
    }
    assert not bad, "\n".join(sorted(bad))


def test_library_never_imports_the_cli() -> None:
    bad = [f"{mod} imports {dep} (line {line})" for mod, deps in GRAPH.items() if not _is_cli(mod)
           for dep, line in deps.items() if _is_cli(dep)]
    assert not bad, "\n".join(bad)


def _is_cli(mod: str) -> bool:
    """The command line: ``ltxcli/cli/`` and ``python -m ltxcli`` (``ltxcli/__main__.py``)."""
    return mod in ("ltxcli.cli", "ltxcli.__main__") or mod.startswith("ltxcli.cli.")


def _lazy_names() -> set[str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return set()


def test_package_modules_do_not_import_through_the_lazy_root() -> None:
    lazy = _lazy_names()
    assert {"load_pipeline", "Pipeline"} <= lazy
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (
                (node.level == 0 and node.module == "ltxcli")
                or (node.level and node.module is None and name.count(".") + (path.name == "__init__.py")
                    == node.level)
            ):
                bad += [f"{name} (line {node.lineno}): {a.name}" for a in node.names if a.name in lazy]
    assert not bad, "import these from their defining module:\n" + "\n".join(bad)


@pytest.mark.parametrize("args", [
    ["-m", "ltxcli", "--version"],
    ["-m", "ltxcli", "--help"],
    ["-m", "ltxcli", "generate", "--help"],  # the options of every generating command, declared in cli/generate.py
    ["-c", "import ltxcli; print(ltxcli.__version__, sorted(ltxcli.__all__))"],
], ids=["ltx --version", "ltx --help", "ltx generate --help", "import ltxcli"])
def test_entry_points_import_no_heavy_packages(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # -X importtime lines: "import time: self [us] | cumulative | imported package", nesting by indentation
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"{' '.join(args)} imports {heavy[:10]}"


def test_lazy_names_resolve_to_their_modules() -> None:
    import ltxcli
    from ltxcli.api import load_pipeline
    from ltxcli.pipeline import Pipeline

    assert ltxcli.load_pipeline is load_pipeline and ltxcli.Pipeline is Pipeline
    assert set(ltxcli.__all__) == _lazy_names() | {"__version__"}
    for name in ltxcli.__all__:
        assert getattr(ltxcli, name) is not None
    with pytest.raises(AttributeError):
        ltxcli.no_such_name  # noqa: B018


def test_library_modules_stay_under_700_lines() -> None:
    sizes = {mod: len(path.read_text().splitlines()) for mod, path in MODULES.items() if not _is_cli(mod)}
    big = {mod: n for mod, n in sizes.items() if n > 700}
    assert not big, f"library modules over 700 lines: {big}"


# --- the CLI is a thin layer; library modules stay readable ------------------------------------------------

# Issue 13 sets 1,800: the generating commands' flow is the library's (ltxcli.job); cli/ renders it.
CLI_MAX_LINES = 1800


def _private_uses(name: str, path: Path) -> Iterator[str]:
    """Underscore names of the library that module ``name`` imports or reads off an imported library module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    bound: dict[str, str] = {}  # local name -> library module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ltxcli" or _is_cli(target):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"line {node.lineno}: from {target} import {alias.name}"
                elif any(part.startswith("_") and not part.startswith("__") for part in sub.split(".")):
                    yield f"line {node.lineno}: {sub}"
                if sub in MODULES:
                    bound[alias.asname or alias.name] = sub
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ltxcli" and not _is_cli(alias.name):
                    if any(p.startswith("_") and not p.startswith("__") for p in alias.name.split(".")):
                        yield f"line {node.lineno}: import {alias.name}"
                    if alias.asname:
                        bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield f"line {node.lineno}: {bound[node.value.id]}.{node.attr}"


def test_cli_uses_only_the_public_library() -> None:
    # the CLI parses, calls the library and prints: it needs neither the nn.Modules nor private helpers
    bad = [f"{mod} imports {dep} (line {line})" for mod, deps in GRAPH.items() if _is_cli(mod)
           for dep, line in deps.items() if dep == "ltxcli.models" or dep.startswith("ltxcli.models.")]
    bad += [f"{mod} {use}" for mod, path in MODULES.items() if _is_cli(mod) for use in _private_uses(mod, path)]
    assert not bad, "\n".join(bad)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_cli_is_at_most_1800_lines() -> None:
    sizes = {mod: _lines(path) for mod, path in MODULES.items()
             if mod == "ltxcli.cli" or mod.startswith("ltxcli.cli.")}
    total = sum(sizes.values())
    print(f"ltxcli/cli: {total} lines", dict(sorted(sizes.items(), key=lambda kv: -kv[1])))
    assert total <= CLI_MAX_LINES, f"ltxcli/cli has {total} lines (at most {CLI_MAX_LINES}): {sizes}"


def test_library_error_kinds_name_existing_classes() -> None:
    # ltxcli.errors finds the classes by "module:class" (so asking imports nothing): a moved class must fail here
    import importlib

    from ltxcli.errors import LIBRARY_ERRORS

    for key in LIBRARY_ERRORS:
        module, _, name = key.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, Exception), key


# import name -> the distribution pyproject.toml declares for it
_DISTRIBUTION = {"PIL": "pillow", "huggingface_hub": "huggingface-hub"}
# installed by a declared dependency, which needs them itself: tokenizers by transformers (the tiny enhancer builds
# its tokenizer with it); typing_extensions only under TYPE_CHECKING
_TRANSITIVE = {"tokenizers": "transformers", "typing_extensions": "torch"}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A fresh ``pip install .`` must bring what the package imports: numpy once came only through transformers."""
    import re

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    declared = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    imported = set()
    for path in _sources().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "ltxcli"}
    undeclared = sorted(m for m in third_party
                        if _DISTRIBUTION.get(m, m).lower() not in declared and _TRANSITIVE.get(m) not in declared)
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"
