"""
The "DashScope batches" page: the service's batch list, a batch's detail, and cancel, inside Airflow's UI.

Mounted on the api-server by :mod:`~airflow_provider_dashscope_batch.ui.plugin` (Airflow 3.1+). Every
route resolves the user from Airflow's own token (the ``_token`` cookie the UI holds, or a bearer token)
with the api-server's ``get_user`` dependency: no session is a 401. What the user sees and may cancel
is asked of the auth manager in use (:mod:`.access`). The API key stays in the api-server: the browser
gets rendered HTML only, and finish-callback tokens are cut from the metadata shown. Actual costs come
from the results transfer's XCom, read through Airflow's REST API with the user's own token (:mod:`.costs`).

Input is bounded and checked before any I/O; a bad parameter is a 400 page naming the rule, a service
failure a 502 page, never a traceback. A cancel is a POST carrying an anti-forgery token bound to the
session and the batch (and refused from another origin); it is recorded in Airflow's audit log.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlparse

import anyio
import anyio.to_thread
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from airflow_provider_dashscope_batch.client.errors import DashScopeError, InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.client.types import BatchStatus
from airflow_provider_dashscope_batch.operators.links import BATCHES_PAGE_PREFIX
from airflow_provider_dashscope_batch.sharding.creator import creator_of
from airflow_provider_dashscope_batch.ui.access import Access, csrf_token, csrf_valid
from airflow_provider_dashscope_batch.ui.costs import ActualCosts
from airflow_provider_dashscope_batch.ui.jobs import JobBatch, job_batch, job_name_filter, job_of
from airflow_provider_dashscope_batch.ui.listing import BatchQuery, Listings, UnknownConnection
from airflow_provider_dashscope_batch.ui.render import (
    Row,
    confirm_page,
    detail_page,
    list_page,
    message_page,
)

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["MAX_FORM_BYTES", "ROUTE_PREFIX", "PageError", "create_app", "ui_connections"]

log = logging.getLogger(__name__)

#: Where the plugin mounts the page (the extra link of the job operators opens it).
ROUTE_PREFIX = BATCHES_PAGE_PREFIX
#: Largest cancel form accepted.
MAX_FORM_BYTES = 4096
#: Page sizes offered (the service lists at most 100 a request; the page asks for one more).
PAGE_SIZES = (10, 25, 50, 99)
_BATCH_ID = re.compile(r"batch_[A-Za-z0-9_-]{1,120}")
_FILE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_QUERY_FIELDS = ("conn_id", "ds_name", "status", "input_file_ids", "create_after", "create_before", "limit")
_TASK_FIELDS = ("dag_id", "run_id", "task_id", "map_index")
#: Requests to the service in flight at once per api-server process (each takes a worker thread).
_MAX_CONCURRENT_READS = 8
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'; "
    "base-uri 'none'"
)
#: The signed-in user, resolved by the api-server's own dependency from its token (401 without one).
User = Annotated[Any, Depends(get_user)]


class PageError(Exception):
    """A request the page refuses: the status and a message naming the rule (never the raw input)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def ui_connections() -> list[str]:
    """The connections the page lists: ``[dashscope_batch] ui_connections`` (default: the default one)."""
    from airflow.configuration import conf

    raw = conf.get("dashscope_batch", "ui_connections", fallback="dashscope_default") or ""
    return [c.strip() for c in raw.split(",") if c.strip()]


def _airflow_root() -> str:
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _access(request: Request, user: Any) -> Access:
    from airflow.api_fastapi.app import get_auth_manager

    return Access(user, get_auth_manager())


