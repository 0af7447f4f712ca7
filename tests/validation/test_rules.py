"""Every preflight rule, on small generated files: codes, line numbers, params and messages."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dashscope_batch.validation.lines import MAX_LINE_BYTES
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_CUSTOM_ID_CHARS,
    MAX_LINES,
    TEST_MODEL,
    TEST_MODEL_ENDPOINT,
    TEST_MODEL_MAX_FILE_BYTES,
    JsonlValidationError,
    LineChecker,
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
    assert report.violations[0].message == (
        "50,001 lines; the limit is 50,000 requests per file. Run it with DashScopeShardedBatchOperator "
        "(splits it into batches within the limit)"
    )
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


# Both sides of every limit, each rule's exact message and param, the strict-JSON path, long lines that loop
# the reader, file-level violations as rendered.
SURROGATE = "\ud800"  # strict JSON allows a lone surrogate escape; the fast decoder does not (slow path)


def ascii_request(custom_id: Any = "1", **changes: Any) -> dict[str, Any]:
    """A valid chat request; ``changes`` override top-level keys, ``body_*`` keys override body keys."""
    body: dict[str, Any] = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}
    req: dict[str, Any] = {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}
    for key, value in changes.items():
        if key.startswith("body_"):
            body[key[5:]] = value
        else:
            req[key] = value
    return req


def without(req: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in req.items() if k not in keys}


def slow(req: dict[str, Any]) -> dict[str, Any]:
    """The same request, but decoded by the strict-JSON path (a lone surrogate in an unchecked field)."""
    return {**req, "note": SURROGATE}


def lines(*requests: dict[str, Any] | bytes) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in requests)


def check(data: bytes, **kwargs: Any) -> ValidationReport:
    return validate_jsonl(io.BytesIO(data), name="in.jsonl", **kwargs)


def found(data: bytes, **kwargs: Any) -> list[tuple[int | None, str, str | None, str]]:
    return [(v.line, v.code, v.param, v.message) for v in check(data, **kwargs).violations]


NON_STRING = [(None, "a JSON null"), (7, "a JSON number"), (True, "a JSON boolean"), ([1], "a JSON array")]
NON_STRING += [({"a": 1}, "a JSON object"), ("", "an empty string")]


@pytest.mark.parametrize("path", ["fast", "slow"])
@pytest.mark.parametrize(("value", "got"), NON_STRING)
def test_custom_id_and_model_name_what_they_got(path: str, value: Any, got: str) -> None:
    shape = slow if path == "slow" else (lambda r: r)
    assert found(lines(shape(ascii_request(value)))) == [
        (1, "invalid_custom_id", "custom_id", f"custom_id must be a non-empty string, got {got}")
    ]
    assert found(lines(shape(ascii_request(body_model=value)))) == [
        (1, "invalid_model", "body.model", f"body.model must be a non-empty string, got {got}")
    ]


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_missing_fields_are_named_missing(path: str) -> None:
    shape = slow if path == "slow" else (lambda r: r)
    bare = shape({"body": {"model": "qwen-plus"}})
    assert found(lines(bare)) == [
        (1, "missing_custom_id", "custom_id", "custom_id is missing"),
        (1, "invalid_method", "method", 'method must be "POST", got missing'),
        (
            1,
            "invalid_url",
            "url",
            f"url must be one of {CHAT}, /v1/chat/ds-test, /v1/embeddings, got missing",
        ),
    ]
    assert found(lines(shape(without(ascii_request(), "body")))) == [
        (1, "invalid_body", "body", "body must be a JSON object, got missing")
    ]
    assert found(lines(shape(ascii_request(body={"messages": [{"role": "user", "content": "hi"}]})))) == [
        (1, "invalid_model", "body.model", "body.model must be a non-empty string, got missing")
    ]


@pytest.mark.parametrize(
    ("body", "got"), [(None, "a JSON null"), ("x", "a JSON string"), ([1], "a JSON array")]
)
def test_body_that_is_not_an_object(body: Any, got: str) -> None:
    assert found(lines(ascii_request(body=body))) == [
        (1, "invalid_body", "body", f"body must be a JSON object, got {got}")
    ]


def test_method_and_url_are_quoted_as_given() -> None:
    assert found(lines(ascii_request(method="ПОСТ", url="/v1/聊天"))) == [
        (1, "invalid_method", "method", 'method must be "POST", got "ПОСТ"'),
        (
            1,
            "invalid_url",
            "url",
            f'url must be one of {CHAT}, /v1/chat/ds-test, /v1/embeddings, got "/v1/聊天"',
        ),
    ]


def test_null_url_and_model_are_not_a_valid_first_line() -> None:
    """A first line with ``url``/``model`` null matched the checker's unset state and passed unchecked."""
    assert [(n, code) for n, code, _, _ in found(lines(ascii_request(url=None, body_model=None)))] == [
        (1, "invalid_url"),
        (1, "invalid_model"),
    ]
    null_urls = lines(ascii_request("1", url=None), ascii_request("2", url=None))
    assert [(n, code) for n, code, _, _ in found(null_urls)] == [(1, "invalid_url"), (2, "invalid_url")]
    null_models = lines(ascii_request("1", body_model=None), ascii_request("2", body_model=None))
    assert [(n, code) for n, code, _, _ in found(null_models)] == [(1, "invalid_model"), (2, "invalid_model")]


