"""DashScopeShardsTrigger against the emulator over a real socket, in a real event loop."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

import anyio
import pytest

from airflow_provider_dashscope_batch.triggers.sharded import DashScopeShardsTrigger
from airflow_provider_dashscope_batch.waiting.protocol import WaitSettings

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}


async def events_of(trigger: DashScopeShardsTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def test_serialize_round_trips_primitives_only(dashscope_emulator):
    trigger = DashScopeShardsTrigger(
        ["b1", "b2"], "my_conn", until="any", wait=WaitSettings(deadline=1900000000.5)
    )
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name)(**kwargs).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert dashscope_emulator.api_key not in repr(kwargs)
    with pytest.raises(ValueError, match="until"):
        DashScopeShardsTrigger(["b1"], until="first")


@pytest.mark.anyio
@pytest.mark.parametrize("grouped", [True, False], ids=["with-input-files", "by-id"])
async def test_one_event_once_every_batch_is_terminal(
    dashscope_conn, dashscope_emulator, new_batch, client, grouped
):
    ids = [new_batch(), new_batch(), new_batch()]
    files = [client.retrieve_batch(b).input_file_id for b in ids] if grouped else None
    (payload,) = await events_of(DashScopeShardsTrigger(ids, input_file_ids=files, wait=WaitSettings(**FAST)))
    assert sorted(e["batch_id"] for e in payload["events"]) == sorted(ids)
    assert {(e["status"], e["batch"]["status"]) for e in payload["events"]} == {("terminal", "completed")}


@pytest.mark.anyio
async def test_until_any_fires_when_the_first_batch_is_terminal(
    dashscope_conn, dashscope_emulator, new_batch, client
):
    dashscope_emulator.configure(time_scale=0, processing_rate=1e-5)  # only the cancelled one can finish
    ids = [new_batch(), new_batch()]
    client.cancel_batch(ids[1])
    dashscope_emulator.advance(1)
    (payload,) = await events_of(DashScopeShardsTrigger(ids, until="any", wait=WaitSettings(**FAST)))
    assert [(e["batch_id"], e["batch"]["status"]) for e in payload["events"]] == [(ids[1], "cancelled")]


@pytest.mark.anyio
async def test_a_failed_wait_ends_the_whole_wait(dashscope_conn, dashscope_emulator, new_batch):
    dashscope_emulator.configure(time_scale=0)  # the real batch never finishes; the missing one ends it
    ids = [new_batch(), "batch_missing"]
    (payload,) = await events_of(DashScopeShardsTrigger(ids, wait=WaitSettings(**FAST)))
    (event,) = payload["events"]
    assert (event["batch_id"], event["status"]) == ("batch_missing", "error")


@dataclass
class TriggerTaskInstance:
    """The task instance the triggerer gives a trigger (Airflow 3.3): its key and the Task SDK state read."""

    state: str | None
    dag_id: str = "dag"
    task_id: str = "run_shards"
    run_id: str = "manual__1"
    map_index: int = -1

    def get_task_states(self, *, dag_id, task_ids, run_ids, map_index) -> dict:
        assert (dag_id, task_ids, run_ids, map_index) == (self.dag_id, [self.task_id], [self.run_id], -1)
        return {self.run_id: {self.task_id: self.state}}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("cancel_on_kill", "state", "expected"),
    [
        (True, "failed", "cancelling"),  # marked failed
        (False, "failed", "validating"),
        (True, "success", "validating"),  # marked success: the batches keep running
        (True, None, "validating"),  # cleared: the next try re-attaches
    ],
)
async def test_on_kill_cancels_every_batch_only_when_the_task_was_marked_failed(
    dashscope_conn, dashscope_emulator, new_batch, client, cancel_on_kill, state, expected
):
    dashscope_emulator.configure(time_scale=0)
    ids = [new_batch(), new_batch()]
    trigger = DashScopeShardsTrigger(ids, wait=WaitSettings(cancel_on_kill=cancel_on_kill, **FAST))
    trigger.task_instance = TriggerTaskInstance(state)
    with anyio.move_on_after(0.3):  # the triggerer cancels run(), then awaits on_kill()
        await events_of(trigger)
    await trigger.on_kill()
    assert [client.retrieve_batch(b).status for b in ids] == [expected, expected]


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
async def test_an_unusable_connection_ends_with_one_error_event_per_batch(
    monkeypatch, dashscope_emulator, conn, message
):
    """A ConnectionSetupError (a ValueError, not a DashScopeError) must not escape run()."""
    if conn is None:
        monkeypatch.delenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))
    (payload,) = await events_of(DashScopeShardsTrigger(["b1", "b2"], wait=WaitSettings(**FAST)))
    assert [(e["batch_id"], e["status"]) for e in payload["events"]] == [("b1", "error"), ("b2", "error")]
    assert all("connection 'dashscope_default' is not usable" in e["message"] for e in payload["events"])
    assert all(message in e["message"] for e in payload["events"])
    assert dashscope_emulator.request_counts() == {}
