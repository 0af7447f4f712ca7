"""The sharding operators against the emulator: split, fan-out under the cap, resume, validation, timeout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_dashscope_batch.operators.shards import (
    CLEANUP_XCOM_KEY,
    JOB_XCOM_KEY,
    DashScopeShardedBatchOperator,
    DashScopeSplitRequestsOperator,
    TaskKilled,
)
from airflow_provider_dashscope_batch.validation import MAX_LINE_BYTES

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


def _bodies(n: int, *, duplicate_at: int | None = None) -> list[dict]:
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


def _drive(
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
            return getattr(operator, step.method_name)(context, event), triggers
        except TaskDeferred as deferred:
            step = deferred


def test_input_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        DashScopeShardedBatchOperator(task_id="t", file="a.jsonl", csv="b.csv", model="m")
    with pytest.raises(ValueError, match="csv= needs model="):
        DashScopeSplitRequestsOperator(task_id="t", csv="b.csv", destination="/tmp/x")
    with pytest.raises(ValueError, match="max_active_batches"):
        DashScopeShardedBatchOperator(task_id="t", file="a.jsonl", max_active_batches=0)


def test_split_operator_writes_shards_and_describes_them(tmp_path):
    ti = TaskInstance()
    operator = DashScopeSplitRequestsOperator(
        task_id="split",
        requests=_bodies(250),
        destination=str(tmp_path / "shards"),
        max_requests_per_shard=100,
    )
    uris = operator.execute({"ti": ti})
    assert uris == [str(tmp_path / "shards" / f"shard-0000{i}.jsonl") for i in range(3)]
    split = ti.xcoms["split"]
    assert (split["requests"], split["model"]) == (250, "qwen-plus")
    assert [s["first_line"] for s in split["shards"]] == [1, 101, 201]


def test_the_cap_holds_back_shards_until_a_slot_frees(dashscope_conn, dashscope_emulator, client):
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=_bodies(250), max_requests_per_shard=100, max_active_batches=1, **FAST
    )
    result, triggers = _drive(operator, {"ti": TaskInstance()})
    assert [(t.until, len(t.batch_ids)) for t in triggers] == [("any", 1), ("any", 1), ("all", 1)]
    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    assert [s["requests"] for s in result["shards"]] == [100, 100, 50]
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    created = list(reversed(list(client.list_batches())))  # oldest first
    assert [b.id for b in created] == result["batch_ids"]  # one at a time, in input order
    assert all(str(b.metadata["idempotency_key"]).endswith("-g1") for b in created)


def test_a_new_try_re_attaches_to_running_batches(dashscope_conn, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstance()
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=_bodies(250), max_requests_per_shard=100, **FAST
    )
    with pytest.raises(TaskDeferred):
        make().execute({"ti": ti})
    first = [r["batch"]["id"] for r in ti.xcoms[JOB_XCOM_KEY]["runs"]]
    dashscope_emulator.configure(time_scale=1)  # the first try's worker died; the batches carry on
    result, _ = _drive(make(), {"ti": ti})
    assert result["batch_ids"] == first
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    assert dashscope_emulator.request_counts()["POST /files"] == 3


def test_a_bad_line_creates_no_batch_and_deletes_this_tries_uploads(dashscope_conn, dashscope_emulator):
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=_bodies(250, duplicate_at=240), max_requests_per_shard=100
    )
    with pytest.raises(
        AirflowFailException, match='line 240: duplicate_custom_id: custom_id "r0" already used on line 1'
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (2, 2)
    assert "POST /batches" not in counts


def test_a_line_over_6_mib_fails_before_any_upload(dashscope_conn, dashscope_emulator, tmp_path):
    head = '{"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": '
    head += '"qwen-plus", "input": "'
    big = head + "x" * (MAX_LINE_BYTES + 1 - len(head) - 3) + '"}}'
    assert len(big) == MAX_LINE_BYTES + 1  # 6 MiB + 1 byte, then LF: the upload operator rejects it
    small = head.replace('"r2"', '"r1"') + 'hi"}}'
    (tmp_path / "in.jsonl").write_text(f"{small}\n{big}\n")
    operator = DashScopeShardedBatchOperator(task_id="run_shards", file=str(tmp_path / "in.jsonl"))
    with pytest.raises(
        AirflowFailException, match=r"in\.jsonl line 2: line_too_large: line is 6,291,457 bytes"
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert "POST /files" not in counts
    assert "POST /batches" not in counts


def _input_files(client) -> list:
    return [f for f in client.list_files() if f.purpose == "batch"]


class MarkedFailed(TaskInstance):
    """A task instance whose state, read after the kill, is ``failed``: a user marked it so."""

    def get_task_states(self, *, dag_id, task_ids, run_ids, map_index):
        return {self.run_id: {self.task_id: "failed"}}


def _sigterm_when(dashscope_emulator, request: str, count: int, operator) -> threading.Thread:
    """SIGTERM this process once the emulator has seen ``count`` of ``request``; SIGTERM calls on_kill."""

    def wait_then_kill() -> None:
        deadline = time.monotonic() + 60
        while dashscope_emulator.request_counts().get(request, 0) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, lambda signum, frame: operator.on_kill())
    thread = threading.Thread(target=wait_then_kill)
    thread.start()
    return thread


@pytest.fixture
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_mid_upload_stops_the_job_and_its_retry_uploads_nothing_twice(
    dashscope_conn, dashscope_emulator, client, restore_sigterm
):
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=0.5)
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=_bodies(600), max_requests_per_shard=100, **FAST
    )
    operator, ti = make(), TaskInstance()
    killer = _sigterm_when(dashscope_emulator, "POST /files", 2, operator)  # during the second upload
    try:
        with pytest.raises(TaskKilled):
            operator.execute({"ti": ti})
    finally:
        killer.join()
    counts = dashscope_emulator.request_counts()
    assert counts["POST /files"] == 2  # the upload in flight finished; none started after the signal
    assert "POST /batches" not in counts
    kept = {f.id for f in _input_files(client)}
    assert len(kept) == 2

    dashscope_emulator.clear_request_counts()
    result, _ = _drive(make(), {"ti": ti})  # the next try
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["POST /batches"]) == (4, 6)  # the two kept files re-used
    used = {b.input_file_id for b in client.list_batches()}
    assert kept < used
    assert {f.id for f in _input_files(client)} == used  # no orphaned file
    assert result["request_counts"] == {"total": 600, "completed": 600, "failed": 0}


def test_a_kill_while_creating_starts_no_create_after_it_and_the_retry_uploads_nothing(
    dashscope_conn, dashscope_emulator, client, restore_sigterm
):
    dashscope_emulator.add_fault("latency", method="POST", path="/batches", latency=0.5)
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=_bodies(400), max_requests_per_shard=100, **FAST
    )
    operator, ti = make(), TaskInstance()
    killer = _sigterm_when(dashscope_emulator, "POST /batches", 2, operator)
    try:
        with pytest.raises(TaskKilled):
            operator.execute({"ti": ti})
    finally:
        killer.join()
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["POST /batches"]) == (4, 2)  # the create in flight finished
    dashscope_emulator.clear_request_counts()
    result, _ = _drive(make(), {"ti": ti})
    counts = dashscope_emulator.request_counts()
    assert (counts.get("POST /files", 0), counts["POST /batches"]) == (0, 2)
    assert len(set(result["batch_ids"])) == 4
    assert {f.id for f in _input_files(client)} == {b.input_file_id for b in client.list_batches()}


def test_a_kill_by_a_user_marking_the_task_failed_deletes_that_tries_files(
    dashscope_conn, dashscope_emulator, client, restore_sigterm
):
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=0.5)
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=_bodies(600), max_requests_per_shard=100, **FAST
    )
    killer = _sigterm_when(dashscope_emulator, "POST /files", 2, operator)
    try:
        with pytest.raises(TaskKilled):
            operator.execute({"ti": MarkedFailed()})
    finally:
        killer.join()
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (2, 2)
    assert "POST /batches" not in counts
    assert _input_files(client) == []


def test_a_failed_cleanup_is_retried_reported_and_done_by_the_next_try(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_conn(max_retries=1)
    dashscope_emulator.add_fault(method="DELETE", path="/files/*", status=500, count=4)  # 2 files x 2 tries
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards", requests=_bodies(250, duplicate_at=240), max_requests_per_shard=100
    )
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="duplicate_custom_id"):
        make().execute({"ti": ti})
    left = {f.id for f in _input_files(client)}
    assert len(left) == 2
    assert set(ti.xcoms[CLEANUP_XCOM_KEY]) == left  # reported in the task's XCom
    assert dashscope_emulator.request_counts()["DELETE /files/{file_id}"] == 4  # each delete retried

    dashscope_emulator.clear_request_counts()
    with pytest.raises(AirflowFailException, match="duplicate_custom_id"):  # the next try, same input
        make().execute({"ti": ti})
    counts = dashscope_emulator.request_counts()
    assert "POST /files" not in counts  # the two shards before the bad line found their files
    assert counts["DELETE /files/{file_id}"] == 2
    assert _input_files(client) == []


def test_a_malformed_response_format_fails_before_any_upload(dashscope_conn, dashscope_emulator):
    requests = _bodies(250)
    requests[180]["body"]["response_format"] = {"type": "json_schema", "json_schema": {"name": "v"}}
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=requests, max_requests_per_shard=100
    )
    with pytest.raises(
        AirflowFailException, match=r"line 181: invalid_response_format: body\.response_format"
    ):
        operator.execute({"ti": TaskInstance()})
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (1, 1)  # the first shard's, deleted
    assert "POST /batches" not in counts


def test_a_files_lines_name_the_endpoint_as_for_the_upload_operator(dashscope_conn, client, tmp_path):
    lines = [
        {
            "custom_id": f"t{i}",
            "method": "POST",
            "url": "/v1/chat/ds-test",
            "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(150)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    operator = DashScopeShardedBatchOperator(task_id="run_shards", file=str(tmp_path / "in.jsonl"), **FAST)
    result, _ = _drive(operator, {"ti": TaskInstance()})
    assert [s["requests"] for s in result["shards"]] == [80, 70]  # the test model's own shard size
    assert {client.retrieve_batch(b).endpoint for b in result["batch_ids"]} == {"/v1/chat/ds-test"}


def test_a_timed_out_wait_cancels_the_running_batches(dashscope_conn, dashscope_emulator, client):
    dashscope_emulator.configure(time_scale=0)
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=_bodies(150), max_requests_per_shard=100, wait_timeout=0.5, **FAST
    )
    with pytest.raises(AirflowException, match="deadline"):
        _drive(operator, {"ti": TaskInstance()})
    assert dashscope_emulator.request_counts()["POST /batches/{batch_id}/cancel"] == 2
    assert {b.status for b in client.list_batches()} == {"cancelling"}
