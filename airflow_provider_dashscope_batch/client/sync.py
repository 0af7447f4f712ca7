"""Synchronous DashScope Batch/Files client: drives the flows of :mod:`._base` over ``httpx.Client``."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from airflow_provider_dashscope_batch.client._base import (
    ClientFace,
    Emit,
    FileInput,
    Flow,
    Outcome,
    Send,
    Sleep,
    TimeFilter,
    UploadSource,
)
from airflow_provider_dashscope_batch.models import Batch, BatchStatus, FileDeleted, FileObject

T = TypeVar("T")


class DashScopeClient(ClientFace[httpx.Client]):
    """
    Client of the DashScope OpenAI-compatible Batch and Files API.

    :param api_key: DashScope API key (never logged, never part of an exception).
    :param base_url: Compatible-mode base URL of the key's region.
    :param workspace: Optional workspace id, sent as ``X-DashScope-WorkSpace``.
    :param timeout: Per-request timeout in seconds.
    :param max_retries: Retries of transient failures (ignored when ``retry_policy`` is given).
    :param http_client: An ``httpx.Client`` to use (not closed by :meth:`close`); one is created otherwise.
    :param retry_policy: Full retry policy (backoff, jitter, time budget).
    """

    http_class = httpx.Client

    def close(self) -> None:
        """Close the underlying HTTP client if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> DashScopeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ driving
    def _perform(self, step: Send | Sleep) -> Outcome:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        try:
            response = self._http.send(step.request, stream=True)
        except httpx.TransportError as exc:
            return exc
        if step.stream and response.is_success:
            return response
        try:
            response.read()
        except httpx.TransportError as exc:
            return exc
        finally:
            response.close()
        return response

    def _run(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = flow.send(outcome)
                if isinstance(step, Emit):
                    raise TypeError("a single-result flow emitted items")
                outcome = self._perform(step)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    def _iterate(self, flow: Flow[None]) -> Iterator[Any]:
        outcome: Outcome = None
        try:
            while True:
                try:
                    step = flow.send(outcome)
                except StopIteration:
                    return
                if isinstance(step, Emit):
                    yield from step.items
                    outcome = None
                else:
                    outcome = self._perform(step)
        finally:
            flow.close()

    # -------------------------------------------------------------------------------------- files
    def upload_file(
        self, file: FileInput, *, filename: str | None = None, purpose: str = "batch"
    ) -> FileObject:
        """
        Upload a file, streamed from a path or a binary stream.

        A path or seekable stream is re-sent after a transient failure, but only once the file list
        shows that the failed attempt did not store it (same name and size, created since the upload
        started); a non-seekable stream is sent once.

        :param file: Path or binary stream (e.g. an ``ObjectStoragePath.open("rb")`` handle).
        :param filename: Name to upload under; defaults to the path's or stream's name.
        :param purpose: File purpose (``batch`` for batch input).
        """
        source = UploadSource(file, filename)
        with source.open() as handle:
            return self._run(self._core.upload_flow(handle, purpose))

    def retrieve_file(self, file_id: str) -> FileObject:
        """
        Get a file's metadata.

        :param file_id: The file id.
        """
        return self._run(self._core.retrieve_file_flow(file_id))

    def list_files(
        self,
        *,
        purpose: str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> Iterator[FileObject]:
        """
        Iterate over files, fetching further pages as needed.

        :param purpose: Only files of this purpose (``batch``, ``batch_output``).
        :param create_after: Only files created after this time (datetime or service-format string).
        :param create_before: Only files created before this time.
        :param page_size: Files per request (1..2000).
        """
        return self._iterate(
            self._core.list_files_flow(
                purpose=purpose, create_after=create_after, create_before=create_before, page_size=page_size
            )
        )

    def delete_file(self, file_id: str) -> FileDeleted:
        """
        Delete a file.

        :param file_id: The file id.
        """
        return self._run(self._core.delete_file_flow(file_id))

    def iter_file_content(self, file_id: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """
        Stream a file's content (output and error files).

        :param file_id: The file id.
        :param chunk_size: Bytes per chunk.
        :raises IncompleteDownloadError: if the body ends before its ``Content-Length``.
        """
        response = self._run(self._core.content_flow(file_id))
        try:
            try:
                yield from response.iter_bytes(chunk_size)
            except httpx.TransportError as exc:
                raise self._core.stream_error(exc, response) from None
            self._core.check_complete(response)
        finally:
            response.close()

    def download_file(self, file_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """
        Stream a file's content to a path or a writable binary stream; return the bytes written.

        A path is written under a temporary name in the same directory and renamed when complete, so
        it never holds a partial download.

        :param file_id: The file id.
        :param dest: Destination path, or a writable binary stream (e.g. ``ObjectStoragePath.open("wb")``).
        """
        if not isinstance(dest, (str, os.PathLike)):
            return self._copy(file_id, dest)
        path = os.fspath(dest)
        tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as handle:
                written = self._copy(file_id, handle)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return written

    def _copy(self, file_id: str, stream: IO[bytes]) -> int:
        written = 0
        for chunk in self.iter_file_content(file_id):
            stream.write(chunk)
            written += len(chunk)
        return written

    # ------------------------------------------------------------------------------------ batches
    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """
        Create a batch.

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
        return self._run(
            self._core.create_batch_flow(
                input_file_id=input_file_id,
                endpoint=endpoint,
                completion_window=completion_window,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    def find_batch(
        self, *, idempotency_key: str, input_file_id: str, created_after: datetime | None = None
    ) -> Batch | None:
        """
        Find the batch created for ``input_file_id`` with ``metadata["idempotency_key"]``, if any.

        :param idempotency_key: The key given to (or minted by) :meth:`create_batch`.
        :param input_file_id: The batch's input file id.
        :param created_after: Only batches created at or after this aware time (minus clock skew).
        """
        return self._run(
            self._core.find_batch_flow(
                idempotency_key=idempotency_key, input_file_id=input_file_id, created_after=created_after
            )
        )

    def retrieve_batch(self, batch_id: str) -> Batch:
        """
        Get a batch (the service keeps batches of the last 30 days).

        :param batch_id: The batch id.
        """
        return self._run(self._core.retrieve_batch_flow(batch_id))

    def list_batches(
        self,
        *,
        ds_name: str | None = None,
        input_file_ids: Iterable[str] | str | None = None,
        status: Iterable[BatchStatus | str] | BatchStatus | str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> Iterator[Batch]:
        """
        Iterate over batches, newest first, fetching further pages as needed.

        :param ds_name: Fuzzy match on the batch name.
        :param input_file_ids: Only batches of these input files (at most 20).
        :param status: Only batches in these statuses.
        :param create_after: Only batches created after this time (datetime -> ``yyyyMMddHHmmss``).
        :param create_before: Only batches created before this time.
        :param page_size: Batches per request (1..100).
        """
        return self._iterate(
            self._core.list_batches_flow(
                ds_name=ds_name,
                input_file_ids=input_file_ids,
                status=status,
                create_after=create_after,
                create_before=create_before,
                page_size=page_size,
            )
        )

    def cancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch; it moves to ``cancelling`` and later ``cancelled``.

        :param batch_id: The batch id.
        """
        return self._run(self._core.cancel_batch_flow(batch_id))
