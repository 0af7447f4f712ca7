"""Operators for the DashScope Batch API: upload an input file, create a batch, cancel a batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_dashscope_batch.client import FILTER_SLACK
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.errors import InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.client.identity import key_of, lineage, parse_key, with_generation
from airflow_provider_dashscope_batch.client.oss_input import parse_oss_input
from airflow_provider_dashscope_batch.events import AIRFLOW_RECEIVER
from airflow_provider_dashscope_batch.events.callback import finish_event_metadata
from airflow_provider_dashscope_batch.operators.base import (
    DashScopeBaseBatchOperator,
    DashScopeBatchOutcomeMixin,
)
from airflow_provider_dashscope_batch.operators.cost import DashScopeCostMixin
from airflow_provider_dashscope_batch.operators.lineage import batch_lineage, keep_for_lineage
from airflow_provider_dashscope_batch.operators.links import DashScopeBatchConsoleLink
from airflow_provider_dashscope_batch.waiting.late import LateCopies
from airflow_provider_dashscope_batch.waiting.protocol import Outcome, WaitSettings

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["DashScopeCancelBatchOperator", "DashScopeCreateBatchOperator", "idempotency_key_for"]

#: ``task_state_store`` key holding the batch id (Airflow 3.3+); renaming it breaks in-flight retries.
STATE_KEY = "dashscope_batch_id"


def idempotency_key_for(context: Context, generation: int = 1) -> str:
    """
    The idempotency key of one attempt to create this task instance's batch: ``airflow-<40 hex>-g<N>``.

    The hex part is the same for every try of one task instance (dag, task, run, map index; no try
    number), so a retried or cleared try finds the batch an earlier try created. The generation ``N``
    grows only when a try deliberately replaces a finished batch that the outcome policy failed, so the
    replacement's recovery after an ambiguous create can never mistake the failed batch for its own.

    :param context: The task's context.
    :param generation: The generation, from 1.
    """
    return with_generation(_lineage(context), generation)


def _lineage(context: Context) -> str:
    """The generation-free part of the key: ``airflow-`` and 40 hex digits of the task instance."""
    ti = context["ti"]
    return lineage(ti.dag_id, ti.task_id, ti.run_id, str(getattr(ti, "map_index", -1)))


class DashScopeCreateBatchOperator(
    DashScopeCostMixin, DashScopeBatchOutcomeMixin, DashScopeBaseBatchOperator
):
    """
    Create a batch, push its id to XCom (key ``batch_id``) and, by default, wait for it to finish.

    A task is never billed twice for one run: the batch carries an idempotency key of the task instance
    (:func:`idempotency_key_for`) in its metadata. A later try (a retry, a cleared task) first looks for
    the batch an earlier try created (``task_state_store`` on Airflow 3.3+, else the list API, newest
    first, this input file only, stopping at the first match) and re-attaches to it; it creates a new
    batch, under the next key generation, only if the earlier one ended as a failure under the outcome
    policy. A first try never lists: there is nothing to find.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeCreateBatchOperator`

    :param input_file_id: Id of the uploaded JSONL file, or (cn-beijing) a JSONL object in OSS: the
        identifier ``oss:cn-beijing:<bucket>/<path>`` (recommended by the batch guide; the bucket needs the
        guide's authorization and tagging steps) or a public-read or pre-signed OSS URL; nothing is
        uploaded and the file-store quota is not used (templated).
    :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test`` (templated).
    :param completion_window: ``"24h"`` to ``"14d"`` or a timedelta (templated).
    :param metadata: Extra batch metadata, e.g. ``ds_name`` / ``ds_description`` (templated).
    :param finish_callback: Where the service POSTs the batch when it finishes; only cn-beijing sends
        completion notifications, so on another region's connection the task fails before creating:
        ``"airflow"`` for this Airflow's receiver (the URL is built from the connection's
        ``callback_base_url`` with a fresh token; a deferred wait still polls on its schedule and is
        also woken when the receiver confirms the finish; see :doc:`/completion-events`), or an http(s)
        URL of your own receiver (templated). Whenever the connection has a ``finish_events_secret``,
        the batch carries the mark by which the finish watcher knows it as this deployment's.
    :param finish_callback_url: An http(s) URL of your own receiver (as ``finish_callback``).
    :param cost_estimate: The input file's preflight estimate (templated; default: the ``cost_estimate``
        XCom an upstream :class:`DashScopeUploadFileOperator` pushed for this file id). Before a batch is
        created, the connection's region must offer its model and ``max_cost`` / ``max_input_tokens``
        (see :class:`~airflow_provider_dashscope_batch.operators.cost.DashScopeCostMixin`) must hold.
    :return: The final batch as a JSON dict (or the fresh batch if ``wait_for_completion=False``).
    """

    template_fields: Sequence[str] = (
        "input_file_id",
        "endpoint",
        "completion_window",
        "metadata",
        "finish_callback",
        "finish_callback_url",
        "cost_estimate",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"metadata": "json"}
    ui_color = "#ff6a00"
    operator_extra_links = (DashScopeBatchConsoleLink(),)

    def __init__(
        self,
        *,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        finish_callback: str | None = None,
        finish_callback_url: str | None = None,
        cost_estimate: dict[str, Any] | list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cost_estimate = cost_estimate
        self.input_file_id = input_file_id
        self.endpoint = endpoint
        self.completion_window = completion_window
        self.metadata = metadata
        self.finish_callback = finish_callback
        self.finish_callback_url = finish_callback_url

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.get_conn()
        generation = 1
        batch = self._find_earlier_batch(context, client) if self._may_have_earlier_batch(context) else None
        if batch is not None:
            _, generation = parse_key(key_of(batch)) or ("", 1)
            verdict = self.outcome_policy.evaluate(batch) if batch.status.is_terminal else None
            if verdict is not None and verdict.outcome == Outcome.FAIL:
                generation += 1
                self.log.info(
                    "An earlier try's batch ended badly (%s); creating a new one (key generation %s).",
                    verdict.reason,
                    generation,
                )
                batch = None
            else:
                self.log.info(
                    "Re-attaching to batch %s created by an earlier try (status %s)", batch.id, batch.status
                )
        if batch is None:
            self.check_finish_callback(self.finish_callback or self.finish_callback_url)
            estimates = self.upstream_estimates(context, self.cost_estimate, {self.input_file_id})
            self.check_estimates(estimates, self.price_table()[1])
            key = idempotency_key_for(context, generation)
            receipt = client.create_batch_receipt(**self._create_kwargs(key))
            batch = receipt.value
            self.log.info("Created batch %s (status %s)", batch.id, batch.status)
            copies = LateCopies.of(receipt.ambiguity)
        else:  # an earlier try's create: its window, if still open, counts from the batch's creation
            copies = LateCopies.of(Ambiguity.after_created(batch.created_at, client.timeout), derived=True)
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, batch.id)
        context["ti"].xcom_push(key="batch_id", value=batch.id)
        DashScopeBatchConsoleLink.persist(context, self, self.hook)
        self._remember(context, batch)  # after the calls to the supervisor: on_kill makes one itself
        if not self.wait_for_completion:
            return keep_for_lineage(self, batch.model_dump(mode="json"))
        if not batch.status.is_terminal:
            batch = self._await_terminal(batch, copies)
        return keep_for_lineage(self, self.judge(batch))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: judge the finished batch (or remove late copies and wait again)."""
        return keep_for_lineage(self, self.judge(self._resumed(event)))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the input file -> the batch's result set; see :mod:`.lineage`."""
        return batch_lineage(self)

    def _create_kwargs(self, key: str) -> dict[str, Any]:
        metadata = dict(self.metadata or {})
        receiver = self.finish_callback == AIRFLOW_RECEIVER
        metadata.update(finish_event_metadata(self.hook, key, callback=receiver))
        if not receiver and (self.finish_callback or self.finish_callback_url):
            metadata["ds_batch_finish_callback"] = self.finish_callback or self.finish_callback_url
        return {
            "input_file_id": self.input_file_id,
            "endpoint": self.endpoint,
            "completion_window": self.completion_window,
            "metadata": metadata or None,
            "idempotency_key": key,
        }

    def _trigger_wait(self, deadline: float | None) -> WaitSettings:
        """With the receiver: also woken by its finish events (the poll schedule stays)."""
        settings = super()._trigger_wait(deadline)
        if self.finish_callback != AIRFLOW_RECEIVER:
            return settings
        return replace(settings, finish_events=True)

    @staticmethod
    def _may_have_earlier_batch(context: Context) -> bool:
        """Only a later try, or one with a ``task_state_store`` entry, can have an earlier batch."""
        store = context.get("task_state_store")
        return getattr(context["ti"], "try_number", 1) > 1 or bool(store is not None and store.get(STATE_KEY))

    def _find_earlier_batch(self, context: Context, client: DashScopeClient) -> Batch | None:
        """The newest batch an earlier try of this task instance created for this input file, if any."""
        lineage = _lineage(context)

        def ours(batch: Batch) -> bool:
            found = parse_key(key_of(batch))
            return batch.input_file_id == self.input_file_id and found is not None and found[0] == lineage

        store = context.get("task_state_store")
        batch_id = store.get(STATE_KEY) if store is not None else None
        if batch_id:
            try:
                batch = client.retrieve_batch(batch_id)
            except NotFoundError:
                batch = None
            if batch is not None and ours(batch):
                return batch
        since = _run_started(context)
        by_file = "," not in self.input_file_id and parse_oss_input(self.input_file_id) is None
        listing = client.list_batches(
            input_file_ids=[self.input_file_id] if by_file else None,
            create_after=since - FILTER_SLACK if since is not None else None,
        )
        return next((b for b in listing if ours(b)), None)


def _run_started(context: Context) -> datetime | None:
    """A lower bound of when any try of this run could have created a batch (the run's ``run_after``)."""
    dag_run = context.get("dag_run")
    value = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None)
    return value if isinstance(value, datetime) else None


class DashScopeCancelBatchOperator(DashScopeBaseBatchOperator):
    """
    Cancel a batch and, optionally, wait until it is ``cancelled``.

    Requests that finished before the cancellation stay in the output file (and are billed). A batch that
    is already terminal is left as it is.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeCancelBatchOperator`

    :param batch_id: The batch to cancel (templated).
    :param wait_for_completion: Wait until the batch is terminal (default False).
    :return: The batch as a JSON dict.
    """

    template_fields: Sequence[str] = ("batch_id",)
    ui_color = "#ff6a00"
    operator_extra_links = (DashScopeBatchConsoleLink(),)

    def __init__(self, *, batch_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(wait_for_completion=wait_for_completion, cancel_on_kill=False, **kwargs)
        self.batch_id = batch_id

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.get_conn()
        DashScopeBatchConsoleLink.persist(context, self, self.hook)
        try:
            batch = client.cancel_batch(self.batch_id)
        except (InvalidRequestError, NotFoundError) as exc:
            batch = client.retrieve_batch(self.batch_id)
            if not batch.status.is_terminal:
                raise
            self.log.info("Batch %s is already %s; nothing to cancel (%s)", self.batch_id, batch.status, exc)
        else:
            self.log.info("Cancellation of batch %s requested (status %s)", self.batch_id, batch.status)
        if self.wait_for_completion and not batch.status.is_terminal:
            batch = self._await_terminal(batch)
        return self._finish(batch)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired."""
        return self._finish(self._resumed(event))

    def _finish(self, batch: Batch) -> dict[str, Any]:
        if batch.status.is_terminal and batch.status != "cancelled":
            self.log.warning(
                "Batch %s finished as %s before the cancellation took effect", batch.id, batch.status
            )
        return batch.model_dump(mode="json")
