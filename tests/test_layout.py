"""The module map: no import cycles, counting imports inside functions too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitnet"


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("digitnet"):
            names = [node.module] if node.module != "digitnet" else [f"digitnet.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("digitnet."))
    return {name for name in found if name != "digitnet.conf"}


def test_no_import_cycles():
    graph = {f"digitnet.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert graph["digitnet.workers"] and "digitnet.train" not in graph["digitnet.workers"]
    state: dict[str, str] = {}

    def visit(module, trail):
        if state.get(module) == "open":
            raise AssertionError("import cycle: " + " -> ".join([*trail, module]))
        if state.get(module) == "done" or module not in graph:
            return
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
