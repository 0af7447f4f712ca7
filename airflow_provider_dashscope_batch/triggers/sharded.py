"""Trigger that waits for the batches of a sharded job in one deferral."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.triggers.base import DashScopeWaiterTrigger, late_watches
from airflow_provider_dashscope_batch.waiting.protocol import WaitEvent, WaitEventKind

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.waiting.protocol import WaitSettings

__all__ = ["DashScopeShardsTrigger"]


class DashScopeShardsTrigger(DashScopeWaiterTrigger):
    """
    Wait for several batches at once and fire one event: when all are terminal, or (``until="any"``) as
    soon as one is, so the operator can start a shard that was held back by its concurrency cap.

    Each batch is polled on its own :class:`~airflow_provider_dashscope_batch.waiting.BatchWait` schedule
    through the connection's shared status reader, which reads the batches that fall due together with
    one list request per 20 input files (:mod:`~airflow_provider_dashscope_batch.waiting.reader`), and,
    like the single-batch trigger, only reads: a duplicate under a shard's key, or a late copy of an
    ambiguous create or upload (``late_copies``, looked for until their window closes), ends the whole
    wait with a ``late_copies`` event for that batch, and the operator removes it and defers again. A
    batch whose wait times out or fails ends the whole wait at once. The payload is ``{"events": [WaitEvent
    payload, ...]}`` for the batches whose waits ended (all of them for ``until="all"``); batches still
    running are not listed; an unusable connection gives one ``error`` event per batch. ``on_kill``
    (Airflow 3.3+, when a user changes the deferred task's state) cancels the batches only if
    ``wait.cancel_on_kill`` is set and the task instance is now ``failed``, as the single-batch trigger does.

    :param batch_ids: The batches to wait for.
    :param input_file_ids: Their input files, in the same order (enables the grouped reads).
    :param dashscope_conn_id: The DashScope connection id.
    :param until: ``"all"`` or ``"any"``.
    :param wait: How each wait polls and ends
        (:class:`~airflow_provider_dashscope_batch.waiting.protocol.WaitSettings`).
    :param idempotency_keys: Their idempotency keys, in the same order (enables the duplicate check).
    :param late_copies: Per batch, None or until when late copies may appear
        (:meth:`LateCopies.to_dict <airflow_provider_dashscope_batch.waiting.late.LateCopies.to_dict>`).
    """

    def __init__(
        self,
        batch_ids: list[str],
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        *,
        input_file_ids: list[str | None] | None = None,
        until: str = "all",
        wait: WaitSettings | dict[str, Any] | None = None,
        idempotency_keys: list[str | None] | None = None,
        late_copies: list[dict[str, Any] | None] | None = None,
    ) -> None:
        super().__init__(dashscope_conn_id, wait=wait)
        if until not in ("all", "any"):
            raise ValueError(f"until must be 'all' or 'any', got {until!r}")
        self.batch_ids = list(batch_ids)
        n = len(self.batch_ids)
        self.input_file_ids = list(input_file_ids) if input_file_ids is not None else [None] * n
        self.idempotency_keys = list(idempotency_keys) if idempotency_keys is not None else [None] * n
        self.late_copies = list(late_copies) if late_copies is not None else [None] * n
        if not len(self.input_file_ids) == len(self.idempotency_keys) == len(self.late_copies) == n:
            raise ValueError(
                "input_file_ids, idempotency_keys and late_copies must match batch_ids one to one"
            )
        self.until = until

    def own_kwargs(self) -> dict[str, Any]:
        """The batches, their input files, keys and late-copy windows, and ``until``."""
        return {
            "batch_ids": self.batch_ids,
            "input_file_ids": self.input_file_ids,
            "idempotency_keys": self.idempotency_keys,
            "late_copies": self.late_copies,
            "until": self.until,
        }

    async def wait_all(self, client: AsyncDashScopeClient) -> dict[str, Any]:
        watches = late_watches(self.batch_ids, self.input_file_ids, self.idempotency_keys, self.late_copies)
        events: list[WaitEvent] = []
        pending = {
            asyncio.ensure_future(self.wait_one(client, batch_id, file_id, key, watch))
            for batch_id, file_id, key, watch in zip(
                self.batch_ids, self.input_file_ids, self.idempotency_keys, watches, strict=True
            )
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
        return {"events": [e.to_payload() for e in events]}

    def failed_payload(self, why: str) -> dict[str, Any]:
        return {"events": [self.batch_wait(b).failed(why).to_payload() for b in self.batch_ids]}
