"""The Batches endpoints, and finding or cancelling a batch by the idempotency key it carries."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping  # noqa: F401 (see below)
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client._flow import Flow, Listing
from airflow_provider_dashscope_batch.client._pagination import collect_flow, paginate_flow, search_flow
from airflow_provider_dashscope_batch.client._params import (
    CLOCK_SKEW,
    FILTER_SLACK,
    MAX_BATCH_PAGE_SIZE,
    MAX_INPUT_FILE_IDS,
    TimeFilter,
    check_page_size,
    join_values,
    parse_completion_window,
    quote_segment,
    time_filters,
    validate_metadata,
)
from airflow_provider_dashscope_batch.client._request import call_flow, request_flow
from airflow_provider_dashscope_batch.client.errors import (
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
)
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.client.types import Batch, BatchPage, BatchStatus

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._core import ClientCore

log = logging.getLogger("airflow_provider_dashscope_batch.client")
# AsyncIterator and Iterator: the clients' listing methods are typed ``Iterator[...]`` (``AsyncIterator``)
# in the globals of the flow they wrap (this module), where typing.get_type_hints resolves them.


def create_batch_flow(
    core: ClientCore,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str | timedelta = "24h",
    metadata: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> Flow[Batch]:
    """
    Create a batch (``POST /batches``).

    ``metadata["idempotency_key"]`` is set to ``idempotency_key`` (a fresh one when ``None``). After
    an ambiguous failure (timeout, dropped connection, 5xx) the batch list is searched for that key
    before the request is re-sent, so a retry never creates a second batch. Pass a stable key to make
    separate calls (e.g. task retries) idempotent too.

    :param input_file_id: Id of the uploaded JSONL file.
    :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test``.
    :param completion_window: ``"24h"`` .. ``"336h"`` / ``"14d"``, or a whole-hour timedelta.
    :param metadata: ``ds_name`` (<= 100 chars), ``ds_description`` (<= 200 chars),
        ``ds_batch_finish_callback`` (URL) and other string pairs.
    :param idempotency_key: Key identifying this creation across retries.
    """
    if not input_file_id:
        raise LocalValidationError("input_file_id is required")
    if not endpoint or not endpoint.startswith("/"):
        raise LocalValidationError(
            f"endpoint must be a path such as '/v1/chat/completions', got {endpoint!r}"
        )
    meta = validate_metadata(metadata)
    existing = meta.get(IDEMPOTENCY_KEY)
    if existing is not None and idempotency_key is not None and existing != idempotency_key:
        raise LocalValidationError(
            f"metadata[{IDEMPOTENCY_KEY!r}] and idempotency_key differ; pass only one of them"
        )
    key = idempotency_key or existing or uuid.uuid4().hex
    meta[IDEMPOTENCY_KEY] = key
    body = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": parse_completion_window(completion_window),
        "metadata": meta,
    }
    started = core.now()
    return (
        yield from request_flow(
            core,
            lambda: core.build_request("POST", "/batches", json=body),
            lambda r: core.parse(r, Batch),
            idempotent=False,
            recover=lambda: find_batch_flow(
                core, idempotency_key=key, input_file_id=input_file_id, created_after=started
            ),
            cleanup=lambda kept: cancel_duplicates_flow(
                core, idempotency_key=key, input_file_id=input_file_id, keep_batch_id=kept.id
            ),
        )
    )


def find_batch_flow(
    core: ClientCore,
    *,
    idempotency_key: str,
    input_file_id: str | None = None,
    created_after: datetime | None = None,
    ds_name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Flow[Batch | None]:
    """
    Find the newest batch carrying ``metadata["idempotency_key"]``, if any.

    :param idempotency_key: The key given to (or minted by) :meth:`create_batch`.
    :param input_file_id: The batch's input file id; ``None``: any input file.
    :param created_after: Only batches created at or after this aware time (minus clock skew).
    :param ds_name: List only batches whose name contains this (the service's fuzzy filter), e.g. a name
        that carries the key, when the input file is not known.
    :param metadata: Further metadata pairs the batch must carry.
    """
    threshold = (created_after - CLOCK_SKEW).timestamp() if created_after is not None else None
    return (
        yield from search_flow(
            _keyed_batches(core, input_file_id, created_after, ds_name),
            lambda b: (
                _carries_key(b, idempotency_key, input_file_id, metadata)
                and (threshold is None or (b.created_at or 0) >= threshold)
            ),
        )
    )


def cancel_duplicates_flow(
    core: ClientCore, *, idempotency_key: str, input_file_id: str, keep_batch_id: str
) -> Flow[list[Batch]]:
    """
    Cancel the unfinished batches of ``input_file_id`` with ``idempotency_key`` but ``keep_batch_id``.

    A create that the service acted on after the client gave up on it (past the recovery window)
    leaves a second batch with the same key; call this with the batch you kept (e.g. from a wait loop
    that already lists batches) to stop the duplicate before it runs (and bills) requests. Each cancel
    is logged as a warning naming both ids; a batch that finished meanwhile is skipped.

    :param idempotency_key: The key of the create.
    :param input_file_id: The batches' input file id.
    :param keep_batch_id: The batch to keep.
    :return: The cancelled batches, as the cancel returned them.
    """
    duplicates = yield from collect_flow(
        _keyed_batches(core, input_file_id, None),
        lambda b: (
            _carries_key(b, idempotency_key, input_file_id)
            and b.id != keep_batch_id
            and not b.status.is_terminal
        ),
    )
    cancelled: list[Batch] = []
    for batch in duplicates:
        log.warning(
            "DashScope batch %s duplicates batch %s (idempotency key %s); cancelling it",
            batch.id,
            keep_batch_id,
            idempotency_key,
        )
        try:
            cancelled.append((yield from cancel_batch_flow(core, batch.id)))
        except (InvalidRequestError, NotFoundError) as exc:
            log.warning("DashScope batch %s could not be cancelled: %s", batch.id, exc)
    return cancelled


def _keyed_batches(
    core: ClientCore, input_file_id: str | None, created_after: datetime | None, ds_name: str | None = None
) -> Listing[Batch]:
    """The batch listing narrowed to ``input_file_id`` (unless it is several ids), a creation time, a name."""
    return list_batches_flow(
        core,
        ds_name=ds_name,
        input_file_ids=[input_file_id] if input_file_id and "," not in input_file_id else None,
        create_after=created_after - FILTER_SLACK if created_after is not None else None,
    )


def retrieve_batch_flow(core: ClientCore, batch_id: str, *, max_retries: int | None = None) -> Flow[Batch]:
    """
    Get a batch (``GET /batches/{id}``; the service keeps batches of the last 30 days).

    :param batch_id: The batch id.
    :param max_retries: Retries of this call, overriding the client's (0: send once, e.g. when the
        caller owns the retries, like a poller).
    """
    return call_flow(core, "GET", f"/batches/{quote_segment(batch_id)}", Batch, max_retries=max_retries)


def cancel_batch_flow(core: ClientCore, batch_id: str) -> Flow[Batch]:
    """
    Cancel a batch (``POST /batches/{id}/cancel``); it moves to ``cancelling`` and later ``cancelled``.

    Cancelling twice is harmless, so the request is retried like a read.

    :param batch_id: The batch id.
    """
    return call_flow(core, "POST", f"/batches/{quote_segment(batch_id)}/cancel", Batch)


def list_batches_flow(
    core: ClientCore,
    *,
    after: str | None = None,
    ds_name: str | None = None,
    input_file_ids: Iterable[str] | str | None = None,
    status: Iterable[BatchStatus | str] | BatchStatus | str | None = None,
    create_after: TimeFilter | None = None,
    create_before: TimeFilter | None = None,
    page_size: int | None = None,
    max_retries: int | None = None,
) -> Listing[Batch]:
    """
    Iterate over batches (``GET /batches``), newest first, fetching further pages as needed.

    A caller that shows one page at a time (a UI) starts ``after`` the last batch it showed and stops
    after ``page_size`` batches: no further page is asked for.

    :param after: Start after this batch id (the cursor; None: from the newest).
    :param ds_name: Fuzzy match on the batch name.
    :param input_file_ids: Only batches of these input files (at most 20).
    :param status: Only batches in these statuses.
    :param create_after: Only batches created after this time (datetime -> ``yyyyMMddHHmmss``).
    :param create_before: Only batches created before this time.
    :param page_size: Batches per request (1..100).
    :param max_retries: Retries of each page's request, overriding the client's (0: send once).
    """
    params = _list_params(ds_name, input_file_ids, status, create_after, create_before, page_size)
    return paginate_flow(core, "/batches", params, BatchPage, max_retries, after=after)


def _list_params(
    ds_name: str | None,
    input_file_ids: Iterable[str] | str | None,
    status: Iterable[BatchStatus | str] | BatchStatus | str | None,
    create_after: TimeFilter | None,
    create_before: TimeFilter | None,
    page_size: int | None,
) -> dict[str, Any]:
    check_page_size(page_size, MAX_BATCH_PAGE_SIZE)
    ids = join_values(input_file_ids)
    if ids is not None and len(ids.split(",")) > MAX_INPUT_FILE_IDS:
        raise LocalValidationError(f"input_file_ids accepts at most {MAX_INPUT_FILE_IDS} ids")
    return {
        "ds_name": ds_name,
        "input_file_ids": ids,
        "status": status.value if isinstance(status, BatchStatus) else join_values(status),
        **time_filters(create_after, create_before),
        "limit": page_size,
    }


def _carries_key(
    batch: Batch, idempotency_key: str, input_file_id: str | None, metadata: Mapping[str, str] | None = None
) -> bool:
    carried = batch.metadata or {}
    return (
        carried.get(IDEMPOTENCY_KEY) == idempotency_key
        and (input_file_id is None or batch.input_file_id == input_file_id)
        and all(carried.get(name) == value for name, value in (metadata or {}).items())
    )
