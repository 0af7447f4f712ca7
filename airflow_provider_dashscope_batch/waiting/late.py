"""
Late copies: after an ambiguous create or upload, a wait keeps looking for a second batch or file.

A create the service acts on after the client gave up leaves a second batch under the same idempotency
key and input file; a late upload leaves a second file under the same upload token (its stored name).
:class:`LateCopies` is that fact as the job carries it -- until when each copy may appear (see
:mod:`~airflow_provider_dashscope_batch.client.ambiguity` for the window) -- and every wait for the batch
(the worker wait, the sensor, both triggers, the common.ai adapter) looks for the copies until then:

* while the batch runs, its status reads go through the list of its input file even when it is read alone
  (``watch_until`` of :class:`~airflow_provider_dashscope_batch.waiting.reader.BatchRef`), so
  a duplicate shows at no extra request and is cancelled at first sight;
* the late file is looked for with one file list per poll, and deleted;
* a wait whose batch finished before the window closed looks on, at its poll interval, until a look at or
  after the window's end (:func:`finish_watch` / :func:`finish_watch_sync`).

After the window nothing is looked for: reads fall back to retrieves (or shared list reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client._core import ClientCore
from airflow_provider_dashscope_batch.client._flow import Flow
from airflow_provider_dashscope_batch.client._pagination import collect_flow
from airflow_provider_dashscope_batch.client.ambiguity import Ambiguity
from airflow_provider_dashscope_batch.client.errors import DashScopeError, InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.client.identity import IDEMPOTENCY_KEY
from airflow_provider_dashscope_batch.client.resources.batches import cancel_batch_flow
from airflow_provider_dashscope_batch.client.resources.files import delete_file_flow, list_files_flow
from airflow_provider_dashscope_batch.client.types import Batch, FileObject
from airflow_provider_dashscope_batch.waiting.reader import BatchRef, StatusRead, grouped_read_flow

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.async_ import AsyncDashScopeClient
    from airflow_provider_dashscope_batch.client.sync import DashScopeClient

__all__ = [
    "LateCopies",
    "LateWatch",
    "delete_late_files_sync",
    "finish_watch",
    "finish_watch_sync",
    "look_flow",
    "read_watching",
    "watch_files",
]

log = logging.getLogger(__name__)

#: The file list's time filter is in an unconfirmed time zone: look back this far from the window's end.
_FILE_LOOKBACK = timedelta(days=2)


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
    seen: set[str] = field(default_factory=set)  # copies already cancelled or deleted

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

    def cancel_flow(self, core: ClientCore, duplicates: Iterable[Batch]) -> Flow[list[str]]:
        """Cancel the unfinished duplicates a read showed; return their ids."""
        cancelled: list[str] = []
        for duplicate in duplicates:
            if duplicate.id == self.batch_id or duplicate.id in self.seen or duplicate.status.is_terminal:
                continue
            log.warning(
                "Batch %s carries the idempotency key of batch %s (a create processed after the client "
                "gave up): cancelling the duplicate",
                duplicate.id,
                self.batch_id,
            )
            try:
                yield from cancel_batch_flow(core, duplicate.id)
            except (InvalidRequestError, NotFoundError) as exc:  # finished or gone meanwhile
                log.warning("Batch %s could not be cancelled: %s", duplicate.id, exc)
            self.seen.add(duplicate.id)
            cancelled.append(duplicate.id)
        return cancelled

    def delete_files_flow(self, core: ClientCore) -> Flow[list[str]]:
        """Delete every other file stored under the input file's name (a late upload); return their ids."""
        name, until = self.copies.file_name, self.copies.file_until
        assert name is not None
        assert until is not None
        since = datetime.fromtimestamp(until, UTC) - _FILE_LOOKBACK

        def late(file: FileObject) -> bool:
            return file.filename == name and file.id != self.input_file_id and file.id not in self.seen

        copies = yield from collect_flow(list_files_flow(core, purpose="batch", create_after=since), late)
        for copy in copies:
            log.warning(
                "File %s is a late copy of input file %s (upload %s): deleting it",
                copy.id,
                self.input_file_id,
                name,
            )
            with contextlib.suppress(NotFoundError):  # deleted meanwhile
                yield from delete_file_flow(core, copy.id)
            self.seen.add(copy.id)
        return [copy.id for copy in copies]


