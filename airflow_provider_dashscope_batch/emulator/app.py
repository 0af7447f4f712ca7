"""Starlette application emulating the DashScope OpenAI-compatible Files and Batches API."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
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
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from airflow_provider_dashscope_batch.emulator.faults import (
    API_PREFIX,
    FaultMiddleware,
    FaultRegistry,
    FaultRule,
    error_body,
)
from airflow_provider_dashscope_batch.emulator.ratelimit import (
    RateLimiter,
    RateLimitMiddleware,
    RateLimitSettings,
)
from airflow_provider_dashscope_batch.emulator.state import (
    ENDPOINTS,
    BatchRecord,
    Emulator,
    EmulatorConfig,
)

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator"
TICK_SECONDS = 0.02
BATCH_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
_WINDOW = re.compile(r"^([0-9]+)([hd])$")
_FILE_DATE_FORMATS = ("%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d")
_MAX_FIELD_BYTES = 64 * 1024


class ApiError(Exception):
    """An error answered with DashScope's error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def _error_response(status: int, message: str | None = None, *, code=None, param=None) -> JSONResponse:
    body = error_body(status, message, code=code, param=param)
    return JSONResponse(body, status_code=status, headers={"x-request-id": body["request_id"]})


def _parse_time(value: str, name: str, formats: tuple[str, ...]) -> float:
    for fmt in formats:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ApiError(400, f"Invalid {name} '{value}'; expected one of {', '.join(formats)}.", param=name)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer between {low} and {high}.", param=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}.", param=name)
    return value


def parse_completion_window(value: Any) -> int:
    """Return the window in seconds, enforcing the service's integer ``h``/``d`` form and 24h..336h range."""
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(
            400,
            "completion_window must be an integer followed by 'h' or 'd', e.g. '24h'.",
            param="completion_window",
        )
    hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if not 24 <= hours <= 336:
        raise ApiError(400, "completion_window must be between 24h and 336h.", param="completion_window")
    return hours * 3600


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ApiError(400, "metadata must be a map of string keys to string values.", param="metadata")
    for key, limit in (("ds_name", 100), ("ds_description", 200)):
        if len(metadata.get(key, "")) > limit:
            raise ApiError(
                400, f"metadata.{key} must be at most {limit} characters.", param=f"metadata.{key}"
            )
    callback = metadata.get("ds_batch_finish_callback")
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise ApiError(
            400,
            "metadata.ds_batch_finish_callback must be an http(s) URL.",
            param="metadata.ds_batch_finish_callback",
        )
    return metadata


def _page(items: list[Any], after: str | None, limit: int) -> tuple[list[Any], bool]:
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise ApiError(400, f"Unknown cursor after='{after}'.", param="after")
        items = items[ids.index(after) + 1 :]
    return items[:limit], len(items) > limit


