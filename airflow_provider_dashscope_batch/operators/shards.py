"""
Operators for inputs past one batch's limits: split into shards, and run every shard as one job.

See :mod:`airflow_provider_dashscope_batch.sharding.split` for the split and the job's identity.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import replace
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    ObjectStoragePath,
)

from airflow_provider_dashscope_batch.catalog import Catalog
from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY, key_of, parse_key
from airflow_provider_dashscope_batch.client.types import BatchStatus, RequestCounts
from airflow_provider_dashscope_batch.cost.budget import CostCheckError, CostEstimate
from airflow_provider_dashscope_batch.cost.label import ESTIMATE_METADATA_KEY, CostFigure, estimate_figure
from airflow_provider_dashscope_batch.cost.pricing import region_of
from airflow_provider_dashscope_batch.events import AIRFLOW_RECEIVER
from airflow_provider_dashscope_batch.events.callback import finish_event_metadata
from airflow_provider_dashscope_batch.jobs.failures import ResubmitErrors
from airflow_provider_dashscope_batch.operators.base import remove_late_copies
from airflow_provider_dashscope_batch.operators.cost import COST_XCOM_KEY, LineSink
from airflow_provider_dashscope_batch.operators.job import DashScopeBaseJudgedJobOperator
from airflow_provider_dashscope_batch.operators.lineage import keep_for_lineage, sharded_lineage
from airflow_provider_dashscope_batch.operators.links import (
    DashScopeBatchConsoleLink,
    DashScopeBatchesPageLink,
)
from airflow_provider_dashscope_batch.operators.request_input import DashScopeRequestInputOperator
from airflow_provider_dashscope_batch.operators.rounds import ShardedRound, job_batch
from airflow_provider_dashscope_batch.operators.shard_oss import OssStaging
from airflow_provider_dashscope_batch.operators.shard_staging import (
    CLEANUP_XCOM_KEY,
    ShardStager,
    TaskKilled,
)
from airflow_provider_dashscope_batch.operators.upload import (
    as_path,
    carried_columns,
    input_columns_path,
    store_input_columns,
)
from airflow_provider_dashscope_batch.results.input_columns import InputColumnsWriter, copy_input_columns
from airflow_provider_dashscope_batch.sharding.creator import creator_metadata
from airflow_provider_dashscope_batch.sharding.job import (
    JobOutcomePolicy,
    ShardJob,
    ShardRun,
    batch_history,
    job_token,
    latest_batches,
)
from airflow_provider_dashscope_batch.sharding.split import (
    DEFAULT_MARGIN,
    Shard,
    ShardSizing,
    ShardWriter,
    SplitResult,
    split_csv,
    split_jsonl,
    split_requests,
)
from airflow_provider_dashscope_batch.triggers.sharded import DashScopeShardsTrigger
from airflow_provider_dashscope_batch.validation.builder import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.validation.rules import JsonlValidationError, validate_jsonl
from airflow_provider_dashscope_batch.waiting.late import LateCopies
from airflow_provider_dashscope_batch.waiting.protocol import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    Outcome,
    WaitEvent,
    WaitEventKind,
    WaitSettings,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "CLEANUP_XCOM_KEY",
    "JOB_XCOM_KEY",
    "DashScopeShardedBatchOperator",
    "DashScopeSplitRequestsOperator",
    "TaskKilled",
]


@contextmanager
def _input_errors_fail() -> Iterator[None]:
    """An input the builders cannot turn into requests fails the task: a retry would build the same."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CostCheckError):
            raise
        raise AirflowFailException(f"Nothing was sent: the batch input cannot be built.\n{exc}") from None


class _FirstLineRead(Exception):
    """Stops the preflight pass after the first request when no estimate is wanted."""


#: XCom key of a sharded job's progress (each shard's file, generation and last batch read).
JOB_XCOM_KEY = "shard_job"
#: Follow-up rounds of a sharded try by default (the operator holds its input, so a round needs nothing).
DEFAULT_RESUBMIT_ROUNDS = 1


