"""DashScopeBatchHook against the emulator: connection parsing, clients, test_connection, sharing."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_dashscope_batch.client import AsyncDashScopeClient, DashScopeClient
from airflow_provider_dashscope_batch.client.loop_clients import shared_async_client
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook
from tests.client.client_helpers import active_shared_clients


def _define(monkeypatch, conn_id: str, password: str | None, **extra) -> str:
    """Define connection ``conn_id`` through an ``AIRFLOW_CONN_*`` variable."""
    value = {"conn_type": "dashscope", "password": password, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
    return conn_id


@pytest.fixture
def conn_env(monkeypatch, dashscope_emulator):
    """Define a connection to the emulator (its key unless ``password`` is given)."""

    def define(conn_id: str = "dashscope_default", *, password: str | None = None, **extra):
        extra = {"base_url": dashscope_emulator.base_url, **extra}
        return _define(monkeypatch, conn_id, password or dashscope_emulator.api_key, **extra)

    return define


@pytest.mark.parametrize(
    ("extra", "base_url"),
    [
        ({}, "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ({"region": "ap-southeast-1"}, "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        (
            {"extra__dashscope__region": "ap-southeast-1"},
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        ),
        ({"region": "custom", "base_url": "http://gw.local/v1"}, "http://gw.local/v1"),
        ({"region": "cn-beijing", "base_url": "http://gw.local/v1"}, "http://gw.local/v1"),
        (
            {"region": "ap-southeast-1", "workspace_id": "llm-ab12"},
            "https://llm-ab12.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1",
        ),
        (
            {"workspace_id": "llm-ab12"},
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
        ),  # Beijing: one host
        (
            {"region": "ap-southeast-1", "workspace_id": "llm-ab12", "base_url": "http://gw.local/v1"},
            "http://gw.local/v1",
        ),
    ],
)
def test_client_settings_regions(extra, base_url):
    settings = DashScopeBatchHook().client_settings("sk-x", extra)
    assert settings.base_url == base_url


def test_client_settings_fields():
    settings = DashScopeBatchHook().client_settings(
        "sk-x", {"workspace_id": "ws-1", "timeout": "12.5", "max_retries": "0"}
    )
    assert (settings.workspace, settings.timeout, settings.max_retries) == ("ws-1", 12.5, 0)
    assert "sk-x" not in repr(settings)


@pytest.mark.parametrize(
    ("password", "extra", "message"),
    [
        (None, {}, "Connection 'my_conn' has no API key (set the password)."),
        ("  ", {}, "Connection 'my_conn' has no API key (set the password)."),
        ("sk-x", {"region": "custom"}, "Connection 'my_conn': region 'custom' needs a Base URL"),
        (
            "sk-x",
            {"region": "ap-southeast-1", "workspace_id": "a.b/c"},
            "Connection 'my_conn': workspace id 'a.b/c' is not a host name label (letters, digits and -)",
        ),
        (
            "sk-x",
            {"region": "mars-1"},
            "Connection 'my_conn': unknown region 'mars-1'; choose one of cn-beijing, ap-southeast-1, "
            "or 'custom' with a Base URL.",
        ),
        ("sk-x", {"timeout": "soon"}, "Connection 'my_conn': timeout must be a number"),
    ],
)
def test_client_settings_setup_mistakes(password, extra, message):
    with pytest.raises(ConnectionSetupError) as raised:
        DashScopeBatchHook("my_conn").client_settings(password, extra)
    assert str(raised.value).startswith(message)


def test_get_conn_talks_to_the_emulator(conn_env, tmp_path):
    conn_env()
    hook = DashScopeBatchHook()
    client = hook.get_conn()
    assert isinstance(client, DashScopeClient)
    assert hook.get_conn() is client
    assert list(client.list_batches()) == []


def test_test_connection(conn_env, dashscope_emulator):
    ok, message = DashScopeBatchHook(conn_env("good")).test_connection()
    assert ok, message
    assert message == f"Connected to DashScope at {dashscope_emulator.base_url}."


def test_test_connection_wrong_key(conn_env, dashscope_emulator):
    secret = "sk-wrong-key-never-shown-0123456789"
    ok, message = DashScopeBatchHook(conn_env("bad", password=secret)).test_connection()
    assert not ok
    assert message.startswith(f"DashScope at {dashscope_emulator.base_url} rejected the API key (")
    assert "HTTP 401" in message
    assert "Keys are per region" in message
    assert secret not in message


@pytest.mark.parametrize(
    ("password", "extra", "message"),
    [
        (None, {}, "Connection 'setup' has no API key (set the password)."),
        (
            "sk-x",
            {"region": "mars-1"},
            "Connection 'setup': unknown region 'mars-1'; choose one of cn-beijing, ap-southeast-1, "
            "or 'custom' with a Base URL.",
        ),
        ("sk-x", {"region": "custom"}, "Connection 'setup': region 'custom' needs a Base URL (base_url)."),
        (
            "sk-x",
            {"base_url": "dashscope.aliyuncs.com/compatible-mode/v1"},
            "Connection 'setup': base_url must be an http(s) URL, got "
            "'dashscope.aliyuncs.com/compatible-mode/v1'",
        ),
    ],
)
def test_test_connection_names_setup_mistakes(monkeypatch, password, extra, message):
    """A mistake in the connection is reported as such, not as an unreachable endpoint."""
    ok, got = DashScopeBatchHook(_define(monkeypatch, "setup", password, **extra)).test_connection()
    assert (ok, got) == (False, message)


def test_test_connection_unreachable(monkeypatch):
    conn_id = _define(monkeypatch, "down", "sk-x", base_url="http://127.0.0.1:9/v1")
    ok, message = DashScopeBatchHook(conn_id).test_connection()
    assert not ok
    assert message.startswith("Could not reach DashScope at http://127.0.0.1:9/v1: ")


def test_test_connection_wrong_path(conn_env, dashscope_emulator):
    """An endpoint that answers 404 has no Batch API there: the Base URL's path is wrong."""
    wrong = dashscope_emulator.base_url.rstrip("/") + "/nowhere"
    ok, message = DashScopeBatchHook(conn_env("path", base_url=wrong)).test_connection()
    assert not ok
    assert message.startswith(f"No Batch API at {wrong} (")
    assert "/compatible-mode/v1" in message


