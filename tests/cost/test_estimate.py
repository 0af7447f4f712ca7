"""CostEstimator: per-request tiers, output ceiling and expectation, sampling, the fallback's labels."""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_dashscope_batch.cost import estimate as estimate_module
from airflow_provider_dashscope_batch.cost import tokens
from airflow_provider_dashscope_batch.cost.budget import (
    APPROXIMATION_LABEL,
    BudgetExceededError,
    CostEstimate,
    CostPolicy,
    RegionUnavailableError,
    ThinkingModeError,
    TierEstimate,
    UnpricedModelError,
)
from airflow_provider_dashscope_batch.cost.estimate import CostEstimator
from airflow_provider_dashscope_batch.cost.pricing import load_price_table


def chat(content: str, model: str = "qwen-plus", **body: object) -> bytes:
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def run(lines: list[bytes], region: str = "cn-beijing", **policy: object):
    table, prices = load_price_table(region)
    estimator = CostEstimator(table, prices, CostPolicy(**policy), source="in.jsonl")
    for line in lines:
        estimator.feed(line)
    return estimator.finish()


def test_prompt_tokens_follow_the_chat_template():
    encode = tokens.load_tokenizer()
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {
        "model": "qwen-plus",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "Hello!"}]},
        ],
    }
    estimate = run([json.dumps(line).encode()])
    template = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    )
    from dashscope.tokenizers import get_tokenizer

    assert estimate.input_tokens == len(get_tokenizer("qwen-plus").encode(template)) == 21
    assert encode("Hello!") == 2


def test_ceiling_uses_max_tokens_else_the_models_maximum_and_thinking_adds_reasoning():
    estimate = run([chat("a", max_tokens=100), chat("b")])
    assert estimate.output_ceiling_tokens == 100 + 32768
    thinking = run([chat("a", max_tokens=100, enable_thinking=True, thinking_budget=50)])
    assert thinking.thinking is True
    assert thinking.output_ceiling_tokens == 150
    tier = thinking.tiers[0]
    assert tier.output_price == Decimal("0.008")  # the thinking output price


def test_expected_output_is_capped_at_each_ceiling():
    estimate = run([chat("a", max_tokens=10), chat("b", max_tokens=1000)], expected_output_tokens=300)
    assert estimate.expected_output_tokens == 10 + 300
    assert estimate.cost_expected < estimate.cost_ceiling


def test_budget_on_the_expected_figure():
    lines = [chat("a", max_tokens=30000)] * 10
    estimate = run(lines, expected_output_tokens=10)
    CostPolicy(max_cost=Decimal("0.01"), expected_output_tokens=10).enforce(estimate)
    with pytest.raises(BudgetExceededError, match=r"\(ceiling\) exceeds max_cost"):
        CostPolicy(max_cost=Decimal("0.01"), expected_output_tokens=10, budget_basis="ceiling").enforce(
            estimate
        )


def test_embeddings_count_inputs_and_have_no_output():
    line = {"custom_id": "1", "method": "POST", "url": "/v1/embeddings"}
    line["body"] = {"model": "text-embedding-v4", "input": ["hello world", "你好世界"]}
    estimate = run([json.dumps(line, ensure_ascii=False).encode()])
    encode = tokens.load_tokenizer()
    assert estimate.input_tokens == encode("hello world") + encode("你好世界")
    assert estimate.output_ceiling_tokens == 0
    assert estimate.cost_ceiling == (Decimal(estimate.input_tokens) * Decimal("0.0005") / 2000).quantize(
        Decimal("0.000001")
    )


def test_image_parts_are_labelled_not_estimated():
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}
    content = [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "text", "text": "what?"},
    ]
    line["body"] = {"model": "qwen-vl-max", "messages": [{"role": "user", "content": content}]}
    estimate = run([json.dumps(line).encode()])
    assert estimate.unestimated_media_requests == 1
    assert "not estimated" in estimate.table()
    assert estimate.cost_ceiling is None  # qwen-vl-max has no price in the table
    assert "model 'qwen-vl-max' is unpriced" in estimate.table()


