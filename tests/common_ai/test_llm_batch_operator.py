"""
common.ai's ``LLMBatchOperator`` with ``model_id="dashscope:qwen-plus"`` under real ``dag.test()``.

The DAGs (``dag_files/llm_batch_dags.py``) are common.ai's own example, unmodified but for the model
and the connection; the operator finds the adapter through the entry point, defers, and its trigger
polls the emulator.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import types
import uuid
from pathlib import Path

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from airflow.providers.common.compat.sdk import ObjectStoragePath

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("qwen_conn", "fast_trigger_clock")]

DAG_FILES = Path(__file__).resolve().parent / "dag_files"


@pytest.fixture
def dags(airflow_db, monkeypatch, tmp_path):
    """The DAG file, imported afresh with results under ``tmp_path``; Airflow's DAG folder is its folder."""
    from airflow import settings

    monkeypatch.setenv("QWEN_LLM_BATCH_RESULT_ROOT", tmp_path.as_uri())
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(DAG_FILES))
    spec = importlib.util.spec_from_file_location(
        f"llm_batch_dags_{uuid.uuid4().hex}", DAG_FILES / "llm_batch_dags.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # pydantic resolves the models' annotations there
    spec.loader.exec_module(module)
    return module


def rows_in(folder: Path) -> list[dict]:
    (results,) = folder.glob("*.jsonl")
    return sorted((json.loads(line) for line in results.read_text().splitlines()), key=lambda r: r["index"])


@pytest.mark.parametrize("conn_type", ["pydanticai", "dashscope"])
def test_structured_batch_lands_results_and_manifest(
    dags, tmp_path, dashscope_emulator, client, qwen_conn, conn_type
):
    qwen_conn(conn_type=conn_type)
    dag_run = dags.operator.test()
    assert dag_run.state == "success"
    manifest = dag_run.get_task_instance("classify_reviews").xcom_pull(task_ids="classify_reviews")
    (batch,) = client.list_batches()
    assert batch.status == "completed"
    key16 = manifest["custom_id_prefix"]
    assert manifest == {
        "schema_version": 1,
        "batch_id": batch.id,
        "adapter": "dashscope",
        "llm_conn_id": "qwen",
        "model_id": "dashscope:qwen-plus",
        "output_type_ref": f"{dags.__name__}.Sentiment",
        "structured": True,
        "result_uri": str(ObjectStoragePath(f"{tmp_path.as_uri()}/classify") / f"{key16}.jsonl"),
        "request_count": 3,
        "counts": {
            "succeeded": 3,
            "errored": 0,
            "invalid_output": 0,
            "expired": 0,
            "cancelled": 0,
            "missing": 0,
        },
        "duplicate_result_count": 0,
        "out_of_range_result_count": 0,
        "ordered": False,
        "rejoin_key": "index",
        "custom_id_prefix": key16,
        "terminal_reason": "succeeded",
        "submitted_at": manifest["submitted_at"],
        "completed_at": manifest["completed_at"],
    }
    rows = rows_in(tmp_path / "classify")
    assert [row["index"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert row["status"] == "success"
        assert row["custom_id"] == f"{key16}-{row['index']}"
        dags.Sentiment.model_validate(row["output"])
        assert (row["model"], row["finish_reason"], row["error"]) == ("qwen-plus", "stop", None)
    summary = dag_run.get_task_instance("summarize_manifest").xcom_pull(task_ids="summarize_manifest")
    assert summary == {"positive": 3}
    assert batch.metadata["idempotency_key"] == key16
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_validation_failure_fails_before_anything_is_sent(dags, dashscope_emulator):
    dag_run = dags.two_models.test()
    assert dag_run.get_task_instance("classify_reviews").state == "failed"
    counts = dashscope_emulator.request_counts()
    assert not counts.get("POST /files")
    assert not counts.get("POST /batches")


@pytest.mark.parametrize("dag_name", ["operator", "strict"])
def test_partial_failure(dags, tmp_path, dashscope_emulator, dag_name):
    dashscope_emulator.fail_requests(r"-1$")
    dag_run = getattr(dags, dag_name).test()
    ti = dag_run.get_task_instance("classify_reviews")
    rows = rows_in(tmp_path / "classify")
    assert [row["status"] for row in rows] == ["success", "error", "success"]
    assert rows[1]["error"]["provider_code"] == "InvalidParameter"
    assert rows[1]["error"]["stage"] == "provider"
    if dag_name == "strict":  # fail_on_partial_error=True
        assert ti.state == "failed"
        return
    assert ti.state == "success"
    manifest = ti.xcom_pull(task_ids="classify_reviews")
    assert (manifest["counts"]["succeeded"], manifest["counts"]["errored"]) == (2, 1)
    assert manifest["terminal_reason"] == "partial"


def test_cancelled_batch_lands_what_finished_and_clears_the_state(dags, tmp_path, dashscope_emulator, client):
    dashscope_emulator.configure(processing_rate=2.0)  # two requests a second: time to cancel midway

    def cancel_midway() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batches = list(client.list_batches())
            counts = batches[0].request_counts if batches else None
            if counts is not None and counts.completed >= 1:
                client.cancel_batch(batches[0].id)
                return
            time.sleep(0.1)

    canceller = threading.Thread(target=cancel_midway, daemon=True)
    canceller.start()
    try:
        dag_run = dags.long.test()
    finally:
        canceller.join()
    assert dag_run.get_task_instance("classify_reviews").state == "failed"
    (batch,) = client.list_batches()
    assert batch.status == "cancelled"
    done = batch.request_counts.completed
    assert 1 <= done < 20
    statuses = [row["status"] for row in rows_in(tmp_path / "classify")]
    assert statuses.count("success") == done
    assert statuses.count("missing") == 20 - done  # the manifest counts these as cancelled
    # the state is cleared, so a retry submits a new batch instead of re-landing the cancelled one
    assert not list((tmp_path / "classify" / "_airflow_batch_state").glob("*.json"))


def test_a_batch_the_service_fails_fails_the_task_and_clears_the_state(
    dags, tmp_path, dashscope_emulator, client
):
    dashscope_emulator.set_clock(time_scale=0)  # the batch stays in validating until the input is gone

    def delete_the_input() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (batches := list(client.list_batches())):
            time.sleep(0.1)
        client.delete_file(batches[0].input_file_id)
        dashscope_emulator.advance(60)

    deleter = threading.Thread(target=delete_the_input, daemon=True)
    deleter.start()
    try:
        dag_run = dags.operator.test()
    finally:
        deleter.join()
    assert dag_run.get_task_instance("classify_reviews").state == "failed"
    (batch,) = client.list_batches()
    assert batch.status == "failed"
    # nothing ran and nothing was billed: the state is cleared so a retry submits afresh
    assert not list((tmp_path / "classify" / "_airflow_batch_state").glob("*.json"))


def test_rounds_in_the_worker_land_each_request_once(dags, tmp_path, dashscope_emulator, client, qwen_conn):
    """The host's ``resubmit_rounds=1``: a throttled request is sent again, the table holds it once."""
    from airflow.providers.common.ai.operators import llm_batch

    from tests.operators.operator_helpers import check_billed_once

    real_sleep = time.sleep
    fast = types.SimpleNamespace(sleep=lambda seconds: real_sleep(min(seconds, 0.05)), time=time.time)
    qwen_conn(host=f"{dashscope_emulator.base_url}?resubmit_rounds=1")
    dashscope_emulator.fail_requests(r"-1$", status=429, attempts=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llm_batch, "time", fast)  # the worker's poll sleeps poll_interval (>= 30 s)
        dag_run = dags.in_the_worker.test()
    ti = dag_run.get_task_instance("classify_reviews")
    assert ti.state == "success"
    manifest = ti.xcom_pull(task_ids="classify_reviews")
    (first,) = [b for b in client.list_batches() if b.id == manifest["batch_id"]]
    (second,) = [b for b in client.list_batches() if b.id != first.id]
    assert (first.request_counts.failed, second.request_counts.total) == (1, 1)
    rows = rows_in(tmp_path / "classify")
    assert [(row["index"], row["status"]) for row in rows] == [(0, "success"), (1, "success"), (2, "success")]
    assert (manifest["counts"]["succeeded"], manifest["counts"]["errored"]) == (3, 0)
    assert len(check_billed_once(client, [first.id, second.id])) == 3
