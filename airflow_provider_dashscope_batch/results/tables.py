"""
Typed tables of batch results: the CSV and Parquet writers, their layouts and column types.

Each writer (:class:`ResultEncoder`) turns the rows of :mod:`~airflow_provider_dashscope_batch.results.lines`
into one file, streamed: a CSV buffer or a Parquet row group at most is held. Pure (no Airflow, no files
or connections opened here); the transfer hands it a stream::

    with path.open("wb") as out:
        encoder = open_encoder(ResultFormat.PARQUET, out, table=TableKind.of(endpoint, ResultKind.OUTPUT))
        for line in iter_lines(client.iter_file_content(file_id)):
            encoder.consume(line, usage)
        encoder.close()
"""

from __future__ import annotations

import array
import contextlib
import csv
import io
import json
from enum import StrEnum
from typing import IO, Any

from airflow_provider_dashscope_batch.results.input_columns import InputColumns
from airflow_provider_dashscope_batch.results.lines import (
    NOT_A_VECTOR,
    ResultFormat,
    ResultKind,
    UsageTotals,
    flatten_embeddings,
    flatten_result,
    flatten_typical_result,
    parse_result_line,
)

__all__ = [
    "EMBEDDING_COLUMNS",
    "RESULT_COLUMNS",
    "RESULT_COLUMN_TYPES",
    "TABLE_SCHEMA_VERSION",
    "CsvEncoder",
    "JsonlEncoder",
    "ParquetEncoder",
    "ResultEncoder",
    "TableKind",
    "import_pyarrow",
    "open_encoder",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "custom_id",
    "status_code",
    "model",
    "content",
    "reasoning_content",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "error_code",
    "error_message",
    "request_id",
    "created",
)
"""Columns of the ``requests`` table (one row per request: chat output, and every errors file), in order.

``content``/``reasoning_content``/``finish_reason`` come from the first choice (chat completions);
``finish_reason`` is ``length`` for an answer cut by ``max_tokens``. ``created`` is the response body's
Unix timestamp.
"""

EMBEDDING_COLUMNS: tuple[str, ...] = (
    "custom_id",
    "input_index",
    "input_id",
    "embedding",
    "dimensions",
    "status_code",
    "model",
    "prompt_tokens",
    "total_tokens",
    "request_id",
)
"""Columns of the ``embeddings`` table (one row per input text of an embeddings output file), in order.

``input_index`` is the text's position in the request's ``input`` (``data[].index``); ``input_id`` is the
text's own id: the ``custom_id`` of a one-text request, or the matching item of a packed request's
``custom_id`` (a JSON list of ids, as :func:`~.validation.builder.write_requests_from_csv`
writes it with ``inputs_per_request > 1``). ``embedding`` is the vector (Parquet: a fixed-size
``list<float32>``; CSV: a JSON array). ``prompt_tokens``/``total_tokens`` are the request's usage, given on
its first row only (``input_index`` 0), so that a column sum is the bill.
"""

RESULT_COLUMN_TYPES: dict[str, str] = {
    "custom_id": "string",
    "status_code": "int",
    "model": "string",
    "content": "string",
    "reasoning_content": "string",
    "finish_reason": "string",
    "prompt_tokens": "int",
    "completion_tokens": "int",
    "total_tokens": "int",
    "error_code": "string",
    "error_message": "string",
    "request_id": "string",
    "created": "int",
    "input_index": "int",
    "input_id": "string",
    "embedding": "vector",
    "dimensions": "int",
}
"""Logical type of each column (``string``, ``int`` or ``vector``; every column is nullable).

Input columns carried from the upload (:mod:`~.input_columns`) follow a
table's own, typed ``string``, ``int``, ``float`` or ``bool``.
"""

TABLE_SCHEMA_VERSION = 2
"""Version of the table layouts above; recorded per file in the manifest (``FileRecord.table``).

1: the columns above. 2: input columns carried from the upload may follow them.
"""


