"""The finish watcher against the emulator: one event per finish of our batches, exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_dashscope_batch.events import watcher as watcher_module
from airflow_provider_dashscope_batch.events.receiver import post
from airflow_provider_dashscope_batch.events.tokens import MARK_KEY, mark
from airflow_provider_dashscope_batch.events.watcher import (
    Cursor,
    DashScopeBatchFinishTrigger,
    FinishWatch,
    cursor_key,
)
from airflow_provider_dashscope_batch.events.watcher import (
    payloads as finish_payloads,
)

SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
CONN = "dashscope_default"
SECRET = "watcher-test-secret"
RETRIEVE = "GET /batches/{batch_id}"

pytestmark = pytest.mark.anyio


def get_variable(key: str):
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


def put_variable(key: str, value: str) -> None:
    from airflow.models.variable import Variable

    Variable.set(key, value)


@pytest.fixture
def clean_variables(airflow_db) -> None:
    from airflow.models.variable import Variable

    for key in (cursor_key(CONN), f"dashscope_batch_finished.{CONN}"):
        Variable.delete(key)


@pytest.fixture
def conn(dashscope_conn, clean_variables) -> None:
    dashscope_conn(finish_events_secret=SECRET)


def create(client, *, secret: str | None = SECRET, conn_id: str = CONN, n: int = 1) -> list[str]:
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    ids = []
    for i in range(n):
        key = f"airflow-{time.monotonic_ns():040x}-g{i + 1}"[:52]
        metadata = {"idempotency_key": key}
        if secret is not None:
            metadata[MARK_KEY] = mark(secret, conn_id, key)
        ids.append(
            client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata=metadata).id
        )
    return ids


def wait_terminal(client, ids: list[str]) -> None:
    deadline = time.monotonic() + 60
    while not all(client.retrieve_batch(b).status.is_terminal for b in ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def new_watch(dashscope_emulator, **kwargs) -> FinishWatch:
    kwargs.setdefault("catch_up_delay", None)  # the catch-up event has a test of its own
    trigger = DashScopeBatchFinishTrigger(CONN, **kwargs)
    return trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)


async def collect(watch: FinishWatch) -> list[dict]:
    return [payload async for payload in watch.round()]


@pytest.fixture(autouse=True)
def fast_claims(monkeypatch) -> None:
    monkeypatch.setattr(watcher_module, "CLAIM_SETTLE", 0.05)


async def test_each_finish_of_our_batches_is_one_event_and_no_other_batch_is(
    dashscope_emulator, conn, client
):
    before = create(client, n=2)  # finished before the watcher first ran: its baseline
    wait_terminal(client, before)
    watch = new_watch(dashscope_emulator, poll_interval=0)
    assert await collect(watch) == []
    ours = create(client, n=3)
    others = [
        *create(client, secret=None),  # no mark
        *create(client, secret="another-deployment"),  # another deployment's secret
        *create(client, conn_id="another_conn"),  # another connection's mark
    ]
    wait_terminal(client, ours + others)
    payloads = await collect(watch)
    assert sorted(p["batch_id"] for p in payloads) == sorted(ours)
    assert {p["status"] for p in payloads} == {"completed"}
    assert all(p["output_file_id"] for p in payloads)
    assert await collect(watch) == []


async def test_a_restarted_watcher_hands_on_no_finish_twice_and_misses_none(dashscope_emulator, conn, client):
    first = new_watch(dashscope_emulator, poll_interval=0)
    await collect(first)
    done = create(client, n=2)
    wait_terminal(client, done)
    assert len(await collect(first)) == 2
    later = create(client, n=2)
    wait_terminal(client, later)
    restarted = new_watch(dashscope_emulator, poll_interval=0)  # a new trigger instance, same cursor
    assert await collect(restarted) == []  # the old lease is still live: stand by
    dashscope_emulator.advance(restarted.lease + 1)
    payloads = await collect(restarted)
    assert sorted(p["batch_id"] for p in payloads) == sorted(later)


async def test_two_triggerers_running_the_watcher_hand_on_each_finish_once(dashscope_emulator, conn, client):
    one, two = new_watch(dashscope_emulator, poll_interval=0), new_watch(dashscope_emulator, poll_interval=0)
    await asyncio.gather(collect(one), collect(two))
    ids = create(client, n=20)
    wait_terminal(client, ids)
    seen: list[str] = []
    for _ in range(3):
        for payloads in await asyncio.gather(collect(one), collect(two)):
            seen.extend(p["batch_id"] for p in payloads)
    assert sorted(seen) == sorted(ids)


async def test_a_mailbox_post_is_confirmed_with_one_read_before_it_counts(dashscope_emulator, conn, client):
    watch = new_watch(dashscope_emulator, poll_interval=3600, mailbox_interval=1)
    await collect(watch)
    (ours,) = create(client)
    (foreign,) = create(client, secret="another-deployment")
    wait_terminal(client, [ours, foreign])
    post(CONN, ours)
    post(CONN, foreign)
    reads = dashscope_emulator.request_counts().get(RETRIEVE, 0)
    payloads = await collect(watch)  # the list poll is not due: the mailbox alone
    assert [p["batch_id"] for p in payloads] == [ours]
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == reads + 2


async def test_the_cursor_survives_a_malformed_variable(dashscope_emulator, conn, client):
    put_variable(cursor_key(CONN), "not json")
    assert Cursor.from_value(get_variable(cursor_key(CONN))) == Cursor()
    watch = new_watch(dashscope_emulator, poll_interval=0)
    assert await collect(watch) == []
    assert json.loads(get_variable(cursor_key(CONN)))["owner"] == watch.me


async def test_the_trigger_runs_in_an_event_loop_and_yields_events(
    dashscope_emulator, conn, client, monkeypatch
):
    monkeypatch.setattr(watcher_module, "_get_variable", get_variable)
    monkeypatch.setattr(watcher_module, "_set_variable", put_variable)
    trigger = DashScopeBatchFinishTrigger(CONN, poll_interval=0.2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dashscope_batch.events.watcher.DashScopeBatchFinishTrigger"
    assert DashScopeBatchFinishTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["catch_up_delay"] == 30.0
    events = trigger.run()
    baseline = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(1)
    (batch_id,) = create(client)
    wait_terminal(client, [batch_id])
    event = await asyncio.wait_for(baseline, 30)
    assert event.payload["batch_id"] == batch_id
    await events.aclose()


async def test_a_local_clock_an_hour_ahead_of_the_service_loses_no_finish(dashscope_emulator, conn, client):
    trigger = DashScopeBatchFinishTrigger(CONN, poll_interval=0)
    ahead = trigger.watch(get=get_variable, put=put_variable, clock=lambda: dashscope_emulator.now() + 3600)
    await collect(ahead)
    await collect(ahead)  # a round with nothing new: the next list still starts at the service's time
    ids = create(client, n=2)
    wait_terminal(client, ids)
    assert sorted(p["batch_id"] for p in await collect(ahead)) == sorted(ids)


async def test_a_watcher_stopped_in_the_middle_of_a_round_loses_no_finish(dashscope_emulator, conn, client):
    first = new_watch(dashscope_emulator, poll_interval=0)
    await collect(first)
    ids = create(client, n=3)
    wait_terminal(client, ids)
    stopped = first.round()
    taken = await stopped.__anext__()  # the triggerer took one event, then the triggerer stopped
    await stopped.aclose()
    successor = new_watch(dashscope_emulator, poll_interval=0)
    dashscope_emulator.advance(successor.lease + 1)
    payloads = await collect(successor)
    assert sorted(p["batch_id"] for p in payloads) == sorted(ids)  # none lost; the taken one again
    assert taken["batch_id"] in ids
    assert await collect(successor) == []


async def test_two_watchers_interleaving_their_rounds_across_takeovers_hand_on_each_finish_once(
    dashscope_emulator, conn, client
):
    """
    In each wave one instance is paused right after yielding its first finish while the other runs a
    whole round, then it finishes its round; between waves the lease sometimes expires (a failover), so
    either instance may take over.
    """
    watches = [new_watch(dashscope_emulator, poll_interval=0), new_watch(dashscope_emulator, poll_interval=0)]
    await asyncio.gather(*(collect(w) for w in watches))
    rng, made, seen = random.Random(7), [], Counter()
    for wave in range(6):
        ids = create(client, n=rng.randint(2, 6))
        made.extend(ids)
        wait_terminal(client, ids)
        if wave % 2:  # the holder stopped renewing between rounds: the lease is free for either
            dashscope_emulator.advance(watches[0].lease + 1)
        first, second = rng.sample(watches, 2)
        paused = first.round()
        async for payload in paused:
            seen[payload["batch_id"]] += 1
            break  # the first is mid-round, past its re-check of the cursor
        seen.update(p["batch_id"] for p in await collect(second))
        seen.update([p["batch_id"] async for p in paused])
    for _ in range(2):  # a last round each: whatever a stand-by left
        for found in await asyncio.gather(*(collect(w) for w in watches)):
            seen.update(p["batch_id"] for p in found)
    assert set(seen) == set(made)
    assert set(seen.values()) == {1}, {b: n for b, n in seen.items() if n > 1}


async def test_a_catch_up_event_follows_a_rounds_finishes_after_the_delay_and_names_no_batch(
    dashscope_emulator, conn, client
):
    watch = new_watch(dashscope_emulator, poll_interval=0, catch_up_delay=30)
    assert await collect(watch) == []  # the baseline: nothing handed on, no catch-up due
    ids = create(client, n=2)
    wait_terminal(client, ids)
    finishes = await collect(watch)
    assert sorted(p["batch_id"] for p in finishes) == sorted(ids)
    dashscope_emulator.advance(10)
    assert await collect(watch) == []  # not yet: the scheduler may not have queued the finishes' run
    dashscope_emulator.advance(21)
    (catch_up,) = await collect(watch)
    assert "batch_id" not in catch_up
    assert catch_up["conn_id"] == CONN
    dashscope_emulator.advance(60)
    assert await collect(watch) == []  # one per round of finishes
    events = [SimpleNamespace(extra={"from_trigger": True, "payload": p}) for p in [*finishes, catch_up]]
    assert finish_payloads(events) == finishes  # a results DAG sees the finishes only


async def test_every_task_sdk_call_of_two_watchers_runs_on_one_thread(dashscope_emulator, conn, client):
    """
    On Airflow 3.0 a Task SDK call from a plain worker thread reaches the triggerer's supervisor on a
    second event loop, and two of them at once read each other's answers: the calls must share one thread.
    """
    threads: set[int] = set()

    def get(key: str):
        threads.add(threading.get_ident())
        return get_variable(key)

    def put(key: str, value: str) -> None:
        threads.add(threading.get_ident())
        put_variable(key, value)

    watches = [
        DashScopeBatchFinishTrigger(CONN, poll_interval=0, mailbox_interval=0).watch(
            get=get, put=put, clock=dashscope_emulator.now
        )
        for _ in range(2)
    ]
    ids = create(client, n=2)
    wait_terminal(client, ids)
    for _ in range(3):
        await asyncio.gather(*(collect(w) for w in watches))
    assert len(threads) == 1
    assert threading.get_ident() not in threads  # and never on the event loop's own thread