def test_a_split_input_shares_one_id_registry() -> None:
    """The splitter checks each part with its own checker over one registry of ids (line numbers global)."""
    registry: dict[str, int] = {}
    first, second = LineChecker(CHAT, 10, seen_ids=registry), LineChecker(CHAT, 10, seen_ids=registry)
    first.check_line(1, json.dumps(ascii_request("a")).encode())
    second.check_line(2, json.dumps(ascii_request("a")).encode())
    assert registry == {"a": 1}
    assert [(v.line, v.code, v.message) for v in second.listed()] == [
        (2, "duplicate_custom_id", 'custom_id "a" already used on line 1')
    ]


def test_thinking_mode_messages() -> None:
    assert found(lines(ascii_request(body_enable_thinking="yes"))) == [
        (
            1,
            "invalid_body",
            "body.enable_thinking",
            "body.enable_thinking must be true or false, got a JSON string",
        )
    ]
    mixed = lines(
        ascii_request("1", body_enable_thinking=True),
        ascii_request("2"),
        slow(ascii_request("3", body_enable_thinking=False)),
    )
    assert found(mixed) == [
        (
            2,
            "mismatched_thinking_mode",
            "body.enable_thinking",
            "body.enable_thinking is unset but true on line 1; use one thinking mode per file",
        ),
        (
            3,
            "mismatched_thinking_mode",
            "body.enable_thinking",
            "body.enable_thinking is false but true on line 1; use one thinking mode per file",
        ),
    ]
    assert check(
        lines(
            ascii_request("1", body_enable_thinking=True), slow(ascii_request("2", body_enable_thinking=True))
        )
    ).ok


def test_thinking_mode_is_set_by_the_first_line_with_a_valid_one() -> None:
    """After an invalid ``enable_thinking`` the next line's mode is the file's; later ones must match it."""
    data = lines(
        ascii_request("1", body_enable_thinking="yes"),
        ascii_request("2"),
        ascii_request("3", body_enable_thinking=True),
    )
    assert [(n, code) for n, code, _, _ in found(data)] == [
        (1, "invalid_body"),
        (3, "mismatched_thinking_mode"),
    ]
    data = lines(
        ascii_request("1", body_enable_thinking="yes"), ascii_request("2", body_enable_thinking=None)
    )
    assert [(n, code) for n, code, _, _ in found(data)] == [(1, "invalid_body"), (2, "invalid_body")]


def test_mismatches_name_their_param_and_first_line() -> None:
    data = lines(
        ascii_request("编号"),
        slow(ascii_request("编号")),
        ascii_request("b", body_model="qwen-max"),
        ascii_request("c", url="/v1/embeddings"),
    )
    assert found(data) == [
        (2, "duplicate_custom_id", "custom_id", 'custom_id "编号" already used on line 1'),
        (
            3,
            "mismatched_model",
            "body.model",
            'body.model "qwen-max" differs from "qwen-plus" on line 1; use one model per file',
        ),
        (4, "url_mismatch", "url", f'url "/v1/embeddings" differs from "{CHAT}" used on earlier lines'),
    ]
    assert found(lines(ascii_request()), endpoint="/v1/embeddings") == [
        (1, "url_mismatch", "url", f'url "{CHAT}" differs from the batch endpoint "/v1/embeddings"')
    ]


