"""DashScopeBatchTrigger against the emulator over a real socket."""

from __future__ import annotations

import gc
import importlib
import json
import time
from dataclasses import dataclass

import anyio
import pytest

from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger
from airflow_provider_dashscope_batch.waiting.protocol import WaitSettings
from tests.client.client_helpers import active_shared_clients

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}
POLLS = "GET /batches/{batch_id}"


def rebuild(trigger: DashScopeBatchTrigger) -> DashScopeBatchTrigger:
    """What the triggerer does: import the class path and call it with the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)


async def events_of(trigger: DashScopeBatchTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def test_serialize_round_trips_primitives_only(dashscope_emulator):
    trigger = DashScopeBatchTrigger(
        "batch_1", "my_conn", wait=WaitSettings(poll_interval=5, deadline=1900000000.5, cancel_on_kill=True)
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dashscope_batch.triggers.batch.DashScopeBatchTrigger"
    assert rebuild(trigger).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["wait"]["deadline"] == 1_900_000_000.5
    assert dashscope_emulator.api_key not in repr(trigger)
    assert set(kwargs) == {
        "batch_id",
        "dashscope_conn_id",
        "wait",
        "input_file_id",
        "idempotency_key",
        "late_copies",
    }
    assert set(kwargs["wait"]) == {
        "poll_interval",
        "max_poll_interval",
        "poll_backoff",
        "deadline",
        "error_budget",
        "cancel_on_kill",
        "finish_events",
    }


def test_serialize_keeps_the_batch_identity(dashscope_emulator):
    trigger = DashScopeBatchTrigger(
        "batch_1", input_file_id="file-1", idempotency_key="airflow-" + "a" * 40 + "-g2"
    )
    kwargs = rebuild(trigger).serialize()[1]
    assert (kwargs["input_file_id"], kwargs["idempotency_key"]) == ("file-1", "airflow-" + "a" * 40 + "-g2")


@pytest.mark.anyio
async def test_one_event_with_the_terminal_batch(dashscope_conn, new_batch, dashscope_emulator):
    batch_id = new_batch()
    events = await events_of(DashScopeBatchTrigger(batch_id, wait=WaitSettings(**FAST)))
    assert len(events) == 1
    (event,) = events
    assert event["status"] == "terminal"
    assert event["batch"]["id"] == batch_id
    assert event["batch"]["status"] == "completed"
    assert event["batch"]["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert json.loads(json.dumps(event)) == event
    counts = dashscope_emulator.request_counts()
    assert set(counts) == {"POST /files", "POST /batches", POLLS}  # run() only reads


@pytest.mark.anyio
async def test_cancelling_is_not_terminal(dashscope_conn, new_batch, client, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)  # frozen: the batch stays put until the clock moves
    batch_id = new_batch()
    assert client.cancel_batch(batch_id).status == "cancelling"

    async def finish_cancelling_later() -> None:
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(dashscope_emulator.advance, 60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_cancelling_later)
        events = await events_of(DashScopeBatchTrigger(batch_id, wait=WaitSettings(**FAST)))
    assert events[0]["batch"]["status"] == "cancelled"
    assert dashscope_emulator.request_counts()[POLLS] >= 2  # it saw `cancelling` and kept waiting


@pytest.mark.anyio
async def test_transient_errors_within_budget_are_tolerated(dashscope_conn, new_batch, dashscope_emulator):
    batch_id = new_batch()
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=503, count=3)
    events = await events_of(DashScopeBatchTrigger(batch_id, wait=WaitSettings(error_budget=3, **FAST)))
    assert events[0]["status"] == "terminal"


@pytest.mark.anyio
async def test_each_poll_is_one_request_whatever_the_connection_retries(
    dashscope_conn, new_batch, dashscope_emulator
):
    """The poller is the one retry owner while waiting: a failed poll is not retried by the client."""
    dashscope_conn(max_retries=5)
    batch_id = new_batch()
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=503, retry_after=0)
    (event,) = await events_of(DashScopeBatchTrigger(batch_id, wait=WaitSettings(error_budget=2, **FAST)))
    assert event["status"] == "error"
    assert dashscope_emulator.request_counts()[POLLS] == 3  # 3 polls, not 3 x 6 requests


@pytest.mark.anyio
async def test_error_budget_exhausted_ends_with_an_error_event(dashscope_conn, new_batch, dashscope_emulator):
    batch_id = new_batch()
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=429, retry_after=0)
    (event,) = await events_of(DashScopeBatchTrigger(batch_id, wait=WaitSettings(error_budget=2, **FAST)))
    assert event["status"] == "error"
    assert "3 consecutive transient errors" in event["message"]
    assert dashscope_emulator.request_counts()[POLLS] == 3


@pytest.mark.anyio
async def test_permanent_error_ends_at_once(dashscope_conn, dashscope_emulator):
    (event,) = await events_of(DashScopeBatchTrigger("batch_does_not_exist", wait=WaitSettings(**FAST)))
    assert event["status"] == "error"
    assert event["batch"] is None
    assert dashscope_emulator.request_counts()[POLLS] == 1


@pytest.mark.anyio
async def test_wall_clock_deadline(dashscope_conn, new_batch, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    trigger = DashScopeBatchTrigger(batch_id, wait=WaitSettings(deadline=time.time() + 0.5, **FAST))
    # the deadline survives a serialize / rebuild, as after a triggerer restart
    (event,) = await events_of(rebuild(trigger))
    assert event["status"] == "timeout"
    assert event["batch"]["status"] == "validating"
    assert "deadline" in event["message"]


@dataclass
class TriggerTaskInstance:
    """The task instance the triggerer gives a trigger (Airflow 3.3): its key and the Task SDK state read."""

    state: str | None
    dag_id: str = "dag"
    task_id: str = "create_batch"
    run_id: str = "manual__1"
    map_index: int = -1
    try_number: int = 1

    def get_task_states(self, *, dag_id, task_ids, run_ids, map_index) -> dict:
        assert (dag_id, task_ids, run_ids, map_index) == (self.dag_id, [self.task_id], [self.run_id], -1)
        return {self.run_id: {self.task_id: self.state}}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("cancel_on_kill", "state", "expected"),
    [
        (True, "failed", "cancelling"),  # mark failed
        (False, "failed", "validating"),
        (True, "success", "validating"),  # mark success: the batch keeps running, with a warning
        (True, None, "validating"),  # clear: the state is reset and the next try re-attaches
        (True, "queued", "validating"),
        (True, "deferred", "validating"),  # clear: the next try re-attached and deferred already
    ],
)
async def test_on_kill_cancels_only_when_the_task_was_marked_failed(
    dashscope_conn, new_batch, client, dashscope_emulator, cancel_on_kill, state, expected, caplog, capsys
):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    trigger = DashScopeBatchTrigger(batch_id, wait=WaitSettings(cancel_on_kill=cancel_on_kill, **FAST))
    trigger.task_instance = TriggerTaskInstance(state)
    with anyio.move_on_after(0.3):  # the triggerer cancels run(), then awaits on_kill()
        await events_of(trigger)
    await trigger.on_kill()
    assert client.retrieve_batch(batch_id).status == expected
    cancels = dashscope_emulator.request_counts().get("POST /batches/{batch_id}/cancel", 0)
    assert cancels == int(expected == "cancelling")
    if cancel_on_kill and state == "success":
        assert (
            f"batch {batch_id} is unfinished: the batch keeps running"
            in capsys.readouterr().out + caplog.text
        )


@pytest.mark.anyio
async def test_on_kill_finishes_its_cancel_when_cancelled_again(
    dashscope_conn, new_batch, client, dashscope_emulator
):
    """The triggerer may cancel a killed trigger again while on_kill works: the cancel still goes out."""
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()

    class SlowTaskInstance(TriggerTaskInstance):
        def get_task_states(self, **kwargs) -> dict:
            time.sleep(0.5)  # the triggerer's channel answering slowly, as seen on a real deployment
            return super().get_task_states(**kwargs)

    trigger = DashScopeBatchTrigger(batch_id, wait=WaitSettings(cancel_on_kill=True, **FAST))
    trigger.task_instance = SlowTaskInstance("failed")
    with anyio.move_on_after(0.2):  # the second cancellation, while the state is being read
        await trigger.on_kill()
    await anyio.sleep(1.5)
    assert client.retrieve_batch(batch_id).status == "cancelling"


@pytest.mark.anyio
async def test_on_kill_keeps_the_batch_when_the_state_cannot_be_read(
    dashscope_conn, new_batch, client, dashscope_emulator
):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    trigger = DashScopeBatchTrigger(batch_id, wait=WaitSettings(cancel_on_kill=True, **FAST))
    await trigger.on_kill()  # no task instance: outside a triggerer
    assert client.retrieve_batch(batch_id).status == "validating"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (None, "isn't defined"),
        ({"conn_type": "dashscope", "extra": {"base_url": "http://127.0.0.1:9"}}, "has no API key"),
        ({"conn_type": "dashscope", "password": "sk-x", "extra": {"region": "mars-1"}}, "unknown region"),
    ],
    ids=["missing", "no-key", "bad-region"],
)
async def test_an_unusable_connection_ends_with_one_error_event(
    monkeypatch, dashscope_emulator, conn, message
):
    if conn is None:
        monkeypatch.delenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))
    (event,) = await events_of(DashScopeBatchTrigger("batch_1", wait=WaitSettings(**FAST)))
    assert event["status"] == "error"
    assert event["batch"] is None
    assert "connection 'dashscope_default' is not usable" in event["message"]
    assert message in event["message"]
    assert dashscope_emulator.request_counts() == {}


@pytest.fixture
def frozen_heap():
    """The suite's heap so far out of the collector's reach for one test.

    Late in the suite the heap is large, and a full collection of it pauses the interpreter (0.8-0.9 s for
    3 million objects here, measured with ``gc.callbacks``; CI once saw a 0.79 s "blocked loop"). That pause
    is the test process's, not the triggers', so it must not count as a loop blocked by them. Objects the
    test itself makes are still collected, and that cost still counts.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.anyio
