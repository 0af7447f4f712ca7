"""Building request JSONL from dicts and from CSV, then validating the result."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation.builder import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.validation.rules import validate_jsonl


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_requests_and_bodies(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    items = [
        {"messages": [{"role": "user", "content": "你好"}]},
        {"custom_id": "mine", "body": {"model": "qwen-plus", "messages": [{"role": "user", "content": "a"}]}},
        {"body": {"messages": [{"role": "user", "content": "b"}]}},
    ]
    assert write_requests(iter(items), out, model="qwen-plus") == 3
    raw = out.read_bytes()
    assert "你好".encode() in raw  # not \u-escaped
    assert b'{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{"model":"qwen-plus"' in raw
    lines = read_lines(out)
    assert [line["custom_id"] for line in lines] == ["1", "mine", "3"]
    assert all(line["body"]["model"] == "qwen-plus" for line in lines)
    assert validate_jsonl(out, endpoint="/v1/chat/completions").ok


def test_requests_to_a_binary_stream_left_open() -> None:
    stream = io.BytesIO()
    assert write_requests([{"input": "a"}, {"input": "b"}], stream, endpoint="/v1/embeddings", model="e") == 2
    assert not stream.closed
    stream.seek(0)
    report = validate_jsonl(stream)
    assert report.ok
    assert (report.endpoint, report.line_count) == ("/v1/embeddings", 2)


@pytest.mark.parametrize(
    ("items", "error", "match"),
    [
        ([{"messages": []}], ValueError, "request 1: body has no model"),
        ([{"model": "m"}, "text"], TypeError, "request 2: expected a dict, got str"),
        ([{"body": ["x"]}], TypeError, "request 1: body must be a dict"),
        ([{"model": "m", "temperature": float("nan")}], ValueError, "request 1: not serialisable"),
        ([{"model": "m", "when": object()}], ValueError, "request 1: not serialisable"),
    ],
)
def test_requests_refuse_bad_items(
    tmp_path: Path, items: list[Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        write_requests(items, tmp_path / "out.jsonl")


def test_requests_refuse_unknown_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="endpoint must be one of"):
        write_requests([{"model": "m"}], tmp_path / "out.jsonl", endpoint="/v1/chat")


def test_csv_like_the_docs_tool(tmp_path: Path) -> None:
    """No header, first column the id, second the text: the docs' script, done properly."""
    src = tmp_path / "input_demo.csv"
    src.write_text('1,"Hello, world"\n2,"多行\n文字"\n\n3,What is 2+2?\n', encoding="utf-8")
    out = tmp_path / "input_demo.jsonl"
    n = write_requests_from_csv(
        src, out, model="qwen-turbo", header=False, system_prompt="You are a helpful assistant."
    )
    assert n == 3
    lines = read_lines(out)
    assert [line["custom_id"] for line in lines] == ["1", "2", "3"]
    assert lines[1]["body"] == {
        "model": "qwen-turbo",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "多行\n文字"},
        ],
    }
    assert validate_jsonl(out, endpoint="/v1/chat/completions").ok


def test_csv_with_header_template_and_body_params(tmp_path: Path) -> None:
    src = tmp_path / "questions.csv"
    src.write_text(
        "\ufeffqid;topic;question\nq1;maths;What is 2+2?\nq2;geo;Where is 杭州?\n", encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    n = write_requests_from_csv(
        src,
        out,
        model="qwen-plus",
        id_column="qid",
        template="[{topic}] {question} (row field 0: {0})",
        delimiter=";",
        body_params={"temperature": 0.2, "enable_thinking": False},
    )
    assert n == 2
    lines = read_lines(out)
    assert lines[1]["custom_id"] == "q2"
    assert lines[1]["body"] == {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "[geo] Where is 杭州? (row field 0: q2)"}],
        "temperature": 0.2,
        "enable_thinking": False,
    }
    assert validate_jsonl(out).ok


def test_csv_embeddings_from_binary_stream_with_auto_ids() -> None:
    src = io.BytesIO("text,lang\nbonjour,fr\n你好,zh\n".encode())
    out = io.BytesIO()
    n = write_requests_from_csv(
        src, out, model="text-embedding-v4", text_column="text", id_column=None, endpoint="/v1/embeddings"
    )
    assert n == 2
    assert not src.closed
    out.seek(0)
    lines = [json.loads(line) for line in out]
    assert [(x["custom_id"], x["body"]) for x in lines] == [
        ("1", {"model": "text-embedding-v4", "input": "bonjour"}),
        ("2", {"model": "text-embedding-v4", "input": "你好"}),
    ]
    out.seek(0)
    assert validate_jsonl(out, endpoint="/v1/embeddings").ok


