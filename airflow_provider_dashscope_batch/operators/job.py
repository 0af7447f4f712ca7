"""
The arguments the job entry points share, declared once: the cost guard's and the outcome policy's.

* :class:`DashScopeBaseJobOperator`: an operator that sends a job's input or batches (upload, create,
  sharded); its cost arguments build the :class:`~.cost.CostGuard` it holds as ``cost``.
* :class:`DashScopeBaseJudgedJobOperator`: one that also judges its batches' ends (create, sharded); its
  ``on_*`` arguments build the :class:`~airflow_provider_dashscope_batch.waiting.protocol.OutcomePolicy`
  it holds as ``outcome_policy``.

They are ``BaseOperator`` subclasses, so ``default_args`` and ``.partial()`` / ``.expand()`` see these
arguments as the subclass's own (Airflow reads every ``__init__`` along the class's MRO).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.cost.budget import CostPolicy
from airflow_provider_dashscope_batch.operators.approval import ApprovalGate
from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator
from airflow_provider_dashscope_batch.operators.cost import CostGuard
from airflow_provider_dashscope_batch.waiting.protocol import Outcome, OutcomePolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.providers.common.compat.sdk import Context

__all__ = ["DashScopeBaseJobOperator", "DashScopeBaseJudgedJobOperator"]


class DashScopeBaseJobOperator(DashScopeBaseOperator):
    """
    An operator that sends a job, guarded by its cost estimate before anything is uploaded or created.

    See :doc:`/cost`; a bad combination of these arguments fails when the operator is built.

    :param estimate_cost: Count tokens and estimate the cost before sending (default True). False keeps
        the region and thinking-mode checks, which read only the first request.
    :param max_cost: Fail before anything is uploaded or created if the estimate (at the batch price, in
        the region's currency: CNY for cn-beijing, USD for ap-southeast-1) exceeds this.
    :param max_input_tokens: Fail likewise if the input exceeds this many tokens.
    :param expected_output_tokens: Expected output tokens per request, for the expected figure.
    :param budget_basis: What ``max_cost`` binds: ``"ceiling"`` (each request's ``max_tokens``, or the
        model's maximum output) or ``"expected"``; default ``expected`` when ``expected_output_tokens``
        is given, else ``ceiling``.
    :param on_default_thinking: ``"error"`` (default) or ``"warn"`` when the model thinks by default and
        the requests do not set ``enable_thinking``.
    :param prices: Model prices for this task, laid over the model catalog's (the shipped one with the
        connection extra ``models``) in the connection's region: ``{"qwen-plus": {"tiers":
        [{"max_input_tokens": null, "input": "0.0008", "output": "0.002", "thinking_output": "0.008"}]}}``
        (per 1K tokens in cn-beijing, per 1M in ap-southeast-1, real-time prices). Prices that last
        belong in the connection extra ``models`` (:doc:`/models`).
    :param approve_above: Wait for a person's approval in Airflow's UI (Airflow 3.1+) when the estimate
        (at ``budget_basis``, in the region's currency) exceeds this; a rejection fails the task before
        anything is uploaded or created (see :mod:`~airflow_provider_dashscope_batch.operators.approval`).
    :param approval_timeout: How long to wait for that decision (default: no limit); none fails the task.
    """

    def __init__(
        self,
        *,
        estimate_cost: bool = True,
        max_cost: float | str | Decimal | None = None,
        max_input_tokens: int | None = None,
        expected_output_tokens: int | None = None,
        budget_basis: str | None = None,
        on_default_thinking: str = "error",
        prices: Mapping[str, Any] | None = None,
        approve_above: float | str | Decimal | None = None,
        approval_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        policy = CostPolicy(
            max_cost=None if max_cost is None else Decimal(str(max_cost)),
            max_input_tokens=max_input_tokens,
            expected_output_tokens=expected_output_tokens,
            budget_basis=budget_basis,  # type: ignore[arg-type]
            on_default_thinking=on_default_thinking,  # type: ignore[arg-type]
        )
        approval = ApprovalGate.of(approve_above, approval_timeout)
        self.cost = CostGuard(self, policy, approval, estimate_cost=estimate_cost, prices=prices)

    def resume_after_approval(
        self, context: Context, event: dict[str, Any], approved_cost: str | None = None
    ) -> Any:
        """Resume on a person's decision: a rejection or no decision fails, an approval runs the task."""
        self.cost.approve(context, event, approved_cost)
        return self.execute(context)


class DashScopeBaseJudgedJobOperator(DashScopeBaseJobOperator):
    """
    A job operator that judges how its batches ended: each outcome is ``"success"``, ``"fail"`` or
    ``"skip"`` (for the sharded operator, of each shard's batch).

    :param on_partial_failure: Outcome of ``completed`` with some requests failed (default success).
    :param on_all_failed: Outcome of ``completed`` with every request failed (default fail).
    :param on_expired: Outcome of ``expired`` (default fail).
    :param on_cancelled: Outcome of ``cancelled`` (default fail).
    :param on_failed: Outcome of ``failed`` (default fail).
    """

    def __init__(
        self,
        *,
        on_partial_failure: str = Outcome.SUCCESS,
        on_all_failed: str = Outcome.FAIL,
        on_expired: str = Outcome.FAIL,
        on_cancelled: str = Outcome.FAIL,
        on_failed: str = Outcome.FAIL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.outcome_policy = OutcomePolicy(
            on_partial_failure, on_all_failed, on_expired, on_cancelled, on_failed
        )
