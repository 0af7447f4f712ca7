"""DashScopeCreateBatchOperator re-attachment through the list API (the path Airflow < 3.3 relies on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator, idempotency_key_for

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"


@dataclass
class TaskInstanceStub:
    """The few task-instance attributes the operator reads, without a task_state_store (as on 3.0-3.2)."""

    dag_id: str = "dag"
    task_id: str = "create_batch"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def create(file_id: str, **kwargs) -> DashScopeCreateBatchOperator:
    return DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        deferrable=False,
        poll_interval=0.05,
        max_poll_interval=0.1,
        **kwargs,
    )


def test_key_is_stable_across_tries_and_distinct_per_run_and_map_index():
    first = idempotency_key_for({"ti": TaskInstanceStub(try_number=1)})
    assert idempotency_key_for({"ti": TaskInstanceStub(try_number=2)}) == first
    assert idempotency_key_for({"ti": TaskInstanceStub(run_id="manual__2")}) != first
    assert idempotency_key_for({"ti": TaskInstanceStub(map_index=0)}) != first


def test_a_second_try_reattaches(dashscope_conn, client, dashscope_emulator):
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    first = create(file_id, wait_for_completion=False).execute({"ti": ti})
    assert ti.xcoms["batch_id"] == first["id"]
    ti.try_number = 2
    second = create(file_id).execute({"ti": ti})
    assert second["id"] == first["id"]
    assert second["status"] == "completed"
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_a_try_after_a_failed_batch_creates_a_new_one_then_reattaches_to_it(
    dashscope_conn, client, dashscope_emulator
):
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    dashscope_emulator.fail_requests(".*")
    with pytest.raises(AirflowException, match="every request failed"):
        create(file_id).execute({"ti": ti})
    dashscope_emulator.fail_requests(None)
    retried = create(file_id).execute({"ti": ti})
    assert retried["request_counts"]["completed"] == 5
    again = create(file_id).execute({"ti": ti})
    assert again["id"] == retried["id"]
    assert dashscope_emulator.request_counts()["POST /batches"] == 2
