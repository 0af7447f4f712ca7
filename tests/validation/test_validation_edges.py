"""The preflight rules at their edges: both sides of every limit, each rule's exact message and param,
the slow (strict JSON) path, long lines that loop the reader, and file-level violations as rendered.

Found by mutation testing (``.ci/mutation validation``): each test here pins a behaviour a changed
constant or condition would break unnoticed by the rule tests.
"""

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
SURROGATE = "\ud800"  # strict JSON allows a lone surrogate escape; the fast decoder does not (slow path)


def request(custom_id: Any = "1", **changes: Any) -> dict[str, Any]:
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
    assert found(lines(shape(request(value)))) == [
        (1, "invalid_custom_id", "custom_id", f"custom_id must be a non-empty string, got {got}")
    ]
    assert found(lines(shape(request(body_model=value)))) == [
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
    assert found(lines(shape(without(request(), "body")))) == [
        (1, "invalid_body", "body", "body must be a JSON object, got missing")
    ]
    assert found(lines(shape(request(body={"messages": [{"role": "user", "content": "hi"}]})))) == [
        (1, "invalid_model", "body.model", "body.model must be a non-empty string, got missing")
    ]


@pytest.mark.parametrize(
    ("body", "got"), [(None, "a JSON null"), ("x", "a JSON string"), ([1], "a JSON array")]
)
def test_body_that_is_not_an_object(body: Any, got: str) -> None:
    assert found(lines(request(body=body))) == [
        (1, "invalid_body", "body", f"body must be a JSON object, got {got}")
    ]


def test_method_and_url_are_quoted_as_given() -> None:
    assert found(lines(request(method="ПОСТ", url="/v1/聊天"))) == [
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
    assert [(n, code) for n, code, _, _ in found(lines(request(url=None, body_model=None)))] == [
        (1, "invalid_url"),
        (1, "invalid_model"),
    ]
    null_urls = lines(request("1", url=None), request("2", url=None))
    assert [(n, code) for n, code, _, _ in found(null_urls)] == [(1, "invalid_url"), (2, "invalid_url")]
    null_models = lines(request("1", body_model=None), request("2", body_model=None))
    assert [(n, code) for n, code, _, _ in found(null_models)] == [(1, "invalid_model"), (2, "invalid_model")]


def test_a_split_input_shares_one_id_registry() -> None:
    """The splitter checks each part with its own checker over one registry of ids (line numbers global)."""
    registry: dict[str, int] = {}
    first, second = LineChecker(CHAT, 10, seen_ids=registry), LineChecker(CHAT, 10, seen_ids=registry)
    first.check_line(1, json.dumps(request("a")).encode())
    second.check_line(2, json.dumps(request("a")).encode())
    assert registry == {"a": 1}
    assert [(v.line, v.code, v.message) for v in second.listed()] == [
        (2, "duplicate_custom_id", 'custom_id "a" already used on line 1')
    ]


def test_thinking_mode_messages() -> None:
    assert found(lines(request(body_enable_thinking="yes"))) == [
        (
            1,
            "invalid_body",
            "body.enable_thinking",
            "body.enable_thinking must be true or false, got a JSON string",
        )
    ]
    mixed = lines(
        request("1", body_enable_thinking=True), request("2"), slow(request("3", body_enable_thinking=False))
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
        lines(request("1", body_enable_thinking=True), slow(request("2", body_enable_thinking=True)))
    ).ok


def test_thinking_mode_is_set_by_the_first_line_with_a_valid_one() -> None:
    """After an invalid ``enable_thinking`` the next line's mode is the file's; later ones must match it."""
    data = lines(
        request("1", body_enable_thinking="yes"), request("2"), request("3", body_enable_thinking=True)
    )
    assert [(n, code) for n, code, _, _ in found(data)] == [
        (1, "invalid_body"),
        (3, "mismatched_thinking_mode"),
    ]
    data = lines(request("1", body_enable_thinking="yes"), request("2", body_enable_thinking=None))
    assert [(n, code) for n, code, _, _ in found(data)] == [(1, "invalid_body"), (2, "invalid_body")]


def test_mismatches_name_their_param_and_first_line() -> None:
    data = lines(
        request("编号"),
        slow(request("编号")),
        request("b", body_model="qwen-max"),
        request("c", url="/v1/embeddings"),
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
    assert found(lines(request()), endpoint="/v1/embeddings") == [
        (1, "url_mismatch", "url", f'url "{CHAT}" differs from the batch endpoint "/v1/embeddings"')
    ]


def test_custom_id_length_on_both_sides_of_the_limit() -> None:
    at, over, one = "i" * MAX_CUSTOM_ID_CHARS, "o" * (MAX_CUSTOM_ID_CHARS + 1), "x"
    assert check(lines(request(at), request(one), slow(request("s" * MAX_CUSTOM_ID_CHARS)))).ok
    assert found(lines(request(over), slow(request(over)))) == [
        (
            n,
            "custom_id_too_long",
            "custom_id",
            f"custom_id has {MAX_CUSTOM_ID_CHARS + 1} characters; the limit is 256",
        )
        for n in (1, 2)
    ]


def test_json_errors_say_why() -> None:
    assert found(lines(b'{"custom_id": NaN}', b"[1]", b'"x"', b"null", b"3")) == [
        (1, "invalid_json_line", None, "not valid JSON: NaN is not valid JSON"),
        (2, "invalid_json_line", None, "a line must be a JSON object, got array"),
        (3, "invalid_json_line", None, "a line must be a JSON object, got string"),
        (4, "invalid_json_line", None, "a line must be a JSON object, got null"),
        (5, "invalid_json_line", None, "a line must be a JSON object, got number"),
    ]


def test_encoding_errors_give_the_byte() -> None:
    line = json.dumps(request("\x00")).encode().replace(b"\\u0000", b"\xff")
    offset = line.index(b"\xff") + 1  # 1-based
    assert found(lines(line)) == [
        (
            1,
            "invalid_encoding",
            None,
            f"not valid UTF-8 (invalid start byte at byte {offset})",
        )
    ]
    assert found(b"\xef\xbb\xbf" + lines(request())) == [
        (1, "invalid_encoding", None, "the file starts with a UTF-8 BOM; save it without BOM")
    ]


def test_blank_lines_and_a_line_starting_with_a_space() -> None:
    data = b" " + lines(request("1")) + b" \t\n" + lines(request("2"))
    assert found(data) == [(2, "blank_line", None, "blank line; every line must hold one JSON request")]


def test_line_50000_is_checked_and_50001_counted_only(tmp_path: Path) -> None:
    template = json.dumps(request("{}"), separators=(",", ":"))
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
    first = lines(request("1", url=TEST_MODEL_ENDPOINT, body_model=TEST_MODEL))
    head = (
        json.dumps(request("2", url=TEST_MODEL_ENDPOINT, body_model=TEST_MODEL)).encode()[:-2] + b', "pad": "'
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
    data = lines(request("1", body_model=TEST_MODEL), request("1", body_model=TEST_MODEL))
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
    assert [v.code for v in check(lines(request(url="/v1/x", body_model=TEST_MODEL))).violations] == [
        "invalid_url"
    ]


def test_default_cap_lists_100() -> None:
    report = check(lines(*(request("same") for _ in range(102))))
    assert (len(report.violations), report.violation_count) == (100, 101)
    assert report.summary().endswith("... and 1 more violation(s) not listed")


def test_a_named_stream_is_reported_by_its_name(tmp_path: Path) -> None:
    path = tmp_path / "named.jsonl"
    path.write_bytes(lines(request(), request()))
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
    head = json.dumps(request("big")).encode()[:-2] + b', "pad": "'
    big = head + b"x" * (size - len(head) - 3) + b'"}}'
    data = lines(request("1")) + big + b"\r\n" + lines(request("1"))
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
    good = [request(str(i)) for i in range(3)]
    data = lines(*good, request("1"), request("9"))
    seen: list[bytes] = []
    report = check(data, on_line=seen.append)
    assert seen == data.splitlines(keepends=True)[:3]
    assert [v.code for v in report.violations] == ["duplicate_custom_id"]
    seen.clear()
    check(lines(*good), on_line=seen.append)
    assert seen == lines(*good).splitlines(keepends=True)


def test_body_rules_can_be_left_to_the_service() -> None:
    """``body_rules=False`` (the service fails such a request alone) keeps every file-wide rule."""
    data = lines(request("1", body_messages=[]), request("1", body_messages=[]))
    assert [v.code for v in check(data).violations] == [
        "invalid_message",
        "duplicate_custom_id",
        "invalid_message",
    ]
    assert [v.code for v in check(data, body_rules=False).violations] == ["duplicate_custom_id"]
    checker = LineChecker(None, 10)  # body rules are on unless turned off
    checker.check_line(1, lines(request("1", body_messages=[])))
    assert [v.code for v in checker.listed()] == ["invalid_message"]
