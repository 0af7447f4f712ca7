"""The input of a batch, shared by the operators that check (and upload or split) it line by line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_dashscope_batch.operators.base import DashScopeBaseOperator

__all__ = ["DEFAULT_ENDPOINT", "DashScopeRequestInputOperator", "RequestInput"]

#: The ``url`` of built requests when no ``endpoint`` is given.
DEFAULT_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class RequestInput:
    """
    One batch input: exactly one of a JSONL ``file``, ``requests`` or a ``csv``, and how lines are built.

    :param file: Local path, URL or ``ObjectStoragePath`` of a JSONL file.
    :param requests: Request dicts or bodies.
    :param csv: Local path, URL or ``ObjectStoragePath`` of a CSV file, one request per row.
    :param model: ``body.model`` for built requests that do not set one (required for ``csv``).
    :param template: ``csv`` only: user message built with :meth:`str.format` from the row's columns.
    :param system_prompt: ``csv`` only: system message put before each user message.
    :param text_column: ``csv`` only: column with the user text when no ``template`` is given.
    :param id_column: ``csv`` only: column with the ``custom_id`` (None numbers the rows).
    :param body_params: ``csv`` only: extra body fields.
    :param image_column: ``csv`` only: column with an image URL, sent before the text (Qwen-VL, Qwen-OCR).
    :param inputs_per_request: ``csv`` with ``/v1/embeddings`` only: texts packed into one request.
    :param endpoint: Every line's ``url`` must equal it; built requests use it (``None``: a file's
        lines may use any one endpoint, built requests use :data:`DEFAULT_ENDPOINT`).
    :raises ValueError: unless exactly one source is given, or for ``csv`` without ``model``.
    """

    file: str | os.PathLike[str] | ObjectStoragePath | None = None
    requests: Iterable[Mapping[str, Any]] | None = None
    csv: str | os.PathLike[str] | ObjectStoragePath | None = None
    model: str | None = None
    template: str | None = None
    system_prompt: str | None = None
    text_column: str | int = 1
    id_column: str | int | None = 0
    body_params: Mapping[str, Any] | None = None
    endpoint: str | None = None
    image_column: str | int | None = None
    inputs_per_request: int = 1

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.file, self.requests, self.csv)) != 1:
            raise ValueError("Give exactly one of file=, requests= or csv=.")
        if self.csv is not None and self.model is None:
            raise ValueError("csv= needs model= (every request of a batch uses one model).")

    @property
    def built_endpoint(self) -> str:
        """The ``url`` of built requests."""
        return self.endpoint or DEFAULT_ENDPOINT

    def csv_options(self) -> dict[str, Any]:
        """How each CSV row becomes a request: the keyword arguments of the CSV builder and splitter."""
        return {
            "model": str(self.model),
            "endpoint": self.built_endpoint,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "template": self.template,
            "system_prompt": self.system_prompt,
            "body_params": self.body_params,
            "image_column": self.image_column,
            "inputs_per_request": self.inputs_per_request,
        }


class DashScopeRequestInputOperator(DashScopeBaseOperator):
    """
    An operator whose input is a :class:`RequestInput`, checked line by line before anything is sent.

    The arguments are those of :class:`RequestInput` (kept as attributes, so templates render them),
    plus ``max_violations``, how many violations the error lists (all are counted).
    """

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
        max_violations: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        RequestInput(file, requests, csv, model)  # refuse a bad combination when the DAG is parsed
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
        self.max_violations = max_violations

    @property
    def request_input(self) -> RequestInput:
        """The input as rendered for this run."""
        return RequestInput(
            self.file,
            self.requests,
            self.csv,
            self.model,
            self.template,
            self.system_prompt,
            self.text_column,
            self.id_column,
            self.body_params,
            self.endpoint,
            self.image_column,
            self.inputs_per_request,
        )
