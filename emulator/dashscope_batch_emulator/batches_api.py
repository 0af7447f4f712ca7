"""
The emulated Batches API: create (with the service's checks of endpoint, window and metadata), list, cancel.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashscope_batch_emulator.params import (
    ApiError,
    int_param,
    page_of,
    parse_time,
    read_json,
)
from dashscope_batch_emulator.rules import ENDPOINTS
from dashscope_batch_emulator.state import BatchRecord, Emulator

__all__ = ["BATCH_STATUSES", "BatchesApi", "parse_completion_window"]

BATCH_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
_WINDOW = re.compile(r"^([0-9]+)([hd])$")


def parse_completion_window(value: Any) -> int:
    """Return the window in seconds, enforcing the service's integer ``h``/``d`` form and 24h..336h range."""
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(
            400,
            "completion_window must be an integer followed by 'h' or 'd', e.g. '24h'.",
            param="completion_window",
        )
    hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if not 24 <= hours <= 336:
        raise ApiError(400, "completion_window must be between 24h and 336h.", param="completion_window")
    return hours * 3600


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ApiError(400, "metadata must be a map of string keys to string values.", param="metadata")
    for key, limit in (("ds_name", 100), ("ds_description", 200)):
        if len(metadata.get(key, "")) > limit:
            raise ApiError(
                400, f"metadata.{key} must be at most {limit} characters.", param=f"metadata.{key}"
            )
    callback = metadata.get("ds_batch_finish_callback")
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise ApiError(
            400,
            "metadata.ds_batch_finish_callback must be an http(s) URL.",
            param="metadata.ds_batch_finish_callback",
        )
    return metadata


class BatchesApi:
    """The ``/batches`` route handlers over :attr:`emulator`; mixed into the emulator's API."""

    emulator: Emulator

    def _batch(self, request: Request) -> BatchRecord:
        batch_id = request.path_params["batch_id"]
        batch = self.emulator.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch '{batch_id}' not found.", param="batch_id")
        return batch

    async def create_batch(self, request: Request) -> Response:
        body = await read_json(request)
        input_file_id = body.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ApiError(400, "input_file_id is required.", param="input_file_id")
        try:
            oss = self.emulator.oss_input(input_file_id)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="input_file_id") from None
        record = oss or self.emulator.files.get(input_file_id)
        if record is None:
            raise ApiError(400, f"Input file '{input_file_id}' does not exist.", param="input_file_id")
        if record.purpose != "batch":
            raise ApiError(
                400,
                f"File '{input_file_id}' has purpose '{record.purpose}', not 'batch'.",
                param="input_file_id",
            )
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise ApiError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}.", param="endpoint")
        window = body.get("completion_window")
        seconds = parse_completion_window(window)
        metadata = _check_metadata(body.get("metadata"))
        batch = self.emulator.create_batch(input_file_id, endpoint, window, seconds, metadata, oss)
        return JSONResponse(batch.to_api())

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(self._batch(request).to_api())

    async def list_batches(self, request: Request) -> Response:
        params = request.query_params
        limit = int_param(request, "limit", 20, 1, 100)
        items = sorted(self.emulator.batches.values(), key=lambda b: b.seq, reverse=True)
        if params.get("ds_name"):
            needle = params["ds_name"].lower()
            items = [b for b in items if needle in (b.metadata or {}).get("ds_name", "").lower()]
        if params.get("input_file_ids"):
            wanted = {i.strip() for i in params["input_file_ids"].split(",") if i.strip()}
            if len(wanted) > 20:
                raise ApiError(400, "input_file_ids accepts at most 20 ids.", param="input_file_ids")
            items = [b for b in items if b.input_file_id in wanted]
        if params.get("status"):
            statuses = {s.strip() for s in params["status"].split(",") if s.strip()}
            unknown = statuses.difference(BATCH_STATUSES)
            if unknown:
                raise ApiError(400, f"Unknown status value(s): {', '.join(sorted(unknown))}.", param="status")
            items = [b for b in items if b.status in statuses]
        for name, keep in (("create_after", lambda c, t: c >= t), ("create_before", lambda c, t: c <= t)):
            if params.get(name):
                point = parse_time(params[name], name, ("%Y%m%d%H%M%S",))
                items = [b for b in items if keep(int(b.created), point)]
        page, has_more = page_of(items, params.get("after"), limit)
        return JSONResponse(
            {
                "object": "list",
                "data": [b.to_api() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    async def cancel_batch(self, request: Request) -> Response:
        batch = self._batch(request)
        if batch.status in ("completed", "failed", "expired"):
            raise ApiError(
                400, f"Batch '{batch.id}' is {batch.status} and cannot be cancelled.", param="batch_id"
            )
        self.emulator.cancel_batch(batch)
        return JSONResponse(batch.to_api())
