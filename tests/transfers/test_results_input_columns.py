"""Input columns carried from the upload (``carry_columns``) into the result tables (``input_columns``).

Real operators against the emulator: the upload operator builds and uploads the input and stores the
carried columns beside it; a batch runs; the transfer joins them into the Parquet/CSV tables.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from dashscope_batch_emulator import emulated_embedding

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)
from airflow_provider_dashscope_batch.validation.builder import write_requests

pytestmark = pytest.mark.usefixtures("dashscope_conn")

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


def run_batch(client: DashScopeClient, file_id: str, endpoint: str) -> Batch:
    batch = client.create_batch(input_file_id=file_id, endpoint=endpoint)
    deadline = time.monotonic() + 60
    while not batch.status.is_terminal:
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.05)
        batch = client.retrieve_batch(batch.id)
    return batch


def transfer(tmp_path: Path, columns: Path, **kwargs: Any) -> dict[str, Any]:
    return DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        destination=(tmp_path / "results").as_uri(),
        input_columns=columns.as_uri(),
        **kwargs,
    ).execute({})


def test_csv_columns_land_in_the_parquet_table_of_a_chat_batch(client, tmp_path, dashscope_emulator):
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "products.csv"
    source.write_text('sku,name,price,brand\nA1,"Lamp, brass",12.50,Lumo\nB2,Chair,80,Oak & Co\nC3,Desk,,\n')
    columns = tmp_path / "columns"
    dashscope_emulator.fail_requests("^C3$")
    file_id = DashScopeUploadFileOperator(
        task_id="upload",
        csv=str(source),
        id_column="sku",
        template="Describe {name}.",
        model="qwen-plus",
        carry_columns=["name", "price"],
        carry_columns_to=columns.as_uri(),
    ).execute({})
    sidecar = columns / f"{file_id}.jsonl"
    header, *rows = sidecar.read_text().splitlines()
    assert json.loads(header)["columns"] == {"name": "string", "price": "float"}  # inferred from the cells
    assert [json.loads(r) for r in rows] == [
        ["A1", "Lamp, brass", 12.5],
        ["B2", "Chair", 80.0],
        ["C3", "Desk", None],
    ]
    batch = run_batch(client, file_id, CHAT)

    manifest = transfer(tmp_path, columns, batch_id=batch.id, output_format="parquet")

    landed = tmp_path / "results" / batch.id
    output = pq.read_table(landed / "output.parquet")
    assert output.column_names[-2:] == ["name", "price"]
    assert {r["custom_id"]: (r["name"], r["price"]) for r in output.to_pylist()} == {
        "A1": ("Lamp, brass", 12.5),
        "B2": ("Chair", 80.0),
    }
    assert all(r["content"] for r in output.to_pylist())  # the answers are still there, beside the columns
    errors = pq.read_table(landed / "errors.parquet").to_pylist()
    assert [(r["custom_id"], r["name"], r["price"]) for r in errors] == [("C3", "Desk", None)]
    assert output.schema.metadata[b"dashscope.table_version"] == b"2"
    assert json.loads(output.schema.metadata[b"dashscope.input_columns"]) == ["name", "price"]
    table = manifest["shards"][0]["files"]["output"]["table"]
    assert table["version"] == 2
    assert table["input_columns"] == ["name", "price"]
    assert list(table["columns"])[-2:] == ["name", "price"]
    assert table["columns"]["name"] == "string"
    assert table["columns"]["price"] == "float"


def test_request_dict_keys_are_carried_typed_and_left_out_of_the_line(client, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    columns = tmp_path / "columns"
    requests = [
        {
            "custom_id": f"q{i}",
            "body": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "ticket": 1000 + i,
            "score": [0.5, 2, None][i],
            "vip": i == 1,
        }
        for i in range(3)
    ]
    file_id = DashScopeUploadFileOperator(
        task_id="upload",
        requests=requests,
        model="qwen-plus",
        carry_columns=["ticket", "score", "vip"],
        carry_columns_to=columns.as_uri(),
    ).execute({})
    stripped = io.BytesIO()  # the service gets only the request
    write_requests([{k: r[k] for k in ("custom_id", "body")} for r in requests], stripped, model="qwen-plus")
    assert client.retrieve_file(file_id).bytes == len(stripped.getvalue())
    batch = run_batch(client, file_id, CHAT)

    manifest = transfer(tmp_path, columns, batch_id=batch.id, output_format="parquet")

    output = pq.read_table(tmp_path / "results" / batch.id / "output.parquet")
    assert [str(output.schema.field(n).type) for n in ("ticket", "score", "vip")] == [
        "int64",
        "double",
        "bool",
    ]
    rows = sorted(output.to_pylist(), key=lambda r: r["custom_id"])
    assert [(r["ticket"], r["score"], r["vip"]) for r in rows] == [
        (1000, 0.5, False),
        (1001, 2.0, True),
        (1002, None, False),
    ]
    columns_record = manifest["shards"][0]["files"]["output"]["table"]["columns"]
    assert [columns_record[n] for n in ("ticket", "score", "vip")] == ["int", "float", "bool"]


def test_packed_embeddings_get_each_texts_own_columns_in_csv(client, tmp_path, dashscope_emulator):
    source = tmp_path / "texts.csv"
    texts = {f"d{i}": f"text number {i}" for i in range(5)}
    source.write_text(
        "doc_id,text,lang\n" + "".join(f"{k},{v},{'zh' if k == 'd3' else 'en'}\n" for k, v in texts.items())
    )
    columns = tmp_path / "columns"
    file_id = DashScopeUploadFileOperator(
        task_id="upload",
        csv=str(source),
        id_column="doc_id",
        text_column="text",
        model="text-embedding-v4",
        endpoint=EMBEDDINGS,
        inputs_per_request=2,
        body_params={"dimensions": 64},
        carry_columns=["text", "lang"],
        carry_columns_to=columns.as_uri(),
    ).execute({})
    batch = run_batch(client, file_id, EMBEDDINGS)

    transfer(tmp_path, columns, batch_id=batch.id, output_format="csv")

    with (tmp_path / "results" / batch.id / "output.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["text", "lang"]
    assert len({r["custom_id"] for r in rows}) == 3  # 5 texts in 3 requests
    assert {r["input_id"]: (r["text"], r["lang"]) for r in rows} == {
        k: (v, "zh" if k == "d3" else "en") for k, v in texts.items()
    }
    for row in rows:
        assert json.loads(row["embedding"]) == pytest.approx(emulated_embedding(row["text"], 64), abs=1e-6)


def test_merged_batches_each_join_their_own_input(client, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    columns = tmp_path / "columns"
    batches = []
    for part in range(2):
        requests = [
            {
                "custom_id": f"p{part}-{i}",
                "body": {"messages": [{"role": "user", "content": "hi"}]},
                "part": part,
            }
            for i in range(2)
        ]
        file_id = DashScopeUploadFileOperator(
            task_id="upload",
            requests=requests,
            model="qwen-plus",
            carry_columns=["part"],
            carry_columns_to=columns.as_uri(),
        ).execute({})
        batches.append(run_batch(client, file_id, CHAT))

    transfer(tmp_path, columns, batch_ids=[b.id for b in batches], result_set="job", output_format="parquet")

    table = pq.read_table(tmp_path / "results" / "job" / "output")
    assert sorted((r["custom_id"], r["part"]) for r in table.to_pylist()) == [
        ("p0-0", 0),
        ("p0-1", 0),
        ("p1-0", 1),
        ("p1-1", 1),
    ]


def test_a_batch_without_stored_columns_publishes_nothing(client, tmp_path, make_batch):
    batch = make_batch(2)  # uploaded without carry_columns
    columns = tmp_path / "columns"
    columns.mkdir()
    with pytest.raises(
        AirflowFailException, match=rf"no .*{batch.input_file_id}\.jsonl for batch {batch.id}"
    ):
        transfer(tmp_path, columns, batch_id=batch.id, output_format="parquet")
    assert not (tmp_path / "results" / batch.id / "manifest.json").exists()
    assert not list((tmp_path / "results").rglob("output.*"))


def test_batches_with_different_columns_publish_nothing(client, tmp_path):
    columns = tmp_path / "columns"
    batches = []
    for key in ("a", "b"):
        file_id = DashScopeUploadFileOperator(
            task_id="upload",
            requests=[{"body": {"messages": [{"role": "user", "content": "hi"}]}, key: "x"}],
            model="qwen-plus",
            carry_columns=[key],
            carry_columns_to=columns.as_uri(),
        ).execute({})
        batches.append(run_batch(client, file_id, CHAT))
    with pytest.raises(
        AirflowFailException, match=r"carries \{'b': 'string'\}, an earlier batch \{'a': 'string'\}"
    ):
        transfer(tmp_path, columns, batch_ids=[b.id for b in batches], result_set="job", output_format="csv")
    assert not list((tmp_path / "results").rglob("part-*"))


def test_a_damaged_sidecar_names_its_line(client, tmp_path, make_batch):
    batch = make_batch(1)
    columns = tmp_path / "columns"
    columns.mkdir()
    header = {"format": "dashscope-input-columns", "version": 1, "file_id": "x", "columns": {"a": "string"}}
    (columns / f"{batch.input_file_id}.jsonl").write_text(
        json.dumps(header) + '\n["req-0", "ok"]\n["req-1"]\n'
    )
    with pytest.raises(AirflowFailException, match=r"\.jsonl line 3: expected \[custom_id, 1 values\]"):
        transfer(tmp_path, columns, batch_id=batch.id, output_format="csv")


def test_jsonl_output_refuses_input_columns(tmp_path):
    with pytest.raises(ValueError, match="input_columns adds table columns: it needs output_format"):
        DashScopeBatchResultsToObjectStorageOperator(
            task_id="t", batch_id="b", destination=tmp_path.as_uri(), input_columns=tmp_path.as_uri()
        )


def test_s3_sidecar_and_tables(client, s3_bucket):
    """On S3 (moto): the sidecar is an object under carry_columns_to, read back by the transfer."""
    pq = pytest.importorskip("pyarrow.parquet")
    base = "s3://s3_results@results-bucket"  # the s3_bucket fixture's connection and bucket
    requests = [{"custom_id": "k", "body": {"messages": [{"role": "user", "content": "hi"}]}, "team": "blue"}]
    file_id = DashScopeUploadFileOperator(
        task_id="upload",
        requests=requests,
        model="qwen-plus",
        carry_columns=["team"],
        carry_columns_to=f"{base}/columns",
    ).execute({})
    stored = s3_bucket.get_object(Bucket="results-bucket", Key=f"columns/{file_id}.jsonl")["Body"].read()
    assert stored.splitlines()[1:] == [b'["k","blue"]']
    batch = run_batch(client, file_id, CHAT)
    DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer",
        batch_id=batch.id,
        destination=f"{base}/results",
        input_columns=f"{base}/columns",
        output_format="parquet",
    ).execute({})
    body = s3_bucket.get_object(Bucket="results-bucket", Key=f"results/{batch.id}/output.parquet")[
        "Body"
    ].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [(r["custom_id"], r["team"]) for r in rows] == [("k", "blue")]
