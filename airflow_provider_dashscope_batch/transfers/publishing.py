"""
Publishing per filesystem: a result file is written and verified first, and only then made visible.

Two strategies, chosen by the filesystem of the final path:

* :class:`MultipartUpload` for s3fs stores (``s3://``, ``oss://``): written straight to the final key as a
  multipart upload opened with fsspec's ``autocommit=False``, so closing the file uploads the last part
  without completing the upload. :meth:`~StagedFile.publish` completes it (``commit()``);
  :meth:`~StagedFile.discard` aborts it (``discard()``). S3 keeps an uncompleted upload invisible.
* :class:`RenamedFile` everywhere else (``file://``, ``gs://`` …), where a write may be visible before it
  completes: written under a temporary sibling name (``.<name>.<uuid>.part``) and renamed once verified.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from abc import ABC, abstractmethod
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = [
    "MultipartUpload",
    "RenamedFile",
    "StagedFile",
    "publishes_on_commit",
    "remove",
    "stage",
    "stale_parts",
    "write_small_file",
]

_S3_MIN_PART = 5 * 2**20
_S3_PART_BUDGET = 9_000  # parts per file, below S3's limit of 10,000 (CSV/Parquet may outgrow the source)
_PART_SUFFIX = ".part"


def publishes_on_commit(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on an s3fs store, where an uncompleted multipart upload stays invisible."""
    fs = path.fs  # an s3fs store has imported s3fs by now; never import it (slow, large) for other stores
    s3fs = sys.modules.get("s3fs")
    return s3fs is not None and isinstance(fs, s3fs.S3FileSystem)


def remove(path: ObjectStoragePath) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink(missing_ok=True)


def stale_parts(directory: ObjectStoragePath) -> list[ObjectStoragePath]:
    """Temporary objects of :class:`RenamedFile` left in ``directory`` by a killed worker."""
    try:
        return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(_PART_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):  # object stores: no such prefix yet
        return []


class StagedFile(ABC):
    """
    One file being written; nothing appears under its final path (``final``) before :meth:`publish`.

    Write to ``handle``, call :meth:`written` once everything is written and verified, then
    :meth:`publish`. :meth:`discard` throws an unpublished file away, whatever state it is in.
    """

    handle: IO[bytes]

    def __init__(self, final: ObjectStoragePath) -> None:
        self.final = final
        self._published = False

    @abstractmethod
    def written(self) -> None:
        """Everything is written: close the handle (the file stays invisible)."""

    @abstractmethod
    def _make_visible(self) -> None: ...

    @abstractmethod
    def _throw_away(self) -> None: ...

    def publish(self) -> None:
        """Make the file visible under its final name."""
        self._make_visible()
        self._published = True

    def discard(self) -> None:
        """Throw away an unpublished file (no-op once published)."""
        if not self._published:
            self._throw_away()


class MultipartUpload(StagedFile):
    """
    An s3fs file at the final key whose multipart upload is completed only by :meth:`publish`.

    :param final: The final path.
    :param size_hint: Expected size in bytes: parts stay at S3's 5 MiB minimum unless the file would need
        more parts than S3 allows.
    """

    def __init__(self, final: ObjectStoragePath, size_hint: int | None) -> None:
        super().__init__(final)
        block_size = max(_S3_MIN_PART, -(-(size_hint or 0) // _S3_PART_BUDGET))
        self._fs: Any = final.fs
        # the fsspec file itself (not ObjectStoragePath's wrapper), for its commit()/discard()
        self.handle = self._fs.open(final.path, "wb", block_size=block_size, autocommit=False)

    def written(self) -> None:
        self.handle.close()  # uploads the last part; autocommit=False leaves the upload open

    def _make_visible(self) -> None:
        try:
            self.handle.commit()  # completes the multipart upload
        finally:
            self._forget()

    def _throw_away(self) -> None:
        # close() first: it only uploads what is buffered (autocommit=False never completes the upload),
        # and a closed file is never flushed again by the garbage collector after discard() aborted it
        with contextlib.suppress(Exception):
            self.handle.close()
        with contextlib.suppress(Exception):  # an upload left behind stays invisible
            self.handle.discard()
        self._forget()

    def _forget(self) -> None:
        # fsspec records files opened with autocommit=False in the filesystem's transaction; this one is
        # finished by us, so a later transaction on the same (cached) filesystem must not see it
        with contextlib.suppress(ValueError):
            self._fs.transaction.files.remove(self.handle)


class RenamedFile(StagedFile):
    """
    A file written under a temporary sibling name and renamed to the final one by :meth:`publish`.

    :param final: The final path.
    """

    def __init__(self, final: ObjectStoragePath) -> None:
        super().__init__(final)
        self._tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}{_PART_SUFFIX}"
        self.handle = self._tmp.open("wb")

    def written(self) -> None:
        self.handle.close()

    def _make_visible(self) -> None:
        self._tmp.rename(self.final)

    def _throw_away(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()
        remove(self._tmp)


def stage(final: ObjectStoragePath, size_hint: int | None = None) -> StagedFile:
    """
    Open a :class:`StagedFile` for ``final`` with the strategy its filesystem needs.

    :param final: The final path.
    :param size_hint: Expected size in bytes, if known.
    """
    if publishes_on_commit(final):
        return MultipartUpload(final, size_hint)
    return RenamedFile(final)


def write_small_file(path: ObjectStoragePath, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either nothing, the old file or all of ``data``."""
    if publishes_on_commit(path):
        with path.open("wb") as handle:  # buffered whole and sent as one PUT on close, which is atomic
            handle.write(data)
        return
    staged = RenamedFile(path)
    try:
        staged.handle.write(data)
        staged.written()
        staged.publish()
    finally:
        staged.discard()
