"""The line reader shared by validation and the splitter: line cuts, terminators, the BOM, lines over the
6 MB limit measured without being held, and the sources it opens (paths, buffered and raw streams)."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.validation.lines import (
    MAX_LINE_BYTES,
    MB,
    open_source,
    read_lines,
    source_name,
)
from airflow_provider_dashscope_batch.validation.rules import LineChecker

BOM = b"\xef\xbb\xbf"


def read(
    data: bytes, checker: LineChecker | None = None
) -> tuple[list[tuple[int, bytes | None, int]], LineChecker]:
    checker = checker or LineChecker(None, 100)
    return list(read_lines(io.BytesIO(data), checker)), checker


def judged(checker: LineChecker) -> list[tuple[int | None, str, str]]:
    return [(v.line, v.code, v.message) for v in checker.listed()]


def padded(length: int) -> bytes:
    """A JSON line of exactly ``length`` bytes (no terminator)."""
    head = b'{"custom_id": "1", "pad": "'
    return head + b"x" * (length - len(head) - 2) + b'"}'


def test_lines_keep_their_terminators_and_count_their_bytes() -> None:
    data = b'{"a": 1}\n{"b": 2}\r\n\n{"c": 3}'
    lines, checker = read(data)
    assert lines == [(1, b'{"a": 1}\n', 9), (2, b'{"b": 2}\r\n', 10), (3, b"\n", 1), (4, b'{"c": 3}', 8)]
    assert sum(n for *_, n in lines) == len(data)
    assert judged(checker) == []


def test_a_file_ending_in_a_newline_has_no_trailing_empty_line() -> None:
    lines, _ = read(b"one\ntwo\n")
    assert [line for _, line, _ in lines] == [b"one\n", b"two\n"]


def test_a_bom_is_reported_on_line_1_and_dropped() -> None:
    lines, checker = read(BOM + b'{"a": 1}\n' + BOM + b"\n")
    assert lines == [(1, b'{"a": 1}\n', 12), (2, BOM + b"\n", 4)]  # only the file's first bytes are a BOM
    assert judged(checker) == [
        (1, "invalid_encoding", "the file starts with a UTF-8 BOM; save it without BOM"),
    ]
    assert checker.blank_lines == 0


def test_a_bom_then_a_newline_is_a_blank_first_line_left_to_the_checker() -> None:
    lines, checker = read(BOM + b"\nx\n")
    assert lines == [(1, b"\n", 4), (2, b"x\n", 2)]
    assert checker.blank_lines == 0  # the checker counts it when it reads the line


def test_a_file_that_is_only_a_bom_is_one_judged_blank_line() -> None:
    lines, checker = read(BOM)
    assert lines == [(1, None, 3)]
    assert checker.blank_lines == 1
    assert [v.code for v in checker.listed()] == ["invalid_encoding"]


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "eof"])
def test_a_line_of_exactly_6_mb_passes_and_one_byte_more_does_not(terminator: bytes) -> None:
    fits, over = padded(MAX_LINE_BYTES), padded(MAX_LINE_BYTES + 1)
    lines, checker = read(b"{}\n" + fits + terminator)
    assert lines == [(1, b"{}\n", 3), (2, fits + terminator, MAX_LINE_BYTES + len(terminator))]
    assert judged(checker) == []
    lines, checker = read(b"{}\n" + over + terminator)
    assert lines == [(1, b"{}\n", 3), (2, None, MAX_LINE_BYTES + 1 + len(terminator))]
    assert judged(checker) == [
        (2, "line_too_large", f"line is {MAX_LINE_BYTES + 1:,} bytes; the limit is 6 MB")
    ]


@pytest.mark.parametrize("extra", [1, 2, MB - 1, MB, MB + 1, 3 * MB + 7])
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_long_line_is_measured_exactly_across_reads(extra: int, terminator: bytes) -> None:
    """Lengths around the bounded read and the 1 MB follow-up reads, CR LF straddling a read included."""
    length = MAX_LINE_BYTES + extra
    data = padded(length) + terminator + b"{}" + terminator
    lines, checker = read(data)
    assert [(n, line, size) for n, line, size in lines] == [
        (1, None, length + len(terminator)),
        (2, b"{}" + terminator, 2 + len(terminator)),
    ]
    assert judged(checker) == [(1, "line_too_large", f"line is {length:,} bytes; the limit is 6 MB")]


def test_a_long_last_line_without_terminator_is_measured_whole() -> None:
    length = MAX_LINE_BYTES + MB + 5
    lines, checker = read(b"{}\n" + padded(length))
    assert lines == [(1, b"{}\n", 3), (2, None, length)]
    assert judged(checker) == [(2, "line_too_large", f"line is {length:,} bytes; the limit is 6 MB")]


def test_a_long_line_whose_last_read_ends_in_cr_keeps_the_cr_in_its_length() -> None:
    """A CR that is not followed by LF is part of the line, even when it ends a read."""
    length = MAX_LINE_BYTES + 2  # ends in CR at the bounded read's last byte
    line = padded(length - 1) + b"\r"
    lines, checker = read(line + b"\n")
    assert lines == [(1, None, length + 1)]
    assert judged(checker) == [
        (1, "line_too_large", f"line is {length - 1:,} bytes; the limit is 6 MB"),
    ]  # the CR then LF is one CRLF terminator
    lines, checker = read(line + b"x\n")
    assert judged(checker) == [(1, "line_too_large", f"line is {length + 1:,} bytes; the limit is 6 MB")]


def test_a_long_line_is_never_held_whole() -> None:
    """A 24 MB line costs the reader one bounded read (6 MB) and a few 1 MB pieces, not the line."""
    length = 24 * MB
    stream = io.BytesIO(padded(length) + b"\r\n" + b"{}\n")
    checker = LineChecker(None, 10)
    tracemalloc.start()
    try:
        sizes = [(n, line is None, size) for n, line, size in read_lines(stream, checker)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == [(1, True, length + 2), (2, False, 3)]
    assert peak < length // 2, f"reading a {length:,}-byte line peaked at {peak:,} bytes"


class _ShortReads(io.RawIOBase):
    """An unbuffered stream returning at most ``chunk`` bytes a read, like a socket or an fsspec file."""

    def __init__(self, data: bytes, chunk: int, name: object = None) -> None:
        self._data, self._pos, self._chunk = data, 0, chunk
        if name is not None:
            self.name = name

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._chunk if size < 0 else min(size, self._chunk)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def test_a_stream_of_short_reads_is_buffered_into_whole_lines() -> None:
    data = b"".join(json.dumps({"custom_id": str(i)}).encode() + b"\n" for i in range(50))
    raw = _ShortReads(data, chunk=7)
    with open_source(raw) as f:
        assert isinstance(f, io.BufferedReader)
        lines = list(read_lines(f, LineChecker(None, 10)))
    assert [line for _, line, _ in lines] == data.splitlines(keepends=True)
    assert not raw.closed


def test_buffered_streams_are_read_as_they_are_from_their_position() -> None:
    stream = io.BytesIO(b"skip\nkeep\n")
    stream.readline()
    with open_source(stream) as f:
        assert f is stream
        assert f.read() == b"keep\n"
    assert not stream.closed


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "path"])
def test_a_local_path_is_opened_and_closed(tmp_path: Path, as_str: bool) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\nb\n")
    with open_source(str(path) if as_str else path) as f:
        assert f.read() == b"a\nb\n"
    assert f.closed


def test_a_path_object_with_its_own_filesystem_is_opened_through_it(tmp_path: Path) -> None:
    """``ObjectStoragePath`` and other fsspec paths: opened with their ``open``, short reads buffered."""

    class _RemotePath:
        protocol = "memory"

        def open(self, mode: str) -> _ShortReads:
            assert mode == "rb"
            return _ShortReads(b"one\ntwo\n", chunk=3)

    with open_source(_RemotePath()) as f:  # type: ignore[arg-type]
        assert [line for _, line, _ in read_lines(f, LineChecker(None, 10))] == [b"one\n", b"two\n"]


def test_source_names(tmp_path: Path) -> None:
    assert source_name(tmp_path / "x.jsonl") == str(tmp_path / "x.jsonl")
    assert source_name("s3://bucket/in.jsonl") == "s3://bucket/in.jsonl"
    assert source_name(_ShortReads(b"", 1, name="upload.jsonl")) == "upload.jsonl"
    assert source_name(_ShortReads(b"", 1, name=3)) == "<stream>"  # a file descriptor number is no name
    assert source_name(io.BytesIO(b"")) == "<stream>"
