"""Transfer finished batches' output and error files to object storage, streamed, verified, merged."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowOptionalProviderFeatureException,
    Asset,
    ObjectStoragePath,
)

from airflow_provider_dashscope_batch.client import DashScopeError, NotFoundError, RetryPolicy
from airflow_provider_dashscope_batch.client.identity import key_of, parse_key
from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.recorded import COSTS_XCOM_KEY, costs_xcom
from airflow_provider_dashscope_batch.fs import register_oss_scheme
from airflow_provider_dashscope_batch.jobs.ledger import request_id_of
from airflow_provider_dashscope_batch.jobs.table import SupersededErrors
from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator
from airflow_provider_dashscope_batch.operators.cost import connection_price_table, find_estimates
from airflow_provider_dashscope_batch.operators.lineage import keep_for_lineage, transfer_lineage
from airflow_provider_dashscope_batch.operators.upload import input_columns_path
from airflow_provider_dashscope_batch.results.input_columns import InputColumns
from airflow_provider_dashscope_batch.results.lines import ResultFormat, ResultKind, iter_lines
from airflow_provider_dashscope_batch.results.tables import TableKind, import_pyarrow
from airflow_provider_dashscope_batch.transfers.manifest import (
    MANIFEST_NAME,
    ResultManifest,
    ShardRecord,
    TokenUsage,
)
from airflow_provider_dashscope_batch.transfers.publishing import remove, stale_parts, write_small_file
from airflow_provider_dashscope_batch.transfers.staging import (
    DownloadFailed,
    ResultFileStager,
    StagedResult,
    UnreadableResult,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["DashScopeBatchResultsToObjectStorageOperator"]

OverwritePolicy = Literal["replace", "skip", "fail"]
CountCheck = Literal["fail", "warn", "off"]

_PART_DIGITS = 5


@dataclass(frozen=True)
class _Layout:
    """Where each result file of a result set goes."""

    directory: ObjectStoragePath
    fmt: ResultFormat
    merged: bool

    @property
    def manifest(self) -> ObjectStoragePath:
        return self.directory / MANIFEST_NAME

    def folders(self) -> list[ObjectStoragePath]:
        """Directories holding result files (and temporary objects while they are written)."""
        if self.merged:
            return [self.directory / kind.value for kind in ResultKind]
        return [self.directory]

    def path(self, kind: ResultKind, shard: int) -> ObjectStoragePath:
        if self.merged:
            return self.directory / kind.value / f"part-{shard:0{_PART_DIGITS}d}.{self.fmt.extension}"
        return self.directory / f"{kind}.{self.fmt.extension}"

    def is_result_file(self, path: ObjectStoragePath) -> bool:
        if self.merged:
            return path.name.startswith("part-") and path.name.endswith(f".{self.fmt.extension}")
        return path.name in {f"{kind}.{self.fmt.extension}" for kind in ResultKind}


@dataclass(frozen=True)
class _StagedBatch:
    """One batch's staged result files (published or discarded by the caller) and its count warnings."""

    files: dict[ResultKind, StagedResult]
    warnings: tuple[str, ...]
    input_columns: dict[str, str] | None
    """The input columns added to its tables (name -> type)."""


