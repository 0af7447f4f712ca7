"""Deferred waits woken by the connection's mailbox: real triggers, a real event loop, the emulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import pytest

from airflow_provider_dashscope_batch.client import AsyncDashScopeClient
from airflow_provider_dashscope_batch.client.status import BatchRef
from airflow_provider_dashscope_batch.events.mailbox import MAILBOX_SIZE, Mailbox, variable_key
from airflow_provider_dashscope_batch.events.wake import FinishWatcher
from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
from airflow_provider_dashscope_batch.waiting.protocol import (
    BatchPoller,
    BatchWait,
    PollSchedule,
    WaitSettings,
)
from airflow_provider_dashscope_batch.waiting.reader import StatusReader

SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
LIST, RETRIEVE = "GET /batches", "GET /batches/{batch_id}"
HOUR = 3600.0


def finished(client, count: int) -> list[tuple[str, str]]:
    """``count`` finished batches, each of its own input file: (batch id, input file id)."""
    made = []
    for _ in range(count):
        file_id = client.upload_file(SAMPLE_REQUESTS).id
        made.append((client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test").id, file_id))
    deadline = time.monotonic() + 60
    while not all(client.retrieve_batch(b).status.is_terminal for b, _ in made):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return made


def post(monkeypatch, *batch_ids: str, mailbox: Mailbox | None = None) -> Mailbox:
    """Post finishes to the mailbox Variable (the SDK reads ``AIRFLOW_VAR_*`` before the metadata DB)."""
    mailbox = mailbox or Mailbox()
    for batch_id in batch_ids:
        mailbox = mailbox.posted(batch_id)
    monkeypatch.setenv(f"AIRFLOW_VAR_{variable_key('dashscope_default').upper()}", mailbox.to_json())
    return mailbox


def emulator_client(emulator) -> AsyncDashScopeClient:
    return AsyncDashScopeClient(api_key=emulator.api_key, base_url=emulator.base_url)


async def first_event(trigger: DashScopeBatchTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


@pytest.mark.anyio
async def test_a_posted_finish_ends_a_wait_that_would_first_poll_in_an_hour(
    dashscope_conn, client, dashscope_emulator, monkeypatch
):
    ((batch_id, file_id),) = await anyio.to_thread.run_sync(finished, client, 1)
    dashscope_emulator.clear_request_counts()
    trigger = DashScopeBatchTrigger(
        batch_id,
        input_file_id=file_id,
        wait=WaitSettings(poll_interval=HOUR, max_poll_interval=HOUR, finish_events=True),
    )
    waiting = asyncio.ensure_future(first_event(trigger))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    post(monkeypatch, "batch_other", batch_id)
    payload = await asyncio.wait_for(waiting, 30)
    assert (payload["status"], payload["batch"]["status"]) == ("terminal", "completed")
    counts = dashscope_emulator.request_counts()
    assert counts.get(LIST, 0) + counts.get(RETRIEVE, 0) == 1  # the one read the wake asked for


@pytest.mark.anyio
async def test_a_wait_that_starts_after_its_finish_was_posted_ends_at_once(
    dashscope_conn, client, dashscope_emulator, monkeypatch
):
    ((batch_id, file_id),) = await anyio.to_thread.run_sync(finished, client, 1)
    post(monkeypatch, batch_id)
    trigger = DashScopeBatchTrigger(
        batch_id, input_file_id=file_id, wait=WaitSettings(poll_interval=HOUR, finish_events=True)
    )
    payload = await asyncio.wait_for(first_event(trigger), 30)
    assert payload["batch"]["status"] == "completed"


@pytest.mark.anyio
async def test_without_finish_events_a_posted_finish_wakes_nothing(
    dashscope_conn, client, dashscope_emulator, monkeypatch
):
    ((batch_id, file_id),) = await anyio.to_thread.run_sync(finished, client, 1)
    post(monkeypatch, batch_id)
    dashscope_emulator.clear_request_counts()
    trigger = DashScopeBatchTrigger(batch_id, input_file_id=file_id, wait=WaitSettings(poll_interval=HOUR))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(first_event(trigger), 2)
    assert dashscope_emulator.request_counts() == {}


async def follow_all(reader: StatusReader, watcher: FinishWatcher, made: list[tuple[str, str]]) -> list:
    async def one(batch_id: str, file_id: str):
        wait = BatchWait(batch_id, BatchPoller(PollSchedule(HOUR, HOUR)), log=_quiet)
        with watcher.watching(batch_id):
            return await reader.follow(BatchRef(batch_id, file_id), wait, wait.start(time.time()))

    return await asyncio.gather(*(one(b, f) for b, f in made))


class _Quiet:
    def info(self, *args: object) -> None: ...

    warning = info


_quiet = _Quiet()


@pytest.mark.anyio
async def test_one_mailbox_read_per_round_serves_every_wait_of_the_connection(client, dashscope_emulator):
    made = await anyio.to_thread.run_sync(finished, client, 50)
    reads: list[str] = []
    mailbox = Mailbox()
    three_reads = asyncio.Event()
    loop = asyncio.get_running_loop()

    def read(key: str) -> str:
        reads.append(key)
        if len(reads) == 3:
            loop.call_soon_threadsafe(three_reads.set)
        return mailbox.to_json()

    dashscope_emulator.clear_request_counts()
    async with AsyncDashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:
        reader = StatusReader(c)
        watcher = FinishWatcher(reader, "dashscope_default", interval=0.1, read=read)
        following = asyncio.ensure_future(follow_all(reader, watcher, made))
        await three_reads.wait()  # the waits are registered and their mailbox read runs
        for batch_id, _ in made:
            mailbox = mailbox.posted(batch_id)
        steps = await asyncio.wait_for(following, 30)
    assert {step.action.value for step in steps} == {"done"}
    rounds = len(reads)
    assert set(reads) == {variable_key("dashscope_default")}
    # every read served all 50 waits: the reads follow the clock, not the number of waits
    assert rounds < 50
    counts = dashscope_emulator.request_counts()
    assert counts.get(LIST, 0) == 3  # 50 woken waits, 20 input files per list request
    assert counts.get(RETRIEVE, 0) == 0


@pytest.mark.anyio
async def test_a_reader_that_fell_behind_the_mailbox_wakes_all_its_waits(client, dashscope_emulator):
    made = await anyio.to_thread.run_sync(finished, client, 3)
    mailbox = Mailbox()
    seen = asyncio.Event()

    loop = asyncio.get_running_loop()

    def read(_key: str) -> str:
        value = mailbox.to_json()  # taken before the signal: the posts below come after this read
        loop.call_soon_threadsafe(seen.set)
        return value

    async with AsyncDashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:
        reader = StatusReader(c)
        watcher = FinishWatcher(reader, "dashscope_default", interval=0.1, read=read)
        following = asyncio.ensure_future(follow_all(reader, watcher, made))
        await seen.wait()
        for n in range(MAILBOX_SIZE + 1):  # the waits' finishes were pushed out before the next read
            mailbox = mailbox.posted(made[n % 3][0] if n < 3 else f"batch_else_{n}")
        steps = await asyncio.wait_for(following, 30)
    assert {step.action.value for step in steps} == {"done"}
