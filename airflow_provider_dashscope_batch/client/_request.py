"""Sending one request: retries, and recovery of what an ambiguous create made.

GETs and DELETEs are retried on connection errors, timeouts, 408, 429 and >= 500 with exponential
backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``, bounded by
:attr:`~._retry.RetryPolicy.max_retries` and :attr:`~._retry.RetryPolicy.max_elapsed`. A POST that
creates something is re-sent without a check only when the service cannot have acted on it (connection
refused, 429). After an *ambiguous* failure (timeout, dropped connection, 408, >= 500) the flow looks for
what the failed attempt may have created, identified by a token minted for this call -- the batch
carrying the same ``metadata["idempotency_key"]``, or the file whose name carries the upload token --
repeatedly, for a recovery window (:attr:`~._retry.RetryPolicy.recovery_window`), and returns it instead
of creating a duplicate. If a re-send succeeds, a last search removes any other copy carrying the same
token. A stream that cannot be rewound is never re-sent (but still recovered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import httpx
from pydantic import BaseModel

from airflow_provider_dashscope_batch.client._flow import Flow, Send, Sleep, StepResult
from airflow_provider_dashscope_batch.client._params import check_retries
from airflow_provider_dashscope_batch.client.errors import DashScopeError

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._core import ClientCore

log = logging.getLogger("airflow_provider_dashscope_batch.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def request_flow(
    core: ClientCore,
    build: Callable[[], httpx.Request],
    parse: Callable[[httpx.Response], T],
    *,
    idempotent: bool = True,
    replayable: bool = True,
    stream: bool = False,
    recover: Callable[[], Flow[T | None]] | None = None,
    cleanup: Callable[[T], Flow[None]] | None = None,
    max_retries: int | None = None,
) -> Flow[T]:
    """
    Send a request with retries; return ``parse(response)`` of the first success.

    :param build: Builds the request of each attempt.
    :param parse: Turns the successful response into the result.
    :param idempotent: Whether re-sending after an ambiguous failure is harmless.
    :param replayable: Whether the body can be sent again at all.
    :param stream: Hand a successful response back unread (the caller closes it).
    :param recover: For a non-idempotent request: a flow that returns what an earlier attempt
        created (identified by a token of this call), or ``None``; run after an ambiguous failure,
        repeatedly for the recovery window, before re-sending. Without it, an ambiguous failure of a
        non-idempotent request is not retried.
    :param cleanup: Removes other copies of the result; run once a re-send after an ambiguous failure
        has succeeded (a failed attempt may have been acted on after the recovery window).
    :param max_retries: This call's retries, overriding the policy's (0: send once).
    """
    max_retries = core.retry.max_retries if max_retries is None else check_retries(max_retries)
    started = core.monotonic()
    retry = 0
    uncertain = False
    while True:
        request = build()
        sent = core.monotonic()
        outcome = yield Send(request, stream)
        if isinstance(outcome, httpx.Response) and outcome.is_success:
            result = parse(outcome)
            if uncertain and cleanup is not None:
                yield from cleanup_flow(cleanup, result)
            return result
        if isinstance(outcome, httpx.Response):
            error: DashScopeError = core.error_from_response(outcome)
            ambiguous = outcome.status_code == 408 or outcome.status_code >= 500
            headers: httpx.Headers | None = outcome.headers
        else:
            assert isinstance(outcome, httpx.TransportError)
            error = core.error_from_transport(outcome, request)
            ambiguous = not _never_sent(outcome)
            headers = None
        failed = core.monotonic()
        recovering = ambiguous and not idempotent
        if recovering and recover is None:
            raise error
        delay = None
        if error.retryable and replayable and retry < max_retries:
            delay = core.retry.delay(retry, headers, core.rand)
            if delay is not None and failed - started + delay > core.retry.max_elapsed:
                delay = None
        if delay is None and not recovering:
            raise error
        what = request.method, request.url.path, error
        if recovering:
            window = core.retry.recovery_deadline(sent, failed) - failed
            log.warning(
                "DashScope %s %s failed (%s); looking for what it created for up to %.2fs, then %s",
                *what,
                max(window, delay or core.retry.initial_delay),
                f"retry {retry + 1}/{max_retries}" if delay is not None else "giving up",
            )
        else:
            log.warning(
                "DashScope %s %s failed (%s); retry %d/%d in %.2fs", *what, retry + 1, max_retries, delay
            )
        if recovering:
            assert recover is not None
            found = yield from recovery_flow(core, recover, sent, failed, delay or core.retry.initial_delay)
            if found is not None:
                log.warning(
                    "DashScope %s %s: the failed attempt had succeeded (%s); not re-sending",
                    request.method,
                    request.url.path,
                    getattr(found, "id", found),
                )
                return found
            if delay is None or core.monotonic() - started > core.retry.max_elapsed:
                raise error
            uncertain = True
        else:
            yield Sleep(delay)
        retry += 1


def recovery_flow(
    core: ClientCore, recover: Callable[[], Flow[T | None]], sent: float, failed: float, first_gap: float
) -> Flow[T | None]:
    """
    Look for what an ambiguous attempt created until its recovery window has passed.

    The first look is ``first_gap`` after the failure, further ones at doubling gaps (capped like the
    backoff), the last one at or after the end of the window.
    """
    deadline = core.retry.recovery_deadline(sent, failed)
    gap, clock = first_gap, failed
    while True:
        yield Sleep(gap)
        found = yield from recover()
        if found is not None:
            return found
        clock = max(clock + gap, core.monotonic())  # a sleep lasts at least its gap
        if clock >= deadline:
            return None
        gap = min(max(gap * 2, core.retry.initial_delay), core.retry.max_delay, deadline - clock)


def cleanup_flow(cleanup: Callable[[T], Flow[None]], result: T) -> Flow[None]:
    """Run ``cleanup(result)``; its failure is logged, never raised (``result`` must not be lost)."""
    try:
        yield from cleanup(result)
    except DashScopeError as exc:
        log.warning("DashScope: could not check for duplicates of %s: %s", getattr(result, "id", result), exc)


def call_flow(
    core: ClientCore, method: str, path: str, model: type[M], *, max_retries: int | None = None
) -> Flow[M]:
    """A request without a body that is safe to repeat (retried by the policy), parsed into ``model``."""
    return request_flow(
        core,
        lambda: core.build_request(method, path),
        lambda r: core.parse(r, model),
        max_retries=max_retries,
    )


def ambiguous_outcome(outcome: StepResult) -> bool:
    """Whether the service may have acted on a request that ended so (a timeout, a drop, 408, >= 500)."""
    if isinstance(outcome, httpx.Response):
        return outcome.status_code == 408 or outcome.status_code >= 500
    return isinstance(outcome, httpx.TransportError) and not _never_sent(outcome)


def _never_sent(exc: httpx.TransportError) -> bool:
    """Whether the request certainly never reached the service (so re-sending cannot duplicate)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
