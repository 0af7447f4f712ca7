"""Sensor that waits for a DashScope batch to finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.operators.base import (
    judge,
    releasing_hook,
    remove_late_copies,
    wait_event,
)
from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
from airflow_provider_dashscope_batch.waiting.late import LateCopies, LateWatch, read_watching
from airflow_provider_dashscope_batch.waiting.protocol import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    Outcome,
    OutcomePolicy,
    WaitEventKind,
    WaitSettings,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["DashScopeBatchSensor"]


class DashScopeBatchSensor(BaseSensorOperator):
    """
    Wait until a batch is terminal, then judge it with the same outcome policy as the create operator.

    Works in ``poke`` and ``reschedule`` mode (``poke_interval`` defaults to 60 s, the service's advice)
    and, with ``deferrable=True``, in the triggerer through :class:`DashScopeBatchTrigger`, whose poll
    interval grows from ``poke_interval`` by ``poll_backoff`` up to ``max_poll_interval``; the deferred
    wait carries the batch's input file and key, so it joins the grouped status reads of other waits.

    The sensor does not know whether the batch's create was ambiguous, so while a late duplicate could
    still appear (one late window after the batch's ``created_at``, see
    :mod:`~airflow_provider_dashscope_batch.client.ambiguity`) every mode reads the batch through its
    input file's list and cancels a duplicate under its key at first sight (the window is not waited
    out: a finished batch ends the sensor).

    .. seealso::
        For more information on how to use this sensor, take a look at the guide:
        :ref:`howto/sensor:DashScopeBatchSensor`

    :param batch_id: The batch to watch (templated).
    :param dashscope_conn_id: The DashScope connection id.
    :param deferrable: Wait in the triggerer (default from ``[operators] default_deferrable``).
    :param max_poll_interval: Deferrable mode: cap of the growing poll interval.
    :param poll_backoff: Deferrable mode: growth factor of the interval.
    :param error_budget: Deferrable mode: consecutive retryable errors tolerated.
    :param on_partial_failure: Outcome (``"success"``, ``"fail"`` or ``"skip"``) of ``completed`` with
        some requests failed (default success).
    :param on_all_failed: Outcome of ``completed`` with every request failed (default fail).
    :param on_expired: Outcome of ``expired`` (default fail).
    :param on_cancelled: Outcome of ``cancelled`` (default fail).
    :param on_failed: Outcome of ``failed`` (default fail).
    :return: (XCom) the terminal batch as a JSON dict.
    """

    template_fields: Sequence[str] = ("batch_id",)
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        batch_id: str,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poll_backoff: float = DEFAULT_POLL_BACKOFF,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        on_partial_failure: str = Outcome.SUCCESS,
        on_all_failed: str = Outcome.FAIL,
        on_expired: str = Outcome.FAIL,
        on_cancelled: str = Outcome.FAIL,
        on_failed: str = Outcome.FAIL,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.batch_id = batch_id
        self.dashscope_conn_id = dashscope_conn_id
        self.outcome_policy = OutcomePolicy(
            on_partial_failure, on_all_failed, on_expired, on_cancelled, on_failed
        )
        self.deferrable = deferrable
        self.max_poll_interval = max(max_poll_interval, poke_interval)
        self.poll_backoff = poll_backoff
        self.error_budget = error_budget

    @cached_property
    def hook(self) -> DashScopeBatchHook:
        """The DashScope hook of this task's connection."""
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def poke(self, context: Context) -> PokeReturnValue:
        batch, _ = self._read()
        if not batch.status.is_terminal:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=judge(self.outcome_policy, batch, self.log))

    def _read(self) -> tuple[Batch, LateCopies | None]:
        """
        The batch, read by id, then (while a late duplicate may appear) through its input file's list.

        Also returns the late-copy window, derived from the batch's ``created_at``: the sensor did not see
        the create, so a duplicate is looked for while it waits, and the window is not waited out.
        """
        client = self.hook.get_conn()
        batch = client.retrieve_batch(self.batch_id)
        copies = LateCopies.of(Ambiguity.after_created(batch.created_at, client.timeout), derived=True)
        watch = LateWatch.of(batch, copies)
        if watch is not None:  # the look lists the input file and cancels a duplicate it shows
            batch = read_watching(client, watch, self.batch_id)
        self.log.info("Batch %s is %s", self.batch_id, batch.status)
        return batch, copies

    @releasing_hook
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        batch, copies = self._read()
        if batch.status.is_terminal:
            return judge(self.outcome_policy, batch, self.log)
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        self.defer(
            trigger=DashScopeBatchTrigger(
                batch_id=self.batch_id,
                dashscope_conn_id=self.dashscope_conn_id,
                wait=WaitSettings(
                    self.poke_interval_seconds,
                    self.max_poll_interval,
                    self.poll_backoff,
                    deadline=time.time() + timeout,
                    error_budget=self.error_budget,
                ),
                input_file_id=batch.input_file_id,
                idempotency_key=(batch.metadata or {}).get(IDEMPOTENCY_KEY),
                late_copies=None if copies is None else copies.to_dict(),
            ),
            method_name="execute_complete",
        )

    @property
    def poke_interval_seconds(self) -> float:
        """``poke_interval`` in seconds, whatever type it was given as."""
        value = self.poke_interval
        return value.total_seconds() if isinstance(value, timedelta) else float(value)

    @releasing_hook
    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        return super().resume_execution(next_method, next_kwargs, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: judge the finished batch (or remove late copies and wait again)."""
        ended = wait_event(event)
        if ended.kind is WaitEventKind.LATE_COPIES and ended.resume is not None:
            remove_late_copies(self.hook, ended, self.log)
            self.defer(trigger=DashScopeBatchTrigger(**ended.resume), method_name="execute_complete")
        if ended.kind is WaitEventKind.TERMINAL and ended.batch is not None:
            return judge(self.outcome_policy, ended.batch, self.log)
        if ended.kind is WaitEventKind.TIMEOUT:
            raise AirflowSensorTimeout(ended.message or "Sensor timed out.")
        raise AirflowException(ended.message)
