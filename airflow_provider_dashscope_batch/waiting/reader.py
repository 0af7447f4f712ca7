"""
The shared status reader: the waits of every trigger of one connection read their batches together.

:class:`StatusReader` -- one per (event loop, connection): waits register as they fall due (or hand it
their whole poll loop, :meth:`StatusReader.follow`), and each round reads up to 20 due waits with the
client's grouped read (:meth:`read_statuses
<airflow_provider_dashscope_batch.client.AsyncDashScopeClient.read_statuses>`, one list request per 20
input files), so 1000 deferred waits cost about 50 list requests per poll instead of 1000 retrieves. The
client builds and decodes every request and says whether its rate budget prefers lists; the reader only
schedules. Nothing here imports Airflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client import MAX_INPUT_FILE_IDS
from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.status import BatchRef, StatusRead
from airflow_provider_dashscope_batch.client.types import Batch, BatchStatus
from airflow_provider_dashscope_batch.waiting.protocol import PollAction, PollStep

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.waiting.protocol import BatchWait

__all__ = ["DEFAULT_GATHER_SECONDS", "StatusReader", "status_reader"]

#: Longest a due read waits for others to share its list request (how early a followed poll may be read).
DEFAULT_GATHER_SECONDS = 0.5


# ------------------------------------------------------------------------------------ the async reader
@dataclass(eq=False, slots=True)
class _Wait:
    """One :meth:`StatusReader.read`: answered with the batch once."""

    ref: BatchRef
    future: asyncio.Future[Any]
    latest: float  # loop time by which its round must start
    on_duplicate: Callable[[Batch], object] | None


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
        on_duplicate: Callable[[Batch], object] | None = None,
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
        on_duplicate: Callable[[Batch], bool] | None = None,
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
        :param on_duplicate: Called with each other batch the list shows carrying the same key and file;
            ``True`` ends the wait there (``follow`` then returns a ``WAIT`` step: the caller stopped it).
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
        client = self.client
        try:
            refs = [w.ref for w in waits]
            read = await client.read_statuses(
                refs, lists=client.rate_budget.lists_first(len(refs)), parse=False
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
                stop = False
                for duplicate in read.duplicates.get(batch_id, ()):
                    stop = wait.on_duplicate(duplicate) is True or stop
                if stop and isinstance(wait, _Follower):
                    wait.future.set_result(PollStep(PollAction.WAIT))
                    continue
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
