"""The I/O-free core shared by the sync and async DashScope clients.

Every API call is written once, here, as a *flow*: a generator that yields steps and receives their
outcomes (the pattern of httpx's ``Auth.auth_flow``).

* :class:`Send` -- send this request; the driver sends back the :class:`httpx.Response` (body read,
  unless ``stream=True`` and the status is a success) or the :class:`httpx.TransportError` it raised.
* :class:`Sleep` -- wait this long; the driver sends back ``None``.
* :class:`Emit` -- items of an auto-paginating listing, handed to the caller's iterator.

A flow's return value is the call's result. :class:`~.sync.DashScopeClient` drives flows with
``httpx.Client`` and ``time.sleep``, :class:`~.async_.AsyncDashScopeClient` with ``httpx.AsyncClient``
and ``anyio.sleep``; neither holds any request-building, parsing, retry or pagination logic. Their API
is declared once, on :class:`ClientFace`, from the flows (whose signatures and docstrings the methods
take); a face writes only its driver and the streaming of downloads (into a ``Destination``).

Retries and duplicates
    GETs and DELETEs are retried on connection errors, timeouts, 408, 429 and >= 500 with exponential
    backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``, bounded by
    :attr:`RetryPolicy.max_retries` and :attr:`RetryPolicy.max_elapsed`. A POST that creates something is
    re-sent without a check only when the service cannot have acted on it (connection refused, 429). After
    an *ambiguous* failure (timeout, dropped connection, 408, >= 500) the flow looks for what the failed
    attempt may have created, identified by a token minted for this call -- the batch carrying the same
    ``metadata["idempotency_key"]``, or the file whose name carries the upload token -- repeatedly, for a
    recovery window (:attr:`RetryPolicy.recovery_window`), and returns it instead of creating a duplicate.
    If a re-send succeeds, a last search removes any other copy carrying the same token. A stream that
    cannot be rewound is never re-sent (but still recovered).

Secrets
    Every error the core builds has the API key scrubbed from all its string fields and is raised without
    a chained exception; ``KeyRedactingFilter`` scrubs it from ``httpx``/``httpcore`` log records.
"""

from __future__ import annotations

import email.utils
import functools
import inspect
import io
import logging
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar, overload
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
from airflow_provider_dashscope_batch.client.ratelimit import RateBudget
from airflow_provider_dashscope_batch.models import (
    Batch,
    BatchPage,
    BatchStatus,
    FileDeleted,
    FileObject,
    FilePage,
    Page,
)
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, WORKSPACE_HEADER

log = logging.getLogger("airflow_provider_dashscope_batch.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
ItemT = TypeVar("ItemT")
P = ParamSpec("P")
E = TypeVar("E", bound=BaseException)

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
IDEMPOTENCY_KEY = "idempotency_key"
USER_AGENT = f"airflow-provider-dashscope-batch/{__version__}"

#: Longest recovery window (see :attr:`RetryPolicy.recovery_window`) derived from a failed attempt.
MAX_RECOVERY_WINDOW = 300.0
UPLOAD_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
#: Loggers of the HTTP stack whose records may quote response headers (where a gateway can echo the key).
HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

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
#: A flow that hands the items of a paginated listing to the caller (``Emit`` steps) and returns nothing.
Listing = Generator[Send | Sleep | Emit[ItemT], Outcome, None]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A flow's result, once it has returned (see :func:`advance`)."""

    value: T


def advance(flow: Flow[T], outcome: Outcome = None, *, listing: bool = False) -> Step | Done[T]:
    """
    Send ``outcome`` (of the previous step) into ``flow``; return its next step, or :class:`Done`.

    What the faces' drivers share: they only perform the :class:`Send` and :class:`Sleep` steps (and hand
    a ``listing``'s :class:`Emit` items to the caller).
    """
    try:
        step = flow.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)
    if isinstance(step, Emit) and not listing:
        raise TypeError("a single-result flow emitted items")
    return step


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
    :param recovery_window: After an ambiguous failure of a create (upload, batch), keep looking for what
        the failed attempt created until this many seconds have passed since it was sent, before sending
        it again. ``None``: twice as long as the failed attempt was in flight (a timed-out request: twice
        the timeout), at most ``MAX_RECOVERY_WINDOW``. Looks are spaced like the backoff.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    max_elapsed: float = 300.0
    max_retry_after: float = 120.0
    recovery_window: float | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise LocalValidationError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= self.jitter <= 1:
            raise LocalValidationError(f"jitter must be within 0..1, got {self.jitter}")
        if self.recovery_window is not None and self.recovery_window < 0:
            raise LocalValidationError(f"recovery_window must be >= 0, got {self.recovery_window}")

    def recovery_deadline(self, sent: float, failed: float) -> float:
        """Monotonic time until which to look for what an attempt (sent, then failed, at these times) made."""
        window = self.recovery_window
        if window is None:
            window = min(2 * (failed - sent), MAX_RECOVERY_WINDOW)
        return sent + window

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