class TableKind(StrEnum):
    """The layout of a CSV/Parquet result file."""

    REQUESTS = "requests"
    """One row per request (:data:`RESULT_COLUMNS`): chat output and every errors file."""
    EMBEDDINGS = "embeddings"
    """One row per input text (:data:`EMBEDDING_COLUMNS`): the output file of an embeddings batch."""

    @property
    def columns(self) -> tuple[str, ...]:
        return EMBEDDING_COLUMNS if self is TableKind.EMBEDDINGS else RESULT_COLUMNS

    @classmethod
    def of(cls, endpoint: str | None, kind: ResultKind) -> TableKind:
        """
        The table a result file is written as.

        :param endpoint: The batch's endpoint.
        :param kind: Output or errors file.
        """
        if endpoint == "/v1/embeddings" and kind is ResultKind.OUTPUT:
            return cls.EMBEDDINGS
        return cls.REQUESTS


_CSV_FLUSH_BYTES = 1 << 20
_GROUP_VECTOR_VALUES = 1 << 21  # floats held before a Parquet row group is written (8 MiB as float32)
_GROUP_TEXT_CHARS = 1 << 22  # characters of content held before a Parquet row group is written


class ResultEncoder:
    """
    Writes one result file to a binary stream in one :class:`ResultFormat`.

    The caller hands every raw chunk of the source file to :meth:`raw` and, when :attr:`wants_rows` is
    true, every line to :meth:`consume` (raw) or :meth:`line` (parsed); then :meth:`close` (or
    :meth:`abort` after a failure). Nothing is held beyond one buffer or row group.

    :param out: Binary, write-only stream (need not be seekable).
    :param table: The layout of the rows (CSV/Parquet).
    :param input_columns: Input columns to add to each row, joined on ``custom_id`` (``input_id`` in an
        ``embeddings`` table: each text's own id).
    """

    wants_rows = True
    """Whether :meth:`line` needs the parsed lines (``False``: only raw bytes are written)."""

    def __init__(
        self,
        out: IO[bytes],
        table: TableKind = TableKind.REQUESTS,
        input_columns: InputColumns | None = None,
    ) -> None:
        self.out = out
        self.table = table
        self.input_columns = input_columns
        carried = input_columns.columns if input_columns is not None else {}
        self.columns: tuple[str, ...] = (*table.columns, *carried)
        """The file's columns: the table's own, then the input columns."""
        self.types: dict[str, str] = {**{n: RESULT_COLUMN_TYPES[n] for n in table.columns}, **carried}
        """Each column's logical type."""
        self._join_key = "input_id" if table is TableKind.EMBEDDINGS else "custom_id"
        self.dimensions: int | None = None
        """The vector length of an ``embeddings`` table (``None`` until a vector was seen)."""

    def raw(self, chunk: bytes) -> None:
        """Receive the next raw chunk of the source file."""

    def consume(self, line: bytes, usage: UsageTotals) -> None:
        """
        Receive the next raw line and add its usage to ``usage`` (typed fast path for ``requests`` rows).

        :raises ValueError: for a line that is not a JSON object, and as :meth:`line`.
        """
        if self.table is TableKind.REQUESTS and (row := flatten_typical_result(line, usage)) is not None:
            self._emit(row)
            return
        obj = parse_result_line(line)
        usage.add(obj)
        self.line(obj)

    def line(self, obj: dict[str, Any]) -> None:
        """
        Receive the next parsed line.

        :raises ValueError: for an embedding that is not a list of numbers, or whose length differs from
            the vectors before it.
        """
        if self.table is TableKind.EMBEDDINGS:
            for row in flatten_embeddings(obj):
                self._check_dimensions(row["dimensions"])
                self._emit(row)
        else:
            self._emit(flatten_result(obj))

    def _emit(self, row: dict[str, Any]) -> None:
        if self.input_columns is not None:
            row.update(self.input_columns.row(row[self._join_key]))
        self.row(row)

    def _check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None or dimensions == self.dimensions:
            return
        if self.dimensions is not None:
            raise ValueError(
                f"an embedding has {dimensions} dimensions but earlier ones {self.dimensions}; a vector "
                "column has one size: give every request of the batch the same 'dimensions'"
            )
        self.dimensions = dimensions

    def row(self, row: dict[str, Any]) -> None:
        """Receive the next flattened row (keys: :attr:`columns`)."""

    def close(self) -> None:
        """Write whatever is buffered and any trailer."""

    def abort(self) -> None:
        """Release resources after a failure (what was written is discarded by the caller)."""


