"""Result-file helpers at their edges: the 2xx bounds, partial errors (not billed), totals that differ from
the sum, null bodies, trailing newlines and blank tails, exact cell encodings.

Found by mutation testing (``.ci/mutation results``): each test pins a behaviour a changed constant or
condition would break unnoticed by ``test_results.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.results.lines import (
    LineSplitter,
    UsageTotals,
    flatten_result,
    is_success,
    iter_lines,
)


def line(status: Any = 200, error: Any = None, body: Any = None, **response: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    body = {"model": "qwen-plus", "usage": usage} if body is None else body
    return {"custom_id": "a", "response": {"status_code": status, "body": body, **response}, "error": error}


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