def test_without_the_tokenizer_every_printed_line_says_approximate(monkeypatch):
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", "No module named 'tiktoken'")
    estimate = run([chat("hello world " * 10, max_tokens=5)] * 3)
    assert estimate.counting == "approximation"
    lines = estimate.table().splitlines()
    assert len(lines) > 4
    assert all(line.startswith(APPROXIMATION_LABEL) for line in lines)
    # 120 ASCII characters / 4 + template (1 role + 4 + 3)
    assert estimate.input_tokens == 3 * (30 + 8)


def test_sampling_keeps_the_total_within_one_percent(monkeypatch):
    monkeypatch.setattr(estimate_module, "_EXACT_CHARS", 20_000)
    rng = random.Random(7)
    zh = "杭州西湖是中国著名的风景名胜区位于浙江省杭州市西部以其秀丽的自然风光闻名于世"
    en = ["the", "committee", "reviewed", "quarterly", "results", "and", "forecasts", "for", "the", "year"]
    texts = [
        "".join(rng.choice(zh) for _ in range(rng.randint(10, 200)))
        + " ".join(rng.choice(en) for _ in range(rng.randint(5, 80)))
        for _ in range(3000)
    ]
    sampled = run([chat(t) for t in texts])
    assert sampled.exact_requests < len(texts) // 5  # most were scaled, not counted
    encode = tokens.load_tokenizer()
    full = sum(encode(t) + encode("user") + 7 for t in texts)
    assert abs(sampled.input_tokens - full) / full < 0.01


# The printed table to the character, every check's message, the output ceiling's fallbacks, unusual line
# shapes, and each tier worked out by hand from the approximation.
_PLUS = load_price_table("cn-beijing")[1].models["qwen-plus"]
_PAAS = f"{_PLUS.source}; note: {_PLUS.note}"
assert "https://help.aliyun.com/en/document_detail/3023262.html (AI PaaS billing rules" in _PAAS
_NO_TOKENIZER = "No module named 'tiktoken'"


