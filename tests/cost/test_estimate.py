"""CostEstimator: per-request tiers, output ceiling and expectation, sampling, the fallback's labels."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.cost import estimate as estimate_module
from airflow_provider_dashscope_batch.cost import tokens
from airflow_provider_dashscope_batch.cost.budget import APPROXIMATION_LABEL, BudgetExceededError, CostPolicy
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
    assert "no price for model 'qwen-vl-max'" in estimate.table()


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
