"""
What a preflight estimate says and what a task allows: the estimate, the policy and the failed checks.

:class:`CostEstimate` (per price tier: requests, input tokens, output ceiling and expectation, cost at the
batch price) is what :class:`~airflow_provider_dashscope_batch.cost.estimate.CostEstimator` finishes
with; :meth:`CostPolicy.enforce` applies the budget (``max_cost``, ``max_input_tokens``) to its total.
Every failed check is a :class:`CostCheckError`, raised before anything is uploaded or created.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "APPROXIMATION_LABEL",
    "BudgetBasis",
    "BudgetExceededError",
    "CostCheckError",
    "CostEstimate",
    "CostPolicy",
    "RegionUnavailableError",
    "ThinkingModeError",
    "TierEstimate",
    "UnpricedModelError",
    "how_to_price",
]

#: Prefix of every line of an estimate made without the tokenizer.
APPROXIMATION_LABEL = "[approximate: no tokenizer]"

BudgetBasis = Literal["ceiling", "expected"]


class CostCheckError(ValueError):
    """A preflight check failed; nothing was uploaded or created."""


class RegionUnavailableError(CostCheckError):
    """The connection's region does not offer the model in batch."""


class ThinkingModeError(CostCheckError):
    """The model thinks by default and the requests do not set ``enable_thinking``."""


class UnpricedModelError(CostCheckError):
    """A budget is set but the price table has no price for the model in this region."""


class BudgetExceededError(CostCheckError):
    """The estimate exceeds ``max_cost`` or ``max_input_tokens``."""


class TierEstimate(BaseModel):
    """The requests billed at one price tier, and what they cost at the batch price."""

    model_config = ConfigDict(frozen=True)

    tier: str
    requests: int
    input_tokens: int
    output_ceiling_tokens: int
    expected_output_tokens: int | None
    input_price: Decimal | None
    output_price: Decimal | None
    cost_ceiling: Decimal | None
    cost_expected: Decimal | None


