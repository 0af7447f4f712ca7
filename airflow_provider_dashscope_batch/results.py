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
    "RESULT_COLUMNS",
    "RESULT_COLUMN_TYPES",
    "CsvEncoder",
    "JsonlEncoder",
    "LineSplitter",
    "ParquetEncoder",
    "ResultEncoder",
    "ResultFileStats",
    "ResultFormat",
    "ResultKind",
    "UsageTotals",
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
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "error_code",
    "error_message",
    "request_id",
    "created",
    "embedding_dim",
)
"""Columns of a flattened result row, in file order.

``content``/``reasoning_content`` come from the first choice's message (chat completions). Embedding
results have no content: ``content`` stays empty and ``embedding_dim`` holds the vector length of the
first embedding (the vectors themselves are only in the raw JSONL). ``created`` is the response body's
Unix timestamp.
"""

RESULT_COLUMN_TYPES: dict[str, str] = {
    "custom_id": "string",
    "status_code": "int",
    "model": "string",
    "content": "string",
    "reasoning_content": "string",
    "prompt_tokens": "int",
    "completion_tokens": "int",
    "total_tokens": "int",
    "error_code": "string",
    "error_message": "string",
    "request_id": "string",
    "created": "int",
    "embedding_dim": "int",
}
"""Logical type of each column (``string`` or ``int``; every column is nullable)."""


class LineSplitter:
    """Incremental splitter of byte chunks into non-blank lines (no ``\\n``), holding one line at most."""

    def __init__(self) -> None:
        self._pending = b""

    def push(self, chunk: bytes) -> list[bytes]:
        """
        Add a chunk; return the lines it completed.

        :param chunk: The next bytes of the file.
        """
        if b"\n" not in chunk:
            self._pending += chunk
            return []
        *complete, rest = (self._pending + chunk).split(b"\n")
        self._pending = rest
        return [line for line in complete if line.strip()]

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
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"result line is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"result line is a JSON {type(obj).__name__}, expected an object")
    return obj


class _SummaryBody(msgspec.Struct):
    usage: Any = None
    error: Any = None
    model: Any = None


class _SummaryResponse(msgspec.Struct):
    status_code: Any = None
    body: _SummaryBody | None = None


class _Summary(msgspec.Struct):
    response: _SummaryResponse | None = None
    error: Any = None


_SUMMARY_DECODER = msgspec.json.Decoder(_Summary)


