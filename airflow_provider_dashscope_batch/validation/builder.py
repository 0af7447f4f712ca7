"""
Build batch input files (JSONL) from request dicts or a CSV file, streamed to any binary target.

Lines are compact JSON, UTF-8, non-ASCII kept as is. Rules the service enforces are checked by
:func:`airflow_provider_dashscope_batch.validation.rules.validate_jsonl`, not here; the builders only
refuse input they cannot turn into a request, naming the item or CSV line. Every such problem of a CSV
file is collected and reported at once (:class:`InputBuildError`), so one run shows them all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from contextlib import contextmanager
from typing import IO, Any, BinaryIO, TextIO

from airflow_provider_dashscope_batch.catalog import EMBEDDINGS_ENDPOINT, Catalog, shipped_catalog
from airflow_provider_dashscope_batch.results.input_columns import InputColumnsWriter
from airflow_provider_dashscope_batch.validation.rules import ENDPOINTS

__all__ = ["InputBuildError", "write_requests", "write_requests_from_csv"]

_LISTED_PROBLEMS = 100


class InputBuildError(ValueError):
    """
    The input could not be turned into requests; ``problems`` names every one (``<source> line <n>: ...``).

    :param source: The input's name (the CSV's path, or ``requests``).
    :param problems: One message per problem, in input order.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        listed = problems[:_LISTED_PROBLEMS]
        more = len(problems) - len(listed)
        text = "\n".join([f"{source}: {len(problems)} problem(s) building the requests", *listed])
        super().__init__(text + (f"\n... and {more} more problem(s) not listed" if more else ""))
        self.source = source
        self.problems = problems


def _is_local_path(target: object) -> bool:
    return isinstance(target, (str, pathlib.PurePath)) and not hasattr(target, "protocol")


@contextmanager
def _open_binary_target(target: str | os.PathLike[str] | BinaryIO) -> Iterator[IO[bytes]]:
    if hasattr(target, "write"):
        yield target  # type: ignore[misc]
    elif _is_local_path(target):
        with open(target, "wb") as f:
            yield f
    else:  # ObjectStoragePath and other path objects with their own filesystem
        with target.open("wb") as f:  # type: ignore[union-attr]
            yield f


@contextmanager
def _open_text_source(source: str | os.PathLike[str] | IO[Any], encoding: str) -> Iterator[TextIO]:
    if isinstance(source, io.TextIOBase):
        yield source  # type: ignore[misc]
    elif hasattr(source, "read"):
        wrapper = io.TextIOWrapper(source, encoding=encoding, newline="")  # type: ignore[arg-type]
        try:
            yield wrapper
        finally:
            wrapper.detach()  # leave the caller's stream open
    elif _is_local_path(source):
        with open(source, encoding=encoding, newline="") as f:
            yield f
    else:
        # Binary, then decoded here: some fsspec/upath versions hand back text streams that csv cannot read.
        with source.open("rb") as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as f:  # type: ignore[union-attr]
            yield f


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}, got {endpoint!r}")


