"""DashScopeBatchSensor: poke and deferrable modes share the outcome policy, against the emulator."""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_dashscope_batch.sensors.batch import DashScopeBatchSensor
from airflow_provider_dashscope_batch.triggers.batch import DashScopeBatchTrigger


def sensor(batch_id: str, **kwargs) -> DashScopeBatchSensor:
    return DashScopeBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=0.05, **kwargs)


def wait_terminal(client, batch_id: str) -> None:
    while client.retrieve_batch(batch_id).status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)


def test_poke_until_done(dashscope_conn, new_batch, client, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    assert sensor(batch_id).poke({}).is_done is False
    dashscope_emulator.advance(60)
    result = sensor(batch_id).poke({})
    assert result.is_done is True
    assert result.xcom_value["status"] == "completed"
    assert result.xcom_value["request_counts"]["completed"] == 5


def test_poke_keeps_waiting_while_cancelling(dashscope_conn, new_batch, client, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    client.cancel_batch(batch_id)
    assert sensor(batch_id).poke({}).is_done is False
    dashscope_emulator.advance(60)
    with pytest.raises(AirflowException, match="was cancelled"):
        sensor(batch_id).poke({})
    with pytest.raises(AirflowSkipException, match="was cancelled"):
        sensor(batch_id, on_cancelled="skip").poke({})


def test_poke_applies_the_outcome_policy(dashscope_conn, new_batch, client, dashscope_emulator):
    dashscope_emulator.fail_requests(".*")
    batch_id = new_batch()
    wait_terminal(client, batch_id)
    with pytest.raises(AirflowException, match="every request failed"):
        sensor(batch_id).poke({})
    with pytest.raises(AirflowSkipException):
        sensor(batch_id, on_all_failed="skip").poke({})
    assert sensor(batch_id, on_all_failed="success").poke({}).is_done is True


@pytest.mark.anyio
async def test_deferrable_round_trip(dashscope_conn, new_batch, dashscope_emulator):
    dashscope_emulator.configure(time_scale=0)
    batch_id = new_batch()
    task = sensor(batch_id, deferrable=True, timeout=3600, max_poll_interval=0.1)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DashScopeBatchTrigger)
    assert trigger.wait.poll_interval == 0.05
    assert trigger.wait.deadline == pytest.approx(time.time() + 3600, abs=60)
    assert deferred.value.method_name == "execute_complete"
    dashscope_emulator.advance(60)
    (event,) = [e.payload async for e in trigger.run()]
    assert task.execute_complete({}, event)["status"] == "completed"


def test_deferrable_returns_at_once_when_already_done(dashscope_conn, new_batch, client):
    batch_id = new_batch()
    wait_terminal(client, batch_id)
    assert sensor(batch_id, deferrable=True).execute({})["status"] == "completed"


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            {"status": "timeout", "batch_id": "b", "batch": None, "message": "deadline passed"},
            AirflowSensorTimeout,
        ),
        ({"status": "error", "batch_id": "b", "batch": None, "message": "HTTP 401"}, AirflowException),
        ({"status": "bogus"}, AirflowException),
        (None, AirflowException),
    ],
)
def test_bad_or_unfinished_events_fail(event, error):
    with pytest.raises(error):
        sensor("b").execute_complete({}, event)
