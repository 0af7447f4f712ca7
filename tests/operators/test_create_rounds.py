"""DashScopeCreateBatchOperator's rounds: expiry and failures finished by re-sending only the remainder."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_dashscope_batch.client.errors import PermissionDeniedError
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)
from tests.operators.operator_helpers import TaskInstanceStub, check_billed_once, ids_in, next_try, table_ids

pytestmark = pytest.mark.timeout(120)

DAY = 86400


def write_requests(path: Path, ids: list[str], fail: dict[str, dict] | None = None) -> Path:
    """A ds-test JSONL file of ``ids``; ``fail`` gives some an ``x_emulator_fail`` marker."""
    with path.open("w") as out:
        for custom_id in ids:
            body = {"model": "batch-test-model", "messages": [{"role": "user", "content": custom_id}]}
            if fail and custom_id in fail:
                body["x_emulator_fail"] = fail[custom_id]
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/ds-test", "body": body}
            out.write(json.dumps(line) + "\n")
    return path


def create(file_id: str, source: Path | None, **kwargs) -> DashScopeCreateBatchOperator:
    settings = {"deferrable": False, "poll_interval": 0.05, "max_poll_interval": 0.1, **kwargs}
    return DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        source=None if source is None else str(source),
        **settings,
    )


def acting(client, actions: list[Callable[[], object]]) -> threading.Thread:
    """A thread running ``actions[n]`` as soon as the emulator holds n + 1 batches (the clock's moves)."""

    def run() -> None:
        for count, action in enumerate(actions, start=1):
            deadline = time.monotonic() + 60
            while len(list(client.list_batches())) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def expire_after(emulator, answered: int) -> Callable[[], object]:
    """Let the newest batch answer ``answered`` requests in its 24h window, then expire."""

    def act() -> None:
        emulator.configure(processing_rate=(answered + 0.5) / DAY)
        emulator.advance(DAY + 10)

    return act


def finish(emulator) -> Callable[[], object]:
    """Let the newest batch finish at once."""

    def act() -> None:
        emulator.configure(processing_rate=1000)
        emulator.advance(100)

    return act


def test_an_expired_batch_is_finished_by_one_round_of_exactly_the_remainder(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    ids = [f"r-{n:02d}" for n in range(20)]
    source = write_requests(tmp_path / "in.jsonl", ids)
    file_id = client.upload_file(source).id
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstanceStub()
    thread = acting(client, [expire_after(dashscope_emulator, 8), finish(dashscope_emulator)])
    result = create(file_id, source, resubmit_rounds=2).execute({"ti": ti})
    thread.join()
    first, second = ti.xcoms["batch_ids"]
    assert result["id"] == second
    assert client.retrieve_batch(first).status == "expired"
    assert client.retrieve_batch(first).request_counts.completed == 8
    round_two = client.retrieve_batch(second)
    assert round_two.request_counts.total == 12  # exactly the remainder, no second round past it
    assert client.retrieve_batch(first).metadata["ds_name"] == "create_batch"
    assert round_two.metadata["ds_name"] == "create_batch round 2"
    assert round_two.metadata["idempotency_key"].endswith("-g2")
    assert (
        round_two.metadata["airflow_estimated_cost"] == "0.0000 CNY ceiling"
    )  # the remainder's (a free model)
    assert check_billed_once(client, [first, second]) == set(ids)


def test_transient_failures_are_sent_again_permanent_ones_are_not(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    ids = [f"ok-{n}" for n in range(6)] + [f"busy-{n}" for n in range(3)] + ["bad-0", "bad-1"]
    fail = {
        "bad-0": {"status_code": 400, "code": "DataInspectionFailed"},
        "bad-1": {"status_code": 400},
        "busy-0": {"status_code": 500, "attempts": 1},
    }
    source = write_requests(tmp_path / "in.jsonl", ids, fail)
    dashscope_emulator.fail_requests(r"^busy-[12]$", status=429, attempts=1)
    dashscope_emulator.configure(processing_rate=1000)
    file_id = client.upload_file(source).id
    ti = TaskInstanceStub()
    create(file_id, source, resubmit_rounds=1).execute({"ti": ti})
    first, second = ti.xcoms["batch_ids"]
    assert client.retrieve_batch(first).request_counts.failed == 5
    round_two = client.retrieve_batch(second)
    assert round_two.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert sorted(ids_in(client, round_two.output_file_id)) == ["busy-0", "busy-1", "busy-2"]
    assert check_billed_once(client, [first, second]) == set(ids) - {"bad-0", "bad-1"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_the_final_table_holds_each_request_once(dashscope_conn, client, dashscope_emulator, tmp_path, fmt):
    """Transient failures answered by round 2 leave no error row; permanent ones end as error rows."""
    ids = [f"ok-{n}" for n in range(4)] + ["busy-0", "busy-1", "bad-0"]
    source = write_requests(tmp_path / "in.jsonl", ids, {"bad-0": {"status_code": 400}})
    dashscope_emulator.fail_requests(r"^busy-", status=503, attempts=1)
    file_id = client.upload_file(source).id
    ti = TaskInstanceStub()
    create(file_id, source, resubmit_rounds=1).execute({"ti": ti})
    transfer = DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        batch_ids=ti.xcoms["batch_ids"],
        destination=(tmp_path / "results").as_uri(),
        result_set="job",
        output_format=fmt,
    )
    manifest = transfer.execute({"ti": TaskInstanceStub(task_id="transfer")})
    rows = table_ids(tmp_path / "results" / "job", fmt)
    assert sorted(rows["output"]) == sorted(set(ids) - {"bad-0"})
    assert rows["errors"] == ["bad-0"]
    assert [shard["round"] for shard in manifest["shards"]] == [1, 2]
    assert manifest["shards"][0]["files"]["errors"]["lines_left_out"] == 2
    assert manifest["totals"]["error_rows"] == 1
    assert manifest["totals"]["request_counts"]["completed"] == len(rows["output"])


def test_a_code_override_sends_a_permanent_failure_again(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    source = write_requests(
        tmp_path / "in.jsonl", ["a", "b"], {"b": {"status_code": 400, "code": "Flaky", "attempts": 1}}
    )
    file_id = client.upload_file(source).id
    ti = TaskInstanceStub()
    create(file_id, source, resubmit_rounds=1, resubmit_errors={"Flaky": True}).execute({"ti": ti})
    first, second = ti.xcoms["batch_ids"]
    assert client.retrieve_batch(second).request_counts.completed == 1
    assert check_billed_once(client, [first, second]) == {"a", "b"}


def test_a_retry_after_expiry_with_no_rounds_sends_only_the_remainder(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    ids = [f"r-{n:02d}" for n in range(10)]
    source = write_requests(tmp_path / "in.jsonl", ids)
    file_id = client.upload_file(source).id
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstanceStub()
    thread = acting(client, [expire_after(dashscope_emulator, 4)])
    with pytest.raises(AirflowException, match="expired before finishing"):
        create(file_id, source).execute({"ti": ti})
    thread.join()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    create(file_id, source).execute(next_try(ti))
    first, second = ti.xcoms["batch_ids"]
    assert client.retrieve_batch(second).request_counts.total == 6
    assert check_billed_once(client, [first, second]) == set(ids)
    assert dashscope_emulator.request_counts()["POST /batches"] == 2


def test_a_retry_after_answers_without_source_refuses_to_bill_them_twice(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    source = write_requests(tmp_path / "in.jsonl", ["a", "b", "c"])
    file_id = client.upload_file(source).id
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstanceStub()
    thread = acting(client, [expire_after(dashscope_emulator, 1)])
    with pytest.raises(AirflowException, match="expired"):
        create(file_id, None).execute({"ti": ti})
    thread.join()
    with pytest.raises(AirflowFailException, match="Pass source="):
        create(file_id, None).execute(next_try(ti))
    assert dashscope_emulator.request_counts()["POST /batches"] == 1


def test_rounds_without_source_are_refused_before_anything_is_created(
    dashscope_conn, client, dashscope_emulator, tmp_path
):
    file_id = client.upload_file(write_requests(tmp_path / "in.jsonl", ["a"])).id
    with pytest.raises(AirflowFailException, match="pass source="):
        create(file_id, None, resubmit_rounds=1).execute({"ti": TaskInstanceStub()})
    assert "POST /batches" not in dashscope_emulator.request_counts()


@pytest.mark.parametrize("last_try", [False, True])
def test_a_try_that_dies_between_a_rounds_upload_and_create(
    dashscope_conn, client, dashscope_emulator, tmp_path, last_try
):
    """The next try re-uses the stored upload; a try with none after it deletes the unused file."""
    ids = [f"r-{n}" for n in range(6)]
    source = write_requests(tmp_path / "in.jsonl", ids)
    file_id = client.upload_file(source).id
    dashscope_emulator.configure(time_scale=0)
    ti = TaskInstanceStub()
    retries = 1 if last_try else 5
    thread = acting(client, [expire_after(dashscope_emulator, 2)])
    with pytest.raises(AirflowException, match="expired"):
        create(file_id, source, retries=retries).execute({"ti": ti})
    thread.join()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    dashscope_emulator.add_fault("status", method="POST", path="/batches", status=403, count=1)
    with pytest.raises(PermissionDeniedError):
        create(file_id, source, retries=retries).execute(next_try(ti))
    inputs = [f.id for f in client.list_files(purpose="batch")]
    if last_try:
        assert inputs == [file_id]
        return
    assert len(inputs) == 2
    create(file_id, source, retries=retries).execute(next_try(ti))
    first, second = ti.xcoms["batch_ids"]
    assert client.retrieve_batch(second).request_counts.total == 4
    assert sorted(f.id for f in client.list_files(purpose="batch")) == sorted(inputs)  # re-used
    assert dashscope_emulator.request_counts()["POST /files"] == 2
    assert check_billed_once(client, [first, second]) == set(ids)
