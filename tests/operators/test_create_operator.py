"""DashScopeCreateBatchOperator: keys, generations and re-attachment through the list API (Airflow < 3.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator, idempotency_key_for
from tests.operators.operator_helpers import TaskInstanceStub, next_try

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
LIST = "GET /batches"


def create(file_id: str, **kwargs) -> DashScopeCreateBatchOperator:
    settings = {"deferrable": False, "poll_interval": 0.05, "max_poll_interval": 0.1, **kwargs}
    return DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=file_id, endpoint="/v1/chat/ds-test", **settings
    )


def test_key_is_stable_across_tries_and_distinct_per_run_map_index_and_generation():
    first = idempotency_key_for({"ti": TaskInstanceStub(try_number=1)})
    assert first.startswith("airflow-")
    assert first.endswith("-g1")
    assert len(first) == len("airflow-") + 40 + len("-g1")
    assert idempotency_key_for({"ti": TaskInstanceStub(try_number=2)}) == first
    assert idempotency_key_for({"ti": TaskInstanceStub(run_id="manual__2")}) != first
    assert idempotency_key_for({"ti": TaskInstanceStub(map_index=0)}) != first
    assert idempotency_key_for({"ti": TaskInstanceStub()}, generation=2) == first[:-1] + "2"


def test_a_first_try_never_lists_batches(dashscope_conn, client, dashscope_emulator):
    file_id = client.upload_file(REQUESTS).id
    dashscope_emulator.clear_request_counts()
    create(file_id, wait_for_completion=False).execute({"ti": TaskInstanceStub()})
    assert LIST not in dashscope_emulator.request_counts()
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_a_second_try_reattaches_with_one_list_request(dashscope_conn, client, dashscope_emulator):
    file_id = client.upload_file(REQUESTS).id
    other_file = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    first = create(file_id, wait_for_completion=False).execute({"ti": ti})
    assert ti.xcoms["batch_id"] == first["id"]
    for _ in range(3):  # batches of other input files are filtered out by the service, not paged through
        client.create_batch(input_file_id=other_file, endpoint="/v1/chat/ds-test")
    dashscope_emulator.clear_request_counts()
    # (not waiting: a re-attached wait reads through the list while a late copy of the earlier try's
    # create may still appear, see test_late_copies.py)
    second = create(file_id, wait_for_completion=False).execute(next_try(ti))
    assert second["id"] == first["id"]
    counts = dashscope_emulator.request_counts()
    assert counts[LIST] == 1
    assert "POST /batches" not in counts


def test_a_try_after_a_failed_batch_creates_a_new_one_then_reattaches_to_it(
    dashscope_conn, client, dashscope_emulator
):
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    dashscope_emulator.fail_requests(".*")
    with pytest.raises(AirflowException, match="every request failed"):
        create(file_id).execute({"ti": ti})
    dashscope_emulator.fail_requests(None)
    retried = create(file_id).execute(next_try(ti))
    assert retried["request_counts"]["completed"] == 5
    assert retried["metadata"]["idempotency_key"].endswith("-g2")
    again = create(file_id).execute(next_try(ti))
    assert again["id"] == retried["id"]
    assert dashscope_emulator.request_counts()["POST /batches"] == 2


def test_a_replacement_whose_create_hits_a_500_still_ends_with_a_new_batch(
    dashscope_conn, client, dashscope_emulator
):
    """Issue 11 item 3: the create's recovery must not find the failed batch it replaces."""
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    dashscope_emulator.fail_requests(".*")
    with pytest.raises(AirflowException, match="every request failed"):
        create(file_id).execute({"ti": ti})
    failed_id = ti.xcoms["batch_id"]
    dashscope_emulator.fail_requests(None)
    dashscope_emulator.add_fault("status", method="POST", path="/batches", status=500, count=1)
    retried = create(file_id).execute(next_try(ti))
    assert retried["id"] != failed_id
    assert retried["status"] == "completed"
    assert retried["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert ti.xcoms["batch_id"] == retried["id"]
    assert dashscope_emulator.request_counts()["POST /batches"] == 3  # try 1, try 2's 500, its re-send
    assert len(list(client.list_batches())) == 2


def test_deferring_hands_the_trigger_the_batch_identity(dashscope_conn, client):
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    with pytest.raises(TaskDeferred) as deferred:
        create(file_id, deferrable=True).execute({"ti": ti})
    trigger = deferred.value.trigger
    assert trigger.batch_id == ti.xcoms["batch_id"]
    assert trigger.input_file_id == file_id
    assert trigger.idempotency_key == idempotency_key_for({"ti": ti})


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("failed", "cancelling"),  # a user marked the task failed: the supervisor SIGTERMs, on_kill cancels
        ("restarting", "validating"),  # cleared while running: the next try re-attaches
        ("success", "validating"),  # marked success: the batch keeps running (a warning names it)
        ("running", "validating"),  # the worker shuts down: the retry re-attaches
    ],
)
def test_on_kill_in_the_worker_cancels_only_when_marked_failed(
    dashscope_conn, client, dashscope_emulator, state, expected
):
    dashscope_emulator.configure(time_scale=0)
    file_id = client.upload_file(REQUESTS).id
    ti = TaskInstanceStub()
    task = create(file_id, wait_for_completion=False)
    task.execute({"ti": ti})
    ti.state = state  # what the user's action left in the metadata DB
    task.on_kill()
    assert client.retrieve_batch(ti.xcoms["batch_id"]).status == expected
