"""Grouped status reads against the emulator: request counts come from the emulator's own counters."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_dashscope_batch.client import AsyncDashScopeClient, DashScopeClient, ServerError
from airflow_provider_dashscope_batch.client.ratelimit import RateBudget, RateLimit, RequestKind
from airflow_provider_dashscope_batch.client.status import BatchRef, StatusRead
from airflow_provider_dashscope_batch.client.types import BatchStatus
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
from airflow_provider_dashscope_batch.waiting import reader as status
from airflow_provider_dashscope_batch.waiting.protocol import (
    BatchPoller,
    BatchWait,
    PollAction,
    PollSchedule,
    WaitSettings,
)
from airflow_provider_dashscope_batch.waiting.reader import StatusReader, status_reader
from tests.client.client_helpers import active_shared_clients


def read_statuses(client: DashScopeClient, refs: list[BatchRef]) -> StatusRead:
    """One grouped read of ``refs`` with the sync client."""
    return client.read_statuses(refs)


def registered(reader: StatusReader) -> int:
    """Waits a reader holds and has not answered (between polls, due, or in a round under way)."""
    return len(reader._scheduled) + len(reader._due) + reader._in_round


SAMPLE = "example_dags/data/requests.jsonl"
LIST = "GET /batches"
RETRIEVE = "GET /batches/{batch_id}"


def _roomy_budget() -> RateBudget:
    return RateBudget({kind: RateLimit(100_000) for kind in RequestKind})


@pytest.fixture
def scene(dashscope_emulator) -> Iterator[DashScopeClient]:
    """A sync client that sets the scene without waiting on the account's upload limit."""
    with DashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, rate_budget=_roomy_budget()
    ) as client:
        yield client


@pytest.fixture
def make_batches(scene, dashscope_emulator) -> Callable[..., list[BatchRef]]:
    """Create ``n`` batches, each of its own input file; request counters are zeroed afterwards."""

    def make(n: int, *, key: str | None = None) -> list[BatchRef]:
        refs = []
        for _ in range(n):
            file_id = scene.upload_file(SAMPLE).id
            batch = scene.create_batch(
                input_file_id=file_id, endpoint="/v1/chat/ds-test", idempotency_key=key
            )
            refs.append(BatchRef(batch.id, file_id, batch.metadata["idempotency_key"]))
        dashscope_emulator.clear_request_counts()
        return refs

    return make


@pytest.fixture
def counts(dashscope_emulator) -> Callable[[], dict[str, int]]:
    return dashscope_emulator.request_counts


def test_one_list_request_answers_twenty_waits(make_batches, scene, counts):
    refs = make_batches(25)
    read = read_statuses(scene, refs)
    assert set(read.batches) == {ref.batch_id for ref in refs}
    assert not read.errors
    assert all(read.batches[ref.batch_id].input_file_id == ref.input_file_id for ref in refs)
    assert counts() == {LIST: 2}  # 20 + 5 waits, no retrieve


def test_single_wait_unknown_file_and_no_file_fall_back_to_retrieve(make_batches, scene, counts):
    a, b, c = make_batches(3)
    assert set(read_statuses(scene, [a]).batches) == {a.batch_id}
    assert counts() == {RETRIEVE: 1}
    # b is listed under another file's id, so the list does not show it; c has no file id at all
    misfiled = BatchRef(b.batch_id, c.input_file_id)
    read = read_statuses(scene, [a, misfiled, BatchRef(c.batch_id)])
    assert set(read.batches) == {a.batch_id, b.batch_id, c.batch_id}
    assert counts() == {RETRIEVE: 3, LIST: 1}


