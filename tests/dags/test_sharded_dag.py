"""Sharded jobs through ``dag.test()`` against the emulator: the example; the two fan-out designs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.dags.dag_helpers import TEST_DAGS, load_dag_file
from tests.operators.operator_helpers import check_billed_once

pytestmark = pytest.mark.timeout(600)

S3_BUCKET = "results-bucket"  # the s3_bucket fixture's (importing tests/conftest.py would run it again)
ROWS = 120_000
SHARD_2 = r"^sku-(0[89]|1[01])\d{4}$"  # rows 80,000..119,999: the third shard of 40,000
FEW = r"^sku-0000[0-4]\d$"  # 50 requests of the first shard fail: under the example's 1 % tolerance


@pytest.fixture
def products_on_s3(s3_bucket, monkeypatch) -> str:
    """The example's input: 120,000 product rows as a CSV on the S3 server."""
    rows = "".join(f"sku-{i:06d},product {i}\n" for i in range(ROWS))
    s3_bucket.put_object(Bucket=S3_BUCKET, Key="input/products.csv", Body=("sku,name\n" + rows).encode())
    uri = f"s3://s3_results@{S3_BUCKET}/input/products.csv"
    monkeypatch.setenv("DASHSCOPE_SHARDED_INPUT", uri)
    return uri


def _lines(folder) -> list[bytes]:
    return [line for part in sorted(folder.glob("part-*.jsonl")) for line in part.read_bytes().splitlines()]


def test_example_redoes_only_the_failed_shard_and_merges_every_request_once(
    products_on_s3, load_example, states, dashscope_emulator, batches, tmp_path
):
    dashscope_emulator.configure(processing_rate=1e6)
    dag = load_example("example_dashscope_batch_sharded").dag

    # run 1: every request of the third shard fails, so the job fails and nothing is merged
    dashscope_emulator.fail_requests(f"{SHARD_2}|{FEW}")
    first = dag.test()
    assert states(first) == {
        "product_csv": "success",
        "run_shards": "failed",
        "merge_results": "upstream_failed",
    }
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    assert dashscope_emulator.request_counts()["POST /files"] == 3

    # run 2 of the same DAG run: only the third shard gets a new batch, on its already uploaded file
    dashscope_emulator.fail_requests(FEW)
    dashscope_emulator.clear_request_counts()
    second = dag.test(logical_date=first.logical_date, run_after=first.run_after)  # the same run id
    assert second.run_id == first.run_id
    assert second.state == "success", states(second)
    counts = dashscope_emulator.request_counts()
    assert counts["POST /batches"] == 1
    assert "POST /files" not in counts
    job = second.get_task_instance("run_shards").xcom_pull(task_ids="run_shards")
    assert [s["requests"] for s in job["shards"]] == [40_000, 40_000, 40_000]
    assert [s["generation"] for s in job["shards"]] == [1, 1, 2]
    assert len(batches()) == 4

    # one merged result set: every custom_id exactly once across output and errors
    (result_set,) = (tmp_path / "results").iterdir()
    output, errors = _lines(result_set / "output"), _lines(result_set / "errors")
    assert (len(output), len(errors)) == (ROWS - 50, 50)
    ids = [json.loads(line)["custom_id"] for line in output + errors]
    assert len(ids) == len(set(ids)) == ROWS
    manifest = json.loads((result_set / "manifest.json").read_text())
    # the job's batches: the third shard's failed first round too, its error lines superseded by round 2
    assert [s["batch_id"] for s in manifest["shards"]] == job["batch_ids"]
    assert [s["round"] for s in manifest["shards"]] == [1, 1, 1, 2]
    totals = manifest["totals"]
    for key in ("total", "completed", "failed"):
        assert totals["request_counts"][key] == sum(s["request_counts"][key] for s in manifest["shards"])
    assert totals["request_counts"]["completed"] == ROWS - 50
    assert (totals["output_lines"], totals["error_rows"]) == (ROWS - 50, 50)
    assert manifest["shards"][2]["files"]["errors"]["lines_left_out"] == 40_000
    for shard in manifest["shards"]:
        kept = {shard["input_file_id"], shard["output_file_id"], shard["error_file_id"]} - {None}
        assert set(shard["deleted_remote_files"]) == kept


