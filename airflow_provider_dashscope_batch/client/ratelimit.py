"""Client-side request budget: one token bucket per account limit, shared per (connection, process).

The service limits each main account per endpoint (the guide's table: batch create, retrieve and cancel
1000/min, batch list 100/min; the files API: upload 3/s, retrieve/list/delete/content 10/s). Every request a
client sends -- retries included -- first takes a token from the bucket of its kind (derived from method
and path), so the limit holds across all triggers, operators and retries of a connection in one process.

Each bucket holds at most ``burst`` (a tenth of the limit) tokens and refills at
``(limit - burst) / period`` less a 2 % headroom, so no window of one ``period`` ever sees more than
``limit`` requests. A 429 answer pauses the bucket for the ``Retry-After`` the service sent (the time its
window admits a request again), then the bucket goes on at the configured rate: a 429 that meets a window
another process filled costs one pause, not a slow climb back. Only a second 429 within one period after
a pause shows that the service grants less than the configured limit; the bucket then keeps to the number
of requests the service admitted in the last period, until ten periods without a 429 pass.

Several processes or triggerers sharing one account each take a fraction of it: the connection extra
``rate_share`` (e.g. ``0.25`` for four triggerers) scales every limit; ``rate_limits`` overrides single
limits in requests per minute, e.g. ``{"batch_list": 50}``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import anyio
import httpx

from airflow_provider_dashscope_batch.client._retry import parse_retry_after
from airflow_provider_dashscope_batch.client.errors import LocalValidationError

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "RateBudget",
    "RateLimit",
    "RequestKind",
    "TokenBucket",
    "parse_rate_limits",
    "rate_budget_for",
]

#: Pause after a 429 that carries no ``Retry-After``.
DEFAULT_PENALTY_SECONDS = 1.0
#: Share of each limit left unused, so requests reordered on the way (latency jitter) still fit the window.
HEADROOM = 0.02
#: Periods without a 429 after which a bucket that kept to a learned limit returns to the configured one.
FORGET_PERIODS = 10


class RequestKind(StrEnum):
    """The account limit a request counts against."""

    BATCH_CREATE = "batch_create"
    BATCH_RETRIEVE = "batch_retrieve"
    BATCH_LIST = "batch_list"
    BATCH_CANCEL = "batch_cancel"
    FILE_UPLOAD = "file_upload"
    FILE_READ = "file_read"

    @classmethod
    def of(cls, method: str, path: str) -> RequestKind | None:
        """The kind of ``method path`` (a URL path ending in ``/batches...`` or ``/files...``), if limited."""
        parts = path.rstrip("/").split("/")
        for index in range(len(parts) - 1, -1, -1):
            if parts[index] in ("batches", "files"):
                resource, rest = parts[index], parts[index + 1 :]
                break
        else:
            return None
        if resource == "files":
            return cls.FILE_UPLOAD if method == "POST" and not rest else cls.FILE_READ
        if not rest:
            return cls.BATCH_CREATE if method == "POST" else cls.BATCH_LIST
        if method == "POST" and rest[-1] == "cancel":
            return cls.BATCH_CANCEL
        return cls.BATCH_RETRIEVE


@dataclass(frozen=True)
class RateLimit:
    """
    ``limit`` requests per ``period`` seconds.

    :param limit: Requests allowed in any window of ``period`` seconds.
    :param period: Window length in seconds.
    """

    limit: float
    period: float = 60.0

    def __post_init__(self) -> None:
        if not (self.limit > 0 and self.period > 0 and math.isfinite(self.limit)):
            raise LocalValidationError(
                f"a rate limit must be positive and finite, got {self.limit}/{self.period}s"
            )

    def scaled(self, factor: float) -> RateLimit:
        """This limit times ``factor`` (same period)."""
        return replace(self, limit=self.limit * factor)


#: The documented account limits (main-account level).
DEFAULT_RATE_LIMITS: Mapping[RequestKind, RateLimit] = {
    RequestKind.BATCH_CREATE: RateLimit(1000),
    RequestKind.BATCH_RETRIEVE: RateLimit(1000),
    RequestKind.BATCH_LIST: RateLimit(100),
    RequestKind.BATCH_CANCEL: RateLimit(1000),
    RequestKind.FILE_UPLOAD: RateLimit(3, period=1.0),
    RequestKind.FILE_READ: RateLimit(10, period=1.0),
}


class TokenBucket:
    """
    A thread-safe token bucket that never lets more than ``limit`` requests into any ``period`` window.

    Callers *reserve* a token and are told how long to wait before sending; the wait itself is the
    caller's (``time.sleep`` or ``anyio.sleep``), so the bucket never blocks while holding its lock.

    :param rate_limit: The limit to keep.
    :param clock: Monotonic clock (seconds).
    """

    def __init__(self, rate_limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.penalties = 0
        self._sent: deque[float] = deque()  # send times of the grants of the last period
        self._refused: deque[float] = deque()  # times of the 429s of the last period
        self._resumed_at: float | None = None  # end of the last pause a 429 imposed
        self._configure(rate_limit)
        self._tokens = self.burst
        self._stamp = clock()

    def _configure(self, rate_limit: RateLimit, learned: RateLimit | None = None) -> None:
        self.rate_limit = rate_limit
        self.learned = learned
        keep = learned or rate_limit
        self.burst = max(1.0, math.floor(keep.limit / 10))
        refill = max(keep.limit - self.burst, keep.limit / 2) * (1 - HEADROOM)
        self.rate = refill / keep.period

    def reconfigure(self, rate_limit: RateLimit) -> None:
        """Switch to a new limit (e.g. the connection's extras changed)."""
        with self._lock:
            if rate_limit != self.rate_limit:
                self._refill(self._clock())
                self._configure(rate_limit)
                self._tokens = min(self._tokens, self.burst)

    def _refill(self, now: float) -> None:
        period = self.rate_limit.period
        quiet = now - self._resumed_at if self._resumed_at is not None else 0.0
        if self.learned is not None and quiet >= period * FORGET_PERIODS:  # trust the limit again
            self._configure(self.rate_limit)
        if now > self._stamp:  # a stamp in the future is the end of a pause
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        for times in (self._sent, self._refused):
            while times and times[0] <= now - period:
                times.popleft()

    def reserve(self) -> tuple[float, int]:
        """
        Take a token; return ``(seconds to wait before sending, penalty epoch)``.

        If a 429 arrives while the caller waits (the epoch moved), the caller reserves again.
        """
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1
            wait = max(self._stamp - now, 0.0) + (-self._tokens / self.rate if self._tokens < 0 else 0.0)
            self._sent.append(now + wait)
            return wait, self.penalties

    def available(self) -> float:
        """Tokens in the bucket now (negative: requests already waiting, or a pause still running)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            return self._tokens - max(self._stamp - now, 0.0) * self.rate

    def penalize(self, retry_after: float | None) -> None:
        """
        Record a 429: send nothing until ``retry_after`` (or a second) has passed, then go on at the rate.

        The service's window is full until then; every waiting caller reserves again (the epoch moves) and
        the first goes when the pause ends. A 429 that arrives during the pause was sent before it and
        only extends it. A 429 within one period after a pause means the limit is more than the service
        grants (another client shares the account, or the limit was set too high): the bucket then keeps
        to what the service admitted in the last period until ``FORGET_PERIODS`` quiet periods pass.
        """
        with self._lock:
            now = self._clock()
            self._refill(now)
            self.penalties += 1
            resumed = self._resumed_at
            if self._stamp <= now and resumed is not None and now - resumed < self.rate_limit.period:
                sent = sum(1 for t in self._sent if t <= now)  # the rest still wait to be sent
                admitted = max(sent - len(self._refused) - 1, 1)
                if admitted < (self.learned or self.rate_limit).limit:
                    self._configure(self.rate_limit, replace(self.rate_limit, limit=admitted))
            self._refused.append(now)
            pause = DEFAULT_PENALTY_SECONDS if retry_after is None else retry_after
            self._stamp = self._resumed_at = max(self._stamp, now + pause)
            self._tokens = 1.0  # every waiter reserves again; the window admits one when the pause ends


class RateBudget:
    """
    The buckets of one connection in this process, one per :class:`RequestKind`.

    :param limits: Limit per kind; kinds not given use :data:`DEFAULT_RATE_LIMITS`.
    :param clock: Monotonic clock (seconds).
    :param sleep: Blocking sleep of :meth:`wait` (with ``clock``, a simulated time base).
    """

    def __init__(
        self,
        limits: Mapping[RequestKind, RateLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sleep = sleep
        merged = {**DEFAULT_RATE_LIMITS, **(limits or {})}
        self.buckets: dict[RequestKind, TokenBucket] = {k: TokenBucket(v, clock) for k, v in merged.items()}

    def reconfigure(self, limits: Mapping[RequestKind, RateLimit]) -> None:
        """Apply new limits, keeping each bucket's state."""
        for kind, limit in {**DEFAULT_RATE_LIMITS, **limits}.items():
            self.buckets[kind].reconfigure(limit)

    def lists_first(self, reads: int) -> bool:
        """
        Whether a grouped status read of ``reads`` batches should use the list endpoint now.

        The list budget is a tenth of the retrieve budget: when it is spent but the retrieve budget covers
        the reads, spare retrieves answer instead of waiting for a list token.
        """
        return (
            self.buckets[RequestKind.BATCH_LIST].available() >= 1
            or self.buckets[RequestKind.BATCH_RETRIEVE].available() < reads
        )

    def bucket(self, request: httpx.Request) -> TokenBucket | None:
        """The bucket ``request`` draws from (``None`` for a path outside the limited API)."""
        kind = RequestKind.of(request.method, request.url.path)
        return None if kind is None else self.buckets[kind]

    def wait(self, request: httpx.Request) -> None:
        """Block until ``request`` may be sent."""
        bucket = self.bucket(request)
        while bucket is not None:
            delay, epoch = bucket.reserve()
            if delay <= 0:
                return
            self._sleep(delay)
            if bucket.penalties == epoch:
                return

    async def await_turn(self, request: httpx.Request) -> None:
        """Wait (without blocking the event loop) until ``request`` may be sent."""
        bucket = self.bucket(request)
        while bucket is not None:
            delay, epoch = bucket.reserve()
            if delay <= 0:
                return
            await anyio.sleep(delay)
            if bucket.penalties == epoch:
                return

    def observe(self, request: httpx.Request, response: httpx.Response) -> None:
        """Tighten the request's bucket if the service answered 429."""
        if response.status_code == 429 and (bucket := self.bucket(request)) is not None:
            bucket.penalize(parse_retry_after(response.headers))


def parse_rate_limits(rate_limits: Any = None, rate_share: Any = None) -> dict[RequestKind, RateLimit]:
    """
    Limits from a connection's extras.

    :param rate_limits: Mapping (or its JSON text) of :class:`RequestKind` value to requests per minute.
    :param rate_share: Fraction (0, 1] of every limit this process may use.
    :raises ValueError: on an unknown kind or a non-positive number.
    """
    if isinstance(rate_limits, str):
        try:
            rate_limits = json.loads(rate_limits) if rate_limits.strip() else None
        except ValueError:
            raise ValueError("rate_limits must be a JSON object of kind -> requests per minute") from None
    if rate_limits is not None and not isinstance(rate_limits, Mapping):
        raise ValueError("rate_limits must be a JSON object of kind -> requests per minute")
    limits = dict(DEFAULT_RATE_LIMITS)
    for name, value in (rate_limits or {}).items():
        try:
            kind = RequestKind(name)
        except ValueError:
            raise ValueError(
                f"unknown rate_limits kind {name!r}; use one of {', '.join(k.value for k in RequestKind)}"
            ) from None
        per_minute = _positive(value, f"rate_limits[{name!r}]")
        period = limits[kind].period
        limits[kind] = RateLimit(per_minute * period / 60.0, period)
    if rate_share not in (None, ""):
        share = _positive(rate_share, "rate_share")
        if share > 1:
            raise ValueError(f"rate_share must be within (0, 1], got {share}")
        limits = {kind: limit.scaled(share) for kind, limit in limits.items()}
    return limits


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return number


_budgets: dict[Hashable, RateBudget] = {}
_budgets_lock = threading.Lock()


def rate_budget_for(key: Hashable, limits: Mapping[RequestKind, RateLimit] | None = None) -> RateBudget:
    """
    The budget shared by every client of ``key`` (e.g. a connection id) in this process.

    The first call creates it; a later call with other ``limits`` reconfigures it in place.
    """
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = RateBudget(limits)
            return budget
    if limits is not None:
        budget.reconfigure(limits)
    return budget


def _forget_budgets() -> None:  # a forked child is another process with its own share
    global _budgets_lock
    _budgets.clear()
    _budgets_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_budgets)