def _check_retries(max_retries: int) -> int:
    if not isinstance(max_retries, int) or max_retries < 0:
        raise LocalValidationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return max_retries


def _check_page_size(page_size: int | None, maximum: int) -> None:
    if page_size is not None and not 1 <= page_size <= maximum:
        raise LocalValidationError(f"page_size must be within 1..{maximum}, got {page_size}")


def _time_filters(create_after: TimeFilter | None, create_before: TimeFilter | None) -> dict[str, str | None]:
    return {
        "create_after": format_time_filter(create_after) if create_after is not None else None,
        "create_before": format_time_filter(create_before) if create_before is not None else None,
    }


def _join(values: str | Iterable[str] | None) -> str | None:
    if values is None:
        return None
    if isinstance(values, str):
        return values
    return ",".join(str(v.value if isinstance(v, BatchStatus) else v) for v in values)


# -------------------------------------------------------------------------------------------- uploads
def mint_upload_token() -> str:
    """A fresh token identifying one logical upload (carried in the uploaded file's name)."""
    return uuid.uuid4().hex


def tokenized_filename(filename: str, token: str) -> str:
    """
    ``filename`` with ``token`` before its extension: ``requests.jsonl`` -> ``requests.<token>.jsonl``.

    A name that already carries ``token`` as a dot-separated part is returned unchanged.
    """
    if not UPLOAD_TOKEN_PATTERN.fullmatch(token):
        raise LocalValidationError(f"upload_token must be 8..64 characters of [A-Za-z0-9_-], got {token!r}")
    if token in filename.split("."):
        return filename
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        return f"{filename}.{token}"
    return f"{stem}.{token}.{ext}"


class UploadSource:
    """
    A file to upload: a path (re-opened for every attempt) or a binary stream, under a name that carries
    the upload's token (see :func:`tokenized_filename`).

    httpx's multipart encoder streams file objects in 64 KiB chunks and seeks them to 0 before each
    attempt, so a path or seekable stream can be re-sent; a non-seekable stream is sent once,
    chunked, and never retried.

    :param file: Path or binary stream.
    :param filename: Name to upload under (before the token is added); the path's or stream's by default.
    :param token: Identity of this logical upload, stable across its retries; minted when ``None``.
    """

    def __init__(self, file: FileInput, filename: str | None, token: str | None = None) -> None:
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
        self.token = mint_upload_token() if token is None else token
        self.filename = tokenized_filename(self.filename, self.token)

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


