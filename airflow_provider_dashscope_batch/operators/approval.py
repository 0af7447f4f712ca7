"""
Approve before paying: a job whose cost estimate exceeds ``approve_above`` waits for a person's decision.

The wait is Airflow's own human-in-the-loop step (Airflow 3.1+, the standard provider's
:class:`~airflow.providers.standard.operators.hitl.ApprovalOperator`): the task shows the estimate table in
Airflow's "Required actions" and waits without a worker slot (in the ``awaiting_input`` state on Airflow
3.3+, deferred to the HITL trigger on 3.1 and 3.2). Approve and the task runs again from the start with the
approved figure, so it uploads and creates; reject, or no decision within ``approval_timeout``, and the
task fails before anything is uploaded or created. On Airflow 3.0 ``approve_above`` fails at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_dashscope_batch.cost.budget import BudgetBasis, CostEstimate

__all__ = ["RESUME_METHOD", "ApprovalGate"]

#: The operator method a decision resumes (each operator a :class:`~.cost.CostGuard` guards has one).
RESUME_METHOD = "resume_after_approval"


@dataclass(frozen=True)
class ApprovalGate:
    """
    When a job needs a person's approval, and how to ask for it.

    :param threshold: Estimates above this (in the cost currency) need approval.
    :param timeout: How long to wait for a decision (None: no limit); no decision fails the task.
    """

    threshold: Decimal
    timeout: timedelta | None = None

    @classmethod
    def of(cls, approve_above: Any, timeout: timedelta | None) -> ApprovalGate | None:
        """The gate of an operator's ``approve_above`` / ``approval_timeout`` (None without a threshold)."""
        if approve_above is None:
            if timeout is not None:
                raise ValueError("approval_timeout needs approve_above")
            return None
        if not AIRFLOW_V_3_1_PLUS:
            raise ValueError(
                "approve_above needs Airflow 3.1+ (human-in-the-loop approval); this Airflow is older. "
                "Use max_cost= to stop a costly job automatically, or upgrade Airflow."
            )
        threshold = Decimal(str(approve_above))
        if not threshold.is_finite() or threshold < 0:
            raise ValueError(f"approve_above must be a non-negative amount, got {approve_above!r}")
        return cls(threshold, timeout)

    def total(self, estimates: list[CostEstimate], basis: BudgetBasis) -> Decimal | None:
        """The estimates' total at ``basis`` (None if a model has no price: a person must decide)."""
        costs = [estimate.cost(basis) for estimate in estimates]
        return None if any(cost is None for cost in costs) else sum(costs, Decimal(0))  # type: ignore[arg-type]

    def needed(self, total: Decimal | None, approved: Decimal | None) -> bool:
        """Whether a job of ``total`` needs a decision, given the figure approved in this try (if any)."""
        if total is None:
            return approved is None
        return total > self.threshold and (approved is None or total > approved)

    def request(
        self, task: BaseOperator, estimates: list[CostEstimate], total: Decimal | None, basis: BudgetBasis
    ) -> NoReturn:
        """Ask for a decision in Airflow's UI and stop the task until it comes (raises)."""
        from airflow.providers.common.compat.sdk import TaskDeferred, get_current_context

        currency = estimates[0].currency if estimates else ""
        figure = "an unpriced model" if total is None else f"{total:.4f} {currency}"
        body = (
            f"The estimated cost of this job ({basis}) is **{figure}**, above "
            f"`approve_above={self.threshold}` {currency}.\n\n"
            "Approve to upload and create it; reject to fail the task with nothing uploaded or created.\n\n"
            + "\n\n".join(_markdown(estimate) for estimate in estimates)
        )
        approval = self._operator(task, f"Approve a DashScope batch job of {figure}?", body)
        kwargs = {"approved_cost": None if total is None else str(total)}
        try:
            approval.execute(get_current_context())
        except TaskDeferred as deferred:  # Airflow 3.1 and 3.2: the HITL trigger waits
            raise TaskDeferred(
                trigger=deferred.trigger, method_name=RESUME_METHOD, kwargs=kwargs, timeout=deferred.timeout
            ) from None
        except BaseException as parked:  # Airflow 3.3+: TaskAwaitingInput parks the task
            if type(parked).__name__ != "TaskAwaitingInput":
                raise
            raise type(parked)(method_name=RESUME_METHOD, kwargs=kwargs, timeout=parked.timeout) from None  # type: ignore[call-arg, attr-defined]
        raise AirflowFailException("The approval step did not wait for a decision")

    def decision(self, task: BaseOperator, context: Context, event: dict[str, Any]) -> str:
        """The approver's name; raises :class:`AirflowFailException` on a rejection or a timeout."""
        from airflow.providers.standard.exceptions import (
            HITLRejectException,
            HITLTimeoutError,
            HITLTriggerEventError,
        )

        try:
            self._operator(task, "", None).execute_complete(context, event)
        except HITLRejectException:
            who = _user(event)
            raise AirflowFailException(
                f"The job was rejected{f' by {who}' if who else ''}; nothing was uploaded or created."
            ) from None
        except (HITLTimeoutError, HITLTriggerEventError) as exc:
            raise AirflowFailException(
                f"No approval within approval_timeout ({exc}); nothing was uploaded or created."
            ) from None
        return _user(event) or "someone"

    def _operator(self, task: BaseOperator, subject: str, body: str | None) -> Any:
        from airflow.providers.standard.operators.hitl import ApprovalOperator

        return ApprovalOperator(
            task_id=task.task_id,
            subject=subject or "approval",
            body=body,
            response_timeout=self.timeout,
            fail_on_reject=True,
        )


def _markdown(estimate: CostEstimate) -> str:
    """The estimate as a Markdown table (Airflow's Required actions renders the body as Markdown)."""

    def money(value: Decimal | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def tokens(value: int | None) -> str:
        return "" if value is None else f"{value:,}"

    rows = [
        f"**{estimate.source}**: model `{estimate.model}`, region {estimate.region}, "
        f"{estimate.requests:,} request(s), batch price in {estimate.currency} "
        f"(tokens by {estimate.counting}; prices of {estimate.price_table_date})",
        "",
        "| tier | requests | input tokens | output ceiling | output expected | cost ceiling "
        "| cost expected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in estimate.tiers:
        rows.append(
            f"| {t.tier} | {t.requests:,} | {t.input_tokens:,} | {t.output_ceiling_tokens:,} | "
            f"{tokens(t.expected_output_tokens)} | {money(t.cost_ceiling)} | {money(t.cost_expected)} |"
        )
    rows.append(
        f"| **total** | {estimate.requests:,} | {estimate.input_tokens:,} | "
        f"{estimate.output_ceiling_tokens:,} | "
        f"{tokens(estimate.expected_output_tokens)} | **{money(estimate.cost_ceiling)}** | "
        f"**{money(estimate.cost_expected)}** |"
    )
    return "\n".join(rows)


def _user(event: dict[str, Any]) -> str:
    user = event.get("responded_by_user") if isinstance(event, dict) else None
    return str(user.get("name") or "") if isinstance(user, dict) else ""
