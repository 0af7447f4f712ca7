"""Asynchronous DashScope Batch/Files client: drives the flows of :mod:`._base` over ``httpx.AsyncClient``."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread
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


class AsyncDashScopeClient(ClientFace[httpx.AsyncClient]):
    """
    Asynchronous client of the DashScope OpenAI-compatible Batch and Files API.

    Same methods as :class:`~airflow_provider_dashscope_batch.client.DashScopeClient`, awaited; listings
    are async iterators. Local file writes of :meth:`download_file` run in a worker thread so the event
    loop (e.g. the triggerer's) never blocks on disk.

    :param api_key: DashScope API key (never logged, never part of an exception).
    :param base_url: Compatible-mode base URL of the key's region.
    :param workspace: Optional workspace id, sent as ``X-DashScope-WorkSpace``.
    :param timeout: Per-request timeout in seconds.
    :param max_retries: Retries of transient failures (ignored when ``retry_policy`` is given).
    :param http_client: An ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`).
    :param retry_policy: Full retry policy (backoff, jitter, time budget).
    """

    http_class = httpx.AsyncClient
    _limiter: anyio.Semaphore | None = None

    @property
    def is_closed(self) -> bool:
        """Whether the underlying HTTP client is closed."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the underlying HTTP client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncDashScopeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def limit_concurrency(self, limiter: anyio.Semaphore | None) -> None:
        """Bound the requests in flight at once (used by the shared per-loop client)."""
        self._limiter = limiter

    @property
    def limiter(self) -> anyio.Semaphore | None:
        """The semaphore bounding requests in flight, if any."""
        return self._limiter

    # ------------------------------------------------------------------------------------ driving
    async def _perform(self, step: Send | Sleep) -> Outcome:
        if isinstance(step, Sleep):
            await anyio.sleep(step.seconds)
            return None
        if self._limiter is None or step.stream:
            return await self._send(step)
        async with self._limiter:
            return await self._send(step)

    async def _send(self, step: Send) -> Outcome:
        try:
            response = await self._http.send(step.request, stream=True)
        except httpx.TransportError as exc:
            return exc
        if step.stream and response.is_success:
            return response
        try:
            await response.aread()
        except httpx.TransportError as exc:
            return exc
        finally:
            await response.aclose()
        return response

    async def _run(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = flow.send(outcome)
                if isinstance(step, Emit):
                    raise TypeError("a single-result flow emitted items")
                outcome = await self._perform(step)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    async def _iterate(self, flow: Flow[None]) -> AsyncIterator[Any]:
        outcome: Outcome = None
        try:
            while True:
                try:
                    step = flow.send(outcome)
                except StopIteration:
                    return
                if isinstance(step, Emit):
                    for item in step.items:
                        yield item
                    outcome = None
                else:
                    outcome = await self._perform(step)
        finally:
            flow.close()

    # -------------------------------------------------------------------------------------- files
    async def upload_file(
        self, file: FileInput, *, filename: str | None = None, purpose: str = "batch"
    ) -> FileObject:
        """
        Upload a file, streamed from a path or a binary stream.

        A path or seekable stream is re-sent after a transient failure, but only once the file list
        shows that the failed attempt did not store it; a non-seekable stream is sent once. httpx reads
        the file in 64 KiB chunks on the event loop.

        :param file: Path or binary stream.
        :param filename: Name to upload under; defaults to the path's or stream's name.
        :param purpose: File purpose (``batch`` for batch input).
        """
        source = UploadSource(file, filename)
        with source.open() as handle:
            return await self._run(self._core.upload_flow(handle, purpose))

    async def retrieve_file(self, file_id: str) -> FileObject:
        """
        Get a file's metadata.

        :param file_id: The file id.
        """
        return await self._run(self._core.retrieve_file_flow(file_id))

    def list_files(
        self,
        *,
        purpose: str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[FileObject]:
        """
        Iterate over files asynchronously, fetching further pages as needed.

        :param purpose: Only files of this purpose (``batch``, ``batch_output``).
        :param create_after: Only files created after this time.
        :param create_before: Only files created before this time.
        :param page_size: Files per request (1..2000).
        """
        return self._iterate(
            self._core.list_files_flow(
                purpose=purpose, create_after=create_after, create_before=create_before, page_size=page_size
            )
        )

    async def delete_file(self, file_id: str) -> FileDeleted:
        """
        Delete a file.

        :param file_id: The file id.
        """
        return await self._run(self._core.delete_file_flow(file_id))

    async def aiter_file_content(self, file_id: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """
        Stream a file's content.

        :param file_id: The file id.
        :param chunk_size: Bytes per chunk.
        :raises IncompleteDownloadError: if the body ends before its ``Content-Length``.
        """
        response = await self._run(self._core.content_flow(file_id))
        try:
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
            except httpx.TransportError as exc:
                raise self._core.stream_error(exc, response) from None
            self._core.check_complete(response)
        finally:
            await response.aclose()

    iter_file_content = aiter_file_content

    async def download_file(self, file_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """
        Stream a file's content to a path or a writable binary stream; return the bytes written.

        A path is written under a temporary name in the same directory and renamed when complete.

        :param file_id: The file id.
        :param dest: Destination path or writable binary stream.
        """
        if not isinstance(dest, (str, os.PathLike)):
            return await self._copy(file_id, dest)
        path = os.fspath(dest)
        tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
        try:
            handle = await anyio.to_thread.run_sync(open, tmp, "wb")
            try:
                written = await self._copy(file_id, handle)
            finally:
                await anyio.to_thread.run_sync(handle.close)
            await anyio.to_thread.run_sync(os.replace, tmp, path)
        except BaseException:
            await anyio.to_thread.run_sync(_remove, tmp)
            raise
        return written

    async def _copy(self, file_id: str, stream: IO[bytes]) -> int:
        written = 0
        async for chunk in self.aiter_file_content(file_id):
            await anyio.to_thread.run_sync(stream.write, chunk)
            written += len(chunk)
        return written

    # ------------------------------------------------------------------------------------ batches
    async def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str | timedelta = "24h",
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """
        Create a batch; see :meth:`DashScopeClient.create_batch` for how duplicates are avoided.

        :param input_file_id: Id of the uploaded JSONL file.
        :param endpoint: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/chat/ds-test``.
        :param completion_window: ``"24h"`` .. ``"336h"`` / ``"14d"``, or a whole-hour timedelta.
        :param metadata: ``ds_name``, ``ds_description``, ``ds_batch_finish_callback`` and other pairs.
        :param idempotency_key: Key identifying this creation across retries.
        """
        return await self._run(
            self._core.create_batch_flow(
                input_file_id=input_file_id,
                endpoint=endpoint,
                completion_window=completion_window,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    async def find_batch(
        self, *, idempotency_key: str, input_file_id: str, created_after: datetime | None = None
    ) -> Batch | None:
        """
        Find the batch created for ``input_file_id`` with ``metadata["idempotency_key"]``, if any.

        :param idempotency_key: The key given to (or minted by) :meth:`create_batch`.
        :param input_file_id: The batch's input file id.
        :param created_after: Only batches created at or after this aware time (minus clock skew).
        """
        return await self._run(
            self._core.find_batch_flow(
                idempotency_key=idempotency_key, input_file_id=input_file_id, created_after=created_after
            )
        )

    async def retrieve_batch(self, batch_id: str) -> Batch:
        """
        Get a batch.

        :param batch_id: The batch id.
        """
        return await self._run(self._core.retrieve_batch_flow(batch_id))

    def list_batches(
        self,
        *,
        ds_name: str | None = None,
        input_file_ids: Iterable[str] | str | None = None,
        status: Iterable[BatchStatus | str] | BatchStatus | str | None = None,
        create_after: TimeFilter | None = None,
        create_before: TimeFilter | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Batch]:
        """
        Iterate over batches asynchronously, newest first.

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

    async def cancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch.

        :param batch_id: The batch id.
        """
        return await self._run(self._core.cancel_batch_flow(batch_id))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