# ------------------------------------------------------------------------------------------- secrets
class KeyRedactingFilter(logging.Filter):
    """
    Scrubs the API keys of this process's clients from the HTTP stack's log records.

    ``httpcore`` logs response headers at DEBUG; a gateway that echoes the ``Authorization`` header would
    otherwise put the key into the logs. Installed once on ``HTTP_LOGGERS`` by the first client.
    """

    _keys: ClassVar[frozenset[str]] = frozenset()
    _installed: ClassVar[bool] = False

    @classmethod
    def protect(cls, key: str) -> None:
        """Scrub ``key`` from now on (and install the filter on first use)."""
        cls._keys = cls._keys | {key}  # replaced, never mutated: records may be filtered in other threads
        if not cls._installed:
            cls._installed = True
            for name in HTTP_LOGGERS:
                logging.getLogger(name).addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        leaked = [key for key in self._keys if key in message]
        if leaked:
            for key in leaked:
                message = message.replace(key, "***")
            record.msg, record.args = message, None
        return True


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
        cleanup: Callable[[T], Flow[None]] | None = None,
        max_retries: int | None = None,
    ) -> Flow[T]:
        """
        Send a request with retries; return ``parse(response)`` of the first success.

        :param build: Builds the request of each attempt.
        :param parse: Turns the successful response into the result.
        :param idempotent: Whether re-sending after an ambiguous failure is harmless.
        :param replayable: Whether the body can be sent again at all.
        :param stream: Hand a successful response back unread (the caller closes it).
        :param recover: For a non-idempotent request: a flow that returns what an earlier attempt
            created (identified by a token of this call), or ``None``; run after an ambiguous failure,
            repeatedly for the recovery window, before re-sending. Without it, an ambiguous failure of a
            non-idempotent request is not retried.
        :param cleanup: Removes other copies of the result; run once a re-send after an ambiguous failure
            has succeeded (a failed attempt may have been acted on after the recovery window).
        :param max_retries: This call's retries, overriding the policy's (0: send once).
        """
        max_retries = self.retry.max_retries if max_retries is None else _check_retries(max_retries)
        started = self.monotonic()
        retry = 0
        uncertain = False
        while True:
            request = build()
            sent = self.monotonic()
            outcome = yield Send(request, stream)
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                result = parse(outcome)
                if uncertain and cleanup is not None:
                    yield from self.cleanup_flow(cleanup, result)
                return result
            if isinstance(outcome, httpx.Response):
                error: DashScopeError = self.error_from_response(outcome)
                ambiguous = outcome.status_code == 408 or outcome.status_code >= 500
                headers: httpx.Headers | None = outcome.headers
            else:
                assert isinstance(outcome, httpx.TransportError)
                error = self.error_from_transport(outcome, request)
                ambiguous = not _never_sent(outcome)
                headers = None
            failed = self.monotonic()
            recovering = ambiguous and not idempotent
            if recovering and recover is None:
                raise error
            delay = None
            if error.retryable and replayable and retry < max_retries:
                delay = self.retry.delay(retry, headers, self.rand)
                if delay is not None and failed - started + delay > self.retry.max_elapsed:
                    delay = None
            if delay is None and not recovering:
                raise error
            what = request.method, request.url.path, error
            if recovering:
                window = self.retry.recovery_deadline(sent, failed) - failed
                log.warning(
                    "DashScope %s %s failed (%s); looking for what it created for up to %.2fs, then %s",
                    *what,
                    max(window, delay or self.retry.initial_delay),
                    f"retry {retry + 1}/{max_retries}" if delay is not None else "giving up",
                )
            else:
                log.warning(
                    "DashScope %s %s failed (%s); retry %d/%d in %.2fs", *what, retry + 1, max_retries, delay
                )
            if recovering:
                assert recover is not None
                found = yield from self.recovery_flow(
                    recover, sent, failed, delay or self.retry.initial_delay
                )
                if found is not None:
                    log.warning(
                        "DashScope %s %s: the failed attempt had succeeded (%s); not re-sending",
                        request.method,
                        request.url.path,
                        getattr(found, "id", found),
                    )
                    return found
                if delay is None or self.monotonic() - started > self.retry.max_elapsed:
                    raise error
                uncertain = True
            else:
                yield Sleep(delay)
            retry += 1

    def recovery_flow(
        self, recover: Callable[[], Flow[T | None]], sent: float, failed: float, first_gap: float
    ) -> Flow[T | None]:
        """
        Look for what an ambiguous attempt created until its recovery window has passed.

        The first look is ``first_gap`` after the failure, further ones at doubling gaps (capped like the
        backoff), the last one at or after the end of the window.
        """
        deadline = self.retry.recovery_deadline(sent, failed)
        gap, clock = first_gap, failed
        while True:
            yield Sleep(gap)
            found = yield from recover()
            if found is not None:
                return found
            clock = max(clock + gap, self.monotonic())  # a sleep lasts at least its gap
            if clock >= deadline:
                return None
            gap = min(max(gap * 2, self.retry.initial_delay), self.retry.max_delay, deadline - clock)

    @staticmethod
    def cleanup_flow(cleanup: Callable[[T], Flow[None]], result: T) -> Flow[None]:
        """Run ``cleanup(result)``; its failure is logged, never raised (``result`` must not be lost)."""
        try:
            yield from cleanup(result)
        except DashScopeError as exc:
            log.warning(
                "DashScope: could not check for duplicates of %s: %s", getattr(result, "id", result), exc
            )

    def paginate_flow(
        self, path: str, params: dict[str, Any], model: type[Page[ItemT]], max_retries: int | None = None
    ) -> Listing[ItemT]:
        """Follow ``after`` cursors through every page, emitting each page's items."""
        cursor: str | None = None
        while True:
            query = {**params, "after": cursor}
            page = yield from self.request_flow(
                lambda q=query: self.build_request("GET", path, params=q),  # type: ignore[misc]
                lambda r: self.parse(r, model),
                max_retries=max_retries,
            )
            if page.data:
                yield Emit(page.data)
            next_cursor = page.last_id or (page.data[-1].id if page.data else None)
            if not page.has_more or not page.data or next_cursor is None:
                return
            if next_cursor == cursor:
                raise self.scrub(DashScopeError(f"GET {path}: pagination did not advance past {cursor!r}"))
            cursor = next_cursor

    def call_flow(self, method: str, path: str, model: type[M], *, max_retries: int | None = None) -> Flow[M]:
        """A request without a body that is safe to repeat (retried by the policy), parsed into ``model``."""
        return self.request_flow(
            lambda: self.build_request(method, path), lambda r: self.parse(r, model), max_retries=max_retries
        )

    # ------------------------------------------------------------------------------------- files
    def upload_file_flow(
        self,
        file: FileInput,
        *,
        filename: str | None = None,
        purpose: str = "batch",
        upload_token: str | None = None,
    ) -> Flow[FileObject]:
        """
        Upload a file, streamed from a path or a binary stream (``POST /files``).

        The file is stored under ``filename`` with the upload's token before the extension
        (``requests.jsonl`` -> ``requests.<token>.jsonl``), which identifies it after an ambiguous failure.
        A path or seekable stream is re-sent after a transient failure, but only once the file list,
        searched for that name during the recovery window, shows that the failed attempt did not store
        it; a non-seekable stream is sent once (and only recovered). Copies that the service stored late
        are deleted after a successful re-send.

        :param file: Path or binary stream (e.g. an ``ObjectStoragePath.open("rb")`` handle).
        :param filename: Name to upload under; defaults to the path's or stream's name.
        :param purpose: File purpose (``batch`` for batch input).
        :param upload_token: Identity of this logical upload (8..64 of ``[A-Za-z0-9_-]``); a fresh one
            when ``None``. Reuse one only to make separate calls the same upload.
        """
        source = UploadSource(file, filename, upload_token)
        with source.open() as handle:
            return (yield from self._upload_flow(handle, purpose))

    def _upload_flow(self, handle: UploadHandle, purpose: str) -> Flow[FileObject]:
        """
        Upload ``handle`` as multipart ``file`` + ``purpose``.

        ``handle.filename`` carries the upload's token. After an ambiguous failure the file list is
        searched for the file with exactly that name (its size and creation time must agree) before the
        upload is re-sent; after a successful re-send, other files with that name are deleted.
        """
        started = self.now()

        def build() -> httpx.Request:
            return self.build_request(
                "POST", "/files", files={"file": (handle.filename, handle.stream)}, data={"purpose": purpose}
            )

        def ours(f: FileObject) -> bool:
            return (
                f.filename == handle.filename
                and (handle.size is None or f.bytes == handle.size)
                and (f.created_at or 0) >= (started - CLOCK_SKEW).timestamp()
            )

        def listing() -> Listing[FileObject]:
            return self.list_files_flow(purpose=purpose, create_after=started - _FILTER_SLACK)

        def recover() -> Flow[FileObject | None]:
            return (yield from self.search_flow(listing(), ours))

        def cleanup(kept: FileObject) -> Flow[None]:
            for copy in (yield from self.collect_flow(listing(), lambda f: ours(f) and f.id != kept.id)):
                log.warning(
                    "DashScope upload %s: deleting file %s, a late copy of file %s",
                    handle.filename,
                    copy.id,
                    kept.id,
                )
                yield from self.delete_file_flow(copy.id)

        return (
            yield from self.request_flow(
                build,
                lambda r: self.parse(r, FileObject),
                idempotent=False,
                replayable=handle.replayable,
                recover=recover,
                cleanup=cleanup,
            )
        )

    def retrieve_file_flow(self, file_id: str) -> Flow[FileObject]:
        """
        Get a file's metadata (``GET /files/{id}``).

        :param file_id: The file id.
        """
        return self.call_flow("GET", f"/files/{_id(file_id)}", FileObject)

    def delete_file_flow(self, file_id: str) -> Flow[FileDeleted]:
        """
        Delete a file (``DELETE /files/{id}``; a retry after a lost response may see 404).

        :param file_id: The file id.
        """
        return self.call_flow("DELETE", f"/files/{_id(file_id)}", FileDeleted)

    def list_files_flow(
        self,
        *,
        purpose: str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> Listing[FileObject]:
        """
        Iterate over files (``GET /files``), fetching further pages as needed.

        :param purpose: Only files of this purpose (``batch``, ``batch_output``).
        :param create_after: Only files created after this time (datetime or service-format string).
        :param create_before: Only files created before this time.
        :param page_size: Files per request (1..2000).
        """
        _check_page_size(page_size, MAX_FILE_PAGE_SIZE)
        params = {"purpose": purpose, **_time_filters(create_after, create_before), "limit": page_size}
        return self.paginate_flow("/files", params, FilePage)

    def content_flow(self, file_id: str) -> Flow[httpx.Response]:
        """``GET /files/{id}/content``, streamed: returns the open response (the caller closes it)."""
        return self.request_flow(
            lambda: self.build_request("GET", f"/files/{_id(file_id)}/content"), lambda r: r, stream=True
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
        Create a batch (``POST /batches``).

        ``metadata["idempotency_key"]`` is set to ``idempotency_key`` (a fresh one when ``None``). After
        an ambiguous failure (timeout, dropped connection, 5xx) the batch list is searched for that key
        before the request is re-sent, so a retry never creates a second batch. Pass a stable key to make
        separate calls (e.g. task retries) idempotent too.

        :param input_file_id: Id of the uploaded JSONL file.
        :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test``.
        :param completion_window: ``"24h"`` .. ``"336h"`` / ``"14d"``, or a whole-hour timedelta.
        :param metadata: ``ds_name`` (<= 100 chars), ``ds_description`` (<= 200 chars),
            ``ds_batch_finish_callback`` (URL) and other string pairs.
        :param idempotency_key: Key identifying this creation across retries.
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
                cleanup=lambda kept: self.cancel_duplicates_flow(
                    idempotency_key=key, input_file_id=input_file_id, keep_batch_id=kept.id
                ),
            )
        )

    def find_batch_flow(
        self, *, idempotency_key: str, input_file_id: str, created_after: datetime | None = None
    ) -> Flow[Batch | None]:
        """
        Find the newest batch created for ``input_file_id`` with ``metadata["idempotency_key"]``, if any.

        :param idempotency_key: The key given to (or minted by) :meth:`create_batch`.
        :param input_file_id: The batch's input file id.
        :param created_after: Only batches created at or after this aware time (minus clock skew).
        """
        threshold = (created_after - CLOCK_SKEW).timestamp() if created_after is not None else None
        return (
            yield from self.search_flow(
                self._keyed_batches(input_file_id, created_after),
                lambda b: (
                    _carries_key(b, idempotency_key, input_file_id)
                    and (threshold is None or (b.created_at or 0) >= threshold)
                ),
            )
        )

    def cancel_duplicates_flow(
        self, *, idempotency_key: str, input_file_id: str, keep_batch_id: str
    ) -> Flow[list[Batch]]:
        """
        Cancel the unfinished batches of ``input_file_id`` with ``idempotency_key`` but ``keep_batch_id``.

        A create that the service acted on after the client gave up on it (past the recovery window)
        leaves a second batch with the same key; call this with the batch you kept (e.g. from a wait loop
        that already lists batches) to stop the duplicate before it runs (and bills) requests. Each cancel
        is logged as a warning naming both ids; a batch that finished meanwhile is skipped.

        :param idempotency_key: The key of the create.
        :param input_file_id: The batches' input file id.
        :param keep_batch_id: The batch to keep.
        :return: The cancelled batches, as the cancel returned them.
        """
        duplicates = yield from self.collect_flow(
            self._keyed_batches(input_file_id, None),
            lambda b: (
                _carries_key(b, idempotency_key, input_file_id)
                and b.id != keep_batch_id
                and not b.status.is_terminal
            ),
        )
        cancelled: list[Batch] = []
        for batch in duplicates:
            log.warning(
                "DashScope batch %s duplicates batch %s (idempotency key %s); cancelling it",
                batch.id,
                keep_batch_id,
                idempotency_key,
            )
            try:
                cancelled.append((yield from self.cancel_batch_flow(batch.id)))
            except (InvalidRequestError, NotFoundError) as exc:
                log.warning("DashScope batch %s could not be cancelled: %s", batch.id, exc)
        return cancelled

    def _keyed_batches(self, input_file_id: str, created_after: datetime | None) -> Listing[Batch]:
        """The batch listing narrowed to ``input_file_id`` (unless it is several ids) and a creation time."""
        return self.list_batches_flow(
            input_file_ids=[input_file_id] if "," not in input_file_id else None,
            create_after=created_after - _FILTER_SLACK if created_after is not None else None,
        )

    def retrieve_batch_flow(self, batch_id: str, *, max_retries: int | None = None) -> Flow[Batch]:
        """
        Get a batch (``GET /batches/{id}``; the service keeps batches of the last 30 days).

        :param batch_id: The batch id.
        :param max_retries: Retries of this call, overriding the client's (0: send once, e.g. when the
            caller owns the retries, like a poller).
        """
        return self.call_flow("GET", f"/batches/{_id(batch_id)}", Batch, max_retries=max_retries)

    def cancel_batch_flow(self, batch_id: str) -> Flow[Batch]:
        """
        Cancel a batch (``POST /batches/{id}/cancel``); it moves to ``cancelling`` and later ``cancelled``.

        Cancelling twice is harmless, so the request is retried like a read.

        :param batch_id: The batch id.
        """
        return self.call_flow("POST", f"/batches/{_id(batch_id)}/cancel", Batch)

    def list_batches_flow(
        self,
        *,
        ds_name: str | None = None,
        input_file_ids: Iterable[str] | str | None = None,
        status: Iterable[BatchStatus | str] | BatchStatus | str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
        max_retries: int | None = None,
    ) -> Listing[Batch]:
        """
        Iterate over batches (``GET /batches``), newest first, fetching further pages as needed.

        :param ds_name: Fuzzy match on the batch name.
        :param input_file_ids: Only batches of these input files (at most 20).
        :param status: Only batches in these statuses.
        :param create_after: Only batches created after this time (datetime -> ``yyyyMMddHHmmss``).
        :param create_before: Only batches created before this time.
        :param page_size: Batches per request (1..100).
        :param max_retries: Retries of each page's request, overriding the client's (0: send once).
        """
        _check_page_size(page_size, MAX_BATCH_PAGE_SIZE)
        ids = _join(input_file_ids)
        if ids is not None and len(ids.split(",")) > MAX_INPUT_FILE_IDS:
            raise LocalValidationError(f"input_file_ids accepts at most {MAX_INPUT_FILE_IDS} ids")
        params = {
            "ds_name": ds_name,
            "input_file_ids": ids,
            "status": status.value if isinstance(status, BatchStatus) else _join(status),
            **_time_filters(create_after, create_before),
            "limit": page_size,
        }
        return self.paginate_flow("/batches", params, BatchPage, max_retries)

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def search_flow(listing: Listing[ItemT], match: Callable[[ItemT], bool]) -> Flow[ItemT | None]:
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

    @classmethod
    def collect_flow(cls, listing: Listing[ItemT], match: Callable[[ItemT], bool]) -> Flow[list[ItemT]]:
        """Run a paginating ``listing`` to its end; return every item ``match`` accepts."""
        found: list[ItemT] = []

        def keep(item: ItemT) -> bool:
            if match(item):
                found.append(item)
            return False

        yield from cls.search_flow(listing, keep)
        return found


