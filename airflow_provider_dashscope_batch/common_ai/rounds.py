"""
The common.ai adapter's follow-up rounds: a job of one ``submit``, finished over several batches.

The batch ``submit`` returns is the job's first round and the id common.ai records. A later round is
its own batch, found again by any adapter instance (the triggerer's, the one that lands the results)
through its metadata: ``ds_name`` ``airflow-llm-batch-<key16> round N`` and ``job_batch`` the first
round's id. Only an adapter holding the request lines (the one whose ``validate_requests`` ran: the
worker's) builds a round; the bookkeeping is the operators' own
(:class:`~airflow_provider_dashscope_batch.operators.rounds.JobRounds`,
:mod:`airflow_provider_dashscope_batch.jobs`).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dashscope_batch.client import FILTER_SLACK
from airflow_provider_dashscope_batch.client.types import BatchStatus, RequestCounts
from airflow_provider_dashscope_batch.cost.actual import CostMeter
from airflow_provider_dashscope_batch.cost.estimate import CostEstimator
from airflow_provider_dashscope_batch.cost.pricing import load_price_table
from airflow_provider_dashscope_batch.jobs.ledger import progress_line, request_id_of
from airflow_provider_dashscope_batch.jobs.table import SupersededErrors
from airflow_provider_dashscope_batch.operators.rounds import JobRounds
from airflow_provider_dashscope_batch.results.lines import iter_lines

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client import DashScopeClient
    from airflow_provider_dashscope_batch.client.types import Batch
    from airflow_provider_dashscope_batch.cost.budget import CostPolicy

__all__ = ["JOB_KEY", "ROUND_KEY", "job_batch", "meter_for", "next_round", "result_lines", "round_batches"]

log = logging.getLogger("airflow_provider_dashscope_batch.common_ai.adapter")

#: Metadata field of a follow-up round: the id of its job's first batch.
JOB_KEY = "job_batch"
#: Metadata field of a follow-up round: its number (2, 3 …).
ROUND_KEY = "round"


def round_batches(client: DashScopeClient, first: Batch, ds_name: str) -> list[Batch]:
    """The job's batches in round order: ``first``, then the follow-up rounds that name it."""
    since = None if first.created_at is None else datetime.fromtimestamp(first.created_at, UTC) - FILTER_SLACK
    found: dict[int, Batch] = {}
    for batch in client.list_batches(ds_name=f"{ds_name} round", create_after=since):
        metadata = batch.metadata or {}
        if metadata.get(JOB_KEY) == first.id and str(metadata.get(ROUND_KEY, "")).isdigit():
            found[int(metadata[ROUND_KEY])] = batch
    return [first, *(found[n] for n in sorted(found))]


def job_batch(batches: list[Batch], rounds: JobRounds | None) -> Batch:
    """
    The job as one batch for common.ai: the latest round, its counts the job's.

    Every request answered makes it ``completed``. With the request lines the counts are the ledger's
    (``rounds`` settled); without, the answered count is the rounds' ``completed`` summed (a round never
    re-sends an answered request) and the failed count the latest round's.
    """
    latest, first = batches[-1], batches[0]
    total = first.request_counts.total if first.request_counts else 0
    if rounds is not None:
        counts = rounds.ledger.counts(total)
        answered, failed = counts.answered, counts.permanent
    else:
        answered = sum(b.request_counts.completed for b in batches if b.request_counts)
        failed = latest.request_counts.failed if latest.request_counts else 0
    done = answered >= total
    status = BatchStatus.COMPLETED if done or latest.status == BatchStatus.COMPLETED else latest.status
    return latest.model_copy(
        update={
            "status": status,
            "request_counts": RequestCounts(total=total, completed=answered, failed=failed),
        }
    )


def next_round(
    client: DashScopeClient,
    rounds: JobRounds,
    batches: list[Batch],
    *,
    ds_name: str,
    key16: str,
    carried: Mapping[str, str],
    max_rounds: int,
    price_region: str,
    cost_policy: CostPolicy,
) -> Batch | None:
    """
    Create the job's next round from the remainder of its request lines, or ``None`` when none is due.

    ``rounds`` is settled over ``batches``. A round is due after a terminal round that left requests
    unanswered (not permanently failed), unless the latest round ``failed`` or ``max_rounds`` are sent.
    Its input is uploaded under a token of the job and round (a copy an earlier try stored is re-used)
    and it is created under its own idempotency key, carrying ``carried`` in its metadata, so neither
    is made twice; its estimate plus what the answers so far cost is checked against ``max_cost``
    first (over budget: no round, a warning).
    """
    first, latest = batches[0], batches[-1]
    state = rounds.settle(batches)
    if not state.counts.unanswered or latest.status == BatchStatus.FAILED or len(batches) >= max_rounds:
        return None
    number = len(batches) + 1
    key = f"{first.id}-r{number}"
    table, region = load_price_table(price_region)
    estimator = CostEstimator(table, region, cost_policy, source=f"round {number} of batch {first.id}")
    with tempfile.TemporaryDirectory(prefix="dashscope-llm-round-") as tmp:
        path = Path(tmp) / "round.jsonl"
        with path.open("wb") as out:
            sent = rounds.write_remainder(out, estimator.feed)
        if not sent:
            return None
        try:
            rounds.check_budget(cost_policy, estimator, state)
        except AirflowFailException as exc:
            log.warning("%s", exc)
            return None
        log.info("Batch %s: %s", first.id, progress_line(number, max_rounds, sent, state.counts))
        file = rounds.upload(path, f"{key16}-round-{number}.jsonl", _round_token(key))
    batch = client.create_batch(
        input_file_id=file.id,
        endpoint=first.endpoint,
        completion_window=first.completion_window,
        metadata={
            "ds_name": f"{ds_name} round {number}",
            JOB_KEY: first.id,
            ROUND_KEY: str(number),
            **carried,
        },
        idempotency_key=key,
    )
    log.info("Created batch %s for round %s of batch %s", batch.id, number, first.id)
    return batch


def meter_for(price_region: str) -> CostMeter:
    """A cost meter of the region's prices, to price the answers of the rounds so far."""
    return CostMeter(*load_price_table(price_region))


def result_lines(client: DashScopeClient, batches: list[Batch]) -> Iterator[tuple[str, bytes]]:
    """
    The job's result lines, one per ``custom_id``: its first success, else its last error.

    Yields ``(file_id, line)``. A first pass reads only the ids (error ids are remembered, so memory
    grows with the failures); the second streams the lines, leaving out superseded errors.
    """
    superseded = SupersededErrors()
    for index, batch in enumerate(batches):
        if index and batch.output_file_id:
            superseded.feed(index, _ids(client, batch.output_file_id), errors=False)
        if batch.error_file_id:
            superseded.feed(index, _ids(client, batch.error_file_id), errors=True)
    answered: set[str] = set()
    for index, batch in enumerate(batches):
        for file_id, errors in ((batch.output_file_id, False), (batch.error_file_id, True)):
            if not file_id:
                continue
            left_out = superseded.of(index) if errors else set()
            for line in iter_lines(client.iter_file_content(file_id)):
                custom_id = request_id_of(line)
                if custom_id in answered or custom_id in left_out:
                    continue
                if not errors and custom_id is not None:
                    answered.add(custom_id)
                yield file_id, line


def _ids(client: DashScopeClient, file_id: str) -> Iterator[str | None]:
    return (request_id_of(line) for line in iter_lines(client.iter_file_content(file_id)))


def _round_token(key: str) -> str:
    """The upload token of a round's input: one per job and round."""
    return "llm-" + hashlib.sha256(key.encode()).hexdigest()[:40]
