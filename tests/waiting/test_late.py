"""
A create or upload the service processes after the client gave up, met by every wait path -- each alone.

The emulator's ``defer`` fault is the gateway that holds a request: the client (timeout 1 s) gives up,
finds nothing under its key during its recovery window (2 s), creates again, and the held first attempt
is processed at 3 s. Every wait below is the only wait of its connection (no companion wait shares its
list reads), and each must end with exactly one working batch, the late duplicate cancelled before it
ran, or with one stored file.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.client.types import BatchStatus
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.sensors.batch import DashScopeBatchSensor

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
ENDPOINT = "/v1/chat/ds-test"
FAST = {"poll_interval": 0.2, "max_poll_interval": 0.4}


@dataclass
class TaskInstance:
    """The task-instance attributes the operators read (identity, try number, XCom)."""

    dag_id: str = "dag"
    task_id: str = "task"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # what XCom keeps is JSON

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int | None = None) -> object:
        return self.xcoms[key]


@pytest.fixture
def late_gateway(dashscope_conn, dashscope_emulator):
    """A connection that gives up after 1 s, and batches that stay ``validating`` for 3 s."""
    dashscope_conn(timeout=1)
    dashscope_emulator.configure(validating_seconds=3)

    def hold(path: str) -> None:
        dashscope_emulator.add_fault("defer", method="POST", path=path, latency=3, count=1)

    return hold


def working(client: DashScopeClient, file_id: str | None = None) -> list[str]:
    """Ids of the batches not being (or having been) cancelled, of one input file or all."""
    return [
        b.id
        for b in client.list_batches(input_file_ids=[file_id] if file_id else None)
        if b.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    ]


def rebuild(trigger):
    """What the triggerer does: import the class path and call it with the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    assert json.loads(json.dumps(kwargs)) == kwargs
    module, name = classpath.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)


def fire(trigger) -> dict:
    async def run() -> list[dict]:
        return [event.payload async for event in rebuild(trigger).run()]

    (event,) = asyncio.run(run())
    return event


def resume(operator, deferred: TaskDeferred) -> dict:
    """Run the deferred wait as Airflow would: the trigger in an event loop, resume; repeat."""
    step = deferred
    while True:
        try:
            return getattr(operator, step.method_name)({}, fire(step.trigger))
        except TaskDeferred as again:  # a late copy was seen and removed: the task waits again
            step = again


def assert_one_batch_ran(client: DashScopeClient, kept_id: str) -> None:
    batches = list(client.list_batches())
    assert len(batches) == 2, "the late create happened"  # the scene, not the code under test
    (late,) = [b for b in batches if b.id != kept_id]
    assert (
        late.metadata["idempotency_key"]
        == next(b for b in batches if b.id == kept_id).metadata["idempotency_key"]
    )
    assert late.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert not (late.request_counts and late.request_counts.completed), "the duplicate ran requests"
    assert working(client) == [kept_id]


def create(file_id: str, **kwargs) -> DashScopeCreateBatchOperator:
    return DashScopeCreateBatchOperator(
        task_id="task", input_file_id=file_id, endpoint=ENDPOINT, **{**FAST, **kwargs}
    )


def test_a_lone_worker_wait_cancels_the_late_duplicate(late_gateway, client, dashscope_emulator):
    file_id = client.upload_file(REQUESTS).id
    late_gateway("/batches")
    result = create(file_id, deferrable=False).execute({"ti": TaskInstance()})
    assert result["status"] == "completed"
    assert_one_batch_ran(client, result["id"])