def encode_line(request: Mapping[str, Any]) -> bytes:
    """One request as the JSONL line every writer of this package emits (compact, UTF-8, LF)."""
    return json.dumps(request, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def write_requests(
    requests: Iterable[Mapping[str, Any]],
    target: str | os.PathLike[str] | BinaryIO,
    *,
    endpoint: str = "/v1/chat/completions",
    model: str | None = None,
    carry: InputColumnsWriter | None = None,
) -> int:
    """
    Write requests as batch input JSONL, one line per item, streamed.

    An item holding a ``body`` key is a request (``custom_id``, ``method`` and ``url`` default to
    the 1-based item number, ``"POST"`` and ``endpoint``); any other item is a request body.

    :param requests: request dicts or bodies; consumed lazily.
    :param target: a local path, an ``ObjectStoragePath``, or a binary stream open for writing
        (left open).
    :param endpoint: the ``url`` of requests that do not set one.
    :param model: ``body.model`` for bodies that do not set one.
    :param carry: takes the keys it names out of each request dict (beside ``body``) into the
        input-columns sidecar, instead of the line.
    :return: the number of lines written.
    """
    _check_endpoint(endpoint)
    count = 0
    with _open_binary_target(target) as out:
        for count, item in enumerate(requests, start=1):
            if not isinstance(item, Mapping):
                raise TypeError(f"request {count}: expected a dict, got {type(item).__name__}")
            carried = item
            if carry is not None:
                item = _take_carried(item, carry, count)
            if "body" in item:
                request = {"custom_id": str(count), "method": "POST", "url": endpoint, **item}
            else:
                request = {"custom_id": str(count), "method": "POST", "url": endpoint, "body": item}
            body = request["body"]
            if not isinstance(body, Mapping):
                raise TypeError(f"request {count}: body must be a dict, got {type(body).__name__}")
            if "model" not in body:
                if model is None:
                    raise ValueError(f"request {count}: body has no model and no model= was given")
                request["body"] = {"model": model, **body}
            try:
                out.write(encode_line(request))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"request {count}: not serialisable as JSON: {exc}") from exc
            if carry is not None:
                carry.add(
                    str(request["custom_id"]), [carried[name] for name in carry.names], f"request {count}"
                )
    return count


def _take_carried(item: Mapping[str, Any], carry: InputColumnsWriter, count: int) -> dict[str, Any]:
    """The request dict without the keys ``carry`` names (all of which it must hold)."""
    if "body" not in item:
        raise ValueError(
            f"request {count}: carry_columns reads keys beside 'body', but this item is a bare body; "
            "give request dicts ({'custom_id': ..., 'body': {...}, 'title': ...})"
        )
    missing = [name for name in carry.names if name not in item]
    if missing:
        raise ValueError(f"request {count}: no {', '.join(map(repr, missing))} to carry (carry_columns)")
    return {key: value for key, value in item.items() if key not in carry.names}


def _column_index(column: str | int, header: list[str] | None, what: str, source: str) -> int:
    if isinstance(column, int):
        return column
    if header is None:
        raise ValueError(f"{what} {column!r} is a name, but the CSV has no header (header=False)")
    try:
        return header.index(column)
    except ValueError:
        raise ValueError(f"{source}: {what} {column!r} not in the CSV header {header}") from None


def _carry_index(column: str, header: list[str] | None, source: str) -> int:
    if header is None:
        raise ValueError(
            f"{source}: carry_columns names header columns, but the CSV has no header (header=False)"
        )
    try:
        return header.index(column)
    except ValueError:
        raise ValueError(
            f"{source} line 1: carried column {column!r} is not in the CSV header {header} (carry_columns)"
        ) from None


def _check_packing(inputs_per_request: int, endpoint: str, model: str, catalog: Catalog) -> None:
    if inputs_per_request == 1:
        return
    if endpoint != EMBEDDINGS_ENDPOINT:
        raise ValueError("inputs_per_request packs texts into /v1/embeddings requests only")
    entry = catalog.get(model)
    limits = entry.embedding if entry is not None else None
    if inputs_per_request < 1 or (limits is not None and inputs_per_request > limits.max_inputs):
        most = f"at most {limits.max_inputs} for {model}" if limits is not None else "at least 1"
        raise ValueError(f"inputs_per_request must be {most}, got {inputs_per_request}")


class _Packer:
    """The texts of one packed embeddings request; its ``custom_id`` is the JSON list of their ids."""

    def __init__(
        self,
        out: IO[bytes],
        model: str,
        endpoint: str,
        extra: dict[str, Any],
        size: int,
        origins: MutableSequence[int] | None,
    ) -> None:
        self.out, self.model, self.endpoint, self.extra, self.size = out, model, endpoint, extra, size
        self.origins = origins
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.first = 0
        self.lines = 0

    def add(self, custom_id: str, text: str, line: int) -> None:
        if not self.ids:
            self.first = line
        self.ids.append(custom_id)
        self.texts.append(text)
        if len(self.texts) == self.size:
            self.flush()

    def flush(self) -> None:
        if not self.texts:
            return
        if self.origins is not None:
            self.origins.append(self.first)
        body = {"model": self.model, "input": self.texts, **self.extra}
        request = {"custom_id": _packed_id(self.ids), "method": "POST", "url": self.endpoint, "body": body}
        self.out.write(encode_line(request))
        self.lines += 1
        self.ids, self.texts = [], []


