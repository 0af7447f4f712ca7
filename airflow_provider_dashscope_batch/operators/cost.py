"""
How a job entry point's cost estimate becomes a log line, an XCom or a failure.

The arguments are :class:`~airflow_provider_dashscope_batch.operators.job.DashScopeBaseJobOperator`'s; the
estimate itself is :mod:`airflow_provider_dashscope_batch.cost`; :class:`CostGuard` reads the connection's
region and price overrides, logs the table, pushes it to XCom (key ``cost_estimate``) and fails the task
(:class:`AirflowFailException`: a retry would fail the same way) on a failed check, always before
anything is uploaded or created.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dashscope_batch.catalog import Catalog, connection_catalog
from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.budget import (
    CostCheckError,
    CostEstimate,
    CostPolicy,
    RegionUnavailableError,
)
from airflow_provider_dashscope_batch.cost.estimate import CostEstimator
from airflow_provider_dashscope_batch.cost.pricing import (
    PriceTable,
    RegionPrices,
    load_price_table,
    region_of,
)
from airflow_provider_dashscope_batch.operators.approval import ApprovalGate

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context

    from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator

__all__ = [
    "COST_XCOM_KEY",
    "CostGuard",
    "LineSink",
    "connection_model_catalog",
    "connection_price_table",
    "find_estimates",
]

#: XCom key of the preflight estimate (a :class:`~airflow_provider_dashscope_batch.cost.CostEstimate`).
COST_XCOM_KEY = "cost_estimate"


class LineSink:
    """A binary sink for the JSONL builders that hands each complete line to ``on_line``."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self.on_line = on_line
        self.pending = b""

    def write(self, data: bytes) -> int:
        buffer = self.pending + data if self.pending else data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            self.on_line(buffer[start : end + 1])
            start = end + 1
        self.pending = buffer[start:]
        return len(data)


class CostGuard:
    """
    Cost estimate, budget, thinking-mode and approval guard of a job entry point (see :doc:`/cost`).

    Every :class:`~airflow_provider_dashscope_batch.operators.job.DashScopeBaseJobOperator` holds one, built
    from the cost arguments that class declares.

    :param task: The operator it guards (its hook, log, upstream tasks and approval step).
    :param policy: The budget and how strict the checks are.
    :param approval: The approval step, if the task has an ``approve_above``.
    :param estimate_cost: Count tokens and estimate the cost (False: the region and thinking-mode checks
        only, which read the first request).
    :param prices: The task's model prices, laid over the connection's.
    :raises ValueError: if a budget or an approval is asked for without an estimate.
    """

    def __init__(
        self,
        task: DashScopeBaseOperator,
        policy: CostPolicy,
        approval: ApprovalGate | None,
        *,
        estimate_cost: bool,
        prices: Mapping[str, Any] | None,
    ) -> None:
        self.task = task
        self.approval = approval
        self.approved_cost: Decimal | None = None  # the figure a person approved in this try
        self.estimate_cost = estimate_cost
        self.prices = prices
        self.cost_policy = policy
        if (policy.has_budget or approval) and not estimate_cost:
            raise ValueError("max_cost, max_input_tokens and approve_above need estimate_cost=True")

    def model_catalog(self) -> Catalog:
        """The model catalog of this task's connection."""
        return connection_model_catalog(self.task.hook)

    def check_finish_callback(self, finish_callback: str | None) -> None:
        """
        Fail before anything is sent if a finish callback is asked of a region that sends none.

        Completion notifications (callback and EventBridge) are configurable in cn-beijing only (the batch
        guide's 配置任务完成通知; the catalog's ``completion_notifications``). Elsewhere the service would
        never call, and a wait woken by the callback would end only at its slow safety-net poll.

        :raises AirflowFailException: naming the region and what to do instead.
        """
        if not finish_callback:
            return
        hook = self.task.hook
        extra = hook.get_connection(hook.dashscope_conn_id).extra_dejson
        region = self.model_catalog().region(region_of(extra))
        if region.completion_notifications:
            return
        notifying = ", ".join(
            r.name for r in self.model_catalog().regions.values() if r.completion_notifications
        )
        raise AirflowFailException(
            f"finish_callback={finish_callback!r}, but region {region.name} sends no completion "
            f"notifications (the batch guide configures callbacks and EventBridge in {notifying} only), so "
            "the service would never call and the wait would end only at its safety-net poll. Nothing was "
            "created. Leave finish_callback unset for this connection: the wait then polls on its normal "
            "schedule."
        )

    def price_table(self) -> tuple[PriceTable, RegionPrices]:
        """The price table of the connection's region, with the connection's and the task's overrides."""
        return connection_price_table(self.task.hook, self.prices)

    def cost_meter(self) -> CostMeter:
        """A fresh meter for the actual cost of results, priced by this task's table."""
        return CostMeter(*self.price_table())

    def cost_estimator(self, source: str) -> CostEstimator:
        """An estimator for one input, fed its lines by the caller inside :meth:`cost_checks`."""
        table, region = self.price_table()
        return CostEstimator(table, region, self.cost_policy, source=source, count_tokens=self.estimate_cost)

    @contextmanager
    def cost_checks(self) -> Iterator[None]:
        """Turn a failed cost check into a task failure that names what to change."""
        try:
            yield
        except CostCheckError as exc:
            raise AirflowFailException(str(exc)) from None

    def settle_estimate(self, estimator: CostEstimator) -> CostEstimate | None:
        """Finish the estimate, log it and apply the budget (raises before anything is sent)."""
        with self.cost_checks():
            estimate = estimator.finish()
            for warning in estimator.warnings:
                self.task.log.warning("%s", warning)
            if estimate is None:
                return None
            self.task.log.info("%s", estimate.table())
            self.cost_policy.enforce(estimate)
        self._await_approval([estimate])
        return estimate

    def push_estimate(
        self, context: Context, estimate: CostEstimate | None, file_id: str | None = None
    ) -> None:
        """Push the estimate (with the uploaded file's id) to XCom under :data:`COST_XCOM_KEY`."""
        ti = context.get("ti")
        if estimate is None or ti is None:
            return
        if file_id is not None:
            estimate = estimate.model_copy(update={"file_id": file_id})
        ti.xcom_push(key=COST_XCOM_KEY, value=estimate.model_dump(mode="json"))

    def upstream_estimates(
        self, context: Context, given: Any, file_ids: set[str] | None = None
    ) -> list[CostEstimate]:
        """The estimates handed in, else those upstream tasks pushed (see :func:`find_estimates`)."""
        return find_estimates(context, self.task, given, file_ids)

    def check_estimates(self, estimates: list[CostEstimate], region: RegionPrices) -> None:
        """Create-time checks of estimates made at upload: the region offers the model, the budget holds."""
        with self.cost_checks():
            if (self.cost_policy.has_budget or self.approval) and not estimates:
                raise CostCheckError(
                    "max_cost/max_input_tokens/approve_above are set but no cost estimate was found for "
                    "this input file: upload it with DashScopeUploadFileOperator upstream of this task "
                    f"(its XCom '{COST_XCOM_KEY}' is found by file id), or pass cost_estimate=. Nothing "
                    "was created."
                )
            for estimate in estimates:
                if estimate.model and not region.offers_in_batch(estimate.model):
                    raise RegionUnavailableError(
                        f"Model {estimate.model!r} does not run in batch in region {region.region} (model "
                        "catalog); nothing was created. Use a connection to a region that runs it, or add "
                        "the region to the model's regions in the connection extra 'models'."
                    )
                self.task.log.info("%s", estimate.table())
                self.cost_policy.enforce(estimate)
        self._await_approval(estimates)

    def _await_approval(self, estimates: list[CostEstimate]) -> None:
        """Wait for a person's approval if the estimates exceed ``approve_above`` (raises to wait)."""
        if self.approval is None:
            return
        total = self.approval.total(estimates, self.cost_policy.basis)
        if self.approval.needed(total, self.approved_cost):
            self.approval.request(self.task, estimates, total, self.cost_policy.basis)

    def approve(self, context: Context, event: dict[str, Any], approved_cost: str | None) -> None:
        """
        Take a person's decision: a rejection or no decision fails, an approval is remembered.

        The operator's ``resume_after_approval`` calls this, then runs the task again from the start.
        """
        assert self.approval is not None
        who = self.approval.decision(self.task, context, event)
        self.task.log.info("Approved by %s", who)
        # an unpriced job approved once: any figure the same run computes again is the approved one
        self.approved_cost = Decimal(approved_cost) if approved_cost is not None else Decimal("Infinity")


