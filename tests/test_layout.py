"""The module map: no import cycles (counting imports inside functions too), no private names of the libraries
digitnet builds on, and functions short enough to read on one screen."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "digitnet"
LIBRARIES = (
    "hydra",
    "omegaconf",
    "lightning",
    "pytorch_lightning",
    "joblib",
    "starlette",
    "fastapi",
    "torchmetrics",
    "optuna",
    "ray",
    "submitit",
)


def modules() -> dict[str, ast.Module]:
    """digitnet's modules, and its Hydra plugin (src/hydra_plugins/digitnet_optuna)."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "hydra_plugins").rglob("*.py"))
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): ast.parse(
            p.read_text()
        )
        for p in files
    }


OWN = ("digitnet", "hydra_plugins")


def imports_of(tree: ast.Module) -> set[str]:
    """The package's own modules a module imports, at its top or inside functions (a cycle through a lazy import
    is a cycle all the same), its Hydra plugin included."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(OWN):
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])  # a module or a name
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(OWN))
    return {name for name in found if name in MODULES and not name.startswith("digitnet.conf")}


def test_no_import_cycles():
    graph = {name: imports_of(tree) - {name} for name, tree in modules().items()}
    assert "digitnet.train" not in graph["digitnet.engine.workers"]  # a worker never imports the CLI
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


def test_no_private_names_of_the_libraries():
    """An upgrade of Hydra, Lightning, joblib or Starlette must not break digitnet silently."""
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
                parts = node.module.split(".") + [a.name for a in node.names]
                assert not any(p.startswith("_") and p != "__future__" for p in parts), (name, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in LIBRARIES:
                        assert not any(p.startswith("_") for p in alias.name.split(".")), (name, alias.name)


def test_functions_fit_on_a_screen():
    long = [
        (name, node.name, node.end_lineno - node.lineno + 1)
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, long


MODULES = set(modules())
