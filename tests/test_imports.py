"""The package's import graph, read with :mod:`ast` (nothing is imported): no module
imports itself through others (a cycle), top-level and function-level imports alike, and
the evidence builders (``retrieval/``, installed as ``lm_eval_radsafe.retrieval``) never
reach into the command line (``lm_eval_radsafe.cli``, ``lm_eval_radsafe.demo``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package name it installs as (setup.cfg ``package_dir``)
SOURCES = {
    ROOT / "lm_eval_radsafe": "lm_eval_radsafe",
    ROOT / "retrieval": "lm_eval_radsafe.retrieval",
    ROOT / "tasks": "lm_eval_radsafe.tasks",
}
COMMAND_LINE = ("lm_eval_radsafe.cli", "lm_eval_radsafe.demo")


def package_modules() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the package."""
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name ``from <...> import`` refers to in ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (module level, inside
    functions, under ``if``/``try``); ``from a import b`` counts ``a.b`` when that is a
    module, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            # `import a.b.c` imports a, a.b and a.b.c: count the deepest package module
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    modules = package_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None when it has none
    (iterative depth-first search; nodes visited in sorted order, so the answer is stable)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),  # a diamond is no cycle
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}, "x": set()}, ["b", "c", "b"]),
        ({"a": {"a"}}, ["a", "a"]),
        ({"a": set(), "b": {"c"}, "c": {"d"}, "d": {"b"}}, ["b", "c", "d", "b"]),
    ],
)
def test_find_cycle_on_synthetic_graphs(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_imports_of_reads_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\nfrom . import sibling\n\ndef f():\n    from pkg.other import thing\n    import pkg.deep.leaf\n",
        encoding="utf-8",
    )
    known = {"pkg", "pkg.mod", "pkg.sibling", "pkg.other", "pkg.deep", "pkg.deep.leaf"}
    assert imports_of("pkg.mod", source, known) == {"pkg.sibling", "pkg.other", "pkg.deep.leaf"}


def test_the_graph_covers_every_stage() -> None:
    graph = import_graph()
    assert {"lm_eval_radsafe.cli", "lm_eval_radsafe.retrieval.agentic", "lm_eval_radsafe.analysis.report"} <= set(graph)
    assert "lm_eval_radsafe.assets" in graph["lm_eval_radsafe.retrieval.agentic"]  # function-level import seen


def test_no_import_cycle_between_modules_of_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_evidence_code_does_not_import_the_command_line() -> None:
    graph = import_graph()
    offenders = {
        module: sorted(target for target in targets if target.startswith(COMMAND_LINE))
        for module, targets in graph.items()
        if module.startswith("lm_eval_radsafe.retrieval")
    }
    assert not {m: t for m, t in offenders.items() if t}, offenders