@pytest.fixture
def sharding_dags(airflow_db, dashscope_conn, monkeypatch, tmp_path):
    """The two fan-out designs over 250 requests (3 shards of at most 100)."""
    from airflow import settings

    with (tmp_path / "input.jsonl").open("w") as f:
        for i in range(250):
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"hello {i}"}]}
            request = {
                "custom_id": f"req-{i:03d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            f.write(json.dumps(request) + "\n")
    monkeypatch.setenv("SHARDING_TEST_INPUT", str(tmp_path / "input.jsonl"))
    monkeypatch.setenv("SHARDING_TEST_SHARDS", str(tmp_path / "shards"))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    return load_dag_file("sharding_dags", TEST_DAGS / "sharding_dags.py")


@pytest.mark.parametrize("design", ["one_operator", "mapped"])
def test_rerun_after_a_failed_shard(sharding_dags, states, dashscope_emulator, design):
    dag = getattr(sharding_dags, design)
    dashscope_emulator.fail_requests(r"^req-1\d\d$")  # every request of the second shard
    first = dag.test()
    assert first.state == "failed", states(first)
    assert dashscope_emulator.request_counts()["POST /batches"] == 3

    dashscope_emulator.fail_requests(None)
    dashscope_emulator.clear_request_counts()
    second = dag.test(logical_date=first.logical_date, run_after=first.run_after)
    assert second.state == "success", states(second)
    counts = dashscope_emulator.request_counts()
    if design == "one_operator":  # re-attaches to the two good batches, replaces the bad one on its file
        assert (counts["POST /batches"], counts.get("POST /files", 0)) == (1, 0)
    else:  # the mapped uploads run again, so every create finds a new input file: all three are billed again
        assert (counts["POST /batches"], counts["POST /files"]) == (3, 3)


def test_sigterm_mid_upload_of_the_last_try_stops_the_job_and_leaves_no_file(
    sharding_dags, states, dashscope_emulator, client
):
    """A real SIGTERM to the process running the task: Airflow's own handler calls the task's on_kill."""
    dag = sharding_dags.one_operator
    dashscope_emulator.add_fault("latency", method="POST", path="/files", latency=0.5)

    def sigterm_during_the_second_upload() -> None:
        deadline = time.monotonic() + 120
        while dashscope_emulator.request_counts().get("POST /files", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=sigterm_during_the_second_upload)
    killer.start()
    try:
        first = dag.test()
    finally:
        killer.join()
        signal.signal(signal.SIGTERM, before)  # the task runner left its handler installed
    assert states(first) == {"run_shards": "failed"}
    counts = dashscope_emulator.request_counts()
    assert counts["POST /files"] == 2  # the upload in flight finished; none started after the signal
    assert "POST /batches" not in counts
    # no retry follows (retries=0): the two uploaded shards no batch uses are deleted, not orphaned
    assert [f.id for f in client.list_files() if f.purpose == "batch"] == []

    dashscope_emulator.clear_request_counts()
    second = dag.test(logical_date=first.logical_date, run_after=first.run_after)  # a re-run by hand
    assert second.state == "success", states(second)
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["POST /batches"]) == (3, 3)
    used = {b.input_file_id for b in client.list_batches()}
    assert {f.id for f in client.list_files() if f.purpose == "batch"} == used  # no orphaned file


def test_the_job_is_judged_over_every_round_of_its_shards(
    airflow_db, dashscope_conn, dashscope_emulator, monkeypatch, tmp_path, states, client
):
    """
    30 requests of the second shard fail once (HTTP 500) and its round 2 answers them; 10 of the third
    fail for good (HTTP 400): 240 of 250 answered (96 %) passes ``min_success_ratio=0.95``.
    """
    from airflow import settings

    with (tmp_path / "input.jsonl").open("w") as f:
        for i in range(250):
            body: dict = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"hello {i}"}]}
            if 200 <= i < 210:
                body["x_emulator_fail"] = {"status_code": 400}
            line = {"custom_id": f"req-{i:03d}", "method": "POST", "url": "/v1/chat/completions"}
            f.write(json.dumps({**line, "body": body}) + "\n")
    monkeypatch.setenv("SHARDING_TEST_INPUT", str(tmp_path / "input.jsonl"))
    monkeypatch.setenv("SHARDING_TEST_MIN_SUCCESS", "0.95")
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    dag = load_dag_file("sharding_dags", TEST_DAGS / "sharding_dags.py").job_verdict
    dashscope_emulator.fail_requests(r"^req-1[0-2]\d$", status=500, attempts=1)

    run = dag.test()
    assert states(run) == {"run_shards": "success"}
    job = run.get_task_instance("run_shards").xcom_pull(task_ids="run_shards")
    assert job["request_counts"] == {"total": 250, "completed": 240, "failed": 10}
    assert len(job["batch_ids"]) == 4  # the second shard's round
    assert check_billed_once(client, job["batch_ids"]) == {f"req-{i:03d}" for i in range(250)} - {
        f"req-{i:03d}" for i in range(200, 210)
    }


def test_carried_columns_of_every_shard_land_in_one_table(
    airflow_db, dashscope_conn, dashscope_emulator, s3_bucket, monkeypatch, tmp_path, states
):
    pq = pytest.importorskip("pyarrow.parquet")
    from airflow import settings

    rows = "".join(f"s{i:03d},product {i},{i}.25\n" for i in range(250))
    (tmp_path / "products.csv").write_text("sku,name,price\n" + rows)
    monkeypatch.setenv("SHARDING_TEST_CSV", str(tmp_path / "products.csv"))
    monkeypatch.setenv("SHARDING_TEST_COLUMNS", f"s3://s3_results@{S3_BUCKET}/columns")
    monkeypatch.setenv("SHARDING_TEST_RESULTS", (tmp_path / "results").as_uri())
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    dag = load_dag_file("sharding_dags", TEST_DAGS / "sharding_dags.py").carried_columns
    # 50 of the second shard's 100 fail once (HTTP 500, transient): a follow-up round answers them
    dashscope_emulator.fail_requests(r"^s1[0-4]\d$", status=500, attempts=1)

    run = dag.test()
    assert states(run) == {"run_shards": "success", "results": "success"}
    job = run.get_task_instance("run_shards").xcom_pull(task_ids="run_shards")
    assert [s["requests"] for s in job["shards"]] == [100, 100, 50]
    stored = s3_bucket.list_objects_v2(Bucket=S3_BUCKET, Prefix="columns/")["Contents"]
    assert len(job["batch_ids"]) == 4  # the second shard's round
    assert len(stored) == 4  # one per input file: the shards' and the round's

    found = {}
    for kind in ("output", "errors"):
        for part in sorted((tmp_path / "results" / "job" / kind).glob("part-*.parquet")):
            table = pq.read_table(part)
            assert table.schema.field("price").type == "double"
            for row in table.select(["custom_id", "name", "price"]).to_pylist():
                assert row["custom_id"] not in found
                found[row["custom_id"]] = (kind, row["name"], row["price"])
    assert found == {f"s{i:03d}": ("output", f"product {i}", i + 0.25) for i in range(250)}
