"""Unit tests of the I/O-free client core: local checks, error mapping, retry decisions, flows."""

from __future__ import annotations

import inspect
import io
import typing
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
import pytest

from airflow_provider_dashscope_batch.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncDashScopeClient,
    AuthenticationError,
    DashScopeClient,
    DashScopeError,
    IncompleteDownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    format_time_filter,
    parse_completion_window,
    validate_metadata,
)
from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._downloads import Destination
from airflow_provider_dashscope_batch.client._flow import Emit, Send, Sleep
from airflow_provider_dashscope_batch.client._retry import parse_retry_after
from airflow_provider_dashscope_batch.client._uploads import tokenized_filename
from airflow_provider_dashscope_batch.client.resources import batches, files
from airflow_provider_dashscope_batch.models import Batch

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


@pytest.mark.parametrize(
    ("value", "wire"),
    [("24h", "24h"), ("14d", "14d"), (" 48H ", "48h"), ("336h", "336h"), (timedelta(hours=72), "72h")],
)
def test_completion_window_accepted(value, wire):
    assert parse_completion_window(value) == wire


@pytest.mark.parametrize("value", ["23h", "15d", "337h", "1w", "24", "", "1.5d", timedelta(minutes=90), 24])
def test_completion_window_rejected(value):
    with pytest.raises(LocalValidationError, match="completion_window"):
        parse_completion_window(value)


def test_metadata_limits():
    assert validate_metadata({"ds_name": "n" * 100, "ds_description": "d" * 200}) == {
        "ds_name": "n" * 100,
        "ds_description": "d" * 200,
    }
    with pytest.raises(LocalValidationError, match=r"ds_name.*100"):
        validate_metadata({"ds_name": "n" * 101})
    with pytest.raises(LocalValidationError, match=r"ds_description.*200"):
        validate_metadata({"ds_description": "d" * 201})
    with pytest.raises(LocalValidationError, match="ds_batch_finish_callback"):
        validate_metadata({"ds_batch_finish_callback": "not a url"})
    with pytest.raises(LocalValidationError, match="strings"):
        validate_metadata({"n": 1})  # type: ignore[dict-item]


def test_time_filter_format():
    assert format_time_filter(datetime(2025, 3, 4, 5, 6, 7)) == "20250304050607"
    aware = datetime(2025, 3, 4, 13, 0, 0, tzinfo=timezone(timedelta(hours=8)))
    assert format_time_filter(aware) == "20250304050000"
    assert format_time_filter(date(2025, 3, 4)) == "20250304000000"
    assert format_time_filter("2025-11-12") == "2025-11-12"


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


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (401, {"code": "invalid_api_key", "message": "Incorrect API key provided."}, AuthenticationError),
        (
            400,
            {
                "code": "Arrearage",
                "message": "Access denied, please make sure your account is in good standing.",
            },
            InsufficientBalanceError,
        ),
        (429, {"code": "insufficient_quota", "message": "quota"}, InsufficientBalanceError),
        (403, {"code": "AccessDenied.Unpurchased", "message": "denied"}, PermissionDeniedError),
        (404, {"code": "NotFound", "message": "gone"}, NotFoundError),
        (400, {"code": "InvalidParameter", "message": "bad"}, InvalidRequestError),
        (429, {"code": "limit_requests", "type": "limit_requests", "message": "slow down"}, RateLimitError),
        (503, {"code": "ServiceUnavailable", "message": "later"}, ServerError),
        (418, {"message": "teapot"}, type(None)),
    ],
)
def test_error_mapping(status, error, cls):
    exc = core().error_from_response(response(status, {"error": error, "request_id": "req-1"}))
    if cls is not type(None):
        assert type(exc) is cls
    assert exc.status_code == status
    assert exc.request_id == "req-1"
    assert exc.message == error["message"]
    assert "req-1" in str(exc)


def test_native_error_shape_and_non_json_body():
    c = core()
    exc = c.error_from_response(
        response(401, {"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": "r2"})
    )
    assert isinstance(exc, AuthenticationError)
    assert (exc.code, exc.request_id) == ("InvalidApiKey", "r2")
    request = httpx.Request("GET", "http://emu.invalid/x")
    exc = c.error_from_response(
        httpx.Response(502, text="<html>bad gateway</html>", request=request, headers={"x-request-id": "h1"})
    )
    assert isinstance(exc, ServerError)
    assert exc.request_id == "h1"
    assert "bad gateway" in exc.message


def test_key_is_scrubbed_from_service_messages():
    exc = core().error_from_response(
        response(401, {"error": {"code": "invalid_api_key", "message": f"Incorrect API key provided: {KEY}"}})
    )
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert "***" in exc.message