class _ShardingOperator(DashScopeRequestInputOperator):
    """The input of a sharded job (a :class:`RequestInput`) and how it is split."""

    def __init__(
        self,
        *,
        max_requests_per_shard: int | None = None,
        max_bytes_per_shard: int | None = None,
        margin: float = DEFAULT_MARGIN,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_requests_per_shard = max_requests_per_shard
        self.max_bytes_per_shard = max_bytes_per_shard
        self.margin = margin

    def _split(
        self,
        destination: ShardWriter | ObjectStoragePath | Path,
        on_shard: Callable[[Shard], Shard] | None = None,
        catalog: Catalog | None = None,
        carried: Sequence[str] | None = None,
    ) -> SplitResult:
        """
        Split the input into ``destination``, its lines checked with ``catalog`` (default: shipped); the
        keys ``carried`` names are left out of the lines built from ``requests``.
        """
        source = self.request_input
        sizing = ShardSizing(
            self.max_requests_per_shard,
            self.max_bytes_per_shard,
            self.margin,
            self.max_violations,
            catalog,
        )
        try:
            if source.file is not None:
                result = split_jsonl(
                    as_path(source.file),
                    destination,
                    endpoint=source.endpoint,
                    sizing=sizing,
                    on_shard=on_shard,
                )
            elif source.csv is not None:
                csv = as_path(source.csv)
                # opened binary here: a text-mode ObjectStoragePath.open() breaks csv reading on Airflow 3.0
                with csv.open("rb") as stream:
                    result = split_csv(
                        stream,
                        destination,
                        name=str(csv),
                        sizing=sizing,
                        on_shard=on_shard,
                        **source.csv_options(),
                    )
            else:
                with ExitStack() as stack:
                    carry = None
                    if carried is not None:  # written by the preflight pass: here only left out of the lines
                        carry = InputColumnsWriter(stack.enter_context(open(os.devnull, "wb")), carried)
                    result = split_requests(
                        source.requests or (),
                        destination,
                        endpoint=source.built_endpoint,
                        model=source.model,
                        sizing=sizing,
                        on_shard=on_shard,
                        carry=carry,
                    )
        except JsonlValidationError as exc:
            raise AirflowFailException(f"Not split: the batch input is invalid.\n{exc}") from None
        self.log.info(
            "Split %s requests into %s shard(s): %s",
            result.requests,
            len(result.shards),
            ", ".join(
                f"#{s.index} lines {s.first_line}..{s.first_line + s.requests - 1}" for s in result.shards
            ),
        )
        return result


class DashScopeSplitRequestsOperator(_ShardingOperator):
    """
    Split one input into shard files in object storage, each within the service's per-file limits.

    Every line is checked by the upload operator's rules as if the whole input were one file (one
    model, one url, ``custom_id`` unique across all shards); a violation names its line in the input
    and nothing is returned. The same input gives the same shards, under the same names, so the task can
    be re-run. Feed the result to dynamic task mapping::

        split = DashScopeSplitRequestsOperator(task_id="split", csv=..., model=..., destination=...)
        upload = DashScopeUploadFileOperator.partial(task_id="upload").expand(file=split.output)
        create = DashScopeCreateBatchOperator.partial(task_id="create", deferrable=True).expand(
            input_file_id=upload.output
        )

    :param destination: Folder (local path, URL or ``ObjectStoragePath``) the shards land in as
        ``shard-00000.jsonl``, ... (templated; include ``{{ run_id }}`` to keep runs apart).
    :param file: Local path, URL or ``ObjectStoragePath`` of a JSONL file (templated); or ``requests``
        or ``csv`` (templated) and the arguments that build their lines: see
        :class:`~.request_input.RequestInput`.
    :param endpoint: Every line's ``url`` must equal it; built requests use it (default
        ``/v1/chat/completions`` for them) (templated).
    :param max_requests_per_shard: Lines per shard (default: the service's limit times ``margin``).
    :param max_bytes_per_shard: Bytes per shard (default: the service's limit times ``margin``).
    :param margin: Fraction of the service's per-file limits a shard uses by default.
    :param max_violations: How many violations to list in the error (all are counted).
    :return: The shards' URIs; the full description (sizes, SHA-256, first lines) is pushed to XCom
        under the key ``split``.
    """

    template_fields: Sequence[str] = ("destination", "file", "requests", "csv", "template", "endpoint")
    ui_color = "#ff6a00"

    def __init__(self, *, destination: str | ObjectStoragePath, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination

    def execute(self, context: Context) -> list[str]:
        base = as_path(self.destination)
        if isinstance(base, Path):
            base.mkdir(parents=True, exist_ok=True)
        result = self._split(base)
        context["ti"].xcom_push(key="split", value=result.to_dict())
        return [s.uri for s in result.shards]


class DashScopeShardedBatchOperator(_ShardingOperator, DashScopeBaseJudgedJobOperator):
    """
    Run any number of requests as one job: split, upload and batch every shard, wait for all in one deferral.

    The input is split as by :class:`DashScopeSplitRequestsOperator` (checked line by line, nothing is
    created if any line is bad), each shard spooled to a local temporary file, uploaded and deleted
    locally. At most ``max_active_batches`` batches run at once; the others start as running ones finish.
    The task waits for all of them in the triggerer with one
    :class:`~airflow_provider_dashscope_batch.triggers.sharded.DashScopeShardsTrigger`, then judged by
    :class:`~airflow_provider_dashscope_batch.sharding.job.JobOutcomePolicy` after the job's last round:
    every shard's state over all its rounds (answered, failed for good, unanswered) by the ``on_*`` outcome
    parameters, then the whole job by ``min_success_ratio``.

    A shard's batch is never created twice and a retry (or a re-run of the same DAG run) redoes only the
    shards that did not succeed: every batch carries an idempotency key made of the task instance, the
    shard's position and its SHA-256, plus a generation. A new try splits the input again (the same input
    gives the same shards), finds the earlier batches by one listing, re-attaches to the running and the
    good ones, and replaces only the failed ones: with a round of the shard's requests that no earlier
    batch of it answered or failed for good (:mod:`airflow_provider_dashscope_batch.jobs`; an answered
    request is never billed twice), or, when none was answered, its whole input file again.

    Before any of that, a preflight pass over the whole input estimates its tokens and cost
    (:doc:`/cost`; XCom key ``cost_estimate``) and applies the region, thinking-mode and budget checks, so
    a job over budget uploads and creates nothing. With ``estimate_cost=False`` the pass reads only the
    first request (region and thinking-mode checks).

    The cost arguments (``max_cost``, ``approve_above``, ...) and the outcome arguments of each shard's
    batch (``on_expired``, ...) are
    :class:`~airflow_provider_dashscope_batch.operators.job.DashScopeBaseJudgedJobOperator`'s.

    :param file: Local path, URL or ``ObjectStoragePath`` of a JSONL file (templated); or ``requests``
        or ``csv`` (templated) and the arguments that build their lines: see
        :class:`~.request_input.RequestInput`.
    :param endpoint: Every line's ``url`` must equal it; built requests use it (default
        ``/v1/chat/completions`` for them; a file's lines may use any one endpoint). The batches'
        endpoint is the lines' ``url`` (templated).
    :param completion_window: ``"24h"`` to ``"14d"`` or a timedelta, per batch.
    :param metadata: Extra batch metadata; ``ds_name`` is prefixed with the job token.
    :param max_active_batches: Most batches of this job running at once.
    :param min_success_ratio: Least fraction (0..1) of all requests that must succeed.
    :param max_requests_per_shard: Lines per shard (default: the service's limit times ``margin``).
    :param max_bytes_per_shard: Bytes per shard (default: the service's limit times ``margin``).
    :param margin: Fraction of the service's per-file limits a shard uses by default.
    :param max_violations: How many violations to list in the error (all are counted).
    :param poll_interval: Shortest seconds between two polls of one batch.
    :param max_poll_interval: Cap the interval grows to.
    :param poll_backoff: Growth factor of the interval.
    :param error_budget: Consecutive retryable polling errors tolerated per batch.
    :param wait_timeout: Give up waiting after this long (seconds or timedelta) and cancel the running
        batches; defaults to no limit (each batch's completion window still ends it).
    :param cancel_on_kill: Cancel the running batches when a user marks the deferred task failed
        (Airflow 3.3+; a cleared task's next try re-attaches to them instead).
    :param finish_callback: ``"airflow"``: every shard's batch calls this Airflow's receiver when it
        finishes (a fresh token each), and the deferred waits, polling on their schedule, are also woken
        by the confirmed finish (see :doc:`/completion-events`); or an http(s) URL of your own receiver.
        Only cn-beijing sends completion notifications: on another region's connection the task fails
        before sending anything.
    :param resubmit_rounds: Most follow-up rounds of a try after the shards' first batches (default 1:
        one sweeps up an expiry or a burst of throttling; each round waits a completion window of its
        own). A shard whose batch ended ``expired``, ``cancelled`` or ``completed`` with transient failures
        gets a round of its requests not yet answered or failed for good; 0 keeps one batch per shard.
    :param resubmit_errors: Which failed requests a replacement round sends again (see
        :class:`~airflow_provider_dashscope_batch.operators.batch.DashScopeCreateBatchOperator`).
    :param stage_to: Write the shards to this OSS folder (``oss://bucket/prefix``, any ``ObjectStoragePath``
        whose bucket is the OSS bucket, or a local folder whose first component stands for it) and create
        their batches from ``oss:<region>:<bucket>/<key>`` ids instead of uploading them: no upload, no
        file-store quota. cn-beijing connections only (the task fails before staging otherwise). A retry
        re-uses an object already staged (its name carries the shard's token); staged objects are never
        deleted (templated).
    :param carry_columns: ``csv`` or ``requests`` only: input columns to carry into the result tables, as
        the upload operator's (:ref:`transfer:input-columns`): checked over the whole input before anything
        is sent, each column typed over the whole input, stored per shard after the split.
    :param carry_columns_to: Directory URL (or ``ObjectStoragePath``) of the carried columns: one
        ``<file id>.jsonl`` per input file of the job (every shard's, every round's); give the transfer
        the same one as ``input_columns`` (templated).
    :return: ``{"batch_ids", "requests", "request_counts", "shards"}`` (``request_counts``: the job's,
        ``completed`` its answered requests, ``failed`` the rest); ``batch_ids`` (every batch of the
        job: per shard in input order, its rounds in order) is also pushed under its own XCom key for the
        results transfer.
    """

    template_fields: Sequence[str] = (
        "file",
        "requests",
        "csv",
        "template",
        "endpoint",
        "metadata",
        "finish_callback",
        "stage_to",
        "carry_columns_to",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"metadata": "json"}
    #: The job's estimate, which every shard's batch carries in its metadata (set at each try's start).
    _estimated: CostFigure | None = None
    ui_color = "#ff6a00"
    operator_extra_links = (DashScopeBatchConsoleLink(), DashScopeBatchesPageLink())

    def __init__(
        self,
        *,
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        max_active_batches: int = 100,
        min_success_ratio: float = 0.0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poll_backoff: float = DEFAULT_POLL_BACKOFF,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        wait_timeout: timedelta | float | None = None,
        cancel_on_kill: bool = True,
        finish_callback: str | None = None,
        resubmit_rounds: int = DEFAULT_RESUBMIT_ROUNDS,
        resubmit_errors: Mapping[int | str, bool] | None = None,
        stage_to: str | ObjectStoragePath | None = None,
        carry_columns: Sequence[str] | None = None,
        carry_columns_to: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(resubmit_rounds, int) or resubmit_rounds < 0:
            raise ValueError(f"resubmit_rounds must be an int >= 0; got {resubmit_rounds!r}")
        self.resubmit_rounds = resubmit_rounds
        self.resubmit_errors = ResubmitErrors.of(resubmit_errors)
        if max_active_batches < 1:
            raise ValueError("max_active_batches must be >= 1")
        self.completion_window = completion_window
        self.metadata = metadata
        self.max_active_batches = max_active_batches
        self.job_policy = JobOutcomePolicy(self.outcome_policy, min_success_ratio)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.poll_backoff = poll_backoff
        self.error_budget = error_budget
        self.wait_timeout = wait_timeout
        self.cancel_on_kill = cancel_on_kill
        self.finish_callback = finish_callback
        self.stage_to = stage_to
        self.carry_columns = carried_columns(carry_columns, carry_columns_to, self.file)
        self.carry_columns_to = carry_columns_to
        self._stager: ShardStager | None = None  # this try's, built when it starts

    def on_kill(self) -> None:
        """
        Stop at the next step: no upload or create starts after this (Airflow calls it on SIGTERM).

        Called from the signal handler, so it only sets a flag; the task's own thread then stops before
        its next upload or create. What this try uploaded and created stays for the next try, which finds
        the files by their upload tokens and the batches by their idempotency keys, unless a user marked
        the task failed: then the files are deleted and, with ``cancel_on_kill``, the batches cancelled.
        """
        if self._stager is not None:
            self._stager.kill()

    def _start_try(self) -> ShardStager:
        """
        A fresh stager for this try (``dag.test()`` runs every try in one operator object); with
        ``stage_to`` it writes to OSS, read for the connection's region (a follow-up round after a
        deferral stages where the first try did).
        """
        oss = None
        if self.stage_to is not None:
            extra = self.hook.get_connection(self.hook.dashscope_conn_id).extra_dejson
            oss = OssStaging.of(self.stage_to, region_of(extra))
        self._stager = ShardStager(
            policy=self.outcome_policy,
            cancel_on_kill=self.cancel_on_kill,
            retries=self.retries or 0,
            log=self.log,
            oss=oss,
        )
        return self._stager

    # ------------------------------------------------------------------------------- first try
    def execute(self, context: Context) -> dict[str, Any]:
        # the carried columns of the whole input: written by the preflight, stored per shard after the split
        with tempfile.TemporaryFile() if self.carry_columns is not None else nullcontext() as rows:
            carry = None
            if rows is not None:
                carry = InputColumnsWriter(
                    rows, self.carry_columns, infer_types=self.request_input.csv is not None
                )
            return self._first_try(context, carry)

    def _first_try(self, context: Context, carry: InputColumnsWriter | None) -> dict[str, Any]:
        stager = self._start_try()
        self.cost.check_finish_callback(self.finish_callback)
        estimate = self._preflight(carry)
        self.cost.push_estimate(context, estimate)
        self._estimated = estimate_figure([estimate] if estimate else [], self.cost.cost_policy.basis)
        ti = context["ti"]
        token = job_token(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        client = self.hook.get_conn()
        DashScopeBatchConsoleLink.persist(context, self, self.hook)
        listed = list(client.list_batches(ds_name=token))
        earlier = latest_batches(listed)
        stager.history = batch_history(listed)
        stored = stager.stored_files(client, context, token, {b.input_file_id for b in listed})
        self.log.info(
            "Job %s: %s batch(es) and %s unused file(s) of earlier tries found",
            token,
            len(earlier),
            len(stored),
        )
        runs: list[ShardRun] = []
        staged: list[str] = []
        replacement = self._round(client, f"replacement round of {self.task_id}")

        def plan(shard: Shard) -> Shard:
            runs.append(stager.plan(client, token, shard, earlier, stored, staged, replacement))
            return shard

        with tempfile.TemporaryDirectory(prefix="dashscope-shards-") as tmp:

            def spool(index: int) -> tuple[IO[bytes], str]:
                path = Path(tmp) / f"{token}-shard-{index:05d}.jsonl"
                return path.open("wb"), str(path)

            try:
                endpoint = self._split(spool, plan, self.cost.model_catalog(), self.carry_columns).endpoint
                replacement.check(self.cost.cost_policy, None)  # before any remainder is staged
                for index, path in replacement.remainders.items():
                    run = runs[index]
                    runs[index] = stager.stage_file(
                        client, run.shard, run.key_base, run.generation, path, stored, staged
                    )
                if carry is not None:
                    self._store_columns(carry, runs, stager.history)
            except TaskKilled:
                stager.after_kill(client, context, staged)
                raise
            except BaseException:
                # a bad line later in the input: the files of this try and of earlier ones are useless
                stager.delete_files(client, context, [*staged, *(f.id for f in stored.values())])
                raise
        stager.delete_files(client, context, [f.id for f in stored.values()])  # files no shard has now
        deadline = None
        if self.wait_timeout is not None:
            seconds = (
                self.wait_timeout.total_seconds()
                if isinstance(self.wait_timeout, timedelta)
                else self.wait_timeout
            )
            deadline = time.time() + float(seconds)
        try:
            job = ShardJob(token, endpoint, deadline, tuple(runs), self.resubmit_rounds)
            return self._advance(context, client, stager, job)
        except TaskKilled:
            stager.after_kill(client, context, staged)
            raise

    def _preflight(self, carry: InputColumnsWriter | None) -> Any:
        """
        Estimate the whole input (or check its first request) before anything is sent; with ``carry``,
        write (and so check) every request's carried columns.
        """
        request = self.request_input
        estimator = self.cost.cost_estimator(str(request.file or request.csv or "requests"))

        def feed(line: bytes) -> None:
            estimator.feed(line)
            if not self.cost.estimate_cost and carry is None:
                raise _FirstLineRead

        with self.cost.cost_checks(), suppress(_FirstLineRead), _input_errors_fail():
            if request.file is not None:
                validate_jsonl(as_path(request.file), endpoint=request.endpoint, on_line=feed)
            elif request.csv is not None:
                with as_path(request.csv).open("rb") as stream:
                    write_requests_from_csv(
                        stream,
                        LineSink(feed),  # type: ignore[arg-type]
                        name=str(request.csv),
                        model=str(request.model),
                        endpoint=request.built_endpoint,
                        text_column=request.text_column,
                        id_column=request.id_column,
                        template=request.template,
                        system_prompt=request.system_prompt,
                        body_params=request.body_params,
                        image_column=request.image_column,
                        inputs_per_request=request.inputs_per_request,
                        carry=carry,
                    )
            else:
                write_requests(
                    request.requests or (),
                    LineSink(feed),  # type: ignore[arg-type]
                    endpoint=request.built_endpoint,
                    model=request.model,
                    carry=carry,
                )
        return self.cost.settle_estimate(estimator)

    def _store_columns(
        self, carry: InputColumnsWriter, runs: Sequence[ShardRun], history: Mapping[str, Sequence[Batch]]
    ) -> None:
        """
        Store each shard's carried columns under its input file's id, and under those of its earlier
        batches (a try killed before storing them leaves none): the rows, in input order, are cut where
        the shards are (a request's row, or each packed text's).
        """
        directory = self.carry_columns_to
        assert directory is not None
        rows = carry.row_lines()
        per_request = self.request_input.inputs_per_request if self.request_input.csv is not None else 1
        for i, run in enumerate(runs):
            count = None if i == len(runs) - 1 else run.shard.requests * per_request  # the last: the rest
            earlier = [b.input_file_id for b in history.get(run.key_base, ()) if b.input_file_id]
            first, *others = dict.fromkeys([str(run.file_id), *earlier])
            target = input_columns_path(directory, first)
            store_input_columns(target, carry.header(first), islice(rows, count))
            for other in others:
                self._copy_columns(first, other)
        if next(rows, None) is not None:
            raise AirflowException(f"{carry.rows} rows of carried columns do not line up with the shards")
        self.log.info(
            "Stored %d rows of columns %s for %d shard(s) under %s",
            carry.rows,
            ", ".join(carry.names),
            len(runs),
            directory,
        )

    def _copy_columns(self, from_file: str, to_file: str) -> None:
        """The carried columns of a round's input file: those of the file it is a remainder of."""
        directory = self.carry_columns_to
        assert directory is not None
        target = input_columns_path(directory, to_file)
        with input_columns_path(directory, from_file).open("rb") as source:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_input_columns(source, target, to_file)

    # ----------------------------------------------------------------------------- fan-out
    def _advance(
        self, context: Context, client: DashScopeClient, stager: ShardStager, job: ShardJob
    ) -> dict[str, Any]:
        """Start shards while under the cap, then defer until the running batches finish, or finish."""
        runs = list(job.runs)
        active = sum(r.running for r in runs)
        for i, run in enumerate(runs):
            if run.batch is None and active < self.max_active_batches:
                runs[i] = self._create(client, stager, job, run, context)
                active += 1
        job = replace(job, runs=tuple(runs))
        running = [r.batch for r in runs if r.running and r.batch is not None]
        if not running:
            follow_up = self._next_round(client, stager, job) if job.rounds_left else None
            if follow_up is not None:
                return self._advance(context, client, stager, follow_up)
            return keep_for_lineage(self, self._finish(context, client, job))
        waiting = sum(r.batch is None for r in runs)
        # resume state goes to XCom, not defer(kwargs=...): dag.test() drops those, and the UI shows XCom
        context["ti"].xcom_push(key=JOB_XCOM_KEY, value=job.to_dict())
        self.log.info(
            "Waiting for %s running batch(es); %s shard(s) wait for a free slot", len(running), waiting
        )
        events = self.finish_callback == AIRFLOW_RECEIVER
        self.defer(
            trigger=DashScopeShardsTrigger(
                [b.id for b in running],
                self.dashscope_conn_id,
                input_file_ids=[b.input_file_id for b in running],
                idempotency_keys=[(b.metadata or {}).get(IDEMPOTENCY_KEY) for b in running],
                late_copies=[
                    None if r.late is None else r.late.to_dict()
                    for r in runs
                    if r.running and r.batch is not None
                ],
                until="any" if waiting else "all",
                wait=WaitSettings(
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    poll_backoff=self.poll_backoff,
                    deadline=job.deadline,
                    error_budget=self.error_budget,
                    cancel_on_kill=self.cancel_on_kill,
                    finish_events=events,
                ),
            ),
            method_name="execute_complete",
        )

    def _next_round(self, client: DashScopeClient, stager: ShardStager, job: ShardJob) -> ShardJob | None:
        """
        A follow-up round of every shard whose batch ended short (expired, cancelled, transient
        failures): the input is split again and each such shard's remainder written, then (with
        ``max_cost``) the remainders' estimate plus what every answer so far cost is checked against it,
        and only then are the remainders staged; ``None`` if none has one.
        """
        short = {i for i, r in enumerate(job.runs) if r.batch is not None and _ended_short(r.batch)}
        if not short:
            return None
        stager.history = batch_history(client.list_batches(ds_name=job.token))
        runs = list(job.runs)
        staged: list[str] = []
        follow_up = self._round(client, f"follow-up round of {self.task_id}")

        def plan(shard: Shard) -> Shard:
            run, spooled = runs[shard.index], Path(shard.uri)
            try:
                if run.batch is not None:
                    rounds = stager.history.get(run.key_base) or [run.batch]
                    generation = run.generation + 1 if shard.index in short else None
                    follow_up.add(shard.index, spooled, rounds, shard.requests, generation)
            finally:
                spooled.unlink(missing_ok=True)
            return shard

        with tempfile.TemporaryDirectory(prefix="dashscope-shards-") as tmp:

            def spool(index: int) -> tuple[IO[bytes], str]:
                path = Path(tmp) / f"{job.token}-shard-{index:05d}.jsonl"
                return path.open("wb"), str(path)

            self._split(spool, plan, carried=self.carry_columns)
            follow_up.check(self.cost.cost_policy, follow_up.generation - 1 + job.rounds_left)
            for index, path in follow_up.remainders.items():
                run = runs[index]
                runs[index] = stager.stage_file(
                    client, run.shard, run.key_base, run.generation + 1, path, {}, staged
                )
                if self.carry_columns is not None:
                    self._copy_columns(str(run.file_id), str(runs[index].file_id))
        if not staged:
            return None
        return replace(job, runs=tuple(runs), rounds_left=job.rounds_left - 1)

    def _round(self, client: DashScopeClient, what: str) -> ShardedRound:
        """A round of this job's shards: with ``max_cost``, its answers priced and remainders estimated."""
        budget = self.cost.cost_policy.max_cost is not None
        return ShardedRound(
            client,
            self.resubmit_errors,
            self.log,
            meter=self.cost.cost_meter() if budget else None,
            estimator=self.cost.cost_estimator(what) if budget else None,
        )

    def _create(
        self, client: DashScopeClient, stager: ShardStager, job: ShardJob, run: ShardRun, context: Context
    ) -> ShardRun:
        stager.stop_if_killed()
        metadata = {**(self.metadata or {}), **creator_metadata(context["ti"])}
        name = f"{job.token} {metadata.get('ds_name') or self.task_id} {run.shard.index + 1}/{len(job.runs)}"
        metadata["ds_name"] = name[:100]
        if self._estimated is not None:
            metadata[ESTIMATE_METADATA_KEY] = self._estimated.label()
        receiver = self.finish_callback == AIRFLOW_RECEIVER
        metadata.update(finish_event_metadata(self.hook, run.idempotency_key, callback=receiver))
        if not receiver and self.finish_callback:
            metadata["ds_batch_finish_callback"] = self.finish_callback
        receipt = client.create_batch_receipt(
            input_file_id=str(run.file_id),
            endpoint=job.endpoint,
            completion_window=self.completion_window,
            metadata=metadata,
            idempotency_key=run.idempotency_key,
        )
        batch = receipt.value
        stager.created.append(batch)
        self.log.info("Shard %s: created batch %s (generation %s)", run.shard.index, batch.id, run.generation)
        late = (
            LateCopies.of(receipt.ambiguity) if run.late is None else run.late.with_create(receipt.ambiguity)
        )
        return replace(run, batch=batch, late=late)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: record the finished batches, start more shards or finish."""
        stager = self._start_try()
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        stored = ti.xcom_pull(
            task_ids=ti.task_id, key=JOB_XCOM_KEY, map_indexes=map_index if map_index >= 0 else None
        )
        pushed = ti.xcom_pull(
            task_ids=ti.task_id, key=COST_XCOM_KEY, map_indexes=map_index if map_index >= 0 else None
        )
        estimates = [CostEstimate.model_validate(pushed)] if isinstance(pushed, dict) else []
        self._estimated = estimate_figure(estimates, self.cost.cost_policy.basis)
        # a job deferred by an earlier version kept no endpoint: its batches used the operator's
        job = ShardJob.from_dict({"endpoint": self.request_input.built_endpoint, **stored})
        shard_runs = list(job.runs)
        try:
            events = [WaitEvent.from_payload(p) for p in (event or {})["events"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AirflowException(
                f"Unexpected event from DashScopeShardsTrigger: {event!r} ({exc})"
            ) from None
        by_id = {e.batch_id: e for e in events}
        client = self.hook.get_conn()
        for i, run in enumerate(shard_runs):
            ended = by_id.get(run.batch.id) if run.batch is not None else None
            if ended is not None and ended.kind is WaitEventKind.TERMINAL and ended.batch is not None:
                shard_runs[i] = run.with_batch(ended.batch)
        for ended in events:  # the trigger only reads: its resume step removes the late copies it saw
            if ended.kind is WaitEventKind.LATE_COPIES:
                remove_late_copies(self.hook, ended, self.log)
        problems = [e for e in events if e.kind not in (WaitEventKind.TERMINAL, WaitEventKind.LATE_COPIES)]
        if problems:
            if any(e.kind is WaitEventKind.TIMEOUT for e in problems):
                for run in shard_runs:
                    if run.running and run.batch is not None:
                        self.log.info("Cancelling batch %s because the wait timed out", run.batch.id)
                        try:
                            client.cancel_batch(run.batch.id)
                        except DashScopeError as exc:
                            self.log.warning("Could not cancel batch %s: %s", run.batch.id, exc)
            raise AirflowException("; ".join(e.message for e in problems))
        try:
            return self._advance(context, client, stager, replace(job, runs=tuple(shard_runs)))
        except TaskKilled:
            stager.after_kill(client, context, [str(r.file_id) for r in shard_runs if r.batch is None])
            raise

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the source file -> every shard's batch; see :mod:`.lineage`."""
        return sharded_lineage(self)

    # ------------------------------------------------------------------------------ outcome
    def _finish(self, context: Context, client: DashScopeClient, job: ShardJob) -> dict[str, Any]:
        """
        Judge the job after its last round: each shard's state (answered, failed for good, unanswered over
        all its rounds) by the outcome parameters, the whole job's by ``min_success_ratio``.
        """
        runs = job.runs
        history = batch_history(client.list_batches(ds_name=job.token)) if runs else {}
        whole = ShardedRound(client, self.resubmit_errors, self.log)
        batch_ids: list[str] = []
        judged: list[Batch] = []
        for run in runs:
            if run.batch is None:
                continue
            rounds = _rounds_of(run, history)
            batch_ids.extend(b.id for b in rounds)
            state = whole.add(run.shard.index, Path(run.shard.uri), rounds, run.shard.requests)
            judged.append(job_batch(run.batch, state.counts))
        context["ti"].xcom_push(key="batch_ids", value=batch_ids)
        counts = whole.counts
        verdict = self.job_policy.evaluate(judged)
        reason = f"{verdict.reason} Job over {len(batch_ids)} batch(es): {counts.summary()}."
        if verdict.outcome is Outcome.FAIL:
            raise AirflowException(reason)
        if verdict.outcome is Outcome.SKIP:
            raise AirflowSkipException(reason)
        self.log.info("%s", reason)
        return {
            "batch_ids": batch_ids,
            "requests": sum(r.shard.requests for r in runs),
            "request_counts": RequestCounts(
                total=counts.total, completed=counts.answered, failed=counts.total - counts.answered
            ).model_dump(),
            "shards": [
                {
                    **r.shard.to_dict(),
                    "batch_id": r.batch.id if r.batch else None,
                    "status": str(r.batch.status) if r.batch else None,
                    "generation": r.generation,
                }
                for r in runs
            ],
        }


def _rounds_of(run: ShardRun, history: Mapping[str, Sequence[Batch]]) -> list[Batch]:
    """A shard's batches in order: one per earlier generation, then its current one."""
    assert run.batch is not None
    seen: dict[int, Batch] = {}
    for batch in history.get(run.key_base, []):
        generation = _generation_of(batch)
        if generation < run.generation:
            seen.setdefault(generation, batch)
    return [*(seen[g] for g in sorted(seen)), run.batch]


def _generation_of(batch: Batch) -> int:
    parsed = parse_key(key_of(batch))
    return 0 if parsed is None or parsed[1] is None else parsed[1]


def _ended_short(batch: Batch) -> bool:
    """Whether a shard's batch left requests a follow-up round may answer."""
    counts = batch.request_counts
    if batch.status in (BatchStatus.EXPIRED, BatchStatus.CANCELLED):
        return True
    return batch.status == BatchStatus.COMPLETED and counts is not None and counts.failed > 0