def _carries_key(batch: Batch, idempotency_key: str, input_file_id: str) -> bool:
    return (batch.metadata or {}).get(
        IDEMPOTENCY_KEY
    ) == idempotency_key and batch.input_file_id == input_file_id


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


def ambiguous_outcome(outcome: Outcome) -> bool:
    """Whether the service may have acted on a request that ended so (a timeout, a drop, 408, >= 500)."""
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 408 or outcome.status_code >= 500
    return isinstance(outcome, httpx.TransportError) and not _never_sent(outcome)


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


# ------------------------------------------------------------------------------------------- downloads
class Destination:
    """
    Where a download goes: a writable binary stream as it is, or a path.

    A path is written under a temporary name in the same directory and renamed when complete, so it never
    holds a partial download; :meth:`discard` removes the temporary file of a download that did not complete.
    Each face calls these methods its own way (the async one in a worker thread).

    :param dest: Destination path, or a writable binary stream (e.g. ``ObjectStoragePath.open("wb")``).
    """

    def __init__(self, dest: str | os.PathLike[str] | IO[bytes]) -> None:
        self.written = 0
        self.path: str | None = None
        self.part: str | None = None
        self._stream: IO[bytes] | None = None
        if isinstance(dest, (str, os.PathLike)):
            self.path = os.fspath(dest)
            name = f".{os.path.basename(self.path)}.{uuid.uuid4().hex}.part"
            self.part = os.path.join(os.path.dirname(self.path) or ".", name)
        else:
            self._stream = dest

    def open(self) -> None:
        """Create the temporary file of a path destination."""
        if self.part is not None:
            self._stream = open(self.part, "wb")  # noqa: SIM115 -- closed by commit() or discard()

    def write(self, chunk: bytes) -> None:
        """Write one chunk."""
        assert self._stream is not None
        self._stream.write(chunk)
        self.written += len(chunk)

    def commit(self) -> int:
        """Complete the download (rename the temporary file into place); return the bytes written."""
        if self.part is not None and self.path is not None:
            self._close()
            os.replace(self.part, self.path)
            self.part = None
        return self.written

    def discard(self) -> None:
        """Remove the temporary file of a download that did not complete (nothing after :meth:`commit`)."""
        if self.part is not None:
            self._close()
            with suppress(FileNotFoundError):
                os.unlink(self.part)
            self.part = None

    def _close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()


