"""
A sharded job's identity and outcome: pure code, no I/O, no Airflow.

Every shard's batch carries ``metadata["idempotency_key"] = airflow-<40 hex>-g<generation>``, the hex
a digest of the job token (dag, task, run, map index) with the shard's position and SHA-256, and its
``ds_name`` starts with the job token. A later try of the same task instance lists the batches named
with the token once and finds, for each shard, the batch of the highest generation: it re-attaches to
it unless the batch ended as a failure under the shard outcome policy, in which case it creates
generation + 1. A shard's content is part of its key, so a changed input never re-attaches to the
batch of different requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_dashscope_batch.client.identity import key_of, lineage, parse_key, with_generation
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.sharding.split import Shard
from airflow_provider_dashscope_batch.waiting.late import LateCopies
from airflow_provider_dashscope_batch.waiting.protocol import Outcome, OutcomePolicy, Verdict

__all__ = [
    "JobOutcomePolicy",
    "ShardJob",
    "ShardRun",
    "batch_history",
    "job_token",
    "latest_batches",
    "shard_key_base",
]


def job_token(dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    """16 hex characters naming one task instance's job (the same for every try)."""
    raw = "\x1f".join((dag_id, task_id, run_id, str(map_index)))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def shard_key_base(token: str, shard: Shard) -> str:
    """The generation-less idempotency key of ``shard`` in job ``token``."""
    return lineage(token, str(shard.index), shard.sha256)


def latest_batches(batches: Iterable[Batch]) -> dict[str, tuple[int, Batch]]:
    """Key base -> (generation, batch) of the highest generation, among batches carrying a shard key."""
    latest: dict[str, tuple[int, Batch]] = {}
    for batch in batches:
        parsed = parse_key(key_of(batch))
        if parsed is None:
            continue
        base, generation = parsed
        if base not in latest or latest[base][0] < generation:
            latest[base] = (generation, batch)
    return latest


def batch_history(batches: Iterable[Batch]) -> dict[str, list[Batch]]:
    """Key base -> every batch carrying a shard key of it, lowest generation first (a shard's rounds)."""
    history: dict[str, list[tuple[int, Batch]]] = {}
    for batch in batches:
        parsed = parse_key(key_of(batch))
        if parsed is None or parsed[1] is None:
            continue
        history.setdefault(parsed[0], []).append((parsed[1], batch))
    return {base: [b for _, b in sorted(found, key=lambda x: x[0])] for base, found in history.items()}


@dataclass(frozen=True)
class ShardRun:
    """
    One shard of a job and its batch, as far as it got.

    :param shard: The shard.
    :param key_base: Its generation-less idempotency key.
    :param generation: Generation of its current (or next) batch: 1 for the first, as the create
        operator's keys.
    :param file_id: Its uploaded input file, once uploaded.
    :param batch: Its current batch, once created.
    :param late: Until when late copies of its ambiguous upload or create may appear, if any.
    """

    shard: Shard
    key_base: str
    generation: int = 1
    file_id: str | None = None
    batch: Batch | None = field(default=None)
    late: LateCopies | None = None

    @property
    def idempotency_key(self) -> str:
        """The key of the current generation."""
        return with_generation(self.key_base, self.generation)

    @property
    def running(self) -> bool:
        """Created and not yet terminal."""
        return self.batch is not None and not self.batch.status.is_terminal

    def with_batch(self, batch: Batch) -> ShardRun:
        """The same run with a newer read of its batch."""
        return replace(self, batch=batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the operator's resume kwargs)."""
        return {
            "shard": self.shard.to_dict(),
            "key_base": self.key_base,
            "generation": self.generation,
            "file_id": self.file_id,
            "batch": None if self.batch is None else self.batch.model_dump(mode="json"),
            "late": None if self.late is None else self.late.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardRun:
        """Inverse of :meth:`to_dict`."""
        batch = data.get("batch")
        return cls(
            Shard.from_dict(data["shard"]),
            data["key_base"],
            int(data["generation"]),
            data.get("file_id"),
            None if batch is None else Batch.model_validate(batch),
            LateCopies.from_dict(data.get("late")),
        )


@dataclass(frozen=True)
class ShardJob:
    """
    A sharded job between two steps of its task: what the operator keeps while it is deferred.

    :param token: The job token (:func:`job_token`).
    :param endpoint: The endpoint of every shard's batch (the lines' ``url``).
    :param deadline: Epoch seconds at which the wait gives up, if any.
    :param runs: Every shard's run, in input order.
    :param rounds_left: Follow-up rounds this try may still send (for shards whose batch ended short).
    """

    token: str
    endpoint: str
    deadline: float | None
    runs: tuple[ShardRun, ...]
    rounds_left: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (XCom)."""
        return {
            "token": self.token,
            "endpoint": self.endpoint,
            "deadline": self.deadline,
            "runs": [r.to_dict() for r in self.runs],
            "rounds_left": self.rounds_left,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardJob:
        """Inverse of :meth:`to_dict`."""
        runs = tuple(ShardRun.from_dict(r) for r in data["runs"])
        return cls(data["token"], data["endpoint"], data["deadline"], runs, int(data["rounds_left"]))


@dataclass(frozen=True)
class JobOutcomePolicy:
    """
    Judge a job from its shards' finished batches.

    The job fails if any shard's batch fails under ``shard_policy`` or if fewer than
    ``min_success_ratio`` of all requests succeeded; it is skipped if every shard is skipped; otherwise it
    succeeds.

    :param shard_policy: The outcome policy applied to each shard's batch.
    :param min_success_ratio: Least fraction (0..1) of the job's requests that must succeed.
    """

    shard_policy: OutcomePolicy = field(default_factory=OutcomePolicy)
    min_success_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_success_ratio <= 1:
            raise ValueError(f"min_success_ratio must be in 0..1, got {self.min_success_ratio}")

    def evaluate(self, batches: Sequence[Batch]) -> Verdict:
        """
        Judge the job.

        :param batches: One terminal batch per shard.
        :raises ValueError: if a batch is not terminal.
        """
        verdicts = [self.shard_policy.evaluate(b) for b in batches]
        total = sum(b.request_counts.total for b in batches if b.request_counts)
        completed = sum(b.request_counts.completed for b in batches if b.request_counts)
        tally = f"{completed} of {total} requests succeeded over {len(batches)} shards"
        failed = [v.reason for v in verdicts if v.outcome is Outcome.FAIL]
        if failed:
            return Verdict(Outcome.FAIL, f"{len(failed)} shard(s) failed ({tally}): " + " ".join(failed))
        if total and completed < self.min_success_ratio * total:
            return Verdict(
                Outcome.FAIL,
                f"Only {completed / total:.2%} of requests succeeded ({tally}); the minimum is "
                f"{self.min_success_ratio:.2%}.",
            )
        if verdicts and all(v.outcome is Outcome.SKIP for v in verdicts):
            return Verdict(Outcome.SKIP, f"Every shard was skipped ({tally}).")
        return Verdict(Outcome.SUCCESS, f"Job finished ({tally}).")
