"""Synchronous DashScope Batch/Files client: drives the flows of :mod:`.resources` over ``httpx.Client``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import closing
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_provider_dashscope_batch.client._base_client import BaseClient
from airflow_provider_dashscope_batch.client._downloads import Destination
from airflow_provider_dashscope_batch.client._flow import Done, Emit, Sleep, advance
from airflow_provider_dashscope_batch.client.resources import files

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._flow import Flow, Listing, Send, StepResult

T = TypeVar("T")


class DashScopeClient(BaseClient[httpx.Client]):
    """
    Client of the DashScope OpenAI-compatible Batch and Files API.

    :param api_key: DashScope API key (never logged, never part of an exception).
    :param base_url: Compatible-mode base URL of the key's region.
    :param workspace: Optional workspace id, sent as ``X-DashScope-WorkSpace``.
    :param timeout: Per-request timeout in seconds.
    :param max_retries: Retries of transient failures (ignored when ``retry_policy`` is given).
    :param http_client: An ``httpx.Client`` to use (not closed by :meth:`close`); one is created otherwise.
    :param retry_policy: Full retry policy (backoff, jitter, time budget).
    :param rate_budget: Token buckets every request (retries included) waits for; see
        :mod:`~airflow_provider_dashscope_batch.client.ratelimit`. Defaults to the documented account
        limits, for this client alone.
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
    def _perform(self, step: Send | Sleep) -> StepResult:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        self.rate_budget.wait(step.request)
        try:
            response = self._http.send(step.request, stream=True)
            if self._must_read(step, response):
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.TransportError as exc:
            return exc
        return response

    def _run(self, flow: Flow[T]) -> T:
        with closing(flow):
            step = advance(flow)
            while not isinstance(step, Done):
                step = advance(flow, self._perform(step))  # type: ignore[arg-type]
            return step.value

    def _iterate(self, flow: Listing[Any]) -> Iterator[Any]:
        with closing(flow):
            step = advance(flow, listing=True)
            while not isinstance(step, Done):
                if isinstance(step, Emit):
                    yield from step.items
                    step = advance(flow, listing=True)
                else:
                    step = advance(flow, self._perform(step), listing=True)

    # ---------------------------------------------------------------------------------- downloads
    def iter_file_content(self, file_id: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """
        Stream a file's content (output and error files).

        :param file_id: The file id.
        :param chunk_size: Bytes per chunk.
        :raises IncompleteDownloadError: if the body ends before its ``Content-Length``.
        """
        response = self._run(files.content_flow(self._core, file_id))
        failure: httpx.TransportError | None = None
        try:
            try:
                yield from response.iter_bytes(chunk_size)
            except httpx.TransportError as exc:
                failure = exc
            self._core.check_complete(response, failure)
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
        target = Destination(dest)
        try:
            target.open()
            for chunk in self.iter_file_content(file_id):
                target.write(chunk)
            return target.commit()
        finally:
            target.discard()
