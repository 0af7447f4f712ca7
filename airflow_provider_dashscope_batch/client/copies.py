"""
Late copies of an ambiguous create or upload: finding them and removing them.

A create the service acts on after the client gave up leaves a second batch under the same idempotency key
and input file; a late upload leaves a second file under the same stored name (it carries the upload
token). The window in which they may appear is :mod:`.ambiguity`'s; these flows are what a wait does about
them. Cancelling a batch and deleting a file are idempotent, so running a flow twice is harmless.

* :func:`find_file_copies_flow` -- the files stored under an upload's name but the one kept (one list).
* :func:`delete_file_copies_flow` -- find them and delete them.
* :func:`cancel_duplicates_of_flow` -- cancel the duplicates a grouped read showed (no list; part of a look).
* :func:`reconcile_flow` -- one look: read the batch through its input file's list, cancel the unfinished
  duplicates the read shows, delete the late file copies.
* :func:`remove_late_copies_flow` -- cancel and delete copies someone else saw (a trigger's event).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_provider_dashscope_batch.client._flow import Flow
from airflow_provider_dashscope_batch.client._pagination import collect_flow
from airflow_provider_dashscope_batch.client.errors import InvalidRequestError, NotFoundError
from airflow_provider_dashscope_batch.client.resources.batches import cancel_batch_flow
from airflow_provider_dashscope_batch.client.resources.files import delete_file_flow, list_files_flow
from airflow_provider_dashscope_batch.client.status import BatchRef, StatusRead, read_statuses_flow
from airflow_provider_dashscope_batch.client.types import BatchStatus

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._core import ClientCore
    from airflow_provider_dashscope_batch.client.types import Batch, FileObject

__all__ = [
    "Reconciled",
    "cancel_duplicates_of_flow",
    "delete_file_copies_flow",
    "find_file_copies_flow",
    "reconcile_flow",
    "remove_late_copies_flow",
]

log = logging.getLogger("airflow_provider_dashscope_batch.client")

#: The file list's time filter is in an unconfirmed time zone: look back this far from the window's end.
_FILE_LOOKBACK = timedelta(days=2)


def find_file_copies_flow(
    core: ClientCore, *, filename: str, keep_file_id: str | None, until: float, skip: Collection[str] = ()
) -> Flow[list[FileObject]]:
    """
    The files stored under ``filename`` other than ``keep_file_id`` and ``skip`` (late copies of one upload).

    :param filename: The stored name of the upload (it carries the upload token).
    :param keep_file_id: The file kept.
    :param until: Epoch seconds when the upload's late window closes (bounds the file list).
    :param skip: Files already dealt with.
    """
    since = datetime.fromtimestamp(until, UTC) - _FILE_LOOKBACK

    def late(file: FileObject) -> bool:
        return file.filename == filename and file.id != keep_file_id and file.id not in skip

    return (yield from collect_flow(list_files_flow(core, purpose="batch", create_after=since), late))


def delete_file_copies_flow(
    core: ClientCore, *, filename: str, keep_file_id: str | None, until: float, skip: Collection[str] = ()
) -> Flow[list[str]]:
    """
    Delete every late copy of an upload (see :func:`find_file_copies_flow`); return their ids.

    A copy deleted meanwhile counts as deleted.
    """
    copies = yield from find_file_copies_flow(
        core, filename=filename, keep_file_id=keep_file_id, until=until, skip=skip
    )
    for copy in copies:
        log.warning(
            "File %s is a late copy of file %s (upload %s): deleting it", copy.id, keep_file_id, filename
        )
        with contextlib.suppress(NotFoundError):
            yield from delete_file_flow(core, copy.id)
    return [copy.id for copy in copies]


def cancel_duplicates_of_flow(
    core: ClientCore, keep_batch_id: str, duplicates: Iterable[Batch], *, skip: Collection[str] = ()
) -> Flow[list[str]]:
    """
    Cancel the running ``duplicates`` of ``keep_batch_id`` a read showed (but ``skip``); return their ids.

    A duplicate already finished or being cancelled is left alone.

    A duplicate that finished or is gone meanwhile is logged and counts as dealt with.
    """
    cancelled: list[str] = []
    for duplicate in duplicates:
        if duplicate.id == keep_batch_id or duplicate.id in skip or not _running(duplicate):
            continue
        log.warning(
            "Batch %s carries the idempotency key of batch %s (a create processed after the client gave "
            "up): cancelling the duplicate",
            duplicate.id,
            keep_batch_id,
        )
        try:
            yield from cancel_batch_flow(core, duplicate.id)
        except (InvalidRequestError, NotFoundError) as exc:
            log.warning("Batch %s could not be cancelled: %s", duplicate.id, exc)
        cancelled.append(duplicate.id)
    return cancelled


def _running(batch: Batch) -> bool:
    return not batch.status.is_terminal and batch.status is not BatchStatus.CANCELLING


@dataclass(frozen=True)
class Reconciled:
    """
    What one look found and did.

    :param read: The grouped read of the batch (its duplicates included).
    :param cancelled: The duplicate batches cancelled.
    :param deleted: The late file copies deleted.
    """

    read: StatusRead
    cancelled: tuple[str, ...]
    deleted: tuple[str, ...]


def reconcile_flow(
    core: ClientCore,
    ref: BatchRef,
    *,
    filename: str | None = None,
    file_until: float | None = None,
    skip: Collection[str] = (),
) -> Flow[Reconciled]:
    """
    One look after an ambiguous create or upload: read the batch, cancel its duplicates, delete late files.

    The batch is read through its input file's list (``ref.watch_until`` keeps it listed even alone), each
    request sent once (the caller owns retries of the read); the cancels and deletes are retried.

    :param ref: The batch kept.
    :param filename: The stored name of its input file's upload, to delete late copies of (None: none).
    :param file_until: When the upload's late window closes.
    :param skip: Batches and files already dealt with.
    """
    read = yield from read_statuses_flow(core, [ref])
    cancelled = yield from cancel_duplicates_of_flow(
        core, ref.batch_id, read.duplicates.get(ref.batch_id, ()), skip=skip
    )
    deleted: list[str] = []
    if filename is not None and file_until is not None:
        deleted = yield from delete_file_copies_flow(
            core, filename=filename, keep_file_id=ref.input_file_id, until=file_until, skip=skip
        )
    return Reconciled(read, tuple(cancelled), tuple(deleted))


def remove_late_copies_flow(
    core: ClientCore, keep_batch_id: str, *, batch_ids: Iterable[str] = (), file_ids: Iterable[str] = ()
) -> Flow[None]:
    """
    Cancel the duplicate batches ``batch_ids`` of ``keep_batch_id`` and delete the late files ``file_ids``.

    What a wait's resume step does with the copies its trigger saw; idempotent, so a re-run is harmless:
    a batch that finished or is gone meanwhile, or a file already deleted, is logged and skipped.
    """
    for batch_id in batch_ids:
        log.warning("Batch %s duplicates batch %s (a late create): cancelling it", batch_id, keep_batch_id)
        try:
            yield from cancel_batch_flow(core, batch_id)
        except (InvalidRequestError, NotFoundError) as exc:
            log.warning("Batch %s could not be cancelled: %s", batch_id, exc)
    for file_id in file_ids:
        log.warning("File %s is a late copy of batch %s's input file: deleting it", file_id, keep_batch_id)
        with contextlib.suppress(NotFoundError):
            yield from delete_file_flow(core, file_id)