def test_csv_from_text_stream() -> None:
    out = io.BytesIO()
    assert write_requests_from_csv(io.StringIO("id,text\na,hello\n"), out, model="m") == 1
    assert json.loads(out.getvalue())["body"]["messages"] == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("csv_text", "kwargs", "match"),
    [
        ("id,text\na,hi\n,hello\n", {}, r"in\.csv line 3: id column 0 is missing or empty"),
        ("id,text\na,hi\nb\n", {}, r"in\.csv line 3: text column 1 is missing"),
        ("id,text\na,hi\nb,  \n", {}, r"in\.csv line 3: the request text is empty"),
        ("id,text\na,hi\n", {"text_column": "question"}, r"text_column 'question' not in the CSV header"),
        ("id,text\na,hi\n", {"template": "{missing}"}, r"in\.csv line 2: template placeholder 'missing'"),
        ("a,hi\n", {"header": False, "id_column": "id"}, "is a name, but the CSV has no header"),
        ("id,text\na,hi\n", {"endpoint": "/v1/embeddings", "system_prompt": "x"}, "system_prompt applies"),
        ("id,text\na,hi\n", {"body_params": {"t": float("inf")}}, "body_params are not serialisable"),
    ],
)
def test_csv_refuses_bad_input_naming_the_row(tmp_path: Path, csv_text: str, kwargs: Any, match: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(csv_text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        write_requests_from_csv(src, tmp_path / "out.jsonl", model="m", **kwargs)


def test_csv_from_object_storage(s3_bucket: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    bucket = "results-bucket"  # created by the s3_bucket fixture, with the aws connection s3_results
    s3_bucket.put_object(Bucket=bucket, Key="in/rows.csv", Body="id,text\na,你好\nb,hi\n".encode())
    source = ObjectStoragePath(f"s3://s3_results@{bucket}/in/rows.csv")
    out = tmp_path / "out.jsonl"
    assert write_requests_from_csv(source, out, model="qwen-plus", text_column="text", id_column="id") == 2
    lines = read_lines(out)
    assert [line["custom_id"] for line in lines] == ["a", "b"]
    assert lines[0]["body"]["messages"][-1]["content"] == "你好"


def test_csv_embeddings_packed_up_to_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "texts.csv"
    source.write_text("id,text\n" + "".join(f"t{i},text number {i}\n" for i in range(23)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    lines = write_requests_from_csv(
        source, out, model="text-embedding-v4", endpoint="/v1/embeddings", inputs_per_request=10
    )
    assert lines == 3
    requests = read_lines(out)
    assert [len(r["body"]["input"]) for r in requests] == [10, 10, 3]
    assert json.loads(requests[2]["custom_id"]) == ["t20", "t21", "t22"]
    assert requests[0]["body"]["input"][3] == "text number 3"
    assert validate_jsonl(out, endpoint="/v1/embeddings").ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs_per_request": 11}, "at most 10 for text-embedding-v4"),
        ({"inputs_per_request": 2, "endpoint": "/v1/chat/completions"}, "/v1/embeddings requests only"),
        ({"image_column": "text"}, "image_column applies to chat endpoints"),
    ],
)
def test_csv_packing_and_images_refused_where_they_do_not_apply(tmp_path: Path, kwargs, message) -> None:
    source = tmp_path / "texts.csv"
    source.write_text("id,text\n1,a\n", encoding="utf-8")
    options = {"model": "text-embedding-v4", "endpoint": "/v1/embeddings", **kwargs}
    with pytest.raises(ValueError, match=message):
        write_requests_from_csv(source, tmp_path / "out.jsonl", **options)


def test_csv_packed_custom_id_over_256_characters_is_built_and_only_warned(tmp_path: Path) -> None:
    source = tmp_path / "texts.csv"
    source.write_text("id,text\n" + "".join(f"{'x' * 60}{i},t\n" for i in range(5)), encoding="utf-8")
    target = tmp_path / "o.jsonl"
    lines = write_requests_from_csv(
        source, target, model="text-embedding-v4", endpoint="/v1/embeddings", inputs_per_request=5
    )
    assert lines == 1
    report = validate_jsonl(target)
    assert report.ok
    assert [w.code for w in report.warnings] == ["custom_id_too_long"]


def test_csv_vl_image_column_and_template(tmp_path: Path) -> None:
    source = tmp_path / "images.csv"
    source.write_text("id,url,lang\np1,https://example.com/a.png,English\np2,,French\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r"images.csv line 3: image column 'url' is missing or empty"):
        write_requests_from_csv(
            source, out, model="qwen-vl-max", image_column="url", template="Describe in {lang}"
        )
    source.write_text("id,url,lang\np1,https://example.com/a.png,English\n", encoding="utf-8")
    write_requests_from_csv(
        source, out, model="qwen-vl-max", image_column="url", template="Describe in {lang}"
    )
    (request,) = read_lines(out)
    assert request["body"]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "Describe in English"},
            ],
        }
    ]
    assert validate_jsonl(out, endpoint="/v1/chat/completions").ok
