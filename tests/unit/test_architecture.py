"""The import structure: no cycles anywhere, and a wire contract that stands on the standard library and
pydantic alone. Everything here reads source files only; nothing of the project is imported or run.
import-linter's contracts (pyproject.toml) run in tests/integration/test_architecture.py.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("controller", "adapters", "simulators")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imported(module: str, path: Path, modules: Collection[str]) -> set[str]:
    """Every absolute module name the file imports, wherever in the file (TYPE_CHECKING and
    function-level imports included: a cycle hidden in them is still a cycle). `from pkg import mod`
    counts as an import of pkg.mod alone when that is one of `modules`, as import-linter counts it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (explicit imports only, as import-linter counts them)."""
    sources = _sources()
    return {m: {n for n in _imported(m, p, sources) if n in sources and n != m} for m, p in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_there_is_no_import_cycle_in_the_tree() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_contract_imports_only_the_standard_library_pydantic_and_itself() -> None:
    # import-linter forbids the project's other modules; this is the allow-list for everything else.
    allowed = sys.stdlib_module_names | {"pydantic"}
    sources = _sources()
    for module, path in sources.items():
        if module != "controller.contract" and not module.startswith("controller.contract."):
            continue
        names = _imported(module, path, sources)
        foreign = {n for n in names
                   if n.split(".")[0] not in allowed and not n.startswith("controller.contract")}
        assert not foreign, f"{path} imports {sorted(foreign)}"
        assert "asyncio" not in names, f"{path}: the contract does no I/O"