def look_flow(core: ClientCore, watch: LateWatch, now: float, *, last: bool = False) -> Flow[StatusRead]:
    """
    One look: read the batch through its input file's list, cancel a duplicate, delete a late file.

    :param now: Wall-clock epoch seconds of the look.
    :param last: The look at or after the window's end (lists even though the window has closed).
    """
    read = yield from grouped_read_flow(core, [watch.ref(last=last)])
    yield from watch.cancel_flow(core, read.duplicates.get(watch.batch_id, ()))
    if watch.watches_files(now, last=last):
        yield from watch.delete_files_flow(core)
    return read


def read_watching(client: DashScopeClient, watch: LateWatch | None, batch_id: str) -> Batch:
    """
    The worker wait's status read: one look while the window is open, else one retrieve (sent once).

    :raises DashScopeError: The read failed (the poller decides about retrying).
    """
    now = time.time()
    if watch is None or now > watch.copies.until:
        return client.retrieve_batch(batch_id, max_retries=0)
    read = client.run_flow(lambda core: look_flow(core, watch, now))
    if batch_id in read.batches:
        return read.batches[batch_id]
    raise read.errors[batch_id]


def finish_watch_sync(
    client: DashScopeClient,
    watch: LateWatch,
    interval: float,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """After the wait ended: look every ``interval`` seconds until a look at or after the window's end."""
    until = watch.copies.hold_until(clock())
    while True:
        now = clock()
        last = now >= until
        try:
            client.run_flow(lambda core, n=now, e=last: look_flow(core, watch, n, last=e))  # type: ignore[misc]
        except DashScopeError as exc:  # the next look (or nobody) finds it; the wait's result stands
            log.warning("Looking for late copies of batch %s failed: %s", watch.batch_id, exc)
        if last:
            return
        sleep(max(min(interval, until - now), 0.0))


def delete_late_files_sync(
    client: DashScopeClient,
    file: FileObject,
    ambiguity: Ambiguity,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """
    After an ambiguous upload that nothing waits for (the upload operator's): look ten times over the
    window, the last at or after its end, deleting any late copy of ``file``.
    """
    watch = LateWatch("", file.id, None, LateCopies(None, file.filename, ambiguity.until))
    interval = max((ambiguity.until - clock()) / 10, 0.5)
    while True:
        now = clock()
        try:
            client.run_flow(watch.delete_files_flow)
        except DashScopeError as exc:
            log.warning("Looking for a late copy of file %s failed: %s", file.id, exc)
        if now >= ambiguity.until:
            return
        sleep(max(min(interval, ambiguity.until - now), 0.0))


async def finish_watch(client: AsyncDashScopeClient, watch: LateWatch, interval: float) -> None:
    """The async twin of :func:`finish_watch_sync` (a trigger's wait)."""
    until = watch.copies.hold_until(time.time())
    while True:
        now = time.time()
        last = now >= until
        try:
            await client.run_flow(lambda core, n=now, e=last: look_flow(core, watch, n, last=e))  # type: ignore[misc]
        except DashScopeError as exc:
            log.warning("Looking for late copies of batch %s failed: %s", watch.batch_id, exc)
        if last:
            return
        await asyncio.sleep(max(min(interval, until - now), 0.0))


async def watch_files(client: AsyncDashScopeClient, watch: LateWatch, interval: float) -> None:
    """While a trigger's wait runs: list the files every ``interval`` seconds while a late one may appear."""
    while watch.watches_files(now := time.time()):
        try:
            await client.run_flow(watch.delete_files_flow)
        except DashScopeError as exc:
            log.warning("Looking for a late copy of file %s failed: %s", watch.input_file_id, exc)
        await asyncio.sleep(max(min(interval, (watch.copies.file_until or now) - now), 0.0) or interval)
