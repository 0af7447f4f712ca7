"""
The finish watcher: one Asset event per finish of a batch this deployment created through a connection.

:class:`DashScopeBatchFinishTrigger` is a ``BaseEventTrigger`` for ``AssetWatcher``: the triggerer runs it,
and the scheduler records each event it yields on the watching Asset and queues the runs of the DAGs
scheduled on it, all through Airflow's own code. Its sources:

* **list polling** (always): every ``poll_interval`` seconds one ``GET /batches`` filtered on creation time
  (from the oldest of the connection's batches still running, else the newest batch listed), more pages
  only when more than 100 batches were created since; every region, no inbound traffic. A terminal
  batch on the page is the confirmation read.
* **the receiver's mailbox** (``mailbox_interval``): the finishes the api-server's receiver confirmed
  (:mod:`~.receiver`), read from the connection's mailbox Variable; each is confirmed with one
  ``GET /batches/{id}`` before it counts.
* **a RabbitMQ queue** that EventBridge targets (``queue_conn_id``, every ``queue_interval``;
  :mod:`~.rabbitmq`): each message's batch id is confirmed with one ``GET /batches/{id}`` before it
  counts; a round's messages are acknowledged only after its cursor write (below), so a watcher
  stopped before that leaves them in the queue for its successor, whose cursor check drops the ones
  already handed on. A message naming no batch, another's batch or an unknown one is acknowledged and
  dropped.

A finish counts only if its batch carries this connection's mark (:func:`~.tokens.is_marked`): made
with the connection's finish-events secret, so another connection's or another deployment's batches never
start our DAGs. The batches already finished when a watcher first runs are its baseline, not events.

Once per finish: the watcher keeps a cursor in the Variable ``dashscope_batch_watch.<conn_id>`` (through
the Task SDK: the triggerer's supervisor): the finishes it handed on, where the next list starts, the
mailbox position, and a lease. A round yields its new finishes and then adds them to the cursor in one
write, once the triggerer has taken the last of them (a generator resumes only when its consumer asks for
more). A triggerer stopped in the middle of a round never wrote those finishes: its successor yields them
again, so a finish is never lost, and only a finish already persisted before the stop is recorded twice.
The lease (renewed by the first round after a third of it has passed, and by every round that
changes the cursor; free after :data:`LEASE_ROUNDS` rounds without renewal) lets one watcher
of a connection hand on finishes at a time: a second triggerer that runs the same trigger (Airflow
assigns a trigger to one triggerer; during a failover two may briefly run it) stands by, and a round's
finishes are re-checked against the cursor just before they are yielded.

On Airflow 3.3 the rounds run in a shared stream in ack mode (``events.shared``): a finish enters the
cursor, and its queue messages are acknowledged, only once Airflow confirmed its event persisted
(:meth:`FinishWatch.advance`); until then it is in flight, and the cursor's list start stays at or
before it, so a triggerer killed before the confirmation leaves it to be found again. On 3.0 to 3.2
(:meth:`DashScopeBatchFinishTrigger.run`) a triggerer killed after a round's cursor write but before
Airflow stored its events (the triggerer holds them in memory until its next database write) loses them.

The catch-up event: up to Airflow 3.3 an asset-triggered run takes only the Asset events recorded up to
its queue row's time (apache/airflow#56050), so the tail of a burst of finishes can be in no run until
a later event of the Asset. :data:`DEFAULT_CATCH_UP_DELAY` seconds after a round's last finish the
watcher yields one event naming no batch (:func:`catch_up_payload`); the run it starts takes that tail
along. :func:`payloads` leaves it out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from airflow_provider_dashscope_batch.client.errors import DashScopeError, NotFoundError
from airflow_provider_dashscope_batch.events.callback import event_secrets
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, variable_key
from airflow_provider_dashscope_batch.events.rabbitmq import (
    Delivery,
    QueueSettings,
    QueueUnavailable,
    RabbitMQSource,
)
from airflow_provider_dashscope_batch.events.receiver import safe_id
from airflow_provider_dashscope_batch.events.tokens import is_marked
from airflow_provider_dashscope_batch.hooks.dashscope import ConnectionSetupError, DashScopeBatchHook

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = [
    "DEFAULT_CATCH_UP_DELAY",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_QUEUE_INTERVAL",
    "LEASE_ROUNDS",
    "LOOKBACK_SECONDS",
    "MIN_LEASE_SECONDS",
    "SHARED_STREAMS",
    "Cursor",
    "DashScopeBatchFinishTrigger",
    "FinishWatch",
    "Handed",
    "catch_up_payload",
    "cursor_key",
    "finish_payload",
    "payloads",
]

log = logging.getLogger(__name__)

#: Whether this Airflow has shared streams with acknowledgement after persistence (3.3 on).
SHARED_STREAMS = hasattr(BaseEventTrigger, "create_shared_stream_producer")

#: Seconds between two list polls (the guide: poll no more often than once a minute).
DEFAULT_POLL_INTERVAL = 60.0
#: Seconds after a round's last finish before the catch-up event (the scheduler has queued the finishes'
#: run by then; an earlier catch-up would join that run's queue row and take nothing along).
DEFAULT_CATCH_UP_DELAY = 30.0
#: Seconds between two reads of the RabbitMQ queue (no request to the service when it is empty).
DEFAULT_QUEUE_INTERVAL = 1.0
#: How far back the cursor remembers (a batch runs at most 14 days; one more day for the queue).
LOOKBACK_SECONDS = 15 * 86400
#: A lease not renewed for this many round intervals (and at least :data:`MIN_LEASE_SECONDS`) is free.
LEASE_ROUNDS = 3
#: The shortest time a lease is held, whatever the round interval.
MIN_LEASE_SECONDS = 30.0
#: Seconds a claimant waits before it re-reads the lease (the later of two concurrent claims wins).
CLAIM_SETTLE = 2.0
#: Clock slack on the creation-time filter (the service's clock and ours).
_SLACK = 300
_PAGE_SIZE = 100


def cursor_key(conn_id: str) -> str:
    """The Variable holding connection ``conn_id``'s watcher cursor."""
    return f"dashscope_batch_watch.{conn_id}"


