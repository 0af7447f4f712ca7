"""Pure, streaming helpers for batch result files: line splitting, flattening, usage sums, digests.

Nothing here imports Airflow or opens files or connections, so benchmarks, notebooks and other tools can
reuse it::

    usage = UsageTotals()
    for line in iter_lines(client.iter_file_content(batch.output_file_id)):
        row = flatten_result(line)  # one dict per request, keys == result_tables.RESULT_COLUMNS
        usage.add(line)

A result line (output or error file) looks like::

    {"id": "...", "custom_id": "1",
     "response": {"status_code": 200, "request_id": "...", "body": {"model": "qwen-plus", "created": ...,
                  "choices": [{"message": {"content": "...", "reasoning_content": "..."}}],
                  "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}},
     "error": null}

Error lines carry ``error`` as ``{"code", "message"}`` or ``{"error_code", "error_message"}`` (both are
read), and may have ``response: null`` or a response whose body holds an OpenAI-shaped ``error``.

The CSV/Parquet writers of these rows live in :mod:`~airflow_provider_dashscope_batch.results.tables`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "LineSplitter",
    "ResultFileStats",
    "ResultFormat",
    "ResultKind",
    "UsageTotals",
    "flatten_embeddings",
    "flatten_result",
    "flatten_typical_result",
    "is_success",
    "iter_lines",
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


def flatten_typical_result(line: bytes, usage: UsageTotals) -> dict[str, Any] | None:
    """
    The row of a line of the usual shape, its usage counted; ``None`` (nothing counted) otherwise.

    The fast path of :func:`flatten_result` plus :meth:`UsageTotals.add` for the ``requests`` table.

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
    Flatten one result line (output or error file) into a row of the ``requests`` table.

    Keys: :data:`~airflow_provider_dashscope_batch.results.tables.RESULT_COLUMNS`.

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


NOT_A_VECTOR = "an embedding is not a list of numbers (only encoding_format 'float' is read)"


def flatten_embeddings(line: bytes | str | dict[str, Any]) -> list[dict[str, Any]]:
    """
    Flatten one embeddings result line into one row per input text of the ``embeddings`` table.

    Keys: :data:`~airflow_provider_dashscope_batch.results.tables.EMBEDDING_COLUMNS`.

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
            raise ValueError(NOT_A_VECTOR)
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
