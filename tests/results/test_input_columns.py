"""Input columns: the names' rules, the builders' sidecar rows and types, the reader, bad input refused."""

from __future__ import annotations

import io
import json

import pytest

from airflow_provider_dashscope_batch.results.input_columns import (
    InputColumns,
    InputColumnsWriter,
    check_column_names,
    publish_input_columns,
)
from airflow_provider_dashscope_batch.results.tables import EMBEDDING_COLUMNS, RESULT_COLUMNS
from airflow_provider_dashscope_batch.validation.builder import write_requests, write_requests_from_csv

TAKEN = (*RESULT_COLUMNS, *EMBEDDING_COLUMNS)
BODY = {"messages": [{"role": "user", "content": "hi"}]}


def writer(*names: str) -> InputColumnsWriter:
    return InputColumnsWriter(io.BytesIO(), names)


def sidecar_rows(carry: InputColumnsWriter) -> list[list]:
    return [json.loads(line) for line in carry.out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["title", "content"], "'content' is a column of the result tables already"),
        (["embedding"], "'embedding' is a column of the result tables already"),
        ([], "carry_columns names no column"),
        (["a", "a"], r"lists a column more than once: \['a', 'a'\]"),
        (["a", ""], "'' is not a column name"),
        ([3], "3 is not a column name"),
    ],
)
def test_column_names_rules(names, message):
    with pytest.raises(ValueError, match=message):
        check_column_names(names, TAKEN)


def test_column_names_kept_in_order():
    assert check_column_names(["b", "a"], TAKEN) == ("b", "a")


def test_csv_columns_go_to_the_sidecar_and_not_the_line():
    source = io.StringIO("id,text,title\nx1,hello,First\nx2,world,\n")
    out, carry = io.BytesIO(), writer("title")
    assert (
        write_requests_from_csv(
            source, out, model="qwen-plus", text_column="text", id_column="id", carry=carry
        )
        == 2
    )
    assert b"First" not in out.getvalue()
    assert sidecar_rows(carry) == [["x1", "First"], ["x2", ""]]
    assert carry.rows == 2
    assert carry.header("file-1") == {
        "format": "dashscope-input-columns",
        "version": 1,
        "file_id": "file-1",
        "columns": {"title": "string"},
    }


def test_packed_embeddings_key_each_text_by_its_own_id():
    source = io.StringIO("id,text\na,one\nb,two\nc,three\n")
    out, carry = io.BytesIO(), writer("text")
    lines = write_requests_from_csv(
        source,
        out,
        model="text-embedding-v4",
        endpoint="/v1/embeddings",
        text_column="text",
        id_column="id",
        inputs_per_request=2,
        carry=carry,
    )
    assert lines == 2
    assert sidecar_rows(carry) == [["a", "one"], ["b", "two"], ["c", "three"]]


def test_a_csv_column_not_in_the_header_names_file_and_line():
    source = io.StringIO("id,text\nx,hello\n")
    with pytest.raises(ValueError, match=r"^in\.csv line 1: carried column 'title' is not in the CSV header"):
        write_requests_from_csv(
            source, io.BytesIO(), model="m", text_column="text", carry=writer("title"), name="in.csv"
        )


def test_a_short_csv_row_names_its_line_and_column():
    source = io.StringIO("id,text,title,tag\nx,hello,T,g\ny,world,U\n")
    with pytest.raises(
        ValueError, match=r"\nin\.csv line 3: carried column 'tag' is missing \(the row has 3 cells\)"
    ):
        write_requests_from_csv(
            source, io.BytesIO(), model="m", text_column="text", carry=writer("title", "tag"), name="in.csv"
        )


def test_a_csv_without_header_cannot_name_columns():
    with pytest.raises(
        ValueError, match=r"^in\.csv: carry_columns names header columns, but the CSV has no header"
    ):
        write_requests_from_csv(
            io.StringIO("x,hello\n"), io.BytesIO(), model="m", header=False, carry=writer("a"), name="in.csv"
        )


def test_request_keys_are_typed_and_ints_widen_among_floats():
    requests = [
        {"custom_id": "a", "body": BODY, "n": 1, "f": 1, "ok": True, "s": None},
        {"custom_id": "b", "body": BODY, "n": 2, "f": 2.5, "ok": None, "s": None},
    ]
    out, carry = io.BytesIO(), writer("n", "f", "ok", "s")
    write_requests(requests, out, model="qwen-plus", carry=carry)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [sorted(line) for line in lines] == [["body", "custom_id", "method", "url"]] * 2
    assert sidecar_rows(carry) == [["a", 1, 1, True, None], ["b", 2, 2.5, None, None]]
    assert carry.header("f")["columns"] == {"n": "int", "f": "float", "ok": "bool", "s": "string"}


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([BODY], r"^request 1: carry_columns reads keys beside 'body', but this item is a bare body"),
        ([{"body": BODY, "t": 1}, {"body": BODY}], r"^request 2: no 't' to carry \(carry_columns\)"),
        (
            [{"body": BODY, "t": {"a": 1}}],
            r"^request 1: carried column 't' holds a dict; a table cell is a string",
        ),
        (
            [{"body": BODY, "t": 1}, {"body": BODY, "t": "x"}],
            r"^request 2: carried column 't' holds a value of type 'string', earlier requests of type 'int'",
        ),
        (
            [{"body": BODY, "t": 1.5}, {"body": BODY, "t": True}],
            r"^request 2: carried column 't' holds a value of type 'bool', earlier requests of type 'float'",
        ),
    ],
)
def test_bad_request_keys_name_the_request_and_rule(requests, message):
    with pytest.raises(ValueError, match=message):
        write_requests(requests, io.BytesIO(), model="qwen-plus", carry=writer("t"))