def test_a_long_custom_id_is_a_warning_not_a_refusal() -> None:
    """No public page states a custom_id limit: over 256 characters warns, both in the fast and slow path."""
    at, over, one = "i" * MAX_CUSTOM_ID_CHARS, "o" * (MAX_CUSTOM_ID_CHARS + 1), "x"
    assert not check(
        lines(ascii_request(at), ascii_request(one), slow(ascii_request("s" * MAX_CUSTOM_ID_CHARS)))
    ).warnings
    report = check(lines(ascii_request(over), slow(ascii_request(over + "x"))))
    assert report.ok
    assert [(w.line, w.code, w.param, w.message) for w in report.warnings] == [
        (
            n,
            "custom_id_too_long",
            "custom_id",
            f"custom_id has {length} characters; no public page states a limit, but OpenAI's batch API "
            "takes at most 256",
        )
        for n, length in ((1, MAX_CUSTOM_ID_CHARS + 1), (2, MAX_CUSTOM_ID_CHARS + 2))
    ]
    assert "\nwarning: in.jsonl line 1: custom_id_too_long: custom_id has 257" in report.summary()


def test_json_errors_say_why() -> None:
    assert found(lines(b'{"custom_id": NaN}', b"[1]", b'"x"', b"null", b"3")) == [
        (1, "invalid_json_line", None, "not valid JSON: NaN is not valid JSON"),
        (2, "invalid_json_line", None, "a line must be a JSON object, got array"),
        (3, "invalid_json_line", None, "a line must be a JSON object, got string"),
        (4, "invalid_json_line", None, "a line must be a JSON object, got null"),
        (5, "invalid_json_line", None, "a line must be a JSON object, got number"),
    ]


def test_encoding_errors_give_the_byte() -> None:
    line = json.dumps(ascii_request("\x00")).encode().replace(b"\\u0000", b"\xff")
    offset = line.index(b"\xff") + 1  # 1-based
    assert found(lines(line)) == [
        (
            1,
            "invalid_encoding",
            None,
            f"not valid UTF-8 (invalid start byte at byte {offset})",
        )
    ]
    assert found(b"\xef\xbb\xbf" + lines(ascii_request())) == [
        (1, "invalid_encoding", None, "the file starts with a UTF-8 BOM; save it without BOM")
    ]


def test_blank_lines_and_a_line_starting_with_a_space() -> None:
    data = b" " + lines(ascii_request("1")) + b" \t\n" + lines(ascii_request("2"))
    assert found(data) == [(2, "blank_line", None, "blank line; every line must hold one JSON request")]


def test_line_50000_is_checked_and_50001_counted_only(tmp_path: Path) -> None:
    template = json.dumps(ascii_request("{}"), separators=(",", ":"))
    path = tmp_path / "many.jsonl"
    with path.open("w") as f:
        f.writelines(template.replace("{}", str(i)) + "\n" for i in range(1, MAX_LINES))
        f.write(template.replace("{}", "1") + "\n")  # line 50,000: a duplicate
        f.write(template.replace("{}", "1") + "\n")  # line 50,001: past the limit, not checked
    report = validate_jsonl(path)
    assert [(v.line, v.code) for v in report.violations] == [
        (MAX_LINES, "duplicate_custom_id"),
        (None, "too_many_tasks"),
    ]


def test_test_model_file_size_on_both_sides_of_the_limit() -> None:
    first = lines(ascii_request("1", url=TEST_MODEL_ENDPOINT, body_model=TEST_MODEL))
    head = (
        json.dumps(ascii_request("2", url=TEST_MODEL_ENDPOINT, body_model=TEST_MODEL)).encode()[:-2]
        + b', "pad": "'
    )
    pad = TEST_MODEL_MAX_FILE_BYTES - len(first) - len(head) - len(b'"}}\n')
    exact = first + head + b"x" * pad + b'"}}\n'
    assert len(exact) == TEST_MODEL_MAX_FILE_BYTES
    assert check(exact).ok
    over = first + head + b"x" * (pad + 1) + b'"}}\n'
    assert found(over) == [
        (
            None,
            "file_too_large",
            None,
            f"{TEST_MODEL_MAX_FILE_BYTES + 1:,} bytes; the limit for {TEST_MODEL} is 1 MB",
        )
    ]


def test_file_level_violation_is_rendered_without_a_line_and_kept_under_the_cap() -> None:
    data = lines(ascii_request("1", body_model=TEST_MODEL), ascii_request("1", body_model=TEST_MODEL))
    report = check(data, max_violations=1)
    assert report.violation_count == 2
    assert [(v.line, v.code) for v in report.violations] == [(None, "invalid_url")]
    with pytest.raises(JsonlValidationError) as info:
        report.raise_for_violations()
    assert (
        str(info.value).splitlines()[1]
        == f'in.jsonl: invalid_url: {TEST_MODEL} requires url "{TEST_MODEL_ENDPOINT}"'
    )


