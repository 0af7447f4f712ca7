"""Operator that validates a batch input file and uploads it to DashScope."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_dashscope_batch.jsonl import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator
from airflow_provider_dashscope_batch.validation import validate_jsonl

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["DashScopeUploadFileOperator", "as_path"]


class DashScopeUploadFileOperator(DashScopeBaseOperator):
    """
    Validate a batch input file line by line, then stream it to DashScope; returns the file id.

    The input is one of: a JSONL ``file``; ``requests``, an iterable of request dicts or bodies; or a
    ``csv`` file plus a message ``template`` (the service docs' "CSV to JSONL" tool). Built input goes to
    a local temporary file, streamed, never held in memory. The preflight check
    (:func:`~airflow_provider_dashscope_batch.validation.validate_jsonl`) enforces every rule the service
    does and names each offending line and rule, so a bad file costs no upload and no batch.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:DashScopeUploadFileOperator`

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
    :param filename: Name the file gets in DashScope (default: the source's name).
    :param max_violations: How many violations to list in the error (all are counted).
    :param dashscope_conn_id: The DashScope connection id.
    :return: The uploaded file's id.
    """

    template_fields: Sequence[str] = ("file", "requests", "csv", "template", "endpoint", "filename")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        file: str | os.PathLike[str] | ObjectStoragePath | None = None,
        requests: Iterable[Mapping[str, Any]] | None = None,
        csv: str | os.PathLike[str] | ObjectStoragePath | None = None,
        model: str | None = None,
        template: str | None = None,
        system_prompt: str | None = None,
        text_column: str | int = 1,
        id_column: str | int | None = 0,
        body_params: Mapping[str, Any] | None = None,
        image_column: str | int | None = None,
        inputs_per_request: int = 1,
        endpoint: str | None = None,
        filename: str | None = None,
        max_violations: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sum(x is not None for x in (file, requests, csv)) != 1:
            raise ValueError("Give exactly one of file=, requests= or csv=.")
        if csv is not None and model is None:
            raise ValueError("csv= needs model= (every request of a batch uses one model).")
        self.file = file
        self.requests = requests
        self.csv = csv
        self.model = model
        self.template = template
        self.system_prompt = system_prompt
        self.text_column = text_column
        self.id_column = id_column
        self.body_params = body_params
        self.image_column = image_column
        self.inputs_per_request = inputs_per_request
        self.endpoint = endpoint
        self.filename = filename
        self.max_violations = max_violations

    def execute(self, context: Context) -> str:
        if self.file is not None:
            return self._validate_and_upload(as_path(self.file), self.filename)
        with tempfile.TemporaryDirectory(prefix="dashscope-upload-") as tmp:
            built = Path(tmp) / (self.filename or f"{self.task_id}.jsonl")
            endpoint = self.endpoint or "/v1/chat/completions"
            if self.csv is not None:
                lines = write_requests_from_csv(
                    as_path(self.csv),
                    built,
                    model=str(self.model),
                    text_column=self.text_column,
                    id_column=self.id_column,
                    template=self.template,
                    system_prompt=self.system_prompt,
                    endpoint=endpoint,
                    body_params=self.body_params,
                    image_column=self.image_column,
                    inputs_per_request=self.inputs_per_request,
                )
            else:
                lines = write_requests(self.requests or (), built, endpoint=endpoint, model=self.model)
            self.log.info("Built %s request lines", lines)
            return self._validate_and_upload(built, built.name)

    def _validate_and_upload(self, source: Path | ObjectStoragePath, filename: str | None) -> str:
        report = validate_jsonl(source, endpoint=self.endpoint, max_violations=self.max_violations)
        if not report.ok:
            raise AirflowFailException(f"Not uploaded: the batch input file is invalid.\n{report.summary()}")
        self.log.info("%s", report.summary())
        with source.open("rb") as stream:
            uploaded = self.hook.get_conn().upload_file(stream, filename=filename or source.name)
        self.log.info("Uploaded %s as file %s (%s bytes)", source, uploaded.id, uploaded.bytes)
        return uploaded.id


def as_path(value: str | os.PathLike[str] | ObjectStoragePath) -> Path | ObjectStoragePath:
    """A local ``Path`` for paths and ``file://`` URLs, an ``ObjectStoragePath`` for other URLs."""
    if isinstance(value, ObjectStoragePath):
        return value
    text = os.fspath(value)
    if text.startswith("file://"):
        return Path(url2pathname(urlsplit(text).path))
    return ObjectStoragePath(text) if "://" in text else Path(text)