def test_the_sidecar_round_trips_and_unknown_ids_get_nulls(tmp_path):
    carry = writer("title", "n")
    carry.add("a", ["A", 1], "row 1")
    carry.add("b", [None, 2], "row 2")
    target = tmp_path / "file-1.jsonl"
    publish_input_columns(target, carry.header("file-1"), carry.rows_out())
    with target.open("rb") as f:
        read = InputColumns.read(f, str(target))
    assert read.columns == {"title": "string", "n": "int"}
    assert read.row("a") == {"title": "A", "n": 1}
    assert read.row("b") == {"title": None, "n": 2}
    assert read.row("zzz") == {"title": None, "n": None}
    assert read.row('["a","b"]') == {"title": None, "n": None}  # a packed request's row in an errors table
    assert read.row(None) == {"title": None, "n": None}


@pytest.mark.parametrize(
    "header",
    [
        b"not json\n",
        b"[]\n",
        b'{"format": "dashscope-input-columns", "version": 2, "columns": {}}\n',
        b'{"format": "other", "version": 1, "columns": {}}\n',
        b'{"format": "dashscope-input-columns", "version": 1}\n',
        b'{"format": "dashscope-input-columns", "version": 1, "columns": {"a": "vector"}}\n',
    ],
)
def test_a_file_that_is_not_a_sidecar_is_refused_at_line_1(header):
    with pytest.raises(ValueError, match=r"^s3://b/f\.jsonl line 1: not an input-columns file of version 1"):
        InputColumns.read(io.BytesIO(header + b'["a", 1]\n'), "s3://b/f.jsonl")


@pytest.mark.parametrize("row", [b"{}", b'["a"]', b'[1, "x"]', b"nope", b'["a", 1, 2]'])
def test_a_damaged_row_names_its_line(row):
    header = b'{"format": "dashscope-input-columns", "version": 1, "columns": {"t": "string"}}\n'
    with pytest.raises(ValueError, match=r"^f line 3: expected \[custom_id, 1 values\]$"):
        InputColumns.read(io.BytesIO(header + b'["ok", "x"]\n' + row + b"\n"), "f")


def test_a_null_does_not_stop_the_types_of_the_columns_after_it():
    carry = writer("a", "n")
    carry.add("x", [None, 5], "row 1")
    assert carry.header("f")["columns"] == {"a": "string", "n": "int"}


def test_values_must_match_the_columns_one_to_one():
    with pytest.raises(ValueError, match="zip"):
        writer("a", "b").add("x", ["only one"], "row 1")


def test_the_messages_name_the_way_out():
    with pytest.raises(ValueError, match="no column") as raised:
        check_column_names([], TAKEN)
    assert str(raised.value) == "carry_columns names no column; leave it out to carry none"
    with pytest.raises(ValueError, match="line 1") as raised:
        InputColumns.read(io.BytesIO(b"{}\n"), "f")
    assert str(raised.value) == (
        "f line 1: not an input-columns file of version 1 (written by the upload operator's carry_columns_to)"
    )


def test_csv_columns_keep_their_types(tmp_path):
    """CSV cells are text: each carried column's type is inferred from all its cells."""
    carry = InputColumnsWriter(io.BytesIO(), ("rating", "price", "ok", "zip", "note"), infer_types=True)
    rows = [
        ("a", ["3", "9.5", "TRUE", "00123", "x"]),
        ("b", ["", "10", "false", "04000", "1"]),
        ("c", ["-2", "1e3", "", "1", ""]),
    ]
    for custom_id, cells in rows:
        carry.add(custom_id, cells, custom_id)
    header = carry.header("file-1")
    types = {"rating": "int", "price": "float", "ok": "bool", "zip": "string", "note": "string"}
    assert header["columns"] == types
    target = tmp_path / "file-1.jsonl"
    publish_input_columns(target, header, carry.rows_out())
    with target.open("rb") as f:
        columns = InputColumns.read(f, str(target))
    assert columns.row("a") == {"rating": 3, "price": 9.5, "ok": True, "zip": "00123", "note": "x"}
    assert columns.row("b") == {"rating": None, "price": 10.0, "ok": False, "zip": "04000", "note": "1"}
    assert columns.row("c") == {"rating": -2, "price": 1000.0, "ok": None, "zip": "1", "note": ""}
