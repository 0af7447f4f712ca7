"""
The finish watcher as an Airflow 3.3 shared stream in ack mode, driven by Airflow's own SharedStreamManager.

The manager stands in for the triggerer: ``bind_pending_event`` when the filter hands out an event,
``confirm_persisted`` when the supervisor would have stored it. A finish enters the cursor, and its queue
messages are acknowledged, only once its event is confirmed; one never confirmed is found again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from test_rabbitmq import QUEUE_CONN, clean_variables, eventbridge_event, publish, queue, waiting  # noqa: F401
from test_watcher import CONN, SECRET, create, get_variable, put_variable, wait_terminal

from airflow_provider_dashscope_batch.events import watcher as watcher_module
from airflow_provider_dashscope_batch.events.watcher import (
    SHARED_STREAMS,
    Cursor,
    DashScopeBatchFinishTrigger,
    cursor_key,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not SHARED_STREAMS, reason="shared streams in ack mode are Airflow 3.3's"),
]


@pytest.fixture(autouse=True)
def task_sdk_variables(monkeypatch) -> None:
    """The producer builds its own trigger from the kwargs: its Variables go to the test's metadata DB."""
    monkeypatch.setattr(watcher_module, "CLAIM_SETTLE", 0.05)
    monkeypatch.setattr(watcher_module, "_get_variable", get_variable)
    monkeypatch.setattr(watcher_module, "_set_variable", put_variable)


@pytest.fixture
def conn(dashscope_conn, airflow_db) -> None:
    from airflow.models.variable import Variable

    Variable.delete(cursor_key(CONN))
    dashscope_conn(finish_events_secret=SECRET)


def cursor() -> Cursor:
    return Cursor.from_value(get_variable(cursor_key(CONN)))


def free_the_lease() -> None:
    """What the lease's expiry does for a restarted triggerer (the tests do not wait for it)."""
    put_variable(cursor_key(CONN), replace(cursor(), owner="").to_json())


async def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


class Triggerer:
    """One triggerer's view of the stream: the next event, and which of them it confirms persisted."""

    def __init__(self, trigger: DashScopeBatchFinishTrigger) -> None:
        from airflow.triggers.shared_stream import SharedStreamManager

        self.manager = SharedStreamManager(ack_timeout=3600)
        self.key = trigger.shared_stream_key()
        stream = self.manager.subscribe(trigger_id=1, trigger=trigger, key=self.key)
        self.events = trigger.filter_shared_stream(stream)

    async def next(self, *, persisted: bool) -> dict:
        event = await asyncio.wait_for(self.events.__anext__(), 30)
        seq = self.manager.bind_pending_event(trigger_id=1, key=self.key)
        assert seq is not None  # in ack mode: the event is bound to its raw event
        if persisted:
            self.manager.confirm_persisted([seq])
        return event.payload

    async def stop(self) -> None:
        """The trigger leaves (the last subscriber): the group stops, unresolved events are abandoned."""
        await self.manager.unsubscribe(1, self.key)


@asynccontextmanager
async def triggerer(**kwargs) -> AsyncIterator[Triggerer]:
    running = Triggerer(DashScopeBatchFinishTrigger(CONN, **kwargs))
    try:
        yield running
    finally:
        await running.stop()


async def test_a_finish_never_confirmed_persisted_stays_out_of_the_cursor_and_is_found_again(
    dashscope_emulator, conn, client
):
    async with triggerer(poll_interval=0.2, catch_up_delay=None) as first:
        await until(lambda: cursor().since is not None)  # the baseline round
        ids = create(client, n=3)
        wait_terminal(client, ids)
        seen = [(await first.next(persisted=False))["batch_id"] for _ in ids]
        assert sorted(seen) == sorted(ids)
        await asyncio.sleep(1)  # rounds go on meanwhile: none writes the finishes or yields them again
        assert not set(ids) & set(cursor().done)
    # killed before the supervisor confirmed them: nothing advanced
    assert not set(ids) & set(cursor().done)
    free_the_lease()
    async with triggerer(poll_interval=0.2, catch_up_delay=None) as second:
        again = [(await second.next(persisted=True))["batch_id"] for _ in ids]
        assert sorted(again) == sorted(ids)  # the list poll found them again
        (later,) = create(client)
        wait_terminal(client, [later])
        assert (await second.next(persisted=True))["batch_id"] == later  # the confirmed ones not again
        await until(lambda: set(ids) <= set(cursor().done))
    assert later in cursor().done  # its window closed when the trigger left