class CostEstimate(BaseModel):
    """
    The preflight estimate of one batch input (XCom key ``cost_estimate``; the manifest's ``estimate``).

    Costs are at the batch price (``batch_discount`` of the real-time price) in ``currency``; ``None``
    where the table has no price for the model.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    model: str | None
    endpoint: str | None
    region: str
    currency: str
    thinking: bool | None
    counting: Literal["tokenizer", "approximation"]
    requests: int
    exact_requests: int
    input_tokens: int
    output_ceiling_tokens: int
    expected_output_tokens: int | None
    unestimated_media_requests: int
    tiers: list[TierEstimate]
    cost_ceiling: Decimal | None
    cost_expected: Decimal | None
    batch_discount: Decimal
    price_source: str | None
    price_table_date: str
    warnings: list[str]
    file_id: str | None = None

    def cost(self, basis: BudgetBasis) -> Decimal | None:
        """The total cost on ``basis``."""
        return self.cost_ceiling if basis == "ceiling" else self.cost_expected

    def table(self) -> str:
        """The estimate as a readable table; every line is labelled when the tokenizer was not used."""
        money = self.currency
        rows = [
            f"Cost estimate of {self.source}: model {self.model}, region {self.region}, "
            f"{self.requests:,} request(s), thinking {'on' if self.thinking else 'off'}, batch price "
            f"({self.batch_discount * 100:.0f} % of real-time) in {money}",
            "  tokens: "
            + (
                "the Qwen tokenizer (dashscope SDK)"
                + (
                    f", {self.exact_requests:,} request(s) counted exactly, the rest scaled"
                    if self.exact_requests < self.requests
                    else ""
                )
                if self.counting == "tokenizer"
                else "approximation (ASCII chars / 4 + other chars / 1.5), the tokenizer is not installed"
            ),
            f"  {'tier':<10} {'requests':>9} {'input tok':>13} {'out ceiling':>13} {'out expected':>13} "
            f"{'cost ceiling':>14} {'cost expected':>14}",
        ]
        for t in self.tiers:
            rows.append(
                f"  {t.tier:<10} {t.requests:>9,} {t.input_tokens:>13,} {t.output_ceiling_tokens:>13,} "
                f"{_num(t.expected_output_tokens):>13} {_money(t.cost_ceiling):>14} "
                f"{_money(t.cost_expected):>14}"
            )
        rows.append(
            f"  {'total':<10} {self.requests:>9,} {self.input_tokens:>13,} {self.output_ceiling_tokens:>13,} "
            f"{_num(self.expected_output_tokens):>13} {_money(self.cost_ceiling):>14} "
            f"{_money(self.cost_expected):>14}"
        )
        if self.unestimated_media_requests:
            rows.append(
                f"  {self.unestimated_media_requests:,} request(s) carry image/audio/video parts: "
                "not estimated (their media tokens are not counted)"
            )
        rows.append(
            f"  prices: {self.price_source or 'none in the table'} (table read {self.price_table_date})"
        )
        rows.extend(f"  warning: {w}" for w in self.warnings)
        if self.counting == "approximation":
            rows = [f"{APPROXIMATION_LABEL} {r}" for r in rows]
        return "\n".join(rows)


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _money(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def how_to_price(model: str | None, region: str) -> str:
    """How to give a model's price: the connection extra ``models`` (lasting) or the task's ``prices=``."""
    return (
        f'Give its real-time price in the connection extra \'models\', e.g. {{"{model}": {{"prices": '
        f'{{"{region}": [{{"max_input_tokens": null, "input": "<per unit>", "output": "<per unit>"}}]}}}}}}'
        " (CNY per 1K tokens in cn-beijing, USD per 1M in ap-southeast-1), or for this task only "
        f'prices={{"{model}": {{"tiers": [...]}}}}; see docs/models.rst'
    )


@dataclass(frozen=True)
class CostPolicy:
    """
    What a task asks of the estimate: the budget and how strict the checks are.

    :param max_cost: Most the job may cost, in the region's currency, at the batch price.
    :param max_input_tokens: Most input tokens the job may send.
    :param expected_output_tokens: Expected output tokens per request (gives the expected figure).
    :param budget_basis: Which figure ``max_cost`` binds: ``ceiling`` or ``expected`` (default
        ``expected`` when ``expected_output_tokens`` is given, else ``ceiling``).
    :param on_default_thinking: ``error`` (default) or ``warn`` for a model that thinks by default
        without an explicit ``enable_thinking``.
    """

    max_cost: Decimal | None = None
    max_input_tokens: int | None = None
    expected_output_tokens: int | None = None
    budget_basis: BudgetBasis | None = None
    on_default_thinking: Literal["error", "warn"] = "error"

    def __post_init__(self) -> None:
        if self.max_cost is not None and not isinstance(self.max_cost, Decimal):
            object.__setattr__(self, "max_cost", Decimal(str(self.max_cost)))
        if self.budget_basis not in (None, "ceiling", "expected"):
            raise ValueError(f"budget_basis must be 'ceiling' or 'expected', got {self.budget_basis!r}")
        if self.on_default_thinking not in ("error", "warn"):
            raise ValueError(
                f"on_default_thinking must be 'error' or 'warn', got {self.on_default_thinking!r}"
            )
        if self.budget_basis == "expected" and self.expected_output_tokens is None:
            raise ValueError("budget_basis='expected' needs expected_output_tokens")

    @property
    def basis(self) -> BudgetBasis:
        """The figure ``max_cost`` is compared with."""
        if self.budget_basis is not None:
            return self.budget_basis
        return "expected" if self.expected_output_tokens is not None else "ceiling"

    @property
    def has_budget(self) -> bool:
        """Whether a budget is set."""
        return self.max_cost is not None or self.max_input_tokens is not None

    def enforce(self, estimate: CostEstimate) -> None:
        """
        Raise if the estimate breaks the budget.

        :raises BudgetExceededError: input tokens over ``max_input_tokens`` or cost over ``max_cost``.
        :raises UnpricedModelError: ``max_cost`` is set and the model has no price.
        """
        if self.max_input_tokens is not None and estimate.input_tokens > self.max_input_tokens:
            raise BudgetExceededError(
                f"Input of {estimate.input_tokens:,} tokens exceeds "
                f"max_input_tokens={self.max_input_tokens:,}; nothing was uploaded or created."
                f"\n{estimate.table()}"
            )
        if self.max_cost is None:
            return
        cost = estimate.cost(self.basis)
        if cost is None:
            raise UnpricedModelError(
                f"max_cost is set but model {estimate.model!r} is unpriced in region {estimate.region!r}, so "
                "the budget cannot be checked; nothing was uploaded or created. "
                f"{how_to_price(estimate.model, estimate.region)}\n{estimate.table()}"
            )
        if cost > self.max_cost:
            raise BudgetExceededError(
                f"Estimated cost {cost:.4f} {estimate.currency} ({self.basis}) exceeds max_cost="
                f"{self.max_cost} {estimate.currency}; nothing was uploaded or created. Lower the number "
                "of requests or max_tokens, pick a cheaper model, or raise max_cost."
                f"\n{estimate.table()}"
            )
