"""Transfer a finished batch's output and error files to object storage, streamed and verified."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowOptionalProviderFeatureException,
    Asset,
    BaseOperator,
    ObjectStoragePath,
)

from airflow_provider_dashscope_batch.client import APIConnectionError, NotFoundError
from airflow_provider_dashscope_batch.fs import register_oss_scheme
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.results import (
    RESULT_COLUMN_TYPES,
    RESULT_COLUMNS,
    ResultFileStats,
    UsageTotals,
    flatten_result,
    parse_result_line,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.models import Batch

OutputFormat = Literal["jsonl", "csv", "parquet"]
OverwritePolicy = Literal["replace", "skip", "fail"]
CountCheck = Literal["fail", "warn", "off"]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_EXTENSIONS: dict[str, str] = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
_CSV_FLUSH_BYTES = 1 << 20
_WRITE_QUEUE_CHUNKS = 4
_S3_MIN_PART = 5 * 2**20
_S3_PART_BUDGET = 9_000  # parts per file, below S3's limit of 10,000 (CSV/Parquet may outgrow the source)

register_oss_scheme()


class _DownloadIncomplete(Exception):
    """The downloaded size disagrees with the file's metadata; the download is retried."""


class _BackgroundWriter:
    """
    Write chunks to ``target`` in a worker thread, so a blocking upload overlaps the download.

    At most ``_WRITE_QUEUE_CHUNKS`` chunks wait in the queue. An error while writing is raised by the next
    :meth:`write` or by :meth:`finish`; :meth:`cancel` drops what is queued. Either way the thread ends.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_WRITE_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="dashscope-results-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    self._target.write(chunk)
                except BaseException as exc:  # re-raised in the calling thread
                    self._error = exc

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> None:
        """Wait until every queued chunk is written; re-raise a write error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Drop the queued chunks and wait for the thread to end."""
        if self._thread.is_alive():
            self._cancelled = True
            self._queue.put(None)
            self._thread.join()


class _HashingWriter:
    """Binary write-only stream that counts and hashes what passes through to ``target``."""

    def __init__(self, target: _BackgroundWriter) -> None:
        self._target = target
        self._digest = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed staging stream")
        data = bytes(data)
        self.bytes += len(data)
        self._digest.update(data)
        self._target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        """Nothing to do: chunks go to the writer thread as they are written."""

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class _Sink:
    """Writes one staged result file in the chosen format."""

    def __init__(self, out: _HashingWriter) -> None:
        self.out = out

    def raw(self, chunk: bytes) -> None:
        """Receive the next raw chunk of the source file."""

    def row(self, row: dict[str, Any]) -> None:
        """Receive the next flattened row."""

    def close(self) -> None:
        """Write whatever is buffered and any trailer."""

    def abort(self) -> None:
        """Release resources after a failure (the staged file is discarded)."""


class _JsonlSink(_Sink):
    def raw(self, chunk: bytes) -> None:
        self.out.write(chunk)


class _CsvSink(_Sink):
    def __init__(self, out: _HashingWriter) -> None:
        super().__init__(out)
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        self._writer.writeheader()

    def row(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        if self._buffer.tell() >= _CSV_FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self.out.write(self._buffer.getvalue().encode("utf-8"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def close(self) -> None:
        self._flush()


class _ParquetSink(_Sink):
    def __init__(self, out: _HashingWriter, row_group_size: int) -> None:
        super().__init__(out)
        pa, pq = _import_pyarrow()
        self._pa = pa
        types = {"string": pa.string(), "int": pa.int64()}
        self._schema = pa.schema([(name, types[RESULT_COLUMN_TYPES[name]]) for name in RESULT_COLUMNS])
        self._writer = pq.ParquetWriter(out, self._schema)
        self._row_group_size = row_group_size
        self._rows: list[dict[str, Any]] = []

    def row(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(self._pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise AirflowOptionalProviderFeatureException(
            "output_format='parquet' needs pyarrow: pip install 'airflow-provider-dashscope-batch[parquet]'"
        ) from exc
    return pyarrow, pyarrow.parquet


def _remove(path: ObjectStoragePath) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink(missing_ok=True)


def _publishes_on_close(path: ObjectStoragePath) -> bool:
    """
    Whether a file written to ``path`` stays invisible until closed and can be thrown away instead.

    True for s3fs (``s3://``, ``oss://``): a multipart upload (or a single PUT, for small files) only
    appears once completed, and ``discard()`` aborts it.
    """
    try:
        from s3fs import S3FileSystem
    except ImportError:
        return False
    return isinstance(path.fs, S3FileSystem)


class _StagedFile:
    """
    One result file being written and verified; nothing appears under ``final`` before :meth:`publish`.

    Object stores that publish on close are written at ``final`` directly and ``discard()``-ed on failure;
    elsewhere the file is written under a temporary sibling name and renamed.
    """

    def __init__(self, final: ObjectStoragePath, size_hint: int | None) -> None:
        self.final = final
        self._published = False
        self._tmp: ObjectStoragePath | None = None
        if _publishes_on_close(final):
            # smallest S3 part keeps the buffer small; larger only to stay within the part count limit
            block_size = max(_S3_MIN_PART, -(-(size_hint or 0) // _S3_PART_BUDGET))
            # the fsspec file itself (not ObjectStoragePath's wrapper), so discard() can end it for good
            self.handle = final.fs.open(final.path, "wb", block_size=block_size)
        else:
            self._tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.part"
            self.handle = self._tmp.open("wb")

    def written(self) -> None:
        """Everything is written and verified: close a temporary file (a direct upload stays open)."""
        if self._tmp is not None:
            self.handle.close()

    def publish(self) -> None:
        """Make the file visible under its final name."""
        if self._tmp is None:
            self.handle.close()  # completes the multipart upload / PUT
        else:
            self._tmp.rename(self.final)
        self._published = True

    def discard(self) -> None:
        """Throw away an unpublished file (no-op once published)."""
        if self._published:
            return
        if self._tmp is None:
            # not close(): that would complete the upload and publish a partial object
            with contextlib.suppress(Exception):  # an upload left behind stays invisible
                self.handle.discard()
            self.handle.closed = True
        else:
            with contextlib.suppress(Exception):
                self.handle.close()
            _remove(self._tmp)


class DashScopeBatchResultsToObjectStorageOperator(BaseOperator):
    """
    Stream a finished batch's output and error files to any object storage, verified, with a manifest.

    Layout under ``destination`` (any :class:`ObjectStoragePath` URL: ``file://``, ``s3://conn_id@bucket/prefix``,
    ``gs://``, ``oss://conn_id@bucket/prefix`` …)::

        <destination>/<batch_id>/output.<ext>     # successful requests (ext: jsonl | csv | parquet)
        <destination>/<batch_id>/errors.<ext>     # failed requests (absent if the batch has no error file)
        <destination>/<batch_id>/manifest.json    # written last: the result set is complete once it exists

    ``jsonl`` copies the service's files byte for byte. ``csv`` and ``parquet`` hold one row per request with
    the columns of :data:`~airflow_provider_dashscope_batch.results.RESULT_COLUMNS` (``custom_id``,
    ``status_code``, ``model``, ``content``, ``reasoning_content``, ``prompt_tokens``, ``completion_tokens``,
    ``total_tokens``, ``error_code``, ``error_message``, ``request_id``, ``created``, ``embedding_dim``).
    Embedding results leave ``content`` empty and give the vector length in ``embedding_dim`` (the vectors
    stay in the JSONL). CSV is UTF-8 without BOM; Parquet (``parquet`` extra, pyarrow) is written in row
    groups of ``parquet_row_group_size`` rows.

    Memory stays flat whatever the file size: the download is streamed in chunks, hashed, counted and
    handed through a short queue (a few chunks) to a writer thread, so a blocking upload overlaps the
    download. Only status, errors and token usage are decoded from ``jsonl`` lines (a typed ``msgspec``
    decoder skips content and embeddings); ``csv``/``parquet`` parse each line fully.

    Nothing is ever visible under a final name before its byte count matches the file's metadata and both
    files' line counts passed ``count_check``. How a file is published depends on the filesystem:

    * s3fs stores (``s3://``, ``oss://``): written straight to the final key as a multipart upload with
      5 MiB parts (a single PUT for small files), which S3 keeps invisible until it is completed. The
      upload is completed (the file closed) only after verification; on any failure it is aborted
      (``discard()``), never closed. A killed worker can leave an incomplete, invisible multipart upload:
      an ``AbortIncompleteMultipartUpload`` lifecycle rule on the bucket reclaims it.
    * any other filesystem (``file://``, ``gs://`` …), where a write may be visible before it completes:
      written under a temporary sibling name (``.<name>.<uuid>.part``) and renamed once verified (an atomic
      rename locally). Temporary objects are deleted on failure; ones left by a killed worker are removed
      by the next run.

    A dropped connection or truncated download restarts that file from zero into a fresh upload or
    temporary file, up to ``download_attempts`` times.

    ``manifest.json`` records the batch id, status, endpoint, ``request_counts``, source file ids, the
    destination URIs, format, transfer time, for each file its source bytes / SHA-256 / line count and the
    written bytes / SHA-256, and the token usage (``prompt_tokens``, ``completion_tokens``,
    ``total_tokens``) summed over successful results. The operator returns the manifest (JSON-able, pushed
    to XCom).

    When ``destination`` is a literal string (not templated) it is declared as an :class:`Asset` outlet
    (URI without the connection id) unless ``outlets`` is given, so downstream DAGs can be scheduled on it;
    for a templated destination pass ``outlets=[Asset("s3://bucket/prefix")]`` yourself.

    :param batch_id: Id of a finished batch (templated), e.g. ``"{{ ti.xcom_pull('create_batch')['id'] }}"``.
    :param destination: Base URL or :class:`ObjectStoragePath` (templated).
    :param dashscope_conn_id: DashScope connection id.
    :param output_format: ``jsonl`` (raw, default), ``csv`` or ``parquet``.
    :param overwrite: When ``<batch_id>/manifest.json`` already exists: ``replace`` (transfer again),
        ``skip`` (return the existing manifest if it describes the same batch files in the same format and
        the files are present with the recorded sizes; otherwise transfer again) or ``fail``.
    :param count_check: Compare the output/error line counts with ``request_counts.completed``/``failed``:
        ``fail`` (nothing is published on a mismatch), ``warn`` (publish, log and record a warning) or
        ``off``.
    :param delete_remote_files: After a verified transfer, delete the batch's input, output and error files
        from DashScope (the account holds at most 10,000 files / 100 GB).
    :param download_attempts: Attempts per file when the download is cut short.
    :param chunk_size: Download chunk size in bytes.
    :param parquet_row_group_size: Rows per Parquet row group (rows held in memory at once).
    """

    template_fields: Sequence[str] = ("batch_id", "destination")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        batch_id: str,
        destination: str | ObjectStoragePath,
        dashscope_conn_id: str = DashScopeBatchHook.default_conn_name,
        output_format: OutputFormat = "jsonl",
        overwrite: OverwritePolicy = "replace",
        count_check: CountCheck = "fail",
        delete_remote_files: bool = False,
        download_attempts: int = 3,
        chunk_size: int = 1 << 20,
        parquet_row_group_size: int = 10_000,
        **kwargs: Any,
    ) -> None:
        for name, value, allowed in (
            ("output_format", output_format, _EXTENSIONS),
            ("overwrite", overwrite, ("replace", "skip", "fail")),
            ("count_check", count_check, ("fail", "warn", "off")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if download_attempts < 1 or chunk_size < 1 or parquet_row_group_size < 1:
            raise ValueError("download_attempts, chunk_size and parquet_row_group_size must be >= 1")
        if "outlets" not in kwargs and (asset := self._static_asset(destination)) is not None:
            kwargs["outlets"] = [asset]
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.destination = destination
        self.dashscope_conn_id = dashscope_conn_id
        self.output_format = output_format
        self.overwrite = overwrite
        self.count_check = count_check
        self.delete_remote_files = delete_remote_files
        self.download_attempts = download_attempts
        self.chunk_size = chunk_size
        self.parquet_row_group_size = parquet_row_group_size

    @staticmethod
    def _static_asset(destination: str | ObjectStoragePath) -> Asset | None:
        if not isinstance(destination, str) or "{{" in destination or "{%" in destination:
            return None
        parts = urlsplit(destination)
        if not parts.scheme:
            return None
        return Asset(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())

    # ----------------------------------------------------------------------------------- execute
    def execute(self, context: Context) -> dict[str, Any]:
        if self.output_format == "parquet":
            _import_pyarrow()
        client = DashScopeBatchHook(dashscope_conn_id=self.dashscope_conn_id).get_conn()
        batch = client.retrieve_batch(self.batch_id)
        if not batch.status.is_terminal:
            raise AirflowException(
                f"Batch {batch.id} is {batch.status}; results can only be transferred once it has finished"
            )
        base = ObjectStoragePath(self.destination)
        target = base / batch.id
        manifest_path = target / MANIFEST_NAME
        existing = self._read_manifest(manifest_path)
        if existing is not None:
            if self.overwrite == "fail":
                raise AirflowFailException(f"{manifest_path} exists and overwrite='fail'")
            if self.overwrite == "skip" and self._matches(existing, batch, target):
                self.log.info("Results of %s already at %s; skipping (overwrite='skip')", batch.id, target)
                self._clean_up(client, batch, existing)
                self._annotate_outlet(context, existing)
                return existing
            self.log.info("Replacing the results of %s at %s", batch.id, target)
            _remove(manifest_path)
        target.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_parts(target)

        warnings: list[str] = []
        staged: list[tuple[str, _StagedFile, dict[str, Any]]] = []
        usage = UsageTotals()
        counts = batch.request_counts
        try:
            for kind, file_id, expected in (
                ("output", batch.output_file_id, counts.completed if counts else None),
                ("errors", batch.error_file_id, counts.failed if counts else None),
            ):
                final = target / f"{kind}.{_EXTENSIONS[self.output_format]}"
                if file_id is None:
                    _remove(final)
                    if expected:
                        warnings.extend(self._count_mismatch(batch.id, kind, None, 0, expected))
                    continue
                file, entry, file_usage = self._stage_with_retries(client, file_id, kind, final)
                staged.append((kind, file, entry))
                if kind == "output":
                    usage = file_usage
                if expected is not None:
                    warnings.extend(self._count_mismatch(batch.id, kind, file_id, entry["lines"], expected))
                elif self.count_check != "off":
                    warnings.append(f"batch {batch.id} has no request_counts; {kind} lines not checked")
            for _, file, entry in staged:
                file.publish()
                entry["uri"] = str(file.final)
        finally:
            for _, file, _ in staged:
                file.discard()

        manifest = self._manifest(batch, target, staged, usage, warnings)
        self._write_manifest(manifest_path, manifest)
        self.log.info(
            "Transferred batch %s to %s (%s)",
            batch.id,
            target,
            ", ".join(f"{kind}: {e['lines']} lines" for kind, _, e in staged) or "no result files",
        )
        self._clean_up(client, batch, manifest)
        self._annotate_outlet(context, manifest)
        return manifest

    # ------------------------------------------------------------------------------------ staging
    def _stage_with_retries(
        self, client: DashScopeClient, file_id: str, kind: str, final: ObjectStoragePath
    ) -> tuple[_StagedFile, dict[str, Any], UsageTotals]:
        expected_bytes = client.retrieve_file(file_id).bytes
        for attempt in range(1, self.download_attempts + 1):
            try:
                return self._stage(client, file_id, final, expected_bytes)
            except (APIConnectionError, _DownloadIncomplete) as exc:
                if attempt == self.download_attempts:
                    raise AirflowException(
                        f"Download of {kind} file {file_id} failed {attempt} times, nothing was published: "
                        f"{exc}"
                    ) from exc
                delay = min(2.0 ** (attempt - 1), 30.0)
                self.log.warning(
                    "Download of %s file %s interrupted (%s); restarting in %.0fs (attempt %d of %d)",
                    kind,
                    file_id,
                    exc,
                    delay,
                    attempt + 1,
                    self.download_attempts,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _stage(
        self, client: DashScopeClient, file_id: str, final: ObjectStoragePath, expected_bytes: int | None
    ) -> tuple[_StagedFile, dict[str, Any], UsageTotals]:
        source = ResultFileStats()
        usage = UsageTotals()
        file = _StagedFile(final, expected_bytes)
        writer = _BackgroundWriter(file.handle)
        out = _HashingWriter(writer)
        sink: _Sink | None = None
        try:
            sink = self._sink(out)
            line_no = 0
            for chunk in client.iter_file_content(file_id, chunk_size=self.chunk_size):
                lines = source.update(chunk)
                sink.raw(chunk)
                for line in lines:
                    line_no += 1
                    self._consume(sink, usage, line, file_id, line_no)
            for line in source.finish():
                line_no += 1
                self._consume(sink, usage, line, file_id, line_no)
            sink.close()
            out.close()
            writer.finish()
            if expected_bytes is not None and source.bytes != expected_bytes:
                raise _DownloadIncomplete(
                    f"received {source.bytes} bytes of file {file_id}, its metadata says {expected_bytes}"
                )
            file.written()
        except BaseException:
            out.close()
            if sink is not None:
                sink.abort()
            writer.cancel()
            file.discard()
            raise
        entry = {
            "file_id": file_id,
            "source_bytes": source.bytes,
            "source_sha256": source.sha256,
            "lines": source.lines,
            "bytes": out.bytes,
            "sha256": out.sha256,
        }
        return file, entry, usage

    def _sink(self, out: _HashingWriter) -> _Sink:
        if self.output_format == "csv":
            return _CsvSink(out)
        if self.output_format == "parquet":
            return _ParquetSink(out, self.parquet_row_group_size)
        return _JsonlSink(out)

    def _consume(self, sink: _Sink, usage: UsageTotals, line: bytes, file_id: str, line_no: int) -> None:
        try:
            if self.output_format == "jsonl":  # bytes are copied as is: decode only status and usage
                usage.add(line)
                return
            obj = parse_result_line(line)
        except ValueError as exc:
            raise AirflowException(f"file {file_id}, line {line_no}: {exc}") from None
        usage.add(obj)
        sink.row(flatten_result(obj))

    def _count_mismatch(
        self, batch_id: str, kind: str, file_id: str | None, lines: int, expected: int
    ) -> list[str]:
        if self.count_check == "off" or lines == expected:
            return []
        field = "completed" if kind == "output" else "failed"
        message = (
            f"batch {batch_id}: {kind} file {file_id or '(none)'} has {lines} lines but "
            f"request_counts.{field} is {expected}"
        )
        if self.count_check == "fail":
            raise AirflowException(f"{message}; nothing was published (count_check='fail')")
        self.log.warning("%s", message)
        return [message]

    # ----------------------------------------------------------------------------------- manifest
    def _manifest(
        self,
        batch: Batch,
        target: ObjectStoragePath,
        staged: list[tuple[str, _StagedFile, dict[str, Any]]],
        usage: UsageTotals,
        warnings: list[str],
    ) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "batch_id": batch.id,
            "status": str(batch.status),
            "endpoint": batch.endpoint,
            "request_counts": batch.request_counts.model_dump() if batch.request_counts else None,
            "batch_created_at": batch.created_at,
            "input_file_id": batch.input_file_id,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "format": self.output_format,
            "destination": str(target),
            "manifest_uri": str(target / MANIFEST_NAME),
            "files": {kind: entry for kind, _, entry in staged},
            "usage": usage.as_dict(),
            "warnings": warnings,
            "transferred_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    @staticmethod
    def _write_manifest(path: ObjectStoragePath, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        if _publishes_on_close(path):
            with path.open("wb") as handle:  # buffered whole, sent as one PUT on close
                handle.write(data)
            return
        tmp = path.parent / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.part"
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
            tmp.rename(path)
        finally:
            _remove(tmp)

    @staticmethod
    def _read_manifest(path: ObjectStoragePath) -> dict[str, Any] | None:
        try:
            with path.open("rb") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _matches(self, manifest: dict[str, Any], batch: Batch, target: ObjectStoragePath) -> bool:
        if (
            manifest.get("batch_id") != batch.id
            or manifest.get("format") != self.output_format
            or manifest.get("output_file_id") != batch.output_file_id
            or manifest.get("error_file_id") != batch.error_file_id
        ):
            return False
        for kind, entry in (manifest.get("files") or {}).items():
            path = target / f"{kind}.{_EXTENSIONS[self.output_format]}"
            try:
                if path.stat().st_size != entry.get("bytes"):
                    return False
            except FileNotFoundError:
                return False
        return True

    def _sweep_stale_parts(self, target: ObjectStoragePath) -> None:
        # temporary objects left behind by a killed worker; never under a final name
        try:
            stale = [p for p in target.iterdir() if p.name.startswith(".") and p.name.endswith(".part")]
        except (FileNotFoundError, NotADirectoryError):  # object stores: no such prefix yet
            return
        for path in stale:
            self.log.info("Removing stale temporary object %s", path)
            _remove(path)

    # ------------------------------------------------------------------------------------ clean-up
    def _clean_up(self, client: DashScopeClient, batch: Batch, manifest: dict[str, Any]) -> None:
        if not self.delete_remote_files:
            return
        deleted = []
        for file_id in (batch.input_file_id, batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                client.delete_file(file_id)
            except NotFoundError:
                self.log.info("Remote file %s was already deleted", file_id)
            deleted.append(file_id)
        self.log.info("Deleted remote files %s", ", ".join(deleted))
        manifest["deleted_remote_files"] = deleted

    def _annotate_outlet(self, context: Context, manifest: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset):
                outlet_events[outlet].extra.update(
                    {"batch_id": manifest["batch_id"], "manifest_uri": manifest["manifest_uri"]}
                )
