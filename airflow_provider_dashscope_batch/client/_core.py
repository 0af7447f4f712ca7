"""The wire: ``ClientCore`` builds requests, parses responses and maps errors -- no I/O, no retries.

Every error the core builds has the API key scrubbed from all its string fields and is raised without a
chained exception. The retries are :func:`~._request.request_flow`'s, the endpoints are the flows of
:mod:`.resources`, and the core is what they all take first: the wire plus the retry policy and clocks
a flow reads.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from airflow_provider_dashscope_batch.client._redaction import KeyRedactingFilter
from airflow_provider_dashscope_batch.client._retry import RetryPolicy, parse_retry_after
from airflow_provider_dashscope_batch.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    IncompleteDownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from airflow_provider_dashscope_batch.regions import WORKSPACE_HEADER

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=BaseException)

DEFAULT_TIMEOUT = 60.0
#: The installed distribution's name and version (the client reads nothing above it).
USER_AGENT = f"airflow-provider-dashscope-batch/{version('airflow-provider-dashscope-batch')}"


class ClientCore:
    """
    Request building, response parsing and error mapping -- no I/O.

    It also carries what the flows driven over it read: the retry policy and the clocks (replaceable in
    tests).

    :param api_key: DashScope API key (sent as ``Authorization: Bearer``; never logged or raised).
    :param base_url: Compatible-mode base URL, e.g. ``https://dashscope.aliyuncs.com/compatible-mode/v1``.
    :param workspace: Optional workspace id, sent as ``X-DashScope-WorkSpace``.
    :param timeout: Per-request timeout in seconds (connect, read, write, pool).
    :param retry: Retry policy.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        workspace: str | None,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise LocalValidationError("an API key is required (the connection's password)")
        if not base_url or not re.match(r"https?://", base_url):
            raise LocalValidationError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._api_key = api_key.strip()
        KeyRedactingFilter.protect(self._api_key)
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry
        self.rand: Callable[[], float] = random.random
        self.monotonic: Callable[[], float] = time.monotonic
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __repr__(self) -> str:
        return f"ClientCore(base_url={self.base_url!r}, workspace={self.workspace!r})"

    # ---------------------------------------------------------------------------- request building
    @property
    def headers(self) -> dict[str, str]:
        """Headers of every request (incl. the bearer key -- never log these)."""
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if self.workspace:
            headers[WORKSPACE_HEADER] = self.workspace
        return headers

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> httpx.Request:
        """Build a request to ``base_url + path``; ``None`` query parameters are dropped."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return httpx.Request(
            method,
            self.base_url + path,
            params=query or None,
            json=json,
            files=files,
            data=data,
            headers=self.headers,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def redact(self, text: str) -> str:
        """Remove the API key from ``text``."""
        return text.replace(self._api_key, "***") if self._api_key in text else text

    def scrub(self, error: E) -> E:
        """Redact the API key from every string field of ``error`` (its args included); return it."""
        for name, value in vars(error).items():
            if isinstance(value, str):
                setattr(error, name, self.redact(value))
        error.args = tuple(self.redact(a) if isinstance(a, str) else a for a in error.args)
        return error

    # ----------------------------------------------------------------------------------- responses
    def parse(self, response: httpx.Response, model: type[M]) -> M:
        """Parse a successful JSON response into ``model``."""
        try:
            return model.model_validate_json(response.content)
        except ValueError as exc:
            detail = str(exc)
        # raised outside the except block: the parse error (holding the body) is not chained
        raise self.scrub(
            APIStatusError(
                f"could not parse the response as {model.__name__}: {detail}",
                status_code=response.status_code,
                request_id=_request_id_from_headers(response.headers),
            )
        )

    def error_from_response(self, response: httpx.Response) -> APIStatusError:
        """Map an error response (status, DashScope code, body) to a typed exception."""
        body: Any = None
        with suppress(ValueError):
            body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            source: dict[str, Any] = error
        elif isinstance(body, dict):
            source = body
        else:
            source = {}
        code = source.get("code") or (body.get("code") if isinstance(body, dict) else None)
        code = str(code) if code is not None else None
        message = source.get("message") or (error if isinstance(error, str) else None)
        if not message:
            text = response.text.strip()[:500] if response.content else ""
            message = text or response.reason_phrase or "error"
        request_id = (body.get("request_id") if isinstance(body, dict) else None) or _request_id_from_headers(
            response.headers
        )
        error_type = source.get("type")
        param = source.get("param")
        cls = _error_class(response.status_code, code, error_type)
        error = cls(
            str(message),
            status_code=response.status_code,
            code=code,
            request_id=str(request_id) if request_id else None,
            error_type=str(error_type) if error_type else None,
            param=str(param) if param is not None else None,
            retry_after=parse_retry_after(response.headers),
            retryable=_should_retry(response.headers, cls),
        )
        return self.scrub(error)

    def error_from_transport(self, exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
        """Map an httpx transport error to :class:`APITimeoutError` / :class:`APIConnectionError`."""
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        detail = str(exc) or type(exc).__name__
        return self.scrub(
            cls(
                f"{request.method} {request.url.path} failed: {type(exc).__name__}: {detail}",
                method=request.method,
                path=request.url.path,
            )
        )

    def stream_error(self, exc: httpx.TransportError, response: httpx.Response) -> APIConnectionError:
        """Map a failure while reading a streamed body (a cut-short one: :class:`IncompleteDownloadError`)."""
        expected = _content_length(response)
        if expected is not None and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self.incomplete(response, expected)
        return self.error_from_transport(exc, response.request)

    def incomplete(self, response: httpx.Response, expected: int) -> IncompleteDownloadError:
        """The error for a body that ended after fewer than ``expected`` bytes."""
        received = response.num_bytes_downloaded
        request = response.request
        return self.scrub(
            IncompleteDownloadError(
                f"{request.method} {request.url.path}: download truncated, received {received} of "
                f"{expected} bytes",
                expected=expected,
                received=received,
                method=request.method,
                path=request.url.path,
            )
        )

    def check_complete(self, response: httpx.Response, failure: httpx.TransportError | None = None) -> None:
        """
        Raise the typed error of a streamed body that failed while being read (``failure``) or ended
        before its ``Content-Length`` (:class:`IncompleteDownloadError`).

        Called outside the ``except`` block that caught ``failure``, so nothing chained holds the request.
        """
        if failure is not None:
            raise self.stream_error(failure, response)
        expected = _content_length(response)
        if expected is not None and response.num_bytes_downloaded < expected:
            raise self.incomplete(response, expected)


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding"):
        return None
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _request_id_from_headers(headers: httpx.Headers) -> str | None:
    for name in ("x-request-id", "x-dashscope-request-id", "request-id", "eagleeye-traceid"):
        if value := headers.get(name):
            return value
    return None


def _should_retry(headers: httpx.Headers, cls: type[APIStatusError]) -> bool | None:
    """The service's ``x-should-retry`` verdict (never for a bad key or an empty account), if it sent one."""
    override = headers.get("x-should-retry")
    if override == "true":
        return not issubclass(cls, (InsufficientBalanceError, AuthenticationError))
    if override == "false":
        return False
    return None


_CODE_CLASSES: dict[str, type[APIStatusError]] = {
    "invalid_api_key": AuthenticationError,
    "invalidapikey": AuthenticationError,
    "arrearage": InsufficientBalanceError,
    "insufficient_quota": InsufficientBalanceError,
    "accessdenied": PermissionDeniedError,
    "access_denied": PermissionDeniedError,
    "limit_requests": RateLimitError,
    "throttling": RateLimitError,
    "notfound": NotFoundError,
    "not_found": NotFoundError,
    "modelnotfound": NotFoundError,
    "model_not_found": NotFoundError,
    "invalidparameter": InvalidRequestError,
    "invalid_parameter": InvalidRequestError,
}

_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def _error_class(status: int, code: str | None, error_type: Any) -> type[APIStatusError]:
    for candidate in (code, error_type if isinstance(error_type, str) else None):
        if candidate:
            lowered = candidate.lower()
            cls = _CODE_CLASSES.get(lowered) or _CODE_CLASSES.get(lowered.split(".", 1)[0])
            if cls is not None and not (cls is RateLimitError and status >= 500):
                return cls
    if status >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status, APIStatusError)
