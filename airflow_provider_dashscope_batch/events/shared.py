"""
The finish watcher's shared-stream producer (Airflow 3.3 on): the watcher's rounds, acknowledged only
after Airflow persisted the events derived from them.

The triggerer runs one producer (:func:`finish_producer`) per stream (the trigger's ``shared_stream_key``): it
yields each new finish with the :class:`~.watcher.Handed` it hands on, and the trigger's
``filter_shared_stream`` makes it one event. Airflow calls the producer's ``advance`` once every
event derived from a finish was confirmed persisted, or failed (not confirmed within the ack timeout);
only a persisted finish enters the cursor and has its queue messages acknowledged. A triggerer stopped
first advances nothing: the list poll finds those finishes again and the broker redelivers their messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer

__all__ = ["finish_producer"]


def finish_producer(
    stream: Callable[[], AsyncIterator[tuple[Any, Any]]],
    advance: Callable[[Sequence[Any], Sequence[Any]], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
) -> SharedStreamProducer:
    """
    The watcher's gated rounds as a shared-stream producer in ack mode (the module imports on every
    Airflow; Airflow 3.3's ``SharedStreamProducer`` only when the triggerer asks for one).

    :param stream: The gated rounds: ``(payload, broker payload)``; the broker payload is None for an
        event that hands on no finish (the catch-up event).
    :param advance: Called with the broker payloads whose events were persisted and those that failed.
    :param close: Closes the queue connection (its unacknowledged messages go back to the queue).
    """
    from airflow.triggers.shared_stream import SharedStreamProducer

    class FinishProducer(SharedStreamProducer):
        async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
            """The gated rounds' ``(payload, broker payload)`` pairs."""
            async for item in stream():
                yield item

        async def advance(self, batch: Sequence[AdvanceItem]) -> None:
            """Hand the finishes on to the cursor (persisted) or back to the queue (failed)."""
            finishes = [(item.broker_payload, item.outcome.is_clean) for item in batch]
            persisted = [payload for payload, clean in finishes if payload is not None and clean]
            failed = [payload for payload, clean in finishes if payload is not None and not clean]
            if persisted or failed:
                await advance(persisted, failed)

        async def aclose(self) -> None:
            """Close the queue connection once the last advance acknowledged its messages."""
            await close()

    return FinishProducer()