def connection_model_catalog(hook: Any) -> Catalog:
    """
    The model catalog of a DashScope hook's connection: the shipped one with its extra ``models`` laid over.

    :raises AirflowFailException: on a malformed override (a retry would read the same connection).
    """
    try:
        return connection_catalog(hook.get_connection(hook.dashscope_conn_id).extra_dejson)
    except ValueError as exc:
        raise AirflowFailException(f"Bad model catalog override: {exc}") from None


def connection_price_table(hook: Any, task_prices: Any = None) -> tuple[PriceTable, RegionPrices]:
    """
    The price table of a DashScope hook's connection: its region and model catalog, then ``task_prices``.

    :raises AirflowFailException: on a malformed override.
    """
    extra = hook.get_connection(hook.dashscope_conn_id).extra_dejson
    catalog = connection_model_catalog(hook)
    try:
        return load_price_table(region_of(extra), catalog=catalog, task_prices=task_prices)
    except ValueError as exc:
        raise AirflowFailException(f"Bad price override: {exc}") from None


def find_estimates(
    context: Context, task: BaseOperator, given: Any, file_ids: set[str] | None = None
) -> list[CostEstimate]:
    """
    Preflight estimates for a task: ``given`` (an estimate dict or a list of them), else the
    :data:`COST_XCOM_KEY` XComs of the task's upstream tasks, kept only for ``file_ids`` when given.
    """
    found: Any = given
    if found is None:
        upstream = sorted(getattr(task, "upstream_task_ids", ()) or ())
        ti = context.get("ti")
        if not upstream or ti is None:
            return []
        found = ti.xcom_pull(task_ids=upstream, key=COST_XCOM_KEY)
    items = [found] if isinstance(found, Mapping) else list(found or ())
    flat: list[Any] = []
    for item in items:
        many = isinstance(item, Sequence) and not isinstance(item, (str, bytes))
        flat.extend(item if many else [item])
    # one estimate per file: a create task passes its upload's on, and a transfer may read both
    unique = {json.dumps(e, sort_keys=True, default=str): e for e in flat if isinstance(e, Mapping)}
    estimates = [CostEstimate.model_validate(e) for e in unique.values()]
    if file_ids is not None and given is None:
        estimates = [e for e in estimates if e.file_id in file_ids]
    return estimates