def _packed_id(ids: list[str]) -> str:
    return json.dumps(ids, ensure_ascii=False, separators=(",", ":"))


def write_requests_from_csv(
    source: str | os.PathLike[str] | IO[Any],
    target: str | os.PathLike[str] | BinaryIO,
    *,
    model: str,
    text_column: str | int = 1,
    id_column: str | int | None = 0,
    template: str | None = None,
    system_prompt: str | None = None,
    endpoint: str = "/v1/chat/completions",
    body_params: Mapping[str, Any] | None = None,
    image_column: str | int | None = None,
    inputs_per_request: int = 1,
    header: bool = True,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
    name: str | None = None,
    carry: InputColumnsWriter | None = None,
    catalog: Catalog | None = None,
    origins: MutableSequence[int] | None = None,
) -> int:
    """
    Turn CSV rows into request lines (the docs' "CSV to JSONL" tool), streamed.

    For chat endpoints each row is one request, ``{"model", "messages": [system?, user], **body_params}``;
    with ``image_column`` (Qwen-VL, Qwen-OCR) the user message is ``[image_url part, text part]``. For
    ``/v1/embeddings`` the body is ``{"model", "input", **body_params}``: one text per request, or up to
    ``inputs_per_request`` texts (the model's per-request limit at most) whose request's ``custom_id`` is
    the JSON list of their ids (``'["7","8"]'``); the results' embeddings table gives each text its id back
    (``input_id``), so the rows come out one per text.

    :param source: the CSV: a local path, an ``ObjectStoragePath``, or a text or binary stream.
    :param target: a local path, an ``ObjectStoragePath``, or a binary stream open for writing.
    :param model: ``body.model`` of every request.
    :param text_column: column (header name or 0-based index) holding the user text; ignored when
        ``template`` is given.
    :param id_column: column holding ``custom_id``; ``None`` numbers data rows from 1.
    :param template: user message built with :meth:`str.format` from the row: ``{name}`` for
        header names, ``{0}`` for positions.
    :param system_prompt: system message put before each user message (chat endpoints only).
    :param endpoint: the ``url`` of every request.
    :param body_params: extra body fields, e.g. ``{"temperature": 0.2, "enable_thinking": False}``.
    :param image_column: column holding an image URL (``https://`` or a ``data:`` URL) sent before the
        text (chat endpoints, vision models).
    :param inputs_per_request: texts packed into one embeddings request.
    :param header: whether the first row names the columns.
    :param delimiter: CSV field delimiter.
    :param encoding: encoding of a path or binary stream (the default also drops a UTF-8 BOM).
    :param name: name used in error messages; defaults to the path or the stream's ``name``.
    :param carry: writes the CSV columns it names (header names), per row, to the input-columns sidecar
        under the row's id (each text's own id in a packed request).
    :param catalog: the model catalog the packing reads (the model's texts per request).
    :param origins: receives, per line written, the CSV line it was built from (a packed request: its
        first text's), so the validator's findings can name the user's CSV line.
    :return: the number of lines written.
    :raises InputBuildError: naming every CSV line that cannot be turned into a request (nothing of such
        an input is usable; the target holds the lines built before the end).
    """
    _check_endpoint(endpoint)
    embeddings = endpoint == EMBEDDINGS_ENDPOINT
    if system_prompt is not None and embeddings:
        raise ValueError("system_prompt applies to chat endpoints, not /v1/embeddings")
    if image_column is not None and embeddings:
        raise ValueError("image_column applies to chat endpoints (vision models), not /v1/embeddings")
    _check_packing(inputs_per_request, endpoint, model, catalog or shipped_catalog())
    source_name = name or (str(getattr(source, "name", "<csv>")) if hasattr(source, "read") else str(source))
    extra = dict(body_params or {})
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"body_params are not serialisable as JSON: {exc}") from None
    with _open_text_source(source, encoding) as text, _open_binary_target(target) as out:
        reader = csv.reader(text, delimiter=delimiter)
        columns = next(reader, None) if header else None
        text_idx = (
            None if template is not None else _column_index(text_column, columns, "text_column", source_name)
        )
        id_idx = None if id_column is None else _column_index(id_column, columns, "id_column", source_name)
        image_idx = (
            None
            if image_column is None
            else _column_index(image_column, columns, "image_column", source_name)
        )
        carry_idx = [] if carry is None else [_carry_index(n, columns, source_name) for n in carry.names]
        packer = (
            _Packer(out, model, endpoint, extra, inputs_per_request, origins)
            if inputs_per_request > 1
            else None
        )
        problems: list[str] = []
        count = 0
        for row in reader:
            if not row:
                continue  # csv yields [] for a blank line
            count += 1
            line = reader.line_num
            where = f"{source_name} line {line}"
            try:
                custom_id, content, image = _row_request(
                    row,
                    columns,
                    count,
                    id_idx,
                    id_column,
                    text_idx,
                    text_column,
                    template,
                    image_idx,
                    image_column,
                )
                if carry is not None and max(carry_idx) >= len(row):
                    missing = [n for n, i in zip(carry.names, carry_idx, strict=True) if i >= len(row)]
                    raise ValueError(
                        f"carried column {missing[0]!r} is missing (the row has {len(row)} cells)"
                    )
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if problems:
                continue  # the input is unusable: only look for more problems
            if carry is not None:
                carry.add(custom_id, [row[i] for i in carry_idx], where)
            if packer is not None:
                packer.add(custom_id, content, line)
                continue
            if embeddings:
                body: dict[str, Any] = {"model": model, "input": content, **extra}
            else:
                user: str | list[dict[str, Any]] = content
                if image is not None:
                    user = [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": content},
                    ]
                messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
                if system_prompt is not None:
                    messages.insert(0, {"role": "system", "content": system_prompt})
                body = {"model": model, "messages": messages, **extra}
            out.write(encode_line({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}))
            if origins is not None:
                origins.append(line)
        if problems:
            raise InputBuildError(source_name, problems)
        if packer is not None:
            packer.flush()
            return packer.lines
    return count


