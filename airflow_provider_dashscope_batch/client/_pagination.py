"""Pagination: following ``after`` cursors through a listing, and searching or collecting its items."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_dashscope_batch.client._flow import Emit, Flow, Listing, StepResult
from airflow_provider_dashscope_batch.client._request import request_flow
from airflow_provider_dashscope_batch.client.errors import DashScopeError

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._core import ClientCore
    from airflow_provider_dashscope_batch.client.types import Page

ItemT = TypeVar("ItemT")


def paginate_flow(
    core: ClientCore,
    path: str,
    params: dict[str, Any],
    model: type[Page[ItemT]],
    max_retries: int | None = None,
    *,
    after: str | None = None,
) -> Listing[ItemT]:
    """Follow ``after`` cursors through every page past ``after``, emitting each page's items."""
    cursor = after
    while True:
        query = {**params, "after": cursor}
        page = yield from request_flow(
            core,
            lambda q=query: core.build_request("GET", path, params=q),  # type: ignore[misc]
            lambda r: core.parse(r, model),
            max_retries=max_retries,
        )
        if page.data:
            yield Emit(page.data)
        next_cursor = page.last_id or (page.data[-1].id if page.data else None)
        if not page.has_more or not page.data or next_cursor is None:
            return
        if next_cursor == cursor:
            raise core.scrub(DashScopeError(f"GET {path}: pagination did not advance past {cursor!r}"))
        cursor = next_cursor


def search_flow(listing: Listing[ItemT], match: Callable[[ItemT], bool]) -> Flow[ItemT | None]:
    """Run a paginating ``listing`` until ``match`` accepts an item; return it (or ``None``)."""
    try:
        step = next(listing)
        while True:
            if isinstance(step, Emit):
                for item in step.items:
                    if match(item):
                        return item
                outcome: StepResult = None
            else:
                outcome = yield step
            step = listing.send(outcome)
    except StopIteration:
        return None
    finally:
        listing.close()


def collect_flow(listing: Listing[ItemT], match: Callable[[ItemT], bool]) -> Flow[list[ItemT]]:
    """Run a paginating ``listing`` to its end; return every item ``match`` accepts."""
    found: list[ItemT] = []

    def keep(item: ItemT) -> bool:
        if match(item):
            found.append(item)
        return False

    yield from search_flow(listing, keep)
    return found
