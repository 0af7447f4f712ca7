"""Grouped status reads: one ``GET /batches?input_file_ids=...`` answers up to 20 waits.

Waiting for many batches one ``GET /batches/{id}`` each makes the account's retrieve limit (1000/min) the
ceiling of how many batches a deployment can watch. The list endpoint filters by up to 20 input file ids
and returns whole batch objects, so a *grouped read* asks once for the statuses of 20 waits (paging when a
file has several batches) and falls back to a retrieve for a wait read alone, a wait without an input file
id, or a batch the list did not show.

* :func:`grouped_read_flow` -- the I/O-free read of a set of waits, driven by either client face
  (``client.run_flow(lambda core: grouped_read_flow(core, refs))``).
* :class:`StatusReader` -- one per (event loop, connection): waits of every trigger register as they fall
  due (or hand it their whole poll loop, :meth:`StatusReader.follow`), and each round reads the due waits
  together, so 1000 deferred waits cost about 50 list requests per poll instead of 1000 retrieves.

A listed batch carrying the same ``metadata["idempotency_key"]`` and input file as a waited-for batch but
another id is a duplicate creation; reads report it at no extra request. A wait whose create was ambiguous
(``BatchRef.watch_until``) is read through the list even alone, so a late duplicate shows up in its own
reads (see :mod:`~airflow_provider_dashscope_batch.waiting.late`).

The reader sends its requests through the client's public
:meth:`~airflow_provider_dashscope_batch.client.AsyncDashScopeClient.run_flow`; nothing here reaches into
the client's internals, and nothing imports Airflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._flow import Flow
from airflow_provider_dashscope_batch.client._params import MAX_BATCH_PAGE_SIZE, MAX_INPUT_FILE_IDS
from airflow_provider_dashscope_batch.client._request import request_flow
from airflow_provider_dashscope_batch.client.errors import APIStatusError, DashScopeError
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.client.ratelimit import RequestKind
from airflow_provider_dashscope_batch.client.resources.batches import retrieve_batch_flow
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.waiting.protocol import PollAction, PollStep

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.waiting.protocol import BatchWait

__all__ = [
    "DEFAULT_GATHER_SECONDS",
    "BatchRef",
    "Listed",
    "StatusRead",
    "StatusReader",
    "grouped_read_flow",
    "status_reader",
]

#: Longest a due read waits for others to share its list request (how early a followed poll may be read).
DEFAULT_GATHER_SECONDS = 0.5


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


def grouped_read_flow(
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


# ------------------------------------------------------------------------------------ the async reader
@dataclass(eq=False, slots=True)
class _Wait:
    """One :meth:`StatusReader.read`: answered with the batch once."""

    ref: BatchRef
    future: asyncio.Future[Any]
    latest: float  # loop time by which its round must start
    on_duplicate: Callable[[Batch], None] | None


@dataclass(eq=False, slots=True)
class _Follower(_Wait):
    """
    One :meth:`StatusReader.follow`: polled on its wait's schedule until the wait ends.

    Allocated once per wait; between polls the reader holds only its heap entry (a tuple of two numbers,
    which the garbage collector stops tracking) and its sequence number.
    """

    wait: BatchWait | None = None
    gather: float = 0.0
    seq: int = 0


class StatusReader:
    """
    Reads the statuses of every wait of one client (one connection in one event loop) in shared rounds.

    A wait either calls :meth:`read` when its poll is due and gets its batch back, or hands its whole
    poll loop to :meth:`follow`. A round reads up to 20 due waits with one list request. It starts as
    soon as 20 waits are due, when a read has waited its ``gather`` seconds for company, or when a
    followed wait falls due: its round then also takes the followed waits due within their ``gather``
    seconds, read that much early, so a followed poll is never late. At most ``max_rounds``
    rounds are under way at once, so responses arrive spread out rather than as a burst of pages. When the
    connection's list budget is spent but its retrieve budget has room, a round reads its waits by id
    instead of waiting for a list token. A cancelled :meth:`read` or :meth:`follow` leaves nothing behind.

    :param client: The async client all reads go through (its rate budget and in-flight bound apply).
    :param gather: Longest a due wait waits for others to share a request.
    :param max_rounds: Rounds under way at once.
    """

    def __init__(
        self, client: AsyncDashScopeClient, *, gather: float = DEFAULT_GATHER_SECONDS, max_rounds: int = 16
    ) -> None:
        # weak: the module's reader registry is keyed (weakly) by the client, so a strong reference here
        # would keep every closed shared client and its reader alive for the life of the triggerer
        self._client = weakref.ref(client)
        self.gather = gather
        self._due: dict[_Wait, None] = {}
        self._in_round = 0
        self._heap: list[tuple[float, int]] = []  # (due loop time, seq) of the followers between polls
        self._scheduled: dict[int, _Follower] = {}
        self._seq = itertools.count(1)
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._wake_at = float("inf")  # when the driver next looks at the due waits unprompted
        self._slots = asyncio.Semaphore(max_rounds)
        self._rounds: set[asyncio.Task[None]] = set()

    async def read(
        self,
        batch_id: str,
        input_file_id: str | None = None,
        idempotency_key: str | None = None,
        *,
        watch_until: float | None = None,
        on_duplicate: Callable[[Batch], None] | None = None,
        gather: float | None = None,
    ) -> Batch:
        """
        Read one batch in the next round.

        :param batch_id: The batch id.
        :param input_file_id: Its input file id (enables the grouped list read).
        :param idempotency_key: Its idempotency key (enables the duplicate check).
        :param watch_until: List the batch even alone until then (see :attr:`BatchRef.watch_until`).
        :param on_duplicate: Called with each other batch the list shows carrying the same key and file.
        :param gather: Longest this read waits for others to share its request (default: the reader's).
        :raises DashScopeError: The request reading it failed (sent once; the caller owns retries).
        """
        loop = asyncio.get_running_loop()
        ref = BatchRef(batch_id, input_file_id, idempotency_key, watch_until)
        wait = _Wait(ref, loop.create_future(), 0.0, on_duplicate)
        self._make_due(wait, loop.time() + (self.gather if gather is None else gather))
        try:
            return await wait.future
        finally:
            self._due.pop(wait, None)
            wait.future.cancel()  # no-op once answered

    async def follow(
        self,
        ref: BatchRef,
        wait: BatchWait,
        first: PollStep,
        *,
        on_duplicate: Callable[[Batch], None] | None = None,
        gather: float | None = None,
    ) -> PollStep:
        """
        Run ``wait``'s poll loop in the reader's rounds until the wait ends; return its last decision.

        The same reads as calling :meth:`read` after each decision of the wait, without the objects
        each such poll keeps alive until the next: the reader keeps every follower's next poll time in
        one heap and sleeps on one timer, and a listed batch is parsed only when the wait needs it
        (:meth:`BatchWait.on_read <airflow_provider_dashscope_batch.waiting.BatchWait.on_read>`).
        Thousands of waits in one triggerer therefore add next to nothing to the garbage collector's
        oldest generation, whose full collections (over the triggerer's whole heap) stall the loop.

        :param ref: The batch waited for.
        :param wait: Its wait (poller, progress log, last batch).
        :param first: The wait's first decision (``wait.start(now)``); ``WAIT`` to poll.
        :param on_duplicate: Called with each other batch the list shows carrying the same key and file.
        :param gather: How early a poll may be read to share a round with polls due now (default: the
            reader's).
        """
        if first.action is not PollAction.WAIT:
            return first
        loop = asyncio.get_running_loop()
        follower = _Follower(
            ref,
            loop.create_future(),
            0.0,
            on_duplicate,
            wait=wait,
            gather=self.gather if gather is None else gather,
        )
        self._schedule(follower, first.delay)
        try:
            return await follower.future
        finally:
            self._scheduled.pop(follower.seq, None)
            self._due.pop(follower, None)
            follower.future.cancel()  # no-op once answered; a round under way then skips it

    @property
    def client(self) -> AsyncDashScopeClient:
        """The client all reads go through (alive while any wait uses it: each wait borrows it)."""
        client = self._client()
        if client is None:
            raise RuntimeError("the status reader's client is gone")
        return client

    def wake(self, batch_ids: Collection[str]) -> int:
        """
        Read the followed waits of ``batch_ids`` in the next round (a finish event named them).

        Used by :mod:`~airflow_provider_dashscope_batch.events.wake`; the round reads the batches as usual,
        so a wait ends only on the status the service reports. Returns how many waits were woken.
        """
        now = asyncio.get_running_loop().time()
        woken = [seq for seq, f in self._scheduled.items() if f.ref.batch_id in batch_ids]
        for seq in woken:  # its heap entry stays behind and is skipped
            self._make_due(self._scheduled.pop(seq), now)
        return len(woken)

    def _make_due(self, wait: _Wait, latest: float) -> None:
        wait.latest = latest
        self._due[wait] = None
        if len(self._due) >= MAX_INPUT_FILE_IDS or latest < self._wake_at:
            self._wake.set()
        self._ensure_driver()

    def _schedule(self, follower: _Follower, delay: float) -> None:
        loop = asyncio.get_running_loop()
        follower.seq = next(self._seq)
        self._scheduled[follower.seq] = follower
        due = loop.time() + delay
        heapq.heappush(self._heap, (due, follower.seq))
        if due < self._wake_at:
            self._wake.set()
        self._ensure_driver()

    def _ensure_driver(self) -> None:
        if self._driver is None or self._driver.done():
            loop = asyncio.get_running_loop()
            self._driver = loop.create_task(self._drive(), name="dashscope-status-reader")

    def _next_look(self) -> float:
        """Loop time at which the driver must look again: a due wait's gather ends, or a follower is due."""
        latest = min((wait.latest for wait in self._due), default=float("inf"))
        return min(latest, self._heap[0][0]) if self._heap else latest

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due or self._scheduled:
            now = loop.time()
            self._take_due_followers(now)
            if len(self._due) < MAX_INPUT_FILE_IDS and (left := self._next_look() - now) > 0:
                self._wake.clear()
                self._wake_at = now + left
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                self._wake_at = float("inf")
                continue
            await self._slots.acquire()
            waits = list(itertools.islice(self._due, MAX_INPUT_FILE_IDS))
            if not waits:  # the due waits were cancelled meanwhile
                self._slots.release()
                continue
            for wait in waits:
                del self._due[wait]
            self._in_round += len(waits)
            task = loop.create_task(self._round(waits))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)

    def _take_due_followers(self, now: float) -> None:
        """
        Make the followers due by ``now`` due; fill their round with followers due within their gather.

        Every follower's next poll is known, so instead of keeping a due poll waiting for company, the
        round takes the polls that fall due soon and reads them a little early (by at most ``gather``).
        """
        heap, scheduled = self._heap, self._scheduled
        while heap:
            due, seq = heap[0]
            follower = scheduled.get(seq)
            if follower is not None and due > now:  # read early only to fill a round that goes now
                full = len(self._due) >= MAX_INPUT_FILE_IDS
                if not self._due or full or due - follower.gather > now:
                    return
            heapq.heappop(heap)
            if follower is not None:  # else: its wait was cancelled meanwhile
                del scheduled[seq]
                self._make_due(follower, due)

    async def _round(self, waits: list[_Wait]) -> None:
        buckets = self.client.rate_budget.buckets
        # the list budget is a tenth of the retrieve budget: when it is spent, spare retrieves answer
        lists = buckets[RequestKind.BATCH_LIST].available() >= 1 or (
            buckets[RequestKind.BATCH_RETRIEVE].available() < len(waits)
        )
        try:
            refs = [w.ref for w in waits]
            read = await self.client.run_flow(
                lambda core: grouped_read_flow(core, refs, lists=lists, parse=False)
            )
        except Exception as exc:  # every wait of the round must hear of it
            read = StatusRead(errors={w.ref.batch_id: _as_error(exc) for w in waits})
        except BaseException:
            for wait in waits:
                wait.future.cancel()
            raise
        finally:
            self._in_round -= len(waits)
            self._slots.release()
        now = time.time()
        for wait in waits:
            if wait.future.done():  # cancelled meanwhile
                continue
            batch_id = wait.ref.batch_id
            if wait.on_duplicate is not None:
                for duplicate in read.duplicates.get(batch_id, ()):
                    wait.on_duplicate(duplicate)
            if isinstance(wait, _Follower):
                self._feed(wait, read, now)
            elif batch_id in read.batches:
                wait.future.set_result(read.batches[batch_id])
            elif batch_id in read.listed:
                try:
                    wait.future.set_result(read.parse(read.listed[batch_id]))
                except DashScopeError as exc:
                    wait.future.set_exception(exc)
            else:  # every ref of a read ends in batches, listed or errors
                wait.future.set_exception(read.errors[batch_id])

    def _feed(self, follower: _Follower, read: StatusRead, now: float) -> None:
        """Feed one follower's read to its wait; poll it again later or end it."""
        wait, batch_id = follower.wait, follower.ref.batch_id
        assert wait is not None
        try:
            if batch_id in read.listed:
                listed = read.listed[batch_id]
                step = wait.on_read(BatchStatus(listed.status), now, lambda: read.parse(listed))
            elif batch_id in read.batches:
                step = wait.on_batch(read.batches[batch_id], now)
            else:
                raise read.errors[batch_id]
        except (DashScopeError, ValueError) as exc:  # ValueError: a status this client does not know
            step = wait.on_error(_as_error(exc), now)
        if step.action is PollAction.WAIT:
            self._schedule(follower, step.delay)
        else:
            follower.future.set_result(step)


def _as_error(exc: Exception) -> DashScopeError:
    return exc if isinstance(exc, DashScopeError) else DashScopeError(f"status read failed: {exc!r}")


_readers: weakref.WeakKeyDictionary[AsyncDashScopeClient, StatusReader] = weakref.WeakKeyDictionary()


def status_reader(client: AsyncDashScopeClient) -> StatusReader:
    """The reader shared by every user of ``client`` (the per-loop shared client of a connection)."""
    reader = _readers.get(client)
    if reader is None:
        reader = _readers[client] = StatusReader(client)
    return reader