def _row_request(
    row: list[str],
    columns: list[str] | None,
    count: int,
    id_idx: int | None,
    id_column: str | int | None,
    text_idx: int | None,
    text_column: str | int,
    template: str | None,
    image_idx: int | None,
    image_column: str | int | None,
) -> tuple[str, str, str | None]:
    """One CSV row's ``custom_id``, user text and image URL; a ``ValueError`` names what the row lacks."""
    if id_idx is None:
        custom_id = str(count)
    elif id_idx >= len(row) or not row[id_idx].strip():
        raise ValueError(f"id column {id_column!r} is missing or empty")
    else:
        custom_id = row[id_idx]
    if template is not None:
        named = dict(zip(columns, row, strict=False)) if columns else {}
        try:
            content = template.format(*row, **named)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"template placeholder {exc} has no value in this row") from None
    elif text_idx is None or text_idx >= len(row):  # text_idx is set when template is None
        raise ValueError(f"text column {text_column!r} is missing")
    else:
        content = row[text_idx]
    if not content.strip():
        raise ValueError("the request text is empty")
    image = None
    if image_idx is not None:
        if image_idx >= len(row) or not row[image_idx].strip():
            raise ValueError(f"image column {image_column!r} is missing or empty")
        image = row[image_idx].strip()
    return custom_id, content, image
