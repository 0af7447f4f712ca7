"""The package's layers (docs/design.rst): no import circle, no import from a layer above, short modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import airflow_provider_dashscope_batch as package

PACKAGE = package.__name__
ROOT = Path(package.__file__).parent
#: Longest package module; a longer one must say why in its docstring.
MAX_LINES = 600

#: Each layer, lowest first, by module prefix (the longest matching one decides); the rest is Airflow.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("", "models", "regions", "idempotency")),
    ("client", ("client",)),
    (
        "shared",
        (
            "validation",
            "line_reader",
            "bodies",
            "jsonl",
            "results",
            "result_tables",
            "input_columns",
            "cost",
            "sharding",
            "sharding.split",
            "jobs",
            "transfers.streaming",
            "transfers.staging",
            "transfers.publishing",
            "transfers.manifest",
        ),
    ),
    ("wait", ("waiting", "sharding.job")),
    # the emulator stands beside the wait and Airflow layers: it imports neither, nothing imports it
    ("emulator", ("emulator",)),
    ("airflow", ("sharding.trigger",)),
)
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
RANK["emulator"] = RANK["wait"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports at run time (in functions too, not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (not its own parent packages, which ran already)."""
    graph = {
        name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()
    }
    return {name: {m for m in deps if not name.startswith(f"{m}.")} for name, deps in graph.items()}


def layer_of(name: str) -> str:
    relative = name.removeprefix(PACKAGE).removeprefix(".")
    best, length = "airflow", -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            matches = relative == prefix or (prefix and relative.startswith(f"{prefix}."))
            if matches and len(prefix) > length:
                best, length = layer, len(prefix)
    return best


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("", "base"),
        ("client._core", "client"),
        ("cost.budget", "shared"),
        ("sharding.split", "shared"),
        ("sharding.job", "wait"),
        ("sharding.trigger", "airflow"),
        ("transfers.results_to_object_storage", "airflow"),
        ("emulator.answers", "emulator"),
        ("operators.shard_staging", "airflow"),
        ("common_ai.request_lines", "airflow"),
    ],
)
def test_the_layer_of_a_module(module, layer):
    assert layer_of(f"{PACKAGE}.{module}".removesuffix(".")) == layer


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for name, deps in _graph().items():
        mine = layer_of(name)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                upward.append(f"{name} ({mine}) imports {dep} ({theirs})")
    assert upward == []


def test_package_modules_import_no_circle():
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


#: How a module docstring states why the module is long, e.g. "It runs over 600 lines because ...".
LONG_BECAUSE = re.compile(r"\b(?:over|more than) \d+ lines because\b")


def test_package_modules_are_short_or_say_why():
    long = []
    for name, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and not LONG_BECAUSE.search(docstring):
            long.append(f"{name} ({lines} lines)")
    assert long == []


def test_only_the_airflow_layer_imports_airflow():
    below = []
    for name, path in MODULES.items():
        if layer_of(name) != "airflow":
            airflow = sorted(m for m in _imports(path) if m == "airflow" or m.startswith("airflow."))
            if airflow:
                below.append(f"{name} ({layer_of(name)}) imports {airflow}")
    assert below == []
