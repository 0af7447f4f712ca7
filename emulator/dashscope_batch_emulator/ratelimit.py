"""The service's per-account rate limits, enforced by the emulator when switched on (off by default).

Each limited route counts its admitted requests in a sliding window; a request that would make more than
``limit`` in any ``period`` is answered 429 ``limit_requests`` with a ``Retry-After`` of the seconds until
the window admits one again. Switch it on with ``PUT /_emulator/rate-limits`` (or ``--rate-limits``);
``period_scale`` shrinks every window for time-scaled runs (``0.1``: a "minute" of 6 s).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from dashscope_batch_emulator.faults import API_PREFIX, error_body, send_json

__all__ = ["DEFAULT_LIMITS", "RateLimitMiddleware", "RateLimitSettings", "RateLimiter", "route_kind"]

LimitKind = Literal[
    "batch_create", "batch_retrieve", "batch_list", "batch_cancel", "file_upload", "file_read"
]

#: The guide's table (batch endpoints, per minute) and the files API notes (per second).
DEFAULT_LIMITS: Mapping[str, tuple[float, float]] = {
    "batch_create": (1000, 60.0),
    "batch_retrieve": (1000, 60.0),
    "batch_list": (100, 60.0),
    "batch_cancel": (1000, 60.0),
    "file_upload": (3, 1.0),
    "file_read": (10, 1.0),
}

_ID = r"[^/]+"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/batches"), "batch_create"),
    ("GET", re.compile(r"/batches"), "batch_list"),
    ("GET", re.compile(rf"/batches/{_ID}"), "batch_retrieve"),
    ("POST", re.compile(rf"/batches/{_ID}/cancel"), "batch_cancel"),
    ("POST", re.compile(r"/files"), "file_upload"),
    ("GET", re.compile(r"/files"), "file_read"),
    ("GET", re.compile(rf"/files/{_ID}(/content)?"), "file_read"),
    ("DELETE", re.compile(rf"/files/{_ID}"), "file_read"),
)


def route_kind(method: str, path: str) -> str | None:
    """The limit a request to ``path`` (below the API prefix) counts against, if any."""
    for route_method, pattern, kind in _ROUTES:
        if method == route_method and pattern.fullmatch(path):
            return kind
    return None


class RateLimitSettings(BaseModel):
    """
    Body of ``PUT /_emulator/rate-limits``.

    :param limits: Requests per minute per kind, overriding :data:`DEFAULT_LIMITS` (the files kinds keep
        their one-second window: ``{"file_read": 300}`` means 5 per second).
    :param period_scale: Factor applied to every window and to the limits' time base.
    """

    model_config = ConfigDict(extra="forbid")

    limits: dict[LimitKind, float] = Field(default_factory=dict)
    period_scale: float = 1.0

    @field_validator("period_scale")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("period_scale must be positive")
        return value


class RateLimiter:
    """
    Sliding-window counters per limit kind.

    :param initial: Settings to start with and to return to on :meth:`reset`; ``None``: no limits.
    :param clock: Monotonic clock (seconds).
    """

    def __init__(
        self, initial: RateLimitSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.initial = initial
        self.configure(initial)

    def reset(self) -> None:
        """Return to the initial settings with fresh counters."""
        self.configure(self.initial)

    def configure(self, settings: RateLimitSettings | None) -> None:
        """Switch limits on with ``settings``, or off with ``None``; counters restart either way."""
        self.enabled = settings is not None
        self.windows: dict[str, tuple[float, float]] = {}
        if settings is not None:
            for kind, (limit, period) in DEFAULT_LIMITS.items():
                if kind in settings.limits:
                    limit = settings.limits[kind] * period / 60.0
                self.windows[kind] = (limit, period * settings.period_scale)
        self._admitted: dict[str, deque[float]] = {kind: deque() for kind in self.windows}
        self.admitted: dict[str, int] = dict.fromkeys(self.windows, 0)
        self.rejected: dict[str, int] = dict.fromkeys(self.windows, 0)

    def admit(self, method: str, path: str) -> float | None:
        """Count a request; return ``None`` to serve it or the ``Retry-After`` seconds to refuse it."""
        kind = route_kind(method, path) if self.enabled else None
        if kind is None:
            return None
        limit, period = self.windows[kind]
        now = self._clock()
        stamps = self._admitted[kind]
        while stamps and stamps[0] <= now - period:
            stamps.popleft()
        if len(stamps) + 1 > limit:
            self.rejected[kind] += 1
            oldest = stamps[len(stamps) - math.floor(limit)] if len(stamps) >= limit >= 1 else now
            return max(oldest + period - now, 0.001)
        stamps.append(now)
        self.admitted[kind] += 1
        return None

    def report(self) -> dict[str, Any]:
        """Settings and counters, for the admin API."""
        return {
            "enabled": self.enabled,
            "windows": {k: {"limit": limit, "period": period} for k, (limit, period) in self.windows.items()},
            "admitted": dict(self.admitted),
            "rejected": dict(self.rejected),
        }


class RateLimitMiddleware:
    """
    Answer 429 ``limit_requests`` (with ``Retry-After``) to API requests over the limiter's budget.

    :param app: The application behind it.
    :param limiter: The shared :class:`RateLimiter`.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and self.limiter.enabled and path.startswith(API_PREFIX):
            wait = self.limiter.admit(scope["method"], path[len(API_PREFIX) :] or "/")
            if wait is not None:
                await send_json(
                    send, 429, error_body(429), {"retry-after": f"{math.ceil(wait * 1000) / 1000:g}"}
                )
                return
        await self.app(scope, receive, send)
