"""
The ledger of a job: which of its requests are answered, which failed for good, what the next round sends.

A job is its requests by ``custom_id``; each *round* is one batch over what is still unanswered. After a
round ends, its output file says which requests are answered and its error file which failed (and
how, :mod:`.failures`); the next round is "the original lines minus what came back answered or failed
for good" -- never a list of unrun requests, which the service does not document. The ledger of one
shard (at most 50,000 lines, the service's per-file limit) is two sets of ids, so a sharded job holds
one shard's at a time and its memory does not grow with the input. Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from airflow_provider_dashscope_batch.jobs.failures import FailureKind, ResubmitErrors

__all__ = ["JobCounts", "RoundRecord", "ShardLedger", "progress_line", "request_id_of"]


class _Request(msgspec.Struct):
    custom_id: str | int | None = None


class _Status(msgspec.Struct):
    status_code: int | None = None


class _Error(msgspec.Struct):
    code: str | int | None = None
    error_code: str | int | None = None


class _ResultLine(msgspec.Struct):
    custom_id: str | int | None = None
    response: _Status | None = None
    error: _Error | None = None


_REQUEST = msgspec.json.Decoder(_Request)
_RESULT = msgspec.json.Decoder(_ResultLine)


def request_id_of(line: bytes) -> str | None:
    """The ``custom_id`` of a request or result line (``None`` for a blank or id-less line)."""
    if not line.strip():
        return None
    try:
        found = _REQUEST.decode(line).custom_id
    except msgspec.DecodeError:
        return None
    return None if found is None else str(found)


@dataclass(frozen=True)
class JobCounts:
    """
    Where a job (or one shard of it) stands.

    :param total: Requests in the source.
    :param answered: Requests with an answer (billed once).
    :param permanent: Requests that failed for good (never sent again).
    :param unanswered: The rest: never ran or failed transiently; the next round sends them.
    """

    total: int
    answered: int
    permanent: int

    @property
    def unanswered(self) -> int:
        return self.total - self.answered - self.permanent

    def __add__(self, other: JobCounts) -> JobCounts:
        return JobCounts(
            self.total + other.total, self.answered + other.answered, self.permanent + other.permanent
        )

    def summary(self) -> str:
        """``8,639 answered, 0 permanently failed, 11,361 unanswered``."""
        return (
            f"{self.answered:,} answered, {self.permanent:,} permanently failed, "
            f"{self.unanswered:,} unanswered"
        )


@dataclass(frozen=True)
class RoundRecord:
    """
    One round of a job: one batch.

    :param round: 1 for the first batch, then 2, 3 …
    :param batch_id: The batch.
    :param sent: Requests the round sent.
    :param completed: Its ``request_counts.completed``.
    :param failed: Its ``request_counts.failed``.
    """

    round: int
    batch_id: str
    sent: int
    completed: int
    failed: int


@dataclass
class ShardLedger:
    """
    The answered and permanently failed ids of one shard, fed with its rounds' result lines in order.

    :param policy: Which failures are sent again.
    """

    policy: ResubmitErrors = field(default_factory=ResubmitErrors)
    answered: set[str] = field(default_factory=set)
    permanent: set[str] = field(default_factory=set)

    def add_output(self, lines: Iterable[bytes]) -> int:
        """Take a round's output lines (each an answered request); return how many were new answers."""
        before = len(self.answered)
        for line in lines:
            custom_id = request_id_of(line)
            if custom_id is not None:
                self.answered.add(custom_id)
                self.permanent.discard(custom_id)
        return len(self.answered) - before

    def add_errors(self, lines: Iterable[bytes]) -> None:
        """Take a round's error lines: a permanent failure is never sent again; a transient one is."""
        for line in lines:
            if not line.strip():
                continue
            try:
                result = _RESULT.decode(line)
            except msgspec.DecodeError:
                continue
            if result.custom_id is None or str(result.custom_id) in self.answered:
                continue
            status = result.response.status_code if result.response is not None else None
            code = None
            if result.error is not None:
                raw = result.error.code if result.error.code is not None else result.error.error_code
                code = None if raw is None else str(raw)
            if self.policy.kind(status, code) is FailureKind.PERMANENT:
                self.permanent.add(str(result.custom_id))
            else:
                self.permanent.discard(str(result.custom_id))

    def done(self, custom_id: str) -> bool:
        """Whether a request needs no further round (answered, or failed for good)."""
        return custom_id in self.answered or custom_id in self.permanent

    def remainder(self, source: Iterable[bytes]) -> Iterator[bytes]:
        """The source lines (newline-terminated) still to send, streamed in source order."""
        for line in source:
            custom_id = request_id_of(line)
            if custom_id is None or self.done(custom_id):
                continue
            yield line if line.endswith(b"\n") else line + b"\n"

    def counts(self, total: int) -> JobCounts:
        """The shard's counts, for a source of ``total`` requests."""
        return JobCounts(total, len(self.answered), len(self.permanent))


def progress_line(
    round_no: int, max_rounds: int | None, sent: int, counts: JobCounts, shards: int | None = None
) -> str:
    """
    ``round 2 of ≤3: 11,361 requests re-sent (8,639 answered, 0 permanently failed)``; with ``shards``
    (a sharded job's round), ``… re-sent in 3 shard(s) (…)``.
    """
    of = "" if max_rounds is None else f" of ≤{max_rounds}"
    where = "" if shards is None else f" in {shards} shard(s)"
    return (
        f"round {round_no}{of}: {sent:,} requests re-sent{where} "
        f"({counts.answered:,} answered, {counts.permanent:,} permanently failed)"
    )
