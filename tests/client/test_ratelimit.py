"""The client's request budget: bucket arithmetic, and every request through it against the emulator."""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest
from dashscope_batch_emulator.ratelimit import RateLimiter, RateLimitSettings

from airflow_provider_dashscope_batch.client import (
    AsyncDashScopeClient,
    DashScopeClient,
    RetryPolicy,
    ratelimit,
)
from airflow_provider_dashscope_batch.client.errors import LocalValidationError
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


# The budget at its edges: bucket sizes and rates to the token, a 429's pause, learned limits, Retry-After,
# and every connection-extra rule on both sides of its limit (the bucket takes its clock from the caller).
def drain(bucket: TokenBucket) -> None:
    """Take every token the bucket holds, so the next reservation waits."""
    while bucket.available() >= 1:
        bucket.reserve()


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/batches/", RequestKind.BATCH_CREATE),
        ("POST", "/v1/files/", RequestKind.FILE_UPLOAD),
        ("POST", "/v1/files/file-1", RequestKind.FILE_READ),
        ("GET", "/v1/batches/batch_1/cancel", RequestKind.BATCH_RETRIEVE),
        ("POST", "/v1/batches/batch_1", RequestKind.BATCH_RETRIEVE),
        ("POST", "/v1/batches/XX", RequestKind.BATCH_RETRIEVE),
        ("GET", "/v1/files/file-1/batches", RequestKind.BATCH_LIST),  # the last resource named decides
        ("GET", "/batches", RequestKind.BATCH_LIST),
        ("GET", "/", None),
    ],
)
def test_request_kind_edges(method: str, path: str, kind: RequestKind | None) -> None:
    assert RequestKind.of(method, path) is kind


@pytest.mark.parametrize(
    ("limit", "period"), [(0, 60.0), (-1, 60.0), (float("inf"), 60.0), (5, 0.0), (5, -1.0)]
)
def test_rate_limit_must_be_positive_and_finite(limit: float, period: float) -> None:
    message = f"a rate limit must be positive and finite, got {limit}/{period}s"
    with pytest.raises(LocalValidationError, match=f"^{re.escape(message)}$"):
        RateLimit(limit, period)


def test_rate_limit_scaled_keeps_its_period() -> None:
    assert RateLimit(3, period=2.0).scaled(0.5) == RateLimit(1.5, period=2.0)


@pytest.mark.parametrize(
    ("limit", "burst", "refill"),
    [
        (RateLimit(100), 10, 90),  # burst a tenth; refill the rest
        (RateLimit(1000), 100, 900),
        (RateLimit(10, period=1.0), 1, 9),
        (RateLimit(3, period=1.0), 1, 2),  # burst at least one token
        (RateLimit(1.5, period=1.0), 1, 0.75),  # refill at least half the limit
    ],
)
def test_bucket_size_and_refill_rate(limit: RateLimit, burst: float, refill: float) -> None:
    bucket = TokenBucket(limit, FakeClock())
    assert bucket.burst == burst
    assert bucket.available() == burst  # starts full
    assert bucket.rate == pytest.approx(refill * 0.98 / limit.period)
    assert (bucket.rate_limit, bucket.learned, bucket.penalties) == (limit, None, 0)


def test_a_waiting_reservation_is_told_exactly_how_long() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    for _ in range(10):
        assert bucket.reserve() == (0.0, 0)
    assert bucket.reserve()[0] == pytest.approx(1 / bucket.rate)
    assert bucket.reserve()[0] == pytest.approx(2 / bucket.rate)
    assert bucket.available() == -2  # two requests wait in line
    clock.now += 3.5 / bucket.rate  # the two owed tokens, and one and a half more
    assert bucket.reserve() == (0.0, 0)  # half a token left: no wait


