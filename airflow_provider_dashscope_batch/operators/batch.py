"""Operators for the DashScope Batch API: upload an input file, create a batch, cancel a batch."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    ObjectStoragePath,
    conf,
)

from airflow_provider_dashscope_batch.client.errors import DashScopeError, InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.jsonl import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.policy import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    BatchPoller,
    Outcome,
    OutcomePolicy,
    PollSchedule,
    is_terminal,
)
from airflow_provider_dashscope_batch.triggers.batch import (
    EVENT_STATUSES,
    TERMINAL,
    TIMEOUT,
    DashScopeBatchTrigger,
    is_transient,
    retry_after_of,
)
from airflow_provider_dashscope_batch.validation import validate_jsonl

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dashscope_batch.client import DashScopeClient

__all__ = [
    "BatchWaitTimeout",
    "DashScopeBaseBatchOperator",
    "DashScopeCancelBatchOperator",
    "DashScopeCreateBatchOperator",
    "DashScopeUploadFileOperator",
    "idempotency_key_for",
    "judge_batch",
    "validate_event",
    "wait_for_batch",
]

#: ``task_state_store`` key holding the batch id (Airflow 3.3+); renaming it breaks in-flight retries.
STATE_KEY = "dashscope_batch_id"


class BatchWaitTimeout(AirflowException):
    """The wait for a batch reached its deadline before the batch finished."""


def idempotency_key_for(context: Context) -> str:
    """
    A key that is the same for every try of one task instance (dag, task, run, map index; no try number).

    A retried or cleared task computes the same key and so finds the batch an earlier try created.
    """
    ti = context["ti"]
    raw = "\x1f".join((ti.dag_id, ti.task_id, ti.run_id, str(getattr(ti, "map_index", -1))))
    return "airflow-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def validate_event(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Reject a missing or malformed trigger event instead of misreading it."""
    if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
        raise AirflowException(f"Unexpected event from DashScopeBatchTrigger: {event!r}")
    return event


def judge_batch(policy: OutcomePolicy, batch: dict[str, Any], log: Any) -> dict[str, Any]:
    """
    Apply the outcome policy to a terminal batch: return it, or raise skip / failure.

    :raises AirflowSkipException: if the policy maps the batch to ``skip``.
    :raises AirflowException: if the policy maps the batch to ``fail`` (retries may create a new batch).
    """
    verdict = policy.evaluate(batch)
    if verdict.outcome == Outcome.SKIP:
        raise AirflowSkipException(verdict.reason)
    if verdict.outcome == Outcome.FAIL:
        raise AirflowException(verdict.reason)
    log.info("%s", verdict.reason)
    return batch


def wait_for_batch(
    client: DashScopeClient,
    batch_id: str,
    poller: BatchPoller,
    *,
    log: Any,
) -> dict[str, Any]:
    """
    Poll a batch in-process until it is terminal, following ``poller``'s schedule.

    :return: The terminal batch as a JSON dict.
    :raises BatchWaitTimeout: when the poller's deadline passes first.
    :raises AirflowException: on an error the poller will not retry.
    """
    batch: dict[str, Any] | None = None
    step = poller.first_delay(time.time())
    while step.action == "wait":
        time.sleep(step.delay)
        try:
            batch = client.retrieve_batch(batch_id).model_dump(mode="json")
        except DashScopeError as exc:
            step = poller.on_error(
                str(exc), transient=is_transient(exc), now=time.time(), retry_after=retry_after_of(exc)
            )
            if step.action == "wait":
                log.warning("Polling batch %s failed (%s); retrying", batch_id, exc)
            continue
        log.info("Batch %s is %s", batch_id, batch["status"])
        step = poller.on_status(batch["status"], time.time())
    if step.action == "done" and batch is not None:
        return batch
    raise (BatchWaitTimeout if step.action == "timeout" else AirflowException)(step.message)