class JsonlEncoder(ResultEncoder):
    """Copies the source file byte for byte."""

    wants_rows = False

    def raw(self, chunk: bytes) -> None:
        self.out.write(chunk)


def _vector_text(vector: list[float] | None) -> str | None:
    return None if vector is None else json.dumps(vector, separators=(",", ":"))


class CsvEncoder(ResultEncoder):
    """UTF-8 CSV without BOM: a header of the table's columns, then its rows (vectors as JSON arrays)."""

    def __init__(
        self,
        out: IO[bytes],
        table: TableKind = TableKind.REQUESTS,
        input_columns: InputColumns | None = None,
    ) -> None:
        super().__init__(out, table, input_columns)
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=self.columns, lineterminator="\n")
        self._writer.writeheader()

    def row(self, row: dict[str, Any]) -> None:
        if "embedding" in row:
            row["embedding"] = _vector_text(row["embedding"])
        self._writer.writerow(row)
        if self._buffer.tell() >= _CSV_FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self.out.write(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def close(self) -> None:
        self._flush()


class ParquetEncoder(ResultEncoder):
    """
    Parquet with the typed columns of :data:`RESULT_COLUMN_TYPES`, written in row groups.

    An ``embeddings`` table's ``embedding`` column is a fixed-size ``list<float32>`` of the first vector's
    length (what vector stores load as is); the writer opens once that length is known (rows before the
    first vector are held until then).

    :param out: Binary, write-only stream.
    :param row_group_size: Rows per row group (rows held in memory at once; a group also ends at 4 Mi
        characters of text or 2 Mi vector values).
    :param table: The layout of the rows.
    :param input_columns: Input columns to add to each row.
    """

    def __init__(
        self,
        out: IO[bytes],
        row_group_size: int,
        table: TableKind = TableKind.REQUESTS,
        input_columns: InputColumns | None = None,
    ) -> None:
        super().__init__(out, table, input_columns)
        self._pa, self._pq = import_pyarrow()
        self._writer: Any = None
        self._row_group_size = row_group_size
        self._columns: dict[str, list[Any]] = {name: [] for name in self.columns if name != "embedding"}
        carried = input_columns.columns if input_columns is not None else {}
        self._texts = ("content", "reasoning_content", "error_message", *_strings(carried))
        self._vectors = array.array("f")
        self._vector_mask: list[bool] = []
        self._rows = 0
        self._chars = 0

    def schema(self) -> Any:
        """The file's Arrow schema (an ``embeddings`` vector column needs :attr:`dimensions`)."""
        pa = self._pa
        types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
        fields = []
        for name in self.columns:
            kind = self.types[name]
            if kind == "vector":
                fields.append((name, pa.list_(pa.float32(), self.dimensions or 0)))
            else:
                fields.append((name, pa.int32() if name in {"input_index", "dimensions"} else types[kind]))
        metadata = {"dashscope.table": self.table.value, "dashscope.table_version": str(TABLE_SCHEMA_VERSION)}
        if self.input_columns is not None:
            metadata["dashscope.input_columns"] = json.dumps(list(self.input_columns.columns))
        return pa.schema(fields, metadata=metadata)

    def row(self, row: dict[str, Any]) -> None:
        for name, values in self._columns.items():
            values.append(row[name])
        for name in self._texts:
            if (text := row.get(name)) is not None:
                self._chars += len(text)
        if self.table is TableKind.EMBEDDINGS:
            vector = row["embedding"]
            self._vector_mask.append(vector is None)
            if vector is not None:
                try:
                    self._vectors.extend(vector)
                except TypeError:
                    raise ValueError(NOT_A_VECTOR) from None
        self._rows += 1
        if self.table is TableKind.EMBEDDINGS and self.dimensions is None:
            return  # the writer opens with the vector length: rows before the first vector wait for it
        if (
            self._rows >= self._row_group_size
            or len(self._vectors) >= _GROUP_VECTOR_VALUES
            or self._chars >= _GROUP_TEXT_CHARS
        ):
            self._flush()

    def _open_writer(self, schema: Any) -> Any:
        # vectors are not dictionary-encoded: random floats never repeat, and the attempt costs memory
        dictionary = [name for name in schema.names if name != "embedding"]
        return self._pq.ParquetWriter(self.out, schema, use_dictionary=dictionary)

    def _vector_column(self) -> Any:
        pa, size = self._pa, self.dimensions or 0
        if not size:  # no vector seen: Arrow builds no list of size 0 from values, only nulls
            return pa.nulls(len(self._vector_mask), type=pa.list_(pa.float32(), 0))
        vectors = self._vectors
        if any(self._vector_mask):  # rows without a vector hold zeros under the null mask
            vectors, offset, zeros = array.array("f"), 0, array.array("f", [0.0] * size)
            for missing in self._vector_mask:
                if missing:
                    vectors.extend(zeros)
                else:
                    vectors.extend(self._vectors[offset : offset + size])
                    offset += size
        values = pa.Array.from_buffers(pa.float32(), len(vectors), [None, pa.py_buffer(vectors)])
        mask = pa.array(self._vector_mask, type=pa.bool_()) if any(self._vector_mask) else None
        return pa.FixedSizeListArray.from_arrays(values, size, mask=mask)

    def _flush(self) -> None:
        if not self._rows:
            return
        pa = self._pa
        schema = self.schema()
        if self._writer is None:
            self._writer = self._open_writer(schema)
        arrays = []
        for column in schema:
            if column.name == "embedding":
                arrays.append(self._vector_column())
            else:
                arrays.append(pa.array(self._columns[column.name], type=column.type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        for values in self._columns.values():
            values.clear()
        self._vectors = array.array("f")
        self._vector_mask = []
        self._rows = 0
        self._chars = 0

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # no rows at all: an empty file with the schema
            self._writer = self._open_writer(self.schema())
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


def _strings(columns: dict[str, str]) -> list[str]:
    return [name for name, kind in columns.items() if kind == "string"]


def import_pyarrow() -> tuple[Any, Any]:
    """
    Return ``(pyarrow, pyarrow.parquet)``.

    :raises ImportError: naming the ``parquet`` extra, if pyarrow is not installed.
    """
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            "output_format='parquet' needs pyarrow: pip install 'airflow-provider-dashscope-batch[parquet]'"
        ) from exc
    return pyarrow, pyarrow.parquet


def open_encoder(
    fmt: ResultFormat,
    out: IO[bytes],
    *,
    row_group_size: int = 10_000,
    table: TableKind = TableKind.REQUESTS,
    input_columns: InputColumns | None = None,
) -> ResultEncoder:
    """
    Return the encoder of ``fmt`` writing to ``out``.

    :param fmt: The output format.
    :param out: Binary, write-only stream.
    :param row_group_size: Rows per Parquet row group.
    :param table: The layout of CSV/Parquet rows (:meth:`TableKind.of` the batch's endpoint and file).
    :param input_columns: Input columns to add to CSV/Parquet rows.
    """
    if fmt is ResultFormat.CSV:
        return CsvEncoder(out, table, input_columns)
    if fmt is ResultFormat.PARQUET:
        return ParquetEncoder(out, row_group_size, table, input_columns)
    return JsonlEncoder(out, table)
