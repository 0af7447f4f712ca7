"""Both client faces against the emulator over a real loopback socket.

The async face is driven through an anyio blocking portal (its own event loop in a thread), so one test
body exercises ``DashScopeClient`` and ``AsyncDashScopeClient`` alike, over the same HTTP wire.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from airflow_provider_dashscope_batch.client import (
    AsyncDashScopeClient,
    DashScopeClient,
    RetryPolicy,
)


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


class BlockingAsyncClient:
    """Calls an :class:`AsyncDashScopeClient` from sync test code; async iterators are collected."""

    def __init__(self, portal: BlockingPortal, client: AsyncDashScopeClient) -> None:
        self.portal = portal
        self.client = client

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.client, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self.portal.call(lambda: _call(target, args, kwargs))
            return iter(result) if isinstance(result, list) else result

        return call


async def _call(target: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    result = target(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    if hasattr(result, "__aiter__"):
        return await _collect(result)
    return result


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p


@pytest.fixture(params=["sync", "async"])
def make_client(request, dashscope_emulator, portal) -> Iterator[Callable[..., Any]]:
    """Factory of clients of the parametrized face; keyword arguments override the defaults."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        kwargs: dict[str, Any] = {
            "api_key": dashscope_emulator.api_key,
            "base_url": dashscope_emulator.base_url,
            # built per client, not at import: mutmut's forced-failure run fails every RetryPolicy()
            "retry_policy": RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05, max_elapsed=30.0),
            "timeout": 10.0,
            **overrides,
        }
        if request.param == "sync":
            client = DashScopeClient(**kwargs)
            made.append(client.close)
            return client
        async_client = portal.call(lambda: _await_value(AsyncDashScopeClient, kwargs))
        made.append(lambda: portal.call(async_client.aclose))
        return BlockingAsyncClient(portal, async_client)

    yield make
    for close in made:
        close()


async def _await_value(cls: type, kwargs: dict) -> Any:
    return cls(**kwargs)


@pytest.fixture
def client(make_client) -> Any:
    return make_client()


@pytest.fixture
def write_requests() -> Callable[..., Path]:
    """Writes a JSONL input file of ``lines`` chat requests (``batch-test-model`` by default)."""

    def write(path: Path, lines: int, model: str = "batch-test-model", url: str = "/v1/chat/ds-test") -> Path:
        with path.open("w") as handle:
            for i in range(lines):
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"question {i}"}],
                }
                line = {"custom_id": str(i), "method": "POST", "url": url, "body": body}
                handle.write(json.dumps(line) + "\n")
        return path

    return write
