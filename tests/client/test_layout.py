"""The client's module layout: no import circle, no Airflow, modules a reader can take in at once."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_provider_dashscope_batch.client as client_package

PACKAGE = "airflow_provider_dashscope_batch"
CLIENT = Path(client_package.__file__).parent
#: Longest client module; a longer one must say why in its docstring.
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(CLIENT.parent).with_suffix("").parts
    return ".".join([PACKAGE, *parts]).removesuffix(".__init__")


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


def _client_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(CLIENT.rglob("*.py"))}


def test_client_modules_import_no_circle():
    modules = _client_modules()
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()
    }
    # a package's __init__ re-exports its modules; importing one of its modules does not run it again
    graph = {name: {m for m in deps if not name.startswith(f"{m}.")} for name, deps in graph.items()}
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


def test_client_modules_import_no_airflow():
    for name, path in _client_modules().items():
        airflow = sorted(m for m in _imports(path) if m == "airflow" or m.startswith("airflow."))
        assert airflow == [], f"{name} imports {airflow}"


def test_client_modules_are_short_or_say_why():
    for name, path in _client_modules().items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert lines <= MAX_LINES or "lines" in docstring, f"{name} has {lines} lines"


def test_the_former_shared_module_still_imports():
    """``client.shared`` was documented in earlier releases; triggers outside the package may use it."""
    from airflow_provider_dashscope_batch.client import loop_clients, shared

    assert shared.shared_async_client is loop_clients.shared_async_client
    assert shared.DEFAULT_MAX_IN_FLIGHT == loop_clients.DEFAULT_MAX_IN_FLIGHT
