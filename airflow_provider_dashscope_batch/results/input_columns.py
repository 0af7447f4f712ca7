"""
Input columns carried into the result tables: the sidecar file written beside an upload, and its reader.

A builder (``csv=`` / ``requests=``) hands each request's carried values to :class:`InputColumnsWriter`,
which streams one compact JSON array per request (``["<custom_id>", value, ...]``) and learns each
column's type. After the upload, :func:`publish_input_columns` writes the sidecar as a header line plus
those rows to ``<carry_columns_to>/<input file id>.jsonl``; the results transfer finds it there from the
batch's ``input_file_id`` and :class:`InputColumns` joins it to the rows by ``custom_id`` (the text's own
id for packed embeddings requests).

Memory: the writer holds nothing per row; the reader holds one batch's sidecar (at most 50,000 requests,
or texts of packed requests) as a dict, never the result file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import msgspec

__all__ = [
    "INPUT_COLUMNS_VERSION",
    "InputColumns",
    "InputColumnsWriter",
    "check_column_names",
    "copy_input_columns",
    "publish_input_columns",
]

INPUT_COLUMNS_VERSION = 1
"""Version of the sidecar layout (its header line's ``version``)."""

_FORMAT = "dashscope-input-columns"
_TYPES: dict[type, str] = {str: "string", bool: "bool", int: "int", float: "float"}
_ENCODER = msgspec.json.Encoder()


def check_column_names(names: Iterable[str], taken: Iterable[str]) -> tuple[str, ...]:
    """
    The names of the columns to carry, checked: non-empty strings, each once, none a result column.

    :param names: The columns (CSV header names, or keys of a request dict beside ``body``).
    :param taken: The result tables' own column names.
    :raises ValueError: naming the rule a name breaks.
    """
    names = tuple(names)
    reserved = set(taken)
    if not names:
        raise ValueError("carry_columns names no column; leave it out to carry none")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"carry_columns: {name!r} is not a column name (a non-empty string)")
        if name in reserved:
            raise ValueError(
                f"carry_columns: {name!r} is a column of the result tables already; rename it in the input"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"carry_columns lists a column more than once: {list(names)}")
    return names


