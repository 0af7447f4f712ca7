"""The transfer's XCom of actual costs: its JSON shape, read back leniently, summed per job."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.cost.recorded import RecordedCost, costs_xcom, parse_costs_xcom


def _actual(*models: str):
    meter = CostMeter(*load_price_table("cn-beijing"))
    for model in models:
        meter.add(model, 1000, 100)
    return meter.result()


def test_the_xcom_is_small_json_keyed_by_batch_id_with_the_exact_amount():
    cost = _actual("qwen-plus", "qwen-plus")
    value = costs_xcom({"batch_a": cost})
    assert value == {
        "batch_a": {
            "cost": str(cost.cost),
            "currency": "CNY",
            "requests": 2,
            "input_tokens": 2000,
            "output_tokens": 200,
            "complete": True,
        }
    }
    assert json.loads(json.dumps(value)) == value  # JSON only: nothing for a serialiser to guess
    read = parse_costs_xcom(json.loads(json.dumps(value)))["batch_a"]
    assert read.amount == cost.cost > 0
    assert Decimal(read.shown().removesuffix(" CNY")) == cost.cost.quantize(Decimal("0.000001"))


@pytest.mark.parametrize(
    ("amount", "shown"),
    [("1.23", "1.23 CNY"), ("12", "12.00 CNY"), ("0.000048", "0.000048 CNY"), ("0.1000001", "0.10 CNY")],
)
def test_an_amount_is_shown_to_the_micro_unit_with_two_decimals_at_least(amount, shown):
    assert RecordedCost(Decimal(amount), "CNY", 1, 1, 1).shown() == shown


def test_a_model_without_a_price_makes_the_cost_a_lower_bound():
    read = parse_costs_xcom(costs_xcom({"batch_a": _actual("qwen-plus", "no-such-model")}))["batch_a"]
    assert read.complete is False
    assert read.shown().startswith("≥ ")


SHAPE = {"cost": "1", "currency": "CNY", "requests": 1, "input_tokens": 1, "output_tokens": 1}
SHAPE["complete"] = True


@pytest.mark.parametrize(
    "entry",
    [
        "1.00 CNY",
        {**SHAPE, "cost": 1.5},
        {**SHAPE, "cost": "1e9"},
        {**SHAPE, "currency": "<b>"},
        {**SHAPE, "requests": -1},
        {**SHAPE, "requests": True},
        {**SHAPE, "complete": 1},
        {"cost": "1", "currency": "CNY"},
    ],
)
def test_an_entry_of_another_shape_is_left_out(entry):
    good = costs_xcom({"batch_good": _actual("qwen-plus")})
    assert set(parse_costs_xcom({**good, "batch_bad": entry})) == {"batch_good"}


def test_anything_but_a_mapping_of_batch_ids_reads_as_no_costs():
    good = costs_xcom({"batch_good": _actual("qwen-plus")})["batch_good"]
    assert parse_costs_xcom([good]) == {}
    assert parse_costs_xcom("x") == {}
    assert parse_costs_xcom({"../etc": good, 3: good}) == {}


def test_a_jobs_total_needs_every_batchs_cost_in_one_currency():
    one = RecordedCost(Decimal("1.25"), "CNY", 2, 20, 4)
    two = RecordedCost(Decimal("0.5"), "CNY", 1, 10, 2, complete=False)
    total = RecordedCost.total([one, two])
    assert total == RecordedCost(Decimal("1.75"), "CNY", 3, 30, 6, complete=False)
    assert RecordedCost.total([one, None]) is None
    assert RecordedCost.total([one, RecordedCost(Decimal(1), "USD", 1, 1, 1)]) is None
    assert RecordedCost.total([]) is None
