"""
The line reader of batch input files (JSONL): one line at a time, in binary, with bounded reads.

The upload operator's validation (:func:`~airflow_provider_dashscope_batch.validation.rules.validate_jsonl`)
and the splitter (:mod:`airflow_provider_dashscope_batch.sharding.split`) read every input through
:func:`read_lines`, so a line is cut, measured and judged the same way whoever reads it. Memory stays
flat whatever the file size: a line over the 6 MB limit is measured in pieces and never held whole.
"""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, BinaryIO, Protocol

__all__ = ["MAX_LINE_BYTES", "MB", "LineJudge", "open_source", "read_lines", "source_name"]

MB = 1 << 20
# The service's line limit (terminator excluded).
MAX_LINE_BYTES = 6 * MB

_BOM = b"\xef\xbb\xbf"
_READ_BUFFER = 1 << 20


class LineJudge(Protocol):
    """What :func:`read_lines` reports to: the rule state of one file (:class:`~.rules.LineChecker`)."""

    blank_lines: int

    def add(self, line: int | None, code: str, message: str) -> None: ...

    def check_length(self, line: int, length: int) -> bool: ...


class _RawReader(io.RawIOBase):
    """Adapts any binary ``read(n)`` stream so it can sit under an :class:`io.BufferedReader`."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_source(source: str | os.PathLike[str] | BinaryIO) -> Iterator[io.BufferedIOBase]:
    """Open a path, ``ObjectStoragePath`` or binary stream as one buffered binary reader."""
    if hasattr(source, "read"):
        if isinstance(source, (io.BufferedReader, io.BytesIO)):
            yield source
        else:
            yield io.BufferedReader(_RawReader(source), buffer_size=_READ_BUFFER)  # type: ignore[arg-type]
    elif isinstance(source, (str, pathlib.PurePath)) and not hasattr(source, "protocol"):
        with open(source, "rb", buffering=_READ_BUFFER) as f:
            yield f
    else:  # ObjectStoragePath and other path objects with their own filesystem
        with source.open("rb") as f:  # type: ignore[union-attr]
            yield io.BufferedReader(_RawReader(f), buffer_size=_READ_BUFFER)


def read_lines(stream: IO[bytes], checker: LineJudge) -> Iterator[tuple[int, bytes | None, int]]:
    """
    The lines of ``stream`` as ``(number, line, bytes read)``, with the rules every entry point shares.

    ``line`` holds the line's bytes with their terminator, or ``None`` when the line was already judged
    by ``checker``: over the 6 MB line limit (read in pieces, never held whole) or nothing but a BOM.
    A UTF-8 BOM at the start is reported and dropped. The upload operator's validation and the
    splitter read every input through this, so a line is judged the same way whoever reads it.
    """
    limit = MAX_LINE_BYTES + 2  # room for a CRLF terminator
    readline = stream.readline
    n = 0
    while line := readline(limit):
        n += 1
        read = len(line)
        if n == 1 and line.startswith(_BOM):
            checker.add(1, "invalid_encoding", "the file starts with a UTF-8 BOM; save it without BOM")
            line = line[len(_BOM) :]
            if not line:
                checker.blank_lines += 1
                yield n, None, read
                continue
        tail, length = line, len(line)
        if not line.endswith(b"\n") and length == limit:
            last = line
            while (rest := readline(_READ_BUFFER)) and not rest.endswith(b"\n"):
                length += len(rest)
                last = rest
            length += len(rest)
            read += length - len(line)
            tail = last[-1:] + rest  # only the tail is needed, to measure the terminator (CR LF may straddle)
        length -= tail.endswith(b"\n") + tail.endswith(b"\r\n")
        yield n, line if checker.check_length(n, length) else None, read


def source_name(source: str | os.PathLike[str] | BinaryIO) -> str:
    """The name messages give ``source``: its path, or a stream's ``name``."""
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else "<stream>"
    return str(source)
