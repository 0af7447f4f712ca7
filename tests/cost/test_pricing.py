"""The price table read from the model catalog: sources, tiers, regions, task overrides and thinking."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.catalog import shipped_catalog
from airflow_provider_dashscope_batch.cost.pricing import load_price_table, region_of


def test_shipped_prices_cite_their_sources_and_date():
    table, region = load_price_table("cn-beijing")
    assert table.retrieved == "2026-12"
    assert table.batch_discount == Decimal("0.5")
    plus = region.models["qwen-plus"]
    assert [t.input for t in plus.tiers] == [Decimal("0.0008"), Decimal("0.0024"), Decimal("0.0048")]
    assert [t.thinking_output for t in plus.tiers] == [Decimal("0.008"), Decimal("0.024"), Decimal("0.064")]
    assert "help.aliyun.com" in table.source_of(plus)
    assert "read 2026-12-01" in table.source_of(plus)
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


def test_regions_follow_the_catalog():
    intl = load_price_table("ap-southeast-1")[1]
    assert (intl.currency, intl.per_tokens) == ("USD", 1_000_000)
    assert intl.batch_models == ["batch-test-model", "qwen-max", "qwen-plus", "qwen-turbo"]
    assert not intl.offers_in_batch("qwen-long")
    assert not intl.offers_in_batch("qwen-flash")  # the newest guide dropped it from Singapore
    beijing = load_price_table("cn-beijing")[1]
    assert beijing.offers_in_batch("qwen-long")
    assert not beijing.offers_in_batch("qwen-turbo")  # its model page: not in Beijing
    assert beijing.offers_in_batch("qwen9-plus")  # unknown: not refused


def test_a_connection_catalog_then_task_prices():
    catalog = shipped_catalog().with_overrides(
        {"qwen9-plus": {"prices": {"cn-beijing": [{"max_input_tokens": None, "input": "9", "output": "9"}]}}}
    )
    table, region = load_price_table(
        "cn-beijing", catalog=catalog, task_prices='{"x": {"tiers": [{"input": 1}]}}'
    )
    assert region.models["qwen9-plus"].tiers[0].input == Decimal(9)
    assert "connection extra 'models'" in table.source_of(region.models["qwen9-plus"])
    assert region.models["x"].tiers[0].input == Decimal(1)
    assert region.models["x"].tiers[0].thinking_output == Decimal(0)
    assert table.source_of(region.models["x"]) == "override (task prices=)"


def test_malformed_task_prices_show_the_expected_shape():
    with pytest.raises(ValueError, match='"tiers"'):
        load_price_table("cn-beijing", task_prices={"x": {"input": 1}})
    with pytest.raises(ValueError, match="not valid JSON"):
        load_price_table("cn-beijing", task_prices="{nope")
    with pytest.raises(ValueError, match="must be a JSON object of model -> price, got list"):
        load_price_table("cn-beijing", task_prices="[1]")


def test_thinking_follows_the_catalog():
    table = load_price_table("cn-beijing")[0]
    assert table.thinking("qwen3.5-plus", None) is True
    assert table.thinking("qwen3.6-flash", None) is True
    assert table.thinking("qwen3.7-max", None) is True
    assert table.thinking("qwen3.7-max", False) is False
    assert table.thinking("qwen-plus", None) is False
    assert table.thinking("qwen-plus", True) is True
    assert table.thinking("qwq-plus", False) is True
    assert table.thinking("qwen9-plus", None) is False  # unknown: thinks only when asked
    assert table.thinking("qwen9-plus", True) is True
    assert table.model_thinks_by_default("qwen3.7-max")
    assert not table.model_thinks_by_default("deepseek-r1")
    assert table.model_always_thinks("deepseek-r1")
    assert not table.model_always_thinks("qwen9-plus")


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
