"""The flow step protocol: how the I/O-free calls of the client talk to the driver that sends them.

Every API call is written once as a *flow*: a generator that yields steps and receives what became of
them (the pattern of httpx's ``Auth.auth_flow``).

* :class:`Send` -- send this request; the driver sends back the :class:`httpx.Response` (body read,
  unless ``stream=True`` and the status is a success) or the :class:`httpx.TransportError` it raised.
* :class:`Sleep` -- wait this long; the driver sends back ``None``.
* :class:`Emit` -- items of an auto-paginating listing, handed to the caller's iterator.

A flow's return value is the call's result. :class:`~.sync.DashScopeClient` drives flows with
``httpx.Client`` and ``time.sleep``, :class:`~.async_.AsyncDashScopeClient` with ``httpx.AsyncClient``
and ``anyio.sleep``; both step through a flow with :func:`advance`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

T = TypeVar("T")
ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class Send:
    """Step: send ``request``; with ``stream`` a successful response is handed back unread."""

    request: httpx.Request
    stream: bool = False


@dataclass(frozen=True)
class Sleep:
    """Step: sleep ``seconds`` before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[T]):
    """Step: hand ``items`` (one page of a listing) to the caller."""

    items: Sequence[T]


Step = Send | Sleep | Emit[Any]
#: What the driver sends back into a flow for its last step: the response or the transport error of a
#: :class:`Send`, ``None`` after a :class:`Sleep` or an :class:`Emit`.
StepResult = httpx.Response | httpx.TransportError | None
Flow = Generator[Step, StepResult, T]
#: A flow that hands the items of a paginated listing to the caller (``Emit`` steps) and returns nothing.
Listing = Generator[Send | Sleep | Emit[ItemT], StepResult, None]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A flow's result, once it has returned (see :func:`advance`)."""

    value: T


def advance(flow: Flow[T], result: StepResult = None, *, listing: bool = False) -> Step | Done[T]:
    """
    Send ``result`` (of the previous step) into ``flow``; return its next step, or :class:`Done`.

    What the two clients' drivers share: they only perform the :class:`Send` and :class:`Sleep` steps
    (and hand a ``listing``'s :class:`Emit` items to the caller).
    """
    try:
        step = flow.send(result)
    except StopIteration as stop:
        return Done(stop.value)
    if isinstance(step, Emit) and not listing:
        raise TypeError("a single-result flow emitted items")
    return step
