"""Result tables: the JSONL/CSV/Parquet writers, their layouts and the typed fast path they read with."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from airflow_provider_dashscope_batch import result_tables, results
from airflow_provider_dashscope_batch.result_tables import (
    EMBEDDING_COLUMNS,
    RESULT_COLUMNS,
    CsvEncoder,
    JsonlEncoder,
    ParquetEncoder,
    ResultEncoder,
    TableKind,
    import_pyarrow,
    open_encoder,
)
from airflow_provider_dashscope_batch.results import ResultFormat, ResultKind, UsageTotals, flatten_result
from tests.test_results import CHAT_OK, EMBEDDING_OK, LINE_SHAPES
from tests.test_results_edges import line

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


def test_csv_flushes_at_1_mb_without_losing_or_duplicating_a_byte() -> None:
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.CSV, out)
    rows = [
        flatten_result(line(body={"choices": [{"message": {"content": f"{i}:" + "x" * 4000}}]}))
        for i in range(600)
    ]
    for row in rows:
        encoder.row(row)
    assert 0 < len(out.getvalue()) < 600 * 4000  # at least one flush happened before close
    encoder.close()
    data = out.getvalue()
    assert b"\r\n" not in data  # one "\n" per row, like the JSONL it came from
    whole = io.StringIO()  # the same rows written in one go
    writer = csv.DictWriter(whole, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    assert data == whole.getvalue().encode("utf-8")


def test_parquet_default_row_group_is_10000_rows() -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out)
    assert encoder.out is out
    row = flatten_result(line())
    for _ in range(10_001):
        encoder.row(row)
    encoder.close()
    metadata = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [10_000, 1]


def test_parquet_abort_after_the_destination_broke_does_not_raise() -> None:
    pytest.importorskip("pyarrow.parquet")
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out)
    encoder.row(flatten_result(line()))
    out.close()  # e.g. the object store connection failed mid-write
    encoder.abort()


def test_missing_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an environment without pyarrow imports
    message = "output_format='parquet' needs pyarrow: pip install 'airflow-provider-dashscope-batch[parquet]'"
    with pytest.raises(ImportError) as info:
        import_pyarrow()
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("endpoint", "kind", "table"),
    [
        ("/v1/embeddings", ResultKind.OUTPUT, TableKind.EMBEDDINGS),
        ("/v1/embeddings", ResultKind.ERRORS, TableKind.REQUESTS),  # a failed request has no vectors
        ("/v1/chat/completions", ResultKind.OUTPUT, TableKind.REQUESTS),
        (None, ResultKind.OUTPUT, TableKind.REQUESTS),
    ],
)
def test_the_table_of_a_result_file(endpoint, kind, table):
    assert TableKind.of(endpoint, kind) is table
    assert table.columns == (EMBEDDING_COLUMNS if table is TableKind.EMBEDDINGS else RESULT_COLUMNS)


def test_the_writers_are_still_importable_from_results_as_in_0_1():
    for name in ("CsvEncoder", "ParquetEncoder", "TableKind", "open_encoder", "RESULT_COLUMNS"):
        assert getattr(results, name) is getattr(result_tables, name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        results.nothing  # noqa: B018