class DashScopeBatchResultsToObjectStorageOperator(DashScopeBaseOperator):
    """
    Stream finished batches' output and error files to any object storage, verified, with a manifest.

    Give one batch (``batch_id``) or several (``batch_ids``, e.g. the shards of a job split past the
    service's limits): several are merged into one result set with one manifest. Layout under
    ``destination`` (any :class:`ObjectStoragePath` URL: ``file://``, ``s3://conn_id@bucket/prefix``,
    ``gs://``, ``oss://conn_id@bucket/prefix`` …)::

        # batch_id=
        <destination>/<batch_id>/output.<ext>     # successful requests (ext: jsonl | csv | parquet)
        <destination>/<batch_id>/errors.<ext>     # failed requests (absent if the batch has no error file)
        <destination>/<batch_id>/manifest.json    # written last: the result set is complete once it exists

        # batch_ids=
        <destination>/<result_set>/output/part-00000.<ext>   # one part per batch, in the order given
        <destination>/<result_set>/errors/part-00000.<ext>   # (absent for a batch without error file)
        <destination>/<result_set>/manifest.json

    ``jsonl`` copies the service's files byte for byte. ``csv`` and ``parquet`` are typed tables
    (:class:`~airflow_provider_dashscope_batch.results.tables.TableKind`): an embeddings batch's output
    has one row per input text with its vector
    (:data:`~airflow_provider_dashscope_batch.results.tables.EMBEDDING_COLUMNS`; Parquet: a fixed-size
    ``list<float32>`` column); chat output and every errors file have one row per request
    (:data:`~airflow_provider_dashscope_batch.results.tables.RESULT_COLUMNS`: content, reasoning
    content, finish reason, usage, status, error). Every part of a kind has the same columns, so a
    directory of parts reads as one table; the manifest records each file's layout and version
    (``table``).

    Memory stays flat whatever the file size or the number of batches: each download is streamed in
    chunks, hashed, counted and handed through a short queue to a writer thread, so a blocking upload
    overlaps the download.

    Nothing is visible under a final name before every file of every batch is downloaded with the byte
    count its metadata announces and passed ``count_check``: if one file fails, nothing is published. s3fs
    stores (``s3://``, ``oss://``) get each file as a multipart upload at its final key, completed only then
    (aborted on failure); other filesystems get a temporary sibling (``.<name>.<uuid>.part``) renamed only
    then. A download cut short restarts that file from zero, up to ``download_attempts`` times.

    ``manifest.json`` (:class:`~airflow_provider_dashscope_batch.transfers.manifest.ResultManifest`) lists
    every batch with its status, ``request_counts``, file ids, for each published file its URI, source
    bytes / SHA-256 / line count and written bytes / SHA-256, its token usage, the remote files deleted, and
    the totals over all batches. It is written once, after everything it records is done; the operator
    returns the same document (pushed to XCom).

    When ``destination`` is a literal string (not templated) it is declared as an :class:`Asset` outlet
    (URI without the connection id) unless ``outlets`` is given.

    :param batch_id: Id of a finished batch (templated). Exclusive with ``batch_ids``.
    :param batch_ids: Ids of finished batches to merge (templated), e.g. the ``.output`` of a mapped
        create task (its batch dicts are accepted too) or a rendered list.
    :param destination: Base URL or :class:`ObjectStoragePath` (templated).
    :param result_set: Directory name of a merged result set under ``destination`` (templated); defaults
        to ``merged-`` and 16 hex digits of a hash of the batch ids, so a re-run lands in the same place.
    :param dashscope_conn_id: DashScope connection id.
    :param output_format: ``jsonl`` (raw, default), ``csv`` or ``parquet``.
    :param overwrite: When the result set's ``manifest.json`` already exists: ``replace`` (transfer again),
        ``skip`` (return the existing manifest if it describes the same batch files in the same format and
        the files are present with the recorded sizes; otherwise transfer again) or ``fail``.
    :param count_check: Compare each batch's output/error line counts with its
        ``request_counts.completed``/``failed``: ``fail`` (nothing is published on a mismatch), ``warn``
        (publish, log and record a warning) or ``off``.
    :param delete_remote_files: After a verified transfer, delete every batch's input, output and error
        files from DashScope (the account holds at most 10,000 files / 100 GB).
    :param download_attempts: Attempts per file when the download is cut short.
    :param chunk_size: Download chunk size in bytes.
    :param parquet_row_group_size: Rows per Parquet row group (rows held in memory at once).
    :param cost_estimate: The preflight estimate(s) to put beside the actual cost in the manifest's
        ``cost`` block (templated; default: the ``cost_estimate`` XComs of upstream tasks for these
        batches' input files, or of a sharded job). Every shard's actual cost (each successful request at
        its own tier, batch price, the connection region's currency) is recorded either way.
    :param prices: Model prices laid over the shipped table and the connection's (see :doc:`/cost`).
    :param input_columns: ``csv``/``parquet`` only: the directory the upload stored its carried input
        columns in (its ``carry_columns_to``; templated). Each batch's are read from
        ``<input_columns>/<input file id>.jsonl`` and added to every row of its tables, joined on
        ``custom_id`` (``input_id`` for embeddings); the task fails, publishing nothing, if a batch has
        none or two batches carry different columns. See :ref:`transfer:input-columns`.
    """

    template_fields: Sequence[str] = (
        "batch_id",
        "batch_ids",
        "destination",
        "result_set",
        "cost_estimate",
        "input_columns",
    )
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        destination: str | ObjectStoragePath,
        batch_id: str | None = None,
        batch_ids: Sequence[str | Mapping[str, Any]] | str | None = None,
        result_set: str | None = None,
        output_format: str = ResultFormat.JSONL,
        overwrite: OverwritePolicy = "replace",
        count_check: CountCheck = "fail",
        delete_remote_files: bool = False,
        download_attempts: int = 3,
        chunk_size: int = 1 << 20,
        parquet_row_group_size: int = 10_000,
        cost_estimate: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        prices: Mapping[str, Any] | None = None,
        input_columns: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        if (batch_id is None) == (batch_ids is None):
            raise ValueError("give exactly one of batch_id and batch_ids")
        if result_set is not None and batch_ids is None:
            raise ValueError("result_set names a merged result set: it needs batch_ids")
        for name, value, allowed in (
            ("output_format", output_format, [f.value for f in ResultFormat]),
            ("overwrite", overwrite, ["replace", "skip", "fail"]),
            ("count_check", count_check, ["fail", "warn", "off"]),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if input_columns is not None and output_format == ResultFormat.JSONL:
            raise ValueError("input_columns adds table columns: it needs output_format 'csv' or 'parquet'")
        if download_attempts < 1 or chunk_size < 1 or parquet_row_group_size < 1:
            raise ValueError("download_attempts, chunk_size and parquet_row_group_size must be >= 1")
        if "outlets" not in kwargs and (asset := self._static_asset(destination)) is not None:
            kwargs["outlets"] = [asset]
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.batch_ids = batch_ids
        self.destination = destination
        self.result_set = result_set
        self.output_format = ResultFormat(output_format)
        self.overwrite = overwrite
        self.count_check = count_check
        self.delete_remote_files = delete_remote_files
        self.download_attempts = download_attempts
        self.chunk_size = chunk_size
        self.parquet_row_group_size = parquet_row_group_size
        self.cost_estimate = cost_estimate
        self.prices = prices
        self.input_columns = input_columns

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
        if self.output_format is ResultFormat.PARQUET:
            try:
                import_pyarrow()
            except ImportError as exc:
                raise AirflowOptionalProviderFeatureException(str(exc)) from None
        ids = self._ids()
        client = self.hook.get_conn()
        batches = [client.retrieve_batch(batch_id) for batch_id in ids]
        unfinished = [f"{b.id} is {b.status}" for b in batches if not b.status.is_terminal]
        if unfinished:
            raise AirflowException(
                f"Batch {', '.join(unfinished)}; results can only be transferred once it has finished"
            )
        layout = self._layout(ids)
        existing = self._existing(layout)
        if existing is not None and self._matches(existing, batches, layout):
            self.log.info("Results of %s already at %s; skipping (overwrite='skip')", ids, layout.directory)
            if self.delete_remote_files:
                shards = [
                    self._clean_up(client, batch, shard)
                    for batch, shard in zip(batches, existing.shards, strict=True)
                ]
                if shards != existing.shards:
                    existing = existing.model_copy(update={"shards": shards})
                    write_small_file(layout.manifest, existing.to_json())
            return self._finish(context, existing)
        if existing is not None:
            self.log.info("The result set at %s differs; transferring again", layout.directory)

        prices = connection_price_table(self.hook, self.prices)
        remove(layout.manifest)  # the result set is incomplete until its new manifest is written
        for folder in layout.folders():
            folder.mkdir(parents=True, exist_ok=True)
            for path in stale_parts(folder):  # temporary objects left by a killed worker
                self.log.info("Removing stale temporary object %s", path)
                remove(path)
        stager = ResultFileStager(
            client,
            self.output_format,
            retry=RetryPolicy(max_retries=self.download_attempts - 1),
            chunk_size=self.chunk_size,
            row_group_size=self.parquet_row_group_size,
            meter=lambda: CostMeter(*prices),
        )
        superseded = self._superseded(client, batches)
        staged: list[_StagedBatch] = []
        try:
            for index, batch in enumerate(batches):
                carried = staged[0].input_columns if staged else None
                skip = superseded.of(index)
                staged.append(self._stage_batch(stager, batch, layout, index, carried, skip))
            for batch_files in staged:
                for result in batch_files.files.values():
                    result.file.publish()
        finally:
            for batch_files in staged:
                for result in batch_files.files.values():
                    result.file.discard()
        self._remove_stale_results(layout, {r.file.final.name for b in staged for r in b.files.values()})

        shards = [
            self._clean_up(client, batch, self._shard(batch, batch_files.files))
            for batch, batch_files in zip(batches, staged, strict=True)
        ]
        warnings = [warning for batch_files in staged for warning in batch_files.warnings]
        inputs = {b.input_file_id for b in batches if b.input_file_id}
        estimates = [
            e
            for e in find_estimates(context, self, self.cost_estimate)
            if self.cost_estimate is not None or e.file_id is None or e.file_id in inputs
        ]
        manifest = ResultManifest.build(
            fmt=self.output_format,
            directory=layout.directory,
            shards=shards,
            warnings=warnings,
            estimates=estimates,
        )
        write_small_file(layout.manifest, manifest.to_json())
        totals = manifest.totals
        self.log.info(
            "Transferred %d batch(es) to %s: %d output lines, %d error lines, %d bytes",
            totals.batches,
            layout.directory,
            totals.output_lines,
            totals.error_lines,
            totals.bytes,
        )
        if manifest.cost is not None:
            self.log.info("Cost: %s", manifest.cost.summary())
        return self._finish(context, manifest)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the batches' result sets -> the published files and the manifest (see
        :mod:`~airflow_provider_dashscope_batch.operators.lineage`)."""
        return transfer_lineage(self)

    def _ids(self) -> list[str]:
        if self.batch_id is not None:
            return [self.batch_id]
        raw: Any = self.batch_ids
        if isinstance(raw, str):  # a rendered template: "['batch_a', 'batch_b']"
            try:
                raw = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                raise AirflowException(f"batch_ids is not a list: {self.batch_ids!r}") from None
        ids = [item["id"] if isinstance(item, Mapping) else item for item in raw]
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise AirflowException(f"batch_ids must be a non-empty list of batch ids; got {ids!r}")
        if len(set(ids)) != len(ids):
            raise AirflowException(f"batch_ids lists a batch more than once: {ids!r}")
        return ids

    def _layout(self, ids: list[str]) -> _Layout:
        destination = self.destination
        if isinstance(destination, str) and destination.startswith("oss://"):
            register_oss_scheme()
        base = ObjectStoragePath(destination)
        if self.batch_id is not None:
            return _Layout(base / ids[0], self.output_format, merged=False)
        name = self.result_set or "merged-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return _Layout(base / name, self.output_format, merged=True)

    # --------------------------------------------------------------------------------- re-runs
    def _existing(self, layout: _Layout) -> ResultManifest | None:
        """The manifest to skip with, ``None`` to transfer (again); raises for ``overwrite='fail'``."""
        if not layout.manifest.exists():
            return None
        if self.overwrite == "fail":
            raise AirflowFailException(f"{layout.manifest} exists and overwrite='fail'")
        existing = ResultManifest.read(layout.manifest) if self.overwrite == "skip" else None
        if existing is None:
            self.log.info("Replacing the result set at %s", layout.directory)
        return existing

    def _matches(self, manifest: ResultManifest, batches: list[Batch], layout: _Layout) -> bool:
        if manifest.format is not self.output_format or len(manifest.shards) != len(batches):
            return False
        carried = [bool(r.table and r.table.input_columns) for s in manifest.shards for r in s.files.values()]
        if any(c != (self.input_columns is not None) for c in carried):
            return False
        for index, (batch, shard) in enumerate(zip(batches, manifest.shards, strict=True)):
            if (shard.batch_id, shard.output_file_id, shard.error_file_id) != (
                batch.id,
                batch.output_file_id,
                batch.error_file_id,
            ):
                return False
            for kind, record in shard.files.items():
                try:
                    if layout.path(kind, index).stat().st_size != record.bytes:
                        return False
                except FileNotFoundError:
                    return False
        return True

    # ---------------------------------------------------------------------------------- staging
    def _stage_batch(
        self,
        stager: ResultFileStager,
        batch: Batch,
        layout: _Layout,
        index: int,
        carried: dict[str, str] | None,
        skip: set[str],
    ) -> _StagedBatch:
        """
        Stage the batch's files; if one fails, those already staged are discarded before raising.

        ``carried`` are the input columns of the batches before it, which this one's must match; error
        lines of ``skip`` are superseded by a later batch of the job and left out.
        """
        counts = batch.request_counts
        files: dict[ResultKind, StagedResult] = {}
        warnings: list[str] = []
        input_columns = self._read_input_columns(batch, carried)
        try:
            for kind, file_id, expected in (
                (ResultKind.OUTPUT, batch.output_file_id, counts.completed if counts else None),
                (ResultKind.ERRORS, batch.error_file_id, counts.failed if counts else None),
            ):
                lines = 0
                if file_id is not None:
                    try:
                        table = TableKind.of(batch.endpoint, kind)
                        path = layout.path(kind, index)
                        left_out = skip if kind is ResultKind.ERRORS else ()
                        files[kind] = stager.stage(file_id, path, table, input_columns, left_out)
                    except (DownloadFailed, UnreadableResult) as exc:
                        raise AirflowException(f"batch {batch.id}, {kind} file: {exc}") from None
                    lines = files[kind].record.lines
                if expected is not None:
                    warnings.extend(self._count_mismatch(batch.id, kind, file_id, lines, expected))
                elif file_id is not None and self.count_check != "off":
                    warnings.append(f"batch {batch.id} has no request_counts; {kind} lines not checked")
        except BaseException:
            for result in files.values():
                result.file.discard()
            raise
        return _StagedBatch(files, tuple(warnings), input_columns.columns if input_columns else None)

    def _superseded(self, client: DashScopeClient, batches: list[Batch]) -> SupersededErrors:
        """
        Which error lines follow-up rounds supersede (one row per request: its first success, else its
        last error). Only a follow-up round (round 2 on) answers or fails a request again, so nothing is
        read unless one follows an error file: then its output and every error file are.
        """
        superseded = SupersededErrors()
        rounds = [_round_of(batch) or 1 for batch in batches]
        first_errors = next((i for i, b in enumerate(batches) if b.error_file_id), len(batches))
        if not any(r > 1 for r in rounds[first_errors + 1 :]):
            return superseded
        last = len(batches) - 1
        try:
            for index, batch in enumerate(batches):
                if rounds[index] > 1 and batch.output_file_id:
                    superseded.feed(index, self._ids_in(client, batch.output_file_id), errors=False)
                if batch.error_file_id:
                    superseded.feed(index, self._ids_in(client, batch.error_file_id), errors=index < last)
        except DashScopeError as exc:
            raise AirflowException(
                f"Could not read the rounds' result ids; nothing was published: {exc}"
            ) from None
        return superseded

    @staticmethod
    def _ids_in(client: DashScopeClient, file_id: str) -> Iterator[str | None]:
        for line in iter_lines(client.iter_file_content(file_id)):
            yield request_id_of(line)

    def _read_input_columns(self, batch: Batch, carried: dict[str, str] | None) -> InputColumns | None:
        """The batch's input columns (one batch's in memory at a time); ``carried``, if given, to match."""
        if self.input_columns is None:
            return None
        if not batch.input_file_id:
            raise AirflowFailException(f"input_columns: batch {batch.id} has no input file to find them by")
        path = input_columns_path(self.input_columns, batch.input_file_id)
        try:
            with path.open("rb") as stream:
                found = InputColumns.read(stream, str(path))
        except FileNotFoundError:
            raise AirflowFailException(
                f"input_columns: no {path} for batch {batch.id} (input file {batch.input_file_id}); upload "
                "its input with carry_columns and carry_columns_to pointing here. Nothing was published."
            ) from None
        except ValueError as exc:
            raise AirflowFailException(f"input_columns: {exc}. Nothing was published.") from None
        if carried is not None and carried != found.columns:
            raise AirflowFailException(
                f"input_columns: batch {batch.id} carries {found.columns}, an earlier batch {carried}; the "
                "parts of a result set have one set of columns. Nothing was published."
            )
        self.log.info("Adding input columns %s of %s", ", ".join(found.columns), path)
        return found

    def _count_mismatch(
        self, batch_id: str, kind: ResultKind, file_id: str | None, lines: int, expected: int
    ) -> list[str]:
        if self.count_check == "off" or lines == expected:
            return []
        field = "completed" if kind is ResultKind.OUTPUT else "failed"
        message = (
            f"batch {batch_id}: {kind} file {file_id or '(none)'} has {lines} lines but "
            f"request_counts.{field} is {expected}"
        )
        if self.count_check == "fail":
            raise AirflowException(f"{message}; nothing was published (count_check='fail')")
        self.log.warning("%s", message)
        return [message]

    def _remove_stale_results(self, layout: _Layout, current: set[str]) -> None:
        """Delete result files of an earlier transfer to the same place that this one did not write."""
        for folder in layout.folders():
            try:
                listed = list(folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
            for path in listed:
                if layout.is_result_file(path) and path.name not in current:
                    self.log.info("Removing %s, not part of this result set", path)
                    remove(path)

    # ------------------------------------------------------------------------------ bookkeeping
    @staticmethod
    def _shard(batch: Batch, files: dict[ResultKind, StagedResult]) -> ShardRecord:
        usage = files.get(ResultKind.OUTPUT)
        return ShardRecord(
            batch_id=batch.id,
            status=str(batch.status),
            endpoint=batch.endpoint,
            request_counts=batch.request_counts,
            batch_created_at=batch.created_at,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            files={kind: result.record for kind, result in files.items()},
            usage=TokenUsage.of(usage.usage) if usage is not None else TokenUsage(),
            cost=usage.usage.meter.result() if usage is not None and usage.usage.meter is not None else None,
            round=_round_of(batch),
        )

    def _clean_up(self, client: DashScopeClient, batch: Batch, shard: ShardRecord) -> ShardRecord:
        """Delete the batch's remote files if asked; return the shard record saying so."""
        if not self.delete_remote_files:
            return shard
        deleted = []
        for file_id in (batch.input_file_id, batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                client.delete_file(file_id)
            except NotFoundError:
                self.log.info("Remote file %s was already deleted", file_id)
            deleted.append(file_id)
        self.log.info("Deleted the remote files of batch %s: %s", batch.id, ", ".join(deleted))
        return shard.model_copy(update={"deleted_remote_files": deleted})

    def _finish(self, context: Context, manifest: ResultManifest) -> dict[str, Any]:
        outlet_events = context.get("outlet_events")
        if outlet_events is not None:
            for outlet in self.outlets or ():
                if isinstance(outlet, Asset):
                    outlet_events[outlet].extra.update(
                        {"batch_ids": manifest.batch_ids, "manifest_uri": manifest.manifest_uri}
                    )
        costs = {shard.batch_id: shard.cost for shard in manifest.shards if shard.cost is not None}
        ti = context.get("ti")
        if costs and ti is not None:  # for the batches page (ui.costs), read through the REST API
            ti.xcom_push(key=COSTS_XCOM_KEY, value=costs_xcom(costs))
        return keep_for_lineage(self, manifest.model_dump(mode="json"))


def _round_of(batch: Batch) -> int | None:
    """The batch's round in its job: its idempotency key's generation (``None`` for a foreign key)."""
    parsed = parse_key(key_of(batch))
    return None if parsed is None else parsed[1] or 1