class InputColumnsWriter:
    """
    Streams the carried values of each request to ``out`` (one JSON array a line) and learns their types.

    A column's type is that of its values: ``string``, ``int``, ``float`` (ints among floats widen),
    ``bool``; ``None`` fits any. With ``infer_types`` (CSV cells, which are all text), a column's type is
    inferred from its cells instead: ``int`` if every non-empty cell is a whole number, ``float`` if every
    one is a number, ``bool`` if every one is ``true``/``false`` (any case), else ``string``; an empty
    cell of a typed column is null; a number with leading zeros (``00123``) is text. The rows are converted
    by :meth:`rows_out`.

    :param out: Binary stream of the sidecar's rows (the header is written by
        :func:`publish_input_columns`).
    :param names: The columns, in table order (from :func:`check_column_names`).
    :param infer_types: Infer each column's type from text cells (CSV input).
    """

    def __init__(self, out: IO[bytes], names: Sequence[str], *, infer_types: bool = False) -> None:
        self.out = out
        self.names = tuple(names)
        self.types: dict[str, str | None] = dict.fromkeys(self.names)
        self.infer_types = infer_types
        self.rows = 0

    def add(self, custom_id: str, values: Sequence[Any], where: str) -> None:
        """
        Write one request's values (in the order of ``names``).

        :param where: The item or CSV line, for the error.
        :raises ValueError: for a value that is not a scalar, or whose type differs from the column's.
        """
        for name, value in zip(self.names, values, strict=True):
            if value is None or (self.infer_types and value == ""):
                continue
            kind = (
                _text_kind(value) if self.infer_types and isinstance(value, str) else _TYPES.get(type(value))
            )
            if kind is None:
                raise ValueError(
                    f"{where}: carried column {name!r} holds a {type(value).__name__}; a table cell is a "
                    "string, number, boolean or null"
                )
            known = self.types[name]
            if known is None or known == kind:
                self.types[name] = kind
            elif {known, kind} == {"int", "float"}:
                self.types[name] = "float"
            elif self.infer_types:
                self.types[name] = "string"
            else:
                raise ValueError(
                    f"{where}: carried column {name!r} holds a value of type {kind!r}, earlier requests of "
                    f"type {known!r}; a column has one type"
                )
        self.out.write(_ENCODER.encode([custom_id, *values]) + b"\n")
        self.rows += 1

    def rows_out(self) -> Iterator[bytes]:
        """The rows written, from the start, each converted to its column's inferred type (in chunks)."""
        self.out.seek(0)
        if not self._converting():
            yield from iter(lambda: self.out.read(1 << 20), b"")
            return
        yield from self._converted(iter(self.out.readline, b""))

    def row_lines(self) -> Iterator[bytes]:
        """The rows written, from the start, converted as by :meth:`rows_out`, one line each."""
        self.out.seek(0)
        lines = iter(self.out.readline, b"")
        yield from self._converted(lines) if self._converting() else lines

    def _converting(self) -> bool:
        return self.infer_types and any(kind not in (None, "string") for kind in self.types.values())

    def _converted(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        converters = [_CONVERTERS.get(self.types[name] or "string") for name in self.names]
        for line in lines:
            row = msgspec.json.decode(line)
            cells = [
                cell if convert is None or cell is None else (None if cell == "" else convert(cell))
                for convert, cell in zip(converters, row[1:], strict=True)
            ]
            yield _ENCODER.encode([row[0], *cells]) + b"\n"

    def header(self, file_id: str) -> dict[str, Any]:
        """The sidecar's header line (a column of nulls only is a ``string``)."""
        columns = {name: kind or "string" for name, kind in self.types.items()}
        return {"format": _FORMAT, "version": INPUT_COLUMNS_VERSION, "file_id": file_id, "columns": columns}


def _text_kind(text: str) -> str:
    if _INT.fullmatch(text):
        return "int"
    if _FLOAT.fullmatch(text):
        return "float"
    if text.lower() in ("true", "false"):
        return "bool"
    return "string"


# no leading zeros: "00123" (a code, not a number) keeps its column a string
_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CONVERTERS: dict[str, Callable[[str], Any] | None] = {
    "int": int,
    "float": float,
    "bool": lambda text: text.lower() == "true",
    "string": None,
}


def publish_input_columns(target: Any, header: Mapping[str, Any], rows: Iterable[bytes]) -> None:
    """
    Write a sidecar: ``header`` as the first line, then the rows a :class:`InputColumnsWriter` wrote.

    :param target: An ``ObjectStoragePath`` (or any path with ``open("wb")``).
    :param rows: The rows in chunks (:meth:`InputColumnsWriter.rows_out`).
    """
    with target.open("wb") as out:
        out.write(_ENCODER.encode(header) + b"\n")
        for chunk in rows:
            out.write(chunk)


def copy_input_columns(source: IO[bytes], target: Any, file_id: str) -> None:
    """
    Write the sidecar read from ``source`` to ``target`` as the one of input file ``file_id``, streamed.

    A follow-up round's input file holds some of the requests of the file ``source`` was written for:
    its rows join the same values.
    """
    header = msgspec.json.decode(source.readline())
    publish_input_columns(target, {**header, "file_id": file_id}, iter(lambda: source.read(1 << 20), b""))


@dataclass(frozen=True)
class InputColumns:
    """
    One input file's carried columns: their types, and each request's (or text's) values by id.

    :param columns: Column name -> type (``string``, ``int``, ``float`` or ``bool``), in table order.
    :param values: Id -> the values, in ``columns`` order.
    """

    columns: dict[str, str]
    values: dict[str, tuple[Any, ...]]

    @classmethod
    def read(cls, stream: IO[bytes], source: str) -> InputColumns:
        """
        Read a sidecar, line by line.

        :param source: Its URI, for errors.
        :raises ValueError: for a file that is not a sidecar of this version, naming the line.
        """
        try:
            header = msgspec.json.decode(stream.readline())
        except msgspec.DecodeError:
            header = None
        columns = header.get("columns") if isinstance(header, dict) else None
        if (
            not isinstance(header, dict)
            or header.get("format") != _FORMAT
            or header.get("version") != INPUT_COLUMNS_VERSION
            or not isinstance(columns, dict)
            or not all(kind in _TYPES.values() for kind in columns.values())
        ):
            raise ValueError(
                f"{source} line 1: not an input-columns file of version {INPUT_COLUMNS_VERSION} (written by "
                "the upload operator's carry_columns_to)"
            )
        width = len(columns) + 1
        values: dict[str, tuple[Any, ...]] = {}
        # readline, not iteration: Airflow 3.0's ObjectStoragePath file wrapper is not iterable
        for number, line in enumerate(iter(stream.readline, b""), start=2):
            try:
                row = msgspec.json.decode(line)
            except msgspec.DecodeError:
                row = None
            if not isinstance(row, list) or len(row) != width or not isinstance(row[0], str):
                raise ValueError(f"{source} line {number}: expected [custom_id, {len(columns)} values]")
            values[row[0]] = tuple(row[1:])
        return cls(columns=dict(columns), values=values)

    def row(self, key: Any) -> dict[str, Any]:
        """The carried cells of the request or text ``key`` (nulls for an id the input did not have)."""
        found = self.values.get(key) if isinstance(key, str) else None
        if found is None:
            return dict.fromkeys(self.columns)
        return dict(zip(self.columns, found, strict=True))
