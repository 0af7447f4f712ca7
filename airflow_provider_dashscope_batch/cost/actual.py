"""
The billed cost of finished requests, from the ``usage`` of each successful result line.

Only successful requests are billed (the batch guide's 計費說明), each at the tier of its own
``prompt_tokens``; a request that reports reasoning tokens (``completion_tokens_details.reasoning_tokens``)
or goes to a thinking-only model pays the thinking output price for all its ``completion_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from airflow_provider_dashscope_batch.cost.pricing import PriceTable, RegionPrices

__all__ = ["ActualCost", "ActualTier", "CostMeter"]


class ActualTier(BaseModel):
    """Successful requests of one model billed at one tier and mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    tier: str
    thinking: bool
    requests: int
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost: Decimal | None
    """At the batch price; ``None`` when the table has no price for the model."""


class ActualCost(BaseModel):
    """The actual cost of one batch's (or all batches') successful requests, in the region's currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str
    currency: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    """Sum over the priced tiers."""
    unpriced_models: list[str] = Field(default_factory=list)
    """Models without a price in the table: their tokens are counted, their cost is not."""
    tiers: list[ActualTier] = Field(default_factory=list)
    batch_discount: Decimal = Decimal("0.5")
    price_table_date: str = ""

    @classmethod
    def total(cls, costs: Iterable[ActualCost]) -> ActualCost | None:
        """The sum of several batches' costs (``None`` for none); tiers of the same model and mode merge."""
        costs = list(costs)
        if not costs:
            return None
        first = costs[0]
        merged: dict[tuple[str, str, bool], ActualTier] = {}
        for cost in costs:
            for t in cost.tiers:
                key = (t.model, t.tier, t.thinking)
                old = merged.get(key)
                merged[key] = (
                    t
                    if old is None
                    else ActualTier(
                        model=t.model,
                        tier=t.tier,
                        thinking=t.thinking,
                        requests=old.requests + t.requests,
                        input_tokens=old.input_tokens + t.input_tokens,
                        output_tokens=old.output_tokens + t.output_tokens,
                        reasoning_tokens=old.reasoning_tokens + t.reasoning_tokens,
                        cost=None if old.cost is None or t.cost is None else old.cost + t.cost,
                    )
                )
        return cls(
            region=first.region,
            currency=first.currency,
            requests=sum(c.requests for c in costs),
            input_tokens=sum(c.input_tokens for c in costs),
            output_tokens=sum(c.output_tokens for c in costs),
            reasoning_tokens=sum(c.reasoning_tokens for c in costs),
            cost=sum((c.cost for c in costs), Decimal(0)),
            unpriced_models=sorted({m for c in costs for m in c.unpriced_models}),
            tiers=list(merged.values()),
            batch_discount=first.batch_discount,
            price_table_date=first.price_table_date,
        )

    def summary(self) -> str:
        """One line for the task log."""
        text = (
            f"actual cost {self.cost:.4f} {self.currency} at the batch price for {self.requests:,} "
            f"successful request(s): {self.input_tokens:,} input, {self.output_tokens:,} output "
            f"({self.reasoning_tokens:,} reasoning) tokens"
        )
        if self.unpriced_models:
            text += f"; not priced (no price in the table): {', '.join(self.unpriced_models)}"
        return text


class CostMeter:
    """
    Accumulates successful requests' usage and prices each request at its own tier.

    :param table: The price table.
    :param region: The region's prices.
    """

    def __init__(self, table: PriceTable, region: RegionPrices) -> None:
        self.table = table
        self.region = region
        self._buckets: dict[tuple[str, int, bool], list[int]] = {}

    def add(self, model: str | None, prompt: int, completion: int, reasoning: int = 0) -> None:
        """Add one successful request's usage."""
        name = model or "?"
        price = self.region.models.get(name)
        index = price.tier_of(prompt) if price is not None else 0
        thinking = reasoning > 0 or self.table.model_always_thinks(name)
        bucket = self._buckets.setdefault((name, index, thinking), [0, 0, 0, 0])
        bucket[0] += 1
        bucket[1] += prompt
        bucket[2] += completion
        bucket[3] += reasoning

    def result(self) -> ActualCost:
        """The cost of everything added so far."""
        tiers: list[ActualTier] = []
        unpriced: set[str] = set()
        scale = self.table.batch_discount / self.region.per_tokens
        for key, (requests, prompt, completion, reasoning) in sorted(self._buckets.items()):
            model, index, thinking = key
            price = self.region.models.get(model)
            cost: Decimal | None = None
            label = "all"
            if price is None:
                unpriced.add(model)
            else:
                tier = price.tiers[index]
                out_price = tier.thinking_output if thinking else tier.output
                cost = ((prompt * tier.input + completion * out_price) * scale).quantize(Decimal("0.000001"))
                label = tier.label(price.lower_bound(index))
            tiers.append(
                ActualTier(
                    model=model,
                    tier=label,
                    thinking=thinking,
                    requests=requests,
                    input_tokens=prompt,
                    output_tokens=completion,
                    reasoning_tokens=reasoning,
                    cost=cost,
                )
            )
        return ActualCost(
            region=self.region.region,
            currency=self.region.currency,
            requests=sum(t.requests for t in tiers),
            input_tokens=sum(t.input_tokens for t in tiers),
            output_tokens=sum(t.output_tokens for t in tiers),
            reasoning_tokens=sum(t.reasoning_tokens for t in tiers),
            cost=sum((t.cost for t in tiers if t.cost is not None), Decimal(0)),
            unpriced_models=sorted(unpriced),
            tiers=tiers,
            batch_discount=self.table.batch_discount,
            price_table_date=self.table.retrieved,
        )
