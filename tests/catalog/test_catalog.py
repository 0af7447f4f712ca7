"""The shipped model catalog read as data: every entry cites a page and a date, and the overrides merge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.catalog import (
    OVERRIDE_SOURCE,
    Modality,
    Thinking,
    connection_catalog,
    shipped_catalog,
)


def test_every_entry_cites_a_public_page_and_the_date_it_was_read():
    catalog = shipped_catalog()
    assert catalog.models
    for entry in catalog.models.values():
        assert entry.sources, entry.name
        for source in entry.sources:
            assert source.url.startswith("https://"), entry.name
            assert source.read.startswith("2026-12"), entry.name
        for region, tiers in entry.prices.items():
            assert region in catalog.regions
            assert tiers
            assert all(t.input >= 0 for t in tiers)


def test_the_newest_guide_read_as_data():
    catalog = shipped_catalog()
    assert catalog.get("qwen3.6-plus").reads_images
    assert catalog.get("qwen3.6-plus").thinking is Thinking.BY_DEFAULT
    assert catalog.get("qwen3.7-max").thinking is Thinking.BY_DEFAULT
    assert catalog.get("qwen3.7-max").context_tokens == 262144
    assert catalog.get("qwq-plus").thinking is Thinking.ALWAYS
    assert catalog.get("qwen-vl-ocr").modalities == {Modality.TEXT, Modality.IMAGE}
    assert not catalog.get("qwen-turbo").batchable_in("cn-beijing")
    assert catalog.get("qwen-turbo").batchable_in("ap-southeast-1")
    assert catalog.batchable("ap-southeast-1") == ["batch-test-model", "qwen-max", "qwen-plus", "qwen-turbo"]
    assert catalog.region("cn-beijing").completion_notifications
    assert not catalog.region("ap-southeast-1").completion_notifications
    assert not catalog.region("eu-central-1").completion_notifications
    assert catalog.get("text-embedding-v2").embedding.max_inputs == 25
    assert catalog.get("qwen3-max").prices["cn-beijing"][0].input == Decimal("0.0025")
    assert catalog.get("qwen9-plus") is None


def test_a_connection_adds_a_model_and_overrides_one_field_of_another():
    catalog = connection_catalog(
        {
            "models": '{"qwen9-plus": {"thinking": "by_default", "prices": {"cn-beijing": [{"input": "1"}]}},'
            ' "qwen-flash": {"regions": ["cn-beijing", "ap-southeast-1"]}}'
        }
    )
    added = catalog.get("qwen9-plus")
    assert (added.endpoint, added.regions) == ("/v1/chat/completions", None)
    assert added.thinking is Thinking.BY_DEFAULT
    assert added.sources == (OVERRIDE_SOURCE,)
    assert added.prices["cn-beijing"][0].thinking_output == Decimal(0)  # the output price's
    flash = catalog.get("qwen-flash")
    assert flash.batchable_in("ap-southeast-1")
    assert flash.prices == shipped_catalog().get("qwen-flash").prices  # the rest stays
    assert flash.sources[-1] is OVERRIDE_SOURCE
    assert catalog.overridden == {"qwen9-plus", "qwen-flash"}
    assert connection_catalog({}) is shipped_catalog()
    assert connection_catalog({"extra__dashscope__models": {"x": {}}}).get("x") is not None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "connection extra 'models' is not valid JSON"),
        ("[1]", "connection extra 'models' must be a JSON object of model -> entry, got list"),
        ({"m": 1}, "connection extra 'models': model 'm' must be a JSON object of entry fields"),
        ({"m": {"thinking": "sometimes"}}, "model 'm' is malformed ('sometimes' is not a valid Thinking)"),
        ({"m": {"colour": "red"}}, "model 'm' is malformed (unknown field(s) colour)"),
        ({"m": {"prices": {"cn-beijing": []}}}, "non-empty list of tiers"),
    ],
)
def test_a_malformed_override_says_which_model_and_why(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        connection_catalog({"models": raw})
