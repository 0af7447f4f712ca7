"""Streams under the results transfer: worker threads that parse, hash and write beside the download."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import IO

__all__ = ["BackgroundWorker", "BackgroundWriter", "HashingWriter"]

_QUEUED_CHUNKS = 4


class BackgroundWorker:
    """
    Hand chunks to ``handle`` in a worker thread, in order, so that work overlaps the calling thread's.

    At most a few chunks wait in the queue, so memory stays flat. An error raised by ``handle`` is raised
    by the next :meth:`put` or by :meth:`finish`; :meth:`cancel` drops what is queued. Either way the
    thread ends.

    :param handle: Called with every chunk, in the worker thread.
    :param name: The thread's name.
    """

    def __init__(self, handle: Callable[[bytes], None], name: str) -> None:
        self._handle = handle
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    self._handle(chunk)
                except BaseException as exc:  # re-raised in the calling thread
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        """Queue a chunk (blocks while the queue is full)."""
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> None:
        """Wait until every queued chunk is handled; re-raise an error of ``handle``."""
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


class BackgroundWriter(BackgroundWorker):
    """
    Write chunks to ``target`` in a worker thread, so a blocking upload overlaps the download.

    The SHA-256 of what is written is computed in the worker thread too (hashlib releases the GIL),
    beside the parsing in the other threads.

    :param target: Binary stream written in the worker thread.
    """

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._digest = hashlib.sha256()
        super().__init__(self._write, name="dashscope-results-writer")

    def _write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._target.write(chunk)

    def write(self, chunk: bytes) -> None:
        """Queue a chunk (blocks while the queue is full)."""
        self.put(chunk)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written (complete after :meth:`~BackgroundWorker.finish`)."""
        return self._digest.hexdigest()


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
