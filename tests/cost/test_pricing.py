"""The price table read from the model catalog: sources, tiers, regions, task overrides and thinking."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_dashscope_batch.catalog import PriceTier, shipped_catalog
from airflow_provider_dashscope_batch.cost.pricing import (
    ModelKind,
    ModelPrice,
    load_price_table,
    region_of,
)


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


# Tier bounds and labels, the shipped table field by field, each override's defaults and merge order, every
# malformed price and extra with its exact message, the region a connection names.
_SHAPE = (
    '; give {"max_output_tokens": 32768, "tiers": [{"max_input_tokens": null, '
    '"input": "0.0008", "output": "0.002", "thinking_output": "0.008"}]}'
)


def tier(limit: int | None) -> PriceTier:
    return PriceTier(limit, Decimal(1), Decimal(2), Decimal(3))


@pytest.mark.parametrize(
    ("limit", "lower", "label"),
    [
        (None, 0, "all"),
        (None, 262144, ">256K"),
        (131072, 0, "<=128K"),
        (262144, 131072, "128K-256K"),
        (1000, 0, "<=1000"),  # not a whole number of K: the tokens themselves
        (2048, 1000, "1000-2K"),
        (1023, 0, "<=1023"),
        (1025, 0, "<=1025"),
    ],
)
def test_tier_labels(limit: int | None, lower: int, label: str) -> None:
    assert tier(limit).label(lower) == label


def test_tier_of_and_lower_bound_at_each_boundary() -> None:
    price = ModelPrice("m", ModelKind.CHAT, (tier(10), tier(20)))
    assert [price.tier_of(n) for n in (0, 10, 11, 20, 21, 10**9)] == [0, 0, 1, 1, 1, 1]  # past all: the last
    assert [price.lower_bound(i) for i in (0, 1)] == [0, 10]
    unbounded = ModelPrice("m", ModelKind.CHAT, (tier(10), tier(None)))
    assert unbounded.tier_of(10**9) == 1
    assert unbounded.lower_bound(1) == 10
    assert ModelPrice("m", ModelKind.CHAT, (tier(None), tier(None))).lower_bound(1) == 0
    assert (price.max_output_tokens, price.source, price.note) == (None, "", None)


def test_an_unknown_region_has_no_prices() -> None:
    table, region = load_price_table("eu-central-1")
    assert (region.region, region.currency, region.per_tokens, dict(region.models)) == (
        "eu-central-1",
        "?",
        1_000_000,
        {},
    )
    assert region.offers_in_batch("qwen9-plus")
    assert not region.offers_in_batch("qwen-plus")  # the catalog lists its regions
    price = {"tiers": [{"input": "2"}]}
    table, region = load_price_table("eu-central-1", task_prices={"m": price})
    assert list(region.models) == ["m"]
    assert table.overridden == ("m",)


def test_task_price_defaults() -> None:
    task = {
        "text-embedding-v4": {"tiers": [{"input": 3}]},
        "b": {
            "kind": "embedding",
            "max_output_tokens": "7",
            "source": 5,
            "note": "n",
            "tiers": [{"input": 3}],
        },
        "qwen-plus": {"tiers": [{"input": 1, "output": "2"}]},
    }
    table, region = load_price_table("ap-southeast-1", task_prices=task)
    plus, b = region.models["qwen-plus"], region.models["b"]
    assert plus.tiers == (PriceTier(None, Decimal(1), Decimal(2), Decimal(2)),)  # thinking output: the output
    assert (plus.kind, plus.max_output_tokens) == (ModelKind.CHAT, 32768)  # the catalog's maximum output
    assert region.models["text-embedding-v4"].kind is ModelKind.EMBEDDING  # the catalog's endpoint
    assert (b.kind, b.max_output_tokens, b.source, b.note) == (ModelKind.EMBEDDING, 7, "5", "n")
    assert "qwen-max" in region.models  # the catalog's prices stay
    assert table.regions["cn-beijing"].models["qwen-plus"].tiers[0].input == Decimal("0.0008")


def test_tier_limits_are_integers() -> None:
    region = load_price_table(
        "cn-beijing", task_prices={"m": {"tiers": [{"max_input_tokens": "8", "input": 1}]}}
    )[1]
    assert region.models["m"].tiers[0].max_input_tokens == 8


@pytest.mark.parametrize("empty", [None, "", {}, "{}"])
def test_no_override(empty: Any) -> None:
    table, region = load_price_table("cn-beijing", task_prices=empty)
    assert table.overridden == ()
    assert region == load_price_table("cn-beijing")[1]


@pytest.mark.parametrize(
    ("price", "error"),
    [
        ({"input": 1}, "KeyError('tiers')"),
        ({"tiers": []}, "ValueError('prices of a region must be a non-empty list of tiers')"),
        ({"tiers": [{"output": 1}]}, "KeyError('input')"),
        ({"tiers": [{"input": "x"}]}, "InvalidOperation([<class 'decimal.ConversionSyntax'>])"),
        ({"kind": "image", "tiers": [{"input": 1}]}, "ValueError(\"'image' is not a valid ModelKind\")"),
        ({"tiers": [{"input": 1, "max_input_tokens": "many"}]}, None),
        ({"max_output_tokens": "lots", "tiers": [{"input": 1}]}, None),
        (5, "TypeError('not an object')"),
    ],
)
def test_a_malformed_price_names_the_model_and_the_shape(price: Any, error: str | None) -> None:
    shown = re.escape(error) if error else r"ValueError\(.*\)"
    with pytest.raises(
        ValueError, match=f"^price of model 'x' is malformed \\({shown}\\){re.escape(_SHAPE)}$"
    ) as info:
        load_price_table("cn-beijing", task_prices={"x": price})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("extra", "base_url", "region"),
    [
        (None, None, "cn-beijing"),
        ({"region": "mars-1"}, None, "cn-beijing"),  # not in the table: read the URL instead
        ({"region": "mars-1", "base_url": "https://dashscope-intl.aliyuncs.com/v1"}, None, "ap-southeast-1"),
        ({"region": ""}, "https://dashscope-intl.aliyuncs.com/v1", "ap-southeast-1"),
        ({"extra__dashscope__base_url": "https://dashscope-intl.aliyuncs.com/v1"}, None, "ap-southeast-1"),
        (
            {"base_url": "https://dashscope-intl.aliyuncs.com/v1"},
            "https://dashscope.aliyuncs.com/v1",
            "cn-beijing",
        ),
        ({}, "https://x.ap-southeast-1.maas.aliyuncs.com/v1", "ap-southeast-1"),
        ({}, "https://ap-southeast-1.example.com/v1", "ap-southeast-1"),
        ({}, "https://xap-southeast-1.example.com/v1", "cn-beijing"),  # a whole label of the host
        ({}, "https://dashscope-intl/v1", "ap-southeast-1"),
        ({}, "not a url", "cn-beijing"),
        ({"region": "ap-southeast-1"}, "https://dashscope.aliyuncs.com/v1", "ap-southeast-1"),
    ],
)
def test_region_of_at_its_edges(extra: dict[str, Any] | None, base_url: str | None, region: str) -> None:
    assert region_of(extra, base_url) == region
