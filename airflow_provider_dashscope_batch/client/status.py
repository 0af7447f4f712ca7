"""Grouped status reads: one ``GET /batches?input_file_ids=...`` answers the status reads of up to 20 waits.

Waiting for many batches one ``GET /batches/{id}`` each makes the account's retrieve limit (1000/min) the
ceiling of how many batches a deployment can watch. The list endpoint filters by up to 20 input file ids
and returns whole batch objects, so a *grouped read* (:func:`read_statuses_flow`, the clients'
``read_statuses``) asks once for the statuses of 20 waits (paging when a file has several batches) and
falls back to a retrieve for a wait read alone, a wait without an input file id, or a batch the list did
not show.

A listed batch carrying the same ``metadata["idempotency_key"]`` and input file as a waited-for batch but
another id is a duplicate creation; reads report it at no extra request. A wait whose create was ambiguous
(``BatchRef.watch_until``) is read through the list even alone, so a late duplicate shows up in its own
reads (see :mod:`.copies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._flow import Flow
from airflow_provider_dashscope_batch.client._params import MAX_BATCH_PAGE_SIZE, MAX_INPUT_FILE_IDS
from airflow_provider_dashscope_batch.client._request import request_flow
from airflow_provider_dashscope_batch.client.errors import APIStatusError, DashScopeError
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.client.resources.batches import retrieve_batch_flow
from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["BatchRef", "Listed", "StatusRead", "read_statuses_flow"]


@dataclass(frozen=True, slots=True)
class BatchRef:
    """
    A batch being waited for.

    :param batch_id: The batch id.
    :param input_file_id: Its input file id; without it the batch is read by id.
    :param idempotency_key: Its ``metadata["idempotency_key"]``, to spot duplicates in list pages.
    :param watch_until: Wall-clock epoch seconds until which a late duplicate of its create may appear
        (an ambiguous create): until then the batch is read through the list even when read alone.
    """

    batch_id: str
    input_file_id: str | None = None
    idempotency_key: str | None = None
    watch_until: float | None = None

    def watched(self, now: float) -> bool:
        """Whether reads at ``now`` must list the batch's input file (to see a late duplicate)."""
        return (
            self.watch_until is not None
            and now <= self.watch_until
            and bool(self.input_file_id and self.idempotency_key)
        )


@dataclass(frozen=True, slots=True)
class Listed:
    """
    A batch read through a list but not parsed yet (reads with ``parse=False``).

    :param status: Its status as listed (None if the service sent none).
    :param raw: Its JSON, parsed by :meth:`StatusRead.parse` only when a wait needs the batch.
    """

    status: str | None
    raw: bytes


@dataclass(frozen=True)
class StatusRead:
    """
    The outcome of a grouped read.

    :param batches: The batches read, by id.
    :param errors: Batches whose read failed, by id (the error of their list or retrieve request).
    :param duplicates: Other batches carrying the same idempotency key and input file as a waited-for
        batch, by the waited-for batch's id.
    :param listed: Batches read through a list but not parsed (reads with ``parse=False``), by id.
    :param redact: Scrubs the API key from an error text (the reading client's).
    """

    batches: dict[str, Batch] = field(default_factory=dict)
    errors: dict[str, DashScopeError] = field(default_factory=dict)
    duplicates: dict[str, tuple[Batch, ...]] = field(default_factory=dict)
    listed: dict[str, Listed] = field(default_factory=dict)
    redact: Callable[[str], str] = str

    def parse(self, listed: Listed) -> Batch:
        """Parse a batch left unparsed in :attr:`listed`."""
        return _batch(self.redact, listed.raw)


class _Page(msgspec.Struct):
    data: list[msgspec.Raw] = msgspec.field(default_factory=list)
    has_more: bool = False
    last_id: str | None = None


class _Head(msgspec.Struct):
    id: str
    status: str | None = None
    input_file_id: str | None = None
    metadata: dict[str, Any] | None = None


_page_decoder = msgspec.json.Decoder(_Page)
_head_decoder = msgspec.json.Decoder(_Head)


