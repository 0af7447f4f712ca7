"""Pure, streaming helpers for batch result files: line splitting, flattening, usage sums, digests, encoders.

Nothing here imports Airflow or opens files or connections, so benchmarks, notebooks and other tools can
reuse it::

    usage = UsageTotals()
    for line in iter_lines(client.iter_file_content(batch.output_file_id)):
        row = flatten_result(line)  # one dict per request, keys == RESULT_COLUMNS
        usage.add(line)

A result line (output or error file) looks like::

    {"id": "...", "custom_id": "1",
     "response": {"status_code": 200, "request_id": "...", "body": {"model": "qwen-plus", "created": ...,
                  "choices": [{"message": {"content": "...", "reasoning_content": "..."}}],
                  "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}},
     "error": null}

Error lines carry ``error`` as ``{"code", "message"}`` or ``{"error_code", "error_message"}`` (both are
read), and may have ``response: null`` or a response whose body holds an OpenAI-shaped ``error``.
"""

from __future__ import annotations

import array
import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

import msgspec

__all__ = [
    "EMBEDDING_COLUMNS",
    "RESULT_COLUMNS",
    "RESULT_COLUMN_TYPES",
    "TABLE_SCHEMA_VERSION",
    "CsvEncoder",
    "JsonlEncoder",
    "LineSplitter",
    "ParquetEncoder",
    "ResultEncoder",
    "ResultFileStats",
    "ResultFormat",
    "ResultKind",
    "TableKind",
    "UsageTotals",
    "flatten_embeddings",
    "flatten_result",
    "import_pyarrow",
    "is_success",
    "iter_lines",
    "open_encoder",
    "parse_result_line",
]


class ResultFormat(StrEnum):
    """How result files are written: the service's JSONL as is, or one flat row per request."""

    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"

    @property
    def extension(self) -> str:
        """File name extension, without the dot."""
        return self.value


