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

No exception carries the API key: the client scrubs it from every service message before raising, and
exceptions never hold the request (whose headers contain it).
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
]


class DashScopeError(Exception):
    """
    Base class of every error raised by the DashScope client.

    :param message: Human-readable description (never contains the API key).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

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

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.path = path


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
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.error_type = error_type
        self.param = param
        self.retry_after = retry_after

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


class ServerError(APIStatusError):
    """The service failed (>= 500); retried with backoff."""
