"""
The sharded operator's carried input columns and its follow-up rounds' budget, against the emulator.

Real operators: the sharded operator splits, uploads and batches the shards and stores each shard's
carried columns on moto's S3 server; the results transfer joins them into one table.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)
from tests.operators.operator_helpers import check_billed_once
from tests.operators.shard_helpers import FAST, TaskInstance, drive, shard_bodies
from tests.operators.test_shards_rounds import expire_with_two_answered_each

pytestmark = pytest.mark.timeout(180)

BUCKET = "results-bucket"  # the s3_bucket fixture's
COLUMNS = f"s3://s3_results@{BUCKET}/columns"


def sidecars(s3) -> dict[str, list]:
    """Every stored sidecar on the S3 server, by input file id: its header, then its rows."""
    found = {}
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="columns/").get("Contents", []):
        lines = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode().splitlines()
        header = json.loads(lines[0])
        found[header["file_id"]] = [header, *(json.loads(line) for line in lines[1:])]
    return found


def merged(batch_ids: list[str], tmp_path, key: str = "custom_id") -> dict[str, dict[str, dict]]:
    """The transfer's one CSV table of the job's batches with the carried columns: per kind, by id."""
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        batch_ids=batch_ids,
        destination=tmp_path.as_uri(),
        result_set="job",
        output_format="csv",
        input_columns=COLUMNS,
    ).execute({"ti": TaskInstance()})
    rows: dict[str, dict[str, dict]] = {"output": {}, "errors": {}}
    for kind, by_id in rows.items():
        for part in sorted((tmp_path / "job" / kind).glob("part-*.csv")):
            with part.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    assert row[key] not in by_id
                    by_id[row[key]] = row
    return rows


def sent(emulator) -> dict[str, int]:
    counts = emulator.request_counts()
    return {k: v for k, v in counts.items() if k in ("POST /files", "POST /batches")}


def test_a_csv_job_in_three_shards_ends_as_one_table_with_its_columns(
    dashscope_conn, dashscope_emulator, client, s3_bucket, tmp_path
):
    source = tmp_path / "products.csv"
    # price is whole in the first shards, a fraction only in the last: one type (float) for every shard
    prices = [str(10 + i) for i in range(9)] + ["7.5"]
    source.write_text(
        "sku,name,price\n" + "".join(f"s{i},product {i},{prices[i]}\n" for i in range(10)), encoding="utf-8"
    )
    ti = TaskInstance()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        csv=str(source),
        id_column="sku",
        template="Describe {name}.",
        model="qwen-plus",
        max_requests_per_shard=4,
        carry_columns=["name", "price"],
        carry_columns_to=COLUMNS,
        **FAST,
    )
    result, _ = drive(operator, {"ti": ti})
    assert [s["requests"] for s in result["shards"]] == [4, 4, 2]
    batches = [client.retrieve_batch(b) for b in result["batch_ids"]]
    stored = sidecars(s3_bucket)
    assert set(stored) == {b.input_file_id for b in batches}
    assert {json.dumps(s[0]["columns"]) for s in stored.values()} == {'{"name": "string", "price": "float"}'}
    assert [[row[0] for row in stored[b.input_file_id][1:]] for b in batches] == [
        ["s0", "s1", "s2", "s3"],
        ["s4", "s5", "s6", "s7"],
        ["s8", "s9"],
    ]

    rows = merged(result["batch_ids"], tmp_path)
    assert rows["errors"] == {}
    assert {k: (r["name"], float(r["price"])) for k, r in rows["output"].items()} == {
        f"s{i}": (f"product {i}", float(prices[i])) for i in range(10)
    }


def test_packed_embeddings_texts_are_cut_where_their_requests_are(
    dashscope_conn, dashscope_emulator, client, s3_bucket, tmp_path
):
    source = tmp_path / "docs.csv"
    source.write_text("doc_id,text\n" + "".join(f"d{i},text number {i}\n" for i in range(11)))
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        csv=str(source),
        id_column="doc_id",
        text_column="text",
        model="text-embedding-v4",
        endpoint="/v1/embeddings",
        inputs_per_request=3,  # 11 texts in 4 requests: 3, 3, 3, 2
        body_params={"dimensions": 64},
        max_requests_per_shard=2,
        carry_columns=["text"],
        carry_columns_to=COLUMNS,
        **FAST,
    )
    result, _ = drive(operator, {"ti": TaskInstance()})
    assert [s["requests"] for s in result["shards"]] == [2, 2]
    batches = [client.retrieve_batch(b) for b in result["batch_ids"]]
    stored = sidecars(s3_bucket)
    assert [[row[0] for row in stored[b.input_file_id][1:]] for b in batches] == [
        [f"d{i}" for i in range(6)],
        [f"d{i}" for i in range(6, 11)],
    ]
    rows = merged(result["batch_ids"], tmp_path, "input_id")
    assert rows["errors"] == {}
    texts = {k: r["text"] for k, r in rows["output"].items()}
    assert texts == {f"d{i}": f"text number {i}" for i in range(11)}


def test_a_follow_up_round_keeps_the_join(dashscope_conn, dashscope_emulator, client, s3_bucket, tmp_path):
    dashscope_emulator.configure(time_scale=0)
    requests = [{**r, "ticket": 1000 + i} for i, r in enumerate(shard_bodies(12))]
    ti = TaskInstance()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=requests,
        max_requests_per_shard=4,
        carry_columns=["ticket"],
        carry_columns_to=COLUMNS,
        **FAST,
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client, then_fast=True)
    drive(operator, {"ti": ti})
    thread.join()
    batch_ids = ti.xcoms["batch_ids"]
    batches = [client.retrieve_batch(b) for b in batch_ids]
    assert [(b.status, b.request_counts.total) for b in batches] == [("expired", 4), ("completed", 2)] * 3
    assert check_billed_once(client, batch_ids) == {f"r{i}" for i in range(12)}
    stored = sidecars(s3_bucket)
    assert set(stored) == {b.input_file_id for b in batches}  # every round's input file has its columns
    for first, follow_up in zip(batches[::2], batches[1::2], strict=True):
        assert stored[follow_up.input_file_id][1:] == stored[first.input_file_id][1:]

    rows = merged(batch_ids, tmp_path)
    assert rows["errors"] == {}
    assert {k: int(r["ticket"]) for k, r in rows["output"].items()} == {f"r{i}": 1000 + i for i in range(12)}


def test_a_retry_after_expired_shards_keeps_the_join(
    dashscope_conn, dashscope_emulator, client, s3_bucket, tmp_path
):
    dashscope_emulator.configure(time_scale=0)
    requests = [{**r, "ticket": 1000 + i} for i, r in enumerate(shard_bodies(12))]
    ti = TaskInstance()
    make = lambda: DashScopeShardedBatchOperator(  # noqa: E731
        task_id="run_shards",
        requests=requests,
        max_requests_per_shard=4,
        resubmit_rounds=0,
        carry_columns=["ticket"],
        carry_columns_to=COLUMNS,
        **FAST,
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client)
    with pytest.raises(AirflowException, match="expired"):
        drive(make(), {"ti": ti})
    thread.join()
    dashscope_emulator.configure(time_scale=1, processing_rate=1000)
    drive(make(), {"ti": ti})  # the next try: each shard's remainder, its columns stored with it
    batch_ids = ti.xcoms["batch_ids"]
    batches = [client.retrieve_batch(b) for b in batch_ids]
    assert [(b.status, b.request_counts.total) for b in batches] == [("expired", 4), ("completed", 2)] * 3
    assert set(sidecars(s3_bucket)) == {b.input_file_id for b in batches}
    rows = merged(batch_ids, tmp_path)
    assert rows["errors"] == {}
    assert {k: int(r["ticket"]) for k, r in rows["output"].items()} == {f"r{i}": 1000 + i for i in range(12)}


def test_a_missing_csv_column_is_refused_before_anything_is_uploaded(
    dashscope_conn, dashscope_emulator, s3_bucket, tmp_path
):
    source = tmp_path / "products.csv"
    source.write_text("sku,name\n" + "".join(f"s{i},product {i}\n" for i in range(10)), encoding="utf-8")
    dashscope_emulator.clear_request_counts()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        csv=str(source),
        id_column="sku",
        text_column="name",
        model="qwen-plus",
        max_requests_per_shard=4,
        carry_columns=["price"],
        carry_columns_to=COLUMNS,
    )
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": TaskInstance()})
    assert f"{source} line 1: carried column 'price' is not in the CSV header" in str(failure.value)
    assert sent(dashscope_emulator) == {}
    assert sidecars(s3_bucket) == {}


def test_a_type_change_in_a_later_shard_is_refused_before_anything_is_uploaded(
    dashscope_conn, dashscope_emulator, s3_bucket
):
    requests = [{**r, "ticket": 1000 + i} for i, r in enumerate(shard_bodies(12))]
    requests[9]["ticket"] = "T-1009"  # the third shard's
    dashscope_emulator.clear_request_counts()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=requests,
        max_requests_per_shard=4,
        carry_columns=["ticket"],
        carry_columns_to=COLUMNS,
        estimate_cost=False,  # the columns are still checked over the whole input
    )
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({"ti": TaskInstance()})
    assert "request 10: carried column 'ticket' holds a value of type 'string'" in str(failure.value)
    assert sent(dashscope_emulator) == {}
    assert sidecars(s3_bucket) == {}


def test_carry_columns_are_checked_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        DashScopeShardedBatchOperator(task_id="t", requests=[], carry_columns=["ticket"])
    with pytest.raises(ValueError, match="a JSONL file= has no columns"):
        DashScopeShardedBatchOperator(
            task_id="t", file="in.jsonl", carry_columns=["ticket"], carry_columns_to=COLUMNS
        )
    with pytest.raises(ValueError, match="'content' is a column of the result tables"):
        DashScopeShardedBatchOperator(
            task_id="t", requests=[], carry_columns=["content"], carry_columns_to=COLUMNS
        )


# output tokens cost 1 CNY per 1K (0.5 at the batch discount), input nothing: the job's expected
# estimate (1 output token a request) is 12 x 0.0005 = 0.006; the emulator's answers are longer
PRICES = {"qwen-plus": {"tiers": [{"max_input_tokens": None, "input": "0", "output": "1"}]}}


def test_a_follow_up_round_over_budget_fails_before_it_is_uploaded(
    dashscope_conn, dashscope_emulator, client
):
    dashscope_emulator.configure(time_scale=0)
    dashscope_emulator.clear_request_counts()
    ti = TaskInstance()
    operator = DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=shard_bodies(12),
        max_requests_per_shard=4,
        prices=PRICES,
        budget_basis="expected",
        expected_output_tokens=1,
        max_cost="0.01",
        **FAST,
    )
    thread = expire_with_two_answered_each(dashscope_emulator, client, then_fast=True)
    with pytest.raises(AirflowFailException) as failure:
        drive(operator, {"ti": ti})
    thread.join()
    message = str(failure.value)
    assert Decimal(ti.xcoms["cost_estimate"]["cost_expected"]) == Decimal("0.006")
    assert "The next round's estimate 0.0030 plus the" in message
    assert "exceeds max_cost=0.01 CNY; no further round was created" in message
    assert "(6 answered, 0 permanently failed, 6 unanswered)" in message
    assert sent(dashscope_emulator) == {"POST /files": 3, "POST /batches": 3}  # the first round's only
    assert [b.status for b in client.list_batches()] == ["expired"] * 3
