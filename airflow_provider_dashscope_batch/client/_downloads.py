"""Where a download goes: :class:`Destination`, a stream or a path written under a temporary name."""

from __future__ import annotations

import os
import uuid
from contextlib import suppress
from typing import IO


class Destination:
    """
    Where a download goes: a writable binary stream as it is, or a path.

    A path is written under a temporary name in the same directory and renamed when complete, so it never
    holds a partial download; :meth:`discard` removes the temporary file of a download that did not complete.
    Each client calls these methods its own way (the async one in a worker thread).

    :param dest: Destination path, or a writable binary stream (e.g. ``ObjectStoragePath.open("wb")``).
    """

    def __init__(self, dest: str | os.PathLike[str] | IO[bytes]) -> None:
        self.written = 0
        self.path: str | None = None
        self.part: str | None = None
        self._stream: IO[bytes] | None = None
        if isinstance(dest, (str, os.PathLike)):
            self.path = os.fspath(dest)
            name = f".{os.path.basename(self.path)}.{uuid.uuid4().hex}.part"
            self.part = os.path.join(os.path.dirname(self.path) or ".", name)
        else:
            self._stream = dest

    def open(self) -> None:
        """Create the temporary file of a path destination."""
        if self.part is not None:
            self._stream = open(self.part, "wb")  # noqa: SIM115 -- closed by commit() or discard()

    def write(self, chunk: bytes) -> None:
        """Write one chunk."""
        assert self._stream is not None
        self._stream.write(chunk)
        self.written += len(chunk)

    def commit(self) -> int:
        """Complete the download (rename the temporary file into place); return the bytes written."""
        if self.part is not None and self.path is not None:
            self._close()
            os.replace(self.part, self.path)
            self.part = None
        return self.written

    def discard(self) -> None:
        """Remove the temporary file of a download that did not complete (nothing after :meth:`commit`)."""
        if self.part is not None:
            self._close()
            with suppress(FileNotFoundError):
                os.unlink(self.part)
            self.part = None

    def _close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()
