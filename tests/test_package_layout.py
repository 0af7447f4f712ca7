"""The package's layers (docs/design.rst): no import circle, imports point down, the client owns the wire."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import airflow_provider_dashscope_batch as package

PACKAGE = package.__name__
ROOT = Path(package.__file__).parent

#: The layers, lowest first, by package (the longest matching prefix decides). A module imports only from
#: its own package or from a lower layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("", "regions")),
    ("client", ("client",)),
    ("results", ("catalog", "results")),
    ("validation", ("validation",)),
    ("cost", ("cost",)),
    ("jobs", ("jobs",)),
    ("waiting", ("waiting",)),
    ("sharding", ("sharding",)),
    ("hooks", ("hooks", "fs")),
    ("events", ("events",)),
    ("triggers", ("triggers",)),
    ("operators", ("operators",)),
    ("common_ai", ("common_ai",)),  # the adapter's rounds are the operators' JobRounds
    ("top", ("sensors", "transfers", "ui", "get_provider_info")),
)
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
#: Layers whose modules never import Airflow (``base``: the package root and what provider discovery reads).
PURE = {"base", "client", "results", "validation", "cost", "jobs", "waiting", "sharding"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path, *, type_checking: bool) -> set[str]:
    """What ``path`` imports: statements, ``import_module("...")`` calls, ``TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (not its own parent packages, which ran already)."""
    graph = {
        name: {m for m in _imports(path, type_checking=True) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    return {name: {m for m in deps if not name.startswith(f"{m}.")} for name, deps in graph.items()}


def _package_of(name: str) -> str:
    relative = name.removeprefix(PACKAGE).removeprefix(".")
    return relative.partition(".")[0] if "." in relative else ("" if name == PACKAGE else relative)


def layer_of(name: str) -> str:
    top = _package_of(name)
    for layer, packages in LAYERS:
        if top in packages:
            return layer
    raise AssertionError(f"{name} is in no layer: add its package to LAYERS")


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("", "base"),
        ("regions", "base"),
        ("client._core", "client"),
        ("client.types", "client"),
        ("cost.budget", "cost"),
        ("validation.rules", "validation"),
        ("results.tables", "results"),
        ("sharding.split", "sharding"),
        ("waiting.reader", "waiting"),
        ("triggers.sharded", "triggers"),
        ("operators.shards", "operators"),
        ("transfers.results_to_object_storage", "top"),
        ("common_ai.request_lines", "common_ai"),
    ],
)
def test_the_layer_of_a_module(module, layer):
    assert layer_of(f"{PACKAGE}.{module}".removesuffix(".")) == layer


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_every_import_points_down_or_stays_in_its_package():
    wrong = []
    for name, deps in _graph().items():
        for dep in sorted(deps):
            if _package_of(dep) == _package_of(name):
                continue
            if RANK[layer_of(dep)] >= RANK[layer_of(name)]:
                wrong.append(f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})")
    assert wrong == []


def test_package_modules_import_no_circle_not_even_for_type_checking():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*trail[trail.index(dep) :], dep] if dep in trail else [name, dep])
            elif dep not in state:
                walk(dep, [*trail, dep])
        state[name] = 2

    for name in graph:
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_no_private_client_module_is_imported_outside_the_client():
    private = []
    for name, path in MODULES.items():
        if layer_of(name) == "client":
            continue
        for dep in _imports(path, type_checking=True):
            if dep.startswith(f"{PACKAGE}.client.") and any(
                part.startswith("_") for part in dep.removeprefix(f"{PACKAGE}.client.").split(".")
            ):
                private.append(f"{name} imports {dep}")
    assert private == []


def test_only_the_airflow_layers_import_airflow():
    below = []
    for name, path in MODULES.items():
        if layer_of(name) in PURE:
            airflow = sorted(
                m for m in _imports(path, type_checking=False) if m == "airflow" or m.startswith("airflow.")
            )
            if airflow:
                below.append(f"{name} ({layer_of(name)}) imports {airflow}")
    assert below == []
