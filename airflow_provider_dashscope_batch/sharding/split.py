"""
Split one batch input of any size into shard files that each satisfy the service's per-file limits.

The input is read once by :func:`~airflow_provider_dashscope_batch.validation.lines.read_lines`, the upload
operator's own line reader (a JSONL file), or built line by line by
:mod:`~airflow_provider_dashscope_batch.validation.builder` (request dicts, a CSV file). Every line is
checked by
:class:`~airflow_provider_dashscope_batch.validation.rules.LineChecker`, the upload operator's rules and
messages (the 6 MB line limit included, on the same bytes), as if the whole input were one file:
one model, one url and one thinking mode throughout, ``custom_id`` unique across all shards,
violations named by their line in the original input (the request number for built input). A shard
is closed before the next line would take it past :class:`ShardLimits`, so the same input and limits
always give the same shards.

Memory stays flat in the input size except for the ``custom_id`` registry, which keeps an 8-byte
digest and a line number per id in flat arrays (32 to 64 bytes per id with the table's free slots)
instead of the ids themselves.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow_provider_dashscope_batch.catalog import Catalog
from airflow_provider_dashscope_batch.validation.builder import write_requests, write_requests_from_csv
from airflow_provider_dashscope_batch.validation.lines import open_source, read_lines, source_name
from airflow_provider_dashscope_batch.validation.rules import (
    MAX_FILE_BYTES,
    MAX_LINES,
    TEST_MODEL,
    TEST_MODEL_MAX_FILE_BYTES,
    TEST_MODEL_MAX_LINES,
    JsonlValidationError,
    LineChecker,
    ValidationReport,
)

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.results.input_columns import InputColumnsWriter

__all__ = [
    "DEFAULT_MARGIN",
    "Shard",
    "ShardLimits",
    "ShardSizing",
    "ShardWriter",
    "SplitResult",
    "split_csv",
    "split_jsonl",
    "split_requests",
]

#: Fraction of the service's per-file limits a shard may use by default.
DEFAULT_MARGIN = 0.8

#: Opens a fresh writable binary stream for shard ``index`` and returns it with where it lands (a URI).
ShardWriter = Callable[[int], tuple[IO[bytes], str]]


@dataclass(frozen=True)
class ShardLimits:
    """
    The most one shard may hold.

    :param max_requests: Lines per shard.
    :param max_bytes: Bytes per shard, line terminators included.
    """

    max_requests: int
    max_bytes: int

    @classmethod
    def for_model(
        cls,
        model: str | None,
        *,
        max_requests: int | None = None,
        max_bytes: int | None = None,
        margin: float = DEFAULT_MARGIN,
    ) -> ShardLimits:
        """
        The service's limits for ``model`` (``batch-test-model`` has its own) times ``margin``.

        :param model: The input's model.
        :param max_requests: Use this many lines per shard instead (at most the service's limit).
        :param max_bytes: Use this many bytes per shard instead (at most the service's limit).
        :param margin: Fraction of the service's limits used when no explicit value is given.
        :raises ValueError: on a limit outside ``1 .. service limit`` or a margin outside ``(0, 1]``.
        """
        if not 0 < margin <= 1:
            raise ValueError(f"margin must be in (0, 1], got {margin}")
        if model == TEST_MODEL:
            lines, size = TEST_MODEL_MAX_LINES, TEST_MODEL_MAX_FILE_BYTES
        else:
            lines, size = MAX_LINES, MAX_FILE_BYTES
        limits = cls(max_requests or int(lines * margin), max_bytes or int(size * margin))
        if not 0 < limits.max_requests <= lines:
            raise ValueError(f"max_requests must be in 1..{lines:,} for {model}, got {limits.max_requests}")
        if not 0 < limits.max_bytes <= size:
            raise ValueError(f"max_bytes must be in 1..{size:,} for {model}, got {limits.max_bytes}")
        return limits


@dataclass(frozen=True)
class ShardSizing:
    """
    How an input is cut into shards, which model catalog its lines are checked with, and how many of
    its violations an error lists.

    :param max_requests: Lines per shard (default: the service's limit for the model times ``margin``).
    :param max_bytes: Bytes per shard (default: the service's limit for the model times ``margin``).
    :param margin: Fraction of the service's limits used by default.
    :param max_violations: How many violations to list in the error (all are counted).
    :param catalog: The model catalog the line rules read (default: the shipped one).
    """

    max_requests: int | None = None
    max_bytes: int | None = None
    margin: float = DEFAULT_MARGIN
    max_violations: int = 20
    catalog: Catalog | None = None

    def limits(self, model: str | None) -> ShardLimits:
        """The shard limits for ``model``; see :meth:`ShardLimits.for_model`."""
        return ShardLimits.for_model(
            model, max_requests=self.max_requests, max_bytes=self.max_bytes, margin=self.margin
        )


@dataclass(frozen=True)
class Shard:
    """
    One shard file: a run of consecutive lines of the input.

    :param index: 0-based position among the shards.
    :param first_line: Line of the original input (request number for built input) of its first request.
    :param requests: Number of requests (lines).
    :param bytes: Size in bytes.
    :param sha256: SHA-256 of its bytes: the shard's identity.
    :param uri: Where it was written (the name it was uploaded under, for the sharded operator).
    """

    index: int
    first_line: int
    requests: int
    bytes: int
    sha256: str
    uri: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (XCom, trigger kwargs)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shard:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in ("index", "first_line", "requests", "bytes", "sha256", "uri")})


@dataclass(frozen=True)
class SplitResult:
    """
    The shards of one input.

    :param shards: The shards, in input order.
    :param model: The input's model.
    :param endpoint: The input's url.
    """

    shards: tuple[Shard, ...]
    model: str
    endpoint: str

    @property
    def requests(self) -> int:
        """Requests over all shards."""
        return sum(s.requests for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (XCom)."""
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "requests": self.requests,
            "shards": [s.to_dict() for s in self.shards],
        }


class _SeenIds:
    """
    ``custom_id`` -> first line, as an open-addressing table of 8-byte BLAKE2b digests in flat arrays.

    Duck-types the three operations :class:`LineChecker` uses (``in``, ``[]=``, ``setdefault``). Two ids
    share a digest with probability about ``n**2 / 2**65``; such a pair would be reported as a duplicate.
    """

    def __init__(self) -> None:
        self._keys = array("Q", [0]) * 1024
        self._lines = array("Q", [0]) * 1024
        self._size = 0

    @staticmethod
    def _digest(custom_id: str) -> int:
        raw = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(raw) or 1  # 0 marks an empty slot

    def _slot(self, digest: int) -> int:
        keys, mask = self._keys, len(self._keys) - 1
        i = digest & mask
        while (key := keys[i]) and key != digest:
            i = (i + 1) & mask
        return i

    def __contains__(self, custom_id: str) -> bool:
        digest = self._digest(custom_id)
        return self._keys[self._slot(digest)] == digest

    def __setitem__(self, custom_id: str, line: int) -> None:
        self.setdefault(custom_id, line)

    def setdefault(self, custom_id: str, line: int) -> int:
        digest = self._digest(custom_id)
        i = self._slot(digest)
        if self._keys[i] == digest:
            return self._lines[i]
        self._keys[i], self._lines[i] = digest, line
        self._size += 1
        if 2 * self._size > len(self._keys):
            self._grow()
        return line

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        # repeating a one-item array allocates the new table once (no zeroed bytes copied in)
        self._keys = array("Q", [0]) * (2 * len(old_keys))
        self._lines = array("Q", [0]) * len(self._keys)
        for key, line in zip(old_keys, old_lines, strict=True):
            if key:
                i = self._slot(key)
                self._keys[i], self._lines[i] = key, line


class _Splitter:
    """Push lines in with :meth:`line`; shards are opened by the writer and closed as they fill."""

    def __init__(
        self,
        destination: Any,
        prefix: str,
        endpoint: str | None,
        sizing: ShardSizing | None,
        on_shard: Callable[[Shard], Shard] | None,
    ) -> None:
        self.writer = _writer_for(destination, prefix)
        self.on_shard = on_shard
        self.sizing = sizing or ShardSizing()
        self.sizing.limits(None)  # reject bad sizes before reading anything
        self.limits: ShardLimits | None = None
        self.checker = LineChecker(
            endpoint,
            self.sizing.max_violations,
            seen_ids=_SeenIds(),  # type: ignore[arg-type]
            catalog=self.sizing.catalog,
        )
        self.shards: list[Shard] = []
        self.lines = self.bytes = 0
        self.largest = (0, 0)  # (requests, bytes) of the largest shard, for the file-level rules
        self._out: IO[bytes] | None = None
        self._uri = ""
        self._hash = hashlib.sha256()
        self._first = self._count = self._size = 0

    def line(self, n: int, data: bytes | None, read: int) -> None:
        """
        Take line ``n``: its bytes (terminator included) to check and add to the current shard.

        ``data`` is ``None`` for a line already judged by the checker (over the line limit).
        """
        self.lines, self.bytes = n, self.bytes + read
        if data is not None:
            self.checker.check_line(n, data)
            self._add(n, data)

    def _add(self, n: int, data: bytes) -> None:
        if self.checker.violation_count:
            self._drop()
            return
        if self.limits is None:
            self.limits = self.sizing.limits(self.checker.model)
        if len(data) > self.limits.max_bytes:
            self.checker.add(
                n,
                "line_too_large",
                f"line is {len(data):,} bytes; a shard holds at most {self.limits.max_bytes:,}",
            )
            self._drop()
            return
        if self._out is not None and (
            self._count == self.limits.max_requests or self._size + len(data) > self.limits.max_bytes
        ):
            self._close()
        if self._out is None:
            self._out, self._uri = self.writer(len(self.shards))
            self._hash, self._first, self._count, self._size = hashlib.sha256(), n, 0, 0
        self._out.write(data)
        self._hash.update(data)
        self._count += 1
        self._size += len(data)

    def _close(self) -> None:
        assert self._out is not None
        self._out.close()
        self._out = None
        shard = Shard(
            len(self.shards), self._first, self._count, self._size, self._hash.hexdigest(), self._uri
        )
        self.largest = max(self.largest, (shard.requests, shard.bytes))
        self.shards.append(self.on_shard(shard) if self.on_shard else shard)

    def _drop(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def finish(self, name: str) -> SplitResult:
        """Close the last shard and apply the file-level rules to every shard; raise on any violation."""
        if self._out is not None and not self.checker.violation_count:
            self._close()
        self._drop()
        if not self.checker.violation_count:
            self.checker.finish(*self.largest)
        report = ValidationReport(
            source_name=name,
            line_count=self.lines,
            bytes=self.bytes,
            model=self.checker.model,
            endpoint=self.checker.url,
            violations=self.checker.listed(),
            violation_count=self.checker.violation_count,
        )
        if not report.ok:
            raise JsonlValidationError(report)
        return SplitResult(tuple(self.shards), str(self.checker.model), str(self.checker.url))


class _LineFeed:
    """A binary sink for the JSONL builders: each complete line goes to the splitter, numbered from 1."""

    def __init__(self, splitter: _Splitter) -> None:
        self.splitter = splitter
        self.n = 0
        self.pending = b""

    def write(self, data: bytes) -> int:
        start = 0
        buffer = self.pending + data if self.pending else data
        while (end := buffer.find(b"\n", start)) >= 0:
            self.n += 1
            line = buffer[start : end + 1]
            fits = self.splitter.checker.check_length(self.n, len(line) - 1)
            self.splitter.line(self.n, line if fits else None, len(line))
            start = end + 1
        self.pending = buffer[start:]
        return len(data)


def _directory_writer(destination: Any, prefix: str) -> ShardWriter:
    """Shards as ``<destination>/<prefix>-00000.jsonl``, ... (a local directory or ObjectStoragePath)."""
    local = isinstance(destination, (str, pathlib.PurePath)) and not hasattr(destination, "protocol")
    base = pathlib.Path(destination) if local else destination
    if local:
        base.mkdir(parents=True, exist_ok=True)

    def open_shard(index: int) -> tuple[IO[bytes], str]:
        path = base / f"{prefix}-{index:05d}.jsonl"
        return path.open("wb"), str(path)

    return open_shard


def _writer_for(destination: Any, prefix: str) -> ShardWriter:
    return destination if callable(destination) else _directory_writer(destination, prefix)


def split_jsonl(
    source: str | os.PathLike[str] | BinaryIO,
    destination: Any,
    *,
    endpoint: str | None = None,
    prefix: str = "shard",
    sizing: ShardSizing | None = None,
    name: str | None = None,
    on_shard: Callable[[Shard], Shard] | None = None,
) -> SplitResult:
    """
    Split a JSONL file into shards, checking every line on the way.

    :param source: a local path, an ``ObjectStoragePath``, or a binary stream open for reading.
    :param destination: a local directory or ``ObjectStoragePath`` (shards land as
        ``<prefix>-00000.jsonl``, ...), or a :data:`ShardWriter`.
    :param endpoint: when given, every line's ``url`` must equal it.
    :param prefix: shard file name prefix.
    :param sizing: shard sizes and the error's length (default: :class:`ShardSizing`'s).
    :param name: name used in messages; defaults to the path or the stream's ``name``.
    :param on_shard: called with each shard once it is complete (e.g. to upload it); its return value is
        kept. Not called after the first violation.
    :raises JsonlValidationError: if any line breaks a rule (shards written so far are the caller's).
    """
    splitter = _Splitter(destination, prefix, endpoint, sizing, on_shard)
    with open_source(source) as f:
        for n, line, read in read_lines(f, splitter.checker):
            splitter.line(n, line, read)
    return splitter.finish(name if name is not None else source_name(source))


def split_requests(
    requests: Iterable[Mapping[str, Any]],
    destination: Any,
    *,
    endpoint: str = "/v1/chat/completions",
    model: str | None = None,
    prefix: str = "shard",
    sizing: ShardSizing | None = None,
    on_shard: Callable[[Shard], Shard] | None = None,
    carry: InputColumnsWriter | None = None,
) -> SplitResult:
    """
    Build request lines from dicts or bodies straight into shards; violations name the request number.

    The lines are those of :func:`~airflow_provider_dashscope_batch.validation.builder.write_requests`.

    :param requests: request dicts or bodies; consumed lazily.
    :param endpoint: the ``url`` of requests that do not set one; every line's ``url`` must equal it.
    :param model: ``body.model`` for bodies that do not set one.
    :param carry: takes the keys it names out of each request dict into it, instead of the line.

    The other parameters are those of :func:`split_jsonl`.
    """
    splitter = _Splitter(destination, prefix, endpoint, sizing, on_shard)
    write_requests(requests, _LineFeed(splitter), endpoint=endpoint, model=model, carry=carry)  # type: ignore[arg-type]
    return splitter.finish("<requests>")


def split_csv(
    source: str | os.PathLike[str] | IO[Any],
    destination: Any,
    *,
    model: str,
    endpoint: str = "/v1/chat/completions",
    prefix: str = "shard",
    sizing: ShardSizing | None = None,
    on_shard: Callable[[Shard], Shard] | None = None,
    **csv_options: Any,
) -> SplitResult:
    """
    Turn each CSV row into one request straight into shards; violations name the request number.

    The lines are those of :func:`~.validation.builder.write_requests_from_csv`,
    whose own errors name the CSV line.

    :param source: the CSV: a local path, an ``ObjectStoragePath``, or a text or binary stream.
    :param model: ``body.model`` of every request.
    :param endpoint: the ``url`` of every request.
    :param csv_options: ``text_column``, ``id_column``, ``template``, ``system_prompt``, ``body_params``,
        ``header``, ``delimiter``, ``encoding``, ``name`` of
        :func:`~.validation.builder.write_requests_from_csv`.

    The other parameters are those of :func:`split_jsonl`.
    """
    splitter = _Splitter(destination, prefix, endpoint, sizing, on_shard)
    write_requests_from_csv(source, _LineFeed(splitter), model=model, endpoint=endpoint, **csv_options)  # type: ignore[arg-type]
    name = csv_options.get("name") or (
        str(getattr(source, "name", "<csv>")) if hasattr(source, "read") else str(source)
    )
    return splitter.finish(name)
