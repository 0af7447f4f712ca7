"""The client's request budget: bucket arithmetic, and every request through it against the emulator."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from dashscope_batch_emulator.ratelimit import RateLimiter, RateLimitSettings

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


def test_a_429_pauses_for_retry_after_then_resumes_at_the_configured_rate():
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    full_rate = bucket.rate
    bucket.penalize(retry_after=7.0)
    delay, epoch = bucket.reserve()
    assert delay == pytest.approx(7.0)  # the first request goes when the service's window admits one
    assert epoch == bucket.penalties == 1
    assert bucket.reserve()[0] == pytest.approx(7.0 + 1 / full_rate)  # then at the full rate, not half
    assert bucket.rate == full_rate
    bucket.penalize(retry_after=6.5)  # answered during the pause: sent before it, only extends it
    assert bucket.rate == full_rate
    assert bucket.learned is None
    assert bucket.reserve()[0] == pytest.approx(7.0)


def test_a_second_429_after_the_pause_keeps_to_what_the_service_admitted():
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.reserve()  # refused
    bucket.penalize(retry_after=1.0)
    clock.now += 1.0
    for _ in range(31):  # 30 admitted, the 31st refused within one period after the pause
        clock.now += bucket.reserve()[0]
    bucket.penalize(retry_after=2.0)
    assert bucket.learned == RateLimit(30)
    assert bucket.rate == pytest.approx((30 - 3) * 0.98 / 60)
    clock.now += 10 * 60.0 + 2.5  # ten periods without a 429: the configured limit again
    bucket.reserve()
    assert bucket.learned is None
    assert bucket.rate == pytest.approx((100 - 10) * 0.98 / 60)


class SimulatedTime:
    """One clock for the budget, its sleeps and the emulator's rate limiter: no wall time passes."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


_CREATE = httpx.Request("POST", "http://127.0.0.1/compatible-mode/v1/batches")


def _send_creates(
    budget: RateBudget, server: RateLimiter, time_: SimulatedTime, count: int, rtt: float = 0.05
) -> int:
    """Send ``count`` creates one after the other as the sync client does; return the 429s met."""
    refused = 0
    for _ in range(count):
        while True:
            budget.wait(_CREATE)
            time_.sleep(rtt / 2)
            retry_after = server.admit("POST", "/batches")
            time_.sleep(rtt / 2)
            if retry_after is None:
                break
            refused += 1  # the emulator's 429 and Retry-After header, then the client's RetryPolicy sleep
            header = f"{math.ceil(retry_after * 1000) / 1000:g}"
            budget.observe(_CREATE, httpx.Response(429, headers={"retry-after": header}, request=_CREATE))
            time_.sleep(float(header))
    return refused


@pytest.mark.parametrize(
    ("configured", "filled_by_others", "most_429s"),
    [
        pytest.param(RateLimit(10, period=6.0), 10, 1, id="limit-known-window-filled-by-another-process"),
        pytest.param(RateLimit(10, period=6.0), 5, 2, id="limit-known-window-half-filled"),
        pytest.param(RateLimit(100, period=6.0), 0, 2, id="limit-configured-ten-times-too-high"),
    ],
)
def test_sixty_creates_under_a_ten_per_window_limit_take_about_the_limits_minimum_time(
    configured, filled_by_others, most_429s
):
    time_ = SimulatedTime()
    server = RateLimiter(RateLimitSettings(limits={"batch_create": 10}, period_scale=0.1), clock=time_)
    for _ in range(filled_by_others):  # another process (an earlier try) used the window just before
        assert server.admit("POST", "/batches") is None
    budget = RateBudget({RequestKind.BATCH_CREATE: configured}, clock=time_, sleep=time_.sleep)
    refused = _send_creates(budget, server, time_, 60)
    windows = (60 + filled_by_others) / 10
    assert server.admitted["batch_create"] == 60 + filled_by_others
    assert refused <= most_429s
    assert time_.now <= 1.3 * windows * 6.0


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
