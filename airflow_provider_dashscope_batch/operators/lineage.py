"""
OpenLineage datasets of the operators, for their ``get_openlineage_facets_on_complete``.

The openlineage provider calls that method only where it is installed, and this module imports it only
inside the functions, so nothing of it is loaded otherwise. The graph it draws, one dataset per node:

* the upload's **source** (a local file or ``ObjectStoragePath``) -> the **DashScope file**
  (``dashscope://<api host>``, ``files/<file id>``);
* the DashScope file -> the **batch's result set** (``batches/<batch id>``; what the service writes for
  the batch, named by the batch because its output file exists only once it is done); the sharded
  operator draws its source -> every shard's batch;
* the batches -> the **transfer's files and manifest** in object storage.

Object-storage datasets follow the providers' naming: ``s3://<bucket>`` (likewise ``gs``, ``oss``, ...)
with the key as name, ``file`` with the absolute path. Outputs carry ``outputStatistics`` (rows and
bytes) where known; DashScope files the transfer deleted carry a ``lifecycleStateChange`` ``DROP``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator

_T = TypeVar("_T")

__all__ = [
    "batch_lineage",
    "dashscope_namespace",
    "keep_for_lineage",
    "path_dataset",
    "sharded_lineage",
    "transfer_lineage",
    "upload_lineage",
]


def dashscope_namespace(base_url: str) -> str:
    """The namespace of a connection's DashScope files and batches: ``dashscope://<API host>``."""
    return f"dashscope://{urlsplit(base_url).netloc}"


def path_dataset(location: Any, *, rows: int | None = None, size: int | None = None) -> Dataset | None:
    """
    The dataset of a local path, URL or ``ObjectStoragePath`` (connection id dropped), or None.

    :param rows: Rows written (``outputStatistics``), for an output.
    :param size: Bytes written (``outputStatistics``), for an output.
    """
    text = str(location)
    parts = urlsplit(text)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain (or Windows drive) path
        path = PurePosixPath(text)
        return _dataset("file", str(path if path.is_absolute() else PurePosixPath.cwd() / path), rows, size)
    if parts.scheme == "file":
        return _dataset("file", parts.path, rows, size)
    bucket = parts.netloc.rpartition("@")[2]
    if not bucket:
        return None
    return _dataset(f"{parts.scheme}://{bucket}", parts.path.lstrip("/") or "/", rows, size)


def _dataset(namespace: str, name: str, rows: int | None = None, size: int | None = None) -> Dataset:
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )

    if rows is None and size is None:
        return Dataset(namespace=namespace, name=name)
    stats = OutputStatisticsOutputDatasetFacet(rowCount=rows, size=size)
    return OutputDataset(namespace=namespace, name=name, outputFacets={"outputStatistics": stats})


def _dropped(namespace: str, name: str) -> Dataset:
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        LifecycleStateChange,
        LifecycleStateChangeDatasetFacet,
        PreviousIdentifier,
    )

    facet = LifecycleStateChangeDatasetFacet(
        lifecycleStateChange=LifecycleStateChange.DROP.value,
        previousIdentifier=PreviousIdentifier(namespace=namespace, name=name),
    )
    return Dataset(namespace=namespace, name=name, facets={"lifecycleStateChange": facet})


def _lineage(inputs: Iterable[Dataset | None], outputs: Iterable[Dataset | None]) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[d for d in inputs if d is not None], outputs=[d for d in outputs if d is not None]
    )


def keep_for_lineage(operator: DashScopeBaseOperator, result: _T) -> _T:
    """
    Keep what the task returns, with its DashScope namespace, for lineage; returns ``result``.

    The openlineage listener builds the COMPLETE event in a fork of the task process by default, which
    cannot reach Airflow's supervisor (no XCom or connection reads there), so the lineage is built from
    what the operator kept.
    """
    operator._lineage_record = (dashscope_namespace(operator.hook.get_conn().base_url), result)  # type: ignore[attr-defined]
    return result


def _recorded(operator: DashScopeBaseOperator) -> tuple[str, Any]:
    return getattr(operator, "_lineage_record", ("", None))


def _batch_output(namespace: str, batch: Mapping[str, Any]) -> Dataset:
    counts = batch.get("request_counts") or {}
    rows = counts.get("completed") if batch.get("status") == "completed" else None
    return _dataset(namespace, f"batches/{batch['id']}", rows=rows)


def upload_lineage(operator: Any) -> OperatorLineage:
    """The upload: its source file (none for built ``requests``) -> the DashScope file."""
    namespace, file_id = _recorded(operator)
    source = operator.file if operator.file is not None else operator.csv
    outputs = [_dataset(namespace, f"files/{file_id}")] if file_id else []
    return _lineage([path_dataset(source) if source is not None else None], outputs)


def batch_lineage(operator: Any) -> OperatorLineage:
    """The create operator: the input file -> the batch's result set (rows: succeeded requests)."""
    namespace, batch = _recorded(operator)
    if not isinstance(batch, Mapping) or not batch.get("id"):
        return _lineage([], [])
    inputs = [_dataset(namespace, f"files/{file_id}") for file_id in str(operator.input_file_id).split(",")]
    return _lineage(inputs, [_batch_output(namespace, batch)])


def sharded_lineage(operator: Any) -> OperatorLineage:
    """The sharded operator: its source file (none for built ``requests``) -> every shard's batch."""
    namespace, job = _recorded(operator)
    if not isinstance(job, Mapping):
        return _lineage([], [])
    source = operator.file if operator.file is not None else operator.csv
    outputs = [
        _dataset(namespace, f"batches/{shard['batch_id']}")
        for shard in job.get("shards", ())
        if shard.get("batch_id")
    ]
    return _lineage([path_dataset(source) if source is not None else None], outputs)


def transfer_lineage(operator: Any) -> OperatorLineage:
    """The transfer: the batches' result sets -> every published file and the manifest."""
    namespace, manifest = _recorded(operator)
    if not isinstance(manifest, Mapping):
        return _lineage([], [])
    inputs: list[Dataset | None] = []
    outputs: list[Dataset | None] = []
    for shard in manifest.get("shards", ()):
        inputs.append(_dataset(namespace, f"batches/{shard['batch_id']}"))
        inputs.extend(
            _dropped(namespace, f"files/{file_id}") for file_id in shard.get("deleted_remote_files", ())
        )
        outputs.extend(
            path_dataset(record["uri"], rows=record.get("lines"), size=record.get("bytes"))
            for record in (shard.get("files") or {}).values()
        )
    outputs.append(path_dataset(manifest["manifest_uri"]))
    return _lineage(inputs, outputs)
