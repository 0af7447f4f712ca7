"""
The receiver of finish events: DashScope's finish callback and EventBridge deliveries, on the api-server.

Two routes accept the same bodies: ``POST /dashscope-batch/events/{conn_id}/{token}`` (the callback URL,
and an EventBridge target URL) and ``POST /dashscope-batch/events/{conn_id}`` with the token in the
``x-eventbridge-signature-token`` header (EventBridge's own header). A body is the batch object the
service POSTs to ``metadata.ds_batch_finish_callback``, or an EventBridge delivery of
``dashscope:System:BatchTaskFinish`` (CloudEvents 1.0); the batch id is looked for under ``id``,
``batch_id``, ``batchId`` or ``task_id``, at the top or under ``data`` or ``output`` (the event's ``data``
fields are not documented). The routes need no Airflow login, so nothing in a request is trusted, and the
checks run cheapest first:

1. the token: the connection must exist, be of type ``dashscope`` and have a finish-events secret, and the
   token must carry a valid MAC under its current or previous secret
   (:mod:`~airflow_provider_dashscope_batch.events.tokens`). Nothing else is read first: not the body, not
   the service. Every refusal, whatever its reason, is the same 404 after the same
   :data:`REFUSAL_SECONDS`. These checks have their own limiter, so slow confirmations never delay them;
2. the body: at most :data:`MAX_BODY_BYTES`, read within :data:`BODY_TIMEOUT` seconds, JSON nested at
   most :data:`MAX_DEPTH` deep, naming a well-formed batch id (else 413, 408, 400; a refused body's key
   names, never its values, are logged once per shape);
3. ownership and confirmation: one read of the batch through the connection (at most
   :data:`MAX_CONCURRENT_CONFIRMATIONS` at once). A callback token must be the one in that batch's own
   ``ds_batch_finish_callback`` URL; once a token is proven for a batch it vouches for no other batch
   without a read, and a token that failed :data:`MAX_MISSES` reads buys no more. The EventBridge token
   accepts only batches carrying this connection's mark (:func:`~.tokens.is_marked`);
4. a batch the service reports terminal is posted once to the connection's mailbox Variable
   (:mod:`~.mailbox`; :func:`append_to_mailbox` says why through Airflow's Variable model). The finish watcher
   (:mod:`~.watcher`) turns the post into the Asset event after its own confirmation read, and the
   deferred waits are woken by it (:mod:`~.wake`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_dashscope_batch.client.errors import DashScopeError, NotFoundError
from airflow_provider_dashscope_batch.events.callback import event_secrets
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, variable_key
from airflow_provider_dashscope_batch.events.tokens import EVENTBRIDGE_NONCE, is_marked, token_is_valid

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "BODY_TIMEOUT",
    "EVENTBRIDGE_TOKEN_HEADER",
    "MAX_BODY_BYTES",
    "MAX_CONCURRENT_CONFIRMATIONS",
    "MAX_DEPTH",
    "MAX_MISSES",
    "REFUSAL_SECONDS",
    "BadRequest",
    "Outcome",
    "Result",
    "append_to_mailbox",
    "create_app",
    "finish_batch_id",
    "safe_id",
]

log = logging.getLogger(__name__)

#: Largest body accepted (a batch object is about 1 KiB; its ``errors`` can add some).
MAX_BODY_BYTES = 64 * 1024
#: Deepest JSON nesting accepted (a batch object is 3 deep, an EventBridge envelope 4).
MAX_DEPTH = 16
#: Seconds a sender has to deliver the whole body.
BODY_TIMEOUT = 10.0
#: Confirmation reads in flight at once per api-server process (each holds a worker thread).
MAX_CONCURRENT_CONFIRMATIONS = 8
#: Token checks (a connection lookup each) in flight at once per api-server process.
MAX_CONCURRENT_CHECKS = 32
#: Every refusal is answered this many seconds after the request arrived, whatever its reason.
REFUSAL_SECONDS = 0.05
#: Failed confirmation reads a callback token may cost before it is refused without one.
MAX_MISSES = 3
#: EventBridge's header carrying the target's token.
EVENTBRIDGE_TOKEN_HEADER = "x-eventbridge-signature-token"
#: The CloudEvents type of a batch finish on EventBridge.
EVENT_TYPE = "dashscope:System:BatchTaskFinish"
_ID_FIELDS = ("id", "batch_id", "batchId", "task_id")
_BATCH_ID = re.compile(r"batch_[A-Za-z0-9_.:-]{1,120}")
_DESCRIPTION = "DashScope batch finishes confirmed by the receiver (read by the finish watcher and waits)"


class BadRequest(ValueError):
    """The body is not a finish event; the message names the rule, never the body's content."""


