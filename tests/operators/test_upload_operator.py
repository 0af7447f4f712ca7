"""DashScopeUploadFileOperator: every input form is validated before a byte is uploaded."""

from __future__ import annotations

import json
import time
from io import BytesIO
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.validation.builder import write_requests_from_csv

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"


def upload(**kwargs) -> DashScopeUploadFileOperator:
    return DashScopeUploadFileOperator(task_id="upload", **kwargs)


def run_batch(client, file_id: str) -> list[dict]:
    """Run the uploaded file as a batch; the service accepted it if every line comes back answered."""
    batch = client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = client.retrieve_batch(batch.id)
    assert batch.status == "completed", batch.errors
    content = b"".join(client.iter_file_content(batch.output_file_id))
    return sorted((json.loads(line) for line in content.splitlines()), key=lambda r: r["custom_id"])


def test_local_file(dashscope_conn, client):
    file_id = upload(file=str(REQUESTS), endpoint="/v1/chat/ds-test").execute({})
    uploaded = client.retrieve_file(file_id)
    assert uploaded.filename.startswith("requests.")  # the client adds a token per upload
    assert uploaded.filename.endswith(".jsonl")
    assert uploaded.bytes == REQUESTS.stat().st_size


@pytest.mark.parametrize("source", [ObjectStoragePath(str(REQUESTS)), REQUESTS.as_uri()], ids=["path", "url"])
def test_object_storage_path_or_url(dashscope_conn, client, source):
    file_id = upload(file=source, filename="from-object-storage.jsonl").execute({})
    uploaded = client.retrieve_file(file_id)
    assert uploaded.filename.startswith("from-object-storage.")
    assert uploaded.filename.endswith(".jsonl")
    assert uploaded.bytes == REQUESTS.stat().st_size


def test_request_dicts(dashscope_conn, client):
    bodies = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    file_id = upload(requests=bodies, model="batch-test-model", endpoint="/v1/chat/ds-test").execute({})
    results = run_batch(client, file_id)
    assert [r["custom_id"] for r in results] == ["1", "2", "3"]
    assert {r["response"]["body"]["model"] for r in results} == {"batch-test-model"}


def test_csv_with_template(dashscope_conn, client, tmp_path):
    csv_file = tmp_path / "prompts.csv"
    csv_file.write_text("id,city\na,Paris\nb,Tokyo\n")
    file_id = upload(
        csv=str(csv_file),
        model="batch-test-model",
        template="What is the population of {city}?",
        endpoint="/v1/chat/ds-test",
    ).execute({})
    assert [r["custom_id"] for r in run_batch(client, file_id)] == ["a", "b"]
    expected = BytesIO()
    write_requests_from_csv(
        csv_file,
        expected,
        model="batch-test-model",
        template="What is the population of {city}?",
        endpoint="/v1/chat/ds-test",
    )
    assert client.retrieve_file(file_id).bytes == len(expected.getvalue())
    assert b"What is the population of Tokyo?" in expected.getvalue()


def test_invalid_file_costs_no_upload(dashscope_conn, dashscope_emulator, tmp_path):
    bad = tmp_path / "bad.jsonl"
    line = json.loads(REQUESTS.read_text().splitlines()[0])
    bad.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\nnot json\n")
    with pytest.raises(AirflowFailException) as raised:
        upload(file=str(bad), endpoint="/v1/chat/ds-test").execute({})
    message = str(raised.value)
    assert "line 2: duplicate_custom_id" in message
    assert "line 3: invalid_json_line" in message
    assert dashscope_emulator.request_counts() == {}


@pytest.mark.parametrize(
    ("response_format", "rule"),
    [
        ({"type": "json_schema", "json_schema": {"name": "verdict"}}, "json_schema.schema is missing"),
        (
            {"type": "json_schema", "json_schema": {"name": "verdict", "schema": '{"type": "object"}'}},
            "json_schema.schema must be a JSON Schema object, got a JSON string",
        ),
        ({"type": "json"}, "response_format.type must be one of"),
    ],
)
def test_a_malformed_response_format_costs_no_upload(
    dashscope_conn, dashscope_emulator, response_format, rule
):
    requests = [
        {"custom_id": "a", "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}},
        {
            "custom_id": "b",
            "body": {
                "model": "qwen-plus",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": response_format,
            },
        },
    ]
    with pytest.raises(AirflowFailException, match=r"requests item 2: invalid_response_format: ") as raised:
        upload(requests=requests).execute({})
    assert rule in str(raised.value)
    assert dashscope_emulator.request_counts() == {}


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        upload(file="a.jsonl", requests=[{"body": {}}])
    with pytest.raises(ValueError, match="exactly one"):
        upload()
    with pytest.raises(ValueError, match="needs model"):
        upload(csv="a.csv")


def test_carry_columns_rules_are_checked_when_the_dag_is_parsed(tmp_path):
    columns = tmp_path.as_uri()
    with pytest.raises(ValueError, match="carry_columns and carry_columns_to go together"):
        upload(csv="a.csv", model="m", carry_columns=["title"])
    with pytest.raises(ValueError, match="carry_columns and carry_columns_to go together"):
        upload(csv="a.csv", model="m", carry_columns_to=columns)
    with pytest.raises(ValueError, match="a JSONL file= has no columns to carry"):
        upload(file="a.jsonl", carry_columns=["title"], carry_columns_to=columns)
    with pytest.raises(ValueError, match="'finish_reason' is a column of the result tables already"):
        upload(csv="a.csv", model="m", carry_columns=["finish_reason"], carry_columns_to=columns)


def test_a_carried_column_missing_from_the_csv_costs_no_upload(dashscope_conn, dashscope_emulator, tmp_path):
    source = tmp_path / "products.csv"
    source.write_text("id,name\na,Lamp\n")
    with pytest.raises(
        AirflowFailException, match=r"products\.csv line 1: carried column 'price' is not in the CSV header"
    ):
        upload(
            csv=str(source),
            model="qwen-plus",
            template="Describe {name}",
            carry_columns=["name", "price"],
            carry_columns_to=(tmp_path / "columns").as_uri(),
        ).execute({})
    assert dashscope_emulator.request_counts() == {}
    assert not (tmp_path / "columns").exists()


def test_columns_that_cannot_be_stored_delete_the_uploaded_file(dashscope_conn, dashscope_emulator, tmp_path):
    """A file without its columns would give tables without them: the upload is undone, the task fails."""
    (tmp_path / "blocked").write_text("a file where the directory should be")
    with pytest.raises(OSError, match="blocked"):
        upload(
            requests=[{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}, "t": 1}],
            model="qwen-plus",
            carry_columns=["t"],
            carry_columns_to=(tmp_path / "blocked" / "columns").as_uri(),
        ).execute({})
    counts = dashscope_emulator.request_counts()
    assert (counts["POST /files"], counts["DELETE /files/{file_id}"]) == (1, 1)