def test_pages_through_a_file_with_many_batches(scene, dashscope_emulator, counts):
    file_id = scene.upload_file(SAMPLE).id
    oldest = scene.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test")
    for _ in range(100):
        scene.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test")
    other_file = scene.upload_file(SAMPLE).id
    other = scene.create_batch(input_file_id=other_file, endpoint="/v1/chat/ds-test")
    dashscope_emulator.clear_request_counts()
    read = read_statuses(scene, [BatchRef(oldest.id, file_id), BatchRef(other.id, other_file)])
    assert set(read.batches) == {oldest.id, other.id}
    assert counts() == {LIST: 2}  # newest first: the oldest batch is on the second page


def test_a_second_batch_with_the_same_key_is_reported(make_batches, scene):
    first, other = make_batches(2)
    twin = scene.create_batch(
        input_file_id=first.input_file_id, endpoint="/v1/chat/ds-test", idempotency_key=first.idempotency_key
    )
    read = read_statuses(scene, [first, other])
    assert [b.id for b in read.duplicates[first.batch_id]] == [twin.id]
    assert other.batch_id not in read.duplicates


def test_a_failed_list_is_sent_once_and_marks_its_waits(make_batches, scene, counts, dashscope_emulator):
    refs = make_batches(3)
    dashscope_emulator.add_fault(method="GET", path="/batches", status=500, count=1)
    read = read_statuses(scene, refs)
    assert set(read.errors) == {ref.batch_id for ref in refs}
    assert all(isinstance(e, ServerError) and e.retryable for e in read.errors.values())
    assert counts() == {LIST: 1}


# ----------------------------------------------------------------------------------- the async reader
@pytest.fixture
def async_client(dashscope_emulator) -> Callable[[], AsyncDashScopeClient]:
    def make() -> AsyncDashScopeClient:
        return AsyncDashScopeClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url)

    return make


@pytest.mark.anyio
async def test_reader_answers_twenty_concurrent_waits_with_one_request(make_batches, async_client, counts):
    refs = make_batches(20)
    async with async_client() as client:
        reader = StatusReader(client)
        batches = await asyncio.gather(*(reader.read(r.batch_id, r.input_file_id) for r in refs))
        assert [b.id for b in batches] == [r.batch_id for r in refs]
        assert registered(reader) == 0
    assert counts() == {LIST: 1}


@pytest.mark.anyio
async def test_reader_reports_duplicates_to_the_wait(make_batches, scene, async_client):
    first, other = make_batches(2)
    twin = scene.create_batch(
        input_file_id=first.input_file_id, endpoint="/v1/chat/ds-test", idempotency_key=first.idempotency_key
    )
    seen: list[str] = []
    async with async_client() as client:
        reader = StatusReader(client)
        await asyncio.gather(
            reader.read(
                first.batch_id,
                first.input_file_id,
                first.idempotency_key,
                on_duplicate=lambda b: seen.append(b.id),
            ),
            reader.read(other.batch_id, other.input_file_id),
        )
    assert seen == [twin.id]


@pytest.mark.anyio
async def test_reader_passes_errors_to_every_wait_of_the_round(
    make_batches, async_client, dashscope_emulator
):
    refs = make_batches(2)
    dashscope_emulator.add_fault(method="GET", path="/batches", status=429, retry_after=2, count=1)
    async with async_client() as client:
        reader = StatusReader(client)
        results = await asyncio.gather(
            *(reader.read(r.batch_id, r.input_file_id) for r in refs), return_exceptions=True
        )
    assert [getattr(r, "retry_after", None) for r in results] == [2.0, 2.0]
    assert registered(reader) == 0


@pytest.mark.anyio
async def test_waits_cancelled_before_and_during_a_round_leave_no_registration(
    make_batches, async_client, dashscope_emulator, counts
):
    refs = make_batches(21)
    dashscope_emulator.add_fault(method="GET", path="/batches", kind="latency", latency=1.0)
    async with async_client() as client:
        reader = StatusReader(client)
        tasks = [asyncio.create_task(reader.read(r.batch_id, r.input_file_id)) for r in refs]
        while counts().get(LIST, 0) == 0:  # noqa: ASYNC110 - the first 20 are in a round, the 21st gathers
            await asyncio.sleep(0.01)
        assert registered(reader) == 21
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not reader._due  # the gathering wait is gone at once
        await asyncio.gather(*reader._rounds)  # the round under way ends on its own, answering nobody
        assert registered(reader) == 0
    assert all(task.cancelled() for task in tasks)