class _Upload:
    """Streaming ``multipart/form-data`` receiver: the file part goes straight to disk."""

    def __init__(self, destination: Path, max_bytes: int) -> None:
        self.destination = destination
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._headers: dict[str, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._buffer: bytearray | None = None
        self._file = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._accumulate("_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._accumulate("_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _accumulate(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._buffer = None

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        self._name = options.get(b"name", b"").decode()
        if b"filename" in options and self._name == "file":
            if self._file is not None:
                raise ApiError(400, "Only one file may be uploaded per request.", param="file")
            self.filename = options[b"filename"].decode("utf-8", "replace") or "upload.jsonl"
            self._file = self.destination.open("wb")
        else:
            self._buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._buffer is not None:
            if len(self._buffer) + end - start > _MAX_FIELD_BYTES:
                raise ApiError(400, f"Form field '{self._name}' is too large.", param=self._name)
            self._buffer += data[start:end]
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise ApiError(
                400,
                f"File exceeds the maximum size of {self.max_bytes} bytes.",
                code="FileTooLarge",
                param="file",
            )
        self._file.write(data[start:end])

    def _part_end(self) -> None:
        if self._buffer is not None and self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")
        self._buffer = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    async def receive(self, request: Request) -> None:
        ctype, options = parse_options_header(request.headers.get("content-type"))
        if ctype != b"multipart/form-data" or b"boundary" not in options:
            raise ApiError(400, "The upload must be multipart/form-data with a 'file' part.", param="file")
        parser = MultipartParser(options[b"boundary"], self.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()


class EmulatorApi:
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
                return _error_response(exc.status, exc.message, code=exc.code, param=exc.param)

        return endpoint

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    def _file(self, request: Request):
        file_id = request.path_params["file_id"]
        record = self.emulator.files.get(file_id)
        if record is None:
            raise ApiError(404, f"File '{file_id}' not found.", param="file_id")
        return record

    def _batch(self, request: Request) -> BatchRecord:
        batch_id = request.path_params["batch_id"]
        batch = self.emulator.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch '{batch_id}' not found.", param="batch_id")
        return batch

    # Files -------------------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        path = self.emulator.new_file_path()
        upload = _Upload(path, self.emulator.config.max_upload_bytes)
        try:
            await upload.receive(request)
            upload.close()
            if upload.filename is None:
                raise ApiError(400, "Missing 'file' part in the multipart body.", param="file")
            purpose = upload.fields.get("purpose")
            if purpose != "batch":
                raise ApiError(
                    400, f"Invalid purpose '{purpose}'; only 'batch' is supported.", param="purpose"
                )
        except BaseException:
            upload.close()
            path.unlink(missing_ok=True)
            raise
        record = self.emulator.add_file(f"file-batch-{uuid.uuid4().hex}", path, upload.filename, "batch")
        return JSONResponse(record.to_api())

    async def list_files(self, request: Request) -> Response:
        params = request.query_params
        limit = _int_param(request, "limit", 2000, 1, 2000)
        items = sorted(self.emulator.files.values(), key=lambda f: f.seq, reverse=True)
        if params.get("purpose"):
            items = [f for f in items if f.purpose == params["purpose"]]
        if params.get("create_after"):
            after = _parse_time(params["create_after"], "create_after", _FILE_DATE_FORMATS)
            items = [f for f in items if f.created_at >= after]
        if params.get("create_before"):
            before = _parse_time(params["create_before"], "create_before", _FILE_DATE_FORMATS)
            items = [f for f in items if f.created_at <= before]
        page, has_more = _page(items, params.get("after"), limit)
        return JSONResponse({"object": "list", "data": [f.to_api() for f in page], "has_more": has_more})

    async def retrieve_file(self, request: Request) -> Response:
        return JSONResponse(self._file(request).to_api())

    async def delete_file(self, request: Request) -> Response:
        record = self._file(request)
        self.emulator.delete_file(record.id)
        return JSONResponse({"object": "file", "deleted": True, "id": record.id})

    async def file_content(self, request: Request) -> Response:
        record = self._file(request)
        if not record.id.startswith(("file-batch_output-", "file-batch_error-")):
            raise ApiError(
                400,
                "Only batch result files (file-batch_output-…, file-batch_error-…) can be downloaded.",
                param="file_id",
            )
        return FileResponse(record.path, media_type="application/octet-stream", filename=record.filename)

    # Batches -----------------------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        body = await self._json(request)
        input_file_id = body.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ApiError(400, "input_file_id is required.", param="input_file_id")
        record = self.emulator.files.get(input_file_id)
        if record is None:
            raise ApiError(400, f"Input file '{input_file_id}' does not exist.", param="input_file_id")
        if record.purpose != "batch":
            raise ApiError(
                400,
                f"File '{input_file_id}' has purpose '{record.purpose}', not 'batch'.",
                param="input_file_id",
            )
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise ApiError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}.", param="endpoint")
        window = body.get("completion_window")
        seconds = parse_completion_window(window)
        metadata = _check_metadata(body.get("metadata"))
        batch = self.emulator.create_batch(input_file_id, endpoint, window, seconds, metadata)
        return JSONResponse(batch.to_api())

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(self._batch(request).to_api())

    async def list_batches(self, request: Request) -> Response:
        params = request.query_params
        limit = _int_param(request, "limit", 20, 1, 100)
        items = sorted(self.emulator.batches.values(), key=lambda b: b.seq, reverse=True)
        if params.get("ds_name"):
            needle = params["ds_name"].lower()
            items = [b for b in items if needle in (b.metadata or {}).get("ds_name", "").lower()]
        if params.get("input_file_ids"):
            wanted = {i.strip() for i in params["input_file_ids"].split(",") if i.strip()}
            if len(wanted) > 20:
                raise ApiError(400, "input_file_ids accepts at most 20 ids.", param="input_file_ids")
            items = [b for b in items if b.input_file_id in wanted]
        if params.get("status"):
            statuses = {s.strip() for s in params["status"].split(",") if s.strip()}
            unknown = statuses.difference(BATCH_STATUSES)
            if unknown:
                raise ApiError(400, f"Unknown status value(s): {', '.join(sorted(unknown))}.", param="status")
            items = [b for b in items if b.status in statuses]
        for name, keep in (("create_after", lambda c, t: c >= t), ("create_before", lambda c, t: c <= t)):
            if params.get(name):
                point = _parse_time(params[name], name, ("%Y%m%d%H%M%S",))
                items = [b for b in items if keep(int(b.created), point)]
        page, has_more = _page(items, params.get("after"), limit)
        return JSONResponse(
            {
                "object": "list",
                "data": [b.to_api() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    async def cancel_batch(self, request: Request) -> Response:
        batch = self._batch(request)
        if batch.status in ("completed", "failed", "expired"):
            raise ApiError(
                400, f"Batch '{batch.id}' is {batch.status} and cannot be cancelled.", param="batch_id"
            )
        self.emulator.cancel_batch(batch)
        return JSONResponse(batch.to_api())

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
                self.emulator.configure(**await self._json(request))
            except (ValidationError, re.error, TypeError) as exc:
                raise ApiError(400, f"Invalid emulator configuration: {exc}") from None
        return JSONResponse(self.emulator.config.model_dump())

    async def admin_clock(self, _request: Request) -> Response:
        return JSONResponse({"now": self.emulator.now(), "time_scale": self.emulator.clock.time_scale})

    async def admin_advance(self, request: Request) -> Response:
        seconds = (await self._json(request)).get("seconds", 0)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ApiError(400, "seconds must be a non-negative number.", param="seconds")
        self.emulator.clock.advance(float(seconds))
        await self.catch_up()
        return await self.admin_clock(request)

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                rule = self.faults.add(FaultRule.model_validate(await self._json(request)))
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
            self.faults.counts.clear()
        return JSONResponse({"counts": dict(self.faults.counts)})

    async def admin_rate_limits(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                self.rate_limiter.configure(RateLimitSettings.model_validate(await self._json(request)))
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
                return _error_response(exc.status, exc.message, code=exc.code, param=exc.param)

        return endpoint


async def _http_exception(_request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error_response(status, str(getattr(exc, "detail", "")) or None)


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

    :param config: initial :class:`EmulatorConfig` (time scale, processing rate, …).
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