@dataclass(frozen=True)
class Cursor:
    """
    What the watcher of one connection has handed on, persisted between rounds and triggerer restarts.

    :param owner: The lease holder (a random id per trigger instance).
    :param beat: When the holder last renewed it (epoch seconds).
    :param since: Creation time (epoch seconds) the next list starts from; None before the first round.
    :param seq: The mailbox sequence number handed on; None before the first mailbox read.
    :param done: ``batch_id -> created_at`` of the finishes handed on (and of the baseline).
    """

    owner: str = ""
    beat: float = 0.0
    since: int | None = None
    seq: int | None = None
    done: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The Variable's value."""
        return json.dumps(
            {"owner": self.owner, "beat": self.beat, "since": self.since, "seq": self.seq, "done": self.done}
        )

    @classmethod
    def from_value(cls, value: Any) -> Cursor:
        """Read a Variable's value back; a missing or malformed value is a fresh cursor."""
        try:
            data = json.loads(value) if isinstance(value, (str, bytes)) else value
            since, seq = data.get("since"), data.get("seq")
            return cls(
                str(data.get("owner") or ""),
                float(data.get("beat") or 0),
                None if since is None else int(since),
                None if seq is None else int(seq),
                {str(k): int(v) for k, v in dict(data.get("done") or {}).items()},
            )
        except (TypeError, ValueError, AttributeError):
            return cls()

    def pruned(self, now: float) -> Cursor:
        """Without the finishes older than :data:`LOOKBACK_SECONDS`."""
        floor = now - LOOKBACK_SECONDS
        return replace(self, done={k: v for k, v in self.done.items() if v >= floor})


def finish_payload(conn_id: str, batch: Batch) -> dict[str, Any]:
    """An event's payload (the Asset event's ``extra["payload"]``): what a results DAG needs."""
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


def catch_up_payload(conn_id: str, at: float) -> dict[str, Any]:
    """The catch-up event's payload: no batch; its run takes along the finishes no run took yet."""
    return {"conn_id": conn_id, "catch_up_at": at}


@dataclass(frozen=True)
class Handed:
    """
    A finish a gated round handed on: the shared stream's broker payload until Airflow persisted its event.

    :param batch_id: The batch.
    :param created: Its creation time (the cursor's ``done`` value).
    :param deliveries: The queue messages that named it, acknowledged on :meth:`FinishWatch.advance`.
    """

    batch_id: str
    created: int
    deliveries: tuple[Delivery, ...] = ()


def _get_variable(key: str) -> Any:
    from airflow.providers.common.compat.sdk import Variable

    return Variable.get(key, default=None)


def _set_variable(key: str, value: str) -> None:
    from airflow.providers.common.compat.sdk import Variable

    Variable.set(key, value)


