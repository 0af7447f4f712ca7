"""
A cost figure as one short text: how a batch carries its estimate in its metadata, and how it is read back.

The create and sharded operators write ``metadata["airflow_estimated_cost"] = "12.3456 CNY ceiling"`` (the
amount, the currency and the budget basis it was computed on) when they create a batch, so the batches
page (:mod:`airflow_provider_dashscope_batch.ui.app`) shows the estimate from the service's list alone. The
service documents no limit on other metadata keys than ``ds_name`` (100 characters) and
``ds_description`` (200); the text stays well under both. Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.cost.budget import BudgetBasis, CostEstimate

__all__ = ["ESTIMATE_METADATA_KEY", "CostFigure", "estimate_figure"]

#: The batch metadata field holding the estimate the batch was created under.
ESTIMATE_METADATA_KEY = "airflow_estimated_cost"
_LABEL = re.compile(r"^(-?[0-9]{1,15}(?:\.[0-9]{1,8})?) ([A-Z]{3}) (ceiling|expected)$")


@dataclass(frozen=True)
class CostFigure:
    """
    An amount of money with the basis it was estimated on.

    :param amount: The amount, in ``currency``.
    :param currency: ISO 4217 code (CNY in cn-beijing, USD in ap-southeast-1).
    :param basis: ``ceiling`` (every request at its output ceiling) or ``expected``.
    """

    amount: Decimal
    currency: str
    basis: str

    def label(self) -> str:
        """``12.3456 CNY ceiling``: the metadata value."""
        return f"{self.amount:.4f} {self.currency} {self.basis}"

    def shown(self) -> str:
        """``12.3456 CNY`` (the basis is said apart)."""
        return f"{self.amount:.4f} {self.currency}"

    @classmethod
    def parse(cls, text: object) -> CostFigure | None:
        """The figure a metadata value names (None for anything else: it came from the service)."""
        match = _LABEL.match(text) if isinstance(text, str) else None
        if match is None:
            return None
        try:
            return cls(Decimal(match.group(1)), match.group(2), match.group(3))
        except InvalidOperation:
            return None

    @classmethod
    def of_metadata(cls, metadata: Mapping[str, Any] | None) -> CostFigure | None:
        """The estimate a batch's metadata carries, if any."""
        return cls.parse((metadata or {}).get(ESTIMATE_METADATA_KEY))

    @staticmethod
    def total(figures: Iterable[CostFigure | None]) -> CostFigure | None:
        """The sum of ``figures``; None if any is missing or they differ in currency or basis."""
        items = list(figures)
        known = [f for f in items if f is not None]
        if not known or len(known) < len(items):
            return None
        first = known[0]
        if any(f.currency != first.currency or f.basis != first.basis for f in known):
            return None
        return CostFigure(sum((f.amount for f in known), Decimal(0)), first.currency, first.basis)


def estimate_figure(estimates: Iterable[CostEstimate], basis: BudgetBasis) -> CostFigure | None:
    """The total of ``estimates`` on ``basis``; None without estimates or when one has no price."""
    return CostFigure.total(
        None if (cost := e.cost(basis)) is None else CostFigure(cost, e.currency, basis) for e in estimates
    )
