"""
The emulated Files API: streamed multipart uploads, listing with the service's filters, content downloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from dashscope_batch_emulator.params import ApiError, int_param, page_of, parse_time
from dashscope_batch_emulator.state import Emulator, FileRecord

__all__ = ["FilesApi"]

_FILE_DATE_FORMATS = ("%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d")
_MAX_FIELD_BYTES = 64 * 1024


class _Upload:
    """Streaming ``multipart/form-data`` receiver: the file part goes straight to disk."""

    def __init__(self, destination: Path, max_bytes: int) -> None:
        self.destination = destination
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._headers: dict[str, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._buffer: bytearray | None = None
        self._file = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._accumulate("_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._accumulate("_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _accumulate(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._buffer = None

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        self._name = options.get(b"name", b"").decode()
        if b"filename" in options and self._name == "file":
            if self._file is not None:
                raise ApiError(400, "Only one file may be uploaded per request.", param="file")
            self.filename = options[b"filename"].decode("utf-8", "replace") or "upload.jsonl"
            self._file = self.destination.open("wb")
        else:
            self._buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._buffer is not None:
            if len(self._buffer) + end - start > _MAX_FIELD_BYTES:
                raise ApiError(400, f"Form field '{self._name}' is too large.", param=self._name)
            self._buffer += data[start:end]
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise ApiError(
                400,
                f"File exceeds the maximum size of {self.max_bytes} bytes.",
                code="FileTooLarge",
                param="file",
            )
        self._file.write(data[start:end])

    def _part_end(self) -> None:
        if self._buffer is not None and self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")
        self._buffer = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    async def receive(self, request: Request) -> None:
        ctype, options = parse_options_header(request.headers.get("content-type"))
        if ctype != b"multipart/form-data" or b"boundary" not in options:
            raise ApiError(400, "The upload must be multipart/form-data with a 'file' part.", param="file")
        parser = MultipartParser(options[b"boundary"], self.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()


class FilesApi:
    """The ``/files`` route handlers over :attr:`emulator`; mixed into the emulator's API."""

    emulator: Emulator

    def _file(self, request: Request) -> FileRecord:
        file_id = request.path_params["file_id"]
        record = self.emulator.files.get(file_id)
        if record is None:
            raise ApiError(404, f"File '{file_id}' not found.", param="file_id")
        return record

    async def upload_file(self, request: Request) -> Response:
        path = self.emulator.new_file_path()
        upload = _Upload(path, self.emulator.config.max_upload_bytes)
        try:
            await upload.receive(request)
            upload.close()
            if upload.filename is None:
                raise ApiError(400, "Missing 'file' part in the multipart body.", param="file")
            purpose = upload.fields.get("purpose")
            if purpose != "batch":
                raise ApiError(
                    400, f"Invalid purpose '{purpose}'; only 'batch' is supported.", param="purpose"
                )
        except BaseException:
            upload.close()
            path.unlink(missing_ok=True)
            raise
        record = self.emulator.add_file(f"file-batch-{uuid.uuid4().hex}", path, upload.filename, "batch")
        return JSONResponse(record.to_api())

    async def list_files(self, request: Request) -> Response:
        params = request.query_params
        limit = int_param(request, "limit", 2000, 1, 2000)
        items = sorted(self.emulator.files.values(), key=lambda f: f.seq, reverse=True)
        if params.get("purpose"):
            items = [f for f in items if f.purpose == params["purpose"]]
        if params.get("create_after"):
            after = parse_time(params["create_after"], "create_after", _FILE_DATE_FORMATS)
            items = [f for f in items if f.created_at >= after]
        if params.get("create_before"):
            before = parse_time(params["create_before"], "create_before", _FILE_DATE_FORMATS)
            items = [f for f in items if f.created_at <= before]
        page, has_more = page_of(items, params.get("after"), limit)
        return JSONResponse({"object": "list", "data": [f.to_api() for f in page], "has_more": has_more})

    async def retrieve_file(self, request: Request) -> Response:
        return JSONResponse(self._file(request).to_api())

    async def delete_file(self, request: Request) -> Response:
        record = self._file(request)
        self.emulator.delete_file(record.id)
        return JSONResponse({"object": "file", "deleted": True, "id": record.id})

    async def file_content(self, request: Request) -> Response:
        record = self._file(request)
        if not record.id.startswith(("file-batch_output-", "file-batch_error-")):
            raise ApiError(
                400,
                "Only batch result files (file-batch_output-…, file-batch_error-…) can be downloaded.",
                param="file_id",
            )
        return FileResponse(record.path, media_type="application/octet-stream", filename=record.filename)