@pytest.mark.parametrize(("retry_after", "pause"), [(7.0, 7.0), (None, 1.0), (0.0, 0.0)])
def test_a_429_pauses_the_bucket_for_exactly_its_retry_after(retry_after: float | None, pause: float) -> None:
    """The first request goes when the pause ends, the next one token later: at the configured rate."""
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    full = bucket.rate
    bucket.penalize(retry_after)
    assert bucket.rate == full  # not halved
    assert bucket.available() == pytest.approx(1 - pause * full)
    delay, epoch = bucket.reserve()
    assert delay == pytest.approx(pause)
    assert epoch == bucket.penalties == 1
    assert bucket.reserve()[0] == pytest.approx(pause + 1 / full)
    assert bucket.learned is None


def test_the_pause_ends_on_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.penalize(7.0)
    clock.now += 3.0
    assert bucket.available() == pytest.approx(1 - 4.0 * bucket.rate)  # no refill during the pause
    assert bucket.reserve()[0] == pytest.approx(4.0)
    clock.now += 4.0 + 2 / bucket.rate  # the pause is over: refill from its end
    assert bucket.available() == pytest.approx(2.0)
    assert bucket.reserve() == (0.0, 1)


def test_a_429_sends_every_waiting_request_back_in_line() -> None:
    """The owed tokens are forgotten: every waiter sees the epoch move and reserves again behind the pause."""
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    drain(bucket)
    _, epoch = bucket.reserve()
    assert bucket.available() < 0
    bucket.penalize(2.0)
    assert bucket.penalties == epoch + 1
    assert bucket.available() == pytest.approx(1 - 2.0 * bucket.rate)
    assert bucket.reserve() == (pytest.approx(2.0), 1)


def test_a_429_during_the_pause_only_extends_it() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.penalize(7.0)
    clock.now += 1.0
    bucket.penalize(2.0)  # sent before the pause: ends no sooner than the first
    assert bucket.reserve()[0] == pytest.approx(6.0)
    bucket.penalize(10.0)  # a longer Retry-After: later
    assert bucket.reserve()[0] == pytest.approx(10.0)
    assert (bucket.penalties, bucket.learned) == (3, None)
    assert bucket.rate == pytest.approx(90 * 0.98 / 60)


def _second_429(bucket: TokenBucket, clock: FakeClock, sent: int, waiting: int = 0) -> None:
    """A 429, ``sent`` requests after its 1 s pause (the last meets a 429), ``waiting`` more reserved."""
    bucket.reserve()  # refused
    bucket.penalize(1.0)
    clock.now += 1.0
    for _ in range(sent):
        clock.now += bucket.reserve()[0]
    for _ in range(waiting):
        bucket.reserve()  # not sent yet: the service has not seen them
    bucket.penalize(2.0)


@pytest.mark.parametrize("waiting", [0, 3])
def test_a_second_429_within_a_period_keeps_to_what_the_service_admitted(waiting: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=21, waiting=waiting)  # 22 sent, 2 refused
    assert bucket.learned == RateLimit(20)
    assert bucket.rate_limit == RateLimit(100)
    assert (bucket.burst, bucket.rate) == (2, pytest.approx(18 * 0.98 / 60))
    assert bucket.reserve()[0] == pytest.approx(2.0)  # the pause still comes first


def test_what_was_admitted_is_at_least_one_request() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=0)
    assert bucket.learned == RateLimit(1)
    assert (bucket.burst, bucket.rate) == (1, pytest.approx(0.5 * 0.98 / 60))


def test_a_second_429_after_a_full_period_learns_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.penalize(1.0)
    clock.now += 1.0 + 60.0  # one period after the pause ended
    bucket.penalize(1.0)
    assert bucket.learned is None
    clock.now += 1.0 + 60.0 - 1e-6
    bucket.penalize(1.0)  # just within one period
    assert bucket.learned == RateLimit(1)


@pytest.mark.parametrize(("limit", "learned"), [(19, None), (20, RateLimit(19))])
def test_only_fewer_admitted_than_the_configured_limit_lowers_it(limit: int, learned: RateLimit | None):
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=21)
    bucket.reconfigure(RateLimit(limit))  # forgets the learned limit, keeps the last period's counts
    clock.now += 2.0
    bucket.penalize(1.0)  # 22 sent, 3 refused: 19 admitted
    assert bucket.learned == learned


