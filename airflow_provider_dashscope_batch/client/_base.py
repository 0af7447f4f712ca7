"""The I/O-free core shared by the sync and async DashScope clients.

Every API call is written once, here, as a *flow*: a generator that yields steps and receives their
outcomes (the pattern of httpx's ``Auth.auth_flow``).

* :class:`Send` -- send this request; the driver sends back the :class:`httpx.Response` (body read,
  unless ``stream=True`` and the status is a success) or the :class:`httpx.TransportError` it raised.
* :class:`Sleep` -- wait this long; the driver sends back ``None``.
* :class:`Emit` -- items of an auto-paginating listing, handed to the caller's iterator.

A flow's return value is the call's result. :class:`~.sync.DashScopeClient` drives flows with
``httpx.Client`` and ``time.sleep``, :class:`~.async_.AsyncDashScopeClient` with ``httpx.AsyncClient``
and ``anyio.sleep``; neither holds any request-building, parsing, retry or pagination logic.

Retries and duplicates
    GETs and DELETEs are retried on connection errors, timeouts, 408, 429 and >= 500 with exponential
    backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``, bounded by
    :attr:`RetryPolicy.max_retries` and :attr:`RetryPolicy.max_elapsed`. A POST that creates something is
    re-sent without a check only when the service cannot have acted on it (connection refused, 429). After
    an *ambiguous* failure (timeout, dropped connection, 408, >= 500) the flow first looks for what the
    first attempt may have created -- the batch carrying the same ``metadata["idempotency_key"]``, or a
    file with the same name and size created since the upload started -- and returns it instead of
    creating a duplicate. A stream that cannot be rewound is never re-sent.
"""

from __future__ import annotations

