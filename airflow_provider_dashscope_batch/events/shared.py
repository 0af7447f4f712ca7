"""
The finish watcher's shared-stream producer (Airflow 3.3 on): the watcher's rounds, acknowledged only
after Airflow persisted the events derived from them.

The triggerer runs one :class:`FinishProducer` per stream (the trigger's ``shared_stream_key``): it
yields each new finish with the :class:`~.watcher.Handed` it hands on, and the trigger's
``filter_shared_stream`` makes it one event. Airflow calls :meth:`FinishProducer.advance` once every
event derived from a finish was confirmed persisted, or failed (not confirmed within the ack timeout);
only a persisted finish enters the cursor and has its queue messages acknowledged. A triggerer stopped
first advances nothing: the list poll finds those finishes again and the broker redelivers their messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.shared_stream import SharedStreamProducer

from airflow_provider_dashscope_batch.events.watcher import Handed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from airflow.triggers.shared_stream import AdvanceItem

    from airflow_provider_dashscope_batch.events.watcher import DashScopeBatchFinishTrigger

__all__ = ["FinishProducer"]


class FinishProducer(SharedStreamProducer):
    """
    The watcher's rounds as a shared stream in ack mode.

    :param trigger: The trigger whose rounds this producer runs (built from the stream's kwargs).
    """

    def __init__(self, trigger: DashScopeBatchFinishTrigger) -> None:
        self.trigger = trigger

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        """``(payload, Handed or None)`` per event of the gated rounds (None: the catch-up event)."""
        async for payload, handed in self.trigger.rounds(gated=True):
            yield payload, handed

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """Write the persisted finishes to the cursor and acknowledge their messages; requeue the others."""
        watch = self.trigger.watching
        finishes = [(item.broker_payload, item.outcome.is_clean) for item in batch]
        finishes = [(handed, clean) for handed, clean in finishes if isinstance(handed, Handed)]
        if watch is None or not finishes:
            return
        persisted = [handed for handed, clean in finishes if clean]
        await watch.advance(persisted, [handed for handed, clean in finishes if not clean])

    async def aclose(self) -> None:
        """Close the queue connection (its unacknowledged messages go back to the queue)."""
        watch = self.trigger.watching
        if watch is not None and watch.queue is not None:
            await watch.queue.aclose()
