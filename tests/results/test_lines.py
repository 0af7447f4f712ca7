"""Pure result-file helpers: line splitting, flattening, usage sums, digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from result_helpers import CHAT_OK, EMBEDDING_OK, line

from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.results.lines import (
    LineSplitter,
    ResultFileStats,
    UsageTotals,
    flatten_embeddings,
    flatten_result,
    flatten_typical_result,
    is_success,
    iter_lines,
)
from airflow_provider_dashscope_batch.results.tables import EMBEDDING_COLUMNS, RESULT_COLUMNS


def test_iter_lines_across_chunk_boundaries_and_missing_final_newline():
    data = b'{"a":1}\n\n{"b":2}\r\n{"c":3}'
    for size in (1, 2, 5, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(iter_lines(chunks)) == [b'{"a":1}', b'{"b":2}\r', b'{"c":3}']


def test_flatten_chat_success():
    row = flatten_result(json.dumps(CHAT_OK).encode())
    assert tuple(row) == RESULT_COLUMNS
    assert row == {
        "custom_id": "a",
        "status_code": 200,
        "model": "qwen-plus",
        "content": "hi, 你好",
        "reasoning_content": "think",
        "finish_reason": "length",
        "prompt_tokens": 20,
        "completion_tokens": 6,
        "total_tokens": 26,
        "error_code": None,
        "error_message": None,
        "request_id": "r1",
        "created": 1700000000,
    }
    assert is_success(CHAT_OK)


@pytest.mark.parametrize(
    "error",
    [
        {"code": "InvalidParameter", "message": "bad"},
        {"error_code": "InvalidParameter", "error_message": "bad"},
    ],
)
def test_flatten_error_line_both_spellings(error):
    line = {"id": "u2", "custom_id": "b", "response": None, "error": error}
    row = flatten_result(line)
    assert (row["error_code"], row["error_message"]) == ("InvalidParameter", "bad")
    assert row["status_code"] is None
    assert not is_success(line)


def test_flatten_error_from_response_body():
    line = {
        "custom_id": "c",
        "response": {"status_code": 400, "request_id": "r", "body": {"error": {"code": "X", "message": "m"}}},
        "error": None,
    }
    row = flatten_result(line)
    assert (row["status_code"], row["error_code"], row["error_message"]) == (400, "X", "m")
    assert not is_success(line)


def test_flatten_list_content_as_json():
    parts = {"response": {"body": {"choices": [{"message": {"content": [{"text": "x"}]}}]}}}
    assert flatten_result(parts)["content"] == '[{"text":"x"}]'


def test_flatten_embeddings_one_row_per_input_with_packed_ids():
    rows = flatten_embeddings(EMBEDDING_OK)
    assert [tuple(row) for row in rows] == [EMBEDDING_COLUMNS] * 2
    assert [(r["input_index"], r["input_id"], r["embedding"], r["dimensions"]) for r in rows] == [
        (1, "t2", [0.5, 0.25], 2),
        (0, "t1", [1.0, -1.0], 2),
    ]
    assert [(r["prompt_tokens"], r["total_tokens"]) for r in rows] == [(7, 7), (None, None)]  # billed once
    assert {(r["custom_id"], r["model"], r["request_id"], r["status_code"]) for r in rows} == {
        ('["t1","t2"]', "text-embedding-v4", "r9", 200)
    }


def test_flatten_embeddings_single_input_and_missing_data():
    one = {"custom_id": "7", "response": {"status_code": 200, "body": {"data": [{"embedding": [0.1] * 8}]}}}
    (row,) = flatten_embeddings(one)
    assert (row["input_index"], row["input_id"], row["dimensions"]) == (0, "7", 8)
    (empty,) = flatten_embeddings({"custom_id": "8", "response": {"status_code": 200, "body": {}}})
    assert (empty["custom_id"], empty["embedding"], empty["input_index"]) == ("8", None, None)
    with pytest.raises(ValueError, match="not a list of numbers"):
        flatten_embeddings({"response": {"body": {"data": [{"embedding": "AAAA"}]}}})


def test_flatten_rejects_non_objects():
    with pytest.raises(ValueError, match="not valid JSON"):
        flatten_result(b"{nope")
    with pytest.raises(ValueError, match="JSON list"):
        flatten_result(b"[1]")


def test_usage_sums_successes_only():
    usage = UsageTotals()
    usage.add(CHAT_OK)
    usage.add(json.dumps(CHAT_OK))
    usage.add({"custom_id": "x", "response": {"status_code": 500, "body": {"usage": {"total_tokens": 99}}}})
    usage.add({"response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 3}}}})
    expected = {
        "prompt_tokens": 43,
        "completion_tokens": 12,
        "total_tokens": 55,
        "requests": 3,
        "reasoning_tokens": 0,
    }
    assert usage.as_dict() == expected


def test_result_file_stats():
    data = b"a\nb\n\nc"
    stats = ResultFileStats()
    lines = stats.update(data[:3]) + stats.update(data[3:]) + stats.finish()
    assert lines == [b"a", b"b", b"c"]
    assert (stats.bytes, stats.lines, stats.sha256) == (len(data), 3, hashlib.sha256(data).hexdigest())


LINE_SHAPES = [
    CHAT_OK,
    {**CHAT_OK, "response": {**CHAT_OK["response"], "status_code": "200"}},
    {**CHAT_OK, "response": {**CHAT_OK["response"], "status_code": 400}},
    {**CHAT_OK, "error": {"code": "InvalidParameter", "message": "bad"}},
    {
        **CHAT_OK,
        "response": {"status_code": 200, "body": {"error": {"code": "x"}, "usage": {"total_tokens": 3}}},
    },
    {
        **CHAT_OK,
        "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 2, "completion_tokens": 1}}},
    },
    {**CHAT_OK, "response": {"status_code": 200, "body": "not an object"}},
    {"custom_id": "b", "response": None, "error": {"error_code": "E", "error_message": "m"}},
    {
        "custom_id": "c",
        "response": {
            "status_code": 200,
            "body": {"data": [{"embedding": [0.1] * 8}], "usage": {"total_tokens": 4}},
        },
    },
]
"""Lines of the usual shape and of unusual ones (each path of the fast decoders and the lenient parse)."""


@pytest.mark.parametrize("obj", LINE_SHAPES)
def test_usage_from_raw_line_matches_parsed(obj):
    raw, parsed = UsageTotals(), UsageTotals()
    raw.add(json.dumps(obj).encode())
    parsed.add(obj)
    assert raw == parsed


@pytest.mark.parametrize(("line", "message"), [(b'{"a": [1,', "not valid JSON"), (b"[1, 2]", "JSON list")])
def test_usage_from_malformed_raw_line(line, message):
    with pytest.raises(ValueError, match=message):
        UsageTotals().add(line)


TYPICAL = [True, False, True, False, False, True, False, False, True]
"""Which of LINE_SHAPES the typed fast path takes (the rest go to the lenient parse)."""


@pytest.mark.parametrize(("obj", "typical"), zip(LINE_SHAPES, TYPICAL, strict=True))
def test_the_fast_path_takes_the_usual_shapes_and_agrees_with_the_lenient_parse(obj, typical):
    usage, expected = UsageTotals(), UsageTotals()
    row = flatten_typical_result(json.dumps(obj).encode(), usage)
    if typical:
        assert row == flatten_result(obj)
        expected.add(obj)
    else:
        assert row is None
    assert usage == expected  # an unusual line is not counted here: the lenient path counts it


@pytest.mark.parametrize(
    "obj",
    [
        {**CHAT_OK, "custom_id": 7},
        {
            "custom_id": "p",
            "response": {"status_code": 200, "body": {"choices": [{"message": {"content": [1]}}]}},
        },
        {"custom_id": "q", "response": {"status_code": 200, "body": {"choices": []}}},
        {"custom_id": "r", "response": {"status_code": 200, "body": None}},
        {"custom_id": "s", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": 1}}}},
    ],
)
def test_the_fast_path_row_of_other_usual_lines(obj):
    assert flatten_typical_result(json.dumps(obj).encode(), UsageTotals()) == flatten_result(obj)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": "10", "completion_tokens": 5}, {"prompt_tokens": 10, "completion_tokens": 5.0}],
    ids=["string", "float"],
)
def test_token_counts_that_are_not_ints_take_the_lenient_parse(usage):
    obj = {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": usage}}}
    assert flatten_typical_result(json.dumps(obj).encode(), UsageTotals()) is None
    raw, parsed = UsageTotals(), UsageTotals()
    raw.add(json.dumps(obj).encode())
    parsed.add(obj)
    assert raw == parsed
    assert raw.prompt_tokens == 10


def test_a_success_without_usage_is_metered_at_its_model():
    obj = {"custom_id": "a", "response": {"status_code": 200, "body": {"model": "qwen-plus"}}}
    meters = [CostMeter(*load_price_table("cn-beijing")) for _ in range(2)]
    UsageTotals(meter=meters[0]).add(json.dumps(obj).encode())
    flatten_typical_result(json.dumps(obj).encode(), UsageTotals(meter=meters[1]))
    for meter in meters:
        (tier,) = meter.result().tiers
        assert (tier.model, tier.requests) == ("qwen-plus", 1)


def test_a_json_value_of_no_known_kind_is_named_as_a_value():
    with pytest.raises(ValueError, match=r"^result line is a JSON value, expected an object$"):
        flatten_result(b"null")


def test_stats_without_digest_have_no_sha256():
    stats = ResultFileStats(digest=False)
    stats.update(b"a\n")
    assert (stats.bytes, stats.lines, stats.sha256) == (2, 1, "")


@pytest.mark.parametrize(
    ("custom_id", "indexes", "ids"),
    [
        ('["a","b"]', [0, 1], ["a", "b"]),
        ('["a","b","c"]', [0, 1], [None, None]),  # a list of another length is no packed id
        ('["a",2]', [0, 1], [None, None]),  # nor one of non-strings
        ("[not json", [0, 1], [None, None]),
        ('["a","b"]', [2, -1], [None, None]),  # an index outside the list finds no id
        ("plain", [0, 1], [None, None]),  # two vectors under one plain id: neither is that id's text
    ],
)
def test_each_vector_gets_its_texts_id_only_from_a_matching_packed_id(custom_id, indexes, ids):
    data = [{"index": i, "embedding": [0.0]} for i in indexes]
    obj = {"custom_id": custom_id, "response": {"status_code": 200, "body": {"data": data}}}
    assert [r["input_id"] for r in flatten_embeddings(obj)] == ids


# The 2xx bounds, partial errors (not billed), totals that differ from the sum, null bodies, trailing
# newlines and blank tails, exact cell encodings.


def usage_of(*lines: dict[str, Any]) -> dict[str, int]:
    """Usage summed from the parsed dicts and, separately, from the raw lines: both must agree."""
    parsed, raw = UsageTotals(), UsageTotals()
    for obj in lines:
        parsed.add(obj)
        raw.add(json.dumps(obj).encode())
    assert parsed == raw
    return parsed.as_dict()


@pytest.mark.parametrize(
    ("status", "ok"), [(199, False), (200, True), (299, True), (300, False), ("204", True)]
)
def test_success_is_exactly_2xx(status: Any, ok: bool) -> None:
    assert is_success(line(status)) is ok


@pytest.mark.parametrize(
    "error",
    [{"code": "InternalError"}, {"message": "boom"}, {"error_code": "x"}, {"error_message": "y"}],
    ids=["code-only", "message-only", "error_code-only", "error_message-only"],
)
def test_an_error_with_only_a_code_or_only_a_message_is_a_failure_and_not_billed(
    error: dict[str, str],
) -> None:
    assert not is_success(line(error=error))
    assert usage_of(line(error=error), line()) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "requests": 1,
        "reasoning_tokens": 0,
    }


def test_an_empty_error_object_is_no_error() -> None:
    assert is_success(line(error={}))


def test_total_tokens_is_the_services_own_when_it_differs_from_the_sum() -> None:
    """Thinking models bill reasoning tokens into the total; only a missing total falls back to the sum."""
    reasoning = line(body={"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40}})
    no_total = line(body={"usage": {"prompt_tokens": 10, "completion_tokens": 5}})
    no_prompt = line(body={"usage": {"completion_tokens": 5, "total_tokens": 9}})
    assert usage_of(reasoning, no_total, no_prompt) == {
        "prompt_tokens": 20,
        "completion_tokens": 15,
        "total_tokens": 40 + 15 + 9,
        "requests": 3,
        "reasoning_tokens": 0,
    }


@pytest.mark.parametrize("body", [None, {}], ids=["body-null", "body-empty"])
def test_a_success_without_a_body_counts_as_a_request_with_no_tokens(body: dict | None) -> None:
    obj = line()
    obj["response"]["body"] = body
    assert usage_of(obj) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "requests": 1,
        "reasoning_tokens": 0,
    }
    assert flatten_result(obj)["content"] is None


def test_a_file_ending_in_a_newline_yields_no_empty_last_line() -> None:
    assert list(iter_lines([b'{"a":1}\n', b'{"b":2}\n'])) == [b'{"a":1}', b'{"b":2}']
    assert list(iter_lines([b'{"a":1}\n', b" \t"])) == [b'{"a":1}']  # a blank tail is no line


def test_splitter_finish_hands_out_the_tail_once() -> None:
    splitter = LineSplitter()
    assert splitter.push(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.finish() == [b'{"b"']
    assert splitter.finish() == []
    assert splitter.push(b":2}\n") == [b":2}"]


@pytest.mark.parametrize(
    ("value", "cell"),
    [("12", 12), (" -3 ", -3), (7.0, 7), (7.5, None), (True, None), ("X3", None), ("3-", None)],
)
def test_integer_cells(value: Any, cell: int | None) -> None:
    assert flatten_result(line(body={"created": value}))["created"] == cell


def test_non_string_content_is_compact_json_with_unicode_kept() -> None:
    parts = [{"type": "text", "text": "你好"}, {"type": "text", "text": "hi"}]
    row = flatten_result(line(body={"choices": [{"message": {"content": parts}}]}))
    assert row["content"] == '[{"type":"text","text":"你好"},{"type":"text","text":"hi"}]'


@pytest.mark.parametrize(
    "choices", [[], {"0": {"message": {"content": "x"}}}, {}], ids=["empty", "object", "{}"]
)
def test_choices_that_are_not_a_non_empty_list_give_no_content(choices: Any) -> None:
    assert flatten_result(line(body={"choices": choices}))["content"] is None


def test_reasoning_tokens_are_summed_and_each_success_is_metered_at_its_model() -> None:
    """The cost meter gets each successful line's model (a string, else none), tokens and reasoning."""
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "completion_tokens_details": {"reasoning_tokens": 60},
    }
    lines = [
        line(body={"model": "qwen-plus", "usage": usage}),
        line(
            body={
                "model": "qwen-plus",
                "usage": {**usage, "completion_tokens_details": {"reasoning_tokens": 3}},
            }
        ),
        line(body={"model": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
        line(body={"model": "qwen-plus", "usage": {"prompt_tokens": 20, "completion_tokens": 7}}),
        line(status=400, error={"code": "x"}, body={"model": "qwen-plus", "usage": usage}),  # not billed
    ]
    meters = [CostMeter(*load_price_table("cn-beijing")) for _ in range(2)]
    parsed, raw = UsageTotals(meter=meters[0]), UsageTotals(meter=meters[1])
    for obj in lines:
        parsed.add(obj)
        raw.add(json.dumps(obj).encode())
    assert parsed == raw
    assert parsed.reasoning_tokens == 63
    assert parsed.as_dict()["reasoning_tokens"] == 63
    cost = meters[0].result()
    assert cost == meters[1].result()
    assert [
        (t.model, t.thinking, t.requests, t.input_tokens, t.output_tokens, t.reasoning_tokens)
        for t in cost.tiers
    ] == [("?", False, 1, 10, 5, 0), ("qwen-plus", False, 1, 20, 7, 0), ("qwen-plus", True, 2, 2000, 200, 63)]