class Outcome(StrEnum):
    """What the receiver did with one delivery."""

    RECORDED = "recorded"  # verified and posted to the mailbox
    DUPLICATE = "duplicate"  # verified, already posted: nothing changed
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


def safe_id(value: object) -> str:
    """``value`` if it is a well-formed batch id, else a placeholder (what the logs may show)."""
    return value if isinstance(value, str) and _BATCH_ID.fullmatch(value) else "<malformed id>"


def _depth_ok(body: bytes) -> bool:
    """Whether the JSON text nests at most :data:`MAX_DEPTH` deep (strings skipped; linear, no recursion)."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def _candidates(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = [data]
    for nested in ("data", "output"):
        inner = data.get(nested)
        if isinstance(inner, dict):
            found.append(inner)
            found.extend(v for k in ("data", "output") if isinstance(v := inner.get(k), dict))
    return found


def finish_batch_id(body: bytes) -> str:
    """
    The batch id a finish event names.

    :raises BadRequest: The body is too deep, not JSON, not an object, of another event type, or names no
        well-formed batch id.
    """
    if not _depth_ok(body):
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    if "specversion" in data and data.get("type") != EVENT_TYPE:
        raise BadRequest(f"the event type must be {EVENT_TYPE}")
    for candidate in _candidates(data):
        for name in _ID_FIELDS:
            value = candidate.get(name)
            if isinstance(value, str) and _BATCH_ID.fullmatch(value):
                return value
    raise BadRequest("the body names no batch id")


class _Bounded(OrderedDict):
    """A dict that forgets its oldest entries past ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass(frozen=True)
class _Conn:
    """What a token check found: the connection's secrets and what a confirmation read needs."""

    secrets: tuple[str, ...]
    api_key: str
    extra: dict[str, Any]


_DUMMY_SECRETS = ("unknown-connection-a", "unknown-connection-b")
_lock = threading.Lock()  # the in-process maps below (held for no I/O: the event loop takes it too)
_post_lock = threading.Lock()  # one mailbox read-modify-write at a time in this process
_clients: _Bounded = _Bounded(32)  # (conn_id, api_key, extra) -> client
_proven: _Bounded = _Bounded(8192)  # (conn_id, token) -> the batch id the token was proven for
_misses: _Bounded = _Bounded(8192)  # (conn_id, token) -> failed reads
_posted: _Bounded = _Bounded(8192)  # (conn_id, batch_id) -> None: posted by this process
_shapes: _Bounded = _Bounded(256)  # refused body shapes already logged


def _lookup(conn_id: str) -> _Conn | None:
    """
    The connection's secrets and key, read fresh (a rotation counts at once), or None (blocking).

    Through ``Connection.get_connection_from_secrets`` for the reason :func:`append_to_mailbox` gives:
    the Task SDK's ``Connection.get`` needs a supervisor on Airflow 3.0 in the api-server.
    """
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception:  # AirflowNotFoundException, or a secrets backend failing: refused alike
        return None
    extra = conn.extra_dejson
    secrets = event_secrets(extra)
    if conn.conn_type != "dashscope" or not secrets or not conn.password:
        return None
    return _Conn(secrets, conn.password, extra)


def check_token(conn_id: str, token: str) -> _Conn | None:
    """The connection, if ``token`` is a valid token of it (the same work for an unknown connection)."""
    conn = _lookup(conn_id)
    valid = token_is_valid(conn.secrets if conn else _DUMMY_SECRETS, conn_id, token)
    return conn if valid and conn is not None else None


def _client(conn_id: str, conn: _Conn) -> DashScopeClient:
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

    key = (conn_id, conn.api_key, json.dumps(conn.extra, sort_keys=True, default=str))
    with _lock:
        client = _clients.get(key)
    if client is None:
        settings = DashScopeBatchHook(dashscope_conn_id=conn_id).client_settings(conn.api_key, conn.extra)
        client = settings.build(DashScopeClient)
        with _lock:
            _clients[key] = client
    return client


