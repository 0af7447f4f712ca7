"""CostEstimate's table and CostPolicy's rules, on values built by hand (estimates: test_estimate*.py).

Found by mutation testing (``.ci/mutation estimate``, before the estimate's figures and policy became
``cost/budget.py``): each test pins a behaviour a changed constant or condition would break.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_dashscope_batch.cost.budget import CostEstimate, CostPolicy


def test_the_table_of_a_tokenizer_count_with_media_and_no_price() -> None:
    base = dict(
        source="s.jsonl",
        model="m",
        endpoint=None,
        region="r",
        currency="USD",
        thinking=True,
        counting="tokenizer",
        requests=1234,
        exact_requests=1000,
        input_tokens=5,
        output_ceiling_tokens=6,
        expected_output_tokens=None,
        unestimated_media_requests=1500,
        tiers=[],
        cost_ceiling=None,
        cost_expected=None,
        batch_discount=Decimal("0.75"),
        price_source=None,
        price_table_date="d",
        warnings=["w1", "w2"],
    )
    estimate = CostEstimate(**base)
    assert estimate.table().splitlines() == [
        "Cost estimate of s.jsonl: model m, region r, 1,234 request(s), thinking on, batch price "
        "(75 % of real-time) in USD",
        "  tokens: the Qwen tokenizer (dashscope SDK), 1,000 request(s) counted exactly, the rest scaled",
        "  tier        requests     input tok   out ceiling  out expected   cost ceiling  cost expected",
        "  total          1,234             5             6             -            n/a            n/a",
        "  1,500 request(s) carry image/audio/video parts: not estimated "
        "(their media tokens are not counted)",
        "  prices: none in the table (table read d)",
        "  warning: w1",
        "  warning: w2",
    ]
    every = CostEstimate(**{**base, "exact_requests": 1234, "unestimated_media_requests": 0, "warnings": []})
    assert every.table().splitlines()[1] == "  tokens: the Qwen tokenizer (dashscope SDK)"
    assert len(every.table().splitlines()) == 5
    assert every.file_id is None


# ------------------------------------------------------------------------------------------------ policy
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_basis": "total"}, "budget_basis must be 'ceiling' or 'expected', got 'total'"),
        ({"on_default_thinking": "ignore"}, "on_default_thinking must be 'error' or 'warn', got 'ignore'"),
        ({"budget_basis": "expected"}, "budget_basis='expected' needs expected_output_tokens"),
    ],
)
def test_policy_rules(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CostPolicy(**kwargs)


def test_policy_defaults_and_basis() -> None:
    policy = CostPolicy()
    assert (policy.max_cost, policy.max_input_tokens, policy.expected_output_tokens) == (None, None, None)
    assert (policy.budget_basis, policy.on_default_thinking, policy.basis, policy.has_budget) == (
        None,
        "error",
        "ceiling",
        False,
    )
    assert CostPolicy(expected_output_tokens=1).basis == "expected"
    assert CostPolicy(expected_output_tokens=1, budget_basis="ceiling").basis == "ceiling"
    assert CostPolicy(expected_output_tokens=1, budget_basis="expected").basis == "expected"
    assert CostPolicy(max_cost=0.1).max_cost == Decimal("0.1")  # via its text, not the binary float
    assert CostPolicy(max_cost="2").max_cost == Decimal(2)
    exact = Decimal("0.30")
    assert CostPolicy(max_cost=exact).max_cost is exact
    assert CostPolicy(max_cost=0).has_budget
    assert CostPolicy(max_input_tokens=0).has_budget
