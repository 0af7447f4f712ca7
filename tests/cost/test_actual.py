"""CostMeter: the billed cost of successful requests, each at its own tier and mode."""

from __future__ import annotations

from decimal import Decimal

from airflow_provider_dashscope_batch.cost.actual import ActualCost, CostMeter
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.results.lines import UsageTotals


def test_each_request_at_its_own_tier_and_thinking_price():
    meter = CostMeter(*load_price_table("cn-beijing"))
    meter.add("qwen-plus", 1000, 100)
    meter.add("qwen-plus", 200_000, 100)
    meter.add("qwen-plus", 1000, 100, reasoning=60)
    meter.add("unknown-model", 10, 10)
    cost = meter.result()
    by = {(t.tier, t.thinking): t for t in cost.tiers if t.model == "qwen-plus"}
    half = Decimal("0.5") / 1000
    assert by[("<=128K", False)].cost == (1000 * Decimal("0.0008") + 100 * Decimal("0.002")) * half
    assert by[("128K-256K", False)].cost == (200_000 * Decimal("0.0024") + 100 * Decimal("0.02")) * half
    assert by[("<=128K", True)].cost == (1000 * Decimal("0.0008") + 100 * Decimal("0.008")) * half
    assert cost.unpriced_models == ["unknown-model"]
    assert cost.requests == 4
    assert cost.reasoning_tokens == 60
    assert cost.cost == sum(t.cost for t in by.values())


def test_usage_totals_feed_the_meter_from_raw_lines():
    meter = CostMeter(*load_price_table("cn-beijing"))
    usage = UsageTotals(meter=meter)
    usage.add(
        b'{"custom_id":"1","response":{"status_code":200,"body":{"model":"qwen-plus","usage":'
        b'{"prompt_tokens":10,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":3}}}}}'
    )
    usage.add(
        b'{"custom_id":"2","response":{"status_code":400,"body":{"error":{"code":"x"}}},"error":{"code":"x"}}'
    )
    assert usage.reasoning_tokens == 3
    cost = meter.result()
    assert cost.requests == 1
    assert cost.tiers[0].thinking is True


def test_totals_merge_shards():
    meter = CostMeter(*load_price_table("cn-beijing"))
    meter.add("qwen-plus", 10, 10)
    one = meter.result()
    total = ActualCost.total([one, one])
    assert total.requests == 2
    assert total.cost == 2 * one.cost
    assert len(total.tiers) == 1