# ----------------------------------------------------------------------------------------------- faces
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class _FaceMethod:
    """
    One client method, declared once on :class:`ClientFace` from the core flow it drives.

    Each face gets a real method of its own kind (:meth:`method_for`): the sync face returns the flow's
    result, the async face awaits it; listings are iterators and async iterators. The flow's signature
    and docstring are the method's.
    """

    listing: ClassVar[bool] = False

    def __init__(self, flow: Callable[..., Any]) -> None:
        self.flow = flow

    def method_for(self, face: type[ClientFace[Any]]) -> Callable[..., Any]:
        """The method of this call on ``face`` (a :class:`ClientFace` subclass)."""
        flow, is_async = self.flow, issubclass(face.http_class, httpx.AsyncClient)
        driver = "_iterate" if self.listing else "_run"
        method: Callable[..., Any]
        if is_async and not self.listing:

            async def method(client: Any, *args: Any, **kwargs: Any) -> Any:
                return await client._run(flow(client._core, *args, **kwargs))

        else:

            def method(client: Any, *args: Any, **kwargs: Any) -> Any:
                return getattr(client, driver)(flow(client._core, *args, **kwargs))

        functools.update_wrapper(method, flow)
        name = flow.__name__.removesuffix("_flow")
        method.__name__, method.__qualname__ = name, f"{face.__name__}.{name}"
        method.__module__ = face.__module__
        flow_returns = re.fullmatch(r"\w+\[(.*)\]", flow.__annotations__["return"])
        assert flow_returns is not None
        returns = flow_returns.group(1)
        if self.listing:
            returns = f"{'AsyncIterator' if is_async else 'Iterator'}[{returns}]"
        method.__annotations__ = {**flow.__annotations__, "return": returns}
        method.__signature__ = inspect.signature(flow).replace(return_annotation=returns)  # type: ignore[attr-defined]
        return method


