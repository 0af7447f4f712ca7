"""
Bases of the DashScope operators and sensor.

* :class:`DashScopeBaseOperator`: an operator that talks to DashScope (connection id, cached hook).
* :func:`judge`: how a batch judged by an :class:`OutcomePolicy` becomes the task's result (success, skip
  or failure).
* :class:`DashScopeBaseBatchOperator`: waits for a batch in the worker or deferred, and cancels it when
  the wait times out or a user marks the task failed.

How a wait goes and ends lives in :mod:`~airflow_provider_dashscope_batch.waiting`; these classes only
connect it to Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from functools import cached_property, wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseOperator,
    conf,
)

from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.identity import key_of
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.triggers.base import task_instance_state
from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
from airflow_provider_dashscope_batch.waiting.late import (
    LateCopies,
    LateWatch,
    finish_watch_sync,
    read_watching,
)
from airflow_provider_dashscope_batch.waiting.protocol import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    BatchPoller,
    BatchWait,
    Outcome,
    OutcomePolicy,
    WaitEvent,
    WaitEventKind,
    WaitSettings,
    kill_decision,
    wait_for_batch,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "BatchWaitTimeout",
    "DashScopeBaseBatchOperator",
    "DashScopeBaseOperator",
    "judge",
    "releasing_hook",
]

_EntryPoint = TypeVar("_EntryPoint", bound=Callable[..., Any])


def releasing_hook(entry_point: _EntryPoint) -> _EntryPoint:
    """
    Wrap a task's entry point so that its cached ``hook`` is closed and dropped when it returns, raises
    or defers.

    A task keeps no live client between runs: the client holds sockets and locks, which a copy of the
    DAG cannot take (Airflow 3.0's ``dag.test()`` deep-copies the DAG a task already ran in) and a
    long-lived process would keep open. The next run opens a new client.
    """

    @wraps(entry_point)
    def run(task: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return entry_point(task, *args, **kwargs)
        finally:
            hook = task.__dict__.pop("hook", None)
            if hook is not None:
                hook.close()

    return run  # type: ignore[return-value]


class BatchWaitTimeout(AirflowException):
    """The wait for a batch reached its deadline before the batch finished."""


class DashScopeBaseOperator(BaseOperator):
    """
    An operator that talks to DashScope through one connection.

    Its hook lives for one run: every subclass's ``execute``, and every resume, closes it when it ends
    (:func:`releasing_hook`).

    :param dashscope_conn_id: The DashScope connection id.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            cls.execute = releasing_hook(cls.__dict__["execute"])  # type: ignore[method-assign]

    def __init__(
        self, *, dashscope_conn_id: str = DashScopeBatchHook.default_conn_name, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dashscope_conn_id = dashscope_conn_id

    @cached_property
    def hook(self) -> DashScopeBatchHook:
        """The DashScope hook of this task's connection (for the current run)."""
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    @releasing_hook
    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        return super().resume_execution(next_method, next_kwargs, context)


def judge(policy: OutcomePolicy, batch: Batch, log: Any) -> dict[str, Any]:
    """
    Apply an outcome policy to a terminal batch: return it as JSON (the XCom value), or raise.

    :raises AirflowSkipException: if the policy maps the batch to ``skip``.
    :raises AirflowException: if the policy maps the batch to ``fail`` (a retry may create a new batch).
    """
    verdict = policy.evaluate(batch)
    if verdict.outcome == Outcome.SKIP:
        raise AirflowSkipException(verdict.reason)
    if verdict.outcome == Outcome.FAIL:
        raise AirflowException(verdict.reason)
    log.info("%s", verdict.reason)
    return batch.model_dump(mode="json")


def remove_late_copies(hook: DashScopeBatchHook, event: WaitEvent, log: Any) -> None:
    """
    Cancel the duplicates and delete the late files a trigger's ``late_copies`` event names.

    A failure is logged, not raised: the next trigger sees the copies again and reports them.
    """
    try:
        hook.get_conn().remove_late_copies(
            event.batch_id, batch_ids=event.late_batch_ids, file_ids=event.late_file_ids
        )
    except DashScopeError as exc:
        log.warning("Removing the late copies of batch %s failed: %s", event.batch_id, exc)


def wait_event(payload: Any) -> WaitEvent:
    """The trigger's event payload as a :class:`WaitEvent`; a malformed one fails the task."""
    try:
        return WaitEvent.from_payload(payload)
    except ValueError as exc:
        raise AirflowException(str(exc)) from None


class DashScopeBaseBatchOperator(DashScopeBaseOperator):
    """
    An operator that waits for a batch: in the worker, or deferred to :class:`DashScopeBatchTrigger`.

    Both paths poll on the same schedule (:mod:`~airflow_provider_dashscope_batch.waiting`) and end the
    same way. The batch is cancelled when the wait times out and, with ``cancel_on_kill``, when a user
    marks the task failed while it waits; a clear, a retry, a mark success or a worker shutdown leave it
    running (the next try re-attaches to it).

    :param dashscope_conn_id: The DashScope connection id.
    :param wait_for_completion: Wait until the batch is terminal.
    :param deferrable: Wait in the triggerer instead of holding a worker slot (default from
        ``[operators] default_deferrable``).
    :param poll_interval: Shortest seconds between polls.
    :param max_poll_interval: Cap the interval grows to.
    :param poll_backoff: Growth factor of the interval.
    :param error_budget: Consecutive retryable polling errors tolerated.
    :param wait_timeout: Give up waiting after this long (seconds or timedelta); defaults to the task's
        ``execution_timeout``, else no limit (the batch's completion window still ends it).
    :param cancel_on_kill: Cancel the batch when its wait times out or a user marks the task failed.
    """

    def __init__(
        self,
        *,
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
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.wait_settings = WaitSettings(
            poll_interval,
            max_poll_interval,
            poll_backoff,
            error_budget=error_budget,
            cancel_on_kill=cancel_on_kill,
        )
        self.wait_timeout = wait_timeout
        self.cancel_on_kill = cancel_on_kill
        self._batch_id: str | None = None
        self._ti: Any = None
        self._cancel_sent = False

    def _deadline(self) -> float | None:
        limit = self.wait_timeout if self.wait_timeout is not None else self.execution_timeout
        if limit is None:
            return None
        seconds = limit.total_seconds() if isinstance(limit, timedelta) else float(limit)
        return time.time() + seconds

    def _trigger_wait(self, deadline: float | None) -> WaitSettings:
        """The deferred wait's settings: this task's, with ``deadline``."""
        return replace(self.wait_settings, deadline=deadline)

    def _trigger(
        self, batch: Batch, deadline: float | None, copies: LateCopies | None
    ) -> DashScopeBatchTrigger:
        return DashScopeBatchTrigger(
            batch_id=batch.id,
            dashscope_conn_id=self.dashscope_conn_id,
            wait=self._trigger_wait(deadline),
            input_file_id=batch.input_file_id,
            idempotency_key=key_of(batch),
            late_copies=None if copies is None else copies.to_dict(),
        )

    def _await_terminal(self, batch: Batch, copies: LateCopies | None = None) -> Batch:
        """
        The terminal batch, waiting in-process, or defer to :class:`DashScopeBatchTrigger`.

        With ``copies`` (an ambiguous create or upload) either wait reads the batch through its input
        file's list and looks for a late duplicate and a late file until the window closes
        (:mod:`~airflow_provider_dashscope_batch.waiting.late`): the worker removes them at first sight,
        the trigger reports them and :meth:`_resumed` removes them.
        """
        deadline = self._deadline()
        if self.deferrable:
            self._defer_wait(self._trigger(batch, deadline, copies))
        client = self.hook.get_conn()
        settings = self.wait_settings
        wait = BatchWait(batch.id, BatchPoller(settings.schedule, deadline, settings.error_budget), self.log)
        watch = LateWatch.of(batch, copies)
        try:
            event = wait_for_batch(lambda: read_watching(client, watch, batch.id), wait)
            if watch is not None:
                finish_watch_sync(client, watch, settings.poll_interval)
        except AirflowTaskTimeout:  # the task's execution_timeout
            self._cancel(batch.id, "the task's execution_timeout passed")
            raise
        return self._ended(event)

    def _defer_wait(self, trigger: DashScopeBatchTrigger) -> NoReturn:
        deadline = trigger.wait.deadline
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            # A safety net only: the trigger's own deadline fires first, so the batch gets cancelled.
            timeout=None
            if deadline is None
            else timedelta(seconds=deadline - time.time() + 2 * self.wait_settings.max_poll_interval + 60),
        )

    def _resumed(self, payload: Any) -> Batch:
        """
        The terminal batch of the trigger's event (the resume step of a deferred wait).

        After a ``late_copies`` event the copies the trigger saw are removed (idempotent, so a resume that
        runs twice is harmless) and the task defers again with the trigger's own kwargs.
        """
        event = wait_event(payload)
        if event.kind is WaitEventKind.LATE_COPIES and event.resume is not None:
            remove_late_copies(self.hook, event, self.log)
            self._defer_wait(DashScopeBatchTrigger(**event.resume))
        return self._ended(event)

    def _ended(self, event: WaitEvent) -> Batch:
        """The terminal batch of a finished wait; cancels on a timeout, raises on any non-terminal end."""
        if event.kind is WaitEventKind.TERMINAL and event.batch is not None:
            return event.batch
        if event.kind is WaitEventKind.TIMEOUT:
            self._cancel(event.batch_id, "the wait timed out")
            raise BatchWaitTimeout(event.message)
        raise AirflowException(event.message)

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
        """Cancel the awaited batch only if a user marked the task failed (see :func:`kill_decision`)."""
        if not (self._batch_id and self.cancel_on_kill) or self._cancel_sent:
            return
        cancel, why = kill_decision(
            task_instance_state(self._ti) if self._ti is not None else None, self._batch_id
        )
        if cancel:
            self._cancel(self._batch_id, "the task was marked failed")
        else:
            self.log.warning("%s", why)

    def _remember(self, context: Context, batch: Batch) -> None:
        """Note the batch this try waits for (for ``on_kill``)."""
        self._batch_id = batch.id
        self._ti = context.get("ti")
