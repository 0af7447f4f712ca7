"""
A batch's actual cost as the results transfer records it in XCom, for the batches page to read back.

The transfer (:mod:`airflow_provider_dashscope_batch.transfers.results_to_object_storage`) pushes
``{batch_id: {"cost": "0.001234", "currency": "CNY", "requests": 10, "input_tokens": 200,
"output_tokens": 50, "complete": true}}`` under :data:`COSTS_XCOM_KEY`: small, JSON-only, the amount a
decimal string so nothing is lost to floats. ``complete`` is false when a model had no price in the table
(its tokens are counted, its cost is not). The page reads it through Airflow's REST API and parses it
leniently: an XCom is user-writable, so an entry of any other shape is ignored, never an error. Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.cost.actual import ActualCost

__all__ = ["COSTS_XCOM_KEY", "RecordedCost", "costs_xcom", "parse_costs_xcom"]

#: The XCom key the transfer pushes its batches' actual costs under.
COSTS_XCOM_KEY = "dashscope_batch_costs"
_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,12})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_BATCH_ID = re.compile(r"batch_[A-Za-z0-9_-]{1,120}")
_COUNTS = ("requests", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class RecordedCost:
    """
    What a batch's successful requests cost, as recorded by the transfer.

    :param amount: At the batch price, in ``currency``.
    :param currency: ISO 4217 code.
    :param requests: Successful requests billed.
    :param input_tokens: Their input tokens.
    :param output_tokens: Their output tokens.
    :param complete: False when some model had no price (its cost is missing from ``amount``).
    """

    amount: Decimal
    currency: str
    requests: int
    input_tokens: int
    output_tokens: int
    complete: bool = True

    def shown(self) -> str:
        """
        ``1.23 CNY``, ``0.000048 CNY``: to the micro-unit the transfer prices at, without trailing zeros
        beyond the second decimal (``≥`` in front when a model had no price).
        """
        text = f"{self.amount:.6f}".rstrip("0")
        text += "0" * (2 - len(text.partition(".")[2]))
        return f"{'' if self.complete else '≥ '}{text} {self.currency}"

    def tokens(self) -> str:
        """``10 requests, 200 input and 50 output tokens``."""
        counts = f"{self.requests:,} requests, {self.input_tokens:,} input"
        return f"{counts} and {self.output_tokens:,} output tokens"

    @classmethod
    def of_actual(cls, cost: ActualCost) -> RecordedCost:
        """The record of a manifest's actual cost."""
        return cls(
            amount=cost.cost,
            currency=cost.currency,
            requests=cost.requests,
            input_tokens=cost.input_tokens,
            output_tokens=cost.output_tokens,
            complete=not cost.unpriced_models,
        )

    def to_xcom(self) -> dict[str, Any]:
        """The JSON value of one batch's entry."""
        return {
            "cost": str(self.amount),
            "currency": self.currency,
            **{name: getattr(self, name) for name in _COUNTS},
            "complete": self.complete,
        }

    @classmethod
    def of_xcom(cls, value: object) -> RecordedCost | None:
        """One batch's entry, or None for anything not of its shape."""
        if not isinstance(value, Mapping):
            return None
        amount, currency = value.get("cost"), value.get("currency")
        counts = [value.get(name) for name in _COUNTS]
        if not (isinstance(amount, str) and _AMOUNT.fullmatch(amount)):
            return None
        if not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
            return None
        if not all(type(n) is int and n >= 0 for n in counts) or not isinstance(value.get("complete"), bool):
            return None
        try:
            parsed = Decimal(amount)
        except InvalidOperation:
            return None
        return cls(parsed, currency, *counts, complete=value["complete"])

    @staticmethod
    def total(costs: Iterable[RecordedCost | None]) -> RecordedCost | None:
        """The sum of ``costs``; None if any is unknown or they differ in currency."""
        items = list(costs)
        if not items or any(c is None for c in items):
            return None
        known = [c for c in items if c is not None]
        if len({c.currency for c in known}) != 1:
            return None
        return RecordedCost(
            amount=sum((c.amount for c in known), Decimal(0)),
            currency=known[0].currency,
            requests=sum(c.requests for c in known),
            input_tokens=sum(c.input_tokens for c in known),
            output_tokens=sum(c.output_tokens for c in known),
            complete=all(c.complete for c in known),
        )


def costs_xcom(costs: Mapping[str, ActualCost]) -> dict[str, dict[str, Any]]:
    """The XCom value the transfer pushes: each batch's actual cost, by batch id."""
    return {batch_id: RecordedCost.of_actual(cost).to_xcom() for batch_id, cost in costs.items()}


def parse_costs_xcom(value: object) -> dict[str, RecordedCost]:
    """The batches' costs an XCom value holds; entries of any other shape are left out."""
    if not isinstance(value, Mapping):
        return {}
    found = {}
    for batch_id, entry in value.items():
        cost = RecordedCost.of_xcom(entry)
        if isinstance(batch_id, str) and _BATCH_ID.fullmatch(batch_id) and cost is not None:
            found[batch_id] = cost
    return found
