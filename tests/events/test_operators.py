"""``finish_callback="airflow"`` on the create and the sharded operators: the URL, its token, the trigger."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_dashscope_batch.events.tokens import MARK_KEY, is_marked, token_is_valid
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator

SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
PUBLIC = "https://airflow.example.com"
PREFIX = f"{PUBLIC}/dashscope-batch/events/dashscope_default/"
SECRET = "operator-test-secret"


@dataclass
class TaskInstanceStub:
    dag_id: str = "dag"
    task_id: str = "create_batch"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, *, task_ids: str, key: str, map_indexes: int | None = None) -> object:
        return self.xcoms[key]


def defer(operator) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": TaskInstanceStub(task_id=operator.task_id)})
    return deferred.value


def assert_own_callback(url: str, api_key: str) -> str:
    assert url.startswith(PREFIX)
    assert api_key not in url
    assert SECRET not in url
    token = url.removeprefix(PREFIX)
    assert token_is_valid((SECRET,), "dashscope_default", token)
    return token


def test_the_create_operator_builds_the_callback_url_and_defers_to_a_woken_wait(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_conn(callback_base_url=PUBLIC, finish_events_secret=SECRET)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        finish_callback="airflow",
        deferrable=True,
    )
    trigger = defer(operator).trigger
    (batch,) = list(client.list_batches())
    assert_own_callback(batch.metadata["ds_batch_finish_callback"], dashscope_emulator.api_key)
    assert is_marked((SECRET,), "dashscope_default", batch.metadata)
    assert trigger.wait.finish_events
    plain = DashScopeCreateBatchOperator(task_id="plain", input_file_id=file_id, endpoint="/v1/chat/ds-test")
    assert trigger.wait.poll_interval == plain.wait_settings.poll_interval  # woken early, never less
    assert trigger.wait.max_poll_interval == plain.wait_settings.max_poll_interval
    assert "ds_batch_finish_callback" not in json.dumps(trigger.serialize()[1])


def test_every_batch_gets_its_own_token(dashscope_conn, dashscope_emulator, client):
    dashscope_conn(callback_base_url=PUBLIC, finish_events_secret=SECRET)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    for run_id in ("r1", "r2"):
        with pytest.raises(TaskDeferred):
            DashScopeCreateBatchOperator(
                task_id="create_batch",
                input_file_id=file_id,
                endpoint="/v1/chat/ds-test",
                finish_callback="airflow",
                deferrable=True,
            ).execute({"ti": TaskInstanceStub(run_id=run_id)})
    urls = {b.metadata["ds_batch_finish_callback"] for b in client.list_batches()}
    assert len(urls) == 2


def test_without_a_public_base_url_the_create_fails_before_creating(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_conn(finish_events_secret=SECRET)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=file_id, endpoint="/v1/chat/ds-test", finish_callback="airflow"
    )
    with pytest.raises(ConnectionSetupError, match="callback_base_url"):
        operator.execute({"ti": TaskInstanceStub()})
    assert "POST /batches" not in dashscope_emulator.request_counts()


def test_without_a_secret_the_receiver_is_refused_before_creating(dashscope_conn, dashscope_emulator, client):
    dashscope_conn(callback_base_url=PUBLIC)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=file_id, endpoint="/v1/chat/ds-test", finish_callback="airflow"
    )
    with pytest.raises(ConnectionSetupError, match="finish_events_secret"):
        operator.execute({"ti": TaskInstanceStub()})
    assert "POST /batches" not in dashscope_emulator.request_counts()


def test_with_a_secret_every_batch_carries_the_mark_the_watcher_counts(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_conn(finish_events_secret=SECRET)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=file_id, endpoint="/v1/chat/ds-test", wait_for_completion=False
    ).execute({"ti": TaskInstanceStub()})
    (batch,) = list(client.list_batches())
    assert is_marked((SECRET,), "dashscope_default", batch.metadata)
    assert "ds_batch_finish_callback" not in batch.metadata


def test_without_a_secret_a_batch_carries_no_mark(dashscope_conn, dashscope_emulator, client):
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=file_id, endpoint="/v1/chat/ds-test", wait_for_completion=False
    ).execute({"ti": TaskInstanceStub()})
    (batch,) = list(client.list_batches())
    assert MARK_KEY not in (batch.metadata or {})


@pytest.mark.parametrize("argument", ["finish_callback", "finish_callback_url"])
def test_an_explicit_url_is_passed_through_and_the_wait_polls_as_usual(
    dashscope_conn, dashscope_emulator, client, argument
):
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    operator = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        deferrable=True,
        poll_interval=5,
        **{argument: "https://hooks.example.com/done"},
    )
    trigger = defer(operator).trigger
    (batch,) = list(client.list_batches())
    assert batch.metadata["ds_batch_finish_callback"] == "https://hooks.example.com/done"
    assert not trigger.wait.finish_events
    assert trigger.wait.poll_interval == 5


def test_the_sharded_operator_gives_every_shard_its_own_callback(dashscope_conn, dashscope_emulator, client):
    dashscope_conn(callback_base_url=PUBLIC, finish_events_secret=SECRET)
    requests = [
        {
            "custom_id": f"r{i}",
            "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(30)
    ]
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=requests, max_requests_per_shard=10, finish_callback="airflow"
    )
    trigger = defer(operator).trigger
    batches = list(client.list_batches())
    assert len(batches) == 3
    tokens = {
        assert_own_callback(b.metadata["ds_batch_finish_callback"], dashscope_emulator.api_key)
        for b in batches
    }
    assert len(tokens) == 3
    assert all(is_marked((SECRET,), "dashscope_default", b.metadata) for b in batches)
    assert trigger.wait.finish_events
    assert trigger.wait.poll_interval == operator.poll_interval