def _summarize(line: bytes | str) -> dict[str, Any]:
    """
    Decode only what success and usage depend on; other fields (message content, embeddings) are skipped.

    Lines the typed decoder rejects (malformed JSON, an unexpected shape) take the full, lenient parse,
    which raises the usual :class:`ValueError` for a line that is not a JSON object.
    """
    try:
        summary = _SUMMARY_DECODER.decode(line)
    except msgspec.DecodeError:
        return parse_result_line(line)
    response = summary.response
    body = response.body if response is not None else None
    return {
        "error": summary.error,
        "response": None
        if response is None
        else {
            "status_code": response.status_code,
            "body": None if body is None else {"usage": body.usage, "error": body.error, "model": body.model},
        },
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
    message = _get(body, "choices", 0, "message")
    usage = _get(body, "usage")
    embedding = _get(body, "data", 0, "embedding")
    error_code, error_message = _error_of(obj)
    return {
        "custom_id": _as_str(obj.get("custom_id")),
        "status_code": _as_int(_get(obj, "response", "status_code")),
        "model": _as_str(_get(body, "model")),
        "content": _as_str(_get(message, "content")),
        "reasoning_content": _as_str(_get(message, "reasoning_content")),
        "prompt_tokens": _as_int(_get(usage, "prompt_tokens")),
        "completion_tokens": _as_int(_get(usage, "completion_tokens")),
        "total_tokens": _as_int(_get(usage, "total_tokens")),
        "error_code": error_code,
        "error_message": error_message,
        "request_id": _as_str(_get(obj, "response", "request_id")),
        "created": _as_int(_get(body, "created")),
        "embedding_dim": len(embedding) if isinstance(embedding, list) else None,
    }


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
        obj = line if isinstance(line, dict) else _summarize(line)
        if not is_success(obj):
            return
        usage = _get(obj, "response", "body", "usage") or {}
        prompt = _as_int(_get(usage, "prompt_tokens")) or 0
        completion = _as_int(_get(usage, "completion_tokens")) or 0
        total = _as_int(_get(usage, "total_tokens"))
        reasoning = _as_int(_get(usage, "completion_tokens_details", "reasoning_tokens")) or 0
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += total if total is not None else prompt + completion
        self.reasoning_tokens += reasoning
        self.requests += 1
        if self.meter is not None:
            model = _get(obj, "response", "body", "model")
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
    """Byte count, non-blank line count and SHA-256 of a result file, computed while it streams past."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self._digest = hashlib.sha256()
        self._splitter = LineSplitter()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes seen so far."""
        return self._digest.hexdigest()

    def update(self, chunk: bytes) -> list[bytes]:
        """
        Count and hash the next chunk; return the lines it completed.

        :param chunk: The next bytes of the file.
        """
        self.bytes += len(chunk)
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


class ResultEncoder:
    """
    Writes one result file to a binary stream in one :class:`ResultFormat`.

    The caller hands every raw chunk of the source file to :meth:`raw` and, when :attr:`wants_rows` is
    true, every flattened row (:func:`flatten_result`) to :meth:`row`; then :meth:`close` (or
    :meth:`abort` after a failure). Nothing is held beyond one buffer or row group.

    :param out: Binary, write-only stream (need not be seekable).
    """

    wants_rows = True
    """Whether :meth:`row` needs flattened rows (``False``: only raw bytes are written)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def raw(self, chunk: bytes) -> None:
        """Receive the next raw chunk of the source file."""

    def row(self, row: dict[str, Any]) -> None:
        """Receive the next flattened row."""

    def close(self) -> None:
        """Write whatever is buffered and any trailer."""

    def abort(self) -> None:
        """Release resources after a failure (what was written is discarded by the caller)."""


class JsonlEncoder(ResultEncoder):
    """Copies the source file byte for byte."""

    wants_rows = False

    def raw(self, chunk: bytes) -> None:
        self.out.write(chunk)


class CsvEncoder(ResultEncoder):
    """UTF-8 CSV without BOM: a header of :data:`RESULT_COLUMNS`, then one row per request."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__(out)
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        self._writer.writeheader()

    def row(self, row: dict[str, Any]) -> None:
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

    :param out: Binary, write-only stream.
    :param row_group_size: Rows per row group (rows held in memory at once).
    """

    def __init__(self, out: IO[bytes], row_group_size: int) -> None:
        super().__init__(out)
        pa, pq = import_pyarrow()
        self._pa = pa
        types = {"string": pa.string(), "int": pa.int64()}
        self._schema = pa.schema([(name, types[RESULT_COLUMN_TYPES[name]]) for name in RESULT_COLUMNS])
        self._writer = pq.ParquetWriter(out, self._schema)
        self._row_group_size = row_group_size
        self._rows: list[dict[str, Any]] = []

    def row(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(self._pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
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


def open_encoder(fmt: ResultFormat, out: IO[bytes], *, row_group_size: int = 10_000) -> ResultEncoder:
    """
    Return the encoder of ``fmt`` writing to ``out``.

    :param fmt: The output format.
    :param out: Binary, write-only stream.
    :param row_group_size: Rows per Parquet row group.
    """
    if fmt is ResultFormat.CSV:
        return CsvEncoder(out)
    if fmt is ResultFormat.PARQUET:
        return ParquetEncoder(out, row_group_size)
    return JsonlEncoder(out)
