"""
Starlette application emulating the DashScope OpenAI-compatible Files and Batches API.

The route handlers are split by resource: ``/files`` in
:mod:`~dashscope_batch_emulator.files_api`, ``/batches`` in
:mod:`~dashscope_batch_emulator.batches_api`; this module holds the plumbing
(authorization, error answers), the engine ticker, the finish notifications and the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from dashscope_batch_emulator.batches_api import (
    BATCH_STATUSES,
    BatchesApi,
    parse_completion_window,
)
from dashscope_batch_emulator.faults import (
    API_PREFIX,
    FaultMiddleware,
    FaultRegistry,
    FaultRule,
    error_body,
)
from dashscope_batch_emulator.files_api import FilesApi
from dashscope_batch_emulator.params import ApiError, error_response, read_json
from dashscope_batch_emulator.ratelimit import (
    RateLimiter,
    RateLimitMiddleware,
    RateLimitSettings,
)
from dashscope_batch_emulator.state import BatchRecord, Emulator, EmulatorConfig

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator"
TICK_SECONDS = 0.02

__all__ = [
    "ADMIN_PREFIX",
    "BATCH_STATUSES",
    "TICK_SECONDS",
    "ApiError",
    "EmulatorApi",
    "create_app",
    "eventbridge_event",
    "parse_completion_window",
]


class EmulatorApi(FilesApi, BatchesApi):
    """
    Route handlers over one :class:`Emulator` and one :class:`FaultRegistry`.

    :param emulator: the emulated service state.
    :param faults: fault rules and request counters.
    :param api_key: the only accepted key; ``None`` accepts any non-empty Bearer key.
    :param rate_limits: account rate limits to enforce from the start (off when ``None``).
    """

    def __init__(
        self,
        emulator: Emulator,
        faults: FaultRegistry,
        api_key: str | None,
        rate_limits: RateLimitSettings | None = None,
    ) -> None:
        self.emulator = emulator
        self.faults = faults
        self.api_key = api_key
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._engine_lock = asyncio.Lock()
        self.rate_limiter = RateLimiter(rate_limits)

    # Plumbing ----------------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>'.")
        if self.api_key is not None and not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(401, error_body(401)["error"]["message"])

    def api(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.message, code=exc.code, param=exc.param)

        return endpoint

    # Engine and callbacks ----------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Validate due batches (in a worker thread) and run the engine until no due work is left."""
        async with self._engine_lock:
            for batch, record in self.emulator.due_validations():
                report = await asyncio.to_thread(self.emulator.check_input, record, batch.endpoint)
                self.emulator.apply_validation(batch, report)
                if batch.status == "failed":
                    self._notify(batch)
            while True:
                pending, finished = self.emulator.step()
                for batch in finished:
                    self._notify(batch)
                if not pending:
                    return
                await asyncio.sleep(0)

    def _notify(self, batch: BatchRecord) -> None:
        """Send the finish callback and the EventBridge event as configured (delay, repeats, drops)."""
        config, payload = self.emulator.config, batch.to_api()
        posts: list[tuple[str, dict[str, Any], str]] = []
        url = (batch.metadata or {}).get("ds_batch_finish_callback")
        if url:
            posts += [(url, payload, "callback")] * config.callback_deliveries
        if config.eventbridge_target:
            posts += [(config.eventbridge_target, eventbridge_event(payload), "eventbridge")]
        for target, body, kind in posts:
            delay = config.callback_delay + _CALLBACK_RNG.uniform(0, config.callback_delay_jitter)
            task = asyncio.create_task(self._deliver(target, body, kind, payload, delay))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    async def _deliver(
        self, url: str, body: dict[str, Any], kind: str, batch: dict[str, Any], delay: float
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        entry: dict[str, Any] = {"batch_id": batch["id"], "url": url, "status": batch["status"], "kind": kind}
        entry["sent_at"] = time.time()
        try:
            assert self._http is not None
            response = await self._http.post(url, json=body)
            entry["status_code"] = response.status_code
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        self.emulator.callbacks.append(entry)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._http = httpx.AsyncClient(timeout=10.0)

        async def ticker() -> None:
            while True:
                try:
                    await self.catch_up()
                except Exception:
                    log.exception("DashScope emulator engine step failed")
                await asyncio.sleep(TICK_SECONDS)

        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()
            for pending in list(self._callback_tasks):
                pending.cancel()
            await self._http.aclose()
            self.emulator.close()

    # Admin -------------------------------------------------------------------------------------------

    async def admin_health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "api_base": API_PREFIX})

    async def admin_reset(self, _request: Request) -> Response:
        async with self._engine_lock:
            for task in list(self._callback_tasks):
                task.cancel()
            self.emulator.reset()
            self.faults.clear()
            self.rate_limiter.reset()
        return JSONResponse({"reset": True})

    async def admin_config(self, request: Request) -> Response:
        if request.method == "PATCH":
            try:
                self.emulator.configure(**await read_json(request))
            except (ValidationError, re.error, TypeError) as exc:
                raise ApiError(400, f"Invalid emulator configuration: {exc}") from None
        return JSONResponse(self.emulator.config.model_dump())

    async def admin_clock(self, _request: Request) -> Response:
        return JSONResponse({"now": self.emulator.now(), "time_scale": self.emulator.clock.time_scale})

    async def admin_advance(self, request: Request) -> Response:
        seconds = (await read_json(request)).get("seconds", 0)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ApiError(400, "seconds must be a non-negative number.", param="seconds")
        self.emulator.clock.advance(float(seconds))
        await self.catch_up()
        return await self.admin_clock(request)

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                rule = self.faults.add(FaultRule.model_validate(await read_json(request)))
            except ValidationError as exc:
                raise ApiError(400, f"Invalid fault rule: {exc}") from None
            return JSONResponse(rule.model_dump())
        if request.method == "DELETE":
            self.faults.rules.clear()
        return JSONResponse({"faults": [r.model_dump() for r in self.faults.rules]})

    async def admin_fault(self, request: Request) -> Response:
        if not self.faults.remove(request.path_params["fault_id"]):
            raise ApiError(404, "No such fault rule.", param="fault_id")
        return JSONResponse({"deleted": True})

    async def admin_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear_counts()
        per_path = request.query_params.get("per") == "path"
        return JSONResponse({"counts": dict(self.faults.path_counts if per_path else self.faults.counts)})

    async def admin_rate_limits(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                self.rate_limiter.configure(RateLimitSettings.model_validate(await read_json(request)))
            except ValidationError as exc:
                raise ApiError(400, f"Invalid rate limits: {exc}") from None
        elif request.method == "DELETE":
            self.rate_limiter.configure(None)
        return JSONResponse(self.rate_limiter.report())

    async def admin_callbacks(self, _request: Request) -> Response:
        return JSONResponse({"callbacks": list(self.emulator.callbacks)})

    def admin(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.message, code=exc.code, param=exc.param)

        return endpoint


async def _http_exception(_request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(status, str(getattr(exc, "detail", "")) or None)


#: Jitter of notification delays (not seeded: only the order of late notifications depends on it).
_CALLBACK_RNG = random.Random()
#: The Alibaba Cloud account id in emulated EventBridge events.
_ACCOUNT_ID = "1234567890123456"


def eventbridge_event(batch: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 envelope EventBridge delivers for a batch finish (the batch in ``data``)."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "acs.dashscope",
        "type": "dashscope:System:BatchTaskFinish",
        "subject": f"acs.dashscope:cn-beijing:{_ACCOUNT_ID}:batch/{batch['id']}",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "datacontenttype": "application/json",
        "aliyunaccountid": _ACCOUNT_ID,
        "aliyunpublishtime": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "aliyuneventbusname": "default",
        "aliyunregionid": "cn-beijing",
        "data": batch,
    }


def create_app(
    config: EmulatorConfig | None = None,
    *,
    api_key: str | None = None,
    root: Path | None = None,
    seed: int | None = None,
    rate_limits: RateLimitSettings | None = None,
) -> ASGIApp:
    """
    Build the emulator's ASGI application.

    :param config: initial :class:`~dashscope_batch_emulator.state.EmulatorConfig` (time scale,
        processing rate, …).
    :param api_key: the only accepted Bearer key; ``None`` accepts any non-empty key.
    :param root: directory for stored file bytes; a temporary directory by default.
    :param seed: seed for probabilistic faults.
    :param rate_limits: enforce the account rate limits (429 + ``Retry-After``); off when ``None``.
    """
    api = EmulatorApi(Emulator(config, root), FaultRegistry(seed), api_key, rate_limits)
    p, a = API_PREFIX, ADMIN_PREFIX
    routes = [
        Route(f"{p}/files", api.api(api.upload_file), methods=["POST"]),
        Route(f"{p}/files", api.api(api.list_files), methods=["GET"]),
        Route(f"{p}/files/{{file_id}}", api.api(api.retrieve_file), methods=["GET"]),
        Route(f"{p}/files/{{file_id}}", api.api(api.delete_file), methods=["DELETE"]),
        Route(f"{p}/files/{{file_id}}/content", api.api(api.file_content), methods=["GET"]),
        Route(f"{p}/batches", api.api(api.create_batch), methods=["POST"]),
        Route(f"{p}/batches", api.api(api.list_batches), methods=["GET"]),
        Route(f"{p}/batches/{{batch_id}}", api.api(api.retrieve_batch), methods=["GET"]),
        Route(f"{p}/batches/{{batch_id}}/cancel", api.api(api.cancel_batch), methods=["POST"]),
        Route(f"{a}/health", api.admin(api.admin_health), methods=["GET"]),
        Route(f"{a}/reset", api.admin(api.admin_reset), methods=["POST"]),
        Route(f"{a}/config", api.admin(api.admin_config), methods=["GET", "PATCH"]),
        Route(f"{a}/clock", api.admin(api.admin_clock), methods=["GET"]),
        Route(f"{a}/clock/advance", api.admin(api.admin_advance), methods=["POST"]),
        Route(f"{a}/faults", api.admin(api.admin_faults), methods=["GET", "POST", "DELETE"]),
        Route(f"{a}/faults/{{fault_id}}", api.admin(api.admin_fault), methods=["DELETE"]),
        Route(f"{a}/requests", api.admin(api.admin_requests), methods=["GET", "DELETE"]),
        Route(f"{a}/callbacks", api.admin(api.admin_callbacks), methods=["GET"]),
        Route(f"{a}/rate-limits", api.admin(api.admin_rate_limits), methods=["GET", "PUT", "DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=api.lifespan,
        exception_handlers={HTTPException: _http_exception},
    )
    return FaultMiddleware(RateLimitMiddleware(app, api.rate_limiter), app.router, api.faults)
