"""The cost figure a batch carries in its metadata: written compactly, read back, summed only when alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_dashscope_batch.cost.label import ESTIMATE_METADATA_KEY, CostFigure


def test_a_label_reads_back_as_the_same_figure():
    figure = CostFigure(Decimal("12.345678"), "CNY", "ceiling")
    assert figure.label() == "12.3457 CNY ceiling"
    assert CostFigure.of_metadata({ESTIMATE_METADATA_KEY: figure.label()}) == CostFigure(
        Decimal("12.3457"), "CNY", "ceiling"
    )


@pytest.mark.parametrize("text", [None, 12, "", "12 CNY", "12.0 cny ceiling", "1e9 USD expected", "x" * 600])
def test_anything_else_is_no_figure(text):
    assert CostFigure.parse(text) is None


def test_figures_sum_only_in_one_currency_and_basis():
    a, b = CostFigure(Decimal(1), "USD", "expected"), CostFigure(Decimal(2), "USD", "expected")
    assert CostFigure.total([a, b]) == CostFigure(Decimal(3), "USD", "expected")
    assert CostFigure.total([a, None]) is None
    assert CostFigure.total([a, CostFigure(Decimal(2), "CNY", "expected")]) is None
    assert CostFigure.total([a, CostFigure(Decimal(2), "USD", "ceiling")]) is None
    assert CostFigure.total([]) is None
