"""What every DashScope operator shares: its hook lives for one run, so a task that ran can be copied."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred
from shard_helpers import FAST, TaskInstance, drive, shard_bodies

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from tests.operators.operator_helpers import TaskInstanceStub

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"


class ResumableTaskInstance(TaskInstanceStub):
    """The stand-in with the XCom reads a resume makes."""

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int | None = None) -> object:
        return self.xcoms.get(key)


def sharded() -> DashScopeShardedBatchOperator:
    return DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(250), max_requests_per_shard=100, **FAST
    )


def test_a_sharded_operator_that_failed_keeps_no_client_and_its_copy_runs_again(
    dashscope_conn, dashscope_emulator
):
    """Airflow 3.0's dag.test() deep-copies the DAG of a task that already ran (a re-run in one process)."""
    operator = sharded()
    dashscope_emulator.fail_requests(r"^r1\d\d$")  # every request of the second shard
    with pytest.raises(AirflowException, match="shard"):
        drive(operator, {"ti": TaskInstance()})
    assert "hook" not in operator.__dict__

    dashscope_emulator.fail_requests(None)
    again = copy.deepcopy(operator)
    result, _ = drive(again, {"ti": TaskInstance()})
    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    assert "hook" not in again.__dict__
    copy.deepcopy(again)


def test_a_create_operator_keeps_no_client_after_a_wait_in_the_worker(dashscope_conn, client):
    file_id = client.upload_file(REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        deferrable=False,
        **FAST,
    )
    assert operator.execute({"ti": TaskInstanceStub()})["status"] == "completed"
    assert "hook" not in operator.__dict__
    copy.deepcopy(operator)


def test_a_create_operator_keeps_no_client_after_deferring_or_resuming(dashscope_conn, client):
    file_id = client.upload_file(REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        deferrable=True,
        **FAST,
    )
    context = {"ti": ResumableTaskInstance()}
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    assert "hook" not in operator.__dict__
    copy.deepcopy(operator)

    async def fire():
        return [event.payload async for event in deferred.value.trigger.run()]

    (event,) = asyncio.run(fire())
    kwargs = {**(deferred.value.kwargs or {}), "event": event}
    assert operator.resume_execution(deferred.value.method_name, kwargs, context)["status"] == "completed"
    assert "hook" not in operator.__dict__
    copy.deepcopy(operator)