def test_a_learned_limit_is_lowered_only_by_fewer_admitted() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=5)
    assert bucket.learned == RateLimit(4)
    resumed = clock.now + 2.0
    clock.now = resumed
    for _ in range(3):
        clock.now += bucket.reserve()[0]
    bucket.penalize(1.0)  # 9 sent, 2 refused in the last period: 6 admitted, more than 4
    assert bucket.learned == RateLimit(4)
    clock.now = resumed + 59.0  # the sends and 429s before the second 429 have left the window
    bucket.penalize(1.0)
    assert bucket.learned == RateLimit(1)


def test_sends_and_429s_older_than_a_period_are_not_counted() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    for _ in range(5):
        bucket.reserve()  # sent at 1000, a period before the 429s below
    bucket.penalize(0.0)
    clock.now += 60.0
    _second_429(bucket, clock, sent=11)
    assert bucket.learned == RateLimit(10)


def test_a_send_exactly_one_period_old_has_left_the_window() -> None:
    clock = FakeClock()  # whole seconds: the comparisons below are exact
    bucket = TokenBucket(RateLimit(100), clock)
    for _ in range(5):
        bucket.reserve()  # sent at 1000
    clock.now = 1059.0
    bucket.penalize(1.0)
    clock.now = 1060.0  # the pause's end, one period after the sends
    bucket.penalize(1.0)  # none of the five counts: only the floor of one request
    assert bucket.learned == RateLimit(1)


@pytest.mark.parametrize(("quiet", "learned"), [(599.0, RateLimit(1)), (600.0, None)])
def test_the_learned_limit_is_forgotten_after_exactly_ten_quiet_periods(
    quiet: float, learned: RateLimit | None
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.penalize(1.0)
    clock.now = 1002.0
    bucket.penalize(2.0)  # within a period after the pause: learned, pause until 1004
    assert bucket.learned == RateLimit(1)
    clock.now = 1004.0 + quiet
    bucket.available()
    assert bucket.learned == learned


def test_the_learned_limit_is_forgotten_after_ten_quiet_periods() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=21)
    resumed = clock.now + 2.0
    clock.now = resumed + 600.0 - 1e-6
    bucket.available()
    assert bucket.learned == RateLimit(20)
    clock.now = resumed + 600.0
    bucket.available()
    assert bucket.learned is None
    assert (bucket.burst, bucket.rate) == (10, pytest.approx(90 * 0.98 / 60))
    assert bucket.available() == pytest.approx(2)  # the learned burst carried over


def test_bucket_reconfigure_applies_a_new_limit_and_forgets_a_learned_one() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(100), clock)
    _second_429(bucket, clock, sent=21)
    bucket.reconfigure(RateLimit(100))  # the same limit: nothing changes
    assert bucket.learned == RateLimit(20)
    clock.now += 3600
    bucket = TokenBucket(RateLimit(100), clock)
    clock.now += 1.0
    drain(bucket)
    clock.now += 1.0
    tokens = bucket.available()
    bucket.reconfigure(RateLimit(50))
    assert (bucket.rate_limit, bucket.burst) == (RateLimit(50), 5)
    assert bucket.rate == pytest.approx(45 * 0.98 / 60)
    assert bucket.available() == pytest.approx(tokens)  # refilled at the old rate up to the switch
    clock.now += 3600
    assert bucket.available() == 5
    bucket.reconfigure(RateLimit(20))
    assert bucket.available() == 2  # never more than the new burst
    learned = TokenBucket(RateLimit(100), clock)
    _second_429(learned, clock, sent=21)
    learned.reconfigure(RateLimit(40))
    assert (learned.learned, learned.burst) == (None, 4)
    assert learned.rate == pytest.approx(36 * 0.98 / 60)


