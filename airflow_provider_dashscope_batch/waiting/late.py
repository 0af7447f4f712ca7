"""
Late copies: after an ambiguous create or upload, a wait keeps looking for a second batch or file.

A create the service acts on after the client gave up leaves a second batch under the same idempotency
key and input file; a late upload leaves a second file under the same upload token (its stored name).
:class:`LateCopies` is that fact as the job carries it -- until when each copy may appear (see
:mod:`~airflow_provider_dashscope_batch.client.ambiguity` for the window) -- and every wait for the batch
(the worker wait, the sensor, both triggers, the common.ai adapter) looks for the copies until then:

* while the batch runs, its status reads go through the list of its input file even when it is read alone
  (``watch_until`` of :class:`~airflow_provider_dashscope_batch.client.status.BatchRef`), so
  a duplicate shows at no extra request;
* the late file is looked for with one file list per poll;
* a wait whose batch finished before the window closed looks on, at its poll interval, until a look at or
  after the window's end (:func:`look_until_closed` / :func:`finish_watch_sync`).

A wait in the worker cancels or deletes a copy at first sight (the client's ``reconcile``). A trigger only
reads (:func:`find_late_files`, :func:`look_until_closed`): it may run twice, on another triggerer, so it
ends its wait with the copies it saw and the operator's resume step removes them (the client's
``remove_late_copies``) and waits again.

After the window nothing is looked for: reads fall back to retrieves (or shared list reads).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.errors import DashScopeError
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.client.status import BatchRef, StatusRead
from airflow_provider_dashscope_batch.client.types import BatchStatus

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.client.copies import Reconciled
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch, FileObject

__all__ = [
    "LateCopies",
    "LateWatch",
    "delete_late_files_sync",
    "find_late_files",
    "finish_watch_sync",
    "look_until_closed",
    "read_watching",
    "running_duplicates",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LateCopies:
    """
    Until when late copies of one batch's create and of its input file's upload may appear.

    :param batch_until: Epoch seconds until which a second batch under the batch's key may appear.
    :param file_name: The input file's stored name (it carries the upload token).
    :param file_until: Epoch seconds until which a second file under that name may appear.
    :param derived: The windows are derived from a ``created_at`` (the waiter did not see the create):
        copies are looked for while the batch runs, and a finished batch ends the wait after one last look.
        Otherwise the client saw an attempt fail ambiguously, and the wait's end waits out the window.
    """

    batch_until: float | None = None
    file_name: str | None = None
    file_until: float | None = None
    derived: bool = False

    @classmethod
    def of(
        cls,
        created: Ambiguity | None = None,
        uploaded: Ambiguity | None = None,
        file_name: str | None = None,
        *,
        derived: bool = False,
    ) -> LateCopies | None:
        """The copies to look for after a create and an upload (None if neither was ambiguous)."""
        if created is None and (uploaded is None or not file_name):
            return None
        return cls(
            None if created is None else created.until,
            file_name if uploaded is not None else None,
            None if uploaded is None else uploaded.until,
            derived,
        )

    def with_create(self, created: Ambiguity | None) -> LateCopies | None:
        """These copies and those of a create made since (None if there is nothing to look for)."""
        if created is None:
            return self
        return LateCopies(created.until, self.file_name, self.file_until, self.derived)

    def hold_until(self, now: float) -> float:
        """Until when a wait whose batch finished at ``now`` looks on (``now``: one last look)."""
        return now if self.derived else self.until

    @property
    def until(self) -> float:
        """When the last window closes."""
        return max(t for t in (self.batch_until, self.file_until, 0.0) if t is not None)

    def to_dict(self) -> dict[str, Any]:
        """Primitive form (trigger kwargs, XCom)."""
        return {
            "batch_until": self.batch_until,
            "file_name": self.file_name,
            "file_until": self.file_until,
            "derived": self.derived,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LateCopies | None:
        """Inverse of :meth:`to_dict` (None stays None)."""
        if not data:
            return None
        return cls(
            _float(data.get("batch_until")),
            data.get("file_name") or None,
            _float(data.get("file_until")),
            bool(data.get("derived")),
        )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(slots=True)
class LateWatch:
    """
    One wait's look-out for the late copies of its batch.

    :param batch_id: The batch kept (waited for).
    :param input_file_id: Its input file (the list filter; the file kept).
    :param idempotency_key: Its key (a second batch carrying it is a duplicate).
    :param copies: Until when which copy may appear.
    """

    batch_id: str
    input_file_id: str | None
    idempotency_key: str | None
    copies: LateCopies
    seen: set[str] = field(default_factory=set)  # copies already cancelled or deleted (worker looks)

    @classmethod
    def of(cls, batch: Batch, copies: LateCopies | None) -> LateWatch | None:
        """The watch of ``batch`` (None when there is nothing to look for)."""
        if copies is None:
            return None
        key = (batch.metadata or {}).get(IDEMPOTENCY_KEY)
        return cls(batch.id, batch.input_file_id, key, copies)

    def ref(self, *, last: bool = False) -> BatchRef:
        """The batch's read: listed while a duplicate may appear (``last``: for the final look too)."""
        until = self.copies.batch_until
        if last and until is not None:
            until = float("inf")
        return BatchRef(self.batch_id, self.input_file_id, self.idempotency_key, until)

    def watches_files(self, now: float, *, last: bool = False) -> bool:
        """Whether a look at ``now`` lists the files."""
        until = self.copies.file_until
        return bool(self.copies.file_name and until is not None and (last or now <= until))

    def _look_kwargs(self, now: float, last: bool) -> dict[str, Any]:
        files = self.watches_files(now, last=last)
        return {
            "filename": self.copies.file_name if files else None,
            "file_until": self.copies.file_until if files else None,
            "skip": frozenset(self.seen),
        }

    def _noted(self, found: Reconciled) -> StatusRead:
        self.seen.update(found.cancelled, found.deleted)
        return found.read

    def look(self, client: DashScopeClient, now: float, *, last: bool = False) -> StatusRead:
        """
        One look: read the batch through its input file's list, cancel a duplicate, delete a late file.

        :param now: Wall-clock epoch seconds of the look.
        :param last: The look at or after the window's end (lists even though the window has closed).
        """
        return self._noted(client.reconcile(self.ref(last=last), **self._look_kwargs(now, last)))

    def file_kwargs(self) -> dict[str, Any]:
        """The client's late-file search of this watch (its upload's name and window; copies seen skipped)."""
        assert self.copies.file_name is not None
        assert self.copies.file_until is not None
        return {
            "filename": self.copies.file_name,
            "keep_file_id": self.input_file_id,
            "until": self.copies.file_until,
            "skip": frozenset(self.seen),
        }

    def delete_files(self, client: DashScopeClient) -> None:
        """Delete every other file stored under the input file's name (a late upload)."""
        self.seen.update(client.delete_file_copies(**self.file_kwargs()))


