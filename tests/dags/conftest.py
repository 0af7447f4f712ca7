"""Fixtures for running DAGs with ``dag.test()`` on the session's SQLite metadata DB against the emulator."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

import pytest

from tests.dags.dag_helpers import EXAMPLE_DAGS, TEST_DAGS, load_dag_file


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throw-away SQLite metadata DB of this session (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )


@pytest.fixture
def dashscope_conn(dashscope_conn, monkeypatch, tmp_path) -> Callable[..., None]:
    """The emulator connection, plus fast polling and a per-test results folder for the examples."""
    monkeypatch.setenv("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("DASHSCOPE_RESULTS_DESTINATION", (tmp_path / "results").as_uri())
    return dashscope_conn


@pytest.fixture
def load_example(airflow_db, dashscope_conn) -> Callable[[str], ModuleType]:
    """Import an example DAG file afresh (it reads its environment at parse time)."""

    def load(name: str) -> ModuleType:
        return load_dag_file(name, EXAMPLE_DAGS / f"{name}.py")

    return load


@pytest.fixture
def load_test_dags(airflow_db, dashscope_conn, monkeypatch) -> ModuleType:
    """The behaviour DAGs of ``dag_files/``; Airflow's DAG folder points there so dag.test() finds them."""
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    return load_dag_file("dag_behaviours", TEST_DAGS / "dag_behaviours.py")


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


@pytest.fixture
def batches(client) -> Callable[[], list[dict]]:
    """Every batch on the emulator, as JSON dicts (newest first)."""

    def list_all() -> list[dict]:
        return [b.model_dump(mode="json") for b in client.list_batches()]

    return list_all


@pytest.fixture
def dag_test_acting_on_batch(batches) -> Callable[..., object]:
    """
    ``dag.test()`` while another thread acts on the emulator's only batch (what a user or the clock
    would do) as soon as the DAG has created it: a fixed delay would race a slow machine.
    """

    def run(dag, action: Callable[[str], object]):
        def wait_then_act() -> None:
            deadline = time.monotonic() + 120
            while not batches() and time.monotonic() < deadline:
                time.sleep(0.1)
            (batch,) = batches()
            action(batch["id"])

        thread = threading.Thread(target=wait_then_act, daemon=True)
        thread.start()
        try:
            return dag.test()
        finally:
            thread.join()

    return run
