"""Trigger that waits for a DashScope batch to finish, natively async."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.triggers.base import (
    DashScopeWaiterTrigger,
    late_watches,
)
from airflow_provider_dashscope_batch.waiting.protocol import WaitEventKind

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.waiting.protocol import WaitSettings

__all__ = ["DashScopeBatchTrigger"]


class DashScopeBatchTrigger(DashScopeWaiterTrigger):
    """
    Wait until a batch reaches a terminal status, then fire exactly one event.

    The trigger never blocks the triggerer's event loop: it reads the connection with
    ``get_async_connection`` and polls with the async client. All triggers of one connection in one event
    loop borrow a single shared client whose in-flight requests are bounded (see
    ``DashScopeBatchHook.shared_async_client``) and one status reader, which answers up to 20 due waits
    with one list request. A status read is sent once: the poller, not the client, retries a failed poll
    (see :mod:`~airflow_provider_dashscope_batch.waiting`).

    ``run()`` only reads. A running batch the list shows under this wait's idempotency key with another id
    (a create the service acted on after the client gave up) ends the wait with a ``late_copies`` event, as
    does, when the create or upload was ambiguous (``late_copies``), a late file or duplicate seen while the
    window is open (the wait lists the batch's input file and the files until it closes). The event names
    the copies and carries this trigger's kwargs (``resume``): the operator's resume step cancels or deletes
    them and defers again. Running the trigger twice, or on another triggerer, is therefore harmless. A
    connection that is missing or unusable ends the wait with one ``error`` event.

    ``on_kill`` (Airflow 3.3+, when a user changes the deferred task's state) cancels the batch only if
    ``wait.cancel_on_kill`` is set and the task instance is now ``failed``; a cleared task's next try
    re-attaches to the batch, and a task marked successful leaves it running (see the create operator's
    lifecycle table).

    The event payload is :meth:`WaitEvent.to_payload() <airflow_provider_dashscope_batch.waiting.WaitEvent>`.

    :param batch_id: The batch to wait for.
    :param dashscope_conn_id: The DashScope connection id.
    :param wait: How the wait polls and ends
        (:class:`~airflow_provider_dashscope_batch.waiting.protocol.WaitSettings`).
    :param input_file_id: The batch's input file, if known (identifies the batch's siblings).
    :param idempotency_key: The key the batch was created with, if known.
    :param late_copies: After an ambiguous create or upload: until when late copies may appear
        (:meth:`LateCopies.to_dict <airflow_provider_dashscope_batch.waiting.late.LateCopies.to_dict>`).
    """

    def __init__(
        self,
        batch_id: str,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        *,
        wait: WaitSettings | dict[str, Any] | None = None,
        input_file_id: str | None = None,
        idempotency_key: str | None = None,
        late_copies: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(dashscope_conn_id, wait=wait)
        self.batch_id = batch_id
        self.batch_ids = [batch_id]
        self.input_file_id = input_file_id
        self.idempotency_key = idempotency_key
        self.late_copies = late_copies

    def own_kwargs(self) -> dict[str, Any]:
        """The batch, its input file and key, and the late-copy windows."""
        return {
            "batch_id": self.batch_id,
            "input_file_id": self.input_file_id,
            "idempotency_key": self.idempotency_key,
            "late_copies": self.late_copies,
        }

    async def wait_all(self, client: AsyncDashScopeClient) -> dict[str, Any]:
        (watch,) = late_watches(
            [self.batch_id], [self.input_file_id], [self.idempotency_key], [self.late_copies]
        )
        event = await self.wait_one(client, self.batch_id, self.input_file_id, self.idempotency_key, watch)
        if event.kind is WaitEventKind.LATE_COPIES:  # the operator removes them, then waits with these kwargs
            event = replace(event, resume=self.serialize()[1])
        return event.to_payload()

    def failed_payload(self, why: str) -> dict[str, Any]:
        return self.batch_wait(self.batch_id).failed(why).to_payload()