@pytest.fixture
def approximate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count with the documented approximation, so every figure can be worked out by hand."""
    monkeypatch.setattr(tokens, "_encoder", None)
    monkeypatch.setattr(tokens, "_unavailable", _NO_TOKENIZER)


def bare_chat(content: Any, model: str = "qwen-plus", **body: Any) -> bytes:
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return json.dumps(line, ensure_ascii=False).encode()


def estimator(region: str = "cn-beijing", prices: Any = None, **policy: Any) -> CostEstimator:
    table, region_prices = load_price_table(region, task_prices=prices)
    return CostEstimator(table, region_prices, CostPolicy(**policy), source="in.jsonl")


def estimate_of(
    lines: list[bytes], region: str = "cn-beijing", prices: Any = None, **policy: Any
) -> CostEstimate:
    e = estimator(region, prices, **policy)
    for line in lines:
        e.feed(line)
    estimate = e.finish()
    assert estimate is not None
    return estimate


def test_two_tiers_worked_out_by_hand(approximate: None) -> None:
    lines = [
        bare_chat("a" * 400, max_tokens=100),
        bare_chat("b" * 4, max_tokens=10),
        bare_chat("你" * 300_000, max_tokens=10),
    ]
    estimate = estimate_of(lines, expected_output_tokens=50)
    small = 400 // 4 + 8 + 4 // 4 + 8  # text, and the template: 1 token of role + 4 per message + 3
    big = 300_000 * 2 // 3 + 8
    scale = Decimal("0.5") / 1000
    low = TierEstimate(
        tier="<=128K",
        requests=2,
        input_tokens=small,
        output_ceiling_tokens=110,
        expected_output_tokens=50 + 10,
        input_price=Decimal("0.0008"),
        output_price=Decimal("0.002"),
        cost_ceiling=((small * Decimal("0.0008") + 110 * Decimal("0.002")) * scale).quantize(Decimal("1e-6")),
        cost_expected=((small * Decimal("0.0008") + 60 * Decimal("0.002")) * scale).quantize(Decimal("1e-6")),
    )
    high_cost = (big * Decimal("0.0024") + 10 * Decimal("0.02")) * scale
    high = TierEstimate(
        tier="128K-256K",
        requests=1,
        input_tokens=big,
        output_ceiling_tokens=10,
        expected_output_tokens=10,
        input_price=Decimal("0.0024"),
        output_price=Decimal("0.02"),
        cost_ceiling=high_cost.quantize(Decimal("1e-6")),
        cost_expected=high_cost.quantize(Decimal("1e-6")),
    )
    assert estimate.tiers == [low, high]
    ceiling = (small * Decimal("0.0008") + 110 * Decimal("0.002")) * scale + high_cost
    expected = (small * Decimal("0.0008") + 60 * Decimal("0.002")) * scale + high_cost
    assert estimate == CostEstimate(
        source="in.jsonl",
        model="qwen-plus",
        endpoint="/v1/chat/completions",
        region="cn-beijing",
        currency="CNY",
        thinking=False,
        counting="approximation",
        requests=3,
        exact_requests=0,
        input_tokens=small + big,
        output_ceiling_tokens=120,
        expected_output_tokens=70,
        unestimated_media_requests=0,
        tiers=[low, high],
        cost_ceiling=ceiling.quantize(Decimal("1e-6")),
        cost_expected=expected.quantize(Decimal("1e-6")),
        batch_discount=Decimal("0.5"),
        price_source=_PAAS,
        price_table_date="2026-12",
        warnings=[f"{_NO_TOKENIZER}; token counts are approximate"],
    )
    assert estimate.cost("ceiling") == estimate.cost_ceiling
    assert estimate.cost("expected") == estimate.cost_expected
    rows = [
        "Cost estimate of in.jsonl: model qwen-plus, region cn-beijing, 3 request(s), thinking off, "
        "batch price (50 % of real-time) in CNY",
        "  tokens: approximation (ASCII chars / 4 + other chars / 1.5), the tokenizer is not installed",
        "  tier        requests     input tok   out ceiling  out expected   cost ceiling  cost expected",
        "  <=128K             2           117           110            60         0.0002         0.0001",
        "  128K-256K          1       200,008            10            10         0.2401         0.2401",
        "  total              3       200,125           120            70         0.2403         0.2402",
        f"  prices: {_PAAS} (table read 2026-12)",
        f"  warning: {_NO_TOKENIZER}; token counts are approximate",
    ]
    assert estimate.table().splitlines() == [f"{APPROXIMATION_LABEL} {row}" for row in rows]


def test_input_budget_is_inclusive_and_says_so(approximate: None) -> None:
    estimate = estimate_of([bare_chat("a" * 400, max_tokens=1)])  # 108 input tokens
    CostPolicy(max_input_tokens=108).enforce(estimate)
    message = (
        "Input of 108 tokens exceeds max_input_tokens=107; nothing was uploaded or created.\n"
        + estimate.table()
    )
    with pytest.raises(BudgetExceededError, match=f"^{re.escape(message)}$"):
        CostPolicy(max_input_tokens=107).enforce(estimate)


def test_cost_budget_is_inclusive_and_says_so(approximate: None) -> None:
    estimate = estimate_of([bare_chat("a" * 4000, max_tokens=1000)])  # 1008 input, 1000 output
    cost = estimate.cost_ceiling
    assert cost == ((1008 * Decimal("0.0008") + 1000 * Decimal("0.002")) * Decimal("0.0005")).quantize(
        Decimal("1e-6")
    )
    CostPolicy(max_cost=cost).enforce(estimate)
    below = cost - Decimal("0.000001")
    message = (
        f"Estimated cost {cost:.4f} CNY (ceiling) exceeds max_cost={below} CNY; nothing was uploaded or "
        "created. Lower the number of requests or max_tokens, pick a cheaper model, or raise max_cost.\n"
        + estimate.table()
    )
    with pytest.raises(BudgetExceededError, match=f"^{re.escape(message)}$"):
        CostPolicy(max_cost=below).enforce(estimate)
    CostPolicy(max_input_tokens=10**9).enforce(estimate)  # no max_cost: no cost check


def test_max_cost_on_an_unpriced_model_says_how_to_price_it(approximate: None) -> None:
    estimate = estimate_of([bare_chat("hi", model="my-model")])
    CostPolicy(max_input_tokens=100).enforce(estimate)  # a token budget needs no price
    message = (
        "max_cost is set but model 'my-model' is unpriced in region 'cn-beijing', so the budget cannot be "
        "checked; nothing was uploaded or created. Give its real-time price in the connection extra "
        '\'models\', e.g. {"my-model": {"prices": {"cn-beijing": [{"max_input_tokens": null, "input": '
        '"<per unit>", "output": "<per unit>"}]}}} (CNY per 1K tokens in cn-beijing, USD per 1M in '
        'ap-southeast-1), or for this task only prices={"my-model": {"tiers": [...]}}; see docs/models.rst\n'
        + estimate.table()
    )
    with pytest.raises(UnpricedModelError, match=f"^{re.escape(message)}$"):
        CostPolicy(max_cost=100).enforce(estimate)


# ------------------------------------------------------------------------------------------------ checks
def test_a_model_the_region_does_not_offer_in_batch() -> None:
    message = (
        "in.jsonl: model 'qwen-long' does not run in batch in region ap-southeast-1 (the model catalog lists "
        "it for cn-beijing; source: https://help.aliyun.com/zh/model-studio/batch-interfaces-compatible-with-"
        "openai (OpenAI兼容-Batch（文件输入）, newest copy (lists qwen3.7); read 2026-12)); nothing was "
        "uploaded. Use a connection to one of those regions, or a model this region offers "
        "(batch-test-model, qwen-max, qwen-plus, qwen-turbo). If your account runs it here, add the region "
        "to the model's regions in the connection extra 'models'."
    )
    with pytest.raises(RegionUnavailableError, match=f"^{re.escape(message)}$"):
        estimator("ap-southeast-1").feed(bare_chat("hi", model="qwen-long"))


_THINKS = (
    "in.jsonl: model 'qwen3.5-plus' thinks by default and the requests do not set enable_thinking, so every "
    "request would think (more output tokens, billed at the thinking output price). Set "
    '"enable_thinking": false (or true, if you want thinking) in every request body'
)


def test_a_model_that_thinks_by_default_without_enable_thinking() -> None:
    message = f"{_THINKS}; nothing was uploaded. Or pass on_default_thinking='warn' to send as is."
    with pytest.raises(ThinkingModeError, match=f"^{re.escape(message)}$"):
        estimator().feed(bare_chat("hi", model="qwen3.5-plus"))


def test_warn_sends_as_is_and_counts_thinking(approximate: None) -> None:
    estimate = estimate_of([bare_chat("hi", model="qwen3.5-plus")], on_default_thinking="warn")
    assert estimate.thinking is True
    assert estimate.warnings[1:] == [
        _THINKS,
        "model 'qwen3.5-plus' is unpriced in region cn-beijing: tokens are counted, cost is not. Give its "
        'real-time price in the connection extra \'models\', e.g. {"qwen3.5-plus": {"prices": '
        '{"cn-beijing": [{"max_input_tokens": null, "input": "<per unit>", "output": "<per unit>"}]}}} (CNY '
        "per 1K tokens in cn-beijing, USD per 1M in ap-southeast-1), or for this task only "
        'prices={"qwen3.5-plus": {"tiers": [...]}}; see docs/models.rst',
    ]
    for explicit in (True, False):  # set: no guard
        assert (
            estimate_of([bare_chat("hi", model="qwen3.5-plus", enable_thinking=explicit)]).thinking
            is explicit
        )


def test_enable_thinking_must_be_a_bool_to_count() -> None:
    with pytest.raises(ThinkingModeError):
        estimator().feed(bare_chat("hi", model="qwen3.5-plus", enable_thinking="false"))


def test_only_the_first_line_is_checked_and_without_counting_only_it_is_read() -> None:
    table, prices = load_price_table("cn-beijing")
    checks = CostEstimator(table, prices, CostPolicy(), source="in.jsonl", count_tokens=False)
    checks.feed(bare_chat("hi"))
    checks.feed(b"not json")  # never read
    assert (checks.requests, checks.model, checks.counting, checks.warnings) == (
        1,
        "qwen-plus",
        "approximation",
        [],
    )
    assert checks.finish() is None
    later = estimator()
    later.feed(bare_chat("hi"))
    later.feed(bare_chat("hi", model="qwen3.5-plus"))  # a later model is not checked again
    assert later.model == "qwen-plus"


def test_a_first_line_without_a_model_checks_nothing(approximate: None) -> None:
    line = {"custom_id": "1", "method": "POST", "url": 5, "body": {"model": 7, "messages": []}}
    estimate = estimate_of([json.dumps(line).encode()])
    assert (estimate.model, estimate.endpoint, estimate.thinking, estimate.price_source) == (
        None,
        None,
        None,
        None,
    )
    assert estimate.input_tokens == 3  # the reply's opening only
    assert estimate.tiers[0].tier == "all"


# ------------------------------------------------------------------------------------------------ output
@pytest.mark.parametrize(
    ("body", "ceiling"),
    [
        ({"max_tokens": 100, "max_completion_tokens": 5}, 100),
        ({"max_completion_tokens": 5}, 5),
        ({"max_tokens": -1, "max_completion_tokens": 5}, 5),  # not a token count: the next one
        ({"max_tokens": True, "max_completion_tokens": 5}, 5),
        ({"max_tokens": 5.0}, 32768),
        ({"max_tokens": 0}, 0),
        ({}, 32768),
    ],
)
def test_the_output_ceiling_of_a_request(approximate: None, body: dict[str, Any], ceiling: int) -> None:
    assert estimate_of([bare_chat("hi", **body)]).output_ceiling_tokens == ceiling


@pytest.mark.parametrize(
    ("body", "ceiling"),
    [
        ({"max_tokens": 100, "thinking_budget": 50}, 150),
        ({"max_tokens": 100}, 100 + 32768),  # no budget: the maximum output again for the reasoning
        ({"max_tokens": 100, "thinking_budget": -5}, 100 + 32768),
        ({"max_tokens": 100, "thinking_budget": 0}, 100 + 32768),
        ({"thinking_budget": 50}, 32768 + 50),
    ],
)
def test_thinking_adds_the_reasoning_budget(approximate: None, body: dict[str, Any], ceiling: int) -> None:
    estimate = estimate_of([bare_chat("hi", enable_thinking=True, **body)])
    assert estimate.output_ceiling_tokens == ceiling
    assert estimate.tiers[0].output_price == Decimal("0.008")


def test_an_unpriced_model_has_no_maximum_output(approximate: None) -> None:
    assert estimate_of([bare_chat("hi", model="m")]).output_ceiling_tokens == 0
    assert (
        estimate_of([bare_chat("hi", model="qwq-x", max_tokens=7)]).output_ceiling_tokens == 7
    )  # thinking, no maximum


def test_embeddings_have_no_output_and_count_only_text_inputs(approximate: None) -> None:
    line = {"custom_id": "1", "method": "POST", "url": "/v1/embeddings"}
    line["body"] = {"model": "text-embedding-v4", "input": ["a" * 40, 5, "b" * 8], "max_tokens": 9}
    single = {**line, "body": {"model": "text-embedding-v4", "input": "c" * 20}}
    other = {**line, "body": {"model": "text-embedding-v4", "input": {"text": "x" * 400}}}
    estimate = estimate_of([json.dumps(x).encode() for x in (line, single, other)], expected_output_tokens=10)
    assert estimate.input_tokens == 10 + 2 + 5  # no template overhead; a non-text input counts nothing
    assert (estimate.output_ceiling_tokens, estimate.expected_output_tokens) == (0, 0)


# --------------------------------------------------------------------------------------------- messages
def test_what_a_message_counts(approximate: None) -> None:
    content = [
        {"type": "text", "text": "a" * 40},
        {"text": "b" * 8},
        {"type": "image_url", "image_url": {"url": "https://x"}},
        "c" * 400,
        {"type": "text", "text": 5},
    ]
    messages = [
        {"role": "system", "content": "d" * 4},
        {"role": 7, "content": content},
        {"content": None},
    ]
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": "qwen-plus", "messages": messages, "tools": [{"f": "e" * 30}], "max_tokens": 1}
    estimate = estimate_of([json.dumps(line).encode()])
    tools = len(json.dumps([{"f": "e" * 30}], ensure_ascii=False)) / 4
    assert estimate.input_tokens == round(1 + 10 + 2 + tools) + 3 + 3 * 4 + 1  # one role is a string
    assert estimate.unestimated_media_requests == 1


def test_a_text_part_of_no_type_or_type_text_is_no_media(approximate: None) -> None:
    content = [{"type": "text"}, {"other": 1}, {"type": None}]
    assert estimate_of([bare_chat(content)]).unestimated_media_requests == 0
    assert (
        estimate_of(
            [bare_chat([{"type": "input_audio"}]), bare_chat([{"type": "video"}])]
        ).unestimated_media_requests
        == 2
    )


def test_unusual_line_shapes_are_read_leniently(approximate: None) -> None:
    shapes = [
        {
            "custom_id": "1",
            "url": "/v1/chat/completions",
            "body": {
                "model": "qwen-plus",
                "messages": ["x", {"role": "user", "content": "a" * 40}],
                "max_tokens": 2,
            },
        },
        {"custom_id": "2", "body": {"model": "qwen-plus", "messages": {"not": "a list"}, "max_tokens": 3}},
        {"custom_id": "3", "body": "not an object"},
        {"custom_id": "4", "body": {"model": "qwen-plus", "messages": [], "tools": {"t": "a" * 36}}},
    ]
    lines = [json.dumps(s).encode() for s in shapes] + [b"[1, 2]"]
    estimate = estimate_of(lines)
    tools = len(json.dumps({"t": "a" * 36})) / 4
    assert estimate.requests == 5
    assert estimate.input_tokens == (3 + 4 + 4 + 1 + 10) + 0 + 0 + (3 + round(tools)) + 0
    assert estimate.output_ceiling_tokens == 2 + 0 + 0 + 32768 + 0
    assert estimate.endpoint == "/v1/chat/completions"
    first_odd = estimate_of([json.dumps(shapes[1]).encode()])
    assert (first_odd.model, first_odd.endpoint) == ("qwen-plus", None)
    assert estimate_of([b"[1, 2]"]).model is None


def test_a_price_note_shows_beside_its_source(approximate: None) -> None:
    prices = {"m": {"note": "unconfirmed", "tiers": [{"input": "1"}]}}
    assert estimate_of([bare_chat("hi", model="m")], prices=prices).price_source == (
        "override (task prices=); note: unconfirmed"
    )


# ------------------------------------------------------------------------------------- sampling, rates
class StandIn:
    """A tokenizer with known rates (``ascii`` per ASCII, ``other`` per other character), so the rates the
    estimate fits on the counted requests can be checked exactly."""

    def __init__(self, ascii: float, other: float) -> None:
        self.ascii, self.other = ascii, other

    def rates_of(self, text: str) -> float:
        a, o = tokens.char_classes(text)
        return self.ascii * a + self.other * o

    def __call__(self, text: str) -> int:
        return round(self.rates_of(text))


def sampled(
    monkeypatch: pytest.MonkeyPatch, encode: StandIn, counted: list[str], scaled: list[str]
) -> CostEstimate:
    """``counted`` texts fill the exactly counted first characters; ``scaled`` are too few to be sampled."""
    monkeypatch.setattr(tokens, "_encoder", encode)
    monkeypatch.setattr(estimate_module, "_EXACT_CHARS", sum(len(t) for t in counted))
    estimate = estimate_of([bare_chat(t, max_tokens=1) for t in [*counted, *scaled]])
    assert (estimate.counting, estimate.exact_requests) == ("tokenizer", len(counted))
    return estimate


def template(encode: StandIn, requests: int) -> int:
    return requests * (3 + 4 + encode("user"))  # the reply's opening, a message, its role (counted)


def test_two_character_classes_are_fitted_each_at_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    encode = StandIn(0.5, 2.0)
    counted = ["a" * 40 + "你" * 10, "a" * 20 + "你" * 30]
    estimate = sampled(monkeypatch, encode, counted, ["a" * 400 + "你" * 100])
    assert encode("user") == 2  # the role through the tokenizer, not the fallback's 1
    assert estimate.input_tokens == template(encode, 3) + 40 + 70 + (200 + 200)


def _one_ratio(counted: list[str], encode: StandIn) -> float:
    """The documented fallback: the approximation scaled by the least-squares ratio of the exact counts."""
    approx = [tokens.approximate_tokens(t) for t in counted]
    return sum(encode(t) * x for t, x in zip(counted, approx, strict=True)) / sum(x * x for x in approx)


@pytest.mark.parametrize(
    ("encode", "counted"),
    [
        pytest.param(StandIn(0.5, 2.0), ["a" * 60, "a" * 40], id="ascii-only"),
        pytest.param(StandIn(0.5, 2.0), ["你" * 60, "你" * 40], id="other-only"),
        pytest.param(StandIn(0.5, 2.0), ["a" * 20 + "你" * 10, "a" * 40 + "你" * 20], id="one-mix"),
        pytest.param(  # a determinant under a billionth of aa * oo: too near one mix to fit two rates
            StandIn(0.5, 2.0),
            ["a" * 20_000 + "你" * 20_000, "a" * 20_000 + "你" * 20_001],
            id="nearly-one-mix",
        ),
        pytest.param(StandIn(0.0, 2.0), ["a" * 20 + "你" * 10, "a" * 10 + "你" * 40], id="ascii-free"),
        pytest.param(StandIn(0.5, 0.0), ["a" * 20 + "你" * 10, "a" * 10 + "你" * 40], id="other-free"),
        pytest.param(StandIn(-0.1, 2.0), ["a" * 20 + "你" * 10, "a" * 10 + "你" * 40], id="negative-fit"),
    ],
)
def test_one_class_a_single_mix_or_a_fit_below_zero_scale_the_approximation(
    monkeypatch: pytest.MonkeyPatch, encode: StandIn, counted: list[str]
) -> None:
    scaled = ["a" * 300, "你" * 30]  # unlike the counted mix: a fit and one ratio price them apart
    estimate = sampled(monkeypatch, encode, counted, scaled)
    ratio = _one_ratio(counted, encode)
    scaled_tokens = round(sum(tokens.approximate_tokens(t) * ratio for t in scaled))  # one tier: rounded once
    expected = sum(encode(t) for t in counted) + scaled_tokens
    assert estimate.input_tokens == template(encode, 4) + expected


def test_without_the_tokenizer_scaled_requests_use_the_fallbacks_rates(approximate: None) -> None:
    estimate = estimate_of([bare_chat("a" * 400 + "你" * 300, max_tokens=1)])
    assert estimate.input_tokens == 8 + 100 + 200
    assert estimate.exact_requests == 0


def test_lenient_lines_keep_every_field(approximate: None) -> None:
    """A line msgspec's typed decoder refuses (a message that is not an object) is read field by field."""
    body = {
        "model": "qwen-plus",
        "messages": ["x", {"role": "user", "content": "a" * 40}],
        "tools": ["b" * 34 + "天气"],  # kept as written: "天气" is 2 characters, not 12 escaped ones
        "enable_thinking": True,
        "max_completion_tokens": 11,
        "thinking_budget": 5,
    }
    line = {"custom_id": "1", "url": "/v1/chat/completions", "body": body}
    estimate = estimate_of([json.dumps(line).encode()])
    assert (estimate.thinking, estimate.endpoint) == (True, "/v1/chat/completions")
    assert estimate.output_ceiling_tokens == 11 + 5
    # the non-object message: overhead only; one request's texts are approximated together
    assert estimate.input_tokens == 3 + 4 + 4 + 1 + round(40 / 4 + 38 / 4 + 2 / 1.5)
    embedding = {
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-v4", "messages": 5, "input": "c" * 8},
    }
    assert estimate_of([json.dumps(embedding).encode()]).input_tokens == 2


