"""
Which job a batch belongs to on the batches page: its task instance, its shard and its round.

A job is one task instance of the create or the sharded operator
(:func:`~airflow_provider_dashscope_batch.sharding.creator.creator_of` names it); its batches are the
shards of a sharded job and the rounds (key generations,
:func:`~airflow_provider_dashscope_batch.client.identity.parse_key`) of either. The page groups a listed
page's batches by job, and a batch's page lists its job's batches with one list request by name: a
sharded job's batches are all named with its job token, a create operator's rounds with the job's name.
Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_dashscope_batch.client.identity import key_of, parse_key
from airflow_provider_dashscope_batch.cost.label import CostFigure
from airflow_provider_dashscope_batch.sharding.creator import Creator, creator_of
from airflow_provider_dashscope_batch.sharding.job import job_token

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["JobBatch", "JobGroup", "group_by_job", "job_batch", "job_name_filter", "job_of"]

_ROUND_SUFFIX = re.compile(r" round [0-9]+$")


@dataclass(frozen=True)
class JobBatch:
    """
    A batch with its place in its job.

    :param batch: The batch.
    :param creator: The task instance that created it (None: not created by this Airflow).
    :param round: Its round (key generation, from 1; None without a provider-minted key).
    :param estimated: The estimate it was created under: its own input's for a create operator's round,
        the whole job's for a shard (:mod:`airflow_provider_dashscope_batch.cost.label`).
    """

    batch: Batch
    creator: Creator | None
    round: int | None
    estimated: CostFigure | None

    @property
    def place(self) -> str:
        """``shard 2 of 4, round 1`` / ``round 2`` / ``""``."""
        parts = []
        if self.creator is not None and self.creator.shard is not None:
            parts.append(f"shard {self.creator.shard[0]} of {self.creator.shard[1]}")
        if self.creator is not None and self.round is not None:
            parts.append(f"round {self.round}")
        return ", ".join(parts)

    @property
    def sort_key(self) -> tuple[int, int]:
        """Shard, then round: the order of a job's batches."""
        shard = self.creator.shard[0] if self.creator is not None and self.creator.shard else 0
        return shard, self.round or 0


def job_batch(batch: Batch) -> JobBatch:
    """The batch's place in its job, read from its metadata."""
    creator = creator_of(batch)
    parsed = parse_key(key_of(batch)) if creator is not None else None
    return JobBatch(
        batch, creator, None if parsed is None else parsed[1], CostFigure.of_metadata(batch.metadata)
    )


def job_of(creator: Creator) -> tuple[str, str, str, int]:
    """The job a creator's batches share: its task instance."""
    return creator.dag_id, creator.run_id, creator.task_id, creator.map_index


@dataclass(frozen=True)
class JobGroup:
    """
    Batches of one job as a listed page holds them (a batch of no known job is a group of its own).

    :param job: ``(dag_id, run_id, task_id, map_index)``, or None.
    :param batches: Its batches, in the list's order.
    """

    job: tuple[str, str, str, int] | None
    batches: tuple[JobBatch, ...]

    @property
    def sharded(self) -> bool:
        """Whether the job is a sharded operator's."""
        return any(b.creator is not None and b.creator.shard is not None for b in self.batches)

    @property
    def estimated(self) -> CostFigure | None:
        """
        The job's estimate: a shard carries the whole job's; a create operator's rounds each their own
        (summed). None when a batch on the page carries none.
        """
        if self.sharded:
            figures = {b.estimated for b in self.batches}
            return figures.pop() if len(figures) == 1 else None
        return CostFigure.total(b.estimated for b in self.batches)


def group_by_job(batches: list[JobBatch]) -> list[JobGroup]:
    """The batches grouped by job, each group where its first batch is in the list."""
    members: dict[tuple[str, str, str, int], list[JobBatch]] = {}
    groups: list[JobGroup | tuple[str, str, str, int]] = []
    for item in batches:
        if item.creator is None:
            groups.append(JobGroup(None, (item,)))
            continue
        job = job_of(item.creator)
        if job not in members:
            members[job] = []
            groups.append(job)
        members[job].append(item)
    return [g if isinstance(g, JobGroup) else JobGroup(g, tuple(members[g])) for g in groups]


def job_name_filter(item: JobBatch) -> str | None:
    """
    The name filter that lists the batch's whole job: the job token a sharded job's names start with,
    else the job's name (its first round's ``ds_name``, which later rounds extend with `` round N``).
    """
    creator = item.creator
    if creator is None:
        return None
    if creator.shard is not None:
        return job_token(creator.dag_id, creator.task_id, creator.run_id, creator.map_index)
    name = str((item.batch.metadata or {}).get("ds_name") or "")
    return _ROUND_SUFFIX.sub("", name)[:100] or None
