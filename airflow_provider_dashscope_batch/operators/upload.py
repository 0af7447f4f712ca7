"""Operator that validates a batch input file and uploads it to DashScope."""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_dashscope_batch.catalog import Catalog
from airflow_provider_dashscope_batch.fs import register_oss_scheme
from airflow_provider_dashscope_batch.operators.job import DashScopeBaseJobOperator
from airflow_provider_dashscope_batch.operators.lineage import keep_for_lineage, upload_lineage
from airflow_provider_dashscope_batch.operators.request_input import DashScopeRequestInputOperator
from airflow_provider_dashscope_batch.operators.rounds import SOURCE_XCOM_KEY
from airflow_provider_dashscope_batch.results.input_columns import (
    InputColumnsWriter,
    check_column_names,
    publish_input_columns,
)
from airflow_provider_dashscope_batch.results.tables import EMBEDDING_COLUMNS, RESULT_COLUMNS
from airflow_provider_dashscope_batch.validation.builder import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.validation.rules import validate_jsonl
from airflow_provider_dashscope_batch.waiting.late import delete_late_files_sync

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = [
    "DashScopeUploadFileOperator",
    "as_path",
    "carried_columns",
    "input_columns_path",
    "store_input_columns",
]


class DashScopeUploadFileOperator(DashScopeRequestInputOperator, DashScopeBaseJobOperator):
    """
    Validate a batch input file line by line, then stream it to DashScope; returns the file id.

    The input is one of: a JSONL ``file``; ``requests``, an iterable of request dicts or bodies; or a
    ``csv`` file plus a message ``template`` (the service docs' "CSV to JSONL" tool). Built input goes to
    a local temporary file, streamed, never held in memory. The preflight check
    (:func:`~.validation.rules.validate_jsonl`) enforces every rule the service
    does and names each offending line and rule, so a bad file costs no upload and no batch. The same
    pass estimates the tokens and cost (:doc:`/cost`): the table is logged and pushed to XCom (key
    ``cost_estimate``), and a budget, region or thinking-mode check that fails stops the task before
    the upload. A JSONL ``file`` is recorded with the file id (XCom ``request_source``), so a downstream
    :class:`~airflow_provider_dashscope_batch.operators.batch.DashScopeCreateBatchOperator` can build
    follow-up rounds from it.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeUploadFileOperator`

    The cost arguments (``estimate_cost``, ``max_cost``, ``approve_above``, ...) are
    :class:`~airflow_provider_dashscope_batch.operators.job.DashScopeBaseJobOperator`'s.

    :param file: Local path, URL (``s3://conn@bucket/key``, ``file:///...``) or ``ObjectStoragePath`` of
        a JSONL file (templated).
    :param requests: Request dicts (``custom_id``/``method``/``url`` default to the item number, POST and
        ``endpoint``) or request bodies (templated, e.g. an upstream task's XCom).
    :param csv: Local path, URL or ``ObjectStoragePath`` of a CSV file, one request per row (templated).
    :param model: ``body.model`` for built requests that do not set one (required for ``csv``).
    :param template: ``csv`` only: user message built with :meth:`str.format` from the row's columns.
    :param system_prompt: ``csv`` only: system message put before each user message.
    :param text_column: ``csv`` only: column with the user text when no ``template`` is given.
    :param id_column: ``csv`` only: column with the ``custom_id`` (None numbers the rows).
    :param body_params: ``csv`` only: extra body fields, e.g. ``{"temperature": 0.2}``.
    :param image_column: ``csv`` only: column with an image URL, sent before the text (Qwen-VL, Qwen-OCR).
    :param inputs_per_request: ``csv`` with ``/v1/embeddings`` only: texts packed into one request (up to
        the model's limit, 10 for text-embedding-v4); the results' embeddings table has one row per text.
    :param endpoint: Every line's ``url`` must equal it; built requests use it (default
        ``/v1/chat/completions`` for them) (templated).
    :param carry_columns: ``csv`` or ``requests`` only: input columns to carry into the result tables
        (CSV header names, or keys of each request dict beside ``body``, which are then left out of the
        line). Needs ``carry_columns_to``; see :ref:`transfer:input-columns`.
    :param carry_columns_to: Directory URL (or ``ObjectStoragePath``) where the carried columns are
        stored after the upload, as ``<file id>.jsonl``; give the transfer the same one as
        ``input_columns`` (templated).
    :param filename: Name the file gets in DashScope (default: the source's name).
    :param max_violations: How many violations to list in the error (all are counted).
    :param dashscope_conn_id: The DashScope connection id.
    :return: The uploaded file's id.
    """

    template_fields: Sequence[str] = (
        "file",
        "requests",
        "csv",
        "template",
        "endpoint",
        "filename",
        "carry_columns_to",
    )
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        filename: str | None = None,
        carry_columns: Sequence[str] | None = None,
        carry_columns_to: str | ObjectStoragePath | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filename = filename
        self.carry_columns = carried_columns(carry_columns, carry_columns_to, self.file)
        self.carry_columns_to = carry_columns_to

    def execute(self, context: Context) -> str:
        source = self.request_input
        catalog = self.cost.model_catalog()
        if source.file is not None:
            path = as_path(source.file)
            file_id = self._validate_and_upload(context, path, self.filename, catalog, str(path), None)
            # the create operator's follow-up rounds re-read the lines: input files cannot be downloaded
            if (ti := context.get("ti")) is not None:
                ti.xcom_push(key=SOURCE_XCOM_KEY, value={"file_id": file_id, "source": str(source.file)})
            return file_id
        with tempfile.TemporaryDirectory(prefix="dashscope-upload-") as tmp, ExitStack() as stack:
            built = Path(tmp) / (self.filename or f"{self.task_id}.jsonl")
            carry = None
            if self.carry_columns is not None:
                rows = stack.enter_context(open(Path(tmp) / "input-columns.jsonl", "w+b"))
                carry = InputColumnsWriter(rows, self.carry_columns, infer_types=source.csv is not None)
            origins: array[int] | None = None
            try:
                if source.csv is not None:
                    csv = as_path(source.csv)
                    name = str(source.csv)
                    origins = array("L")
                    lines = write_requests_from_csv(
                        csv,
                        built,
                        name=name,
                        catalog=catalog,
                        origins=origins,
                        carry=carry,
                        **source.csv_options(),
                    )
                else:
                    name = "requests"
                    lines = write_requests(
                        source.requests or (),
                        built,
                        endpoint=source.built_endpoint,
                        model=source.model,
                        carry=carry,
                    )
            except (TypeError, ValueError) as exc:  # the input itself: a retry builds the same
                raise AirflowFailException(f"Not uploaded: the batch input cannot be built.\n{exc}") from None
            self.log.info("Built %s request lines", lines)
            file_id = self._validate_and_upload(context, built, built.name, catalog, name, origins)
            if carry is not None:
                self._publish_columns(file_id, carry)
            return file_id

    def _publish_columns(self, file_id: str, carry: InputColumnsWriter) -> None:
        """Store the carried columns under the file's id; if that fails, delete the file (no half job)."""
        target = input_columns_path(self.carry_columns_to, file_id)  # type: ignore[arg-type]
        try:
            store_input_columns(target, carry.header(file_id), carry.rows_out())
        except BaseException:
            self.log.error("Could not store the carried columns at %s; deleting file %s", target, file_id)
            try:
                self.hook.get_conn().delete_file(file_id)
            except Exception:
                self.log.exception("Could not delete file %s; delete it by hand", file_id)
            raise
        self.log.info("Stored %d rows of columns %s at %s", carry.rows, ", ".join(carry.names), target)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the source file -> the uploaded DashScope file; see :mod:`.lineage`."""
        return upload_lineage(self)

    def _validate_and_upload(
        self,
        context: Context,
        source: Path | ObjectStoragePath,
        filename: str | None,
        catalog: Catalog,
        name: str,
        origins: Sequence[int] | None,
    ) -> str:
        """
        Validate, estimate and upload ``source``; findings and the estimate name the user's input
        ``name``, with each built line renumbered by ``origins`` (its CSV line) when given.
        """
        estimator = self.cost.cost_estimator(name)
        with self.cost.cost_checks():
            report = validate_jsonl(
                source,
                endpoint=self.endpoint,
                max_violations=self.max_violations,
                on_line=estimator.feed,
                catalog=catalog,
            ).located(name, origins, "item" if name == "requests" else "line")
        for warning in report.warnings:
            self.log.warning("%s", report.format_violation(warning))
        if not report.ok:
            raise AirflowFailException(f"Not uploaded: the batch input file is invalid.\n{report.summary()}")
        self.log.info("%s", report.summary())
        estimate = self.cost.settle_estimate(estimator)
        client = self.hook.get_conn()
        with source.open("rb") as stream:
            receipt = client.upload_file_receipt(stream, filename=filename or source.name)
        uploaded = receipt.value
        self.log.info("Uploaded %s as file %s (%s bytes)", source, uploaded.id, uploaded.bytes)
        self.cost.push_estimate(context, estimate, uploaded.id)
        if receipt.ambiguity is not None:  # nothing downstream knows the token: look for a late copy here
            self.log.warning(
                "An attempt of this upload may still be stored late; looking for a copy of file %s "
                "until epoch %.0f",
                uploaded.id,
                receipt.ambiguity.until,
            )
            delete_late_files_sync(client, uploaded, receipt.ambiguity)
        return keep_for_lineage(self, uploaded.id)


def carried_columns(
    carry_columns: Sequence[str] | None, carry_columns_to: Any, file: Any
) -> tuple[str, ...] | None:
    """
    An operator's ``carry_columns``, checked when the DAG is parsed: given with ``carry_columns_to``, not
    for a JSONL ``file``, names no result column (:func:`~.results.input_columns.check_column_names`).

    :raises ValueError: naming the rule broken.
    """
    if (carry_columns is None) != (carry_columns_to is None):
        raise ValueError("carry_columns and carry_columns_to go together: give both or neither")
    if carry_columns is None:
        return None
    if file is not None:
        raise ValueError("carry_columns reads csv= or requests=; a JSONL file= has no columns to carry")
    return check_column_names(carry_columns, (*RESULT_COLUMNS, *EMBEDDING_COLUMNS))


def store_input_columns(target: ObjectStoragePath, header: Mapping[str, Any], rows: Iterable[bytes]) -> None:
    """Write one input file's carried columns (a header, then the rows) to ``target``, its folder made."""
    target.parent.mkdir(parents=True, exist_ok=True)
    publish_input_columns(target, header, rows)


def input_columns_path(directory: str | ObjectStoragePath, file_id: str) -> ObjectStoragePath:
    """Where the columns carried for the input file ``file_id`` are stored under ``directory``."""
    if isinstance(directory, str) and directory.startswith("oss://"):
        register_oss_scheme()
    return ObjectStoragePath(directory) / f"{file_id}.jsonl"


def as_path(value: str | os.PathLike[str] | ObjectStoragePath) -> Path | ObjectStoragePath:
    """A local ``Path`` for paths and ``file://`` URLs, an ``ObjectStoragePath`` for other URLs."""
    if isinstance(value, ObjectStoragePath):
        return value
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(url2pathname(urlsplit(text).path))
    return ObjectStoragePath(text) if "://" in text else Path(text)
