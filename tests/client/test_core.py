"""The wire core: error mapping, scrubbing the key, headers, retryability of every error."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_dashscope_batch.client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    DashScopeError,
    IncompleteDownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from tests.client.flow_support import KEY, core, response


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


def test_transport_error_text_has_no_key():
    c = core()
    request = c.build_request("GET", "/batches")
    exc = c.error_from_transport(httpx.ConnectError(f"boom {KEY}", request=request), request)
    assert isinstance(exc, APIConnectionError)
    assert KEY not in str(exc)
    assert KEY not in repr(exc)


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