@pytest.mark.usefixtures("frozen_heap")
async def test_many_triggers_never_block_the_loop(dashscope_conn, new_batch, dashscope_emulator):
    """300 waits in one loop, every poll answered after 100 ms; the loop must stay responsive."""
    # The waits poll far above the account's limits on purpose: lift the rate budget for this connection.
    dashscope_conn(rate_limits={"batch_retrieve": 1_000_000, "batch_list": 1_000_000})
    dashscope_emulator.configure(time_scale=0)
    batch_ids = [new_batch() for _ in range(10)]
    dashscope_emulator.add_fault("latency", method="GET", path="/batches/*", latency=0.1)
    results: list[dict] = []
    lags: list[float] = []
    clients_seen: set[int] = set()
    done = anyio.Event()

    async def wait(batch_id: str) -> None:
        results.extend(
            await events_of(
                DashScopeBatchTrigger(batch_id, wait=WaitSettings(poll_interval=0.1, max_poll_interval=0.3))
            )
        )

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.01)
            lags.append(time.perf_counter() - start - 0.01)
            clients_seen.add(active_shared_clients())

    async def finish_later() -> None:
        await anyio.sleep(1.5)
        await anyio.to_thread.run_sync(dashscope_emulator.advance, 3600)

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        tg.start_soon(finish_later)
        async with anyio.create_task_group() as waits:
            for i in range(300):
                waits.start_soon(wait, batch_ids[i % 10])
        done.set()

    assert len(results) == 300
    assert {e["status"] for e in results} == {"terminal"}
    assert {e["batch"]["status"] for e in results} == {"completed"}
    assert max(lags) < 0.5, f"event loop blocked for {max(lags):.3f} s"
    assert clients_seen <= {0, 1}  # one shared client for all 300 waits
