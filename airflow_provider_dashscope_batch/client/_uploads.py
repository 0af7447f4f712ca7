"""Upload tokens and upload sources.

Every logical upload carries a token minted for it in the stored file's name
(``requests.jsonl`` -> ``requests.<token>.jsonl``): after an ambiguous failure the file list is searched
for exactly that name (:func:`~.resources.files.upload_file_flow`), so a retry never stores a second copy.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from airflow_provider_dashscope_batch.client.errors import LocalValidationError

UPLOAD_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")

FileInput = str | os.PathLike[str] | IO[bytes]


def mint_upload_token() -> str:
    """A fresh token identifying one logical upload (carried in the uploaded file's name)."""
    return uuid.uuid4().hex


def tokenized_filename(filename: str, token: str) -> str:
    """
    ``filename`` with ``token`` before its extension: ``requests.jsonl`` -> ``requests.<token>.jsonl``.

    A name that already carries ``token`` as a dot-separated part is returned unchanged.
    """
    if not UPLOAD_TOKEN_PATTERN.fullmatch(token):
        raise LocalValidationError(f"upload_token must be 8..64 characters of [A-Za-z0-9_-], got {token!r}")
    if token in filename.split("."):
        return filename
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        return f"{filename}.{token}"
    return f"{stem}.{token}.{ext}"


class UploadSource:
    """
    A file to upload: a path (re-opened for every attempt) or a binary stream, under a name that carries
    the upload's token (see :func:`tokenized_filename`).

    httpx's multipart encoder streams file objects in 64 KiB chunks and seeks them to 0 before each
    attempt, so a path or seekable stream can be re-sent; a non-seekable stream is sent once,
    chunked, and never retried.

    :param file: Path or binary stream.
    :param filename: Name to upload under (before the token is added); the path's or stream's by default.
    :param token: Identity of this logical upload, stable across its retries; minted when ``None``.
    """

    def __init__(self, file: FileInput, filename: str | None, token: str | None = None) -> None:
        if isinstance(file, (str, os.PathLike)):
            self.path: str | None = os.fspath(file)
            self.stream: IO[bytes] | None = None
            self.filename = filename or os.path.basename(self.path)
        elif hasattr(file, "read"):
            self.path = None
            self.stream = file
            name = getattr(file, "name", None)
            self.filename = filename or (os.path.basename(name) if isinstance(name, str) else None) or ""
        else:
            raise LocalValidationError(f"file must be a path or a binary stream, got {type(file).__name__}")
        if not self.filename:
            raise LocalValidationError("filename is required when uploading a stream without a name")
        self.token = mint_upload_token() if token is None else token
        self.filename = tokenized_filename(self.filename, self.token)

    @contextmanager
    def open(self) -> Iterator[UploadHandle]:
        """Open the source for the duration of the upload."""
        if self.path is not None:
            with open(self.path, "rb") as handle:
                yield UploadHandle(handle, self.filename, os.fstat(handle.fileno()).st_size, True)
        else:
            assert self.stream is not None
            size = _seekable_size(self.stream)
            if size is None:
                yield UploadHandle(_ReadOnly(self.stream), self.filename, None, False)
            else:
                yield UploadHandle(self.stream, self.filename, size, True)


@dataclass(frozen=True)
class UploadHandle:
    """An opened upload: the stream, its name, its size (if known) and whether it can be re-sent."""

    stream: IO[bytes] | _ReadOnly
    filename: str
    size: int | None
    replayable: bool


class _ReadOnly:
    """Exposes only ``read`` of a non-seekable stream, so httpx sends it chunked instead of trusting
    ``fstat`` (which reports 0 bytes for a pipe and makes httpx declare a wrong ``Content-Length``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.read = stream.read


def _seekable_size(stream: IO[bytes]) -> int | None:
    try:
        if not stream.seekable():
            return None
        offset = stream.tell()
        size = stream.seek(0, io.SEEK_END)
        stream.seek(offset)
        return size
    except (AttributeError, OSError, ValueError):
        return None
