"""Trigger that waits for a DashScope batch to finish, natively async."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.status import BatchRef, status_reader
from airflow_provider_dashscope_batch.events.wake import SAFETY_NET_FIRST_POLL_JITTER, finish_watcher
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook
from airflow_provider_dashscope_batch.waiting import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_BACKOFF,
    DEFAULT_POLL_INTERVAL,
    BatchPoller,
    BatchWait,
    PollSchedule,
    WaitEvent,
    kill_decision,
    task_instance_state,
)

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.models import Batch

__all__ = ["DashScopeBatchTrigger", "cancel_on_user_kill"]


class DashScopeBatchTrigger(BaseTrigger):
    """
    Wait until a batch reaches a terminal status, then fire exactly one event.

    The trigger never blocks the triggerer's event loop: it reads the connection with
    ``get_async_connection`` and polls with the async client. All triggers of one connection in one event
    loop borrow a single shared client whose in-flight requests are bounded (see
    ``DashScopeBatchHook.shared_async_client``) and one status reader, which answers up to 20 due waits
    with one list request. A status read is sent once: the poller, not the client, retries a failed poll
    (see :mod:`~airflow_provider_dashscope_batch.waiting`).

    ``run()`` only reads, except that it cancels an unfinished batch the list shows under this wait's
    idempotency key with another id (a create the service acted on after the client gave up); that
    cancel is idempotent, so running the trigger again on another triggerer is safe. A connection that
    is missing or unusable ends the wait with one ``error`` event.

    ``on_kill`` (Airflow 3.3+, when a user changes the deferred task's state) cancels the batch only if
    ``cancel_on_kill`` is set and the task instance is now ``failed``; a cleared task's next try
    re-attaches to the batch, and a task marked successful leaves it running (see the create operator's
    lifecycle table).

    The event payload is :meth:`WaitEvent.to_payload() <airflow_provider_dashscope_batch.waiting.WaitEvent>`.

    :param batch_id: The batch to wait for.
    :param dashscope_conn_id: The DashScope connection id.
    :param poll_interval: Shortest seconds between polls.
    :param max_poll_interval: Cap the interval grows to.
    :param poll_backoff: Growth factor of the interval.
    :param deadline: Wall-clock epoch seconds after which the trigger fires a ``timeout`` event.
    :param error_budget: Consecutive retryable polling errors tolerated.
    :param cancel_on_kill: Cancel the batch when a user marks the deferred task failed (Airflow 3.3+).
    :param input_file_id: The batch's input file, if known (identifies the batch's siblings).
    :param idempotency_key: The key the batch was created with, if known.
    :param finish_events: The batch sends a finish event to this Airflow's receiver
        (:mod:`~airflow_provider_dashscope_batch.events`): the wait also ends when the connection's
        mailbox names the batch, and its polls are the safety net (first one spread less).
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
        input_file_id: str | None = None,
        idempotency_key: str | None = None,
        finish_events: bool = False,
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
        self.input_file_id = input_file_id
        self.idempotency_key = idempotency_key
        self.finish_events = bool(finish_events)
        # made on a duplicate's first sighting: thousands of waits in a triggerer rarely see one
        self._duplicates_seen: set[str] | None = None
        self._cancelling: set[asyncio.Future[None]] | None = None

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
                "input_file_id": self.input_file_id,
                "idempotency_key": self.idempotency_key,
                "finish_events": self.finish_events,
            },
        )

    def _hook(self) -> DashScopeBatchHook:
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def _on_duplicate(
        self, client: AsyncDashScopeClient, idempotency_key: str, input_file_id: str
    ) -> Callable[[Batch], None]:
        """
        Cancel an unfinished batch the list shows under this wait's idempotency key with another id.

        Such a batch is a create the service acted on after the client gave up; it is cancelled before it
        runs requests. Cancelling is idempotent, so a re-run trigger is harmless; the cancel runs beside
        the wait, which awaits it before it fires its event.
        """

        def on_duplicate(duplicate: Batch) -> None:
            if self._duplicates_seen is None:
                self._duplicates_seen = set()
            seen = self._duplicates_seen
            if duplicate.id in seen or duplicate.status.is_terminal:
                return
            seen.add(duplicate.id)
            self.log.warning(
                "Batch %s carries the idempotency key of batch %s: cancelling the duplicate",
                duplicate.id,
                self.batch_id,
            )
            task = asyncio.ensure_future(
                self._cancel_duplicates(client, idempotency_key, input_file_id, duplicate.id)
            )
            if self._cancelling is None:
                self._cancelling = set()
            cancelling = self._cancelling
            cancelling.add(task)
            task.add_done_callback(cancelling.discard)

        return on_duplicate

    async def _cancel_duplicates(
        self, client: AsyncDashScopeClient, idempotency_key: str, input_file_id: str, duplicate_id: str
    ) -> None:
        try:
            await client.cancel_duplicates(
                idempotency_key=idempotency_key, input_file_id=input_file_id, keep_batch_id=self.batch_id
            )
        except DashScopeError as exc:  # the wait goes on; the next list shows it again
            if self._duplicates_seen is not None:
                self._duplicates_seen.discard(duplicate_id)
            self.log.warning("Cancelling the duplicate(s) of batch %s failed: %s", self.batch_id, exc)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._wait()
        yield TriggerEvent(event.to_payload())

    def _batch_wait(self) -> BatchWait:
        schedule = PollSchedule(self.poll_interval, self.max_poll_interval, self.poll_backoff)
        if self.finish_events:
            schedule = dataclasses.replace(schedule, first_poll_jitter=SAFETY_NET_FIRST_POLL_JITTER)
        return BatchWait(self.batch_id, BatchPoller(schedule, self.deadline, self.error_budget), self.log)

    async def _wait(self) -> WaitEvent:
        """
        Poll through the status reader shared by every trigger of the connection in this event loop.

        The reader reads up to 20 due waits with one list request and runs this wait's poll loop on its
        own timer (see :meth:`StatusReader.follow
        <airflow_provider_dashscope_batch.client.status.StatusReader.follow>`); each status read is sent
        once, the poller retries a failed one.
        """
        wait = self._batch_wait()
        try:
            async with self._hook().shared_async_client() as client:
                on_duplicate = None
                if self.idempotency_key and self.input_file_id:
                    on_duplicate = self._on_duplicate(client, self.idempotency_key, self.input_file_id)
                reader = status_reader(client)
                watching = (
                    finish_watcher(reader, self.dashscope_conn_id).watching(self.batch_id)
                    if self.finish_events
                    else contextlib.nullcontext()
                )
                try:
                    with watching:
                        step = await reader.follow(
                            BatchRef(self.batch_id, self.input_file_id, self.idempotency_key),
                            wait,
                            wait.start(time.time()),
                            on_duplicate=on_duplicate,
                            gather=self.poll_interval / 10,
                        )
                finally:
                    if self._cancelling:  # a duplicate's cancel under way finishes before the event
                        await asyncio.gather(*self._cancelling, return_exceptions=True)
        except (AirflowNotFoundException, ConnectionSetupError, DashScopeError) as exc:
            # only the connection can raise these: the reader hands every read's error to the wait
            return wait.failed(f"connection {self.dashscope_conn_id!r} is not usable: {exc}")
        return wait.event(step)

    async def on_kill(self) -> None:
        """Cancel the batch if a user marked the deferred task failed (called by Airflow 3.3+ only)."""
        if self.cancel_on_kill:
            await cancel_on_user_kill(self, self.batch_id, self._cancel)

    async def _cancel(self) -> str:
        async with self._hook().shared_async_client() as client:
            batch = await client.cancel_batch(self.batch_id)
        return f" (status {batch.status})"


async def cancel_on_user_kill(
    trigger: BaseTrigger, subject: str, cancel: Callable[[], Awaitable[str]]
) -> None:
    """
    A trigger's ``on_kill``: run ``cancel`` only if the task instance is now ``failed``.

    Reads the task instance's state (see :func:`~airflow_provider_dashscope_batch.waiting.kill_decision`),
    then cancels and logs why, with what ``cancel`` returns appended. The work is shielded: the triggerer
    may cancel a killed trigger again while ``on_kill`` still runs, and the state read and the cancel
    requests must finish anyway.

    :param trigger: The trigger being killed (its ``task_instance`` and ``log``).
    :param subject: The batch id(s) named in the log line.
    :param cancel: Cancels the batch(es); returns text for the log line.
    """

    async def decide_and_cancel() -> None:
        ti = getattr(trigger, "task_instance", None)
        state = await anyio.to_thread.run_sync(task_instance_state, ti) if ti is not None else None
        do_cancel, why = kill_decision(state, subject)
        if not do_cancel:
            trigger.log.warning("%s", why)
            return
        trigger.log.info("%s%s", why, await cancel())

    await asyncio.shield(asyncio.ensure_future(decide_and_cancel()))