def _plan(refs: Iterable[BatchRef], lists: bool, now: float) -> tuple[list[list[BatchRef]], list[BatchRef]]:
    """
    Split waits into list groups (<= 20 input files; >= 2 waits, or a watched one) and single retrieves.

    Without ``lists`` only the watched waits are listed (their duplicate check needs the list).
    """
    by_file: dict[str, list[BatchRef]] = {}
    singles: list[BatchRef] = []
    for ref in refs:
        if ref.input_file_id and (lists or ref.watched(now)):
            by_file.setdefault(ref.input_file_id, []).append(ref)
        else:
            singles.append(ref)
    groups: list[list[BatchRef]] = []
    files = list(by_file.values())
    for start in range(0, len(files), MAX_INPUT_FILE_IDS):
        group = [ref for refs_of_file in files[start : start + MAX_INPUT_FILE_IDS] for ref in refs_of_file]
        if len(group) == 1 and not group[0].watched(now):
            singles.extend(group)
        else:
            groups.append(group)
    return groups, singles


def _list_flow(
    core: ClientCore, group: Sequence[BatchRef], read: StatusRead, parse: bool
) -> Flow[list[BatchRef]]:
    """Read one group through the list endpoint; return the waits the pages did not show."""
    wanted = {ref.batch_id: ref for ref in group}
    keys = {(ref.input_file_id, ref.idempotency_key): ref.batch_id for ref in group if ref.idempotency_key}
    files = ",".join(dict.fromkeys(ref.input_file_id for ref in group if ref.input_file_id))
    cursor: str | None = None
    missing = dict(wanted)
    while missing:
        params = {"input_file_ids": files, "limit": MAX_BATCH_PAGE_SIZE, "after": cursor}
        page = yield from request_flow(
            core,
            lambda q=params: core.build_request("GET", "/batches", params=q),  # type: ignore[misc]
            lambda r: _decode_page(core, r),
            max_retries=0,
        )
        for raw in page.data:
            head = _head_decoder.decode(raw)
            if head.id in missing:
                if parse:
                    read.batches[head.id] = _batch(core.redact, raw)
                else:
                    read.listed[head.id] = Listed(head.status, bytes(raw))
                del missing[head.id]
            elif keys and head.metadata and head.id not in wanted:
                owner = keys.get((head.input_file_id, head.metadata.get(IDEMPOTENCY_KEY)))
                if owner is not None:
                    found = read.duplicates.get(owner, ())
                    read.duplicates[owner] = (*found, _batch(core.redact, raw))
        cursor = page.last_id or (_head_decoder.decode(page.data[-1]).id if page.data else None)
        if not page.has_more or cursor is None:
            break
    return list(missing.values())


def _batch(redact: Callable[[str], str], raw: msgspec.Raw | bytes) -> Batch:
    try:
        return Batch.model_validate_json(raw if isinstance(raw, bytes) else bytes(raw))
    except ValueError as exc:
        raise APIStatusError(redact(f"could not parse a listed batch: {exc}"), status_code=200) from None


def _decode_page(core: ClientCore, response: httpx.Response) -> _Page:
    try:
        return _page_decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise APIStatusError(
            core.redact(f"could not parse the batch list: {exc}"), status_code=response.status_code
        ) from None


def read_statuses_flow(
    core: ClientCore, refs: Iterable[BatchRef], *, lists: bool = True, parse: bool = True
) -> Flow[StatusRead]:
    """
    Read the batches of ``refs``: list groups of 20 input files, retrieves for the rest, each request sent
    once (the caller owns retries); a failed request marks its waits in :attr:`StatusRead.errors`.

    :param lists: Use the list endpoint; ``False`` reads every batch by id, but for watched waits
        (:meth:`BatchRef.watched`), whose duplicate check needs the list.
    :param parse: Parse listed batches into :attr:`StatusRead.batches`; ``False`` leaves them in
        :attr:`StatusRead.listed`.
    """
    read = StatusRead(redact=core.redact)
    groups, singles = _plan(refs, lists, time.time())
    for group in groups:
        try:
            singles.extend((yield from _list_flow(core, group, read, parse)))
        except DashScopeError as exc:
            read.errors.update(dict.fromkeys((ref.batch_id for ref in group), exc))
    for ref in singles:
        try:
            read.batches[ref.batch_id] = yield from retrieve_batch_flow(core, ref.batch_id, max_retries=0)
        except DashScopeError as exc:
            read.errors[ref.batch_id] = exc
    return read