def test_no_file_level_url_rule_without_a_valid_url() -> None:
    assert [v.code for v in check(lines(ascii_request(url="/v1/x", body_model=TEST_MODEL))).violations] == [
        "invalid_url"
    ]


def test_default_cap_lists_100() -> None:
    report = check(lines(*(ascii_request("same") for _ in range(102))))
    assert (len(report.violations), report.violation_count) == (100, 101)
    assert report.summary().endswith("... and 1 more violation(s) not listed")


def test_a_named_stream_is_reported_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "named.jsonl"
    path.write_bytes(lines(ascii_request(), ascii_request()))
    with path.open("rb") as f:
        report = validate_jsonl(f)
    assert report.source_name == str(path)
    assert str(JsonlValidationError(report)).splitlines()[1].startswith(f"{path} line 2: duplicate_custom_id")


def test_unknown_endpoint_argument_lists_the_endpoints() -> None:
    with pytest.raises(ValueError, match=r"^endpoint must be one of (.*), got '/v1/x'$") as info:
        validate_jsonl(io.BytesIO(b""), endpoint="/v1/x")
    assert info.match(f"one of {CHAT}, /v1/chat/ds-test, /v1/embeddings, got")


def test_a_long_line_is_measured_whole_but_never_held_whole() -> None:
    """A 20 MB line loops the bounded reader; its length is exact and memory stays near one read."""
    size = 20 * (1 << 20)
    head = json.dumps(ascii_request("big")).encode()[:-2] + b', "pad": "'
    big = head + b"x" * (size - len(head) - 3) + b'"}}'
    data = lines(ascii_request("1")) + big + b"\r\n" + lines(ascii_request("1"))
    tracemalloc.start()
    try:
        report = check(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(v.line, v.code, v.message) for v in report.violations] == [
        (2, "line_too_large", f"line is {size:,} bytes; the limit is {MAX_LINE_BYTES // (1 << 20)} MB"),
        (3, "duplicate_custom_id", 'custom_id "1" already used on line 1'),
    ]
    assert (report.line_count, report.bytes) == (3, len(data))
    assert peak < size // 2, f"validating a {size:,}-byte line peaked at {peak:,} bytes"


def test_on_line_sees_each_line_until_the_first_violation() -> None:
    """The cost estimate reads the same pass: every line's bytes, as read, while the file is still valid."""
    good = [ascii_request(str(i)) for i in range(3)]
    data = lines(*good, ascii_request("1"), ascii_request("9"))
    seen: list[bytes] = []
    report = check(data, on_line=seen.append)
    assert seen == data.splitlines(keepends=True)[:3]
    assert [v.code for v in report.violations] == ["duplicate_custom_id"]
    seen.clear()
    check(lines(*good), on_line=seen.append)
    assert seen == lines(*good).splitlines(keepends=True)


def test_body_rules_can_be_left_to_the_service() -> None:
    """``body_rules=False`` (the service fails such a request alone) keeps every file-wide rule."""
    data = lines(ascii_request("1", body_messages=[]), ascii_request("1", body_messages=[]))
    assert [v.code for v in check(data).violations] == [
        "invalid_message",
        "duplicate_custom_id",
        "invalid_message",
    ]
    assert [v.code for v in check(data, body_rules=False).violations] == ["duplicate_custom_id"]
    checker = LineChecker(None, 10)  # body rules are on unless turned off
    checker.check_line(1, lines(ascii_request("1", body_messages=[])))
    assert [v.code for v in checker.listed()] == ["invalid_message"]


def test_a_truncated_line_is_reported_at_its_own_column() -> None:
    line = json.dumps(request("1")).encode()[:-1]  # the closing brace lost
    assert found(lines(line)) == [
        (1, "invalid_json_line", None, f"not valid JSON: Expecting ',' delimiter (column {len(line) + 1})")
    ]


def test_a_model_the_catalog_does_not_know_warns_once_and_is_not_refused() -> None:
    report = check(lines(request("1", body_model="qwen9-plus"), request("2", body_model="qwen9-plus")))
    assert report.ok
    assert [(w.line, w.code, w.param) for w in report.warnings] == [(1, "unknown_model", "body.model")]
    assert "region, modalities, thinking mode, limits and price are not checked" in report.warnings[0].message
