"""Trigger that waits for a DashScope batch to finish, natively async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dashscope_batch.client.errors import (
    APIConnectionError,
    APIStatusError,
    DashScopeError,
    RateLimitError,
    ServerError,
)
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.policy import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    BatchPoller,
    PollSchedule,
)

__all__ = ["DashScopeBatchTrigger", "is_transient", "retry_after_of"]

TERMINAL = "terminal"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = frozenset({TERMINAL, TIMEOUT, ERROR})


def is_transient(exc: BaseException) -> bool:
    """Whether a client error may go away on its own (429, 5xx, connection trouble)."""
    return isinstance(exc, (RateLimitError, ServerError, APIConnectionError))


def retry_after_of(exc: BaseException) -> float | None:
    """The ``Retry-After`` seconds a service error carries, if the service sent one."""
    return exc.retry_after if isinstance(exc, APIStatusError) else None


class DashScopeBatchTrigger(BaseTrigger):
    """
    Wait until a batch reaches a terminal status, then fire exactly one event.

    The trigger never blocks the triggerer's event loop: it reads the connection with
    ``get_async_connection`` and polls with the async client. All triggers of one connection in one event
    loop borrow a single shared client whose in-flight requests are bounded (see
    ``DashScopeBatchHook.shared_async_client``); one client per trigger does not scale to 1000 waits.
    ``run()`` only reads, so it is safe to run again on another triggerer; only ``on_kill`` (Airflow 3.3+,
    when the task is killed by a user) cancels the batch, and only if ``cancel_on_kill`` is set.

    The event payload is ``{"status": "terminal" | "timeout" | "error", "batch_id": ..., "batch": dict |
    None, "message": str}``; ``batch`` is the last batch read, as JSON.

    :param batch_id: The batch to wait for.
    :param dashscope_conn_id: The DashScope connection id.
    :param poll_interval: Shortest seconds between polls (see :mod:`~airflow_provider_dashscope_batch.policy`
        for why the default 60 keeps 1000 waits under the 1000 requests/min retrieve limit).
    :param max_poll_interval: Cap the interval grows to.
    :param poll_backoff: Growth factor of the interval.
    :param deadline: Wall-clock epoch seconds after which the trigger fires a ``timeout`` event.
    :param error_budget: Consecutive transient errors tolerated.
    :param cancel_on_kill: Cancel the batch when the deferred task is killed (Airflow 3.3+).
    """

    def __init__(
        self,
        batch_id: str,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poll_backoff: float = DEFAULT_POLL_BACKOFF,
        deadline: float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.dashscope_conn_id = dashscope_conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max(max_poll_interval, poll_interval))
        self.poll_backoff = float(poll_backoff)
        self.deadline = None if deadline is None else float(deadline)
        self.error_budget = int(error_budget)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and primitive kwargs (ids, numbers, flags; never the key)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "dashscope_conn_id": self.dashscope_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "poll_backoff": self.poll_backoff,
                "deadline": self.deadline,
                "error_budget": self.error_budget,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _hook(self) -> DashScopeBatchHook:
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def _event(self, status: str, batch: dict[str, Any] | None, message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "batch_id": self.batch_id, "batch": batch, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = BatchPoller(
            PollSchedule(self.poll_interval, self.max_poll_interval, self.poll_backoff),
            deadline=self.deadline,
            error_budget=self.error_budget,
        )
        batch: dict[str, Any] | None = None
        step = poller.first_delay(time.time())
        try:
            async with self._hook().shared_async_client() as client:
                while step.action == "wait":
                    await asyncio.sleep(step.delay)
                    try:
                        current = await client.retrieve_batch(self.batch_id)
                    except DashScopeError as exc:
                        step = poller.on_error(
                            str(exc),
                            transient=is_transient(exc),
                            now=time.time(),
                            retry_after=retry_after_of(exc),
                        )
                        if step.action == "wait":
                            self.log.warning("Polling batch %s failed (%s); retrying", self.batch_id, exc)
                        continue
                    if batch is None or batch["status"] != current.status:  # log changes, not every poll
                        self.log.info("Batch %s is %s", self.batch_id, current.status)
                    batch = current.model_dump(mode="json")
                    step = poller.on_status(batch["status"], time.time())
        except DashScopeError as exc:  # the connection or client could not be set up
            step = poller.on_error(str(exc), transient=False, now=time.time())
        if step.action == "done":
            yield self._event(TERMINAL, batch, f"Batch {self.batch_id} is {batch and batch['status']}.")
        elif step.action == "timeout":
            yield self._event(TIMEOUT, batch, step.message)
        else:
            yield self._event(ERROR, batch, f"Waiting for batch {self.batch_id} failed: {step.message}")

    async def on_kill(self) -> None:
        """Cancel the batch when a user kills the deferred task (called by Airflow 3.3+ only)."""
        if not self.cancel_on_kill:
            return
        async with self._hook().shared_async_client() as client:
            batch = await client.cancel_batch(self.batch_id)
        self.log.info("Cancelled batch %s on kill (status %s)", self.batch_id, batch.status)
