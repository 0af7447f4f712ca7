"""Result tables: the JSONL/CSV/Parquet writers, their layouts, and the input columns they join in."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from result_helpers import CHAT_OK, EMBEDDING_OK, line

from airflow_provider_dashscope_batch.results.input_columns import InputColumns
from airflow_provider_dashscope_batch.results.lines import (
    NOT_A_VECTOR,
    ResultFormat,
    ResultKind,
    UsageTotals,
    flatten_result,
)
from airflow_provider_dashscope_batch.results.tables import (
    EMBEDDING_COLUMNS,
    RESULT_COLUMNS,
    CsvEncoder,
    JsonlEncoder,
    ParquetEncoder,
    TableKind,
    import_pyarrow,
    open_encoder,
)

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


CARRIED = InputColumns(
    columns={"title": "string", "n": "int", "score": "float", "vip": "bool"},
    values={"a": ("Lamp", 3, 0.5, True), "t1": ("one", 1, 1.0, False), "t2": ("two", 2, None, None)},
)


def test_csv_rows_get_the_input_columns_after_their_own():
    data, _ = encode(ResultFormat.CSV, [CHAT_OK, ERROR_LINE], input_columns=CARRIED)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert tuple(rows[0]) == (*RESULT_COLUMNS, "title", "n", "score", "vip")
    assert [(r["custom_id"], r["title"], r["n"], r["score"], r["vip"]) for r in rows] == [
        ("a", "Lamp", "3", "0.5", "True"),
        ("b", "", "", "", ""),  # an id the input did not have: empty cells
    ]


def test_parquet_input_columns_are_typed_and_named_in_the_metadata():
    pq = pytest.importorskip("pyarrow.parquet")
    data, _ = encode(ResultFormat.PARQUET, [CHAT_OK, ERROR_LINE], input_columns=CARRIED)
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == [*RESULT_COLUMNS, "title", "n", "score", "vip"]
    assert [str(table.schema.field(n).type) for n in ("title", "n", "score", "vip")] == [
        "string",
        "int64",
        "double",
        "bool",
    ]
    assert table.select(["title", "n", "score", "vip"]).to_pylist() == [
        {"title": "Lamp", "n": 3, "score": 0.5, "vip": True},
        {"title": None, "n": None, "score": None, "vip": None},
    ]
    metadata = table.schema.metadata
    assert metadata[b"dashscope.table_version"] == b"2"
    assert json.loads(metadata[b"dashscope.input_columns"]) == ["title", "n", "score", "vip"]
    assert (
        b"dashscope.input_columns"
        not in pq.read_table(io.BytesIO(encode(ResultFormat.PARQUET, [CHAT_OK])[0])).schema.metadata
    )


def test_embeddings_rows_join_on_each_texts_own_id():
    pq = pytest.importorskip("pyarrow.parquet")
    data, _ = encode(ResultFormat.PARQUET, [EMBEDDING_OK], table=TableKind.EMBEDDINGS, input_columns=CARRIED)
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert [(r["input_id"], r["title"], r["n"]) for r in rows] == [("t2", "two", 2), ("t1", "one", 1)]


def test_the_fast_path_rows_get_the_input_columns_too():
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.CSV, out, input_columns=CARRIED)
    encoder.consume(json.dumps(CHAT_OK).encode(), UsageTotals())
    encoder.close()
    (row,) = csv.DictReader(io.StringIO(out.getvalue().decode("utf-8")))
    assert (row["content"], row["title"]) == ("hi, 你好", "Lamp")


def test_the_encoder_reports_its_columns_and_types():
    encoder = open_encoder(ResultFormat.CSV, io.BytesIO(), table=TableKind.EMBEDDINGS, input_columns=CARRIED)
    assert encoder.columns == (*EMBEDDING_COLUMNS, "title", "n", "score", "vip")
    assert encoder.types["embedding"] == "vector"
    assert encoder.types["input_index"] == "int"
    assert encoder.types["vip"] == "bool"
    plain = open_encoder(ResultFormat.CSV, io.BytesIO())
    assert (plain.columns, plain.input_columns) == (RESULT_COLUMNS, None)


def test_long_carried_texts_end_a_parquet_row_group():
    pq = pytest.importorskip("pyarrow.parquet")
    big = InputColumns(columns={"note": "string"}, values={"a": ("x" * (1 << 21),)})
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out, input_columns=big)
    for _ in range(3):  # 2 Mi characters each: a group holds two (4 Mi), the third starts the next
        encoder.line(CHAT_OK)
    encoder.close()
    metadata = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 1]


def test_csv_vectors_are_compact_json_and_a_missing_one_an_empty_cell():
    no_vector = {"custom_id": "n", "response": {"status_code": 200, "body": {"data": [{"index": 0}]}}}
    data, _ = encode(ResultFormat.CSV, [EMBEDDING_OK, no_vector], table=TableKind.EMBEDDINGS)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert [r["embedding"] for r in rows] == ["[0.5,0.25]", "[1.0,-1.0]", ""]


def test_parquet_rows_without_a_vector_are_null_between_others():
    pq = pytest.importorskip("pyarrow.parquet")
    no_vector = {"custom_id": "n", "response": {"status_code": 200, "body": {"data": [{"index": 0}]}}}
    after = {"custom_id": "z", "response": {"status_code": 200, "body": {"data": [{"embedding": [7, 8]}]}}}
    data, _ = encode(ResultFormat.PARQUET, [EMBEDDING_OK, no_vector, after], table=TableKind.EMBEDDINGS)
    table = pq.read_table(io.BytesIO(data))
    assert table.column("embedding").to_pylist() == [[0.5, 0.25], [1.0, -1.0], None, [7.0, 8.0]]
    assert [str(table.schema.field(n).type) for n in ("input_index", "dimensions", "prompt_tokens")] == [
        "int32",
        "int32",
        "int64",
    ]


def test_raw_embeddings_lines_give_rows_and_usage():
    out, usage = io.BytesIO(), UsageTotals()
    encoder = open_encoder(ResultFormat.CSV, out, table=TableKind.EMBEDDINGS)
    encoder.consume(json.dumps(EMBEDDING_OK).encode(), usage)
    encoder.close()
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8"))))
    assert [r["input_id"] for r in rows] == ["t2", "t1"]
    expected = UsageTotals()
    expected.add(EMBEDDING_OK)
    assert usage == expected
    assert usage.requests == 1


def test_another_dimension_is_refused_with_the_rule():
    other = {"custom_id": "x", "response": {"status_code": 200, "body": {"data": [{"embedding": [1.0] * 3}]}}}
    message = (
        "an embedding has 3 dimensions but earlier ones 2; a vector column has one size: give every request "
        "of the batch the same 'dimensions'"
    )
    with pytest.raises(ValueError, match="3 dimensions") as raised:
        encode(ResultFormat.CSV, [EMBEDDING_OK, other], table=TableKind.EMBEDDINGS)
    assert str(raised.value) == message


@pytest.mark.parametrize("field", ["content", "reasoning_content", "error_message"])
def test_long_texts_of_each_text_column_end_a_row_group_at_exactly_4_mi_characters(field):
    pq = pytest.importorskip("pyarrow.parquet")
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out)
    row = {name: None for name in RESULT_COLUMNS}
    for _ in range(3):  # 2 Mi characters each: two rows reach 4 Mi exactly and end the group
        encoder.row({**row, field: "x" * (1 << 21)})
    encoder.close()
    metadata = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 1]


def test_an_empty_parquet_file_still_has_the_schema():
    pq = pytest.importorskip("pyarrow.parquet")
    data, _ = encode(ResultFormat.PARQUET, [], table=TableKind.EMBEDDINGS)
    table = pq.read_table(io.BytesIO(data))
    assert (table.num_rows, table.column_names) == (0, list(EMBEDDING_COLUMNS))
    assert table.schema.metadata[b"dashscope.table"] == b"embeddings"


NO_VECTOR = {"custom_id": "n", "response": {"status_code": 200, "body": {"data": [{"index": 0}]}}}


def test_parquet_embeddings_without_any_vector_have_an_empty_vector_column():
    pq = pytest.importorskip("pyarrow.parquet")
    for lines in ([NO_VECTOR, NO_VECTOR], []):  # rows, none of them with a vector; no rows at all
        data, _ = encode(ResultFormat.PARQUET, lines, table=TableKind.EMBEDDINGS)
        table = pq.read_table(io.BytesIO(data))
        assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[0]"
        assert table.column("embedding").to_pylist() == [None] * len(lines)


def test_parquet_vector_of_texts_is_refused_with_the_rule():
    pytest.importorskip("pyarrow")
    words = {
        "custom_id": "w",
        "response": {"status_code": 200, "body": {"data": [{"embedding": ["a", "b"]}]}},
    }
    with pytest.raises(ValueError, match="not a list of numbers") as raised:
        encode(ResultFormat.PARQUET, [words], table=TableKind.EMBEDDINGS)
    assert str(raised.value) == NOT_A_VECTOR


def test_parquet_vectors_end_a_row_group_at_exactly_2_mi_values():
    pq = pytest.importorskip("pyarrow.parquet")
    half = {
        "custom_id": "h",
        "response": {"status_code": 200, "body": {"data": [{"embedding": [0.5] * (1 << 20)}]}},
    }
    data, _ = encode(ResultFormat.PARQUET, [half] * 3, table=TableKind.EMBEDDINGS)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata  # 1 Mi values each: two reach 2 Mi and end the group
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 1]


def test_raw_requests_lines_give_one_row_and_are_counted_once():
    out, usage = io.BytesIO(), UsageTotals()
    encoder = open_encoder(ResultFormat.CSV, out)
    for obj in (CHAT_OK, ERROR_LINE):  # the fast path's shape, and one it leaves to the full parse
        encoder.consume(json.dumps(obj).encode(), usage)
    encoder.close()
    expected, whole = UsageTotals(), io.StringIO()
    writer = csv.DictWriter(whole, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for obj in (CHAT_OK, ERROR_LINE):
        expected.add(obj)
        writer.writerow(flatten_result(obj))
    assert usage == expected
    assert out.getvalue() == whole.getvalue().encode("utf-8")


def test_a_row_group_ends_at_4_mi_characters_not_one_before():
    pq = pytest.importorskip("pyarrow.parquet")
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out)
    row = {name: None for name in RESULT_COLUMNS}
    for _ in range(2):  # 4 Mi - 1 characters hold the group open; one more ends it, in each group
        for size in (1 << 21, (1 << 21) - 1, 1):
            encoder.row({**row, "content": "x" * size})
    encoder.close()
    metadata = pq.ParquetFile(io.BytesIO(out.getvalue())).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [3, 3]


def test_parquet_abort_closes_a_writer_already_open():
    pq = pytest.importorskip("pyarrow.parquet")
    out = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, out, row_group_size=1)
    encoder.row(flatten_result(line()))  # a full row group: the writer is open
    encoder.abort()
    assert pq.ParquetFile(io.BytesIO(out.getvalue())).metadata.num_rows == 1  # closed: its footer written
    broken = io.BytesIO()
    encoder = open_encoder(ResultFormat.PARQUET, broken, row_group_size=1)
    encoder.row(flatten_result(line()))
    broken.close()  # the destination failed after the first row group
    encoder.abort()  # closing the writer fails too, and is not raised over the original failure


def test_parquet_rows_before_the_first_vector_wait_for_its_length():
    pq = pytest.importorskip("pyarrow.parquet")
    lines = [NO_VECTOR, NO_VECTOR, EMBEDDING_OK, NO_VECTOR]  # the first vector in the third line
    data, _ = encode(ResultFormat.PARQUET, lines, row_group_size=1, table=TableKind.EMBEDDINGS)
    parquet = pq.ParquetFile(io.BytesIO(data))
    metadata = parquet.metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [3, 1, 1]
    assert str(parquet.schema_arrow.field("embedding").type) == "fixed_size_list<element: float>[2]"
    assert parquet.read().column("embedding").to_pylist() == [None, None, [0.5, 0.25], [1.0, -1.0], None]
