"""Download one result file into a staged (unpublished) file: streamed, encoded, counted, hashed, verified."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client import DashScopeError, IncompleteDownloadError, RetryPolicy
from airflow_provider_dashscope_batch.results.input_columns import InputColumns
from airflow_provider_dashscope_batch.results.lines import ResultFileStats, ResultFormat, UsageTotals
from airflow_provider_dashscope_batch.results.tables import ResultEncoder, TableKind, open_encoder
from airflow_provider_dashscope_batch.transfers.manifest import FileRecord, TableRecord
from airflow_provider_dashscope_batch.transfers.publishing import StagedFile, stage
from airflow_provider_dashscope_batch.transfers.streaming import (
    BackgroundWorker,
    BackgroundWriter,
    HashingWriter,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_dashscope_batch.client import DashScopeClient

__all__ = ["DownloadFailed", "ResultFileStager", "StagedResult", "UnreadableResult"]

log = logging.getLogger(__name__)


class DownloadFailed(Exception):
    """A result file could not be downloaded completely within the attempts allowed."""


class UnreadableResult(Exception):
    """A result line is not a JSON object (``csv``/``parquet`` need every line parsed)."""


class _CutShort(Exception):
    """The body was cut short after the response started: the download restarts from zero."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class StagedResult:
    """A result file written and verified but not yet published."""

    file: StagedFile
    record: FileRecord
    usage: UsageTotals


class ResultFileStager:
    """
    Downloads result files into :class:`~.publishing.StagedFile` s, restarting a download cut short.

    The client retries a request until its response starts; a body cut short after that (a dropped
    connection, fewer bytes than the file's metadata announces) cannot be resumed, so the whole file is
    downloaded again into a fresh staged file, up to ``retry.max_retries`` times, waiting
    ``retry.backoff()`` (or the ``retry_after`` the error carries) in between.

    :param client: The DashScope client.
    :param fmt: Output format.
    :param retry: Restart budget and backoff.
    :param chunk_size: Download chunk size in bytes.
    :param row_group_size: Rows per Parquet row group.
    :param sleep: Waits between attempts (tests pass a recorder).
    :param meter: Makes a fresh :class:`~airflow_provider_dashscope_batch.cost.CostMeter` per download
        attempt, to price each successful request (``StagedResult.usage.meter``).
    """

    def __init__(
        self,
        client: DashScopeClient,
        fmt: ResultFormat,
        *,
        retry: RetryPolicy,
        chunk_size: int,
        row_group_size: int,
        sleep: Callable[[float], None] = time.sleep,
        meter: Callable[[], Any] | None = None,
    ) -> None:
        self.client = client
        self.meter = meter
        self.fmt = fmt
        self.retry = retry
        self.chunk_size = chunk_size
        self.row_group_size = row_group_size
        self.sleep = sleep

    def stage(
        self,
        file_id: str,
        final: ObjectStoragePath,
        table: TableKind = TableKind.REQUESTS,
        input_columns: InputColumns | None = None,
    ) -> StagedResult:
        """
        Download ``file_id`` into a staged file for ``final``, as a ``table`` for ``csv``/``parquet``.

        ``input_columns`` are added to each ``csv``/``parquet`` row.

        :raises DownloadFailed: when every attempt was cut short.
        :raises UnreadableResult: for a line that is not a JSON object (``csv``/``parquet``).
        """
        expected_bytes = self.client.retrieve_file(file_id).bytes
        attempts = self.retry.max_retries + 1
        for retry in range(attempts):
            try:
                return self._stage_once(file_id, final, expected_bytes, table, input_columns)
            except _CutShort as exc:
                if retry + 1 == attempts:
                    raise DownloadFailed(
                        f"Download of file {file_id} failed {attempts} times, nothing was published: {exc}"
                    ) from None
                delay = exc.retry_after if exc.retry_after is not None else self.retry.backoff(retry)
                log.warning(
                    "Download of file %s interrupted (%s); restarting in %.1fs (attempt %d of %d)",
                    file_id,
                    exc,
                    delay,
                    retry + 2,
                    attempts,
                )
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _stage_once(
        self,
        file_id: str,
        final: ObjectStoragePath,
        expected_bytes: int | None,
        table: TableKind,
        input_columns: InputColumns | None,
    ) -> StagedResult:
        copy = self.fmt is ResultFormat.JSONL  # written bytes == source bytes: hashed once, as written
        source = ResultFileStats(digest=not copy)
        usage = UsageTotals(meter=self.meter() if self.meter is not None else None)
        file = stage(final, expected_bytes)
        writer = BackgroundWriter(file.handle)
        out = HashingWriter(writer)
        encoder: ResultEncoder | None = None
        parser: BackgroundWorker | None = None
        try:
            encoder = open_encoder(
                self.fmt, out, row_group_size=self.row_group_size, table=table, input_columns=input_columns
            )
            lines = _Lines(file_id, source, encoder, usage)
            # the lines are split, checked and encoded in a worker thread while this one downloads
            parser = BackgroundWorker(lines.chunk, name="dashscope-results-parser")
            received = 0
            try:
                for chunk in self.client.iter_file_content(file_id, chunk_size=self.chunk_size):
                    received += len(chunk)
                    parser.put(chunk)
            except DashScopeError as exc:
                # before the first chunk, the client has applied its own retry policy to the request
                if isinstance(exc, IncompleteDownloadError) or (exc.retryable and received):
                    raise _CutShort(str(exc), exc.retry_after) from None
                raise
            parser.finish()
            lines.finish()
            encoder.close()
            out.close()
            writer.finish()
            if expected_bytes is not None and source.bytes != expected_bytes:
                raise _CutShort(f"received {source.bytes} bytes, the file's metadata says {expected_bytes}")
            file.written()
        except BaseException:
            if parser is not None:
                parser.cancel()
            out.close()
            if encoder is not None:
                encoder.abort()
            writer.cancel()
            file.discard()
            raise
        record = FileRecord(
            file_id=file_id,
            uri=str(final),
            lines=source.lines,
            source_bytes=source.bytes,
            source_sha256=out.sha256 if copy else source.sha256,
            bytes=out.bytes,
            sha256=out.sha256,
            table=None if self.fmt is ResultFormat.JSONL else TableRecord.of(table, encoder),
        )
        return StagedResult(file=file, record=record, usage=usage)


class _Lines:
    """The lines of one download attempt: split, counted, encoded and their usage added, chunk by chunk."""

    def __init__(
        self, file_id: str, source: ResultFileStats, encoder: ResultEncoder, usage: UsageTotals
    ) -> None:
        self.file_id = file_id
        self.source = source
        self.encoder = encoder
        self.usage = usage
        self.line_no = 0

    def chunk(self, chunk: bytes) -> None:
        """
        Take the next chunk of the file.

        :raises UnreadableResult: for a line that is not a JSON object (or not a row of the table).
        """
        lines = self.source.update(chunk)
        self.encoder.raw(chunk)
        for line in lines:
            self._line(line)

    def finish(self) -> None:
        """Take the last line if the file did not end with a newline."""
        for line in self.source.finish():
            self._line(line)

    def _line(self, line: bytes) -> None:
        self.line_no += 1
        try:
            if self.encoder.wants_rows:
                self.encoder.consume(line, self.usage)
            else:  # bytes are copied as is: decode only status and usage
                self.usage.add(line)
        except ValueError as exc:
            raise UnreadableResult(f"file {self.file_id}, line {self.line_no}: {exc}") from None
