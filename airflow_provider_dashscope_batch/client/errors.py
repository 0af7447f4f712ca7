"""Typed exceptions of the DashScope client.

Hierarchy::

    DashScopeError
    ├── LocalValidationError          (also ValueError; raised before any request is sent)
    ├── APIConnectionError            (no usable HTTP response: refused, dropped, DNS, ...)
    │   ├── APITimeoutError
    │   └── IncompleteDownloadError   (the body ended before Content-Length bytes arrived)
    └── APIStatusError                (the service answered with an error status)
        ├── InvalidRequestError       400 / 409 / 422, InvalidParameter
        ├── AuthenticationError       401, invalid_api_key
        ├── PermissionDeniedError     403, AccessDenied
        ├── InsufficientBalanceError  Arrearage / insufficient_quota (any status)
        ├── NotFoundError             404
        ├── RateLimitError            429, limit_requests
        └── ServerError               >= 500

No exception carries the API key: the client scrubs it from every string field before raising, raises
with no chained exception (``__cause__`` and ``__context__`` are ``None``), and exceptions never hold the
request (whose headers contain it).

Every error says whether trying again may help (``retryable``) and how long the service asked to wait
(``retry_after``); this is the one definition of "transient" in the provider.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "DashScopeError",
    "IncompleteDownloadError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "LocalValidationError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "is_retryable_status",
]


class DashScopeError(Exception):
    """
    Base class of every error raised by the DashScope client.

    :param message: Human-readable description (never contains the API key).
    :param retryable: Whether the same request may succeed later; defaults to the class's rule:
        connection trouble (timeouts and cut-short downloads included), 408, 429 and >= 500 are
        retryable, everything else is not. The client passes the service's ``x-should-retry`` verdict.
    :param retry_after: Seconds the service asked to wait before trying again, if it said.
    """

    def __init__(
        self, message: str, *, retryable: bool | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable: bool = self._retryable_by_default() if retryable is None else retryable
        self.retry_after: float | None = retry_after

    def _retryable_by_default(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class LocalValidationError(DashScopeError, ValueError):
    """An argument was rejected locally, before any request was sent."""


class APIConnectionError(DashScopeError):
    """
    No usable response: the connection failed, was dropped, or the body was cut short.

    :param message: Description of the failure.
    :param method: HTTP method of the failed request.
    :param path: URL path of the failed request (no query string).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.method = method
        self.path = path

    def _retryable_by_default(self) -> bool:
        return True


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or pool)."""


class IncompleteDownloadError(APIConnectionError):
    """
    A streamed download ended before the announced ``Content-Length``.

    :param expected: Bytes announced by the server.
    :param received: Bytes actually received.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: int,
        received: int,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.expected = expected
        self.received = received


class APIStatusError(DashScopeError):
    """
    The service answered with an error status.

    :param message: The service's error message (API key scrubbed).
    :param status_code: HTTP status code.
    :param code: DashScope / OpenAI error code, e.g. ``invalid_api_key``, ``limit_requests``, ``Arrearage``.
    :param request_id: The service's request id, for support tickets.
    :param error_type: The error ``type`` field, if any.
    :param param: The offending parameter, if the service named one.
    :param retry_after: Seconds the service asked to wait (``Retry-After``), if it sent the header.
    :param retryable: Override of the status rule (408, 429 and >= 500 are retryable), e.g. from the
        service's ``x-should-retry`` header.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.status_code = status_code
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.code = code
        self.request_id = request_id
        self.error_type = error_type
        self.param = param

    def _retryable_by_default(self) -> bool:
        return is_retryable_status(self.status_code) and not isinstance(self, _NEVER_RETRIED)

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}"]
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(parts)})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )


class InvalidRequestError(APIStatusError):
    """The request was malformed or a parameter was invalid (400, 409, 422, ``InvalidParameter``)."""


class AuthenticationError(APIStatusError):
    """The API key was missing, wrong, or for another region (401, ``invalid_api_key``)."""


class PermissionDeniedError(APIStatusError):
    """The key may not perform this action or use this workspace (403, ``AccessDenied``)."""


class InsufficientBalanceError(APIStatusError):
    """The account is overdue or out of quota (``Arrearage``, ``insufficient_quota``); not retried."""


class NotFoundError(APIStatusError):
    """The file or batch does not exist, or is older than the service keeps (404)."""


class RateLimitError(APIStatusError):
    """Too many requests (429, ``limit_requests``); retried with backoff."""

    def _retryable_by_default(self) -> bool:
        return True


class ServerError(APIStatusError):
    """The service failed (>= 500); retried with backoff."""

    def _retryable_by_default(self) -> bool:
        return True


#: Errors a retry cannot fix whatever their status (e.g. an ``Arrearage`` sent with 429 or 500).
_NEVER_RETRIED = (
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)


def is_retryable_status(status_code: int) -> bool:
    """Whether an HTTP status may go away on its own: 408, 429 or >= 500."""
    return status_code in (408, 429) or status_code >= 500