def test_repr_and_headers():
    c = core(workspace="ws-1")
    assert KEY not in repr(c)
    headers = c.headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["X-DashScope-WorkSpace"] == "ws-1"
    assert "X-DashScope-WorkSpace" not in core().headers


def test_empty_key_rejected():
    with pytest.raises(LocalValidationError, match="API key"):
        core(api_key="  ")


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


def test_create_looks_up_before_resending_after_ambiguous_failure():
    c = core()
    flow = batches.create_batch_flow(
        c, input_file_id="file-1", endpoint="/v1/chat/ds-test", idempotency_key="k1"
    )
    post = next(flow)
    assert isinstance(post, Send)
    assert post.request.method == "POST"
    assert b'"idempotency_key":"k1"' in post.request.content
    assert isinstance(flow.send(httpx.ReadTimeout("lost", request=post.request)), Sleep)
    lookup = flow.send(None)
    assert lookup.request.method == "GET"
    assert lookup.request.url.params["input_file_ids"] == "file-1"
    page = {"data": [batch_json("batch_other", "k0"), batch_json("batch_mine", "k1")], "has_more": False}
    with pytest.raises(StopIteration) as stop:
        flow.send(response(200, page))
    assert stop.value.value.id == "batch_mine"


def test_create_resends_when_lookup_finds_nothing_and_on_429_without_lookup():
    c = core()
    flow = batches.create_batch_flow(c, input_file_id="file-1", endpoint="/v1/chat/ds-test")
    post = next(flow)
    flow.send(response(502, {}))
    lookup = flow.send(None)
    assert lookup.request.method == "GET"
    again = flow.send(response(200, {"data": [], "has_more": False}))
    assert again.request.method == "POST"
    assert again.request.content == post.request.content  # same idempotency key
    assert isinstance(flow.send(response(429, {"error": {"code": "limit_requests"}})), Sleep)
    assert flow.send(None).request.method == "POST"  # 429: never processed, no lookup needed


def test_create_validates_locally():
    c = core()
    with pytest.raises(LocalValidationError, match="completion_window"):
        next(
            batches.create_batch_flow(
                c, input_file_id="f", endpoint="/v1/chat/completions", completion_window="2h"
            )
        )
    with pytest.raises(LocalValidationError, match="differ"):
        next(
            batches.create_batch_flow(
                c,
                input_file_id="f",
                endpoint="/v1/chat/completions",
                metadata={"idempotency_key": "a"},
                idempotency_key="b",
            )
        )


def test_pagination_follows_cursor_and_detects_stall():
    c = core()
    flow = batches.list_batches_flow(
        c, status=["completed", "failed"], create_after=datetime(2025, 1, 2, 3, 4, 5), page_size=2
    )
    first = next(flow)
    assert first.request.url.params["status"] == "completed,failed"
    assert first.request.url.params["create_after"] == "20250102030405"
    assert first.request.url.params["limit"] == "2"
    assert "after" not in first.request.url.params
    emit = flow.send(
        response(200, {"data": [batch_json("b1"), batch_json("b2")], "last_id": "b2", "has_more": True})
    )
    assert isinstance(emit, Emit)
    assert [b.id for b in emit.items] == ["b1", "b2"]
    second = flow.send(None)
    assert second.request.url.params["after"] == "b2"
    flow.send(response(200, {"data": [batch_json("b3")], "has_more": False}))
    with pytest.raises(StopIteration):
        flow.send(None)
    stalled = files.list_files_flow(
        c,
    )
    next(stalled)
    stalled.send(response(200, {"data": [{"id": "f1"}], "has_more": True}))
    stalled.send(None)
    stalled.send(response(200, {"data": [{"id": "f1"}], "has_more": True}))
    with pytest.raises(Exception, match="did not advance"):
        stalled.send(None)


def test_list_argument_checks():
    c = core()
    with pytest.raises(LocalValidationError, match="page_size"):
        next(batches.list_batches_flow(c, page_size=101))
    with pytest.raises(LocalValidationError, match="20"):
        next(batches.list_batches_flow(c, input_file_ids=[f"f{i}" for i in range(21)]))


def test_transport_error_text_has_no_key():
    c = core()
    request = c.build_request("GET", "/batches")
    exc = c.error_from_transport(httpx.ConnectError(f"boom {KEY}", request=request), request)
    assert isinstance(exc, APIConnectionError)
    assert KEY not in str(exc)
    assert KEY not in repr(exc)


