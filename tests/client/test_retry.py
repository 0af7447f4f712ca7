"""The retry policy: backoff, ``Retry-After``, the recovery window."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from airflow_provider_dashscope_batch.client import (
    LocalValidationError,
    RetryPolicy,
)
from airflow_provider_dashscope_batch.client._retry import parse_retry_after


def test_retry_after_headers():
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert (
        parse_retry_after(
            httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}), now=lambda: 1445412480.0
        )
        == 10.0
    )
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0, jitter=0.25)
    assert [policy.backoff(n, lambda: 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.backoff(2, lambda: 1.0) == 1.5
    assert policy.delay(0, httpx.Headers({"retry-after": "7"})) == 7.0
    assert policy.delay(0, httpx.Headers({"retry-after": "500"})) is None  # over max_retry_after


def test_recovery_window_must_not_be_negative():
    with pytest.raises(LocalValidationError, match="recovery_window"):
        RetryPolicy(recovery_window=-1)


def refused(**fields) -> str:
    with pytest.raises(LocalValidationError) as info:
        RetryPolicy(**fields)
    return str(info.value)


def test_policy_fields_on_both_sides_of_their_bounds():
    for fields in ({"max_retries": 0}, {"jitter": 0.0}, {"jitter": 1.0}, {"recovery_window": 0.0}):
        RetryPolicy(**fields)
    assert refused(max_retries=-1) == "max_retries must be >= 0, got -1"
    assert refused(jitter=-0.01) == "jitter must be within 0..1, got -0.01"
    assert refused(jitter=1.01) == "jitter must be within 0..1, got 1.01"
    assert refused(recovery_window=-0.5) == "recovery_window must be >= 0, got -0.5"


def test_the_recovery_window_is_twice_the_time_in_flight_capped_at_300_s():
    policy = RetryPolicy()
    assert policy.recovery_deadline(sent=100.0, failed=103.0) == 106.0
    assert policy.recovery_deadline(sent=100.0, failed=250.0) == 400.0  # 2 x 150 s is exactly the cap
    assert policy.recovery_deadline(sent=100.0, failed=400.0) == 400.0  # 2 x 300 s, capped
    assert RetryPolicy(recovery_window=60.0).recovery_deadline(sent=100.0, failed=500.0) == 160.0
    assert RetryPolicy(recovery_window=0.0).recovery_deadline(sent=100.0, failed=500.0) == 100.0


def test_backoff_doubles_up_to_the_cap_and_jitter_takes_off_a_fraction():
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0, jitter=0.5)
    assert [policy.backoff(n, lambda: 0.0) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.backoff(3, lambda: 0.5) == 3.0  # 4 s less a quarter
    assert policy.backoff(3, lambda: 1.0) == 2.0
    assert RetryPolicy(jitter=0.0).backoff(1, lambda: 1.0) == 1.0
    samples = {policy.backoff(2) for _ in range(50)}  # random jitter by default
    assert len(samples) > 1
    assert all(1.0 <= s <= 2.0 for s in samples)


def test_delay_follows_retry_after_up_to_its_limit_and_backs_off_without_it():
    policy = RetryPolicy(initial_delay=1.0, jitter=0.5, max_retry_after=120.0)
    assert policy.delay(2, None, lambda: 0.5) == 3.0
    assert policy.delay(2, httpx.Headers({"x-other": "1"}), lambda: 0.5) == 3.0
    assert policy.delay(2, httpx.Headers({"retry-after": "120"}), lambda: 0.5) == 120.0
    assert policy.delay(2, httpx.Headers({"retry-after": "120.5"}), lambda: 0.5) is None
    assert policy.delay(0, httpx.Headers({"retry-after-ms": "250"}), lambda: 0.5) == 0.25
    assert 0.25 <= policy.delay(0, None) <= 1.0  # random jitter by default


def test_retry_after_precedence_and_odd_values():
    both = httpx.Headers({"retry-after-ms": "2500", "retry-after": "9"})
    assert parse_retry_after(both) == 2.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "soon", "retry-after": "9"})) == 9.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "-5"})) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "-3"})) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after": ""})) is None
    past = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=lambda: 1445412500.0) == 0.0


def test_an_http_date_is_measured_from_the_wall_clock_by_default():
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3590 <= parse_retry_after(httpx.Headers({"retry-after": in_an_hour})) <= 3600