def limits_of(budget: RateBudget) -> dict[RequestKind, RateLimit]:
    return {kind: bucket.rate_limit for kind, bucket in budget.buckets.items()}


def test_budget_reconfigure_sets_every_kind() -> None:
    budget = RateBudget({RequestKind.BATCH_LIST: RateLimit(50)}, clock=FakeClock())
    assert limits_of(budget) == {**DEFAULT_RATE_LIMITS, RequestKind.BATCH_LIST: RateLimit(50)}
    budget.reconfigure({RequestKind.FILE_UPLOAD: RateLimit(1, period=1.0)})
    assert limits_of(budget) == {**DEFAULT_RATE_LIMITS, RequestKind.FILE_UPLOAD: RateLimit(1, period=1.0)}
    assert budget.buckets[RequestKind.BATCH_LIST].burst == 10  # back to the default limit


def test_rate_budget_for_reconfigures_only_when_given_limits() -> None:
    key = ("test", "rate-edges")
    first = rate_budget_for(key, {RequestKind.BATCH_LIST: RateLimit(40)})
    assert rate_budget_for(key) is first
    assert limits_of(first)[RequestKind.BATCH_LIST] == RateLimit(40)
    assert rate_budget_for(key, {RequestKind.BATCH_LIST: RateLimit(20)}) is first
    assert limits_of(first)[RequestKind.BATCH_LIST] == RateLimit(20)


@pytest.mark.parametrize(
    ("headers", "pause"), [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "2500"}, 2.5), ({}, 1.0)]
)
def test_a_429s_retry_after_is_honoured_by_the_bucket(headers: dict[str, str], pause: float) -> None:
    budget = RateBudget(clock=FakeClock())
    request = httpx.Request("GET", "http://127.0.0.1/compatible-mode/v1/batches/batch_1")
    bucket = budget.bucket(request)
    assert bucket is budget.buckets[RequestKind.BATCH_RETRIEVE]
    budget.observe(request, httpx.Response(429, headers=headers))
    assert bucket.penalties == 1
    assert bucket.available() == pytest.approx(1 - pause * bucket.rate)  # the full bucket was paused


@pytest.mark.parametrize("status", [200, 500, 503])
def test_only_a_429_tightens_the_bucket(status: int) -> None:
    budget = RateBudget(clock=FakeClock())
    request = httpx.Request("GET", "http://127.0.0.1/v1/batches")
    budget.observe(request, httpx.Response(status, headers={"Retry-After": "30"}))
    assert budget.buckets[RequestKind.BATCH_LIST].penalties == 0


def test_paths_outside_the_api_have_no_bucket() -> None:
    budget = RateBudget(clock=FakeClock())
    request = httpx.Request("GET", "http://127.0.0.1/v1/models")
    assert budget.bucket(request) is None
    budget.observe(request, httpx.Response(429))
    budget.wait(request)  # returns at once
    assert all(b.available() == b.burst and b.penalties == 0 for b in budget.buckets.values())


def test_the_budget_picks_the_bucket_by_method_and_path() -> None:
    budget = RateBudget(clock=FakeClock())
    create = httpx.Request("POST", "http://127.0.0.1/compatible-mode/v1/batches")
    assert budget.bucket(create) is budget.buckets[RequestKind.BATCH_CREATE]


def test_wait_takes_one_token_when_one_is_there_on_the_budgets_clock() -> None:
    clock = FakeClock()
    budget = RateBudget(clock=clock)
    request = httpx.Request("GET", "http://127.0.0.1/v1/batches")
    budget.wait(request)
    bucket = budget.buckets[RequestKind.BATCH_LIST]
    assert bucket.available() == bucket.burst - 1
    clock.now += 0.5
    assert bucket.available() == pytest.approx(bucket.burst - 1 + 0.5 * bucket.rate)


