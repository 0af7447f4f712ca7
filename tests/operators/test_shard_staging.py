"""The sharded job's staging and kill handling: SIGTERM mid-upload or mid-create, a user's kill, cleanup."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from shard_helpers import FAST, TaskInstance, drive, shard_bodies

from airflow_provider_dashscope_batch.operators.shard_staging import CLEANUP_XCOM_KEY, TaskKilled
from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator


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
        task_id="run_shards", requests=shard_bodies(600), max_requests_per_shard=100, retries=1, **FAST
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
    result, _ = drive(make(), {"ti": ti})  # the next try
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
        task_id="run_shards", requests=shard_bodies(400), max_requests_per_shard=100, retries=1, **FAST
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
    result, _ = drive(make(), {"ti": ti})
    counts = dashscope_emulator.request_counts()
    assert (counts.get("POST /files", 0), counts["POST /batches"]) == (0, 2)
    assert len(set(result["batch_ids"])) == 4
    assert {f.id for f in _input_files(client)} == {b.input_file_id for b in client.list_batches()}


def test_a_kill_of_the_last_try_deletes_the_files_no_batch_uses(
    dashscope_conn, dashscope_emulator, client, restore_sigterm
):
    """No try follows (retries=0): the uploaded shards without a batch would be orphaned."""
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=0.5)
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(600), max_requests_per_shard=100, **FAST
    )
    killer = _sigterm_when(dashscope_emulator, "POST /files", 2, operator)
    try:
        with pytest.raises(TaskKilled):
            operator.execute({"ti": TaskInstance()})
    finally:
        killer.join()
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (2, 2)
    assert _input_files(client) == []


def test_a_kill_by_a_user_marking_the_task_failed_deletes_that_tries_files(
    dashscope_conn, dashscope_emulator, client, restore_sigterm
):
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=0.5)
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(600), max_requests_per_shard=100, **FAST
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
        task_id="run_shards", requests=shard_bodies(250, duplicate_at=240), max_requests_per_shard=100
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