def _is_eventbridge(token: str) -> bool:
    return token.split(".", 1)[0] == EVENTBRIDGE_NONCE


def _belongs(conn_id: str, conn: _Conn, token: str, batch: Batch) -> bool:
    """Whether ``token`` may vouch for ``batch``: its own callback token, or EventBridge's on a marked one."""
    metadata = batch.metadata or {}
    if _is_eventbridge(token):
        return is_marked(conn.secrets, conn_id, metadata)
    callback = str(metadata.get("ds_batch_finish_callback") or "")
    return hmac.compare_digest(callback.rsplit("/", 1)[-1].encode(), token.encode())


def precheck(conn_id: str, token: str, batch_id: str) -> Outcome | None:
    """What a delivery gets without a read: UNKNOWN for a token proven for another batch or out of misses."""
    if _is_eventbridge(token):
        return None
    with _lock:
        proven = _proven.get((conn_id, token))
        misses = _misses.get((conn_id, token), 0)
        posted = (conn_id, batch_id) in _posted
    if proven is not None:
        if proven != batch_id:
            return Outcome.UNKNOWN
        return Outcome.DUPLICATE if posted else None
    return Outcome.UNKNOWN if misses >= MAX_MISSES else None


def confirm(conn_id: str, conn: _Conn, token: str, batch_id: str) -> Result:
    """Read the batch once, check that the token may vouch for it, and post a terminal one (blocking)."""
    try:
        batch = _client(conn_id, conn).retrieve_batch(batch_id, max_retries=1)
    except NotFoundError:
        _miss(conn_id, token)
        return Result(Outcome.UNKNOWN, batch_id)
    except DashScopeError as exc:
        log.warning("Could not confirm the finish of batch %s (connection %r): %s", batch_id, conn_id, exc)
        return Result(Outcome.UNAVAILABLE, batch_id)
    if not _belongs(conn_id, conn, token, batch):
        _miss(conn_id, token)
        return Result(Outcome.UNKNOWN, batch_id)
    if not _is_eventbridge(token):
        with _lock:
            _proven[(conn_id, token)] = batch.id
    if not batch.status.is_terminal:
        return Result(Outcome.NOT_FINISHED, batch_id, batch.status.value)
    posted = post(conn_id, batch.id)
    log.info(
        "Batch %s of connection %r is %s: %s",
        batch.id,
        conn_id,
        batch.status,
        "posted" if posted else "already posted",
    )
    return Result(Outcome.RECORDED if posted else Outcome.DUPLICATE, batch.id, batch.status.value)


def _miss(conn_id: str, token: str) -> None:
    with _lock:
        _misses[(conn_id, token)] = _misses.get((conn_id, token), 0) + 1


def post(conn_id: str, batch_id: str) -> bool:
    """
    Post a confirmed finish to the connection's mailbox Variable unless it is there (blocking).

    Posts of one process are serialised. Two api-server processes posting at the same instant can lose
    one post: the mailbox is a hint, and the finish watcher's list poll finds the finish anyway.

    :returns: Whether this call posted it.
    """
    with _post_lock:
        if (conn_id, batch_id) in _posted:
            return False
        posted = append_to_mailbox(variable_key(conn_id), batch_id)
        with _lock:
            _posted[(conn_id, batch_id)] = None
    return posted


def append_to_mailbox(key: str, batch_id: str) -> bool:
    """
    Add ``batch_id`` to the mailbox Variable ``key`` unless it is there (a read, then a write; blocking).

    The package's one use of Airflow's Variable model (``airflow.models.variable``), which is not a public
    interface, because none writes a Variable from the api-server on Airflow 3.0-3.3: the Task SDK's
    ``Variable.set`` sends its write to a supervisor, which only task and triggerer processes have (in
    the api-server it raises ``ImportError`` for ``SUPERVISOR_COMMS`` on 3.0.6 and 3.3.2), and its
    ``Variable.get`` reads the metadata DB from a server process on 3.3 but not on 3.0. The REST API
    (``PATCH /api/v2/variables/{key}``) can write, but only with an Airflow user's credentials kept for
    the api-server to call itself and a token endpoint that depends on the auth manager. The model's
    ``get`` and ``set`` write the ``variable`` row as Airflow's own Variables page does, nothing else.

    :returns: Whether it was added.
    """
    from airflow.models.variable import Variable

    mailbox = Mailbox.from_value(Variable.get(key, default_var=None))
    if batch_id in mailbox:
        return False
    Variable.set(key, mailbox.posted(batch_id).to_json(), description=_DESCRIPTION)
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


