"""A task process (create or sharded) killed while a follow-up round uploads: the next try re-attaches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from tests.operators.operator_helpers import TaskInstanceStub, check_billed_once, next_try
from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies
from tests.operators.test_create_rounds import DAY, acting, create, expire_after, finish, write_requests

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

#: The task's first try, in its own process: the create operator with one follow-up round. On SIGTERM it
#: does what the Task SDK's runner does (the operator's ``on_kill``, then the process ends).
TASK = textwrap.dedent(
    """
    import os, signal, sys
    from tests.operators.operator_helpers import TaskInstanceStub
    from tests.operators.test_create_rounds import create

    operator = create(sys.argv[1], sys.argv[2], resubmit_rounds=1, retries=1)
    signal.signal(signal.SIGTERM, lambda signum, frame: (operator.on_kill(), os._exit(143)))
    operator.execute({"ti": TaskInstanceStub()})
    """
)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "lands"),
    [(signal.SIGTERM, "before"), (signal.SIGKILL, "before"), (signal.SIGKILL, "during")],
)
def test_a_kill_during_a_follow_up_rounds_upload_re_attaches_on_the_next_try(
    dashscope_conn, client, dashscope_emulator, tmp_path, signum, lands
):
    """
    The upload the killed try sent lands before the next try looks (it is re-used) or while the next
    try's round runs (it is deleted when the job's rounds are over).
    """
    ids = [f"r-{n:02d}" for n in range(20)]
    source = write_requests(tmp_path / "in.jsonl", ids)
    file_id = client.upload_file(source).id
    dashscope_emulator.configure(time_scale=0)
    dashscope_emulator.clear_request_counts()
    task = subprocess.Popen(
        [sys.executable, "-c", TASK, file_id, str(source)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # the round's upload reaches the service, which holds it and stores it whether or not its sender is
    # still there: a file the killed try uploaded
    held_for = 2 if lands == "before" else 8
    try:
        wait_for(lambda: len(list(client.list_batches())) == 1, "the first round's batch")
        dashscope_emulator.add_fault("defer", method="POST", path="/files", latency=held_for, count=1)
        expire_after(dashscope_emulator, 8)()
        wait_for(lambda: dashscope_emulator.request_counts().get("POST /files", 0) == 1, "the round's upload")
        task.send_signal(signum)
        assert task.wait(timeout=30) != 0
    finally:
        if task.poll() is None:
            task.kill()
    (first,) = client.list_batches()
    assert first.status == "expired"
    assert first.request_counts.completed == 8

    def files() -> set[str]:
        return {f.id for f in client.list_files(purpose="batch")}

    if lands == "before":
        wait_for(lambda: len(files()) == 2, "the held upload to land")
    else:
        assert len(files()) == 1  # still held when the next try starts
    dashscope_emulator.clear_request_counts()
    ti = TaskInstanceStub(try_number=1)
    stored = 2 if lands == "before" else 3  # the input, the killed try's copy, the next try's own

    def finish_once_landed() -> None:
        """Round 2 finishes only once the held upload has landed."""
        wait_for(lambda: len(files()) == stored, "the held upload to land")
        finish(dashscope_emulator)()

    thread = acting(client, [lambda: None, finish_once_landed])
    result = create(file_id, source, resubmit_rounds=1, retries=1).execute(next_try(ti))
    thread.join()
    first_id, second_id = ti.xcoms["batch_ids"]
    assert first_id == first.id
    assert result["id"] == second_id
    assert len(list(client.list_batches())) == 2  # no duplicate batch
    counts = dashscope_emulator.request_counts()
    assert counts["POST /batches"] == 1
    second = client.retrieve_batch(second_id)
    if lands == "before":
        assert "POST /files" not in counts  # the killed try's file is re-used, not uploaded again
    else:
        assert counts["POST /files"] == 1  # the next try uploaded its own copy; the late one is deleted
    assert second.request_counts.model_dump() == {"total": 12, "completed": 12, "failed": 0}
    assert check_billed_once(client, [first_id, second_id]) == set(ids)  # no answered request re-sent
    assert files() == {file_id, second.input_file_id}  # nothing orphaned


#: The sharded task's first try, in its own process. Its XComs are written through to ``argv[1]`` as a
#: worker's reach the metadata DB at once; SIGTERM runs the operator's ``on_kill``, as the runner does.
SHARDED_TASK = textwrap.dedent(
    """
    import json, os, signal, sys
    from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
    from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies

    class Persisted(TaskInstance):
        def xcom_push(self, key, value):
            super().xcom_push(key, value)
            with open(sys.argv[1], "w") as out:
                json.dump(self.xcoms, out)

    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(12), max_requests_per_shard=4, retries=1, **FAST
    )
    def on_term(signum, frame):
        try:
            operator.on_kill()
        finally:
            os._exit(143)
    signal.signal(signal.SIGTERM, on_term)
    drive(operator, {"ti": Persisted()})
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_sharded_task_killed_during_a_follow_up_rounds_upload(
    dashscope_conn, client, dashscope_emulator, tmp_path, signum
):
    dashscope_emulator.configure(time_scale=0)
    xcoms = tmp_path / "xcoms.json"
    task = subprocess.Popen(
        [sys.executable, "-c", SHARDED_TASK, str(xcoms)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: len(list(client.list_batches())) == 3, "the three shards' batches")
        dashscope_emulator.clear_request_counts()
        dashscope_emulator.add_fault("defer", method="POST", path="/files", latency=2, count=1)
        dashscope_emulator.configure(processing_rate=2.5 / DAY)
        dashscope_emulator.advance(DAY + 10)  # each shard answers two of its four requests, then expires
        wait_for(lambda: dashscope_emulator.request_counts().get("POST /files", 0) == 1, "a round's upload")
        task.send_signal(signum)
        assert task.wait(timeout=30) != 0
    finally:
        if task.poll() is None:
            task.kill()
    first_round = {b.id for b in client.list_batches()}
    assert len(first_round) == 3
    wait_for(lambda: len(list(client.list_files(purpose="batch"))) == 4, "the held upload to land")

    dashscope_emulator.clear_request_counts()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    ti = TaskInstance()
    ti.xcoms = json.loads(xcoms.read_text())
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards", requests=shard_bodies(12), max_requests_per_shard=4, retries=1, **FAST
    )
    drive(operator, {"ti": ti})
    batches = list(client.list_batches())
    assert len(batches) == 6  # one follow-up round per shard, none twice
    follow_ups = [b for b in batches if b.id not in first_round]
    assert [b.request_counts.total for b in follow_ups] == [2, 2, 2]  # only the remainders
    assert dashscope_emulator.request_counts()["POST /files"] == 2  # the killed try's upload is re-used
    assert check_billed_once(client, [b.id for b in batches]) == {f"r{i}" for i in range(12)}
    used = {b.input_file_id for b in batches}
    assert {f.id for f in client.list_files(purpose="batch")} == used  # nothing orphaned