class DashScopeUploadFileOperator(BaseOperator):
    """
    Validate a batch input file line by line, then stream it to DashScope; returns the file id.

    The input is one of: a JSONL ``file``; ``requests``, an iterable of request dicts or bodies; or a
    ``csv`` file plus a message ``template`` (the service docs' "CSV to JSONL" tool). Built input goes to
    a local temporary file, streamed, never held in memory. The preflight check
    (:func:`~airflow_provider_dashscope_batch.validation.validate_jsonl`) enforces every rule the service
    does and names each offending line and rule, so a bad file costs no upload and no batch.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeUploadFileOperator`

    :param file: Local path, URL (``s3://conn@bucket/key``, ``file:///...``) or ``ObjectStoragePath`` of
        a JSONL file (templated).
    :param requests: Request dicts (``custom_id``/``method``/``url`` default to the item number, POST and
        ``endpoint``) or request bodies (templated, e.g. an upstream task's XCom).
    :param csv: Local path, URL or ``ObjectStoragePath`` of a CSV file, one request per row (templated).
    :param model: ``body.model`` for built requests that do not set one (required for ``csv``).
    :param template: ``csv`` only: user message built with :meth:`str.format` from the row's columns.
    :param system_prompt: ``csv`` only: system message put before each user message.
    :param text_column: ``csv`` only: column with the user text when no ``template`` is given.
    :param id_column: ``csv`` only: column with the ``custom_id`` (None numbers the rows).
    :param body_params: ``csv`` only: extra body fields, e.g. ``{"temperature": 0.2}``.
    :param endpoint: Every line's ``url`` must equal it; built requests use it (default
        ``/v1/chat/completions`` for them) (templated).
    :param filename: Name the file gets in DashScope (default: the source's name).
    :param max_violations: How many violations to list in the error (all are counted).
    :param dashscope_conn_id: The DashScope connection id.
    :return: The uploaded file's id.
    """

    template_fields: Sequence[str] = ("file", "requests", "csv", "template", "endpoint", "filename")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        file: str | os.PathLike[str] | ObjectStoragePath | None = None,
        requests: Iterable[Mapping[str, Any]] | None = None,
        csv: str | os.PathLike[str] | ObjectStoragePath | None = None,
        model: str | None = None,
        template: str | None = None,
        system_prompt: str | None = None,
        text_column: str | int = 1,
        id_column: str | int | None = 0,
        body_params: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        filename: str | None = None,
        max_violations: int = 20,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sum(x is not None for x in (file, requests, csv)) != 1:
            raise ValueError("Give exactly one of file=, requests= or csv=.")
        if csv is not None and model is None:
            raise ValueError("csv= needs model= (every request of a batch uses one model).")
        self.file = file
        self.requests = requests
        self.csv = csv
        self.model = model
        self.template = template
        self.system_prompt = system_prompt
        self.text_column = text_column
        self.id_column = id_column
        self.body_params = body_params
        self.endpoint = endpoint
        self.filename = filename
        self.max_violations = max_violations
        self.dashscope_conn_id = dashscope_conn_id

    @cached_property
    def hook(self) -> DashScopeBatchHook:
        """The DashScope hook of this task's connection."""
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def execute(self, context: Context) -> str:
        if self.file is not None:
            return self._validate_and_upload(_as_path(self.file), self.filename)
        with tempfile.TemporaryDirectory(prefix="dashscope-upload-") as tmp:
            built = Path(tmp) / (self.filename or f"{self.task_id}.jsonl")
            endpoint = self.endpoint or "/v1/chat/completions"
            if self.csv is not None:
                lines = write_requests_from_csv(
                    _as_path(self.csv),
                    built,
                    model=str(self.model),
                    text_column=self.text_column,
                    id_column=self.id_column,
                    template=self.template,
                    system_prompt=self.system_prompt,
                    endpoint=endpoint,
                    body_params=self.body_params,
                )
            else:
                lines = write_requests(self.requests or (), built, endpoint=endpoint, model=self.model)
            self.log.info("Built %s request lines", lines)
            return self._validate_and_upload(built, built.name)

    def _validate_and_upload(self, source: Path | ObjectStoragePath, filename: str | None) -> str:
        report = validate_jsonl(source, endpoint=self.endpoint, max_violations=self.max_violations)
        if not report.ok:
            raise AirflowFailException(f"Not uploaded: the batch input file is invalid.\n{report.summary()}")
        self.log.info("%s", report.summary())
        with source.open("rb") as stream:
            uploaded = self.hook.get_conn().upload_file(stream, filename=filename or source.name)
        self.log.info("Uploaded %s as file %s (%s bytes)", source, uploaded.id, uploaded.bytes)
        return uploaded.id


def _as_path(value: str | os.PathLike[str] | ObjectStoragePath) -> Path | ObjectStoragePath:
    """A local ``Path`` for paths and ``file://`` URLs, an ``ObjectStoragePath`` for other URLs."""
    if isinstance(value, ObjectStoragePath):
        return value
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(url2pathname(urlsplit(text).path))
    return ObjectStoragePath(text) if "://" in text else Path(text)


