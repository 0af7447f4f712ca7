"""Pure result-file helpers: line splitting, flattening, usage sums, digests, encoders."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

from airflow_provider_dashscope_batch.results import (
    EMBEDDING_COLUMNS,
    RESULT_COLUMNS,
    CsvEncoder,
    JsonlEncoder,
    ParquetEncoder,
    ResultEncoder,
    ResultFileStats,
    ResultFormat,
    TableKind,
    UsageTotals,
    flatten_embeddings,
    flatten_result,
    is_success,
    iter_lines,
    open_encoder,
)

CHAT_OK = {
    "id": "u1",
    "custom_id": "a",
    "response": {
        "status_code": 200,
        "request_id": "r1",
        "body": {
            "model": "qwen-plus",
            "created": 1700000000,
            "choices": [
                {"finish_reason": "length", "message": {"content": "hi, 你好", "reasoning_content": "think"}}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26},
        },
    },
    "error": None,
}


def test_iter_lines_across_chunk_boundaries_and_missing_final_newline():
    data = b'{"a":1}\n\n{"b":2}\r\n{"c":3}'
    for size in (1, 2, 5, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(iter_lines(chunks)) == [b'{"a":1}', b'{"b":2}\r', b'{"c":3}']


def test_flatten_chat_success():
    row = flatten_result(json.dumps(CHAT_OK).encode())
    assert tuple(row) == RESULT_COLUMNS
    assert row == {
        "custom_id": "a",
        "status_code": 200,
        "model": "qwen-plus",
        "content": "hi, 你好",
        "reasoning_content": "think",
        "finish_reason": "length",
        "prompt_tokens": 20,
        "completion_tokens": 6,
        "total_tokens": 26,
        "error_code": None,
        "error_message": None,
        "request_id": "r1",
        "created": 1700000000,
    }
    assert is_success(CHAT_OK)


@pytest.mark.parametrize(
    "error",
    [
        {"code": "InvalidParameter", "message": "bad"},
        {"error_code": "InvalidParameter", "error_message": "bad"},
    ],
)
def test_flatten_error_line_both_spellings(error):
    line = {"id": "u2", "custom_id": "b", "response": None, "error": error}
    row = flatten_result(line)
    assert (row["error_code"], row["error_message"]) == ("InvalidParameter", "bad")
    assert row["status_code"] is None
    assert not is_success(line)


def test_flatten_error_from_response_body():
    line = {
        "custom_id": "c",
        "response": {"status_code": 400, "request_id": "r", "body": {"error": {"code": "X", "message": "m"}}},
        "error": None,
    }
    row = flatten_result(line)
    assert (row["status_code"], row["error_code"], row["error_message"]) == (400, "X", "m")
    assert not is_success(line)


def test_flatten_list_content_as_json():
    parts = {"response": {"body": {"choices": [{"message": {"content": [{"text": "x"}]}}]}}}
    assert flatten_result(parts)["content"] == '[{"text":"x"}]'


EMBEDDING_OK = {
    "custom_id": '["t1","t2"]',
    "response": {
        "status_code": 200,
        "request_id": "r9",
        "body": {
            "model": "text-embedding-v4",
            "data": [{"index": 1, "embedding": [0.5, 0.25]}, {"index": 0, "embedding": [1.0, -1.0]}],
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        },
    },
}


def test_flatten_embeddings_one_row_per_input_with_packed_ids():
    rows = flatten_embeddings(EMBEDDING_OK)
    assert [tuple(row) for row in rows] == [EMBEDDING_COLUMNS] * 2
    assert [(r["input_index"], r["input_id"], r["embedding"], r["dimensions"]) for r in rows] == [
        (1, "t2", [0.5, 0.25], 2),
        (0, "t1", [1.0, -1.0], 2),
    ]
    assert [(r["prompt_tokens"], r["total_tokens"]) for r in rows] == [(7, 7), (None, None)]  # billed once
    assert {(r["custom_id"], r["model"], r["request_id"], r["status_code"]) for r in rows} == {
        ('["t1","t2"]', "text-embedding-v4", "r9", 200)
    }


def test_flatten_embeddings_single_input_and_missing_data():
    one = {"custom_id": "7", "response": {"status_code": 200, "body": {"data": [{"embedding": [0.1] * 8}]}}}
    (row,) = flatten_embeddings(one)
    assert (row["input_index"], row["input_id"], row["dimensions"]) == (0, "7", 8)
    (empty,) = flatten_embeddings({"custom_id": "8", "response": {"status_code": 200, "body": {}}})
    assert (empty["custom_id"], empty["embedding"], empty["input_index"]) == ("8", None, None)
    with pytest.raises(ValueError, match="not a list of numbers"):
        flatten_embeddings({"response": {"body": {"data": [{"embedding": "AAAA"}]}}})


def test_flatten_rejects_non_objects():
    with pytest.raises(ValueError, match="not valid JSON"):
        flatten_result(b"{nope")
    with pytest.raises(ValueError, match="JSON list"):
        flatten_result(b"[1]")


def test_usage_sums_successes_only():
    usage = UsageTotals()
    usage.add(CHAT_OK)
    usage.add(json.dumps(CHAT_OK))
    usage.add({"custom_id": "x", "response": {"status_code": 500, "body": {"usage": {"total_tokens": 99}}}})
    usage.add({"response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 3}}}})
    expected = {
        "prompt_tokens": 43,
        "completion_tokens": 12,
        "total_tokens": 55,
        "requests": 3,
        "reasoning_tokens": 0,
    }
    assert usage.as_dict() == expected


def test_result_file_stats():
    data = b"a\nb\n\nc"
    stats = ResultFileStats()
    lines = stats.update(data[:3]) + stats.update(data[3:]) + stats.finish()
    assert lines == [b"a", b"b", b"c"]
    assert (stats.bytes, stats.lines, stats.sha256) == (len(data), 3, hashlib.sha256(data).hexdigest())


LINE_SHAPES = [
    CHAT_OK,
    {**CHAT_OK, "response": {**CHAT_OK["response"], "status_code": "200"}},
    {**CHAT_OK, "response": {**CHAT_OK["response"], "status_code": 400}},
    {**CHAT_OK, "error": {"code": "InvalidParameter", "message": "bad"}},
    {
        **CHAT_OK,
        "response": {"status_code": 200, "body": {"error": {"code": "x"}, "usage": {"total_tokens": 3}}},
    },
    {
        **CHAT_OK,
        "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 2, "completion_tokens": 1}}},
    },
    {**CHAT_OK, "response": {"status_code": 200, "body": "not an object"}},
    {"custom_id": "b", "response": None, "error": {"error_code": "E", "error_message": "m"}},
    {
        "custom_id": "c",
        "response": {
            "status_code": 200,
            "body": {"data": [{"embedding": [0.1] * 8}], "usage": {"total_tokens": 4}},
        },
    },
]
"""Lines of the usual shape and of unusual ones (each path of the fast decoders and the lenient parse)."""


@pytest.mark.parametrize("obj", LINE_SHAPES)
def test_usage_from_raw_line_matches_parsed(obj):
    raw, parsed = UsageTotals(), UsageTotals()
    raw.add(json.dumps(obj).encode())
    parsed.add(obj)
    assert raw == parsed


@pytest.mark.parametrize(("line", "message"), [(b'{"a": [1,', "not valid JSON"), (b"[1, 2]", "JSON list")])
def test_usage_from_malformed_raw_line(line, message):
    with pytest.raises(ValueError, match=message):
        UsageTotals().add(line)


ERROR_LINE = {"custom_id": "b", "response": None, "error": {"code": "InvalidParameter", "message": "bad"}}


def encode(fmt: ResultFormat, lines: list[dict], **kwargs) -> tuple[bytes, type]:
    out = io.BytesIO()
    encoder = open_encoder(fmt, out, **kwargs)
    raw = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    encoder.raw(raw[:7])
    encoder.raw(raw[7:])
    if encoder.wants_rows:
        for line in lines:
            encoder.line(line)
    encoder.close()
    return out.getvalue(), type(encoder)


def test_jsonl_encoder_copies_bytes():
    data, kind = encode(ResultFormat.JSONL, [CHAT_OK, ERROR_LINE])
    assert kind is JsonlEncoder
    assert data == b"".join(json.dumps(line).encode() + b"\n" for line in (CHAT_OK, ERROR_LINE))


def test_csv_encoder_writes_header_and_one_row_per_line():
    data, kind = encode(ResultFormat.CSV, [CHAT_OK, ERROR_LINE])
    assert kind is CsvEncoder
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [(r["custom_id"], r["content"], r["error_code"]) for r in rows] == [
        ("a", "hi, 你好", ""),
        ("b", "", "InvalidParameter"),
    ]


def test_parquet_encoder_typed_columns_in_row_groups():
    pq = pytest.importorskip("pyarrow.parquet")
    data, kind = encode(ResultFormat.PARQUET, [CHAT_OK, ERROR_LINE, CHAT_OK], row_group_size=2)
    assert kind is ParquetEncoder
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.metadata.num_row_groups == 2
    table = parquet.read()
    assert table.column_names == list(RESULT_COLUMNS)
    assert table.column("total_tokens").to_pylist() == [26, None, 26]


def test_parquet_embeddings_fixed_size_float32_vectors():
    pq = pytest.importorskip("pyarrow.parquet")
    second = {"custom_id": "x", "response": {"status_code": 200, "body": {"data": [{"embedding": [2, 3]}]}}}
    data, _ = encode(
        ResultFormat.PARQUET, [EMBEDDING_OK, second], row_group_size=2, table=TableKind.EMBEDDINGS
    )
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.metadata.num_row_groups == 2  # 3 rows, 2 per group
    table = parquet.read()
    assert table.column_names == list(EMBEDDING_COLUMNS)
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[2]"
    assert table.schema.metadata[b"dashscope.table"] == b"embeddings"
    assert table.column("embedding").to_pylist() == [[0.5, 0.25], [1.0, -1.0], [2.0, 3.0]]
    assert table.column("input_id").to_pylist() == ["t2", "t1", "x"]


def test_embeddings_with_another_dimension_are_refused():
    pytest.importorskip("pyarrow")
    other = {"custom_id": "x", "response": {"status_code": 200, "body": {"data": [{"embedding": [1.0] * 3}]}}}
    for fmt in (ResultFormat.CSV, ResultFormat.PARQUET):
        with pytest.raises(ValueError, match="3 dimensions but earlier ones 2"):
            encode(fmt, [EMBEDDING_OK, other], table=TableKind.EMBEDDINGS)


def test_csv_embeddings_vectors_as_json_arrays():
    data, _ = encode(ResultFormat.CSV, [EMBEDDING_OK], table=TableKind.EMBEDDINGS)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert tuple(rows[0]) == EMBEDDING_COLUMNS
    assert [json.loads(r["embedding"]) for r in rows] == [[0.5, 0.25], [1.0, -1.0]]
    assert [r["input_id"] for r in rows] == ["t2", "t1"]


class _Rows(ResultEncoder):
    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.rows: list[dict] = []

    def row(self, row: dict) -> None:
        self.rows.append(row)


@pytest.mark.parametrize(
    "obj",
    [
        *LINE_SHAPES,
        {**CHAT_OK, "custom_id": 7},
        {
            "custom_id": "p",
            "response": {"status_code": 200, "body": {"choices": [{"message": {"content": [1]}}]}},
        },
        {"custom_id": "q", "response": {"status_code": 200, "body": {"choices": []}}},
        {"custom_id": "r", "response": {"status_code": 200, "body": None}},
    ],
)
def test_raw_lines_give_the_rows_and_usage_of_parsed_ones(obj):
    """The typed fast path of ``consume`` and the lenient parse agree on every shape."""
    fast, usage = _Rows(), UsageTotals()
    fast.consume(json.dumps(obj).encode(), usage)
    expected = UsageTotals()
    expected.add(obj)
    assert fast.rows == [flatten_result(obj)]
    assert usage == expected
