"""Create / cancel operator behaviours through ``dag.test()``: retries, kill, timeouts, cancellation."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

pytestmark = pytest.mark.timeout(240)


def test_retry_reattaches_instead_of_creating_a_duplicate(
    load_test_dags, states, dashscope_conn, dashscope_emulator, batches
):
    dashscope_conn(max_retries=0)
    # the first two polls fail: try 1 and try 2 fail after the batch exists; try 3 sees it through
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=500, count=2)
    dag_run = load_test_dags.retry.test()
    assert dag_run.state == "success", states(dag_run)
    # at least one retry happened (3.3 resumes through task_state_store and meets the second fault too)
    assert dag_run.get_task_instance("create_batch").try_number >= 2
    assert dashscope_emulator.request_counts()["POST /batches"] == 1
    (batch,) = batches()
    assert batch["status"] == "completed"
    assert batch["metadata"]["idempotency_key"].startswith("airflow-")


def test_execution_timeout_cancels_the_batch(load_test_dags, states, dashscope_emulator, batches):
    dashscope_emulator.configure(time_scale=0)  # the batch never moves on its own
    dag_run = load_test_dags.execution_timeout.test()
    assert states(dag_run)["create_batch"] == "failed"
    (batch,) = batches()
    assert batch["status"] == "cancelling"
    assert dashscope_emulator.request_counts()["POST /batches/{batch_id}/cancel"] == 1


@pytest.mark.parametrize("mode", ["deferred", "in_process"])
def test_wait_timeout_cancels_the_batch(load_test_dags, states, dashscope_emulator, mode, batches):
    dashscope_emulator.configure(time_scale=0)
    dag_run = getattr(load_test_dags, f"dashscope_test_wait_timeout_{mode}").test()
    assert states(dag_run)["create_batch"] == "failed"
    (batch,) = batches()
    assert batch["status"] == "cancelling"


def test_cancel_operator_waits_until_cancelled(load_test_dags, states, dashscope_emulator, batches):
    dashscope_emulator.configure(processing_rate=0.01)
    dag_run = load_test_dags.cancel.test()
    assert dag_run.state == "success", states(dag_run)
    result = dag_run.get_task_instance("cancel_batch").xcom_pull(task_ids="cancel_batch")
    assert result["status"] == "cancelled"
    (batch,) = batches()
    assert batch["status"] == "cancelled"


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(
            "deferred",
            marks=pytest.mark.skipif(
                not AIRFLOW_V_3_1_PLUS,
                reason="Airflow 3.0's dag.test() resumes a deferred task's retry in execute_complete",
            ),
        ),
        "in_process",
    ],
)
def test_a_retry_replaces_a_failed_batch_even_when_its_create_hits_a_500(
    load_test_dags, states, dashscope_emulator, batches, dag_test_acting_on_batch, mode
):
    """Issue 11 item 3: try 2's create meets a 500, and its recovery must not find try 1's batch."""
    # every batch ends `completed` with every request failed, transiently: try 2 re-sends all of them
    dashscope_emulator.fail_requests(".*", status=500)
    dashscope_emulator.configure(time_scale=0)  # try 1's batch waits until the fault is in place

    def fault_then_finish(_: str) -> None:
        dashscope_emulator.add_fault("status", method="POST", path="/batches", count=1)
        dashscope_emulator.configure(time_scale=60)

    dag = getattr(load_test_dags, f"dashscope_test_replace_failed_{mode}")
    dag_run = dag_test_acting_on_batch(dag, fault_then_finish)
    assert states(dag_run)["create_batch"] == "failed"  # both batches failed every request
    assert dag_run.get_task_instance("create_batch").try_number == 2
    second, first = batches()  # newest first
    assert first["id"] != second["id"]
    assert first["metadata"]["idempotency_key"].endswith("-g1")
    assert second["metadata"]["idempotency_key"] == first["metadata"]["idempotency_key"][:-1] + "2"
    assert second["request_counts"]["total"] == 5
    assert dashscope_emulator.request_counts()["POST /batches"] == 3  # try 1, try 2's 500, its re-send