@pytest.mark.anyio
async def test_triggers_cancelled_mid_round_leave_no_registration(
    dashscope_conn, make_batches, dashscope_emulator
):
    refs = make_batches(2)
    dashscope_emulator.add_fault("latency", method="GET", path="/batches*", latency=1.0)
    triggers = [
        DashScopeBatchTrigger(
            r.batch_id,
            input_file_id=r.input_file_id,
            wait=WaitSettings(poll_interval=0.05, max_poll_interval=0.05),
        )
        for r in refs
    ]
    earlier = set(status._readers.values())  # an earlier test's client may not be collected yet
    tasks = [asyncio.create_task(trigger.run().__anext__()) for trigger in triggers]

    def ours() -> list[StatusReader]:
        return [r for r in status._readers.values() if r not in earlier]

    def both_in_a_round() -> bool:
        readers = ours()
        return len(readers) == 1 and registered(readers[0]) == 2 and not readers[0]._due

    while not both_in_a_round():  # noqa: ASYNC110 - watching the reader's own state
        await asyncio.sleep(0.01)
    (reader,) = ours()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(task.cancelled() for task in tasks)
    assert active_shared_clients() == 0
    await asyncio.gather(*reader._rounds)  # the requests under way end on their own, answering nobody
    assert registered(reader) == 0


@pytest.mark.anyio
async def test_reader_reads_by_id_while_the_list_budget_is_spent(make_batches, dashscope_emulator, counts):
    refs = make_batches(20)
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(1)})  # one list token, the next in a minute
    async with AsyncDashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, rate_budget=budget
    ) as client:
        reader = StatusReader(client)
        for _ in range(2):
            batches = await asyncio.gather(*(reader.read(r.batch_id, r.input_file_id) for r in refs))
            assert [b.id for b in batches] == [r.batch_id for r in refs]
    assert counts() == {LIST: 1, RETRIEVE: 20}


@pytest.mark.anyio
async def test_a_trigger_reports_a_late_duplicate_and_the_resume_cancels_it(
    dashscope_conn, scene, dashscope_emulator
):
    dashscope_emulator.configure(time_scale=0)  # every batch stays where it is
    key = "airflow-" + "d" * 40 + "-g1"
    file_id = scene.upload_file(SAMPLE).id
    kept = scene.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", idempotency_key=key)
    late = scene.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test", idempotency_key=key)
    other_file = scene.upload_file(SAMPLE).id
    other = scene.create_batch(input_file_id=other_file, endpoint="/v1/chat/ds-test")
    trigger = DashScopeBatchTrigger(
        kept.id,
        input_file_id=file_id,
        idempotency_key=key,
        wait=WaitSettings(poll_interval=0.05, max_poll_interval=0.05),
    )
    async with DashScopeBatchHook().shared_async_client() as client:
        reader = status_reader(client)

        async def another_wait() -> None:  # always due, so the trigger's read shares a list request
            while True:
                await reader.read(other.id, other_file, gather=60)

        companion = asyncio.create_task(another_wait())
        event = await asyncio.wait_for(trigger.run().__anext__(), 30)
        companion.cancel()
        await asyncio.gather(companion, return_exceptions=True)
    payload = event.payload
    assert (payload["status"], payload["late_batch_ids"]) == ("late_copies", [late.id])
    assert scene.retrieve_batch(late.id).status == "validating"  # the trigger only reads
    operator = DashScopeCreateBatchOperator(task_id="t", input_file_id=file_id, endpoint="/v1/chat/ds-test")
    with pytest.raises(TaskDeferred) as deferred:  # the resume step cancels it, then waits again
        await asyncio.to_thread(operator.execute_complete, {}, payload)
    assert deferred.value.trigger.serialize() == trigger.serialize()
    assert scene.retrieve_batch(late.id).status == "cancelling"
    assert scene.retrieve_batch(kept.id).status == "validating"
    assert scene.retrieve_batch(other.id).status == "validating"


