"""
Follow-up rounds of a batch job: read what the rounds so far answered, build and upload the remainder.

A :class:`JobRounds` is held by an operator (:class:`~.batch.DashScopeCreateBatchOperator`); the
bookkeeping is :mod:`airflow_provider_dashscope_batch.jobs`. Each round's input is uploaded under a
name made of the task instance's key lineage and the round's generation, so a try killed between the
upload and the create finds the file on the next try instead of uploading (and leaving) another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_dashscope_batch.client.errors import NotFoundError
from airflow_provider_dashscope_batch.client.types import BatchStatus, RequestCounts
from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.budget import CostCheckError
from airflow_provider_dashscope_batch.cost.estimate import CostEstimator
from airflow_provider_dashscope_batch.jobs.failures import ResubmitErrors
from airflow_provider_dashscope_batch.jobs.ledger import JobCounts, RoundRecord, ShardLedger, progress_line
from airflow_provider_dashscope_batch.results.lines import UsageTotals, iter_lines
from airflow_provider_dashscope_batch.waiting.late import delete_late_files_sync

if TYPE_CHECKING:
    import logging

    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch, FileObject
    from airflow_provider_dashscope_batch.cost.actual import ActualCost
    from airflow_provider_dashscope_batch.cost.budget import CostPolicy

__all__ = ["SOURCE_XCOM_KEY", "JobRounds", "JobState", "ShardedRound", "job_batch"]

#: XCom key under which the upload operator records the JSONL an input file was made from.
SOURCE_XCOM_KEY = "request_source"


@dataclass(frozen=True)
class JobState:
    """
    The job after its rounds so far.

    :param counts: Where its requests stand.
    :param rounds: One record per round (batch), in order.
    :param actual: What the answers so far cost (``None`` without a meter).
    """

    counts: JobCounts
    rounds: tuple[RoundRecord, ...]
    actual: ActualCost | None

    def summary(self) -> str:
        """``Job over 2 round(s): 20,000 answered, 0 permanently failed, 0 unanswered``."""
        return f"Job over {len(self.rounds)} round(s): {self.counts.summary()}"


def job_batch(latest: Batch, counts: JobCounts) -> Batch:
    """
    The batch an outcome policy judges for a job (or one shard of it) after its last round: ``latest``
    with the job's counts (``completed`` = answered, ``failed`` = the rest), ``completed`` once every
    request is answered or failed for good.
    """
    return latest.model_copy(
        update={
            "status": BatchStatus.COMPLETED if not counts.unanswered else latest.status,
            "request_counts": RequestCounts(
                total=counts.total, completed=counts.answered, failed=counts.total - counts.answered
            ),
        }
    )


class JobRounds:
    """
    The rounds of one job whose requests come from ``source`` (a JSONL file, streamed on every pass).

    :param client: The DashScope client.
    :param source: The JSONL the first round's input file was made from.
    :param policy: Which failed requests are sent again.
    :param log: The task's logger.
    :param meter: Makes a :class:`CostMeter` to price the answers so far (None: not priced).
    """

    def __init__(
        self,
        client: DashScopeClient,
        source: Path | ObjectStoragePath,
        policy: ResubmitErrors,
        log: logging.Logger | Any,
        meter: Callable[[], CostMeter] | None = None,
    ) -> None:
        self.client = client
        self.source = source
        self.policy = policy
        self.log = log
        self.meter = meter
        self.ledger = ShardLedger(policy)

    def _source_lines(self) -> Iterator[bytes]:
        try:
            with self.source.open("rb") as stream:
                yield from stream
        except FileNotFoundError:
            raise AirflowFailException(
                f"source={self.source} does not exist: follow-up rounds are built from the JSONL the "
                "input file was made from."
            ) from None

    def settle(self, batches: list[Batch], total: int | None = None) -> JobState:
        """
        Read every round's output and error files (streamed) into a fresh ledger.

        :param total: The source's request count, if known (else the source is counted).
        """
        self.ledger = ShardLedger(self.policy)
        usage = UsageTotals(meter=self.meter() if self.meter is not None else None)
        rounds = []
        for number, batch in enumerate(batches, start=1):
            if batch.output_file_id:
                self.ledger.add_output(self._read(batch.output_file_id, usage))
            if batch.error_file_id:
                self.ledger.add_errors(self._read(batch.error_file_id, None))
            counts = batch.request_counts
            rounds.append(
                RoundRecord(
                    number,
                    batch.id,
                    counts.total if counts else 0,
                    counts.completed if counts else 0,
                    counts.failed if counts else 0,
                )
            )
        if total is None:
            total = sum(1 for line in self._source_lines() if line.strip())
        actual = usage.meter.result() if usage.meter is not None else None
        return JobState(self.ledger.counts(total), tuple(rounds), actual)

    def _read(self, file_id: str, usage: UsageTotals | None) -> Iterator[bytes]:
        for line in iter_lines(self.client.iter_file_content(file_id)):
            if usage is not None:
                usage.add(line)
            yield line

    def write_remainder(self, out: IO[bytes], on_line: Callable[[bytes], None]) -> int:
        """Stream the source lines still to send into ``out``; return how many."""
        sent = 0
        for line in self.ledger.remainder(self._source_lines()):
            out.write(line)
            on_line(line)
            sent += 1
        return sent

    @staticmethod
    def check_budget(policy: CostPolicy, estimator: CostEstimator, state: JobState) -> Decimal | None:
        """
        The remainder's estimate plus what the answers so far cost, checked against ``max_cost``.

        (``max_input_tokens`` held for the first round, whose input holds the remainder's.)

        :raises AirflowFailException: when the sum is over budget (nothing of the round is uploaded).
        """
        try:
            estimate = estimator.finish()
            if estimate is None:
                return None
            spent = state.actual.cost if state.actual is not None else Decimal(0)
            remainder = estimate.cost(policy.basis)
            if policy.max_cost is not None and remainder is not None and remainder + spent > policy.max_cost:
                raise CostCheckError(
                    f"The next round's estimate {remainder:.4f} plus the {spent:.4f} the answers so far "
                    f"cost exceeds max_cost={policy.max_cost} {estimate.currency}; no further round was "
                    f"created ({state.counts.summary()})."
                )
        except CostCheckError as exc:
            raise AirflowFailException(str(exc)) from None
        return remainder

    def upload(self, path: Path, filename: str, token: str) -> FileObject:
        """
        Upload a round's input as ``filename`` with the upload token ``token``, or re-use the copy an
        earlier try stored under that token.

        Other copies under the token (an earlier try's cut-short or late upload) are deleted.
        """
        size = path.stat().st_size
        found: FileObject | None = None
        for file in self.client.list_files(purpose="batch"):
            if not (file.filename or "").endswith(f".{token}.jsonl"):
                continue
            if found is None and file.bytes == size:
                found = file
                continue
            self.discard(file.id, "an earlier try's copy of this round's input")
        if found is not None:
            self.log.info("Re-using file %s, this round's input uploaded by an earlier try", found.id)
            return found
        with path.open("rb") as stream:
            receipt = self.client.upload_file_receipt(stream, filename=filename, upload_token=token)
        uploaded = receipt.value
        if receipt.ambiguity is not None:
            delete_late_files_sync(self.client, uploaded, receipt.ambiguity)
        self.log.info("Uploaded this round's input as file %s (%s bytes)", uploaded.id, uploaded.bytes)
        return uploaded

    def sweep(self, tokens: set[str], used: set[str | None]) -> None:
        """
        Delete the files stored under any of the rounds' upload ``tokens`` that no batch of the job
        ``used``: a killed try's upload that landed after a later try uploaded its own copy.
        """
        for file in self.client.list_files(purpose="batch"):
            name = file.filename or ""
            if file.id not in used and any(name.endswith(f".{token}.jsonl") for token in tokens):
                self.discard(file.id, "a copy of a round's input that no batch uses")

    def discard(self, file_id: str, why: str) -> None:
        """Delete an input file this job uploaded (gone already is fine)."""
        try:
            self.client.delete_file(file_id)
            self.log.info("Deleted file %s (%s)", file_id, why)
        except NotFoundError:
            pass


class ShardedRound:
    """
    One round of a sharded job, taken shard by shard as the input is split again: each shard's state
    (its answers priced into ``meter``), the remainders of the shards that get one, written beside their
    spool files as ``<stem>-g<generation>.jsonl`` and fed to ``estimator``; then one budget check and one
    progress line for the whole job, before any remainder is staged.

    :param client: The DashScope client.
    :param policy: Which failed requests are sent again.
    :param log: The task's logger.
    :param meter: Prices every shard's answers so far (with ``max_cost``; None: not priced).
    :param estimator: Estimates the remainders (with ``max_cost``).
    """

    def __init__(
        self,
        client: DashScopeClient,
        policy: ResubmitErrors,
        log: logging.Logger | Any,
        *,
        meter: CostMeter | None = None,
        estimator: CostEstimator | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.log = log
        self.meter = meter
        self.estimator = estimator
        self.counts = JobCounts(0, 0, 0)
        self.sent = 0
        self.generation = 0
        self.remainders: dict[int, Path] = {}  # shard index -> its round's file

    def add(
        self, index: int, spooled: Path, rounds_so_far: list[Batch], total: int, generation: int | None = None
    ) -> JobState:
        """
        Take one shard of ``total`` requests whose rounds so far are ``rounds_so_far``; with
        ``generation``, write its remainder as that round's file (none when nothing was answered yet: its
        whole file is the next round; or when nothing is left).
        """
        priced = (lambda: self.meter) if self.meter is not None else None
        rounds = JobRounds(self.client, spooled, self.policy, self.log, priced)
        only = rounds_so_far[-1].request_counts if len(rounds_so_far) == 1 else None
        if generation is None and priced is None and only is not None and not only.failed:
            state = JobState(JobCounts(total, only.completed, 0), (), None)  # its counts say it all
        else:
            state = rounds.settle(rounds_so_far, total)
        self.counts += state.counts
        if generation is None or not state.counts.answered:
            return state
        path = spooled.with_name(f"{spooled.stem}-g{generation}.jsonl")
        feed = self.estimator.feed if self.estimator is not None else (lambda _: None)
        with path.open("wb") as out:
            sent = rounds.write_remainder(out, feed)
        if not sent:
            path.unlink()
            return state
        self.sent += sent
        self.generation = max(self.generation, generation)
        self.remainders[index] = path
        return state

    def check(self, policy: CostPolicy, max_rounds: int | None) -> None:
        """
        Log the round's progress line and check its budget (:meth:`JobRounds.check_budget`).

        :raises AirflowFailException: when over ``max_cost`` (no remainder is staged).
        """
        if not self.remainders:
            return
        self.log.info(
            "%s", progress_line(self.generation, max_rounds, self.sent, self.counts, len(self.remainders))
        )
        if self.estimator is not None and self.meter is not None:
            JobRounds.check_budget(policy, self.estimator, JobState(self.counts, (), self.meter.result()))