class Sleeps:
    """Stands in for ``time.sleep`` / ``anyio.sleep`` so the waits are recorded, not slept."""

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.delays: list[float] = []
        self.during = during

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) == 1:
            self.during()

    async def asleep(self, delay: float) -> None:
        self(delay)


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_request_waits_its_turn_and_again_after_a_429_during_the_wait(
    face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sleeps = Sleeps()
    budget = RateBudget(clock=clock, sleep=sleeps)  # the sync face sleeps through the budget's own sleep
    monkeypatch.setattr(ratelimit.anyio, "sleep", sleeps.asleep)
    request = httpx.Request("GET", "http://127.0.0.1/v1/batches")
    bucket = budget.buckets[RequestKind.BATCH_LIST]
    drain(bucket)

    def wait() -> None:
        budget.wait(request) if face == "sync" else anyio.run(budget.await_turn, request)

    wait()  # one token owed: wait for it, once
    assert sleeps.delays == [pytest.approx(1 / bucket.rate)]
    clock.now += 3600
    drain(bucket)
    sleeps.delays.clear()
    sleeps.during = lambda: budget.observe(request, httpx.Response(429, headers={"Retry-After": "5"}))
    wait()  # the 429 met while waiting: reserve again, first in line when the pause ends
    assert sleeps.delays == [pytest.approx(1 / bucket.rate), pytest.approx(5.0)]
    assert bucket.penalties == 1


def test_a_forked_child_starts_with_its_own_budgets() -> None:
    """A forked process is another share of the account: it must not inherit the parent's buckets."""
    key = ("test", "rate-edges-fork")
    rate_budget_for(key, {RequestKind.BATCH_LIST: RateLimit(40)})
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 3
        try:
            code = 0 if limits_of(rate_budget_for(key))[RequestKind.BATCH_LIST] == RateLimit(100) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ------------------------------------------------------------------------------------ connection extras
def test_rate_share_of_exactly_one_is_the_whole_limit() -> None:
    assert parse_rate_limits(None, 1) == dict(DEFAULT_RATE_LIMITS)
    assert parse_rate_limits(None, "1.0") == dict(DEFAULT_RATE_LIMITS)
    assert parse_rate_limits(None, "") == dict(DEFAULT_RATE_LIMITS)
    with pytest.raises(ValueError, match=r"^rate_share must be within \(0, 1\], got 1.01$"):
        parse_rate_limits(None, 1.01)


@pytest.mark.parametrize("text", ["", "  ", "{}"])
def test_empty_rate_limits_text_means_the_defaults(text: str) -> None:
    assert parse_rate_limits(text) == dict(DEFAULT_RATE_LIMITS)


def test_rate_limits_are_per_minute_whatever_the_period() -> None:
    limits = parse_rate_limits({"file_upload": 120, "batch_create": 600})
    assert limits[RequestKind.FILE_UPLOAD] == RateLimit(2, period=1.0)
    assert limits[RequestKind.BATCH_CREATE] == RateLimit(600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{not json",), "rate_limits must be a JSON object of kind -> requests per minute"),
        (("[1]",), "rate_limits must be a JSON object of kind -> requests per minute"),
        (([("batch_list", 5)],), "rate_limits must be a JSON object of kind -> requests per minute"),
        (
            ({"batch": 5},),
            "unknown rate_limits kind 'batch'; use one of batch_create, batch_retrieve, batch_list, "
            "batch_cancel, file_upload, file_read",
        ),
        (({"batch_list": "many"},), "rate_limits['batch_list'] must be a number, got 'many'"),
        (({"batch_list": None},), "rate_limits['batch_list'] must be a number, got None"),
        (({"batch_list": -5},), "rate_limits['batch_list'] must be positive, got -5"),
        (({"batch_list": "inf"},), "rate_limits['batch_list'] must be positive, got 'inf'"),
        ((None, 0), "rate_share must be positive, got 0"),
        ((None, "half"), "rate_share must be a number, got 'half'"),
    ],
)
def test_bad_extras_say_what_is_wrong(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_rate_limits(*args)
