"""The example DAGs, unchanged, run green end to end: against the emulator, and against DashScope (opt-in).

Each runs with ``airflow dags test`` as a user would, from the example DAG folder, on the session's
metadata DB; the outcome is read back from the DB and from the service.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_dashscope_batch.client import NotFoundError

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
#: The examples on ``batch-test-model`` (free); the sharded example's qwen-plus requests are billed.
FREE_EXAMPLES = [
    "example_dashscope_batch",
    "example_dashscope_batch_sensor",
    "example_dashscope_batch_mapped",
]

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def migrated_db() -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], check=True, capture_output=True, timeout=240)


def _dags_test(dag_id: str, results: Path) -> str:
    """Run one example with ``airflow dags test``; returns its DAG run's state from the metadata DB."""
    env = {**os.environ, "DASHSCOPE_RESULTS_DESTINATION": results.as_uri()}
    if not AIRFLOW_V_3_1_PLUS:
        # Airflow 3.0's ``dags test`` keeps the DAG (and its results Asset) as first written to the DB, so
        # another destination's Asset would be inactive: write the DAGs as this environment parses them.
        subprocess.run(
            [AIRFLOW, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=300
        )
    started = time.time()
    done = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=1700, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    from airflow.models import DagRun

    runs = [r for r in DagRun.find(dag_id=dag_id) if r.start_date and r.start_date.timestamp() >= started - 1]
    assert len(runs) == 1, f"{dag_id}: expected one new run, found {len(runs)}"
    return str(runs[0].state)


@pytest.mark.parametrize("dag_id", FREE_EXAMPLES)
def test_example_green(migrated_db, service, service_client, tmp_path, dag_id):
    before = {b.id for b in service_client.list_batches()}

    state = _dags_test(dag_id, tmp_path / "results")

    created = [b for b in service_client.list_batches() if b.id not in before]
    try:
        assert state == "success"
        assert created, "the run created no batch"
        assert all(b.status == "completed" for b in created), [(b.id, b.status) for b in created]
        if dag_id != "example_dashscope_batch_mapped":  # the mapped example only summarises counts
            manifests = list((tmp_path / "results").glob("*/manifest.json"))
            assert len(manifests) == len(created)
    finally:
        for batch in created:  # the account holds 10,000 files: leave none behind
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    with contextlib.suppress(NotFoundError):
                        service_client.delete_file(file_id)


def test_sharded_example_green_on_the_emulator(migrated_db, service, tmp_path, monkeypatch):
    if service.name != "emulator":
        pytest.skip("the sharded example sends qwen-plus requests, which DashScope bills")
    monkeypatch.setenv("DASHSCOPE_SHARDED_INPUT", (tmp_path / "products.csv").as_uri())
    monkeypatch.setenv("DASHSCOPE_SHARDED_REQUESTS", "50")
    assert _dags_test("example_dashscope_batch_sharded", tmp_path / "results") == "success"
