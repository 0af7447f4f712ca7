"""
The base of the triggers that wait for DashScope batches, and the task-state read their ``on_kill`` needs.

:class:`DashScopeWaiterTrigger` holds what the single-batch and the sharded trigger share (the habit of the
amazon provider's ``AwsBaseWaiterTrigger``): the wait settings, serialized once; one
:class:`~airflow_provider_dashscope_batch.waiting.BatchWait` factory; one wait of one batch through the
connection's shared status reader, with the look-out for late copies of an ambiguous create or upload (the
trigger only reads and reports them; the operator's resume step removes them); one mapping of an unusable
connection to an ``error`` event; one kill path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.status import BatchRef
from airflow_provider_dashscope_batch.events.wake import finish_watcher
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook
from airflow_provider_dashscope_batch.waiting.late import (
    LateCopies,
    LateWatch,
    find_late_files,
    look_until_closed,
    running_duplicates,
)
from airflow_provider_dashscope_batch.waiting.protocol import (
    BatchPoller,
    BatchWait,
    PollStep,
    WaitEvent,
    WaitSettings,
    kill_decision,
)
from airflow_provider_dashscope_batch.waiting.reader import status_reader

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "CONNECTION_ERRORS",
    "DashScopeWaiterTrigger",
    "cancel_on_user_kill",
    "late_watches",
    "task_instance_state",
]

#: What setting up the connection's client can raise; the reader hands every read's error to its wait.
CONNECTION_ERRORS = (AirflowNotFoundException, ConnectionSetupError, DashScopeError)


class DashScopeWaiterTrigger(BaseTrigger):
    """
    A trigger that waits for batches of one connection and fires exactly one event.

    Subclasses name their own kwargs (:meth:`own_kwargs`), the batches they wait for (:attr:`batch_ids`),
    the event of a wait that could not start (:meth:`failed_payload`) and the waits themselves
    (:meth:`wait_all`); everything else is here.

    :param dashscope_conn_id: The DashScope connection id.
    :param wait: How the waits poll and end (:class:`WaitSettings`, or its :meth:`WaitSettings.to_dict`
        form, as the triggerer passes it back).
    """

    def __init__(
        self,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        *,
        wait: WaitSettings | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.dashscope_conn_id = dashscope_conn_id
        self.wait = WaitSettings.of(wait)

    # ----------------------------------------------------------------------------- serialization
    batch_ids: list[str]

    def own_kwargs(self) -> dict[str, Any]:
        """The subclass's own primitive kwargs (ids; never the API key)."""
        raise NotImplementedError

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and primitive kwargs: the subclass's own, the connection and the wait settings."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**self.own_kwargs(), "dashscope_conn_id": self.dashscope_conn_id, "wait": self.wait.to_dict()},
        )

    # ------------------------------------------------------------------------------------ waiting
    def _hook(self) -> DashScopeBatchHook:
        return DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)

    def batch_wait(self, batch_id: str) -> BatchWait:
        """A fresh wait for ``batch_id`` on this trigger's schedule."""
        schedule = self.wait.schedule
        return BatchWait(
            batch_id, BatchPoller(schedule, self.wait.deadline, self.wait.error_budget), self.log
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async with self._hook().shared_async_client() as client:
                payload = await self.wait_all(client)
        except CONNECTION_ERRORS as exc:  # only the connection can raise these
            payload = self.failed_payload(f"connection {self.dashscope_conn_id!r} is not usable: {exc}")
        yield TriggerEvent(payload)

    async def wait_all(self, client: AsyncDashScopeClient) -> dict[str, Any]:
        """Wait for the batches; return the event payload."""
        raise NotImplementedError

    def failed_payload(self, why: str) -> dict[str, Any]:
        """The payload of a wait that could not start."""
        raise NotImplementedError

    async def wait_one(
        self,
        client: AsyncDashScopeClient,
        batch_id: str,
        input_file_id: str | None,
        idempotency_key: str | None,
        watch: LateWatch | None,
    ) -> WaitEvent:
        """
        Wait for one batch through the status reader shared by every trigger of the connection.

        The reader reads up to 20 due waits with one list request and runs the poll loop on its own timer
        (:meth:`StatusReader.follow <airflow_provider_dashscope_batch.waiting.reader.StatusReader.follow>`).
        With a ``watch`` (an ambiguous create or upload) the batch is listed even when read alone, the
        files are listed for a late copy of the upload, and the wait looks on until the window closes.

        The trigger only reads: a running batch the list shows under this wait's key with another id, or a
        late file, ends the wait at first sight with a ``late_copies`` event naming them, and the
        operator's resume step removes them and defers again (a trigger may run twice, or on another
        triggerer; a resume step that runs twice is harmless).
        """
        wait = self.batch_wait(batch_id)
        ref = watch.ref() if watch is not None else BatchRef(batch_id, input_file_id, idempotency_key)
        late_batches: list[str] = []
        late_files: list[str] = []
        on_duplicate = None
        if ref.idempotency_key and ref.input_file_id:

            def on_duplicate(duplicate: Batch) -> bool:
                running = running_duplicates([duplicate])
                late_batches.extend(running)
                return bool(running)

        reader = status_reader(client)
        watching = (
            finish_watcher(reader, self.dashscope_conn_id).watching(batch_id)
            if self.wait.finish_events
            else contextlib.nullcontext()
        )
        with watching:
            follow = reader.follow(
                ref,
                wait,
                wait.start(time.time()),
                on_duplicate=on_duplicate,
                gather=self.wait.poll_interval / 10,
            )
            if watch is not None and watch.watches_files(time.time()):
                step = await self._follow_finding_files(client, watch, follow, late_files)
            else:
                step = await follow
        if late_batches or late_files or step is None:
            return wait.late_copies(late_batches, late_files)
        if watch is not None:
            batches, files = await look_until_closed(client, watch, self.wait.poll_interval)
            if batches or files:
                return wait.late_copies(batches, files)
        return wait.event(step)

    async def _follow_finding_files(
        self, client: AsyncDashScopeClient, watch: LateWatch, follow: Awaitable[PollStep], found: list[str]
    ) -> PollStep | None:
        """Follow the wait while listing the files for a late copy of its upload; None once one is seen."""
        following = asyncio.ensure_future(follow)
        finding = asyncio.ensure_future(find_late_files(client, watch, self.wait.poll_interval))
        try:
            await asyncio.wait([following, finding], return_when=asyncio.FIRST_COMPLETED)
            if finding.done() and finding.result():
                found.extend(finding.result())
                return None
            return await following
        finally:
            for task in (following, finding):
                task.cancel()
            await asyncio.gather(following, finding, return_exceptions=True)

    # ---------------------------------------------------------------------------------------- kill
    async def on_kill(self) -> None:
        """Cancel the batches if a user marked the deferred task failed (called by Airflow 3.3+ only)."""
        if self.wait.cancel_on_kill:
            await cancel_on_user_kill(self, ", ".join(self.batch_ids), self._cancel_batches)

    async def _cancel_batches(self) -> str:
        statuses = []
        async with self._hook().shared_async_client() as client:
            for batch_id in self.batch_ids:
                try:
                    statuses.append(str((await client.cancel_batch(batch_id)).status))
                except DashScopeError as exc:  # already finished, or gone: the others still get cancelled
                    self.log.warning("Could not cancel batch %s: %s", batch_id, exc)
        return f" (status {', '.join(statuses)})" if statuses else ""


def late_watches(
    batch_ids: Iterable[str],
    input_file_ids: Iterable[str | None],
    keys: Iterable[str | None],
    copies: Iterable[Any],
) -> list[LateWatch | None]:
    """The look-outs of several waits from their primitive kwargs."""
    out: list[LateWatch | None] = []
    for batch_id, file_id, key, data in zip(batch_ids, input_file_ids, keys, copies, strict=True):
        found = LateCopies.from_dict(data)
        out.append(None if found is None else LateWatch(batch_id, file_id, key, found))
    return out


def task_instance_state(ti: Any) -> str | None:
    """
    The current state of task instance ``ti`` in the metadata DB, or None if it cannot be read.

    Reads through the Task SDK's ``get_task_states`` (the worker's and the triggerer's channel to the
    API server); blocking, so async callers run it in a thread.
    """
    # The triggerer hands a trigger a runtime task instance only when it has the DAG's data; otherwise a
    # plain workload record without ``get_task_states``, so fall back to the Task SDK's static call.
    get_task_states = getattr(ti, "get_task_states", None)
    try:
        if get_task_states is None:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            get_task_states = RuntimeTaskInstance.get_task_states
        states = get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
        )
    except Exception:  # outside a task runner / triggerer there is no channel; the caller keeps the batch
        return None
    key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
    state = (states.get(ti.run_id) or {}).get(key)
    return None if state is None else str(getattr(state, "value", state))


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
