"""The package picture of shared/ARCHITECTURE.md, checked on the source (AST, no imports):
algo imports nothing of the project; the library never imports flows; stage modules
never import each other; Prefect and MLflow only in flows/ and a2tgpo/tracking; and no
import cycle, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("a2tgpo", "flows")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {
        name: {m for m in imports(p) if m in modules and m != name} for name, p in modules.items()
    }


def test_algo_imports_nothing_of_the_project():
    for name, deps in graph().items():
        if name.startswith("a2tgpo.algo"):
            assert all(d.startswith("a2tgpo.algo") for d in deps), (name, deps)


def test_the_library_never_imports_flows():
    """The CLI (a2tgpo/cli*.py) is the entry point above both: `a2tgpo train` runs a flow."""
    for name, deps in graph().items():
        if name.startswith("a2tgpo") and not name.startswith("a2tgpo.cli"):
            assert not any(d.startswith("flows") for d in deps), (name, deps)


def test_stage_modules_never_import_each_other():
    stages = {n for n in graph() if n.startswith("a2tgpo.stages.")} - {"a2tgpo.stages.contract"}
    for name in stages:
        assert not (graph()[name] & stages), (name, graph()[name] & stages)


def test_prefect_and_mlflow_only_in_flows_and_tracking():
    for path in (ROOT / "a2tgpo").rglob("*.py"):
        if "tracking" in path.parts or path.name.startswith("cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(n.split(".")[0] in ("prefect", "mlflow") for n in names), path


def test_no_import_cycles():
    deps = graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(deps.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(deps):
        if start not in state:
            visit(start, [start])