import email.utils
import io
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from airflow_provider_dashscope_batch import __version__
from airflow_provider_dashscope_batch.client.errors import (
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
from airflow_provider_dashscope_batch.models import (
    Batch,
    BatchPage,
    BatchStatus,
    FileDeleted,
    FileObject,
    FilePage,
)

log = logging.getLogger("airflow_provider_dashscope_batch.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

REGION_BASE_URLS: dict[str, str] = {
    "cn-beijing": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "ap-southeast-1": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
DEFAULT_BASE_URL = REGION_BASE_URLS["cn-beijing"]
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
IDEMPOTENCY_KEY = "idempotency_key"
WORKSPACE_HEADER = "X-DashScope-WorkSpace"
USER_AGENT = f"airflow-provider-dashscope-batch/{__version__}"

#: Slack for clock skew between this host and the service when matching ``created_at``.
CLOCK_SKEW = timedelta(minutes=10)
#: The list filters' date strings are in an unconfirmed time zone; widen them by a day, filter exactly here.
_FILTER_SLACK = timedelta(days=1)

MIN_COMPLETION_HOURS = 24
MAX_COMPLETION_HOURS = 336
METADATA_LIMITS = {"ds_name": 100, "ds_description": 200}
MAX_INPUT_FILE_IDS = 20
MAX_BATCH_PAGE_SIZE = 100
MAX_FILE_PAGE_SIZE = 2000

FileInput = str | os.PathLike[str] | IO[bytes]
TimeFilter = datetime | date | str


# --------------------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Send:
    """Step: send ``request``; with ``stream`` a successful response is handed back unread."""

    request: httpx.Request
    stream: bool = False


@dataclass(frozen=True)
class Sleep:
    """Step: sleep ``seconds`` before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[T]):
    """Step: hand ``items`` (one page of a listing) to the caller."""

    items: Sequence[T]


Step = Send | Sleep | Emit[Any]
Outcome = httpx.Response | httpx.TransportError | None
Flow = Generator[Step, Outcome, T]


# -------------------------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """
    How transient failures are retried.

    :param max_retries: Retries after the first attempt (0 disables retrying).
    :param initial_delay: Backoff before the first retry, doubled on every further retry.
    :param max_delay: Cap of the exponential backoff.
    :param jitter: Fraction (0..1) of the backoff randomly taken off, so clients do not retry in lockstep.
    :param max_elapsed: Total seconds one call may spend, retries included; no retry starts past it.
    :param max_retry_after: Longest ``Retry-After`` honoured; a longer one ends the call with the error.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    max_elapsed: float = 300.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise LocalValidationError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= self.jitter <= 1:
            raise LocalValidationError(f"jitter must be within 0..1, got {self.jitter}")

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``retry`` (0-based): exponential, capped, minus jitter."""
        delay = min(self.initial_delay * (2**retry), self.max_delay)
        return delay * (1 - self.jitter * rand())

    def delay(
        self, retry: int, headers: httpx.Headers | None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """
        Delay before retry number ``retry``, or ``None`` when the server asks for more than allowed.

        :param retry: 0-based retry number.
        :param headers: Headers of the failed response (``Retry-After``, ``retry-after-ms``), if any.
        """
        retry_after = parse_retry_after(headers) if headers is not None else None
        if retry_after is None:
            return self.backoff(retry, rand)
        if retry_after > self.max_retry_after:
            return None
        return retry_after


def parse_retry_after(headers: httpx.Headers, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


# ------------------------------------------------------------------------------------- local checks
def parse_completion_window(value: str | timedelta) -> str:
    """
    Normalise ``completion_window`` and check it against the service's 24h..336h range.

    :param value: ``"24h"``, ``"14d"`` (whole hours or days) or a whole-hour :class:`~datetime.timedelta`.
    :return: The wire value, e.g. ``"24h"`` or ``"14d"``.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds % 3600:
            raise LocalValidationError(f"completion_window must be whole hours, got {value}")
        hours, wire = int(seconds // 3600), f"{int(seconds // 3600)}h"
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([hHdD])\s*", value)
        if match is None:
            raise LocalValidationError(
                f"completion_window must be an integer followed by 'h' or 'd' (e.g. '24h', '14d'), "
                f"got {value!r}"
            )
        number, unit = int(match.group(1)), match.group(2).lower()
        hours, wire = number * (24 if unit == "d" else 1), f"{number}{unit}"
    else:
        raise LocalValidationError(
            f"completion_window must be a string like '24h' or a timedelta, got {type(value).__name__}"
        )
    if not MIN_COMPLETION_HOURS <= hours <= MAX_COMPLETION_HOURS:
        raise LocalValidationError(
            f"completion_window must be between {MIN_COMPLETION_HOURS}h and {MAX_COMPLETION_HOURS}h "
            f"(14d), got {hours}h"
        )
    return wire


def validate_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Check batch ``metadata``: string values, ``ds_name`` <= 100 and ``ds_description`` <= 200 chars."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise LocalValidationError(f"metadata must be a dict of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LocalValidationError(f"metadata keys and values must be strings, got {key!r}: {value!r}")
    for key, limit in METADATA_LIMITS.items():
        if key in metadata and len(metadata[key]) > limit:
            raise LocalValidationError(
                f"metadata[{key!r}] must be at most {limit} characters, got {len(metadata[key])}"
            )
    callback = metadata.get("ds_batch_finish_callback")
    if callback is not None and not re.match(r"https?://\S+$", callback):
        raise LocalValidationError(
            f"metadata['ds_batch_finish_callback'] must be an http(s) URL, got {callback!r}"
        )
    return dict(metadata)


def format_time_filter(value: TimeFilter) -> str:
    """
    Format a list filter time as ``yyyyMMddHHmmss``.

    Aware datetimes are converted to UTC; naive ones are sent as they are (the service's time zone for
    these filters is not documented); strings are passed through unchanged.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, date):
        return value.strftime("%Y%m%d000000")
    raise LocalValidationError(f"expected a datetime, date or string, got {type(value).__name__}")


def _check_page_size(page_size: int | None, maximum: int) -> None:
    if page_size is not None and not 1 <= page_size <= maximum:
        raise LocalValidationError(f"page_size must be within 1..{maximum}, got {page_size}")


def _join(values: str | Iterable[str] | None) -> str | None:
    if values is None:
        return None
    if isinstance(values, str):
        return values
    return ",".join(str(v.value if isinstance(v, BatchStatus) else v) for v in values)


# -------------------------------------------------------------------------------------------- uploads
class UploadSource:
    """
    A file to upload: a path (re-opened for every attempt) or a binary stream.

    httpx's multipart encoder streams file objects in 64 KiB chunks and seeks them to 0 before each
    attempt, so a path or seekable stream can be re-sent; a non-seekable stream is sent once,
    chunked, and never retried.
    """

    def __init__(self, file: FileInput, filename: str | None) -> None:
        if isinstance(file, (str, os.PathLike)):
            self.path: str | None = os.fspath(file)
            self.stream: IO[bytes] | None = None
            self.filename = filename or os.path.basename(self.path)
        elif hasattr(file, "read"):
            self.path = None
            self.stream = file
            name = getattr(file, "name", None)
            self.filename = filename or (os.path.basename(name) if isinstance(name, str) else None) or ""
        else:
            raise LocalValidationError(f"file must be a path or a binary stream, got {type(file).__name__}")
        if not self.filename:
            raise LocalValidationError("filename is required when uploading a stream without a name")

    @contextmanager
    def open(self) -> Iterator[UploadHandle]:
        """Open the source for the duration of the upload."""
        if self.path is not None:
            with open(self.path, "rb") as handle:
                yield UploadHandle(handle, self.filename, os.fstat(handle.fileno()).st_size, True)
        else:
            assert self.stream is not None
            size = _seekable_size(self.stream)
            if size is None:
                yield UploadHandle(_ReadOnly(self.stream), self.filename, None, False)
            else:
                yield UploadHandle(self.stream, self.filename, size, True)


@dataclass(frozen=True)
class UploadHandle:
    """An opened upload: the stream, its name, its size (if known) and whether it can be re-sent."""

    stream: IO[bytes] | _ReadOnly
    filename: str
    size: int | None
    replayable: bool


class _ReadOnly:
    """Exposes only ``read`` of a non-seekable stream, so httpx sends it chunked instead of trusting
    ``fstat`` (which reports 0 bytes for a pipe and makes httpx declare a wrong ``Content-Length``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.read = stream.read


def _seekable_size(stream: IO[bytes]) -> int | None:
    try:
        if not stream.seekable():
            return None
        offset = stream.tell()
        size = stream.seek(0, io.SEEK_END)
        stream.seek(offset)
        return size
    except (AttributeError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- core
class ClientCore:
    """
    Request building, response parsing, error mapping, retries and pagination -- no I/O.

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
        base_url: str = DEFAULT_BASE_URL,
        workspace: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise LocalValidationError("an API key is required (the connection's password)")
        if not base_url or not re.match(r"https?://", base_url):
            raise LocalValidationError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry or RetryPolicy()
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

    # ----------------------------------------------------------------------------------- responses
    def parse(self, response: httpx.Response, model: type[M]) -> M:
        """Parse a successful JSON response into ``model``."""
        try:
            return model.model_validate_json(response.content)
        except ValueError as exc:
            raise APIStatusError(
                self.redact(f"could not parse the response as {model.__name__}: {exc}"),
                status_code=response.status_code,
                request_id=_request_id_from_headers(response.headers),
            ) from None

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
        return cls(
            self.redact(str(message)),
            status_code=response.status_code,
            code=code,
            request_id=str(request_id) if request_id else None,
            error_type=str(error_type) if error_type else None,
            param=str(param) if param is not None else None,
            retry_after=parse_retry_after(response.headers),
        )

    def error_from_transport(self, exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
        """Map an httpx transport error to :class:`APITimeoutError` / :class:`APIConnectionError`."""
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        detail = self.redact(str(exc)) or type(exc).__name__
        return cls(
            f"{request.method} {request.url.path} failed: {type(exc).__name__}: {detail}",
            method=request.method,
            path=request.url.path,
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
        return IncompleteDownloadError(
            f"{request.method} {request.url.path}: download truncated, received {received} of "
            f"{expected} bytes",
            expected=expected,
            received=received,
            method=request.method,
            path=request.url.path,
        )

    def check_complete(self, response: httpx.Response) -> None:
        """Raise :class:`IncompleteDownloadError` if fewer bytes arrived than ``Content-Length`` announced."""
        expected = _content_length(response)
        if expected is not None and response.num_bytes_downloaded < expected:
            raise self.incomplete(response, expected)

    # ------------------------------------------------------------------------------------ retrying
    def request_flow(
        self,
        build: Callable[[], httpx.Request],
        parse: Callable[[httpx.Response], T],
        *,
        idempotent: bool = True,
        replayable: bool = True,
        stream: bool = False,
        recover: Callable[[], Flow[T | None]] | None = None,
    ) -> Flow[T]:
        """
        Send a request with retries; return ``parse(response)`` of the first success.

        :param build: Builds the request of each attempt.
        :param parse: Turns the successful response into the result.
        :param idempotent: Whether re-sending after an ambiguous failure is harmless.
        :param replayable: Whether the body can be sent again at all.
        :param stream: Hand a successful response back unread (the caller closes it).
        :param recover: For a non-idempotent request: a flow that returns what an earlier attempt
            created, or ``None``; run after an ambiguous failure before re-sending.
        """
        started = self.monotonic()
        retry = 0
        while True:
            request = build()
            outcome = yield Send(request, stream)
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return parse(outcome)
            if isinstance(outcome, httpx.Response):
                error: DashScopeError = self.error_from_response(outcome)
                retryable, ambiguous = _status_retry(outcome, error)
                headers: httpx.Headers | None = outcome.headers
            else:
                assert isinstance(outcome, httpx.TransportError)
                error = self.error_from_transport(outcome, request)
                retryable, ambiguous = True, not _never_sent(outcome)
                headers = None
            if not retryable or not replayable or retry >= self.retry.max_retries:
                raise error
            if ambiguous and not idempotent and recover is None:
                raise error
            delay = self.retry.delay(retry, headers, self.rand)
            if delay is None or self.monotonic() - started + delay > self.retry.max_elapsed:
                raise error
            log.warning(
                "DashScope %s %s failed (%s); retry %d/%d in %.2fs",
                request.method,
                request.url.path,
                error,
                retry + 1,
                self.retry.max_retries,
                delay,
            )
            yield Sleep(delay)
            retry += 1
            if ambiguous and not idempotent and recover is not None:
                found = yield from recover()
                if found is not None:
                    log.warning(
                        "DashScope %s %s: the failed attempt had succeeded; not re-sending",
                        request.method,
                        request.url.path,
                    )
                    return found

    def paginate_flow(
        self, path: str, params: dict[str, Any], model: type[BatchPage] | type[FilePage]
    ) -> Flow[None]:
        """Follow ``after`` cursors through every page, emitting each page's items."""
        cursor: str | None = None
        while True:
            query = {**params, "after": cursor}
            page = yield from self.request_flow(
                lambda q=query: self.build_request("GET", path, params=q),  # type: ignore[misc]
                lambda r: self.parse(r, model),
            )
            if page.data:
                yield Emit(page.data)
            next_cursor = page.last_id or (page.data[-1].id if page.data else None)
            if not page.has_more or not page.data or next_cursor is None:
                return
            if next_cursor == cursor:
                raise DashScopeError(f"GET {path}: pagination did not advance past {cursor!r}")
            cursor = next_cursor

    # ------------------------------------------------------------------------------------- files
    def upload_flow(self, handle: UploadHandle, purpose: str) -> Flow[FileObject]:
        """
        Upload ``handle`` as multipart ``file`` + ``purpose``.

        After an ambiguous failure the file list is searched for a file with the same name and size
        created since the upload started before the upload is re-sent.
        """
        started = self.now()

        def build() -> httpx.Request:
            return self.build_request(
                "POST", "/files", files={"file": (handle.filename, handle.stream)}, data={"purpose": purpose}
            )

        def recover() -> Flow[FileObject | None]:
            return (
                yield from self.search_flow(
                    self.list_files_flow(purpose=purpose, create_after=started - _FILTER_SLACK),
                    lambda f: (
                        f.filename == handle.filename
                        and f.bytes == handle.size
                        and (f.created_at or 0) >= (started - CLOCK_SKEW).timestamp()
                    ),
                )
            )

        return (
            yield from self.request_flow(
                build,
                lambda r: self.parse(r, FileObject),
                idempotent=False,
                replayable=handle.replayable,
                recover=recover if handle.size is not None else None,
            )
        )

    def retrieve_file_flow(self, file_id: str) -> Flow[FileObject]:
        """``GET /files/{id}``."""
        return (
            yield from self.request_flow(
                lambda: self.build_request("GET", f"/files/{_id(file_id)}"),
                lambda r: self.parse(r, FileObject),
            )
        )

    def delete_file_flow(self, file_id: str) -> Flow[FileDeleted]:
        """``DELETE /files/{id}`` (idempotent: a retry after a lost response may see 404)."""
        return (
            yield from self.request_flow(
                lambda: self.build_request("DELETE", f"/files/{_id(file_id)}"),
                lambda r: self.parse(r, FileDeleted),
            )
        )

    def list_files_flow(
        self,
        *,
        purpose: str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> Flow[None]:
        """``GET /files``, every page."""
        _check_page_size(page_size, MAX_FILE_PAGE_SIZE)
        params = {
            "purpose": purpose,
            "create_after": format_time_filter(create_after) if create_after is not None else None,
            "create_before": format_time_filter(create_before) if create_before is not None else None,
            "limit": page_size,
        }
        return (yield from self.paginate_flow("/files", params, FilePage))

    def content_flow(self, file_id: str) -> Flow[httpx.Response]:
        """``GET /files/{id}/content``, streamed: returns the open response (the caller closes it)."""
        return (
            yield from self.request_flow(
                lambda: self.build_request("GET", f"/files/{_id(file_id)}/content", params=None),
                lambda r: r,
                stream=True,
            )
        )

    # ----------------------------------------------------------------------------------- batches
    def create_batch_flow(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Flow[Batch]:
        """
        ``POST /batches`` carrying ``metadata["idempotency_key"]``.

        After an ambiguous failure :meth:`find_batch_flow` looks for the batch the failed attempt may
        have created before the request is re-sent, so a retry never creates a second batch.
        """
        if not input_file_id:
            raise LocalValidationError("input_file_id is required")
        if not endpoint or not endpoint.startswith("/"):
            raise LocalValidationError(
                f"endpoint must be a path such as '/v1/chat/completions', got {endpoint!r}"
            )
        meta = validate_metadata(metadata)
        existing = meta.get(IDEMPOTENCY_KEY)
        if existing is not None and idempotency_key is not None and existing != idempotency_key:
            raise LocalValidationError(
                "metadata['idempotency_key'] and idempotency_key differ; pass only one of them"
            )
        key = idempotency_key or existing or uuid.uuid4().hex
        meta[IDEMPOTENCY_KEY] = key
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": parse_completion_window(completion_window),
            "metadata": meta,
        }
        started = self.now()
        return (
            yield from self.request_flow(
                lambda: self.build_request("POST", "/batches", json=body),
                lambda r: self.parse(r, Batch),
                idempotent=False,
                recover=lambda: self.find_batch_flow(
                    idempotency_key=key, input_file_id=input_file_id, created_after=started
                ),
            )
        )

    def find_batch_flow(
        self, *, idempotency_key: str, input_file_id: str, created_after: datetime | None = None
    ) -> Flow[Batch | None]:
        """
        The newest batch of ``input_file_id`` whose ``metadata["idempotency_key"]`` matches, or ``None``.

        :param created_after: Only consider batches created at or after this (aware) time, minus a
            10-minute clock-skew allowance.
        """
        threshold = (created_after - CLOCK_SKEW).timestamp() if created_after is not None else None
        ids = [input_file_id] if "," not in input_file_id else None
        return (
            yield from self.search_flow(
                self.list_batches_flow(
                    input_file_ids=ids,
                    create_after=created_after - _FILTER_SLACK if created_after is not None else None,
                ),
                lambda b: (
                    (b.metadata or {}).get(IDEMPOTENCY_KEY) == idempotency_key
                    and b.input_file_id == input_file_id
                    and (threshold is None or (b.created_at or 0) >= threshold)
                ),
            )
        )

    def retrieve_batch_flow(self, batch_id: str) -> Flow[Batch]:
        """``GET /batches/{id}``."""
        return (
            yield from self.request_flow(
                lambda: self.build_request("GET", f"/batches/{_id(batch_id)}"),
                lambda r: self.parse(r, Batch),
            )
        )

    def cancel_batch_flow(self, batch_id: str) -> Flow[Batch]:
        """``POST /batches/{id}/cancel`` (idempotent: cancelling twice is harmless)."""
        return (
            yield from self.request_flow(
                lambda: self.build_request("POST", f"/batches/{_id(batch_id)}/cancel"),
                lambda r: self.parse(r, Batch),
            )
        )

    def list_batches_flow(
        self,
        *,
        ds_name: str | None = None,
        input_file_ids: Iterable[str] | str | None = None,
        status: Iterable[BatchStatus | str] | BatchStatus | str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> Flow[None]:
        """``GET /batches`` with the documented filters, every page (newest first)."""
        _check_page_size(page_size, MAX_BATCH_PAGE_SIZE)
        ids = _join(input_file_ids)
        if ids is not None and len(ids.split(",")) > MAX_INPUT_FILE_IDS:
            raise LocalValidationError(f"input_file_ids accepts at most {MAX_INPUT_FILE_IDS} ids")
        params = {
            "ds_name": ds_name,
            "input_file_ids": ids,
            "status": status.value if isinstance(status, BatchStatus) else _join(status),
            "create_after": format_time_filter(create_after) if create_after is not None else None,
            "create_before": format_time_filter(create_before) if create_before is not None else None,
            "limit": page_size,
        }
        return (yield from self.paginate_flow("/batches", params, BatchPage))

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def search_flow(listing: Flow[None], match: Callable[[Any], bool]) -> Flow[Any]:
        """Run a paginating ``listing`` until ``match`` accepts an item; return it (or ``None``)."""
        try:
            step = next(listing)
            while True:
                if isinstance(step, Emit):
                    for item in step.items:
                        if match(item):
                            return item
                    outcome: Outcome = None
                else:
                    outcome = yield step
                step = listing.send(outcome)
        except StopIteration:
            return None
        finally:
            listing.close()


def _id(value: str) -> str:
    if not value or not isinstance(value, str):
        raise LocalValidationError(f"an id is required, got {value!r}")
    return quote(value, safe="")


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


def _never_sent(exc: httpx.TransportError) -> bool:
    """Whether the request certainly never reached the service (so re-sending cannot duplicate)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _status_retry(response: httpx.Response, error: DashScopeError) -> tuple[bool, bool]:
    """``(retryable, ambiguous)`` for an error response; ``x-should-retry`` overrides retryable."""
    status = response.status_code
    ambiguous = status == 408 or status >= 500
    retryable = isinstance(error, (RateLimitError, ServerError)) or status == 408
    override = response.headers.get("x-should-retry")
    if override == "true":
        retryable = not isinstance(error, (InsufficientBalanceError, AuthenticationError))
    elif override == "false":
        retryable = False
    return retryable, ambiguous


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


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class ClientFace(Generic[HttpT]):
    """
    What the sync and async clients share: their constructor, over a ``ClientCore``.

    A face only drives the core's flows over its own ``httpx`` client (``http_class``).
    """

    http_class: type[HttpT]

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        workspace: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: HttpT | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._core = ClientCore(
            api_key=api_key,
            base_url=base_url,
            workspace=workspace,
            timeout=timeout,
            retry=retry_policy or RetryPolicy(max_retries=max_retries),
        )
        self._owns_http = http_client is None
        self._http: HttpT = http_client or self.http_class(timeout=self._core.timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._core.base_url!r}, workspace={self._core.workspace!r})"

    @property
    def base_url(self) -> str:
        """The compatible-mode base URL requests go to."""
        return self._core.base_url