# ------------------------------------------------------------------------------------- followed waits
def _follow_wait(batch_id: str, interval: float = 0.05) -> BatchWait:
    schedule = PollSchedule(interval, interval, backoff=1, first_poll_jitter=0, jitter=0)
    return BatchWait(batch_id, BatchPoller(schedule), logging.getLogger("test.follow"))


@pytest.mark.anyio
async def test_followed_waits_share_each_round_and_end_on_their_terminal_status(
    make_batches, async_client, dashscope_emulator, counts
):
    refs = make_batches(20)
    waits = [_follow_wait(r.batch_id) for r in refs]
    async with async_client() as client:
        reader = StatusReader(client, gather=0.5)
        steps = await asyncio.gather(
            *(reader.follow(r, w, w.start(time.time())) for r, w in zip(refs, waits, strict=True))
        )
        assert registered(reader) == 0
    assert {s.action for s in steps} == {PollAction.DONE}
    assert {w.batch.status for w in waits if w.batch} == {BatchStatus.COMPLETED}
    rounds = max(w.poller.polls for w in waits)
    # due together, read together: one request per round answered every wait still going (a lone wait
    # left in the last round is read by id)
    assert counts().get(LIST, 0) >= 1
    assert counts().get(LIST, 0) + counts().get(RETRIEVE, 0) == rounds


@pytest.mark.anyio
async def test_a_followed_wait_parses_a_listed_batch_only_when_it_needs_it(
    make_batches, async_client, dashscope_emulator, monkeypatch
):
    dashscope_emulator.configure(time_scale=0)  # every batch stays validating
    refs = make_batches(20)
    waits = [_follow_wait(r.batch_id) for r in refs]
    parsed: list[str] = []
    real_parse = StatusRead.parse

    def counting_parse(read, listed):
        batch = real_parse(read, listed)
        parsed.append(batch.id)
        return batch

    monkeypatch.setattr(StatusRead, "parse", counting_parse)
    async with async_client() as client:
        reader = StatusReader(client, gather=0.5)
        follows = (reader.follow(r, w, w.start(time.time())) for r, w in zip(refs, waits, strict=True))
        tasks = [asyncio.create_task(follow) for follow in follows]
        while min(w.poller.polls for w in waits) < 4:  # noqa: ASYNC110 - watching the waits' own state
            await asyncio.sleep(0.02)
        assert sorted(parsed) == sorted(r.batch_id for r in refs)  # once each, for the first progress line
        assert all(w.batch is None and w.status is BatchStatus.VALIDATING for w in waits)  # nothing kept
        assert registered(reader) == 20
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*reader._rounds)
        assert registered(reader) == 0
        assert not reader._scheduled
        assert not reader._due


def test_a_connection_whose_waits_all_ended_leaves_no_reader_behind(dashscope_conn, new_batch):
    """The shared client closes when its last wait leaves; its reader must go with it (no leak)."""
    batch_id = new_batch()
    gc.collect()
    earlier = set(status._readers.values())  # an earlier test's, not yet collected: not this test's concern

    async def wait() -> list:
        return [
            e
            async for e in DashScopeBatchTrigger(
                batch_id, wait=WaitSettings(poll_interval=0.05, max_poll_interval=0.1)
            ).run()
        ]

    for _ in range(3):  # three generations of the shared client, as waits come and go in a triggerer
        (event,) = asyncio.run(wait())
        assert event.payload["status"] == "terminal"
    gc.collect()
    assert [r for r in status._readers.values() if r not in earlier] == []