# ------------------------------------------------------------------------- retryability, one definition
@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (ServerError("x", status_code=500), True),
        (RateLimitError("x", status_code=429), True),
        (RateLimitError("x", status_code=400), True),  # limit_requests, whatever the status
        (APIStatusError("x", status_code=408), True),
        (APIStatusError("x", status_code=418), False),
        (InvalidRequestError("x", status_code=400), False),
        (InvalidRequestError("x", status_code=500), False),  # an InvalidParameter code on a 500
        (InsufficientBalanceError("x", status_code=429), False),
        (AuthenticationError("x", status_code=401), False),
        (APIConnectionError("x"), True),
        (APITimeoutError("x"), True),
        (IncompleteDownloadError("x", expected=2, received=1), True),
        (LocalValidationError("x"), False),
        (DashScopeError("x"), False),
    ],
)
def test_every_error_says_whether_it_is_retryable(exc, retryable):
    assert exc.retryable is retryable


def test_retryable_and_retry_after_come_from_the_response():
    c = core()
    limited = c.error_from_response(
        response(429, {"error": {"code": "limit_requests"}}, {"retry-after": "7"})
    )
    assert (limited.retryable, limited.retry_after) == (True, 7.0)
    assert c.error_from_response(response(400, {}, {"x-should-retry": "true"})).retryable
    assert not c.error_from_response(response(503, {}, {"x-should-retry": "false"})).retryable
    assert not c.error_from_response(response(401, {}, {"x-should-retry": "true"})).retryable
    request = httpx.Request("GET", "http://emu.invalid/x")
    assert c.error_from_transport(httpx.ReadTimeout("slow", request=request), request).retry_after is None


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


# ------------------------------------------------------------------------------- recovery window
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


def test_recovery_window_must_not_be_negative():
    with pytest.raises(LocalValidationError, match="recovery_window"):
        RetryPolicy(recovery_window=-1)


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("requests.jsonl", "requests.tok-12345.jsonl"),
        ("a.b.jsonl", "a.b.tok-12345.jsonl"),
        ("noext", "noext.tok-12345"),
        (".hidden", ".hidden.tok-12345"),
        ("requests.tok-12345.jsonl", "requests.tok-12345.jsonl"),
    ],
)
def test_upload_filename_carries_the_token(filename, stored):
    assert tokenized_filename(filename, "tok-12345") == stored


def test_upload_recovery_matches_only_the_token():
    c = core()
    flow = files.upload_file_flow(
        c, io.BytesIO(b"x" * 10), filename="requests.jsonl", upload_token="tok-mine-1"
    )
    post = next(flow)
    assert b'filename="requests.tok-mine-1.jsonl"' in post.request.read()
    assert isinstance(flow.send(response(500, {})), Sleep)
    lookup = flow.send(None)
    now = int(datetime.now(UTC).timestamp())
    other = {"id": "file-a", "filename": "requests.jsonl", "bytes": 10, "created_at": now, "purpose": "batch"}
    resend = flow.send(response(200, {"data": [other], "has_more": False}))
    assert lookup.request.method == "GET"
    assert resend.request.method == "POST"  # a file of the same name and size is not ours


def test_destination_renames_a_complete_download_and_removes_a_partial_one(tmp_path):
    done = Destination(tmp_path / "done.jsonl")
    done.open()
    done.write(b"abc")
    assert done.commit() == 3
    done.discard()  # after commit: nothing to remove
    assert [p.name for p in tmp_path.iterdir()] == ["done.jsonl"]
    partial = Destination(tmp_path / "partial.jsonl")
    partial.open()
    partial.write(b"ab")
    partial.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["done.jsonl"]
    stream = io.BytesIO()
    to_stream = Destination(stream)
    to_stream.open()
    to_stream.write(b"xyz")
    to_stream.discard()  # a stream is the caller's: neither closed nor emptied
    assert (to_stream.commit(), stream.getvalue()) == (3, b"xyz")


@pytest.mark.parametrize("face", [DashScopeClient, AsyncDashScopeClient])
def test_each_face_method_is_its_flow_with_the_face_kind_of_result(face):
    for name in ("upload_file", "create_batch", "retrieve_batch", "cancel_duplicates", "list_batches"):
        resource = files if name == "upload_file" else batches
        method, flow = getattr(face, name), getattr(resource, f"{name}_flow")
        assert method.__doc__ == flow.__doc__
        _core, *flow_parameters = inspect.signature(flow).parameters
        assert list(inspect.signature(method).parameters) == ["self", *flow_parameters]
        assert method.__qualname__ == f"{face.__name__}.{name}"
    is_async = face is AsyncDashScopeClient
    assert inspect.iscoroutinefunction(face.retrieve_batch) is is_async
    assert not inspect.iscoroutinefunction(face.list_batches)
    returns = inspect.signature(face.list_batches).return_annotation
    assert returns == ("AsyncIterator[Batch]" if is_async else "Iterator[Batch]")
    assert typing.get_type_hints(face.retrieve_batch)["return"] is Batch