class FaceCall(_FaceMethod, Generic[P, T]):
    """A method returning the result of a core flow: ``T`` on the sync face, awaited on the async one."""

    def __init__(self, flow: Callable[Concatenate[ClientCore, P], Flow[T]]) -> None:
        super().__init__(flow)

    @overload
    def __get__(self, face: ClientFace[httpx.Client], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, face: ClientFace[httpx.AsyncClient], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, face: None, owner: type[Any]) -> Self: ...
    def __get__(self, face: Any, owner: type[Any]) -> Any:
        return self if face is None else self.method_for(owner).__get__(face, owner)


class FaceListing(_FaceMethod, Generic[P, ItemT]):
    """A method iterating a core listing flow: an iterator on the sync face, an async one on the other."""

    listing = True

    def __init__(self, flow: Callable[Concatenate[ClientCore, P], Listing[ItemT]]) -> None:
        super().__init__(flow)

    @overload
    def __get__(self, face: ClientFace[httpx.Client], owner: type[Any]) -> Callable[P, Iterator[ItemT]]: ...
    @overload
    def __get__(
        self, face: ClientFace[httpx.AsyncClient], owner: type[Any]
    ) -> Callable[P, AsyncIterator[ItemT]]: ...
    @overload
    def __get__(self, face: None, owner: type[Any]) -> Self: ...
    def __get__(self, face: Any, owner: type[Any]) -> Any:
        return self if face is None else self.method_for(owner).__get__(face, owner)


