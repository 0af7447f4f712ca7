"""The shipped price table, its overrides, regions and thinking rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.cost.pricing import load_price_table, region_of


def test_shipped_table_cites_its_sources_and_date():
    table, region = load_price_table("cn-beijing")
    assert table.retrieved == "2026-12-01"
    assert table.batch_discount == Decimal("0.5")
    plus = region.models["qwen-plus"]
    assert [t.input for t in plus.tiers] == [Decimal("0.0008"), Decimal("0.0024"), Decimal("0.0048")]
    assert [t.thinking_output for t in plus.tiers] == [Decimal("0.008"), Decimal("0.024"), Decimal("0.064")]
    assert "help.aliyun.com" in table.source_of(plus)
    assert region.currency == "CNY"
    assert region.per_tokens == 1000


def test_tiers_by_the_requests_own_input():
    plus = load_price_table("cn-beijing")[1].models["qwen-plus"]
    assert [plus.tier_of(n) for n in (1, 131072, 131073, 262144, 262145, 5_000_000)] == [0, 0, 1, 1, 2, 2]
    assert [plus.tiers[i].label(plus.lower_bound(i)) for i in range(3)] == [
        "<=128K",
        "128K-256K",
        "256K-1024K",
    ]


def test_international_region_offers_four_models_in_batch_and_prices_in_usd():
    region = load_price_table("ap-southeast-1")[1]
    assert region.currency == "USD"
    assert region.per_tokens == 1_000_000
    assert all(region.offers_in_batch(m) for m in ("qwen-max", "qwen-plus", "qwen-flash", "qwen-turbo"))
    assert not region.offers_in_batch("qwen-long")
    assert load_price_table("cn-beijing")[1].offers_in_batch("qwen-long")


def test_overrides_connection_then_task():
    price = {"tiers": [{"max_input_tokens": None, "input": "9", "output": "9"}]}
    table, region = load_price_table(
        "cn-beijing",
        connection_prices={"qwen-plus": price, "x": price},
        task_prices='{"x": {"tiers": [{"input": 1}]}}',
    )
    assert region.models["qwen-plus"].tiers[0].input == Decimal(9)
    assert region.models["x"].tiers[0].input == Decimal(1)
    assert region.models["x"].tiers[0].thinking_output == Decimal(0)
    assert "override" in table.source_of(region.models["x"])


def test_malformed_override_shows_the_expected_shape():
    with pytest.raises(ValueError, match='"tiers"'):
        load_price_table("cn-beijing", task_prices={"x": {"input": 1}})
    with pytest.raises(ValueError, match="not valid JSON"):
        load_price_table("cn-beijing", connection_prices="{nope")


def test_thinking_rules():
    table = load_price_table("cn-beijing")[0]
    assert table.thinking("qwen3.5-plus", None) is True
    assert table.thinking("qwen3.5-plus", False) is False
    assert table.thinking("qwen-plus", None) is False
    assert table.thinking("qwq-plus", False) is True


@pytest.mark.parametrize(
    ("extra", "region"),
    [
        ({}, "cn-beijing"),
        ({"region": "ap-southeast-1", "base_url": "http://127.0.0.1:1/v1"}, "ap-southeast-1"),
        ({"base_url": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"}, "ap-southeast-1"),
        ({"base_url": "https://ws1.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1"}, "ap-southeast-1"),
        ({"extra__dashscope__region": "cn-beijing"}, "cn-beijing"),
    ],
)
def test_region_of_a_connection(extra, region):
    assert region_of(extra) == region