class ResultKind(StrEnum):
    """The two result files of a batch."""

    OUTPUT = "output"
    """Successful requests (the batch's ``output_file_id``)."""
    ERRORS = "errors"
    """Failed requests (the batch's ``error_file_id``)."""


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
``custom_id`` (a JSON list of ids, as :func:`~airflow_provider_dashscope_batch.jsonl.write_requests_from_csv`
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
"""Logical type of each column (``string``, ``int`` or ``vector``; every column is nullable)."""

TABLE_SCHEMA_VERSION = 1
"""Version of the table layouts above; recorded per file in the manifest (``FileRecord.table``)."""


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


class LineSplitter:
    """Incremental splitter of byte chunks into non-blank lines (no ``\\n``), holding one line at most."""

    def __init__(self) -> None:
        self._pending = b""

    def push(self, chunk: bytes) -> list[bytes]:
        """
        Add a chunk; return the lines it completed.

        :param chunk: The next bytes of the file.
        """
        lines = chunk.split(b"\n")  # one pass, and no copy of the chunk joined to the pending bytes
        if self._pending:
            lines[0] = self._pending + lines[0]
        self._pending = lines.pop()
        return [line for line in lines if line[:1] == b"{" or line.strip()]  # strip() copies: last resort

    def finish(self) -> list[bytes]:
        """Return the last line if the file did not end with a newline."""
        rest, self._pending = self._pending, b""
        return [rest] if rest.strip() else []


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """
    Split a stream of byte chunks into non-blank lines (without the trailing ``\\n``).

    A last line without a newline is still yielded.

    :param chunks: Byte chunks in file order, of any size.
    """
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.push(chunk)
    yield from splitter.finish()


def parse_result_line(line: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """
    Parse one result line into a dict.

    :param line: Raw JSONL line (bytes or str) or an already parsed dict.
    :raises ValueError: if the line is not a JSON object.
    """
    if isinstance(line, dict):
        return line
    try:
        obj = _GENERIC_DECODER.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(f"result line is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"result line is a JSON {_JSON_NAMES.get(type(obj), 'value')}, expected an object")
    return obj


_GENERIC_DECODER = msgspec.json.Decoder()
_JSON_NAMES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


class _SummaryDetails(msgspec.Struct):
    reasoning_tokens: Any = None


class _SummaryUsage(msgspec.Struct):
    prompt_tokens: Any = None
    completion_tokens: Any = None
    total_tokens: Any = None
    completion_tokens_details: _SummaryDetails | None = None


class _SummaryBody(msgspec.Struct):
    usage: _SummaryUsage | None = None
    error: Any = None
    model: Any = None


class _SummaryResponse(msgspec.Struct):
    status_code: Any = None
    body: _SummaryBody | None = None


class _Summary(msgspec.Struct):
    response: _SummaryResponse | None = None
    error: Any = None


_SUMMARY_DECODER = msgspec.json.Decoder(_Summary)


class _RowMessage(msgspec.Struct):
    content: Any = None
    reasoning_content: Any = None


class _RowChoice(msgspec.Struct):
    finish_reason: Any = None
    message: _RowMessage | None = None


class _RowBody(msgspec.Struct):
    model: Any = None
    created: Any = None
    choices: list[_RowChoice] | None = None
    usage: _SummaryUsage | None = None
    error: Any = None


class _RowResponse(msgspec.Struct):
    status_code: Any = None
    request_id: Any = None
    body: _RowBody | None = None


class _RowLine(msgspec.Struct):
    custom_id: Any = None
    response: _RowResponse | None = None
    error: Any = None


_ROW_DECODER = msgspec.json.Decoder(_RowLine)


def _typical_request_row(line: bytes, usage: UsageTotals) -> dict[str, Any] | None:
    """
    The ``requests`` row of a line of the usual shape, its usage counted; ``None`` (nothing counted) else.

    Decodes only the fields of the row into typed structs (no dict per level, no path lookups); a line of
    another shape (an error, a body that is not an object ...) takes :func:`flatten_result`.
    """
    try:
        obj = _ROW_DECODER.decode(line)
    except msgspec.DecodeError:
        return None
    if not usage._add_typical(obj):  # type: ignore[arg-type]  # same fields as _Summary
        return None
    response = obj.response
    assert response is not None  # _add_typical accepts no line without a response
    body = response.body
    if body is None:
        model = created = message = tokens = choice = None
    else:
        model, created, tokens = body.model, body.created, body.usage
        choice = body.choices[0] if body.choices else None
        message = choice.message if choice is not None else None
    return {
        "custom_id": _as_str(obj.custom_id),
        "status_code": response.status_code,
        "model": _as_str(model),
        "content": None if message is None else _as_str(message.content),
        "reasoning_content": None if message is None else _as_str(message.reasoning_content),
        "finish_reason": None if choice is None else _as_str(choice.finish_reason),
        "prompt_tokens": None if tokens is None else tokens.prompt_tokens,
        "completion_tokens": None if tokens is None else tokens.completion_tokens,
        "total_tokens": None if tokens is None else tokens.total_tokens,
        "error_code": None,
        "error_message": None,
        "request_id": _as_str(response.request_id),
        "created": _as_int(created),
    }


def _get(obj: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or len(obj) <= key:
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
        if obj is None:
            return None
    return obj


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _error_of(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    error = obj.get("error")
    if isinstance(error, dict):
        code = error.get("code", error.get("error_code"))
        message = error.get("message", error.get("error_message"))
        if code is not None or message is not None:
            return _as_str(code), _as_str(message)
    body_error = _get(obj, "response", "body", "error")
    if isinstance(body_error, dict):
        return _as_str(body_error.get("code")), _as_str(body_error.get("message"))
    return None, None


def is_success(obj: dict[str, Any]) -> bool:
    """
    Whether a parsed result line is a successful request (2xx response and no error).

    :param obj: A parsed result line.
    """
    status = _as_int(_get(obj, "response", "status_code"))
    return status is not None and 200 <= status < 300 and _error_of(obj) == (None, None)


def flatten_result(line: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """
    Flatten one result line (output or error file) into a row keyed by :data:`RESULT_COLUMNS`.

    Missing values are ``None``; non-string content (e.g. a list of parts) is JSON-encoded.

    :param line: Raw JSONL line or a parsed dict.
    """
    obj = parse_result_line(line)
    body = _get(obj, "response", "body")
    choice = _get(body, "choices", 0)
    message = _get(choice, "message")
    usage = _get(body, "usage")
    error_code, error_message = _error_of(obj)
    return {
        "custom_id": _as_str(obj.get("custom_id")),
        "status_code": _as_int(_get(obj, "response", "status_code")),
        "model": _as_str(_get(body, "model")),
        "content": _as_str(_get(message, "content")),
        "reasoning_content": _as_str(_get(message, "reasoning_content")),
        "finish_reason": _as_str(_get(choice, "finish_reason")),
        "prompt_tokens": _as_int(_get(usage, "prompt_tokens")),
        "completion_tokens": _as_int(_get(usage, "completion_tokens")),
        "total_tokens": _as_int(_get(usage, "total_tokens")),
        "error_code": error_code,
        "error_message": error_message,
        "request_id": _as_str(_get(obj, "response", "request_id")),
        "created": _as_int(_get(body, "created")),
    }


def _packed_ids(custom_id: str | None, count: int) -> list[str] | None:
    """The texts' ids of a packed request (its ``custom_id`` is a JSON list of ``count`` strings)."""
    if custom_id is None or not custom_id.startswith("["):
        return None
    try:
        ids = json.loads(custom_id)
    except ValueError:
        return None
    if isinstance(ids, list) and len(ids) == count and all(isinstance(i, str) for i in ids):
        return ids
    return None


_NOT_A_VECTOR = "an embedding is not a list of numbers (only encoding_format 'float' is read)"


def flatten_embeddings(line: bytes | str | dict[str, Any]) -> list[dict[str, Any]]:
    """
    Flatten one embeddings result line into one row per input text, keyed by :data:`EMBEDDING_COLUMNS`.

    ``embedding`` is the vector as a list of floats (``None`` if the line carries none); a line without
    ``data`` still gives one row, so no request disappears from the table.

    :param line: Raw JSONL line or a parsed dict.
    :raises ValueError: if the line is not a JSON object, or a vector is not a list.
    """
    obj = parse_result_line(line)
    body = _get(obj, "response", "body")
    data = _get(body, "data")
    items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    custom_id = _as_str(obj.get("custom_id"))
    usage = _get(body, "usage")
    ids = _packed_ids(custom_id, len(items))
    status_code = _as_int(_get(obj, "response", "status_code"))
    model = _as_str(_get(body, "model"))
    request_id = _as_str(_get(obj, "response", "request_id"))
    rows = []
    for position, item in enumerate(items or [{}]):
        vector = item.get("embedding")
        if vector is not None and not isinstance(vector, list):
            raise ValueError(_NOT_A_VECTOR)
        index = _as_int(item.get("index"))
        if index is None and items:
            index = position
        if ids is not None:
            input_id = ids[index] if index is not None and 0 <= index < len(ids) else None
        else:
            input_id = custom_id if len(items) == 1 else None
        first = position == 0
        rows.append(
            {
                "custom_id": custom_id,
                "input_index": index,
                "input_id": input_id,
                "embedding": vector,
                "dimensions": len(vector) if vector is not None else None,
                "status_code": status_code,
                "model": model,
                "prompt_tokens": _as_int(_get(usage, "prompt_tokens")) if first else None,
                "total_tokens": _as_int(_get(usage, "total_tokens")) if first else None,
                "request_id": request_id,
            }
        )
    return rows


@dataclass
class UsageTotals:
    """Token usage summed over successful results (failed requests are not billed)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    reasoning_tokens: int = 0
    meter: Any = field(default=None, repr=False, compare=False)
    """A :class:`~airflow_provider_dashscope_batch.cost.CostMeter` to price each successful request."""

    def add(self, line: bytes | str | dict[str, Any]) -> None:
        """
        Add one result line's usage if the request succeeded.

        A raw line is decoded only as far as status, errors and usage (fast on large embedding or chat
        results); pass the parsed dict instead when you parse the line anyway.

        :param line: Raw JSONL line or a parsed dict.
        :raises ValueError: if a raw line is not a JSON object.
        """
        if not isinstance(line, dict):
            try:
                summary = _SUMMARY_DECODER.decode(line)
            except msgspec.DecodeError:  # malformed, or an unusual shape: the lenient parse decides
                summary = None
            if summary is not None and self._add_typical(summary):
                return
            line = parse_result_line(line)
        if not is_success(line):
            return
        usage = _get(line, "response", "body", "usage") or {}
        self._count(
            _as_int(_get(usage, "prompt_tokens")),
            _as_int(_get(usage, "completion_tokens")),
            _as_int(_get(usage, "total_tokens")),
            _as_int(_get(usage, "completion_tokens_details", "reasoning_tokens")),
            _get(line, "response", "body", "model"),
        )

    def _add_typical(self, summary: _Summary) -> bool:
        """Count a line of the usual shape (int status, no error, int usage); ``False`` if unusual."""
        # explicit tests, no generator: this runs once per line of every result file
        response = summary.response
        if summary.error is not None or response is None:
            return False
        status = response.status_code
        if type(status) is not int:
            return False
        body = response.body
        if body is None:
            if 200 <= status < 300:
                self._count(None, None, None, None, None)
            return True
        if body.error is not None:
            return False
        if not 200 <= status < 300:
            return True  # a failed request is not billed
        usage = body.usage
        if usage is None:
            self._count(None, None, None, None, body.model)
            return True
        prompt, completion, total = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        details = usage.completion_tokens_details
        reasoning = None if details is None else details.reasoning_tokens
        if (
            (prompt is not None and type(prompt) is not int)
            or (completion is not None and type(completion) is not int)
            or (total is not None and type(total) is not int)
            or (reasoning is not None and type(reasoning) is not int)
        ):
            return False
        self._count(prompt, completion, total, reasoning, body.model)
        return True

    def _count(
        self, prompt: int | None, completion: int | None, total: int | None, reasoning: int | None, model: Any
    ) -> None:
        prompt, completion, reasoning = prompt or 0, completion or 0, reasoning or 0
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += total if total is not None else prompt + completion
        self.reasoning_tokens += reasoning
        self.requests += 1
        if self.meter is not None:
            self.meter.add(model if isinstance(model, str) else None, prompt, completion, reasoning)

    def as_dict(self) -> dict[str, int]:
        """Return the totals as a JSON-able dict."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "reasoning_tokens": self.reasoning_tokens,
        }


class ResultFileStats:
    """
    Byte count, non-blank line count and SHA-256 of a result file, computed while it streams past.

    :param digest: Whether to hash (``False`` when the same bytes are hashed elsewhere).
    """

    def __init__(self, *, digest: bool = True) -> None:
        self.bytes = 0
        self.lines = 0
        self._digest = hashlib.sha256() if digest else None
        self._splitter = LineSplitter()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes seen so far (empty when not hashing)."""
        return self._digest.hexdigest() if self._digest is not None else ""

    def update(self, chunk: bytes) -> list[bytes]:
        """
        Count and hash the next chunk; return the lines it completed.

        :param chunk: The next bytes of the file.
        """
        self.bytes += len(chunk)
        if self._digest is not None:
            self._digest.update(chunk)
        lines = self._splitter.push(chunk)
        self.lines += len(lines)
        return lines

    def finish(self) -> list[bytes]:
        """Return the last line if the file did not end with a newline (call once, at the end)."""
        lines = self._splitter.finish()
        self.lines += len(lines)
        return lines


# ------------------------------------------------------------------------------------------- encoders
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
    """

    wants_rows = True
    """Whether :meth:`line` needs the parsed lines (``False``: only raw bytes are written)."""

    def __init__(self, out: IO[bytes], table: TableKind = TableKind.REQUESTS) -> None:
        self.out = out
        self.table = table
        self.dimensions: int | None = None
        """The vector length of an ``embeddings`` table (``None`` until a vector was seen)."""

    def raw(self, chunk: bytes) -> None:
        """Receive the next raw chunk of the source file."""

    def consume(self, line: bytes, usage: UsageTotals) -> None:
        """
        Receive the next raw line and add its usage to ``usage`` (typed fast path for ``requests`` rows).

        :raises ValueError: for a line that is not a JSON object, and as :meth:`line`.
        """
        if self.table is TableKind.REQUESTS and (row := _typical_request_row(line, usage)) is not None:
            self.row(row)
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
                self.row(row)
        else:
            self.row(flatten_result(obj))

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
        """Receive the next flattened row (keys: the table's columns)."""

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

    def __init__(self, out: IO[bytes], table: TableKind = TableKind.REQUESTS) -> None:
        super().__init__(out, table)
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=table.columns, lineterminator="\n")
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
    length (what vector stores load as is); the writer opens once that length is known.

    :param out: Binary, write-only stream.
    :param row_group_size: Rows per row group (rows held in memory at once; a group also ends at 4 Mi
        characters of text or 2 Mi vector values).
    :param table: The layout of the rows.
    """

    def __init__(self, out: IO[bytes], row_group_size: int, table: TableKind = TableKind.REQUESTS) -> None:
        super().__init__(out, table)
        self._pa, self._pq = import_pyarrow()
        self._writer: Any = None
        self._row_group_size = row_group_size
        self._columns: dict[str, list[Any]] = {name: [] for name in table.columns if name != "embedding"}
        self._vectors = array.array("f")
        self._vector_mask: list[bool] = []
        self._rows = 0
        self._chars = 0

    def schema(self) -> Any:
        """The file's Arrow schema (an ``embeddings`` vector column needs :attr:`dimensions`)."""
        pa = self._pa
        types = {"string": pa.string(), "int": pa.int64()}
        fields = []
        for name in self.table.columns:
            kind = RESULT_COLUMN_TYPES[name]
            if kind == "vector":
                fields.append((name, pa.list_(pa.float32(), self.dimensions or 0)))
            else:
                fields.append((name, pa.int32() if name in {"input_index", "dimensions"} else types[kind]))
        metadata = {"dashscope.table": self.table.value, "dashscope.table_version": str(TABLE_SCHEMA_VERSION)}
        return pa.schema(fields, metadata=metadata)

    def row(self, row: dict[str, Any]) -> None:
        for name, values in self._columns.items():
            values.append(row[name])
        for name in ("content", "reasoning_content", "error_message"):
            if (text := row.get(name)) is not None:
                self._chars += len(text)
        if self.table is TableKind.EMBEDDINGS:
            vector = row["embedding"]
            self._vector_mask.append(vector is None)
            if vector is not None:
                try:
                    self._vectors.extend(vector)
                except TypeError:
                    raise ValueError(_NOT_A_VECTOR) from None
        self._rows += 1
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
) -> ResultEncoder:
    """
    Return the encoder of ``fmt`` writing to ``out``.

    :param fmt: The output format.
    :param out: Binary, write-only stream.
    :param row_group_size: Rows per Parquet row group.
    :param table: The layout of CSV/Parquet rows (:meth:`TableKind.of` the batch's endpoint and file).
    """
    if fmt is ResultFormat.CSV:
        return CsvEncoder(out, table)
    if fmt is ResultFormat.PARQUET:
        return ParquetEncoder(out, row_group_size, table)
    return JsonlEncoder(out, table)
