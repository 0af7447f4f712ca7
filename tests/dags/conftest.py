"""Fixtures for running DAGs with ``dag.test()`` on the session's SQLite metadata DB against the emulator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away SQLite metadata DB of this session (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )


@pytest.fixture
def dashscope_conn(dashscope_emulator, monkeypatch, tmp_path) -> Callable[..., None]:
    """
    Point ``dashscope_default`` at the emulator and make the examples fast and local.

    Call again with extra connection fields (e.g. ``max_retries=0``).
    """

    def configure(**extra: object) -> None:
        conn = {
            "conn_type": "dashscope",
            "password": dashscope_emulator.api_key,
            "extra": {"base_url": dashscope_emulator.base_url, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))

    configure()
    monkeypatch.setenv("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("DASHSCOPE_RESULTS_DESTINATION", (tmp_path / "results").as_uri())
    return configure


@pytest.fixture
def load_example(airflow_db, dashscope_conn) -> Callable[[str], ModuleType]:
    """Import an example DAG file afresh (it reads its environment at parse time)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}", EXAMPLE_DAGS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def task_states(dag_run) -> dict[str, str]:
    """``{task_id or task_id[map_index]: state}`` of a finished ``dag.test()`` run."""
    states = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
    return states


@pytest.fixture
def states() -> Callable:
    """The :func:`task_states` helper."""
    return task_states
