"""
Waking deferred waits: one mailbox read per round per connection per triggerer, whatever the waits.

A wait deferred with finish events registers with the :class:`FinishWatcher` of its status reader (one
per connection and event loop, like the reader). While any wait is registered, the watcher reads the
connection's mailbox (:mod:`~airflow_provider_dashscope_batch.events.mailbox`) every
:data:`DEFAULT_WAKE_INTERVAL` seconds through the triggerer's supervisor (``GetVariable``, one
metadata-DB read) and hands the newly posted batch ids to the reader, which reads those waits in its
next round (:meth:`StatusReader.wake
<airflow_provider_dashscope_batch.waiting.reader.StatusReader.wake>`): the finish is confirmed by the
grouped status read itself, and the wait ends on what the service says. A wait that starts after its
batch's post finds it in the mailbox at once. A failed mailbox read is logged and retried next round.
The waits poll on their own schedule all the same (at least a minute apart, with backoff, as the guide
advises), so a wake-up can only end a wait sooner than polling would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from airflow_provider_dashscope_batch.events.mailbox import Mailbox, variable_key

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.waiting.reader import StatusReader

__all__ = [
    "DEFAULT_WAKE_INTERVAL",
    "FinishWatcher",
    "finish_watcher",
    "read_variable",
]

#: Seconds between two mailbox reads of one connection in one triggerer.
DEFAULT_WAKE_INTERVAL = 1.0

log = logging.getLogger(__name__)


def read_variable(key: str) -> Any:
    """The Variable's value through the Task SDK (the triggerer's supervisor), or None (blocking)."""
    from airflow.providers.common.compat.sdk import Variable

    return Variable.get(key, default=None)


class FinishWatcher:
    """
    Reads one connection's mailbox for every registered wait of one status reader and wakes them.

    :param reader: The status reader of the connection in this event loop.
    :param conn_id: The connection id.
    :param interval: Seconds between two mailbox reads.
    :param read: Reads a Variable by key (blocking; run in a thread); default :func:`read_variable`.
    """

    def __init__(
        self,
        reader: StatusReader,
        conn_id: str,
        *,
        interval: float = DEFAULT_WAKE_INTERVAL,
        read: Callable[[str], Any] | None = None,
    ) -> None:
        self.reader = reader
        self.conn_id = conn_id
        self.interval = interval
        self.read = read or read_variable
        self.reads = 0
        self._waiting: dict[str, int] = {}
        self._seen: int | None = None  # newest sequence number handed on
        self._mailbox = Mailbox()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watching(self, batch_id: str) -> Iterator[None]:
        """Register a wait for ``batch_id`` for the duration of the block (its ``follow``)."""
        self._waiting[batch_id] = self._waiting.get(batch_id, 0) + 1
        if self._task is None or self._task.done():
            self._seen = None
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashscope-finish-watcher")
        elif batch_id in self._mailbox:  # posted before this wait started: read it in the next round
            asyncio.get_running_loop().call_soon(self.reader.wake, {batch_id})
        try:
            yield
        finally:
            left = self._waiting.pop(batch_id) - 1
            if left:
                self._waiting[batch_id] = left
            if not self._waiting and self._task is not None:
                self._task.cancel()
                self._task = None

    async def _run(self) -> None:
        while self._waiting:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> set[str]:
        """Read the mailbox once and wake the waits of the batches posted since the last read."""
        try:
            value = await sync_to_async(self.read)(variable_key(self.conn_id))  # as in the watcher
        except Exception as exc:  # the waits' own polls go on; try again next round
            log.warning("Reading the finish mailbox of connection %s failed: %s", self.conn_id, exc)
            return set()
        self.reads += 1
        mailbox = self._mailbox = Mailbox.from_value(value)
        if self._seen is None:  # first read: every batch in the mailbox may have been posted for us
            posted, lost = [b for _, b in mailbox.recent], False
        else:
            posted, lost = mailbox.since(self._seen)
        self._seen = mailbox.seq
        wake = set(self._waiting) if lost else self._waiting.keys() & set(posted)
        if wake:
            self.reader.wake(wake)
        return wake


_watchers: weakref.WeakKeyDictionary[StatusReader, FinishWatcher] = weakref.WeakKeyDictionary()


def finish_watcher(reader: StatusReader, conn_id: str) -> FinishWatcher:
    """The watcher shared by every wait of ``reader`` (one connection in one event loop)."""
    watcher = _watchers.get(reader)
    if watcher is None:
        watcher = _watchers[reader] = FinishWatcher(reader, conn_id)
    return watcher