def test_a_lone_deferred_wait_cancels_the_late_duplicate(late_gateway, client):
    file_id = client.upload_file(REQUESTS).id
    late_gateway("/batches")
    operator = create(file_id, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": TaskInstance()})
    trigger = deferred.value.trigger
    result = resume(operator, deferred.value)
    assert result["status"] == "completed"
    assert_one_batch_ran(client, result["id"])
    assert trigger.late_copies["batch_until"] is not None  # the fact crossed the deferral


def test_a_retried_try_that_re_attaches_still_cancels_the_late_duplicate(late_gateway, client):
    """The first try dies after the create; the retry knows only the batch, and derives the window."""
    file_id = client.upload_file(REQUESTS).id
    late_gateway("/batches")
    ti = TaskInstance()
    create(file_id, wait_for_completion=False).execute({"ti": ti})
    ti.try_number = 2
    result = create(file_id, deferrable=False).execute({"ti": ti})
    assert result["id"] == ti.xcoms["batch_id"]
    assert_one_batch_ran(client, result["id"])


@pytest.fixture
def late_batch(late_gateway, dashscope_emulator):
    """A batch created through the late gateway by an impatient client (as an upstream create task)."""
    with DashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, timeout=1.0
    ) as impatient:
        file_id = impatient.upload_file(REQUESTS).id
        late_gateway("/batches")
        return impatient.create_batch(input_file_id=file_id, endpoint=ENDPOINT).id


def test_a_poking_sensor_cancels_the_late_duplicate(late_batch, client):
    sensor = DashScopeBatchSensor(task_id="wait", batch_id=late_batch, poke_interval=0.2)
    while not (result := sensor.poke({})).is_done:
        time.sleep(0.2)
    assert result.xcom_value["status"] == "completed"
    assert_one_batch_ran(client, late_batch)


def test_a_deferred_sensor_joins_grouped_reads_and_cancels_the_late_duplicate(late_batch, client):
    sensor = DashScopeBatchSensor(task_id="wait", batch_id=late_batch, poke_interval=0.2, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    batch = client.retrieve_batch(late_batch)
    assert (trigger.input_file_id, trigger.idempotency_key) == (
        batch.input_file_id,
        batch.metadata["idempotency_key"],
    )
    assert resume(sensor, deferred.value)["status"] == "completed"
    assert_one_batch_ran(client, late_batch)


def _sharded(**kwargs) -> DashScopeShardedBatchOperator:
    requests = [
        {
            "custom_id": f"r{i}",
            "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "q"}]},
        }
        for i in range(4)
    ]
    return DashScopeShardedBatchOperator(
        task_id="task",
        requests=requests,
        endpoint=ENDPOINT,
        max_requests_per_shard=2,
        **FAST,
        **kwargs,
    )


def _drive(operator: DashScopeShardedBatchOperator, context: dict) -> dict:
    """Run the operator as Airflow would: execute, the trigger in an event loop, resume; repeat."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        step = deferred
    while True:
        try:
            return getattr(operator, step.method_name)(context, fire(step.trigger))
        except TaskDeferred as deferred:
            step = deferred


def test_a_sharded_job_cancels_the_late_duplicate_of_a_shard(late_gateway, client):
    late_gateway("/batches")
    result = _drive(_sharded(), {"ti": TaskInstance()})
    assert len(result["batch_ids"]) == 2
    batches = list(client.list_batches())
    assert len(batches) == 3, "the late create happened"
    assert sorted(working(client)) == sorted(result["batch_ids"])
    (late,) = [b for b in batches if b.id not in result["batch_ids"]]
    assert late.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert not (late.request_counts and late.request_counts.completed)


def test_a_sharded_job_deletes_the_late_copy_of_an_upload(late_gateway, client):
    late_gateway("/files")
    result = _drive(_sharded(), {"ti": TaskInstance()})
    inputs = {client.retrieve_batch(b).input_file_id for b in result["batch_ids"]}
    stored = [f for f in client.list_files(purpose="batch")]
    assert {f.id for f in stored} == inputs  # the late copy of the held upload is gone
    assert len(stored) == 2


def test_the_upload_operator_deletes_the_late_copy_of_its_upload(late_gateway, client):
    late_gateway("/files")
    held_until = time.time() + 3  # when the gateway hands the first attempt on
    file_id = DashScopeUploadFileOperator(task_id="upload", file=str(REQUESTS)).execute({})
    time.sleep(max(held_until + 1 - time.time(), 0))  # the scene: the late copy has been stored by now
    assert [f.id for f in client.list_files(purpose="batch")] == [file_id]