class ClientFace(Generic[HttpT]):
    """
    What the sync and async clients share: their constructor and their API, over a ``ClientCore``.

    Every API call is declared here once, from the core flow that implements it (its signature and
    docstring are the call's); each face turns it into a method of its own kind when it is defined. A
    face only drives the core's flows over its own ``httpx`` client (``http_class``) and streams
    downloads.
    """

    http_class: type[HttpT]

    upload_file = FaceCall(ClientCore.upload_file_flow)
    retrieve_file = FaceCall(ClientCore.retrieve_file_flow)
    list_files = FaceListing(ClientCore.list_files_flow)
    delete_file = FaceCall(ClientCore.delete_file_flow)
    create_batch = FaceCall(ClientCore.create_batch_flow)
    find_batch = FaceCall(ClientCore.find_batch_flow)
    cancel_duplicates = FaceCall(ClientCore.cancel_duplicates_flow)
    retrieve_batch = FaceCall(ClientCore.retrieve_batch_flow)
    list_batches = FaceListing(ClientCore.list_batches_flow)
    cancel_batch = FaceCall(ClientCore.cancel_batch_flow)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in vars(ClientFace).items():
            if isinstance(member, _FaceMethod) and name not in vars(cls):
                setattr(cls, name, member.method_for(cls))

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
        rate_budget: RateBudget | None = None,
    ) -> None:
        self.rate_budget = rate_budget or RateBudget()
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

    def _must_read(self, step: Send, response: httpx.Response) -> bool:
        """Note a response with the rate budget; whether its body is read now (not handed back streaming)."""
        self.rate_budget.observe(step.request, response)
        return not (step.stream and response.is_success)

    @property
    def base_url(self) -> str:
        """The compatible-mode base URL requests go to."""
        return self._core.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-request timeout (it sizes the window of a late-processed create, see ``ambiguity``)."""
        return self._core.timeout
