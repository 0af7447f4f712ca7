"""
The receiver of finish events: DashScope's finish callback and EventBridge deliveries, on the api-server.

One route, ``POST /dashscope-batch/events/{conn_id}/{token}``, accepts both bodies: the callback (the
batch object the service POSTs to ``metadata.ds_batch_finish_callback``) and an EventBridge delivery of
``dashscope:System:BatchTaskFinish`` (a CloudEvents 1.0 envelope, source ``acs.dashscope``, the batch in
``data``). The route needs no Airflow login, so nothing in the request is trusted:

1. the body is read up to :data:`MAX_BODY_BYTES` (else 413) and must be JSON naming a batch id (else
   400; nothing of the body is logged);
2. the token must carry a valid MAC for the connection
   (:mod:`~airflow_provider_dashscope_batch.events.tokens`), checked before any I/O;
3. the batch is read once through the connection (the confirmation read). A callback token must be the
   one in that batch's own ``ds_batch_finish_callback`` URL (so a token cannot vouch for another
   batch); the EventBridge token accepts batches this provider created (an ``airflow-`` idempotency key);
4. only a batch the service reports terminal is recorded, once: an Asset event on the connection's
   Asset (the batch in the extra) and a post to the connection's mailbox
   (:mod:`~.mailbox`), which wakes the deferred waits. A replay finds the batch recorded and changes
   nothing.

An unknown connection, a bad token and a batch the token does not belong to all get the same 404.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_provider_dashscope_batch.client.errors import DashScopeError, NotFoundError
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, asset_name, asset_uri, variable_key
from airflow_provider_dashscope_batch.events.run_queue import queue_event
from airflow_provider_dashscope_batch.events.tokens import EVENTBRIDGE_NONCE, token_is_valid

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CONCURRENT_DELIVERIES",
    "BadRequest",
    "Outcome",
    "Result",
    "create_app",
    "finish_batch_id",
    "handle_finish",
    "record_finish",
]

log = logging.getLogger(__name__)

#: Largest body accepted (a batch object is about 1 KiB; its ``errors`` can add some).
MAX_BODY_BYTES = 64 * 1024
#: Deliveries handled at once per api-server process (each takes a worker thread for its confirmation).
MAX_CONCURRENT_DELIVERIES = 8
#: The CloudEvents type of a batch finish on EventBridge.
EVENT_TYPE = "dashscope:System:BatchTaskFinish"
#: How far before a batch's finish time an Asset event for it is looked for (clock differences).
_DEDUP_SLACK = timedelta(hours=1)


class BadRequest(ValueError):
    """The body is not a finish event; the message names the rule, never the body's content."""


class Outcome(StrEnum):
    """What the receiver did with one delivery."""

    RECORDED = "recorded"  # verified and recorded (Asset event + mailbox)
    DUPLICATE = "duplicate"  # verified, already recorded: nothing changed
    NOT_FINISHED = "not_finished"  # the service does not report the batch terminal: nothing changed
    UNKNOWN = "unknown"  # connection, token or batch unknown, or the token is not this batch's
    UNAVAILABLE = "unavailable"  # the confirmation read failed: the sender may retry


_STATUS_CODES = {
    Outcome.RECORDED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.NOT_FINISHED: 409,
    Outcome.UNKNOWN: 404,
    Outcome.UNAVAILABLE: 503,
}


@dataclass(frozen=True)
class Result:
    """The outcome of one delivery and the batch it names (as read from the service, if read)."""

    outcome: Outcome
    batch_id: str
    status: str | None = None


