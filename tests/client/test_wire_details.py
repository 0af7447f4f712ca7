"""Wire details the emulator cannot show: request headers it does not echo, and ``retry-after-ms``.

respx is used here only because the emulator neither reports the headers it received nor sends
``retry-after-ms``; everything else is tested against the emulator over a real socket.
"""

from __future__ import annotations

import httpx
import pytest
import respx

from airflow_provider_dashscope_batch.client import (
    AsyncDashScopeClient,
    DashScopeClient,
    RateLimitError,
    RetryPolicy,
)

BASE = "https://dashscope.example/compatible-mode/v1"
BATCH = {"id": "batch_1", "status": "in_progress"}


def test_auth_and_workspace_headers_are_sent():
    with (
        respx.mock(base_url=BASE) as mock,
        DashScopeClient(api_key="sk-h", base_url=BASE, workspace="ws-9") as c,
    ):
        route = mock.get("/batches/batch_1").respond(json=BATCH)
        c.retrieve_batch("batch_1")
    headers = route.calls.last.request.headers
    assert headers["authorization"] == "Bearer sk-h"
    assert headers["x-dashscope-workspace"] == "ws-9"
    assert headers["user-agent"].startswith("airflow-provider-dashscope-batch/")


@pytest.mark.anyio
@pytest.mark.parametrize(("retry_after_ms", "calls"), [("5", 2), ("2000", 1)])
async def test_retry_after_ms_is_honoured(retry_after_ms, calls):
    """A wait within ``max_retry_after`` is retried; a longer one ends the call at once."""
    policy = RetryPolicy(max_retries=1, max_retry_after=1.0)
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/batches/batch_1").mock(
            side_effect=[
                httpx.Response(429, headers={"retry-after-ms": retry_after_ms}, json={}),
                httpx.Response(200, json=BATCH),
            ]
        )
        async with AsyncDashScopeClient(api_key="sk-h", base_url=BASE, retry_policy=policy) as c:
            if calls == 2:
                assert (await c.retrieve_batch("batch_1")).id == "batch_1"
            else:
                with pytest.raises(RateLimitError):
                    await c.retrieve_batch("batch_1")
    assert route.call_count == calls
