"""CostMeter: the billed cost of successful requests, each at its own tier and mode."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from airflow_provider_dashscope_batch.cost.actual import ActualCost, ActualTier, CostMeter
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


# Every field of a tier and of the total, rounding, requests without a model or a price, thinking-only
# models, merging shards and the log line.
def meter(region: str = "cn-beijing") -> CostMeter:
    return CostMeter(*load_price_table(region))


def test_one_tier_field_by_field_rounded_to_a_millionth() -> None:
    m = meter()
    m.add("qwen-plus", 1, 1)
    m.add("qwen-plus", 2, 3)
    cost = m.result()
    price = (3 * Decimal("0.0008") + 4 * Decimal("0.002")) * Decimal("0.5") / 1000  # 0.0000052
    assert cost.tiers == [
        ActualTier(
            model="qwen-plus",
            tier="<=128K",
            thinking=False,
            requests=2,
            input_tokens=3,
            output_tokens=4,
            reasoning_tokens=0,
            cost=price.quantize(Decimal("0.000001")),
        )
    ]
    assert cost.tiers[0].cost == Decimal("0.000005")
    assert cost == ActualCost(
        region="cn-beijing",
        currency="CNY",
        requests=2,
        input_tokens=3,
        output_tokens=4,
        reasoning_tokens=0,
        cost=Decimal("0.000005"),
        unpriced_models=[],
        tiers=cost.tiers,
        batch_discount=Decimal("0.5"),
        price_table_date="2026-12",
    )


def test_a_request_without_a_model_or_a_price_counts_its_tokens_but_no_cost() -> None:
    m = meter()
    m.add(None, 10, 5)
    m.add("", 1, 1)
    m.add("nobody", 1_000_000, 7, reasoning=2)
    m.add("qwen-plus", 10, 10)
    cost = m.result()
    by = {t.model: t for t in cost.tiers}
    assert [t.model for t in cost.tiers] == ["?", "nobody", "qwen-plus"]  # sorted
    assert (by["?"].requests, by["?"].input_tokens, by["?"].tier, by["?"].cost) == (2, 11, "all", None)
    assert (by["nobody"].tier, by["nobody"].thinking, by["nobody"].reasoning_tokens) == ("all", True, 2)
    assert cost.unpriced_models == ["?", "nobody"]
    assert (cost.requests, cost.input_tokens, cost.output_tokens, cost.reasoning_tokens) == (
        4,
        1_000_021,
        23,
        2,
    )
    assert cost.cost == by["qwen-plus"].cost  # the unpriced add nothing
    assert cost.cost > 0


def test_a_thinking_only_model_pays_the_thinking_price_without_reasoning_tokens() -> None:
    prices = {"qwq-plus": {"tiers": [{"input": "1", "output": "2", "thinking_output": "4"}]}}
    m = CostMeter(*load_price_table("cn-beijing", task_prices=prices))
    m.add("qwq-plus", 1000, 1000)
    tier = m.result().tiers[0]
    assert tier.thinking is True
    assert tier.cost == (1000 * 1 + 1000 * 4) * Decimal("0.5") / 1000


def test_one_reasoning_token_is_thinking_mode() -> None:
    m = meter()
    m.add("qwen-plus", 1000, 100, reasoning=1)
    m.add("qwen-plus", 1000, 100, reasoning=0)
    assert [(t.thinking, t.requests) for t in m.result().tiers] == [(False, 1), (True, 1)]


def test_the_region_and_its_unit_price_the_cost() -> None:
    m = meter("ap-southeast-1")
    m.add("qwen-plus", 1_000_000, 0)
    cost = m.result()
    assert (cost.region, cost.currency) == ("ap-southeast-1", "USD")
    price = load_price_table("ap-southeast-1")[1].models["qwen-plus"].tiers[0].input
    assert cost.cost == price * Decimal("0.5")


def test_an_empty_meter_costs_nothing() -> None:
    cost = meter().result()
    assert (cost.requests, cost.cost, cost.tiers, cost.unpriced_models) == (0, Decimal(0), [], [])
    assert ActualCost.total([]) is None


def test_merging_shards_sums_each_tier_and_keeps_unpriced_ones_unpriced() -> None:
    a, b = meter(), meter()
    a.add("qwen-plus", 10, 10)
    a.add("x", 1, 1)
    b.add("qwen-plus", 20, 30, reasoning=0)
    b.add("qwen-plus", 10, 10, reasoning=5)
    b.add("y", 2, 2)
    b.add("x", 3, 3, reasoning=1)
    first, second = a.result(), b.result()
    total = ActualCost.total([first, second])
    assert total is not None
    by = {(t.model, t.thinking): t for t in total.tiers}
    plus = by[("qwen-plus", False)]
    assert (plus.requests, plus.input_tokens, plus.output_tokens, plus.reasoning_tokens) == (2, 30, 40, 0)
    assert plus.cost == first.tiers[0].cost + second.tiers[0].cost
    assert by[("qwen-plus", True)] == second.tiers[1]  # in one shard only: as it was
    assert by[("x", False)].cost is None
    assert (by[("x", True)].requests, by[("x", True)].reasoning_tokens) == (1, 1)
    assert total.unpriced_models == ["x", "y"]
    assert (total.requests, total.input_tokens, total.output_tokens, total.reasoning_tokens) == (6, 46, 56, 6)
    assert total.cost == first.cost + second.cost
    assert (total.region, total.currency, total.batch_discount, total.price_table_date) == (
        "cn-beijing",
        "CNY",
        Decimal("0.5"),
        "2026-12",
    )
    unpriced_twice = ActualCost.total([first, first])
    assert unpriced_twice is not None
    merged = {t.model: t for t in unpriced_twice.tiers}
    assert (merged["x"].requests, merged["x"].input_tokens, merged["x"].output_tokens) == (2, 2, 2)
    assert merged["x"].cost is None


def test_the_total_of_one_shard_is_that_shard() -> None:
    m = meter()
    m.add("qwen-plus", 10, 10)
    one = m.result()
    assert ActualCost.total(iter([one])) == one


def test_summary_line() -> None:
    m = meter()
    m.add("qwen-plus", 1234, 5678, reasoning=1000)
    cost = m.result()
    assert cost.summary() == (
        f"actual cost {cost.cost:.4f} CNY at the batch price for 1 successful request(s): "
        "1,234 input, 5,678 output (1,000 reasoning) tokens"
    )
    m.add("b", 1, 1)
    m.add("a", 1, 1)
    assert m.result().summary().endswith("tokens; not priced (no price in the table): a, b")


def test_reasoning_tokens_add_up_in_a_tier_and_across_shards() -> None:
    m = meter()
    m.add("qwen-plus", 10, 10, reasoning=1)
    m.add("qwen-plus", 10, 10, reasoning=2)
    one = m.result()
    assert one.tiers[0].reasoning_tokens == 3
    total = ActualCost.total([one, one])
    assert total is not None
    assert total.tiers[0].reasoning_tokens == 6


def test_a_model_priced_in_one_shard_only_has_no_merged_cost() -> None:
    unpriced = meter()
    unpriced.add("m", 10, 10)
    priced = CostMeter(*load_price_table("cn-beijing", task_prices={"m": {"tiers": [{"input": "1"}]}}))
    priced.add("m", 10, 10)
    total = ActualCost.total([unpriced.result(), priced.result()])
    assert total is not None
    assert [(t.tier, t.requests, t.cost) for t in total.tiers] == [("all", 2, None)]


def test_the_tables_batch_discount_is_reported() -> None:
    table, region = load_price_table("cn-beijing")
    m = CostMeter(replace(table, catalog=replace(table.catalog, batch_discount=Decimal("0.4"))), region)
    m.add("qwen-plus", 1000, 0)
    cost = m.result()
    assert cost.batch_discount == Decimal("0.4")
    assert cost.cost == Decimal("0.0008") * Decimal("0.4")
    total = ActualCost.total([cost])
    assert total is not None
    assert total.batch_discount == Decimal("0.4")