def finish_batch_id(body: bytes) -> str:
    """
    The batch id a finish event names: a callback's ``id``, or an EventBridge event's ``data.id``.

    :raises BadRequest: The body is not JSON, not an object, or names no batch.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    if "specversion" in data:  # a CloudEvents envelope
        if data.get("type") != EVENT_TYPE:
            raise BadRequest(f"the event type must be {EVENT_TYPE}")
        payload = data.get("data")
        data = payload if isinstance(payload, dict) else {}
    batch_id = data.get("id") or data.get("batch_id") or data.get("batchId")
    if not isinstance(batch_id, str) or not batch_id.startswith("batch_") or len(batch_id) > 128:
        raise BadRequest("the body names no batch id")
    return batch_id


def _belongs(token: str, batch: Batch) -> bool:
    """Whether ``token`` may vouch for ``batch``: its own callback token, or the EventBridge token."""
    metadata = batch.metadata or {}
    if token.split(".", 1)[0] == EVENTBRIDGE_NONCE:
        return str(metadata.get("idempotency_key") or "").startswith("airflow-")
    callback = str(metadata.get("ds_batch_finish_callback") or "")
    return hmac.compare_digest(callback.rsplit("/", 1)[-1].encode(), token.encode())


@dataclass
class _Connection:
    """A connection's key and sync client, kept for :data:`_CONNECTION_TTL` seconds."""

    api_key: str
    client: DashScopeClient
    expires: float


#: Seconds a connection's key and client are reused (a burst of callbacks reads the connection once).
_CONNECTION_TTL = 60.0
_connections: dict[str, _Connection] = {}
_connections_lock = threading.Lock()
#: Batch ids this process recorded or found recorded, so that a replay costs no read (bounded).
_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
_SEEN_SIZE = 4096
_DESCRIPTION = "DashScope batch finishes (wakes the deferred waits)"


def _connection(conn_id: str) -> _Connection | None:
    """The connection's key and client, or None if the connection is unknown or has no key."""
    from airflow.models.connection import Connection

    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    now = time.monotonic()
    with _connections_lock:
        cached = _connections.get(conn_id)
    if cached is not None and cached.expires > now:
        return cached
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception:  # AirflowNotFoundException, or a secrets backend failing: treated alike
        return None
    if not conn.password:
        return None
    settings = DashScopeBatchHook(dashscope_conn_id=conn_id).client_settings(conn.password, conn.extra_dejson)
    fresh = _Connection(conn.password, settings.build(DashScopeClient), now + _CONNECTION_TTL)
    with _connections_lock:
        _connections[conn_id] = fresh
    return fresh


def _remember(conn_id: str, batch_id: str) -> None:
    with _connections_lock:
        _seen[(conn_id, batch_id)] = None
        while len(_seen) > _SEEN_SIZE:
            _seen.popitem(last=False)


def handle_finish(conn_id: str, token: str, batch_id: str) -> Result:
    """Verify one finish event (token, then one read through the connection) and record it (blocking)."""
    from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError

    try:
        conn = _connection(conn_id)
    except ConnectionSetupError as exc:
        log.warning("Connection %s cannot confirm finish events: %s", conn_id, exc)
        return Result(Outcome.UNAVAILABLE, batch_id)
    if conn is None or not token_is_valid(conn.api_key, conn_id, token):
        return Result(Outcome.UNKNOWN, batch_id)
    if (conn_id, batch_id) in _seen:  # a replay (or a repeat) costs no read
        return Result(Outcome.DUPLICATE, batch_id)
    try:
        batch = conn.client.retrieve_batch(batch_id, max_retries=1)
    except NotFoundError:
        return Result(Outcome.UNKNOWN, batch_id)
    except DashScopeError as exc:
        log.warning("Could not confirm the finish of batch %s (connection %s): %s", batch_id, conn_id, exc)
        return Result(Outcome.UNAVAILABLE, batch_id)
    if not _belongs(token, batch):
        return Result(Outcome.UNKNOWN, batch_id)
    if not batch.status.is_terminal:
        return Result(Outcome.NOT_FINISHED, batch_id, batch.status.value)
    recorded = record_finish(conn_id, batch)
    _remember(conn_id, batch.id)
    log.info(
        "Batch %s of connection %s is %s: %s",
        batch.id,
        conn_id,
        batch.status,
        "recorded" if recorded else "already recorded",
    )
    return Result(Outcome.RECORDED if recorded else Outcome.DUPLICATE, batch.id, batch.status.value)


