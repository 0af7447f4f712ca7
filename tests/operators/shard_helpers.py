"""What the sharded operator's tests share: a task instance stand-in, request bodies, a driver."""

from __future__ import annotations

import asyncio
import json

from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}


class TaskInstance:
    """What the operators read of the task instance: identity and XCom (the DAG tests use real ones)."""

    def __init__(self) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", "run_shards", "run-1", -1
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # what XCom keeps is JSON

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int | None = None) -> object:
        assert (task_ids, map_indexes) == (self.task_id, None)
        return self.xcoms[key]


def shard_bodies(n: int, *, duplicate_at: int | None = None) -> list[dict]:
    requests = [
        {
            "custom_id": f"r{i}",
            "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": str(i)}]},
        }
        for i in range(n)
    ]
    if duplicate_at is not None:
        requests[duplicate_at - 1]["custom_id"] = "r0"
    return requests


def drive(
    operator: DashScopeShardedBatchOperator, context: dict
) -> tuple[dict, list[DashScopeShardedBatchOperator]]:
    """Run the operator as Airflow would: execute, then the trigger in an event loop, then resume; repeat."""
    triggers = []
    try:
        return operator.execute(context), triggers
    except TaskDeferred as deferred:
        step = deferred
    while True:
        triggers.append(step.trigger)

        async def fire(trigger=step.trigger):
            return [event.payload async for event in trigger.run()]

        (event,) = asyncio.run(fire())
        try:
            return operator.resume_execution(
                step.method_name, {**(step.kwargs or {}), "event": event}, context
            ), triggers
        except TaskDeferred as deferred:
            step = deferred
