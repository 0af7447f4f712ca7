"""One request with retries, and the recovery window after an ambiguous create."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_dashscope_batch.client import (
    APITimeoutError,
    AuthenticationError,
    LocalValidationError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from airflow_provider_dashscope_batch.client._flow import Send, Sleep
from airflow_provider_dashscope_batch.client.resources import batches
from tests.client.flow_support import FakeClock, batch_json, core, drive, response


def test_get_retries_then_succeeds():
    c = core(retry=RetryPolicy(max_retries=3))
    request = httpx.Request("GET", "http://emu.invalid/x")
    result, steps = drive(
        batches.retrieve_batch_flow(c, "batch_1"),
        [
            httpx.ConnectError("refused", request=request),
            response(503, {}),
            response(200, batch_json("batch_1")),
        ],
    )
    assert result.id == "batch_1"
    assert [type(s).__name__ for s in steps] == ["Send", "Sleep", "Send", "Sleep", "Send"]
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [0.5, 1.0]


def test_budget_ends_in_typed_error():
    c = core(retry=RetryPolicy(max_retries=2))
    with pytest.raises(RateLimitError):
        drive(
            batches.retrieve_batch_flow(c, "batch_1"),
            [response(429, {"error": {"code": "limit_requests"}})] * 3,
        )
    request = httpx.Request("GET", "http://emu.invalid/x")
    with pytest.raises(APITimeoutError):
        drive(batches.retrieve_batch_flow(c, "batch_1"), [httpx.ReadTimeout("slow", request=request)] * 3)


def test_elapsed_budget_stops_retrying():
    c = core(retry=RetryPolicy(max_retries=10, max_elapsed=5.0))
    with pytest.raises(ServerError):
        drive(batches.retrieve_batch_flow(c, "b"), [response(500, {}, {"retry-after": "6"})])


def test_not_retried_errors():
    c = core()
    with pytest.raises(AuthenticationError):
        drive(batches.retrieve_batch_flow(c, "b"), [response(401, {"error": {"code": "invalid_api_key"}})])
    with pytest.raises(ServerError):
        drive(batches.retrieve_batch_flow(c, "b"), [response(500, {}, {"x-should-retry": "false"})])


def test_max_retries_per_call_overrides_the_policy():
    c = core(retry=RetryPolicy(max_retries=5))
    with pytest.raises(ServerError) as raised:
        drive(batches.retrieve_batch_flow(c, "b", max_retries=0), [response(503, {}, {"retry-after": "3"})])
    assert raised.value.retry_after == 3.0  # handed up to the caller that owns the retries
    _, steps = drive(
        batches.list_batches_flow(c, max_retries=1), [response(500, {}), response(200, {"data": []})]
    )
    assert [type(s).__name__ for s in steps] == ["Send", "Sleep", "Send"]
    with pytest.raises(ServerError):
        drive(batches.list_batches_flow(c, max_retries=0), [response(500, {})])
    with pytest.raises(LocalValidationError, match="max_retries"):
        next(batches.retrieve_batch_flow(c, "b", max_retries=-1))


def test_after_a_timeout_the_lookups_span_twice_the_time_in_flight():
    c = core(retry=RetryPolicy(max_retries=1, initial_delay=0.5, max_delay=8.0))
    c.monotonic = clock = FakeClock()
    post = c.build_request("POST", "/batches")
    empty = response(200, {"data": [], "has_more": False})
    result, steps = drive(
        batches.create_batch_flow(
            c, input_file_id="file-1", endpoint="/v1/chat/ds-test", idempotency_key="k"
        ),
        [httpx.ReadTimeout("lost", request=post), *[empty] * 5, response(200, batch_json("b2", "k")), empty],
        clock,
        in_flight=10.0,
    )
    assert result.id == "b2"
    sleeps = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]  # looks until 20 s after the send, then the re-send ...
    methods = [s.request.method for s in steps if isinstance(s, Send)]
    assert methods == ["POST"] + ["GET"] * 5 + ["POST", "GET"]  # ... and a last search for a late copy


def test_a_fixed_recovery_window_and_a_found_batch_end_the_lookups():
    c = core(retry=RetryPolicy(initial_delay=1.0, recovery_window=60.0))
    c.monotonic = clock = FakeClock()
    empty = response(200, {"data": [], "has_more": False})
    result, steps = drive(
        batches.create_batch_flow(
            c, input_file_id="file-1", endpoint="/v1/chat/ds-test", idempotency_key="k"
        ),
        [
            response(502, {}),
            empty,
            empty,
            response(200, {"data": [batch_json("b1", "k")], "has_more": False}),
        ],
        clock,
    )
    assert result.id == "b1"
    assert [s.seconds for s in steps if isinstance(s, Sleep)] == [1.0, 2.0, 4.0]
    assert [s.request.method for s in steps if isinstance(s, Send)] == ["POST", "GET", "GET", "GET"]