def _finished_at(batch: Batch) -> datetime:
    times = (batch.completed_at, batch.failed_at, batch.expired_at, batch.cancelled_at, batch.created_at)
    seconds = next((t for t in times if t), None)
    return datetime.fromtimestamp(seconds, UTC) if seconds else datetime.now(UTC)


def asset_extra(conn_id: str, batch: Batch) -> dict[str, Any]:
    """The extra of a finish's Asset event: what a results DAG needs to fetch the results."""
    counts = batch.request_counts
    return {
        "conn_id": conn_id,
        "batch_id": batch.id,
        "status": batch.status.value,
        "input_file_id": batch.input_file_id,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "request_counts": None if counts is None else counts.model_dump(mode="json"),
    }


@dataclass(eq=False)
class _Pending:
    """A verified finish on its way through the two writer stages."""

    conn_id: str
    batch: Batch
    done: dict[str, threading.Event] = field(
        default_factory=lambda: {"post": threading.Event(), "event": threading.Event()}
    )
    recorded: bool = False
    error: BaseException | None = None


class _Stage:
    """One writer stage: whoever holds the writer does the work of every item queued meanwhile."""

    def __init__(self, name: str, work: Callable[[str, list[Batch]], set[str]]) -> None:
        self.name, self.work = name, work
        self.queue: list[_Pending] = []
        self.queue_lock, self.writer = threading.Lock(), threading.Lock()

    def run(self, item: _Pending) -> None:
        with self.queue_lock:
            self.queue.append(item)
        with self.writer:
            if item.done[self.name].is_set():
                return
            with self.queue_lock:
                items, self.queue = self.queue, []
            by_conn: dict[str, list[_Pending]] = {}
            for queued in items:
                by_conn.setdefault(queued.conn_id, []).append(queued)
            for conn_id, group in by_conn.items():
                try:
                    done = self.work(conn_id, [queued.batch for queued in group])
                    for queued in group:
                        queued.recorded = queued.recorded or queued.batch.id in done
                except Exception as exc:  # every delivery of the group answers with it
                    for queued in group:
                        queued.error = queued.error or exc
                finally:
                    for queued in group:
                        queued.done[self.name].set()


def record_finish(conn_id: str, batch: Batch) -> bool:
    """
    Record a verified finish once: the mailbox post (which wakes its waits) and the Asset event.

    Deliveries that arrive together are recorded together, in two stages that overlap: whoever holds a
    stage's writer does the work of every finish queued meanwhile, so the mailbox post of a burst is one
    transaction per connection, and it does not wait for the Asset events of the burst before it (one
    short transaction each). Each stage holds one pooled DB connection of the api-server at a time. A
    post locks the connection's mailbox row, an Asset event the Asset's row (``SELECT ... FOR UPDATE``),
    so deliveries racing in several api-server processes record a finish once: a post is known by its
    batch id in the mailbox, an Asset event by the batch id in the Asset's events since the batch
    finished.

    :returns: Whether this call recorded it (False: it was recorded before).
    """
    item = _Pending(conn_id, batch)
    _POSTS.run(item)
    if item.error is None:
        _EVENTS.run(item)
    if item.error is not None:
        raise item.error
    return item.recorded


