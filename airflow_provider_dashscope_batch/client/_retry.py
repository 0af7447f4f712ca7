"""How transient failures are retried: the :class:`RetryPolicy` and the server's ``Retry-After``.

The policy only computes delays and windows; :func:`~._request.request_flow` applies it to a call, and
the rate budget (:mod:`~airflow_provider_dashscope_batch.client.ratelimit`) reads ``Retry-After`` of a
429 through :func:`parse_retry_after`.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from airflow_provider_dashscope_batch.client.errors import LocalValidationError

DEFAULT_MAX_RETRIES = 5
#: Longest recovery window (see :attr:`RetryPolicy.recovery_window`) derived from a failed attempt.
MAX_RECOVERY_WINDOW = 300.0


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
