"""The client's request budget: bucket arithmetic, and every request through it against the emulator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from airflow_provider_dashscope_batch.client import AsyncDashScopeClient, DashScopeClient, RetryPolicy
from airflow_provider_dashscope_batch.client.ratelimit import (
    DEFAULT_RATE_LIMITS,
    RateBudget,
    RateLimit,
    RequestKind,
    TokenBucket,
    parse_rate_limits,
    rate_budget_for,
)
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/compatible-mode/v1/batches", RequestKind.BATCH_CREATE),
        ("GET", "/compatible-mode/v1/batches", RequestKind.BATCH_LIST),
        ("GET", "/compatible-mode/v1/batches/batch_1", RequestKind.BATCH_RETRIEVE),
        ("POST", "/compatible-mode/v1/batches/batch_1/cancel", RequestKind.BATCH_CANCEL),
        ("POST", "/v1/files", RequestKind.FILE_UPLOAD),
        ("GET", "/v1/files", RequestKind.FILE_READ),
        ("GET", "/v1/files/file-1/content", RequestKind.FILE_READ),
        ("DELETE", "/v1/files/file-1", RequestKind.FILE_READ),
        ("GET", "/v1/models", None),
    ],
)
def test_request_kind_from_method_and_path(method, path, kind):
    assert RequestKind.of(method, path) is kind


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _most_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    most, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + period:
            j += 1
        most = max(most, j - i)
    return most


@pytest.mark.parametrize("limit", [RateLimit(100), RateLimit(1000), RateLimit(3, period=1.0)])
def test_bucket_never_admits_more_than_the_limit_in_any_window(limit):
    clock = FakeClock()
    bucket = TokenBucket(limit, clock)
    sent: list[float] = []
    for step in range(int(limit.limit * 5)):  # callers arrive faster than the limit, in uneven steps
        clock.now += limit.period / limit.limit / (4 if step % 3 else 0.5)
        delay, _ = bucket.reserve()
        sent.append(clock.now + delay)
    assert _most_in_any_window(sent, limit.period) <= limit.limit
    assert _most_in_any_window(sent, limit.period) >= 0.6 * limit.limit  # and uses most of it


def test_a_429_pauses_for_retry_after_halves_the_rate_and_caps_it():
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    full_rate = bucket.rate
    bucket.penalize(retry_after=7.0)
    delay, epoch = bucket.reserve()
    assert delay >= 7.0
    assert bucket.rate == pytest.approx(full_rate / 2)
    assert epoch == bucket.penalties == 1
    clock.now += 60.0  # held for one period
    bucket.reserve()
    assert bucket.rate == pytest.approx(full_rate / 2)
    clock.now += 4 * 60.0  # then back up to 90 % of the rate that met the 429
    bucket.reserve()
    assert bucket.rate == pytest.approx(full_rate * 0.9)
    clock.now += 10 * 60.0  # a long quiet spell restores the configured rate
    bucket.reserve()
    assert bucket.rate == pytest.approx(full_rate)


def test_rate_limits_from_connection_extras():
    limits = parse_rate_limits('{"batch_list": 50, "file_upload": 60}', "0.5")
    assert limits[RequestKind.BATCH_LIST] == RateLimit(25)
    assert limits[RequestKind.FILE_UPLOAD] == RateLimit(0.5, period=1.0)  # 60/min = 1/s, halved
    assert limits[RequestKind.BATCH_RETRIEVE] == RateLimit(500)
    assert parse_rate_limits() == dict(DEFAULT_RATE_LIMITS)
    for bad, match in [({"batch_lists": 5}, "unknown rate_limits kind"), ({"batch_list": 0}, "positive")]:
        with pytest.raises(ValueError, match=match):
            parse_rate_limits(bad)
    with pytest.raises(ValueError, match="rate_share"):
        parse_rate_limits(None, 2)


def test_hook_shares_one_budget_per_connection_and_reports_bad_extras():
    extra = {"base_url": "http://127.0.0.1:1/v1", "rate_limits": {"batch_list": 30}, "rate_share": 0.5}
    first = DashScopeBatchHook("rate_conn").client_settings("sk-x", extra).rate_budget
    again = DashScopeBatchHook("rate_conn").client_settings("sk-x", extra).rate_budget
    other = DashScopeBatchHook("rate_conn_2").client_settings("sk-x", extra).rate_budget
    assert first is again is rate_budget_for(("dashscope", "rate_conn"))
    assert other is not first
    assert first.buckets[RequestKind.BATCH_LIST].rate_limit == RateLimit(15)
    with pytest.raises(ConnectionSetupError, match="'rate_conn': rate_share"):
        DashScopeBatchHook("rate_conn").client_settings("sk-x", {"rate_share": "all"})


# ------------------------------------------------------------------------------- against the emulator
FAST = RetryPolicy(max_retries=5, initial_delay=0.01, max_delay=0.05, max_elapsed=60.0)


@pytest.fixture
def sync_client(dashscope_emulator) -> Iterator[Callable[[RateBudget], DashScopeClient]]:
    made: list[DashScopeClient] = []

    def make(budget: RateBudget) -> DashScopeClient:
        client = DashScopeClient(
            api_key=dashscope_emulator.api_key,
            base_url=dashscope_emulator.base_url,
            retry_policy=FAST,
            rate_budget=budget,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _list_once(client: DashScopeClient) -> None:
    next(iter(client.list_batches(page_size=1)), None)


def test_shared_budget_keeps_threads_under_the_servers_limit(sync_client, dashscope_emulator):
    # the server allows 20 lists per window, its minute scaled to 1 s; the budget knows it, less 10 % for
    # thread wake-ups late by tens of milliseconds on a loaded machine (a real window is 60 s long)
    dashscope_emulator.set_rate_limits({"batch_list": 20}, period_scale=1 / 60)
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(18, period=1.0)})
    clients = [sync_client(budget) for _ in range(3)]
    threads = [threading.Thread(target=lambda c=c: [_list_once(c) for _ in range(15)]) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = dashscope_emulator.rate_limits()
    assert report["admitted"]["batch_list"] == 45
    assert report["rejected"]["batch_list"] == 0


def test_without_the_budget_the_same_load_is_refused(sync_client, dashscope_emulator):
    """The server side of the test above does punish excess: a roomy budget meets 429s."""
    dashscope_emulator.set_rate_limits({"batch_list": 20}, period_scale=1 / 60)
    client = sync_client(RateBudget({RequestKind.BATCH_LIST: RateLimit(10_000, period=1.0)}))
    for _ in range(45):
        _list_once(client)  # retried after each 429's Retry-After
    assert dashscope_emulator.rate_limits()["rejected"]["batch_list"] > 0


def test_retries_draw_from_the_bucket(sync_client, dashscope_emulator):
    dashscope_emulator.add_fault(method="GET", path="/batches", status=503, retry_after=None, count=3)
    budget = RateBudget(clock=lambda: 0.0)  # a stopped clock: the bucket never refills
    bucket = budget.buckets[RequestKind.BATCH_LIST]
    _list_once(sync_client(budget))
    assert bucket.available() == bucket.burst - 4
    assert dashscope_emulator.request_counts() == {"GET /batches": 4}


def test_a_429_tightens_the_bucket_so_no_storm_follows(sync_client, dashscope_emulator):
    # the budget believes in 10 lists/s, the server allows 4 per 1 s window
    dashscope_emulator.set_rate_limits({"batch_list": 4}, period_scale=1 / 60)
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(10, period=1.0)})
    client = sync_client(budget)
    for _ in range(24):
        _list_once(client)
    refused = dashscope_emulator.rate_limits()["rejected"]["batch_list"]
    assert 1 <= refused <= 3
    assert budget.buckets[RequestKind.BATCH_LIST].penalties == refused


@pytest.mark.anyio
async def test_async_face_waits_for_the_same_budget(dashscope_emulator):
    dashscope_emulator.set_rate_limits({"batch_list": 10}, period_scale=1 / 60)
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(9, period=1.0)})  # 10 % for late wake-ups
    async with AsyncDashScopeClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, rate_budget=budget
    ) as client:

        async def list_once() -> None:
            async for _ in client.list_batches(page_size=1):
                break

        await asyncio.gather(*(list_once() for _ in range(20)))
    report = dashscope_emulator.rate_limits()
    assert (report["admitted"]["batch_list"], report["rejected"]["batch_list"]) == (20, 0)
