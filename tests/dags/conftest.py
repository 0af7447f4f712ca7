"""Fixtures for running DAGs with ``dag.test()`` on the session's SQLite metadata DB against the emulator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
TEST_DAGS = Path(__file__).resolve().parent / "dag_files"


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


def _load(name: str, path: Path) -> ModuleType:
    """Import a DAG file afresh (it reads its environment at parse time) and register its DAGs."""
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _write_dags_to_db(module)
    return module


def _write_dags_to_db(module: ModuleType) -> None:
    """
    Write the module's DAGs and their assets to the metadata DB on Airflow 3.0.

    Airflow 3.0's ``dag.test()`` runs a DAG that was never written to the DB, so the task runner finds
    the transfer operator's Asset outlet inactive and fails the task; Airflow 3.1+ does this itself.
    """
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

    if AIRFLOW_V_3_1_PLUS:
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DAG as SchedulerDAG
    from airflow.serialization.serialized_objects import SerializedDAG

    DagBundlesManager().sync_bundles_to_db()
    dags = [
        SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(value))
        for value in vars(module).values()
        if isinstance(value, DAG)
    ]
    SchedulerDAG.bulk_write_to_db("dags-folder", None, dags)


@pytest.fixture
def load_example(airflow_db, dashscope_conn) -> Callable[[str], ModuleType]:
    """Import an example DAG file afresh (it reads its environment at parse time)."""

    def load(name: str) -> ModuleType:
        return _load(name, EXAMPLE_DAGS / f"{name}.py")

    return load


@pytest.fixture
def load_test_dags(airflow_db, dashscope_conn, monkeypatch) -> ModuleType:
    """The behaviour DAGs of ``dag_files/``; Airflow's DAG folder points there so dag.test() finds them."""
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    return _load("dag_behaviours", TEST_DAGS / "dag_behaviours.py")


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
