"""Every preflight rule, on small generated files: codes, line numbers, params and messages."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation.lines import MAX_LINE_BYTES
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_CUSTOM_ID_CHARS,
    MAX_LINES,
    TEST_MODEL_MAX_FILE_BYTES,
    JsonlValidationError,
    ValidationReport,
    validate_jsonl,
)

CHAT = "/v1/chat/completions"


def request(custom_id: Any = "1", **changes: Any) -> dict[str, Any]:
    """A valid chat request; ``changes`` override top-level keys, ``body_*`` keys override body keys."""
    body: dict[str, Any] = {"model": "qwen-plus", "messages": [{"role": "user", "content": "你好, hi"}]}
    req: dict[str, Any] = {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}
    for key, value in changes.items():
        if key.startswith("body_"):
            body[key[5:]] = value
        else:
            req[key] = value
    return req


def dump(*requests: dict[str, Any] | bytes | str) -> bytes:
    lines = []
    for r in requests:
        if isinstance(r, bytes):
            lines.append(r)
        elif isinstance(r, str):
            lines.append(r.encode())
        else:
            lines.append(json.dumps(r, ensure_ascii=False).encode())
    return b"\n".join(lines) + b"\n"


def write(tmp_path: Path, data: bytes, name: str = "test.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def codes(report: ValidationReport) -> list[tuple[int | None, str]]:
    return [(v.line, v.code) for v in report.violations]


def test_valid_file_reports_model_endpoint_and_counts(tmp_path: Path) -> None:
    data = dump(request("1"), request("2"), request("3"))
    report = validate_jsonl(write(tmp_path, data))
    assert report.ok, report.summary()
    assert (report.line_count, report.bytes) == (3, len(data))
    assert (report.model, report.endpoint) == ("qwen-plus", CHAT)
    assert report.raise_for_violations() is report
    assert report.summary().endswith(f"OK (3 lines, {len(data)} bytes)")


def test_error_message_names_file_line_and_rule(tmp_path: Path) -> None:
    path = write(tmp_path, dump(request("7"), request("42"), request("8"), request("42")))
    report = validate_jsonl(path)
    assert codes(report) == [(4, "duplicate_custom_id")]
    with pytest.raises(JsonlValidationError) as info:
        report.raise_for_violations()
    assert isinstance(info.value, ValueError)
    assert info.value.report is report
    assert f'{path} line 4: duplicate_custom_id: custom_id "42" already used on line 2' in str(info.value)


def test_name_overrides_source_name(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, dump(request(""))), name="test.jsonl")
    assert (
        str(JsonlValidationError(report)).splitlines()[1].startswith("test.jsonl line 1: invalid_custom_id")
    )


@pytest.mark.parametrize(
    ("line", "code", "param"),
    [
        pytest.param(request(custom_id=None), "invalid_custom_id", "custom_id", id="custom_id-null"),
        pytest.param(request(custom_id=7), "invalid_custom_id", "custom_id", id="custom_id-number"),
        pytest.param(request(custom_id=""), "invalid_custom_id", "custom_id", id="custom_id-empty"),
        pytest.param(
            request("x" * (MAX_CUSTOM_ID_CHARS + 1)), "custom_id_too_long", "custom_id", id="custom_id-long"
        ),
        pytest.param(request(method="post"), "invalid_method", "method", id="method-lowercase"),
        pytest.param(request(url="/v1/completions"), "invalid_url", "url", id="url-unknown"),
        pytest.param(request(body=None), "invalid_body", "body", id="body-null"),
        pytest.param(request(body="hi"), "invalid_body", "body", id="body-string"),
        pytest.param(request(body_model=""), "invalid_model", "body.model", id="model-empty"),
        pytest.param(request(body_model=3), "invalid_model", "body.model", id="model-number"),
        pytest.param(
            request(body_enable_thinking="yes"), "invalid_body", "body.enable_thinking", id="thinking"
        ),
        pytest.param(b"[1, 2]", "invalid_json_line", None, id="array"),
        pytest.param(b'"text"', "invalid_json_line", None, id="string"),
        pytest.param(b'{"custom_id": "1", "body": {"model": "m",}}', "invalid_json_line", None, id="comma"),
        pytest.param(b'{"custom_id": "1"} trailing', "invalid_json_line", None, id="trailing"),
        pytest.param(b'{"custom_id": "1", "x": NaN}', "invalid_json_line", None, id="nan"),
        pytest.param(
            b'{"custom_id": "1", "x": "\xff"}', "invalid_encoding", None, id="latin1-in-skipped-field"
        ),
        pytest.param(b'{"custom_id": "\xe4\xbd"}', "invalid_encoding", None, id="truncated-utf8"),
        pytest.param(b"   ", "blank_line", None, id="whitespace"),
    ],
)
def test_line_rules(tmp_path: Path, line: dict[str, Any] | bytes, code: str, param: str | None) -> None:
    report = validate_jsonl(write(tmp_path, dump(request("a"), line, request("b"))))
    assert [(v.line, v.code, v.param) for v in report.violations] == [(2, code, param)]
    assert report.violation_count == 1


def test_missing_fields(tmp_path: Path) -> None:
    data = dump(
        request("a"), {"custom_id": "b"}, {"method": "POST", "url": CHAT, "body": {"model": "qwen-plus"}}
    )
    report = validate_jsonl(write(tmp_path, data))
    assert [(v.line, v.code, v.param) for v in report.violations] == [
        (2, "invalid_method", "method"),
        (2, "invalid_url", "url"),
        (2, "invalid_body", "body"),
        (3, "missing_custom_id", "custom_id"),
        (3, "missing_messages", "body.messages"),
    ]
    assert "got missing" in report.violations[0].message


def test_missing_model(tmp_path: Path) -> None:
    line = request("b")
    del line["body"]["model"]
    report = validate_jsonl(write(tmp_path, dump(request("a"), line)))
    assert [(v.line, v.code, v.param) for v in report.violations] == [(2, "invalid_model", "body.model")]


def test_json_error_message_gives_column(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, dump(request("a"), b'{"custom_id": "1", oops}')))
    assert (
        report.violations[0].message
        == "not valid JSON: Expecting property name enclosed in double quotes (column 20)"
    )


def test_lone_surrogate_escape_is_valid_json(tmp_path: Path) -> None:
    line = json.dumps(request("1")).encode()[:-2] + b', "stop": "\\ud800"}}'
    assert validate_jsonl(write(tmp_path, dump(line))).ok


def test_duplicate_custom_id_names_first_line(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, dump(request("x"), request("y"), request("x"), request("x"))))
    assert codes(report) == [(3, "duplicate_custom_id"), (4, "duplicate_custom_id")]
    assert all("already used on line 1" in v.message for v in report.violations)


def test_one_model_per_file(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, dump(request("1"), request("2", body_model="qwen-max"))))
    assert codes(report) == [(2, "mismatched_model")]
    assert report.violations[0].message.startswith('body.model "qwen-max" differs from "qwen-plus" on line 1')
    assert report.model == "qwen-plus"


@pytest.mark.parametrize(
    ("first", "second"),
    [(True, False), (None, True), (False, None)],
    ids=["true-false", "unset-true", "false-unset"],
)
def test_one_thinking_mode_per_file(tmp_path: Path, first: bool | None, second: bool | None) -> None:
    lines = [request(str(i)) for i in range(3)]
    for line, mode in zip(lines, (first, first, second), strict=True):
        if mode is not None:
            line["body"]["enable_thinking"] = mode
    report = validate_jsonl(write(tmp_path, dump(*lines)))
    assert [(v.line, v.code, v.param) for v in report.violations] == [
        (3, "mismatched_thinking_mode", "body.enable_thinking")
    ]


def test_same_thinking_mode_everywhere_is_fine(tmp_path: Path) -> None:
    lines = [request(str(i), body_enable_thinking=True) for i in range(3)]
    assert validate_jsonl(write(tmp_path, dump(*lines))).ok


def test_url_same_on_every_line(tmp_path: Path) -> None:
    data = dump(request("1"), request("2", url="/v1/embeddings"), request("3"))
    report = validate_jsonl(write(tmp_path, data))
    assert codes(report) == [(2, "url_mismatch")]
    assert report.endpoint == CHAT


def test_url_equals_endpoint(tmp_path: Path) -> None:
    data = dump(request("1"), request("2"))
    report = validate_jsonl(write(tmp_path, data), endpoint="/v1/embeddings")
    assert codes(report) == [(1, "url_mismatch"), (2, "url_mismatch")]
    assert "batch endpoint" in report.violations[0].message
    assert validate_jsonl(write(tmp_path, data), endpoint=CHAT).ok


def test_invalid_endpoint_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="endpoint must be one of"):
        validate_jsonl(write(tmp_path, dump(request())), endpoint="/v1/chat")


def test_blank_lines_are_violations_but_final_newline_is_not(tmp_path: Path) -> None:
    assert validate_jsonl(write(tmp_path, json.dumps(request()).encode())).ok  # no final newline
    report = validate_jsonl(write(tmp_path, dump(request("1"), b"", request("2")) + b"\r\n"))
    assert codes(report) == [(2, "blank_line"), (4, "blank_line")]


def test_crlf_line_endings_are_fine(tmp_path: Path) -> None:
    data = b"\r\n".join(json.dumps(request(str(i))).encode() for i in range(3)) + b"\r\n"
    report = validate_jsonl(write(tmp_path, data))
    assert report.ok, report.summary()
    assert report.line_count == 3


def test_bom_is_flagged_and_line_still_checked(tmp_path: Path) -> None:
    report = validate_jsonl(write(tmp_path, b"\xef\xbb\xbf" + dump(request("1"), request("1"))))
    assert codes(report) == [(1, "invalid_encoding"), (2, "duplicate_custom_id")]
    assert "BOM" in report.violations[0].message


@pytest.mark.parametrize("data", [b"", b"\n\n", b"\xef\xbb\xbf"], ids=["zero-bytes", "blank", "bom-only"])
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    report = validate_jsonl(write(tmp_path, data))
    assert report.violations[-1].code == "empty_file"
    assert report.violations[-1].line is None
    assert (
        str(JsonlValidationError(report)).splitlines()[-1].endswith(": empty_file: the file holds no request")
    )


def test_line_over_6_mb(tmp_path: Path) -> None:
    big = request("big", body_messages=[{"role": "user", "content": "x" * MAX_LINE_BYTES}])
    report = validate_jsonl(write(tmp_path, dump(request("1"), big, request("2"), request("2"))))
    assert codes(report) == [(2, "line_too_large"), (4, "duplicate_custom_id")]
    size = len(json.dumps(big))
    assert report.violations[0].message == f"line is {size:,} bytes; the limit is 6 MB"
    assert report.line_count == 4


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "eof"])
def test_line_of_exactly_6_mb_is_fine(tmp_path: Path, terminator: bytes) -> None:
    head = json.dumps(request("1")).encode()[:-2] + b', "pad": "'
    line = head + b"x" * (MAX_LINE_BYTES - len(head) - 3) + b'"}}'
    assert len(line) == MAX_LINE_BYTES
    report = validate_jsonl(write(tmp_path, line + terminator))
    assert report.ok, report.summary()
    over = validate_jsonl(write(tmp_path, line[:-3] + b'x"}}' + terminator))
    assert codes(over) == [(1, "line_too_large")]


def test_too_many_lines(tmp_path: Path) -> None:
    template = json.dumps(request("{}"), separators=(",", ":"))
    path = tmp_path / "many.jsonl"
    with path.open("w") as f:
        f.writelines(template.replace("{}", str(i)) + "\n" for i in range(MAX_LINES + 1))
    report = validate_jsonl(path)
    assert codes(report) == [(None, "too_many_tasks")]
    assert report.violations[0].message == "50001 lines; the limit is 50,000"
    assert report.line_count == MAX_LINES + 1
    with path.open("r+b") as f:  # exactly at the limit is fine
        f.truncate(path.stat().st_size - len(template.replace("{}", str(MAX_LINES))) - 1)
    assert validate_jsonl(path).ok


def test_test_model_limits(tmp_path: Path) -> None:
    def test_request(i: int, **changes: Any) -> dict[str, Any]:
        return request(str(i), url="/v1/chat/ds-test", body_model="batch-test-model", **changes)

    assert validate_jsonl(write(tmp_path, dump(*(test_request(i) for i in range(100))))).ok
    report = validate_jsonl(write(tmp_path, dump(*(test_request(i) for i in range(101)))))
    assert codes(report) == [(None, "too_many_tasks")]
    assert "the limit for batch-test-model is 100" in report.violations[0].message

    pad = "x" * (TEST_MODEL_MAX_FILE_BYTES // 10)
    big = [test_request(i, body_messages=[{"role": "user", "content": pad}]) for i in range(10)]
    assert codes(validate_jsonl(write(tmp_path, dump(*big)))) == [(None, "file_too_large")]

    wrong_url = validate_jsonl(write(tmp_path, dump(request("1", body_model="batch-test-model"))))
    assert [(v.code, v.param) for v in wrong_url.violations] == [("invalid_url", "url")]
    assert "batch-test-model requires url" in wrong_url.violations[0].message

    wrong_model = validate_jsonl(write(tmp_path, dump(request("1", url="/v1/chat/ds-test"))))
    assert [(v.code, v.param) for v in wrong_model.violations] == [("invalid_url", "url")]


def test_violation_list_is_capped_but_all_are_counted(tmp_path: Path) -> None:
    data = dump(*(request("same") for _ in range(30)))
    report = validate_jsonl(write(tmp_path, data), max_violations=5)
    assert report.violation_count == 29
    assert codes(report) == [(line, "duplicate_custom_id") for line in range(2, 7)]
    assert report.summary().endswith("... and 24 more violation(s) not listed")


def test_cap_keeps_file_level_violations(tmp_path: Path) -> None:
    lines = [request("same", url="/v1/chat/ds-test", body_model="batch-test-model") for _ in range(101)]
    report = validate_jsonl(write(tmp_path, dump(*lines)), max_violations=3)
    assert report.violation_count == 101
    assert codes(report) == [(2, "duplicate_custom_id"), (3, "duplicate_custom_id"), (None, "too_many_tasks")]


def test_binary_stream_is_read_from_its_position_and_left_open() -> None:
    stream = io.BytesIO(b"header-to-skip\n" + dump(request("1"), request("1")))
    stream.readline()
    report = validate_jsonl(stream, name="upload.jsonl")
    assert codes(report) == [(2, "duplicate_custom_id")]
    assert report.source_name == "upload.jsonl"
    assert not stream.closed


class _ChunkedStream(io.RawIOBase):
    """A non-buffered stream returning short reads, like a network or fsspec file."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._data, self._pos, self._chunk = data, 0, chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._chunk if size < 0 else min(size, self._chunk)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def test_any_readable_stream_with_short_reads() -> None:
    big = request("big", body_messages=[{"role": "user", "content": "x" * (MAX_LINE_BYTES + 10)}])
    data = dump(request("1"), big, request("2", body_model="qwen-max"), "")
    report = validate_jsonl(_ChunkedStream(data, chunk=7777))
    assert codes(report) == [(2, "line_too_large"), (3, "mismatched_model"), (4, "blank_line")]
    assert report.source_name == "<stream>"
    assert report.bytes == len(data)


def test_path_given_as_str(tmp_path: Path) -> None:
    path = write(tmp_path, dump(request("1")))
    report = validate_jsonl(str(path))
    assert report.ok
    assert report.source_name == str(path)