def _locked_mailbox(session: Session, conn_id: str) -> tuple[Any, Mailbox]:
    """The connection's mailbox Variable row, locked for this transaction (None if there is none yet)."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    variable = session.scalar(select(Variable).where(Variable.key == variable_key(conn_id)).with_for_update())
    return variable, Mailbox.from_value(variable.val if variable is not None else None)


def _post(conn_id: str, batches: list[Batch]) -> set[str]:
    """Post the batches not yet in the connection's mailbox (one transaction); return their ids."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy.exc import IntegrityError

    for attempt in range(2):  # a first post to a new mailbox can race another first post
        try:
            with create_session() as session:
                variable, mailbox = _locked_mailbox(session, conn_id)
                posted = {b.id for b in batches if b.id not in mailbox}
                for batch_id in sorted(posted):
                    mailbox = mailbox.posted(batch_id)
                if posted and variable is None:
                    key = variable_key(conn_id)
                    session.add(Variable(key=key, val=mailbox.to_json(), description=_DESCRIPTION))
                elif posted:
                    variable.set_val(mailbox.to_json())
            return posted
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _add_events(conn_id: str, batches: list[Batch]) -> set[str]:
    """
    Add each batch's Asset event unless the Asset has one for it, each in its own short transaction.

    An Asset event must be committed right after it is stamped, or a run of a DAG scheduled on the Asset
    that starts meanwhile would never see it. A crash after the post leaves the event to the next
    delivery of the finish.
    """
    from airflow.utils.session import create_session

    added = set()
    for batch in batches:
        with create_session() as session:
            if _add_asset_event(session, conn_id, batch):
                added.add(batch.id)
    return added


_POSTS = _Stage("post", _post)
_EVENTS = _Stage("event", _add_events)


def _add_asset_event(session: Session, conn_id: str, batch: Batch) -> bool:
    """
    Add the finish's Asset event unless the Asset has one for the batch since it finished.

    The Asset's row is locked for the transaction (``SELECT ... FOR UPDATE``): one writer of the
    connection's events at a time, across api-server processes. Not the mailbox row: the event's
    transaction may wait for the scheduler's lock on its run queue (:func:`~.run_queue.queue_event`),
    and the mailbox posts that wake the waits must not wait behind it.
    """
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    asset = session.scalar(
        select(AssetModel)
        .where(AssetModel.name == asset_name(conn_id), AssetModel.uri == asset_uri(conn_id))
        .with_for_update()
    )
    if asset is None:
        log.warning(
            "No DAG uses the Asset %s, so the finish of %s wakes its waits but records no Asset event",
            asset_uri(conn_id),
            batch.id,
        )
        return False
    extras = session.scalars(
        select(AssetEvent.extra).where(
            AssetEvent.asset_id == asset.id, AssetEvent.timestamp >= _finished_at(batch) - _DEDUP_SLACK
        )
    )
    if any(isinstance(extra, dict) and extra.get("batch_id") == batch.id for extra in extras):
        return False
    from airflow.assets.manager import asset_manager

    event = asset_manager.register_asset_change(
        asset=asset, extra=asset_extra(conn_id, batch), session=session
    )
    queue_event(session, asset, event)
    return True


async def _read_body(request: Request) -> bytes | None:
    """The body, or None past :data:`MAX_BODY_BYTES` (read no further)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def create_app() -> FastAPI:
    """The receiver's FastAPI app (the plugin mounts it at ``/dashscope-batch``)."""
    # a burst of callbacks must not take the threads the api-server's own (sync) endpoints run in
    limiter = anyio.CapacityLimiter(MAX_CONCURRENT_DELIVERIES)
    app = FastAPI(title="DashScope Batch finish events", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/events/{conn_id}/{token}")
    async def receive(conn_id: str, token: str, request: Request) -> JSONResponse:
        body = await _read_body(request)
        if body is None:
            return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            batch_id = finish_batch_id(body)
        except BadRequest as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        result = await anyio.to_thread.run_sync(handle_finish, conn_id, token, batch_id, limiter=limiter)
        content: dict[str, Any] = {"outcome": result.outcome.value, "batch_id": result.batch_id}
        if result.status is not None:
            content["status"] = result.status
        if result.outcome is Outcome.UNKNOWN:
            content = {"detail": "unknown event"}
        return JSONResponse(content, status_code=_STATUS_CODES[result.outcome])

    return app
