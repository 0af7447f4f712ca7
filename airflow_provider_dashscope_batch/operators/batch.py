"""Operators for the DashScope Batch API: upload an input file, create a batch, cancel a batch."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    ObjectStoragePath,
)

from airflow_provider_dashscope_batch.client import FILTER_SLACK
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.errors import InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.client.identity import key_of, lineage, parse_key, with_generation
from airflow_provider_dashscope_batch.client.oss_input import parse_oss_input
from airflow_provider_dashscope_batch.client.types import BatchStatus
from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.label import ESTIMATE_METADATA_KEY, CostFigure, estimate_figure
from airflow_provider_dashscope_batch.events import AIRFLOW_RECEIVER
from airflow_provider_dashscope_batch.events.callback import finish_event_metadata
from airflow_provider_dashscope_batch.jobs.failures import ResubmitErrors
from airflow_provider_dashscope_batch.jobs.ledger import progress_line
from airflow_provider_dashscope_batch.operators.base import DashScopeBaseBatchOperator, judge
from airflow_provider_dashscope_batch.operators.cost import COST_XCOM_KEY
from airflow_provider_dashscope_batch.operators.job import DashScopeBaseJudgedJobOperator
from airflow_provider_dashscope_batch.operators.lineage import batch_lineage, keep_for_lineage
from airflow_provider_dashscope_batch.operators.links import (
    DashScopeBatchConsoleLink,
    DashScopeBatchesPageLink,
)
from airflow_provider_dashscope_batch.operators.rounds import (
    SOURCE_XCOM_KEY,
    JobRounds,
    JobState,
    job_batch,
)
from airflow_provider_dashscope_batch.operators.upload import as_path
from airflow_provider_dashscope_batch.sharding.creator import creator_metadata
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
#: XCom key of the last round (key generation) this try may create.
ROUND_LIMIT_KEY = "last_round"


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


class DashScopeCreateBatchOperator(DashScopeBaseBatchOperator, DashScopeBaseJudgedJobOperator):
    """
    Create a batch, push its id to XCom (key ``batch_id``) and, by default, wait for it to finish.

    A task is never billed twice for one run: the batch carries an idempotency key of the task instance
    (:func:`idempotency_key_for`) in its metadata. A later try (a retry, a cleared task) first looks for
    the batches earlier tries created (``task_state_store`` on Airflow 3.3+, else the list API, newest
    first) and re-attaches to a running one. After a finished one it continues the job: given the
    request lines (``source=``, or the JSONL an upstream :class:`DashScopeUploadFileOperator` uploaded
    as ``file=``), it sends only what is not answered yet; without them it creates a new batch of the
    whole file only if nothing was answered, and fails otherwise (an answered request is never billed
    twice). A first try never lists: there is nothing to find.

    **Rounds.** With ``resubmit_rounds`` > 0, a batch that ends short of the job -- ``expired``,
    ``cancelled``, or ``completed`` with transient failures -- is followed by a round of the source lines
    minus every answered and every permanently failed request (:mod:`airflow_provider_dashscope_batch.jobs`),
    each round its own batch under the next key generation, cost-guarded (its estimate plus the cost so
    far against ``max_cost``) and waited for the same way. XCom ``batch_ids`` lists every round's batch,
    in order, for the transfer. The outcome policy judges the job after its last round. See
    :doc:`/howto/finish-a-job`.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeCreateBatchOperator`

    The cost arguments (``max_cost``, ``approve_above``, ...) and the outcome arguments (``on_expired``,
    ...) are :class:`~airflow_provider_dashscope_batch.operators.job.DashScopeBaseJudgedJobOperator`'s.

    :param input_file_id: Id of the uploaded JSONL file, or (cn-beijing) a JSONL object in OSS: the
        identifier ``oss:cn-beijing:<bucket>/<path>`` (recommended by the batch guide; the bucket needs the
        guide's authorization and tagging steps) or a public-read or pre-signed OSS URL; nothing is
        uploaded and the file-store quota is not used (templated).
    :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test`` (templated).
    :param completion_window: ``"24h"`` to ``"14d"`` or a timedelta (templated).
    :param metadata: Extra batch metadata, e.g. ``ds_name`` / ``ds_description`` (templated); a
        follow-up round's ``ds_name`` ends with ``round N``.
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
        (see :class:`~airflow_provider_dashscope_batch.operators.cost.CostGuard`) must hold.
    :param resubmit_rounds: Most follow-up rounds after the first batch of a try (default 0: one batch;
        a round needs the request lines, which this operator has only when told where they are).
    :param resubmit_errors: Which failed requests a round sends again, overriding the default
        (transient: HTTP 429/5xx or a throttling/service-fault code; permanent: the rest): HTTP statuses
        and error codes mapped to ``True`` (send again) or ``False``, e.g. ``{"DataInspectionFailed":
        False, 400: True}``.
    :param source: The JSONL the input file was made from: a path, URL or ``ObjectStoragePath``
        (templated; default: the one an upstream :class:`DashScopeUploadFileOperator` recorded for this
        file id). Input files cannot be downloaded from the service.
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
        "source",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"metadata": "json"}
    ui_color = "#ff6a00"
    operator_extra_links = (DashScopeBatchConsoleLink(), DashScopeBatchesPageLink())

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
        resubmit_rounds: int = 0,
        resubmit_errors: Mapping[int | str, bool] | None = None,
        source: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(resubmit_rounds, int) or resubmit_rounds < 0:
            raise ValueError(f"resubmit_rounds must be an int >= 0; got {resubmit_rounds!r}")
        if resubmit_rounds and not self.wait_for_completion:
            raise ValueError("resubmit_rounds needs wait_for_completion=True: a round follows a finished one")
        self.cost_estimate = cost_estimate
        self.input_file_id = input_file_id
        self.endpoint = endpoint
        self.completion_window = completion_window
        self.metadata = metadata
        self.finish_callback = finish_callback
        self.finish_callback_url = finish_callback_url
        self.resubmit_rounds = resubmit_rounds
        self.resubmit_errors = ResubmitErrors.of(resubmit_errors)
        self.source = source

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.get_conn()
        rounds = self._job_rounds(context, client)
        earlier = self._earlier_batches(context, client, rounds is not None)
        batch: Batch | None = None
        copies: LateCopies | None = None
        generation = 1
        if earlier:
            latest = earlier[-1]
            generation = _generation(latest)
            if not latest.status.is_terminal:
                self.log.info(
                    "Re-attaching to batch %s created by an earlier try (status %s)", latest.id, latest.status
                )
                batch = earlier.pop()
                window = Ambiguity.after_created(batch.created_at, client.timeout)
                copies = LateCopies.of(window, derived=True)
            elif rounds is not None:  # continue the job: this try may send up to 1 + resubmit_rounds rounds
                last_generation = generation + 1 + self.resubmit_rounds
                self._record(context, earlier, last_generation)
                return self._rounds(context, rounds, earlier, last_generation)
            else:
                verdict = self.outcome_policy.evaluate(latest)
                if verdict.outcome != Outcome.FAIL:
                    self.log.info("Re-attaching to batch %s created by an earlier try", latest.id)
                    batch = earlier.pop()
                elif any(b.request_counts is not None and b.request_counts.completed for b in earlier):
                    raise AirflowFailException(
                        f"An earlier try's batch ended badly ({verdict.reason}) with answers already billed; "
                        "sending the whole file again would bill them twice. Pass source= (the JSONL input "
                        f"file {self.input_file_id} was made from) so the retry sends only the remainder."
                    )
                else:
                    generation += 1
                    self.log.info(
                        "An earlier try's batch ended badly (%s); creating a new one (key generation %s).",
                        verdict.reason,
                        generation,
                    )
        if batch is None:
            self.cost.check_finish_callback(self.finish_callback or self.finish_callback_url)
            estimates = self.cost.upstream_estimates(context, self.cost_estimate, {self.input_file_id})
            self.cost.check_estimates(estimates, self.cost.price_table()[1])
            if estimates:  # passed on, so a transfer downstream of this task finds the job's estimate
                pushed = [e.model_dump(mode="json") for e in estimates]
                context["ti"].xcom_push(key=COST_XCOM_KEY, value=pushed)
            key = idempotency_key_for(context, generation)
            estimated = estimate_figure(estimates, self.cost.cost_policy.basis)
            receipt = client.create_batch_receipt(
                **self._create_kwargs(key, self.input_file_id, 1, context, estimated)
            )
            batch = receipt.value
            self.log.info("Created batch %s (status %s)", batch.id, batch.status)
            copies = LateCopies.of(receipt.ambiguity)
        batches = [*earlier, batch]
        last_generation = _generation(batch) + self.resubmit_rounds
        self._record(context, batches, last_generation)
        DashScopeBatchConsoleLink.persist(context, self, self.hook)
        self._remember(context, batch)  # after the calls to the supervisor: on_kill makes one itself
        if not self.wait_for_completion:
            return keep_for_lineage(self, batch.model_dump(mode="json"))
        if not batch.status.is_terminal:
            batches[-1] = self._await_terminal(batch, copies)
        if rounds is None:
            return keep_for_lineage(self, judge(self.outcome_policy, batches[-1], self.log))
        return self._rounds(context, rounds, batches, last_generation)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: judge the finished batch, or go on with the job's rounds."""
        batch = self._resumed(event)
        ti = context.get("ti")
        if ti is None:
            return keep_for_lineage(self, judge(self.outcome_policy, batch, self.log))
        map_index = getattr(ti, "map_index", -1)
        own = {"task_ids": self.task_id, "map_indexes": map_index if map_index >= 0 else None}
        batch_ids = ti.xcom_pull(key="batch_ids", **own)  # kept across a deferral
        last_generation = ti.xcom_pull(key=ROUND_LIMIT_KEY, **own)
        if not batch_ids or last_generation is None:
            return keep_for_lineage(self, judge(self.outcome_policy, batch, self.log))
        client = self.hook.get_conn()
        rounds = self._job_rounds(context, client)
        if rounds is None:
            return keep_for_lineage(self, judge(self.outcome_policy, batch, self.log))
        batches = [client.retrieve_batch(batch_id) for batch_id in batch_ids[:-1]] + [batch]
        return self._rounds(context, rounds, batches, last_generation)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the input file -> the batch's result set; see :mod:`.lineage`."""
        return batch_lineage(self)

    # -------------------------------------------------------------------------------------- rounds
    def _job_rounds(self, context: Context, client: DashScopeClient) -> JobRounds | None:
        """The job's rounds, if the request lines are known; refuses rounds without them."""
        source = self.source
        if source is None:
            source = _recorded_source(context, self, self.input_file_id)
        if source is None:
            if self.resubmit_rounds:
                raise AirflowFailException(
                    f"resubmit_rounds={self.resubmit_rounds} needs the request lines of input file "
                    f"{self.input_file_id}, which the service does not give back: pass source= (the path, "
                    "URL or ObjectStoragePath of the JSONL it was made from), upload it upstream with "
                    "DashScopeUploadFileOperator(file=...), or set resubmit_rounds=0. Nothing was created."
                )
            return None
        table = self.cost.price_table()
        return JobRounds(
            client, as_path(source), self.resubmit_errors, self.log, meter=lambda: CostMeter(*table)
        )

    def _rounds(
        self, context: Context, rounds: JobRounds, batches: list[Batch], last_generation: int
    ) -> dict[str, Any]:
        """Follow finished rounds with the remainder's until none is left or allowed; judge the job."""
        while True:
            latest = batches[-1]
            generation = _generation(latest)
            if len(batches) == 1 and generation >= last_generation:  # one batch: its counts are the job's
                return keep_for_lineage(self, judge(self.outcome_policy, latest, self.log))
            state = rounds.settle(batches)
            if (
                not state.counts.unanswered
                or latest.status == BatchStatus.FAILED
                or generation >= last_generation
            ):
                if generation > 1:  # the job's rounds are over: no round file outlives them unused
                    key_lineage = _lineage(context)
                    tokens = {with_generation(key_lineage, g) for g in range(2, generation + 1)}
                    rounds.sweep(tokens, {b.input_file_id for b in batches})
                return keep_for_lineage(self, self._judge_job(latest, state))
            batch, copies = self._next_round(context, rounds, state, generation + 1, last_generation)
            batches.append(batch)
            self._record(context, batches, last_generation)
            self._remember(context, batch)
            if not batch.status.is_terminal:
                batches[-1] = self._await_terminal(batch, copies)

    def _next_round(
        self, context: Context, rounds: JobRounds, state: JobState, generation: int, last_generation: int
    ) -> tuple[Batch, LateCopies | None]:
        """Upload the remainder (cost-guarded) and create its batch under the next key generation."""
        key = idempotency_key_for(context, generation)
        with tempfile.TemporaryDirectory(prefix="dashscope-round-") as tmp:
            path = Path(tmp) / "round.jsonl"
            estimator = self.cost.cost_estimator(f"round {generation} of {self.task_id}")
            with self.cost.cost_checks(), path.open("wb") as out:
                sent = rounds.write_remainder(out, estimator.feed)
            remainder = rounds.check_budget(self.cost.cost_policy, estimator, state)
            self.log.info("%s", progress_line(generation, last_generation, sent, state.counts))
            file = rounds.upload(path, f"{self.task_id}-round-{generation}.jsonl", key)
        estimated = None
        if remainder is not None:
            currency = self.cost.price_table()[1].currency
            estimated = CostFigure(remainder, currency, self.cost.cost_policy.basis)
        try:
            receipt = self.hook.get_conn().create_batch_receipt(
                **self._create_kwargs(key, file.id, generation, context, estimated)
            )
        except BaseException:
            if _last_try(context, self):
                rounds.discard(file.id, "no batch uses it and no try follows")
            raise
        batch = receipt.value
        self.log.info("Created batch %s for round %s (status %s)", batch.id, generation, batch.status)
        return batch, LateCopies.of(receipt.ambiguity)

    def _judge_job(self, latest: Batch, state: JobState) -> dict[str, Any]:
        """The outcome policy over the job's counts after its last round, named in the message."""
        verdict = self.outcome_policy.evaluate(job_batch(latest, state.counts))
        reason = f"{verdict.reason} {state.summary()}; batches {', '.join(r.batch_id for r in state.rounds)}."
        if verdict.outcome == Outcome.SKIP:
            raise AirflowSkipException(reason)
        if verdict.outcome == Outcome.FAIL:
            raise AirflowException(reason)
        self.log.info("%s", reason)
        return latest.model_dump(mode="json")

    @staticmethod
    def _record(context: Context, batches: list[Batch], last_generation: int) -> None:
        """
        Note the latest batch for the next try; push every round's batch id, in order, and the try's last
        round (a deferred wait resumes from these XComs).
        """
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, batches[-1].id)
        ti = context["ti"]
        ti.xcom_push(key="batch_id", value=batches[-1].id)
        ti.xcom_push(key="batch_ids", value=[b.id for b in batches])
        ti.xcom_push(key=ROUND_LIMIT_KEY, value=last_generation)

    def _create_kwargs(
        self, key: str, input_file_id: str, round_no: int, context: Context, estimated: CostFigure | None
    ) -> dict[str, Any]:
        """
        The create request: every round named after the job (``ds_name``, else the task id, cut to the
        service's 100 characters; `` round N`` from the second), so the batches page lists a job's rounds
        by name; the round's estimate.
        """
        metadata = {**(self.metadata or {}), **creator_metadata(context["ti"])}
        suffix = "" if round_no == 1 else f" round {round_no}"
        metadata["ds_name"] = (metadata.get("ds_name") or self.task_id)[: 100 - len(suffix)] + suffix
        if estimated is not None:
            metadata[ESTIMATE_METADATA_KEY] = estimated.label()
        receiver = self.finish_callback == AIRFLOW_RECEIVER
        metadata.update(finish_event_metadata(self.hook, key, callback=receiver))
        if not receiver and (self.finish_callback or self.finish_callback_url):
            metadata["ds_batch_finish_callback"] = self.finish_callback or self.finish_callback_url
        return {
            "input_file_id": input_file_id,
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

    def _earlier_batches(self, context: Context, client: DashScopeClient, any_input: bool) -> list[Batch]:
        """
        The batches earlier tries of this task instance created, oldest generation first.

        Only a later try, or one with a ``task_state_store`` entry, can have any. Without rounds
        (``any_input`` False) only batches of this input file are listed.
        """
        store = context.get("task_state_store")
        batch_id = store.get(STATE_KEY) if store is not None else None
        if getattr(context["ti"], "try_number", 1) <= 1 and not batch_id:
            return []
        lineage = _lineage(context)

        def ours(batch: Batch) -> bool:
            found = parse_key(key_of(batch))
            mine = found is not None and found[0] == lineage
            return mine and (any_input or batch.input_file_id == self.input_file_id)

        if batch_id:
            try:
                batch = client.retrieve_batch(batch_id)
            except NotFoundError:
                batch = None
            if batch is not None and ours(batch) and _generation(batch) <= 1:
                return [batch]
        since = _run_started(context)
        by_file = "," not in self.input_file_id and parse_oss_input(self.input_file_id) is None
        listing = client.list_batches(
            input_file_ids=[self.input_file_id] if not any_input and by_file else None,
            create_after=since - FILTER_SLACK if since is not None else None,
        )
        return sorted((b for b in listing if ours(b)), key=_generation)


def _generation(batch: Batch) -> int:
    """Which batch (round) of its task instance ``batch`` is: 1 for the first."""
    found = parse_key(key_of(batch))
    return 1 if found is None else found[1]


def _last_try(context: Context, task: Any) -> bool:
    """Whether no retry follows this try if it fails."""
    return getattr(context["ti"], "try_number", 1) > (getattr(task, "retries", 0) or 0)


def _recorded_source(context: Context, task: Any, file_id: str) -> str | None:
    """The JSONL an upstream upload recorded for ``file_id`` (XCom :data:`SOURCE_XCOM_KEY`), if any."""
    upstream = sorted(getattr(task, "upstream_task_ids", ()) or ())
    ti = context.get("ti")
    if not upstream or ti is None or not hasattr(ti, "xcom_pull"):
        return None
    found = ti.xcom_pull(task_ids=upstream, key=SOURCE_XCOM_KEY)
    for item in found if isinstance(found, list) else [found]:
        if isinstance(item, Mapping) and item.get("file_id") == file_id and item.get("source"):
            return str(item["source"])
    return None


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
