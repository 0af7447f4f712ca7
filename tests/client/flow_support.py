"""Helpers of the flow unit tests: a core with a fixed key, canned responses, a driver with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from airflow_provider_dashscope_batch.client import (
    RetryPolicy,
)
from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._flow import Sleep

KEY = "sk-unit-test-secret-0123456789"


def core(**kwargs) -> ClientCore:
    options = {
        "api_key": KEY,
        "base_url": "http://emu.invalid/compatible-mode/v1",
        "workspace": None,
        "timeout": 60.0,
        "retry": RetryPolicy(),
        **kwargs,
    }
    c = ClientCore(**options)
    c.rand = lambda: 0.0
    return c


def response(status: int, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://emu.invalid/compatible-mode/v1/batches")
    return httpx.Response(status, json=body if body is not None else {}, headers=headers, request=request)


class FakeClock:
    """A monotonic clock the test moves; every Sleep step advances it by its seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(flow, outcomes, clock: FakeClock | None = None, in_flight: float = 0.0):
    """
    Feed scripted outcomes to a flow; return (result, steps).

    With a ``clock``, sleeps advance it and each POST takes ``in_flight`` seconds.
    """
    steps = []
    outcomes = list(outcomes)
    try:
        step = next(flow)
        while True:
            steps.append(step)
            sleeps = isinstance(step, Sleep)
            if clock is not None:
                clock.now += step.seconds if sleeps else in_flight * (step.request.method == "POST")
            step = flow.send(None if sleeps else outcomes.pop(0))
    except StopIteration as stop:
        return stop.value, steps


def batch_json(batch_id: str, key: str | None = None, created_at: int | None = None) -> dict:
    return {
        "id": batch_id,
        "status": "validating",
        "input_file_id": "file-1",
        "created_at": created_at or int(datetime.now(UTC).timestamp()),
        "metadata": {"idempotency_key": key} if key else {},
    }
