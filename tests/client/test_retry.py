"""The retry policy: backoff, ``Retry-After``, the recovery window."""

from __future__ import annotations

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