def _log_shape(conn_id: str, body: bytes, reason: str) -> None:
    """Log a refused body's key names (never values), once per shape."""
    try:
        data = json.loads(body) if _depth_ok(body) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        names = sorted(_safe_key(k) for k in data)[:20]
        nested = {
            n: sorted(_safe_key(k) for k in data[n])[:20]
            for n in ("data", "output")
            if isinstance(data.get(n), dict)
        }
        shape = json.dumps({"keys": names, **nested}, sort_keys=True)
    else:
        shape = type(data).__name__ if data is not None else "not JSON"
    with _lock:
        if (conn_id, shape) in _shapes:
            return
        _shapes[(conn_id, shape)] = None
    log.warning("Refused a finish event for connection %r (%s); its shape: %s", conn_id, reason, shape)


def _safe_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "?", key[:40])


def create_app() -> FastAPI:
    """The receiver's FastAPI app (the plugin mounts it at ``/dashscope-batch``)."""
    checks = anyio.CapacityLimiter(MAX_CONCURRENT_CHECKS)
    confirmations = anyio.CapacityLimiter(MAX_CONCURRENT_CONFIRMATIONS)
    app = FastAPI(title="DashScope Batch finish events", docs_url=None, redoc_url=None, openapi_url=None)

    async def refuse(started: float) -> JSONResponse:
        await anyio.sleep(max(0.0, started + REFUSAL_SECONDS - time.monotonic()))
        return JSONResponse({"detail": "unknown event"}, status_code=404)

    async def handle(conn_id: str, token: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        conn = await anyio.to_thread.run_sync(check_token, conn_id, token, limiter=checks)
        if conn is None:
            return await refuse(started)
        body: bytes | None = b""
        with anyio.move_on_after(BODY_TIMEOUT) as scope:
            body = await _read_body(request)
        if scope.cancelled_caught:
            return JSONResponse({"detail": f"body not received within {BODY_TIMEOUT:g} s"}, status_code=408)
        if body is None:
            return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            batch_id = finish_batch_id(body)
        except BadRequest as exc:
            _log_shape(conn_id, body, str(exc))
            return JSONResponse({"detail": str(exc)}, status_code=400)
        early = precheck(conn_id, token, batch_id)
        if early is Outcome.UNKNOWN:
            return await refuse(started)
        if early is Outcome.DUPLICATE:
            result = Result(Outcome.DUPLICATE, batch_id)
        else:
            result = await anyio.to_thread.run_sync(
                confirm, conn_id, conn, token, batch_id, limiter=confirmations
            )
        if result.outcome is Outcome.UNKNOWN:
            return await refuse(started)
        content: dict[str, Any] = {"outcome": result.outcome.value, "batch_id": result.batch_id}
        if result.status is not None:
            content["status"] = result.status
        return JSONResponse(content, status_code=_STATUS_CODES[result.outcome])

    async def guarded(conn_id: str, token: str, request: Request) -> JSONResponse:
        try:
            return await handle(conn_id, token, request)
        except Exception as exc:  # never a 500 or a traceback for what a sender sends
            log.error("A finish event for connection %r failed: %s", conn_id, type(exc).__name__)
            return JSONResponse({"detail": "try again later"}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """A path no route takes gets a refusal's answer, not Starlette's."""
        return await refuse(time.monotonic())

    @app.post("/events/{conn_id}/{token}")
    async def receive(conn_id: str, token: str, request: Request) -> JSONResponse:
        return await guarded(conn_id, token, request)

    @app.post("/events/{conn_id}")
    async def receive_eventbridge(conn_id: str, request: Request) -> JSONResponse:
        return await guarded(conn_id, request.headers.get(EVENTBRIDGE_TOKEN_HEADER, ""), request)

    return app
