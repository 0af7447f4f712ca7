"""Asynchronous DashScope Batch/Files client: drives the client flows over ``httpx.AsyncClient``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import closing
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from airflow_provider_dashscope_batch.client._base_client import BaseClient
from airflow_provider_dashscope_batch.client._downloads import Destination
from airflow_provider_dashscope_batch.client._flow import Done, Emit, Sleep, advance
from airflow_provider_dashscope_batch.client.resources import files

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._flow import Flow, Listing, Send, StepResult

T = TypeVar("T")


class AsyncDashScopeClient(BaseClient[httpx.AsyncClient]):
    """
    Asynchronous client of the DashScope OpenAI-compatible Batch and Files API.

    Same methods as :class:`~airflow_provider_dashscope_batch.client.DashScopeClient`, awaited; listings
    are async iterators. Local file writes of :meth:`download_file` run in a worker thread so the event
    loop (e.g. the triggerer's) never blocks on disk; an upload is read by httpx in 64 KiB chunks on the
    event loop.

    :param api_key: DashScope API key (never logged, never part of an exception).
    :param base_url: Compatible-mode base URL of the key's region.
    :param workspace: Optional workspace id, sent as ``X-DashScope-WorkSpace``.
    :param timeout: Per-request timeout in seconds.
    :param max_retries: Retries of transient failures (ignored when ``retry_policy`` is given).
    :param http_client: An ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`).
    :param retry_policy: Full retry policy (backoff, jitter, time budget).
    :param rate_budget: Token buckets every request (retries included) waits for; see
        :mod:`~airflow_provider_dashscope_batch.client.ratelimit`. Defaults to the documented account
        limits, for this client alone.
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

    # ------------------------------------------------------------------------------------ driving
    async def _perform(self, step: Send | Sleep) -> StepResult:
        if isinstance(step, Sleep):
            await anyio.sleep(step.seconds)
            return None
        await self.rate_budget.await_turn(step.request)
        if self._limiter is None or step.stream:
            return await self._send(step)
        async with self._limiter:
            return await self._send(step)

    async def _send(self, step: Send) -> StepResult:
        try:
            response = await self._http.send(step.request, stream=True)
            if self._must_read(step, response):
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            return exc
        return response

    async def _run(self, flow: Flow[T]) -> T:
        with closing(flow):
            step = advance(flow)
            while not isinstance(step, Done):
                step = advance(flow, await self._perform(step))  # type: ignore[arg-type]
            return step.value

    async def _iterate(self, flow: Listing[Any]) -> AsyncIterator[Any]:
        with closing(flow):
            step = advance(flow, listing=True)
            while not isinstance(step, Done):
                if isinstance(step, Emit):
                    for item in step.items:
                        yield item
                    step = advance(flow, listing=True)
                else:
                    step = advance(flow, await self._perform(step), listing=True)

    # ---------------------------------------------------------------------------------- downloads
    async def aiter_file_content(self, file_id: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """
        Stream a file's content.

        :param file_id: The file id.
        :param chunk_size: Bytes per chunk.
        :raises IncompleteDownloadError: if the body ends before its ``Content-Length``.
        """
        response = await self._run(files.content_flow(self._core, file_id))
        failure: httpx.TransportError | None = None
        try:
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
            except httpx.TransportError as exc:
                failure = exc
            self._core.check_complete(response, failure)
        finally:
            await response.aclose()

    iter_file_content = aiter_file_content

    async def download_file(self, file_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """
        Stream a file's content to a path or a writable binary stream; return the bytes written.

        A path is written under a temporary name in the same directory and renamed when complete; the
        file writes run in a worker thread.

        :param file_id: The file id.
        :param dest: Destination path or writable binary stream.
        """
        target = Destination(dest)
        try:
            await anyio.to_thread.run_sync(target.open)
            async for chunk in self.aiter_file_content(file_id):
                await anyio.to_thread.run_sync(target.write, chunk)
            return await anyio.to_thread.run_sync(target.commit)
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled download still removes its partial file
                await anyio.to_thread.run_sync(target.discard)