def read_watching(client: DashScopeClient, watch: LateWatch | None, batch_id: str) -> Batch:
    """
    The worker wait's status read: one look while the window is open, else one retrieve (sent once).

    :raises DashScopeError: The read failed (the poller decides about retrying).
    """
    now = time.time()
    if watch is None or now > watch.copies.until:
        return client.retrieve_batch(batch_id, max_retries=0)
    read = watch.look(client, now)
    if batch_id in read.batches:
        return read.batches[batch_id]
    raise read.errors[batch_id]


def finish_watch_sync(client: DashScopeClient, watch: LateWatch, interval: float) -> None:
    """After the wait ended: look every ``interval`` seconds until a look at or after the window's end."""
    _look_until(
        watch.copies.hold_until(time.time()),
        interval,
        lambda now, last: watch.look(client, now, last=last),
        f"late copies of batch {watch.batch_id}",
    )


def delete_late_files_sync(client: DashScopeClient, file: FileObject, ambiguity: Ambiguity) -> None:
    """
    After an ambiguous upload that nothing waits for (the upload operator's): look ten times over the
    window, the last at or after its end, deleting any late copy of ``file``.
    """
    watch = LateWatch("", file.id, None, LateCopies(None, file.filename, ambiguity.until))
    _look_until(
        ambiguity.until,
        max((ambiguity.until - time.time()) / 10, 0.5),
        lambda now, last: watch.delete_files(client),
        f"a late copy of file {file.id}",
    )


def _look_until(until: float, interval: float, look: Callable[[float, bool], object], what: str) -> None:
    """
    Call ``look(now, last)`` every ``interval`` seconds, the last call at or after ``until``.

    A failed look is logged, not raised: the next look (or nobody) finds the copy; the wait's result stands.
    """
    while True:
        now = time.time()
        last = now >= until
        try:
            look(now, last)
        except DashScopeError as exc:
            log.warning("Looking for %s failed: %s", what, exc)
        if last:
            return
        time.sleep(max(min(interval, until - now), 0.0))


async def find_late_files(client: AsyncDashScopeClient, watch: LateWatch, interval: float) -> list[str]:
    """
    While a trigger's wait runs: list the files every ``interval`` seconds while a late one may appear.

    Only reads: returns the ids of the first late copies seen ([] once the window closed).
    """
    while watch.watches_files(now := time.time()):
        try:
            found = await client.find_file_copies(**watch.file_kwargs())
        except DashScopeError as exc:
            log.warning("Looking for a late copy of file %s failed: %s", watch.input_file_id, exc)
        else:
            if found:
                return [f.id for f in found]
        await asyncio.sleep(max(min(interval, (watch.copies.file_until or now) - now), 0.0) or interval)
    return []


async def look_until_closed(
    client: AsyncDashScopeClient, watch: LateWatch, interval: float
) -> tuple[list[str], list[str]]:
    """
    After a trigger's wait ended: look every ``interval`` seconds until a look at or after the window's end.

    Only reads: returns the running duplicate batches and the late files of the first look that saw any
    (two empty lists when none did).
    """
    until = watch.copies.hold_until(time.time())
    while True:
        now = time.time()
        last = now >= until
        try:
            read = await client.read_statuses([watch.ref(last=last)])
            files = []
            if watch.watches_files(now, last=last):
                files = [f.id for f in await client.find_file_copies(**watch.file_kwargs())]
        except DashScopeError as exc:
            log.warning("Looking for late copies of batch %s failed: %s", watch.batch_id, exc)
        else:
            batches = running_duplicates(read.duplicates.get(watch.batch_id, ()))
            if batches or files:
                return batches, files
        if last:
            return [], []
        await asyncio.sleep(max(min(interval, until - now), 0.0))


def running_duplicates(duplicates: Iterable[Batch]) -> list[str]:
    """The ids of the duplicates still to cancel: neither finished nor being cancelled."""
    return [d.id for d in duplicates if not d.status.is_terminal and d.status is not BatchStatus.CANCELLING]
