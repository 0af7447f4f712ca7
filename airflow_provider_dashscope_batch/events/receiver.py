"""
The receiver of finish events: DashScope's finish callback and EventBridge deliveries, on the api-server.

One route, ``POST /dashscope-batch/events/{conn_id}/{token}``, accepts both bodies: the callback (the
batch object the service POSTs to ``metadata.ds_batch_finish_callback``) and an EventBridge delivery of
``dashscope:System:BatchTaskFinish`` (a CloudEvents 1.0 envelope, source ``acs.dashscope``, the batch in
``data``). The route needs no Airflow login, so nothing in the request is trusted:

1. the body is read up to :data:`MAX_BODY_BYTES` (else 413) and must be JSON naming a batch id (else
   400; nothing of the body is logged);
2. the token must carry a valid MAC for the connection (:mod:`~.tokens`), checked before any I/O;
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_provider_dashscope_batch.client.errors import DashScopeError, NotFoundError
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, asset_name, asset_uri, variable_key
from airflow_provider_dashscope_batch.events.tokens import EVENTBRIDGE_NONCE, token_is_valid

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_provider_dashscope_batch.models import Batch

__all__ = ["MAX_BODY_BYTES", "Outcome", "create_app", "finish_batch_id", "handle_finish", "record_finish"]

log = logging.getLogger(__name__)

#: Largest body accepted (a batch object is about 1 KiB; its ``errors`` can add some).
MAX_BODY_BYTES = 64 * 1024
#: The CloudEvents type of a batch finish on EventBridge.
EVENT_TYPE = "dashscope:System:BatchTaskFinish"
#: How far before a batch's finish time an Asset event for it is looked for (clock differences).
_DEDUP_SLACK = timedelta(hours=1)
#: Metadata-DB sessions the receiver holds at once in one api-server process: deliveries of one
#: connection queue on its mailbox row lock, and must not queue holding the api-server's pooled
#: connections (a burst of callbacks would starve the REST and execution APIs).
_DB_SESSIONS = threading.BoundedSemaphore(2)


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


def handle_finish(conn_id: str, token: str, batch_id: str) -> Result:
    """Verify one finish event (token, then one read through the connection) and record it (blocking)."""
    from airflow.models.connection import Connection

    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception:  # AirflowNotFoundException, or a secrets backend failing: treated alike
        return Result(Outcome.UNKNOWN, batch_id)
    if not conn.password or not token_is_valid(conn.password, conn_id, token):
        return Result(Outcome.UNKNOWN, batch_id)
    if batch_id in _mailbox(conn_id):  # a replay (or a repeat) costs no read
        return Result(Outcome.DUPLICATE, batch_id)
    try:
        kwargs = DashScopeBatchHook(dashscope_conn_id=conn_id).client_kwargs(conn.password, conn.extra_dejson)
        with DashScopeClient(**kwargs) as client:
            batch = client.retrieve_batch(batch_id, max_retries=1)
    except NotFoundError:
        return Result(Outcome.UNKNOWN, batch_id)
    except (ConnectionSetupError, DashScopeError) as exc:
        log.warning("Could not confirm the finish of batch %s (connection %s): %s", batch_id, conn_id, exc)
        return Result(Outcome.UNAVAILABLE, batch_id)
    if not _belongs(token, batch):
        return Result(Outcome.UNKNOWN, batch_id)
    if not batch.status.is_terminal:
        return Result(Outcome.NOT_FINISHED, batch_id, batch.status.value)
    recorded = record_finish(conn_id, batch)
    log.info(
        "Batch %s of connection %s is %s: %s",
        batch.id,
        conn_id,
        batch.status,
        "recorded" if recorded else "already recorded",
    )
    return Result(Outcome.RECORDED if recorded else Outcome.DUPLICATE, batch.id, batch.status.value)


def _mailbox(conn_id: str) -> Mailbox:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with _DB_SESSIONS, create_session() as session:
        variable = session.scalar(select(Variable).where(Variable.key == variable_key(conn_id)))
        return Mailbox.from_value(variable.val if variable is not None else None)


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


def record_finish(conn_id: str, batch: Batch) -> bool:
    """
    Record a verified finish once: the Asset event and the mailbox post, in one transaction.

    The connection's mailbox row is locked first (``SELECT ... FOR UPDATE``), so two deliveries of one
    finish racing in two api-server workers record it once. A finish is known by its batch id in the
    mailbox or in the Asset's events since the batch finished.

    :returns: Whether this call recorded it (False: it was recorded before).
    """
    from airflow.utils.session import create_session
    from sqlalchemy.exc import IntegrityError

    for attempt in range(2):  # a first post to a new mailbox can race another first post
        try:
            with _DB_SESSIONS, create_session() as session:
                return _record(session, conn_id, batch)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _record(session: Session, conn_id: str, batch: Batch) -> bool:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.variable import Variable
    from sqlalchemy import select

    key = variable_key(conn_id)
    variable = session.scalar(select(Variable).where(Variable.key == key).with_for_update())
    mailbox = Mailbox.from_value(variable.val if variable is not None else None)
    if batch.id in mailbox:
        return False
    asset = session.scalar(
        select(AssetModel).where(AssetModel.name == asset_name(conn_id), AssetModel.uri == asset_uri(conn_id))
    )
    if asset is not None:
        extras = session.scalars(
            select(AssetEvent.extra).where(
                AssetEvent.asset_id == asset.id, AssetEvent.timestamp >= _finished_at(batch) - _DEDUP_SLACK
            )
        )
        if any(isinstance(extra, dict) and extra.get("batch_id") == batch.id for extra in extras):
            return False
    value = mailbox.posted(batch.id).to_json()
    if variable is None:
        session.add(Variable(key=key, val=value, description="DashScope batch finishes (wakes waits)"))
    else:
        variable.set_val(value)
    if asset is None:
        log.warning(
            "No DAG uses the Asset %s, so the finish of batch %s wakes its wait but records no Asset event",
            asset_uri(conn_id),
            batch.id,
        )
    else:
        from airflow.assets.manager import asset_manager

        asset_manager.register_asset_change(asset=asset, extra=asset_extra(conn_id, batch), session=session)
    session.flush()
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
        result = await anyio.to_thread.run_sync(handle_finish, conn_id, token, batch_id)
        content: dict[str, Any] = {"outcome": result.outcome.value, "batch_id": result.batch_id}
        if result.status is not None:
            content["status"] = result.status
        if result.outcome is Outcome.UNKNOWN:
            content = {"detail": "unknown event"}
        return JSONResponse(content, status_code=_STATUS_CODES[result.outcome])

    return app
