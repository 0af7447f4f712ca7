"""
Ambiguous creates and uploads: what the client knows about an attempt it gave up on.

A create (``POST /batches``) or upload (``POST /files``) that timed out, lost its connection after the
request was sent, or was answered 408 / 5xx may still be acted on by the service: a gateway can hold the
request and hand it on after the client gave up. The client's recovery (:class:`RetryPolicy.recovery_window
<airflow_provider_dashscope_batch.client.RetryPolicy>`) finds what such an attempt created within twice the
time it was in flight; an attempt processed later leaves a second batch under the same idempotency key (or a
second file under the same upload token).

:func:`create_batch_receipt_flow` and :func:`upload_file_receipt_flow` run the client's create and upload
and return the result with an :class:`Ambiguity`: None when every attempt the client gave up on is
accounted for, else the time until which a late copy may still appear. Whoever waits for the batch carries
that fact and keeps looking for the copy until then (:mod:`~airflow_provider_dashscope_batch.waiting.late`).

The window
    The client cannot see a gateway's queue, only how long the gateway held an attempt before it failed:
    the whole timeout for a timed-out attempt, less for a dropped connection or a 5xx answer (an upload's
    body transfer does not count: at most one timeout). It assumes a gateway acts on a request it held
    for ``t`` seconds within ``LATE_WINDOW_FACTOR`` (10) times ``t`` -- up to 9 ``t`` after the failure:
    9 minutes for a create that timed out at the default 60 s, a fraction of a second for a 500 answered
    at once -- and the wait looks until the latest such time of the attempts not accounted for. (The
    emulator's ``defer`` fault models such a gateway: it holds the request, then handles it whether or
    not the client is still there.) A batch whose create this
    process did not see (a sensor's, a retried try's) gets the longest window a create can have, ten
    timeouts, from its ``created_at`` (:meth:`Ambiguity.after_created`); such a wait looks while the
    batch runs but does not wait out the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

import httpx

from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._flow import Flow, Send
from airflow_provider_dashscope_batch.client._request import ambiguous_outcome
from airflow_provider_dashscope_batch.client._uploads import FileInput
from airflow_provider_dashscope_batch.client.ratelimit import RequestKind
from airflow_provider_dashscope_batch.client.resources.batches import create_batch_flow
from airflow_provider_dashscope_batch.client.resources.files import upload_file_flow
from airflow_provider_dashscope_batch.client.types import Batch, FileObject

__all__ = [
    "LATE_WINDOW_FACTOR",
    "Ambiguity",
    "Receipt",
    "create_batch_receipt_flow",
    "late_window",
    "upload_file_receipt_flow",
]

T = TypeVar("T")

#: How many times as long as a gateway held an ambiguous attempt it may still act on it (from its send).
LATE_WINDOW_FACTOR = 10
_CREATES = (RequestKind.BATCH_CREATE, RequestKind.FILE_UPLOAD)


def late_window(timeout: float | httpx.Timeout) -> float:
    """The longest window a create can have: ten timeouts (an attempt held until it timed out)."""
    if isinstance(timeout, httpx.Timeout):
        parts = [t for t in (timeout.read, timeout.write, timeout.connect, timeout.pool) if t is not None]
        timeout = max(parts, default=60.0)
    return LATE_WINDOW_FACTOR * float(timeout)


@dataclass(frozen=True, slots=True)
class Ambiguity:
    """
    A create or upload of which a late copy may still appear, until ``until``.

    :param until: Wall-clock epoch seconds (it means the same in another process, after a deferral).
    """

    until: float

    def open(self, now: float | None = None) -> bool:
        """Whether a late copy may still appear at ``now`` (default: the current time)."""
        return (time.time() if now is None else now) <= self.until

    @classmethod
    def after_created(
        cls, created_at: int | None, timeout: float | httpx.Timeout, now: float | None = None
    ) -> Ambiguity | None:
        """
        The window of a batch or file whose creation this process did not see, if it is still open.

        Its ambiguous attempts (if any) failed before it was created, so a copy may appear until one late
        window after its ``created_at``.
        """
        if created_at is None:
            return None
        found = cls(created_at + late_window(timeout))
        return found if found.open(now) else None

    @staticmethod
    def latest(*found: Ambiguity | None) -> Ambiguity | None:
        """The longest of several windows (None if there is none)."""
        untils = [a.until for a in found if a is not None]
        return Ambiguity(max(untils)) if untils else None


@dataclass(frozen=True, slots=True)
class Receipt(Generic[T]):
    """
    What a create or upload returned (``value``: the batch or file), and whether a late copy of it may
    still appear (``ambiguity``: None, or until when).
    """

    value: T
    ambiguity: Ambiguity | None


def receipt_flow(core: ClientCore, flow: Flow[T], clock: Callable[[], float] = time.time) -> Flow[Receipt[T]]:
    """
    Run a create or upload ``flow``; note every attempt of it that failed ambiguously.

    An ambiguous attempt whose result the recovery found is accounted for (the result is that attempt's);
    any other leaves the receipt ambiguous until ``LATE_WINDOW_FACTOR - 1`` times as long as the gateway
    held it (its time in flight, at most one timeout) after it failed, the latest of them.
    """
    timeout = late_window(core.timeout) / LATE_WINDOW_FACTOR
    windows: list[float] = []  # until when each ambiguous attempt may still be acted on
    recovered = False  # the result was found after the last attempt failed, not sent back by it
    with closing(flow):
        try:
            step = flow.send(None)
            while True:
                sent = clock()
                outcome = yield step
                if isinstance(step, Send) and RequestKind.of(step.request.method, step.request.url.path) in (
                    _CREATES
                ):
                    recovered = ambiguous_outcome(outcome)
                    if recovered:  # held for its time in flight, but no longer than a timeout
                        failed = clock()
                        held = min(failed - sent, timeout)
                        windows.append(failed + (LATE_WINDOW_FACTOR - 1) * held)
                step = flow.send(outcome)
        except StopIteration as stop:
            value = stop.value
    if recovered:  # one failed attempt made the result; which one is unknown, so keep the longest windows
        windows.remove(min(windows))
    return Receipt(value, Ambiguity(max(windows)) if windows else None)


def create_batch_receipt_flow(
    core: ClientCore,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str | timedelta = "24h",
    metadata: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Receipt[Batch]]:
    """
    Create a batch like
    :meth:`create_batch <airflow_provider_dashscope_batch.client.DashScopeClient.create_batch>`; return
    it with its :class:`Ambiguity`.
    """
    flow = create_batch_flow(
        core,
        input_file_id=input_file_id,
        endpoint=endpoint,
        completion_window=completion_window,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )
    return (yield from receipt_flow(core, flow))


def upload_file_receipt_flow(
    core: ClientCore,
    file: FileInput,
    *,
    filename: str | None = None,
    purpose: str = "batch",
    upload_token: str | None = None,
) -> Flow[Receipt[FileObject]]:
    """
    Upload a file like
    :meth:`upload_file <airflow_provider_dashscope_batch.client.DashScopeClient.upload_file>`; return it
    with its :class:`Ambiguity`.
    """
    flow = upload_file_flow(core, file, filename=filename, purpose=purpose, upload_token=upload_token)
    return (yield from receipt_flow(core, flow))