def test_a_first_line_whose_body_is_no_object_still_names_the_endpoint(approximate: None) -> None:
    estimate = estimate_of([json.dumps({"url": "/v1/embeddings", "body": "x"}).encode()])
    assert (estimate.endpoint, estimate.model, estimate.input_tokens) == ("/v1/embeddings", None, 0)


def test_every_text_part_of_a_request_is_counted(approximate: None) -> None:
    content = [
        {"type": "text", "text": "你" * 30},
        {"type": "text", "text": "好" * 15},
        {"type": "text", "text": "a" * 8},
    ]
    assert estimate_of([bare_chat(content, max_tokens=1)]).input_tokens == 8 + 20 + 10 + 2


def test_without_expected_output_no_expected_figure_anywhere(approximate: None) -> None:
    estimate = estimate_of([bare_chat("hi", max_tokens=1)])
    tier = estimate.tiers[0]
    assert (estimate.expected_output_tokens, estimate.cost_expected) == (None, None)
    assert (tier.expected_output_tokens, tier.cost_expected) == (None, None)
    assert estimate.cost_ceiling is not None
    unpriced = estimate_of([bare_chat("hi", model="m", max_tokens=1)], expected_output_tokens=5)
    assert (unpriced.expected_output_tokens, unpriced.cost_expected, unpriced.cost_ceiling) == (1, None, None)
    assert (unpriced.tiers[0].cost_expected, unpriced.tiers[0].input_price) == (None, None)