def _session_token(request: Request) -> str:
    """The credential the request came with (the bearer token, else the UI's cookie)."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def _text(params: Any, name: str, limit: int) -> str:
    value = params.get(name) or ""
    if len(value) > limit:
        raise PageError(400, "Bad filter", f"{name} must be at most {limit} characters")
    if any(ord(ch) < 32 for ch in value):
        raise PageError(400, "Bad filter", f"{name} must not contain control characters")
    return value.strip()


def _date(params: Any, name: str) -> datetime | None:
    value = _text(params, name, 10)
    if not value:
        return None
    match = _DATE.fullmatch(value)
    try:
        if match is None:
            raise ValueError
        return datetime(*(int(g) for g in match.groups()), tzinfo=UTC)
    except ValueError:
        raise PageError(400, "Bad filter", f"{name} must be a date YYYY-MM-DD") from None


def _connection(value: str, connections: list[str]) -> str:
    if not connections:
        raise PageError(404, "No connection", "no DashScope connection is configured for this page")
    conn_id = value or connections[0]
    if conn_id not in connections:
        raise PageError(
            404,
            "Unknown connection",
            "that connection is not one this page lists ([dashscope_batch] ui_connections)",
        )
    return conn_id


def _batch_id(value: str) -> str:
    if not _BATCH_ID.fullmatch(value):
        raise PageError(404, "Unknown batch", "no such batch")
    return value


def parse_list_query(params: Any, connections: list[str]) -> tuple[BatchQuery, dict[str, str]]:
    """The list request and the filters as the form shows them, from the page's query string."""
    filters = {name: _text(params, name, 250) for name in (*_QUERY_FIELDS, *_TASK_FIELDS)}
    conn_id = _connection(filters["conn_id"], connections)
    filters["conn_id"] = conn_id
    if len(filters["ds_name"]) > 100:
        raise PageError(400, "Bad filter", "ds_name must be at most 100 characters")
    status: tuple[BatchStatus, ...] = ()
    if filters["status"]:
        if filters["status"] not in {s.value for s in BatchStatus}:
            raise PageError(400, "Bad filter", "status must be one of the service's batch statuses")
        status = (BatchStatus(filters["status"]),)
    ids = tuple(i.strip() for i in filters["input_file_ids"].split(",") if i.strip())
    if len(ids) > 20 or not all(_FILE_ID.fullmatch(i) for i in ids):
        raise PageError(400, "Bad filter", "input_file_ids must be at most 20 file ids, comma-separated")
    after = _text(params, "after", 130) or None
    if after is not None and not _BATCH_ID.fullmatch(after):
        raise PageError(400, "Bad filter", "after must be a batch id")
    limit_text = filters["limit"] or "25"
    if not limit_text.isdigit() or int(limit_text) not in PAGE_SIZES:
        raise PageError(400, "Bad filter", f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    if filters["map_index"] and not re.fullmatch(r"-1|[0-9]{1,9}", filters["map_index"]):
        raise PageError(400, "Bad filter", "map_index must be an integer")
    query = BatchQuery(
        conn_id=conn_id,
        ds_name=filters["ds_name"] or None,
        status=status,
        input_file_ids=ids,
        create_after=_date(params, "create_after"),
        create_before=_date(params, "create_before"),
        after=after,
        limit=int(limit_text),
    )
    return query, {k: v for k, v in filters.items() if v}


def _of_task(batch: Batch, filters: dict[str, str]) -> bool:
    """Whether the batch belongs to the task the link filtered on (all batches without that filter)."""
    if not filters.get("dag_id"):
        return True
    creator = creator_of(batch)
    if creator is None:
        return False
    wanted = {"dag_id": creator.dag_id, "run_id": creator.run_id, "task_id": creator.task_id}
    wanted["map_index"] = str(creator.map_index)
    return all(filters.get(k) in (None, v) for k, v in wanted.items())


def _finished_runs(items: list[JobBatch]) -> set[tuple[str, str]]:
    """The DAG runs of the finished batches among ``items``: where a transfer may have recorded costs."""
    return {
        (item.creator.dag_id, item.creator.run_id)
        for item in items
        if item.creator is not None and item.batch.status.is_terminal
    }


def create_app(listings: Listings | None = None, costs: ActualCosts | None = None) -> FastAPI:
    """The page's FastAPI app (the plugin mounts it at :data:`ROUTE_PREFIX`)."""
    shared = listings or Listings()
    actual = costs or ActualCosts()
    limiter = anyio.CapacityLimiter(_MAX_CONCURRENT_READS)
    app = FastAPI(title="DashScope batches", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.listings = shared

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        # no script at all; framed only by Airflow's own UI (no clickjacking of the cancel form)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def blocking(func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.exception_handler(PageError)
    async def refused(request: Request, exc: PageError) -> HTMLResponse:
        return HTMLResponse(message_page(exc.title, exc.message, base(request)), status_code=exc.status)

    @app.exception_handler(UnknownConnection)
    async def unknown_connection(request: Request, exc: UnknownConnection) -> HTMLResponse:
        page = message_page(
            "Unknown connection", "the connection does not exist or has no API key", base(request)
        )
        return HTMLResponse(page, status_code=404)

    @app.exception_handler(DashScopeError)
    async def service_failed(request: Request, exc: DashScopeError) -> HTMLResponse:
        log.warning("DashScope batches page: the service failed: %s", exc)
        page = message_page(
            "DashScope did not answer", "the service failed; try again shortly", base(request)
        )
        return HTMLResponse(page, status_code=502)

    async def read_batch(conn_id: str, batch_id: str) -> Batch:
        client = await blocking(shared.client, conn_id)
        try:
            return await blocking(lambda: client.retrieve_batch(batch_id, max_retries=1))
        except NotFoundError:
            raise PageError(404, "Unknown batch", "no such batch") from None

    async def visible_batch(request: Request, user: Any, conn_id: str, batch_id: str) -> tuple[Access, Batch]:
        conn_id = _connection(conn_id, ui_connections())
        batch = await read_batch(conn_id, _batch_id(batch_id))
        access = _access(request, user)
        if not await blocking(access.can_view, conn_id, batch):
            raise PageError(403, "Not allowed", "you have no access to this batch's DAG")
        return access, batch

    @app.get("/", response_class=HTMLResponse)
    async def batches(request: Request, user: User) -> HTMLResponse:
        connections = ui_connections()
        query, filters = parse_list_query(request.query_params, connections)
        page = await blocking(shared.page, query)
        access = _access(request, user)
        rows, hidden = [], 0
        for batch in page.batches:
            if not await blocking(access.can_view, query.conn_id, batch):
                hidden += 1
            elif _of_task(batch, filters):
                rows.append(Row(job_batch(batch), await blocking(access.can_cancel, query.conn_id, batch)))
        next_query = {**filters, "after": page.next_after} if page.next_after else None
        known = await actual.of_runs(_session_token(request), _finished_runs([row.item for row in rows]))
        html = list_page(
            base=base(request),
            airflow_root=_airflow_root(),
            connections=connections,
            filters=filters,
            rows=rows,
            costs=known,
            hidden=hidden,
            next_query=next_query,
            first_query=filters if query.after else None,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def job_batches(conn_id: str, item: JobBatch) -> list[JobBatch] | None:
        """
        The batch's job's batches, shards then rounds, from one (shared) list request by the job's name;
        None for a batch of no known job. The user may see them all: they belong to the batch's DAG.
        """
        name = job_name_filter(item)
        if item.creator is None or name is None:
            return None
        page = await blocking(shared.page, BatchQuery(conn_id=conn_id, ds_name=name, limit=PAGE_SIZES[-1]))
        job = job_of(item.creator)
        found = {b.id: b for b in (*page.batches, item.batch)}
        members = [job_batch(b) for b in found.values()]
        return sorted(
            (m for m in members if m.creator is not None and job_of(m.creator) == job),
            key=lambda m: m.sort_key,
        )

    @app.get("/batches/{conn_id}/{batch_id}", response_class=HTMLResponse)
    async def batch_detail(request: Request, user: User, conn_id: str, batch_id: str) -> HTMLResponse:
        access, batch = await visible_batch(request, user, conn_id, batch_id)
        can_cancel = await blocking(access.can_cancel, conn_id, batch)
        item = job_batch(batch)
        rounds = await job_batches(conn_id, item)
        known = await actual.of_runs(_session_token(request), _finished_runs([item, *(rounds or [])]))
        html = detail_page(
            base=base(request),
            airflow_root=_airflow_root(),
            conn_id=conn_id,
            item=item,
            can_cancel=can_cancel,
            rounds=rounds,
            costs=known,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def cancellable(request: Request, user: Any, conn_id: str, batch_id: str) -> Batch:
        access, batch = await visible_batch(request, user, conn_id, batch_id)
        if not await blocking(access.can_cancel, conn_id, batch):
            raise PageError(403, "Not allowed", "you may not cancel this batch: you cannot edit its DAG")
        return batch

    @app.get("/batches/{conn_id}/{batch_id}/cancel", response_class=HTMLResponse)
    async def confirm_cancel(request: Request, user: User, conn_id: str, batch_id: str) -> HTMLResponse:
        batch = await cancellable(request, user, conn_id, batch_id)
        creator = creator_of(batch)
        action = f"{base(request)}/batches/{quote(conn_id, safe='')}/{quote(batch.id, safe='')}/cancel"
        if creator is not None:  # the audit log records the DAG, run and task of the batch
            from urllib.parse import urlencode

            action += "?" + urlencode(
                {"dag_id": creator.dag_id, "run_id": creator.run_id, "task_id": creator.task_id}
            )
        csrf = csrf_token(_session_token(request), conn_id, batch.id)
        html = confirm_page(base=base(request), conn_id=conn_id, batch=batch, action=action, csrf=csrf)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.post("/batches/{conn_id}/{batch_id}/cancel")
    async def cancel(request: Request, user: User, conn_id: str, batch_id: str) -> Any:
        _same_origin(request)
        form = await _small_form(request)
        if not csrf_valid(str(form.get("csrf_token") or ""), _session_token(request), conn_id, batch_id):
            raise PageError(403, "Not allowed", "the form has expired or did not come from this page")
        batch = await cancellable(request, user, conn_id, batch_id)
        creator = creator_of(batch)
        claimed = {k: request.query_params.get(k) for k in ("dag_id", "run_id", "task_id")}
        actual = {"dag_id": None, "run_id": None, "task_id": None}
        if creator is not None:
            actual = {"dag_id": creator.dag_id, "run_id": creator.run_id, "task_id": creator.task_id}
        if claimed != actual:
            raise PageError(400, "Bad request", "the form does not match the batch's DAG run and task")
        from airflow.api_fastapi.logging.decorators import action_logging
        from airflow.utils.session import create_session

        with create_session() as session:  # Airflow's own audit-log entry, as its REST API writes them
            await action_logging(event="dashscope_batch_cancel")(request=request, session=session, user=user)
        client = await blocking(shared.client, conn_id)
        try:
            cancelled = await blocking(client.cancel_batch, batch.id)
        except (InvalidRequestError, NotFoundError):
            raise PageError(409, "Not cancelled", "the batch finished before it could be cancelled") from None
        shared.forget(conn_id)
        log.info("User %s cancelled DashScope batch %s (connection %s)", user.get_name(), batch.id, conn_id)
        target = f"{base(request)}/batches/{quote(conn_id, safe='')}/{quote(cancelled.id, safe='')}"
        return RedirectResponse(target, status_code=303)

    return app


def _same_origin(request: Request) -> None:
    """Refuse a state change sent from another site (the anti-forgery token is checked besides)."""
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        raise PageError(403, "Not allowed", "cross-site requests may not cancel batches")
    origin = request.headers.get("origin")
    if origin is not None and urlparse(origin).netloc != request.headers.get("host"):
        raise PageError(403, "Not allowed", "cross-site requests may not cancel batches")


async def _small_form(request: Request) -> dict[str, str]:
    """The urlencoded form of a cancel, read up to :data:`MAX_FORM_BYTES` (else 413)."""
    from urllib.parse import parse_qsl

    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise PageError(413, "Too large", f"the form must be at most {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, "Too large", f"the form must be at most {MAX_FORM_BYTES} bytes")
    try:
        return dict(parse_qsl(body.decode("ascii"), max_num_fields=8))
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "Bad request", "the form must be urlencoded ASCII") from None