def test_test_connection_sends_once(conn_env, dashscope_emulator):
    """The Test button must answer promptly: one request, no retries, even if the connection allows 5."""
    dashscope_emulator.add_fault("status", method="GET", path="/batches", status=503, retry_after=None)
    ok, message = DashScopeBatchHook(conn_env("flaky", max_retries=5)).test_connection()
    assert not ok
    assert message.startswith(f"DashScope at {dashscope_emulator.base_url} answered with an error: ")
    assert "HTTP 503" in message
    assert dashscope_emulator.request_counts() == {"GET /batches": 1}


@pytest.mark.anyio
async def test_get_async_conn(conn_env):
    conn_env("async_conn", workspace_id="ws-1")
    client = await DashScopeBatchHook("async_conn").get_async_conn()
    async with client:
        assert isinstance(client, AsyncDashScopeClient)
        assert [b async for b in client.list_batches()] == []
    assert client.is_closed


@pytest.mark.anyio
async def test_shared_async_client_is_shared_refcounted_and_bounded(conn_env, dashscope_emulator):
    conn_env("shared")
    hook = DashScopeBatchHook("shared")
    async with hook.shared_async_client(max_in_flight=2) as first:
        async with hook.shared_async_client() as second:
            assert first is second
            assert active_shared_clients() == 1
        assert not first.is_closed  # one user left
        # Six concurrent requests against a slow route: two in flight, four waiting on the semaphore.
        dashscope_emulator.add_fault("latency", method="GET", path="/batches", latency=0.3)
        tasks = [asyncio.create_task(_drain(first)) for _ in range(6)]
        while first._limiter.statistics().tasks_waiting < 4:  # noqa: ASYNC110 - a semaphore has no event
            await asyncio.sleep(0.01)
        assert first._limiter.value == 0
        await asyncio.gather(*tasks)
    assert first.is_closed
    assert active_shared_clients() == 0


async def _drain(client: AsyncDashScopeClient) -> list:
    return [b async for b in client.list_batches()]


def test_shared_client_is_per_event_loop(conn_env):
    conn_env("loops")
    hook = DashScopeBatchHook("loops")

    async def borrow() -> AsyncDashScopeClient:
        async with hook.shared_async_client() as client:
            return client

    one, two = asyncio.run(borrow()), asyncio.run(borrow())
    assert one is not two
    assert one.is_closed
    assert two.is_closed


@pytest.mark.anyio
async def test_shared_client_factory_failure_reaches_every_waiter():
    calls = 0

    async def factory() -> AsyncDashScopeClient:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("no key")

    async def use() -> None:
        async with shared_async_client("broken", factory):
            pass

    results = await asyncio.gather(use(), use(), return_exceptions=True)
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert calls == 1
    assert active_shared_clients() == 0
