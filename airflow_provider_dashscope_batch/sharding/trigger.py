"""Trigger that waits for the batches of a sharded job in one deferral."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.status import BatchRef, status_reader
from airflow_provider_dashscope_batch.events.wake import SAFETY_NET_FIRST_POLL_JITTER, finish_watcher
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.triggers.batch import cancel_on_user_kill
from airflow_provider_dashscope_batch.waiting import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    BatchPoller,
    BatchWait,
    PollSchedule,
    WaitEvent,
    WaitEventKind,
)

__all__ = ["DashScopeShardsTrigger"]


class DashScopeShardsTrigger(BaseTrigger):
    """
    Wait for several batches at once and fire one event: when all are terminal, or (``until="any"``) as
    soon as one is, so the operator can start a shard that was held back by its concurrency cap.

    Each batch is polled on its own :class:`~airflow_provider_dashscope_batch.waiting.BatchWait` schedule
    through the connection's shared status reader, which reads the batches that fall due together with
    one list request per 20 input files (:mod:`~airflow_provider_dashscope_batch.client.status`). A
    batch whose wait times out or fails ends the whole wait at once. The payload is ``{"events":
    [WaitEvent payload, ...]}`` for the batches whose waits ended (all of them for ``until="all"``);
    batches still running are not listed. ``on_kill`` (Airflow 3.3+, when a user changes the deferred
    task's state) cancels the batches only if ``cancel_on_kill`` is set and the task instance is now
    ``failed``, as the single-batch trigger does.

    :param batch_ids: The batches to wait for.
    :param input_file_ids: Their input files, in the same order (enables the grouped reads).
    :param dashscope_conn_id: The DashScope connection id.
    :param until: ``"all"`` or ``"any"``.
    :param poll_interval: Shortest seconds between polls of one batch.
    :param max_poll_interval: Cap the interval grows to.
    :param poll_backoff: Growth factor of the interval.
    :param deadline: Wall-clock epoch seconds after which a wait ends with a timeout.
    :param error_budget: Consecutive retryable errors tolerated per batch.
    :param cancel_on_kill: Cancel the batches when a user marks the deferred task failed (Airflow 3.3+).
    :param finish_events: The batches send finish events to this Airflow's receiver: their waits also
        end when the connection's mailbox names them (see :class:`DashScopeBatchTrigger
        <airflow_provider_dashscope_batch.triggers.batch.DashScopeBatchTrigger>`).
    """

    def __init__(
        self,
        batch_ids: list[str],
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        *,
        input_file_ids: list[str | None] | None = None,
        until: str = "all",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poll_backoff: float = DEFAULT_POLL_BACKOFF,
        deadline: float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = False,
        finish_events: bool = False,
    ) -> None:
        super().__init__()
        if until not in ("all", "any"):
            raise ValueError(f"until must be 'all' or 'any', got {until!r}")
        self.batch_ids = list(batch_ids)
        self.input_file_ids = list(input_file_ids) if input_file_ids is not None else [None] * len(batch_ids)
        if len(self.input_file_ids) != len(self.batch_ids):
            raise ValueError("input_file_ids must match batch_ids one to one")
        self.dashscope_conn_id = dashscope_conn_id
        self.until = until
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max(max_poll_interval, poll_interval))
        self.poll_backoff = float(poll_backoff)
        self.deadline = None if deadline is None else float(deadline)
        self.error_budget = int(error_budget)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.finish_events = bool(finish_events)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and primitive kwargs (ids, numbers; never the key)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": self.batch_ids,
                "input_file_ids": self.input_file_ids,
                "dashscope_conn_id": self.dashscope_conn_id,
                "until": self.until,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "poll_backoff": self.poll_backoff,
                "deadline": self.deadline,
                "error_budget": self.error_budget,
                "cancel_on_kill": self.cancel_on_kill,
                "finish_events": self.finish_events,
            },
        )

    def _wait(self, batch_id: str) -> BatchWait:
        schedule = PollSchedule(self.poll_interval, self.max_poll_interval, self.poll_backoff)
        if self.finish_events:
            schedule = dataclasses.replace(schedule, first_poll_jitter=SAFETY_NET_FIRST_POLL_JITTER)
        return BatchWait(batch_id, BatchPoller(schedule, self.deadline, self.error_budget), self.log)

    async def _wait_one(self, client: Any, batch_id: str, input_file_id: str | None) -> WaitEvent:
        wait, reader = self._wait(batch_id), status_reader(client)
        watching = (
            finish_watcher(reader, self.dashscope_conn_id).watching(batch_id)
            if self.finish_events
            else contextlib.nullcontext()
        )
        with watching:
            step = await reader.follow(
                BatchRef(batch_id, input_file_id),
                wait,
                wait.start(time.time()),
                gather=self.poll_interval / 10,
            )
        return wait.event(step)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        events: list[WaitEvent] = []
        try:
            async with DashScopeBatchHook(
                dashscope_conn_id=self.dashscope_conn_id
            ).shared_async_client() as client:
                pending = {
                    asyncio.ensure_future(self._wait_one(client, batch_id, file_id))
                    for batch_id, file_id in zip(self.batch_ids, self.input_file_ids, strict=True)
                }
                try:
                    while pending:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        events.extend(task.result() for task in done)
                        if self.until == "any" or any(e.kind is not WaitEventKind.TERMINAL for e in events):
                            break
                finally:
                    for task in pending:
                        task.cancel()
        except DashScopeError as exc:  # the connection or client could not be set up
            events = [self._wait(b).failed(str(exc)) for b in self.batch_ids]
        yield TriggerEvent({"events": [e.to_payload() for e in events]})

    async def on_kill(self) -> None:
        """Cancel the batches if a user marked the deferred task failed (called by Airflow 3.3+ only)."""
        if self.cancel_on_kill:
            await cancel_on_user_kill(self, ", ".join(self.batch_ids), self._cancel_all)

    async def _cancel_all(self) -> str:
        async with DashScopeBatchHook(
            dashscope_conn_id=self.dashscope_conn_id
        ).shared_async_client() as client:
            for batch_id in self.batch_ids:
                try:
                    await client.cancel_batch(batch_id)
                except DashScopeError as exc:  # already finished, or gone: the others still get cancelled
                    self.log.warning("Could not cancel batch %s: %s", batch_id, exc)
        return ""
