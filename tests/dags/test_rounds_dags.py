"""Job rounds through ``dag.test()``: upload -> create -> transfer finishes a job and tables it once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.dags.dag_helpers import TEST_DAGS, load_dag_file

pytestmark = pytest.mark.timeout(300)

DAY = 86400


def _input(path: Path, ids: list[str]) -> Path:
    with path.open("w") as out:
        for custom_id in ids:
            body = {"model": "batch-test-model", "messages": [{"role": "user", "content": custom_id}]}
            out.write(
                json.dumps(
                    {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/ds-test", "body": body}
                )
            )
            out.write("\n")
    return path


@pytest.fixture
def rounds_dags(airflow_db, dashscope_conn, monkeypatch, tmp_path):
    from airflow import settings

    monkeypatch.setattr(settings, "DAGS_FOLDER", str(TEST_DAGS))
    monkeypatch.setenv("ROUNDS_TEST_RESULTS", (tmp_path / "results").as_uri())

    def load(ids: list[str]):
        monkeypatch.setenv("ROUNDS_TEST_INPUT", str(_input(tmp_path / "in.jsonl", ids)))
        return load_dag_file("rounds_dags", TEST_DAGS / "rounds_dags.py")

    return load


def _rows(tmp_path: Path, kind: str) -> list[str]:
    ids = []
    for part in sorted((tmp_path / "results" / "job" / kind).glob("part-*.csv")):
        with part.open(newline="") as handle:
            ids.extend(row["custom_id"] for row in csv.DictReader(handle))
    return ids


def _billed_once(client, manifest: dict) -> None:
    """The rounds' completed counts sum to the answered ids, checked against the emulator's batches."""
    batches = [client.retrieve_batch(shard["batch_id"]) for shard in manifest["shards"]]
    assert sum(b.request_counts.completed for b in batches) == manifest["totals"]["output_lines"]


@pytest.mark.parametrize("mode", ["in_process", "deferred"])
def test_transient_failures_finished_by_a_second_round_table_each_request_once(
    rounds_dags, states, dashscope_emulator, client, tmp_path, mode
):
    ids = [f"ok-{n}" for n in range(5)] + [f"busy-{n}" for n in range(3)]
    dashscope_emulator.fail_requests(r"^busy-", status=429, attempts=1)
    run = getattr(rounds_dags(ids), f"rounds_{mode}").test()
    assert states(run) == {"upload": "success", "create": "success", "transfer": "success"}
    manifest = run.get_task_instance("transfer").xcom_pull(task_ids="transfer")
    assert [s["round"] for s in manifest["shards"]] == [1, 2]
    assert manifest["shards"][1]["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert sorted(_rows(tmp_path, "output")) == sorted(ids)
    assert _rows(tmp_path, "errors") == []
    assert manifest["cost"]["estimates"]  # the upload's estimate reached the transfer through create
    _billed_once(client, manifest)


def test_a_retry_after_expiry_sends_only_the_remainder(
    rounds_dags, states, dashscope_emulator, client, tmp_path, dag_test_acting_on_batch
):
    ids = [f"r-{n}" for n in range(10)]
    dashscope_emulator.configure(time_scale=0)

    def expire_with_three_answered(_: str) -> None:
        dashscope_emulator.configure(processing_rate=3.5 / DAY)
        dashscope_emulator.advance(DAY + 10)
        dashscope_emulator.configure(time_scale=1, processing_rate=1000)

    run = dag_test_acting_on_batch(rounds_dags(ids).retry_after_expiry, expire_with_three_answered)
    assert states(run) == {"upload": "success", "create": "success", "transfer": "success"}
    assert run.get_task_instance("create").try_number == 2
    manifest = run.get_task_instance("transfer").xcom_pull(task_ids="transfer")
    assert [s["request_counts"]["total"] for s in manifest["shards"]] == [10, 7]
    assert manifest["shards"][0]["status"] == "expired"
    assert sorted(_rows(tmp_path, "output")) == sorted(ids)
    _billed_once(client, manifest)