async def test_the_catch_up_event_follows_a_rounds_finishes_in_ack_mode(dashscope_emulator, conn, client):
    async with triggerer(poll_interval=0.2, catch_up_delay=0.5) as running:
        await until(lambda: cursor().since is not None)
        (batch_id,) = create(client)
        wait_terminal(client, [batch_id])
        assert (await running.next(persisted=True))["batch_id"] == batch_id
        catch_up = await running.next(persisted=True)
        assert "batch_id" not in catch_up
        assert catch_up["conn_id"] == CONN
        await until(lambda: batch_id in cursor().done)


async def test_queue_messages_are_acknowledged_only_once_their_events_are_confirmed_persisted(
    dashscope_emulator,
    client,
    rabbitmq,
    queue,  # noqa: F811 (test_rabbitmq's fixture)
    publish,  # noqa: F811 (test_rabbitmq's fixture)
):
    kwargs = {"poll_interval": 3600, "catch_up_delay": None, "queue_conn_id": QUEUE_CONN}
    ids = create(client, n=4)
    wait_terminal(client, ids)
    async with triggerer(**kwargs) as first:
        await until(lambda: cursor().since is not None)  # the baseline: these four are not events
        later = create(client, n=4)
        wait_terminal(client, later)
        await publish(*(eventbridge_event(b) for b in later))
        payloads = [await first.next(persisted=i < 2) for i in range(4)]
        assert sorted(p["batch_id"] for p in payloads) == sorted(later)
        confirmed = {p["batch_id"] for p in payloads[:2]}
        await until(lambda: confirmed <= set(cursor().done))
        await publish(eventbridge_event(later[0]))  # a duplicate delivery: no new finish, acknowledged
        await asyncio.sleep(1)
        assert await waiting(rabbitmq, queue) == 0
        assert set(cursor().done) & set(later) == confirmed
    assert set(cursor().done) & set(later) == confirmed
    assert await waiting(rabbitmq, queue) == 2  # the two never confirmed went back to the queue
    free_the_lease()
    async with triggerer(**kwargs) as second:
        again = [await second.next(persisted=True) for _ in range(2)]
        assert {p["batch_id"] for p in again} == set(later) - confirmed
    assert set(later) <= set(cursor().done)  # the last one's window closed when the trigger left
    assert await waiting(rabbitmq, queue) == 0  # acknowledged: not given back when the group stopped


async def test_the_list_start_stays_at_a_finish_in_flight_so_a_restart_lists_it_again(
    dashscope_emulator, conn, client
):
    trigger = DashScopeBatchFinishTrigger(CONN, poll_interval=0, catch_up_delay=None)
    watch = trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)

    async def rounds() -> list:
        return [item async for item in watch.rounds_step(gated=True)]

    assert await rounds() == []  # the baseline
    (first,) = create(client)
    wait_terminal(client, [first])
    ((payload, handed),) = await rounds()
    assert payload["batch_id"] == handed.batch_id == first
    dashscope_emulator.advance(3600)  # a later batch moves the list start far past the first
    (later,) = create(client)
    wait_terminal(client, [later])
    assert [p["batch_id"] for p, _ in await rounds()] == [later]  # the first is in flight: not again
    assert cursor().since <= handed.created  # never advanced: the first must stay listable
    free_the_lease()  # the triggerer is killed; its successor
    successor = trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)
    again = [p["batch_id"] async for p, _ in successor.rounds_step(gated=True)]
    assert sorted(again) == sorted([first, later])