def test_sampling_counts_a_request_when_the_counted_text_falls_under_2_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encode = StandIn(0.5, 2.0)
    counted = ["a" * 40 + "你" * 10, "a" * 20 + "你" * 30]  # 100 characters counted
    monkeypatch.setattr(tokens, "_encoder", encode)
    monkeypatch.setattr(estimate_module, "_EXACT_CHARS", 100)
    e = estimator()
    for text in counted:
        e.feed(bare_chat(text))
    e.feed(bare_chat("a" * 4900))  # 5000 seen: 100 counted is exactly 2 %, not under it
    assert e.exact_requests == 2
    e.feed(bare_chat("a" * 25))  # 5025 seen: 100 is under 2 % (100.5), this one is counted
    assert e.exact_requests == 3
    e.feed(bare_chat("你" * 10))
    assert e.exact_requests == 3  # 125 of 5035: 2.5 %


@pytest.mark.parametrize(("chars", "exact"), [(131_072, 3), (131_068, 2)])
def test_a_request_near_the_first_tier_boundary_is_always_counted(
    monkeypatch: pytest.MonkeyPatch, chars: int, exact: int
) -> None:
    """An approximation of a quarter of the first tier's 128K tokens or more is counted, not scaled."""
    encode = StandIn(0.5, 2.0)
    monkeypatch.setattr(tokens, "_encoder", encode)
    monkeypatch.setattr(estimate_module, "_EXACT_CHARS", 5000)  # enough that no later request is sampled
    e = estimator()
    for text in ["a" * 2000 + "你" * 500, "a" * 1000 + "你" * 1500]:
        e.feed(bare_chat(text))
    e.feed(bare_chat("a" * chars))
    assert e.exact_requests == exact
    e.feed(bare_chat("你" * (chars // 4 * 3 // 2)))  # 1.5 other characters per token: the same approximation
    assert e.exact_requests == exact + (exact - 2)


def test_a_scaled_request_is_put_in_the_tier_of_its_approximation(approximate: None) -> None:
    estimate = estimate_of([bare_chat("a" * 600_000, max_tokens=1)])
    assert [(t.tier, t.input_tokens) for t in estimate.tiers] == [("128K-256K", 150_008)]


def test_a_region_with_a_batch_list_accepts_the_models_on_it(approximate: None) -> None:
    assert estimate_of([bare_chat("hi")], region="ap-southeast-1").model == "qwen-plus"


@pytest.mark.parametrize(
    ("tiers", "exact"),
    [
        ([{"max_input_tokens": 400, "input": 1}, {"max_input_tokens": None, "input": 2}], 3),  # 100 or more
        ([{"max_input_tokens": 400, "input": 1}], 2),  # one tier: no boundary to guard
        ([{"max_input_tokens": None, "input": 1}, {"max_input_tokens": None, "input": 2}], 2),
    ],
)
def test_the_boundary_guard_needs_a_bounded_first_of_several_tiers(
    monkeypatch: pytest.MonkeyPatch, tiers: list[dict[str, Any]], exact: int
) -> None:
    monkeypatch.setattr(tokens, "_encoder", StandIn(0.5, 2.0))
    monkeypatch.setattr(estimate_module, "_EXACT_CHARS", 5000)
    e = estimator(prices={"m": {"tiers": tiers}})
    for text in ["a" * 2000 + "你" * 500, "a" * 1000 + "你" * 1500]:
        e.feed(bare_chat(text, model="m"))
    e.feed(bare_chat("a" * 400, model="m"))  # approximately 100 tokens, a quarter of 400
    assert e.exact_requests == exact
