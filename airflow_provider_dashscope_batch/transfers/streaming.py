"""Streams under the results transfer: a writer thread that hashes and overlaps the upload; a counter."""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import IO

__all__ = ["BackgroundWriter", "HashingWriter"]

_QUEUED_CHUNKS = 4


class BackgroundWriter:
    """
    Write chunks to ``target`` in a worker thread, so a blocking upload overlaps the download.

    At most a few chunks wait in the queue, so memory stays flat. An error while writing is raised by the
    next :meth:`write` or by :meth:`finish`; :meth:`cancel` drops what is queued. Either way the thread
    ends. The SHA-256 of what is written is computed in the worker thread too (hashlib releases the GIL),
    beside the parsing in the calling thread.

    :param target: Binary stream written in the worker thread.
    """

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="dashscope-results-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    self._digest.update(chunk)
                    self._target.write(chunk)
                except BaseException as exc:  # re-raised in the calling thread
                    self._error = exc

    def write(self, chunk: bytes) -> None:
        """Queue a chunk (blocks while the queue is full)."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written (complete after :meth:`finish`)."""
        return self._digest.hexdigest()

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


class HashingWriter:
    """
    Binary write-only stream counting what passes through to a :class:`BackgroundWriter` (which hashes it).

    Encoders write to it as to a file (pyarrow needs ``tell``/``flush``/``closed``).

    :param target: Where the bytes go.
    """

    def __init__(self, target: BackgroundWriter) -> None:
        self._target = target
        self.bytes = 0
        self.closed = False

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written (complete once the writer has finished)."""
        return self._target.sha256

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed staging stream")
        data = bytes(data)
        self.bytes += len(data)
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