class DashScopeBaseBatchOperator(BaseOperator):
    """
    Shared parts of the batch operators: the hook, the poll settings, in-process or deferred waiting.

    :param dashscope_conn_id: The DashScope connection id.
    :param wait_for_completion: Wait until the batch is terminal.
    :param deferrable: Wait in the triggerer instead of holding a worker slot (default from
        ``[operators] default_deferrable``).
    :param poll_interval: Shortest seconds between polls (default 60; see
        :mod:`~airflow_provider_dashscope_batch.policy` for the arithmetic).
    :param max_poll_interval: Cap the interval grows to (default 300).
    :param poll_backoff: Growth factor of the interval (default 1.5).
    :param error_budget: Consecutive transient polling errors tolerated (default 5).
    :param wait_timeout: Give up waiting after this long (seconds or timedelta); defaults to the task's
        ``execution_timeout``, else no limit (the batch's completion window still ends it).
    :param cancel_on_kill: Cancel the batch when the task is killed or times out while waiting.
    """

    def __init__(
        self,
        *,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poll_backoff: float = DEFAULT_POLL_BACKOFF,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        wait_timeout: timedelta | float | None = None,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dashscope_conn_id = dashscope_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.schedule = PollSchedule(poll_interval, max(max_poll_interval, poll_interval), poll_backoff)
        self.error_budget = error_budget
        self.wait_timeout = wait_timeout
        self.cancel_on_kill = cancel_on_kill
        self._batch_id: str | None = None
        self._cancel_sent = False

    @cached_property
    def hook(self) -> DashScopeBatchHook:
        """The DashScope hook of this task's connection."""
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def _deadline(self) -> float | None:
        limit = self.wait_timeout if self.wait_timeout is not None else self.execution_timeout
        if limit is None:
            return None
        seconds = limit.total_seconds() if isinstance(limit, timedelta) else float(limit)
        return time.time() + seconds

    def _wait(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return the terminal batch (waiting in-process) or defer to :class:`DashScopeBatchTrigger`."""
        deadline = self._deadline()
        if self.deferrable:
            self.defer(
                trigger=DashScopeBatchTrigger(
                    batch_id=batch["id"],
                    dashscope_conn_id=self.dashscope_conn_id,
                    poll_interval=self.schedule.poll_interval,
                    max_poll_interval=self.schedule.max_poll_interval,
                    poll_backoff=self.schedule.backoff,
                    deadline=deadline,
                    error_budget=self.error_budget,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                # A safety net only: the trigger's own deadline fires first, so the batch gets cancelled.
                timeout=None
                if deadline is None
                else timedelta(seconds=deadline - time.time() + 2 * self.schedule.max_poll_interval + 60),
            )
        poller = BatchPoller(self.schedule, deadline=deadline, error_budget=self.error_budget)
        try:
            return wait_for_batch(self.hook.get_conn(), batch["id"], poller, log=self.log)
        except BatchWaitTimeout:
            self._cancel(batch["id"], "the wait timed out")
            raise

    def _terminal_batch(self, event: Mapping[str, Any] | None) -> dict[str, Any]:
        """The terminal batch from a trigger event; cancels on a timeout event, raises on any non-terminal."""
        event = validate_event(event)
        if event["status"] == TERMINAL and event.get("batch"):
            return dict(event["batch"])
        if event["status"] == TIMEOUT:
            self._cancel(event["batch_id"], "the wait timed out")
        raise AirflowException(event.get("message") or f"Waiting for batch {event['batch_id']} failed.")

    def _cancel(self, batch_id: str | None, why: str) -> None:
        if not (batch_id and self.cancel_on_kill) or self._cancel_sent:
            return
        self._cancel_sent = True
        self.log.info("Cancelling batch %s because %s", batch_id, why)
        try:
            self.hook.get_conn().cancel_batch(batch_id)
        except DashScopeError as exc:
            self.log.warning("Could not cancel batch %s: %s", batch_id, exc)

    def on_kill(self) -> None:
        """Cancel the batch this task is waiting for (a user kill or the execution timeout)."""
        self._cancel(self._batch_id, "the task was killed or timed out")


class DashScopeCreateBatchOperator(DashScopeBaseBatchOperator):
    """
    Create a batch, push its id to XCom (key ``batch_id``) and, by default, wait for it to finish.

    A task is never billed twice for one run: the batch carries a run-stable idempotency key (dag, task,
    run, map index; never the try number) in its metadata. A retried or cleared try first looks for the
    batch an earlier try created (``task_state_store`` on Airflow 3.3+, then the list API filtered by input
    file and key) and re-attaches to it; it creates a new batch only if the earlier one ended as a failure
    under the outcome policy.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeCreateBatchOperator`

    :param input_file_id: Id of the uploaded JSONL file (templated).
    :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test`` (templated).
    :param completion_window: ``"24h"`` to ``"14d"`` or a timedelta (templated).
    :param metadata: Extra batch metadata, e.g. ``ds_name`` / ``ds_description`` (templated).
    :param finish_callback_url: URL the service POSTs to when the batch finishes (Beijing region).
    :param on_partial_failure: Outcome of ``completed`` with some requests failed (default success).
    :param on_all_failed: Outcome of ``completed`` with every request failed (default fail).
    :param on_expired: Outcome of ``expired`` (default fail).
    :param on_cancelled: Outcome of ``cancelled`` (default fail).
    :param on_failed: Outcome of ``failed`` (default fail).
    :return: The final batch as a JSON dict (or the fresh batch if ``wait_for_completion=False``).
    """

    template_fields: Sequence[str] = (
        "input_file_id",
        "endpoint",
        "completion_window",
        "metadata",
        "finish_callback_url",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"metadata": "json"}
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        finish_callback_url: str | None = None,
        on_partial_failure: str = Outcome.SUCCESS,
        on_all_failed: str = Outcome.FAIL,
        on_expired: str = Outcome.FAIL,
        on_cancelled: str = Outcome.FAIL,
        on_failed: str = Outcome.FAIL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_file_id = input_file_id
        self.endpoint = endpoint
        self.completion_window = completion_window
        self.metadata = metadata
        self.finish_callback_url = finish_callback_url
        self.outcome_policy = OutcomePolicy(
            on_partial_failure, on_all_failed, on_expired, on_cancelled, on_failed
        )

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.get_conn()
        key = idempotency_key_for(context)
        batch = self._find_earlier_batch(context, client, key)
        if batch is None:
            metadata = dict(self.metadata or {})
            if self.finish_callback_url:
                metadata["ds_batch_finish_callback"] = self.finish_callback_url
            created = client.create_batch(
                input_file_id=self.input_file_id,
                endpoint=self.endpoint,
                completion_window=self.completion_window,
                metadata=metadata or None,
                idempotency_key=key,
            )
            batch = created.model_dump(mode="json")
            self.log.info("Created batch %s (status %s)", batch["id"], batch["status"])
        self._batch_id = batch["id"]
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, batch["id"])
        context["ti"].xcom_push(key="batch_id", value=batch["id"])
        if not self.wait_for_completion:
            return batch
        if not is_terminal(batch["status"]):
            batch = self._wait(batch)
        return self._finish(batch)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: judge the finished batch."""
        return self._finish(self._terminal_batch(event))

    def _find_earlier_batch(
        self, context: Context, client: DashScopeClient, key: str
    ) -> dict[str, Any] | None:
        """The batch an earlier try of this task instance created, if it may be re-attached to."""
        found = None
        store = context.get("task_state_store")
        batch_id = store.get(STATE_KEY) if store is not None else None
        if batch_id:
            try:
                found = client.retrieve_batch(batch_id)
            except NotFoundError:
                found = None
            if found is not None and found.input_file_id != self.input_file_id:
                found = None
        if found is None:
            found = client.find_batch(idempotency_key=key, input_file_id=self.input_file_id)
        if found is None:
            return None
        batch = found.model_dump(mode="json")
        if is_terminal(batch["status"]):
            verdict = self.outcome_policy.evaluate(batch)
            if verdict.outcome == Outcome.FAIL:
                self.log.info("An earlier try's batch ended badly (%s); creating a new one.", verdict.reason)
                return None
        self.log.info(
            "Re-attaching to batch %s created by an earlier try (status %s)", found.id, found.status
        )
        return batch

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        return judge_batch(self.outcome_policy, batch, self.log)


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

    def __init__(self, *, batch_id: str, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(wait_for_completion=wait_for_completion, cancel_on_kill=False, **kwargs)
        self.batch_id = batch_id

    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.get_conn()
        try:
            batch = client.cancel_batch(self.batch_id).model_dump(mode="json")
        except (InvalidRequestError, NotFoundError) as exc:
            batch = client.retrieve_batch(self.batch_id).model_dump(mode="json")
            if not is_terminal(batch["status"]):
                raise
            self.log.info(
                "Batch %s is already %s; nothing to cancel (%s)", self.batch_id, batch["status"], exc
            )
        else:
            self.log.info("Cancellation of batch %s requested (status %s)", self.batch_id, batch["status"])
        if self.wait_for_completion and not is_terminal(batch["status"]):
            batch = self._wait(batch)
        return self._finish(batch)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired."""
        return self._finish(self._terminal_batch(event))

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        if is_terminal(batch["status"]) and batch["status"] != "cancelled":
            self.log.warning(
                "Batch %s finished as %s before the cancellation took effect", batch["id"], batch["status"]
            )
        return batch