class FinishWatch:
    """
    The watcher's rounds for one connection: list poll, mailbox, cursor and lease.

    The Task SDK's calls (Variables, the connection) run through ``asgiref``'s ``sync_to_async``, as
    common-compat's ``get_async_connection`` does: on Airflow 3.0 a call from another worker thread
    reaches the triggerer's supervisor on a second event loop, and concurrent calls then read each
    other's answers ("Response read out of order"), which kills the trigger runner.

    :param conn_id: The connection id.
    :param client: The connection's sync client (calls run in worker threads).
    :param secrets_: The connection's finish-events secrets (marks made under any of them count).
    :param poll_interval: Seconds between two list polls.
    :param mailbox_interval: Seconds between two mailbox reads; None: no mailbox.
    :param catch_up_delay: Seconds after a round's last finish before the catch-up event; None: none.
    :param queue: The RabbitMQ source; None: no queue.
    :param queue_interval: Seconds between two reads of the queue.
    :param get: Reads a Variable (blocking); default: the Task SDK's.
    :param put: Writes a Variable (blocking); default: the Task SDK's.
    :param clock: Epoch seconds now.
    """

    def __init__(
        self,
        conn_id: str,
        client: DashScopeClient,
        secrets_: tuple[str, ...],
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        mailbox_interval: float | None = None,
        catch_up_delay: float | None = DEFAULT_CATCH_UP_DELAY,
        queue: RabbitMQSource | None = None,
        queue_interval: float = DEFAULT_QUEUE_INTERVAL,
        get: Callable[[str], Any] | None = None,
        put: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn_id, self.client, self.secrets = conn_id, client, secrets_
        self.poll_interval, self.mailbox_interval = poll_interval, mailbox_interval
        self.catch_up_delay = catch_up_delay
        self.get, self.put, self.clock = get or _get_variable, put or _set_variable, clock
        self.queue = queue
        self.me = secrets.token_hex(8)
        self.interval = min(
            poll_interval, mailbox_interval or poll_interval, queue_interval if queue else poll_interval
        )
        self.lease = max(MIN_LEASE_SECONDS, LEASE_ROUNDS * self.interval)
        #: Seconds after which a round renews the lease even when nothing else changed.
        self.renew = self.lease / LEASE_ROUNDS
        self.requests = 0
        #: Gated rounds: ``batch_id -> created_at`` of the finishes handed on and not yet advanced.
        self.in_flight: dict[str, int] = {}
        self._writing = asyncio.Lock()  # one read-modify-write of the cursor at a time
        self._next_list = 0.0
        self._catch_up_at: float | None = None

    async def _load(self) -> Cursor:
        return Cursor.from_value(await sync_to_async(self.get)(cursor_key(self.conn_id)))

    async def _save(self, cursor: Cursor) -> None:
        await sync_to_async(self.put)(cursor_key(self.conn_id), cursor.to_json())

    async def _hold(self, cursor: Cursor) -> Cursor | None:
        """
        The cursor if this watcher holds the lease, else None.

        A free lease is claimed, and so is this watcher's own once it has expired: another instance may be
        claiming it at the same time, and only the claim read back after :data:`CLAIM_SETTLE` holds.
        """
        now = self.clock()
        live = now - cursor.beat < self.lease
        if cursor.owner == self.me and live:
            return cursor
        if cursor.owner and cursor.owner != self.me and live:
            return None
        await self._save(replace(cursor, owner=self.me, beat=now))
        await asyncio.sleep(CLAIM_SETTLE)
        cursor = await self._load()
        return cursor if cursor.owner == self.me else None

    async def round(self) -> AsyncIterator[dict[str, Any]]:
        """One round, its finishes written to the cursor once the last is taken (Airflow 3.0 to 3.2)."""
        async for payload, _ in self.rounds_step(gated=False):
            yield payload

    async def rounds_step(self, *, gated: bool) -> AsyncIterator[tuple[dict[str, Any], Handed | None]]:
        """
        One round: the catch-up (if due), the mailbox (if due), the queue, the list poll (if due).

        Yields each payload with, when ``gated``, the finish it hands on: such finishes stay out of the
        cursor (and their messages unacknowledged) until :meth:`advance`; until then they are in
        :attr:`in_flight`, not yielded again, and the cursor's list start stays at or before them.
        """
        async with self._writing:
            cursor = await self._hold(await self._load())
        if cursor is None:
            return
        held = cursor
        now = self.clock()
        if self._catch_up_at is not None and now >= self._catch_up_at:
            self._catch_up_at = None
            yield catch_up_payload(self.conn_id, now), None
        found: dict[str, Batch] = {}
        taken: list[Delivery] = []
        kept: set[int] = set()  # the tags of the messages handed on with a gated finish
        settled = False
        try:
            list_due = now >= self._next_list or cursor.since is None
            if self.mailbox_interval is not None:
                cursor, lost = await self._mailbox(cursor, found)
                list_due = list_due or lost
            if self.queue is not None:
                taken = await self._queue(self.queue, cursor, found)
            if list_due:
                cursor = await self._list(cursor, found, now)
                self._next_list = now + self.poll_interval
            async with self._writing:
                if found or gated:  # re-checked against the cursor as it is now; written once after the last
                    fresh = await self._load()
                    if fresh.owner != self.me:
                        return
                    new = [b for b in found.values() if b.id not in fresh.done and b.id not in self.in_flight]
                    for batch in new:
                        log.info(
                            "Batch %s of connection %r finished %s", batch.id, self.conn_id, batch.status
                        )
                        handed = None
                        if gated:
                            deliveries = tuple(d for d in taken if d.batch_id == batch.id)
                            handed = Handed(batch.id, _created(batch), deliveries)
                            self.in_flight[batch.id] = handed.created
                            kept.update(d.tag for d in deliveries)
                        yield finish_payload(self.conn_id, batch), handed
                    if new and self.catch_up_delay is not None:
                        self._catch_up_at = self.clock() + self.catch_up_delay
                    # gated: the baseline, and what advance() wrote meanwhile; the new finishes wait for it
                    done = (
                        {**cursor.done, **fresh.done}
                        if gated
                        else {**fresh.done, **{b.id: _created(b) for b in new}}
                    )
                    cursor = replace(fresh, since=cursor.since, seq=cursor.seq, done=done)
                if self.in_flight and cursor.since is not None:  # a finish not yet persisted is listed again
                    cursor = replace(cursor, since=min(cursor.since, *self.in_flight.values()))
                renewed = replace(cursor, beat=self.clock()).pruned(self.clock())
                # a quiet round writes nothing until the lease wants renewing (one write per lease round,
                # not one per queue or mailbox interval)
                if renewed != replace(held, beat=renewed.beat) or renewed.beat - held.beat >= self.renew:
                    await self._save(renewed)
            if self.queue is not None:
                await self.queue.settle([d for d in taken if d.tag not in kept], ack=True)
            settled = True
        finally:
            if self.queue is not None and not settled:
                await self.queue.settle([d for d in taken if d.tag not in kept], ack=False)

    async def advance(self, persisted: Sequence[Handed], failed: Sequence[Handed]) -> None:
        """
        Gated rounds: add the finishes whose events Airflow persisted to the cursor, then acknowledge their
        messages; give the messages of the others back to the queue (the list poll finds those again).
        """
        for handed in failed:
            self.in_flight.pop(handed.batch_id, None)
        if persisted:
            async with self._writing:
                cursor = await self._load()
                done = {**cursor.done, **{handed.batch_id: handed.created for handed in persisted}}
                await self._save(replace(cursor, done=done))
            for handed in persisted:
                self.in_flight.pop(handed.batch_id, None)
        if self.queue is not None:
            await self.queue.settle([d for handed in persisted for d in handed.deliveries], ack=True)
            await self.queue.settle([d for handed in failed for d in handed.deliveries], ack=False)

    async def _queue(self, queue: RabbitMQSource, cursor: Cursor, found: dict[str, Batch]) -> list[Delivery]:
        """
        Take the queue's waiting messages and confirm the batches they name; the messages, to settle.

        A queue that cannot be reached or is set up wrongly is logged and skipped: the list poll is the net.
        """
        try:
            taken = await queue.take()
        except QueueUnavailable as exc:
            log.warning("The finish queue of connection %r is unavailable (%s)", self.conn_id, exc)
            return []
        for delivery in taken:
            batch_id = delivery.batch_id
            if batch_id is None or batch_id in cursor.done or batch_id in found or batch_id in self.in_flight:
                continue
            batch = await self._confirm(batch_id)
            if batch is None:
                log.info(
                    "A queue message names batch %s, which is not a finish of connection %r; dropped",
                    safe_id(batch_id),
                    self.conn_id,
                )
            else:
                found[batch.id] = batch
        return taken

    async def _list(self, cursor: Cursor, found: dict[str, Batch], now: float) -> Cursor:
        """
        Read the batches created since the cursor's ``since``; the marked terminal ones are finishes.

        The next list starts at the creation time of the oldest marked batch still running, else of the
        newest batch listed: the service's own clock, so a skewed local clock loses nothing.
        """
        baseline = cursor.since is None
        floor = int(now) - LOOKBACK_SECONDS
        since = floor if cursor.since is None else max(cursor.since, floor)
        batches = await anyio.to_thread.run_sync(self._list_pages, since - _SLACK)
        running = [_created(b) for b in batches if not b.status.is_terminal and self._ours(b)]
        newest = max((_created(b) for b in batches), default=since)
        done = dict(cursor.done)
        for batch in batches:
            if batch.status.is_terminal and self._ours(batch) and batch.id not in done:
                if baseline:
                    done[batch.id] = _created(batch)
                else:
                    found.setdefault(batch.id, batch)
        return replace(cursor, since=min([*running, newest]), done=done)

    def _list_pages(self, create_after: int) -> list[Batch]:
        after = datetime.fromtimestamp(create_after, UTC)
        batches, page = [], self.client.list_batches(create_after=after, page_size=_PAGE_SIZE)
        self.requests += 1
        for n, batch in enumerate(page, 1):
            batches.append(batch)
            if n % _PAGE_SIZE == 0:
                self.requests += 1  # the listing fetches the next page when iterated on
        return batches

    async def _mailbox(self, cursor: Cursor, found: dict[str, Batch]) -> tuple[Cursor, bool]:
        """Confirm the receiver's posts since the cursor's ``seq``; whether some fell out of the mailbox."""
        mailbox = Mailbox.from_value(await sync_to_async(self.get)(variable_key(self.conn_id)))
        if cursor.seq is None:
            return replace(cursor, seq=mailbox.seq), False
        posted, lost = mailbox.since(cursor.seq)
        for batch_id in posted:
            if batch_id in cursor.done or batch_id in found:
                continue
            batch = await self._confirm(batch_id)
            if batch is not None:
                found[batch.id] = batch
        return replace(cursor, seq=mailbox.seq), lost

    async def _confirm(self, batch_id: str) -> Batch | None:
        """The batch if one read shows it terminal and ours."""
        self.requests += 1
        try:
            batch = await anyio.to_thread.run_sync(
                lambda: self.client.retrieve_batch(batch_id, max_retries=1)
            )
        except NotFoundError:
            return None
        return batch if batch.status.is_terminal and self._ours(batch) else None

    def _ours(self, batch: Batch) -> bool:
        return is_marked(self.secrets, self.conn_id, batch.metadata)


def _created(batch: Batch) -> int:
    return int(batch.created_at or time.time())


class DashScopeBatchFinishTrigger(BaseEventTrigger):
    """
    Yields one event per finish of a batch this deployment created through ``dashscope_conn_id``.

    For ``AssetWatcher``; see :mod:`~airflow_provider_dashscope_batch.events.watcher` for the sources and
    the exactly-once design. The event's payload is :func:`finish_payload`; a DAG scheduled on the Asset
    finds it in ``triggering_asset_events[asset][i].extra["payload"]``.

    :param dashscope_conn_id: The connection; it needs the ``finish_events_secret`` extra.
    :param poll_interval: Seconds between two list polls (at least 60, as the guide advises).
    :param mailbox_interval: Seconds between two reads of the receiver's mailbox; None (default) when no
        receiver is set up (the mailbox read is one Variable read, no request to the service).
    :param catch_up_delay: Seconds after a round's last finish before the catch-up event (see
        :mod:`~airflow_provider_dashscope_batch.events.watcher`); None: no catch-up event.
    :param queue_conn_id: The Airflow connection of the RabbitMQ queue EventBridge delivers finishes to
        (:mod:`~.rabbitmq`); None (default): no queue.
    :param queue_interval: Seconds between two reads of that queue.
    """

    def __init__(
        self,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        mailbox_interval: float | None = None,
        catch_up_delay: float | None = DEFAULT_CATCH_UP_DELAY,
        queue_conn_id: str | None = None,
        queue_interval: float = DEFAULT_QUEUE_INTERVAL,
    ) -> None:
        super().__init__()
        self.dashscope_conn_id = dashscope_conn_id
        self.poll_interval = float(poll_interval)
        self.mailbox_interval = None if mailbox_interval is None else float(mailbox_interval)
        self.catch_up_delay = None if catch_up_delay is None else float(catch_up_delay)
        self.queue_conn_id = queue_conn_id
        self.queue_interval = float(queue_interval)
        #: The rounds' :class:`FinishWatch`, once the connection was read.
        self.watching: FinishWatch | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dashscope_conn_id": self.dashscope_conn_id,
                "poll_interval": self.poll_interval,
                "mailbox_interval": self.mailbox_interval,
                "catch_up_delay": self.catch_up_delay,
                "queue_conn_id": self.queue_conn_id,
                "queue_interval": self.queue_interval,
            },
        )

    def watch(self, **kwargs: Any) -> FinishWatch:
        """The rounds of this trigger (blocking: reads the connection)."""
        hook = DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id)
        found = event_secrets(hook.get_connection(self.dashscope_conn_id).extra_dejson)
        if not found:
            raise ConnectionSetupError(
                f"The finish watcher of connection {self.dashscope_conn_id!r} needs its "
                "'finish_events_secret' extra (the secret the batches' marks are made with)."
            )
        queue = None
        if (queue_conn_id := self.queue_conn_id) is not None:
            queue = RabbitMQSource(
                lambda: QueueSettings.from_connection(queue_conn_id, hook.get_connection(queue_conn_id))
            )
        return FinishWatch(
            self.dashscope_conn_id,
            hook.get_conn(),
            found,
            poll_interval=self.poll_interval,
            mailbox_interval=self.mailbox_interval,
            catch_up_delay=self.catch_up_delay,
            queue=queue,
            queue_interval=self.queue_interval,
            **kwargs,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async for payload, _ in self.rounds(gated=False):
            yield TriggerEvent(payload)

    async def rounds(self, *, gated: bool) -> AsyncIterator[tuple[dict[str, Any], Handed | None]]:
        """
        The rounds, one every interval, for ever: ``run()`` on Airflow 3.0 to 3.2, the shared stream's
        producer (``gated``) on 3.3. A failed round is logged and the next one tries again.
        """
        try:
            while True:
                try:
                    self.watching = self.watching or await sync_to_async(self.watch)()
                    async for item in self.watching.rounds_step(gated=gated):
                        yield item
                except (DashScopeError, ConnectionSetupError, QueueUnavailable) as exc:  # next round retries
                    log.warning("The finish watcher of connection %r: %s", self.dashscope_conn_id, exc)
                except Exception:  # a Variable or connection lookup failing: the watcher must outlive it
                    log.exception(
                        "The finish watcher of connection %r failed a round", self.dashscope_conn_id
                    )
                await asyncio.sleep(self.watching.interval if self.watching else self.poll_interval)
        finally:  # gated: the producer closes the queue once the last advance acknowledged its messages
            if not gated:
                await self.close_queue()

    def shared_stream_key(self) -> Hashable | None:
        """
        On Airflow 3.3 (which has ``create_shared_stream_producer``) the stream of these kwargs: the
        triggerer then runs :meth:`rounds` in the producer and :meth:`filter_shared_stream` per trigger.
        """
        if not SHARED_STREAMS:
            return None
        return (type(self).__qualname__, *sorted(self.serialize()[1].items()))

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> Any:
        """A finish enters the cursor, and its messages are acknowledged, once its event persisted."""
        from airflow_provider_dashscope_batch.events.shared import finish_producer

        trigger = cls(**kwargs)
        return finish_producer(lambda: trigger.rounds(gated=True), trigger.advance, trigger.close_queue)

    async def advance(self, persisted: Sequence[Handed], failed: Sequence[Handed]) -> None:
        """The shared stream's advance: see :meth:`FinishWatch.advance`."""
        if self.watching is not None:
            await self.watching.advance(persisted, failed)

    async def close_queue(self) -> None:
        """Close the queue connection, if any (its unacknowledged messages go back to the queue)."""
        if self.watching is not None and self.watching.queue is not None:
            await self.watching.queue.aclose()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Each payload of the shared stream is one event."""
        async for payload in shared_stream:
            yield TriggerEvent(payload)


def payloads(events: Iterable[Any]) -> list[dict[str, Any]]:
    """The finish payloads of a DAG run's triggering Asset events (for a results DAG's first task)."""
    found = [event.extra.get("payload") for event in events]
    return [payload for payload in found if isinstance(payload, dict) and "batch_id" in payload]
