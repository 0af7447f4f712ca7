"""
Fault injection and request counting for the emulator, as one outermost ASGI middleware.

A fault either stands in for the service (the request is never handled: ``status``, ``drop``,
``latency`` before handling) or, with ``after_processing``, lets the service handle the request and then
delays, replaces, drops or cuts its answer -- the ambiguous failures after which a client cannot know
whether its create took effect. ``defer`` models a queueing gateway: the request is read, held, and
handled later even if the client has given up and disconnected by then.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import uuid
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/compatible-mode/v1"

FaultKind = Literal["status", "drop", "latency", "truncate", "defer"]

# DashScope-shaped (type, code, message) for the HTTP statuses the service is known to return.
ERROR_SHAPES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "InvalidParameter", "The request parameter is invalid."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. For details, see: "
        "https://help.aliyun.com/zh/model-studio/error-code#apikey-error",
    ),
    403: ("invalid_request_error", "AccessDenied", "Access denied."),
    404: ("invalid_request_error", "NotFound", "The requested resource was not found."),
    429: (
        "limit_requests",
        "limit_requests",
        "You have exceeded your current request limit. Please retry later.",
    ),
    500: ("internal_error", "InternalError", "An internal error has occurred, please try again later."),
    502: ("internal_error", "BadGateway", "Bad gateway."),
    503: ("internal_error", "ServiceUnavailable", "The service is temporarily unavailable."),
    504: ("internal_error", "GatewayTimeout", "The upstream request timed out."),
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
    echo: str | None = None,
):
    """
    Return the JSON body DashScope sends with an HTTP error, and its request id.

    :param echo: Text a header-echoing gateway quotes in every field (message, type, param, code,
        request id).
    """
    err_type, default_code, default_message = ERROR_SHAPES.get(
        status, ("invalid_request_error", "InvalidParameter", "Request failed.")
    )
    request_id = str(uuid.uuid4())
    if echo is not None:
        return {
            "error": {
                "message": f"{message or default_message} (echo: {echo})",
                "type": f"{err_type}: {echo}",
                "param": f"header {echo}",
                "code": f"{code or default_code}.{echo}",
            },
            "request_id": f"{request_id} {echo}",
        }
    return {
        "error": {
            "message": message or default_message,
            "type": err_type,
            "param": param,
            "code": code or default_code,
        },
        "request_id": request_id,
    }


class FaultRule(BaseModel):
    """
    One fault injection rule, matched against each API request.

    :param method: HTTP method to match, or ``*``.
    :param path: ``fnmatch`` pattern for the path below ``/compatible-mode/v1`` (``/batches/*``), or ``*``.
    :param kind: ``status`` (error response), ``drop`` (close the connection without a response),
        ``latency`` (delay, then serve normally), ``truncate`` (full ``Content-Length``, partial body) or
        ``defer`` (read the request, wait ``latency``, then handle it whether or not the client is still
        there; the answer goes to a client that is).
    :param status: HTTP status for ``status`` faults; 401 doubles as a rejected key.
    :param retry_after: ``Retry-After`` seconds sent with a 429 (or 503); ``None`` omits the header.
    :param latency: seconds to wait before handling (with ``after_processing``: after handling, before
        answering); applies to every kind.
    :param after_processing: handle the request first, then apply the fault to the answer: delay it
        (``latency``), replace it with an error (``status``), close the connection instead (``drop``) or
        cut it (``truncate``, which handles first anyway; this moves its ``latency`` after handling).
    :param echo_headers: act like a gateway that echoes request headers: a ``status`` error quotes the
        ``Authorization`` header in its message, type, code, param and request id, and in the response
        headers ``x-request-id`` and ``x-echo-authorization``.
    :param truncate_at: bytes of body sent before a ``truncate`` cut (default: half the body).
    :param count: how many times the rule fires before it retires; ``None`` fires forever.
    :param probability: chance (0..1) that a matching request fires the rule.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:12]}")
    method: str = "*"
    path: str = "*"
    kind: FaultKind = "status"
    status: int = Field(default=500, ge=400, le=599)
    retry_after: float | None = 1
    latency: float = Field(default=0.0, ge=0)
    truncate_at: int | None = Field(default=None, ge=0)
    after_processing: bool = False
    echo_headers: bool = False
    count: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0, le=1)
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request (before count/probability)."""
        return (self.method == "*" or self.method.upper() == method) and fnmatch.fnmatchcase(path, self.path)


class FaultRegistry:
    """Active fault rules and request counters, per route template and per concrete path."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self.counts: Counter[str] = Counter()
        #: the same requests per concrete path (``GET /batches/batch_1``): reads of one batch among many
        self.path_counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        #: How many times the registry was cleared: a request held across a reset is never handled.
        self.generation = 0

    def clear(self) -> None:
        """Remove every rule and reset the counters; requests a ``defer`` rule still holds are dropped."""
        self.rules.clear()
        self.clear_counts()
        self.generation += 1

    def clear_counts(self) -> None:
        """Zero both request counters."""
        self.counts.clear()
        self.path_counts.clear()

    def add(self, rule: FaultRule) -> FaultRule:
        """Register a rule and return it."""
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        """Remove a rule by id; return whether it existed."""
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def pick(self, method: str, path: str) -> FaultRule | None:
        """Return the first rule that fires for this request, consuming one of its counts."""
        for rule in self.rules:
            if not rule.matches(method, path):
                continue
            if rule.probability < 1 and self._random.random() >= rule.probability:
                continue
            rule.fired += 1
            if rule.count is not None and rule.fired >= rule.count:
                self.rules.remove(rule)
            return rule
        return None


async def _abort_connection(send: Send) -> bool:
    """Close the client's TCP connection under uvicorn without sending (the rest of) a response."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    for _ in range(20):
        if getattr(cycle, "disconnected", False):
            break
        await asyncio.sleep(0)
    cycle.disconnected = True
    return True


async def send_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    """Send a complete JSON response through a raw ASGI ``send``."""
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class FaultMiddleware:
    """
    Count every API request per route and apply the first matching :class:`FaultRule`.

    :param app: the Starlette application (its router resolves route templates for the counters).
    :param registry: rules and counters, shared with the admin routes.
    """

    def __init__(self, app: ASGIApp, router: Router, registry: FaultRegistry) -> None:
        self.app = app
        self.router = router
        self.registry = registry

    def _route_key(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', scope['path'])}"
        return f"{scope['method']} {scope['path']}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        key = self._route_key(scope)
        self.registry.counts[key.replace(API_PREFIX, "", 1)] += 1
        self.registry.path_counts[f"{scope['method']} {path.removeprefix(API_PREFIX)}"] += 1
        rule = self.registry.pick(scope["method"], path[len(API_PREFIX) :] or "/")
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.kind == "defer":
            await self._defer(rule, scope, receive, send)
        elif rule.after_processing:
            await self._answer_late(rule, scope, receive, send)
        else:
            if rule.latency:
                await asyncio.sleep(rule.latency)
            if rule.kind == "latency":
                await self.app(scope, receive, send)
            elif rule.kind == "truncate":
                await self.app(scope, receive, _Truncator(send, rule.truncate_at))
            else:
                await _fail(rule, scope, send)

    async def _defer(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole request, hold it ``latency`` seconds, then handle it (client there or not)."""
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the request never fully arrived: nothing to handle
            body.append(message)
            if not message.get("more_body", False):
                break
        generation = self.registry.generation
        await asyncio.sleep(rule.latency)
        if self.registry.generation != generation:
            return  # the emulator was reset meanwhile: the held request belongs to a world that is gone
        pending = iter(body)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)  # uvicorn drops what is sent to a client that has gone

    async def _answer_late(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle the request, then delay, replace, drop or cut the answer."""
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        if rule.latency:
            await asyncio.sleep(rule.latency)
        if rule.kind == "latency":
            for message in answer:
                await send(message)
        elif rule.kind == "truncate":
            cut = _Truncator(send, rule.truncate_at)
            for message in answer:
                await cut(message)
        else:
            await _fail(rule, scope, send)


async def _fail(rule: FaultRule, scope: Scope, send: Send) -> None:
    """Answer with the rule's error status, or drop the connection."""
    if rule.kind == "drop":
        if not await _abort_connection(send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
        return
    headers = {}
    if rule.retry_after is not None and rule.status in (429, 503):
        headers["retry-after"] = f"{rule.retry_after:g}"
    echo = None
    if rule.echo_headers:
        echo = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        headers["x-echo-authorization"] = echo
    body = error_body(rule.status, echo=echo)
    if echo is not None:
        headers["x-request-id"] = body["request_id"]
    await send_json(send, rule.status, body, headers)


class _Truncator:
    """A ``send`` wrapper passing the headers, then ``limit`` body bytes, then dropping the connection."""

    def __init__(self, send: Send, limit: int | None) -> None:
        self.send = send
        self.limit = limit
        self.sent = 0
        self.cut = False

    async def __call__(self, message: Message) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            if self.limit is None:
                length = dict(message.get("headers", [])).get(b"content-length")
                self.limit = int(length) // 2 if length else 0
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        room = self.limit - self.sent if self.limit is not None else len(body)
        if len(body) < room or (len(body) == room and message.get("more_body", False)):
            self.sent += len(body)
            await self.send(message)
            return
        if room > 0:
            await self.send({"type": "http.response.body", "body": body[:room], "more_body": True})
        self.cut = True
        await _abort_connection(self.send)
