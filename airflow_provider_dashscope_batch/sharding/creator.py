"""
Which task instance created a batch: the ``airflow_*`` metadata the create and sharded operators set.

A batch carries its creator's dag id, task id, run id and map index in its metadata, so the batches page
(:mod:`~airflow_provider_dashscope_batch.ui.app`) links a batch to its DAG run and checks the user's access to
that DAG from one list request. The claim is checked against the idempotency key, which digests the same
task instance (the create operator's key, or the job token that starts a shard's ``ds_name``): a batch
whose claim does not match is treated as one without a known DAG. Pure code: no I/O, no Airflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dashscope_batch.client.identity import key_of, lineage, parse_key
from airflow_provider_dashscope_batch.sharding.job import job_token

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client.types import Batch

__all__ = ["CREATOR_FIELDS", "Creator", "creator_metadata", "creator_of"]

#: The metadata fields naming the creating task instance.
CREATOR_FIELDS = ("airflow_dag_id", "airflow_task_id", "airflow_run_id", "airflow_map_index")
#: A shard's ``ds_name``: the job token, the name, ``i/n``.
_SHARD_NAME = re.compile(r"^([0-9a-f]{16}) .* ([0-9]+)/([0-9]+)$")


@dataclass(frozen=True)
class Creator:
    """
    The task instance that created a batch.

    :param dag_id: Its DAG.
    :param task_id: Its task.
    :param run_id: Its DAG run.
    :param map_index: Its map index (-1: not mapped).
    :param shard: ``(i, n)`` for shard ``i`` of ``n`` of a sharded job, else None.
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    shard: tuple[int, int] | None = None


def creator_metadata(ti: Any) -> dict[str, str]:
    """The metadata naming ``ti`` (anything with ``dag_id``, ``task_id``, ``run_id``, ``map_index``)."""
    values = (getattr(ti, "dag_id", None), getattr(ti, "task_id", None), getattr(ti, "run_id", None))
    if not all(isinstance(value, str) and value for value in values):
        return {}
    map_index = getattr(ti, "map_index", -1)
    return dict(
        zip(CREATOR_FIELDS, (*values, str(map_index if isinstance(map_index, int) else -1)), strict=True)
    )


def creator_of(batch: Batch) -> Creator | None:
    """The batch's creator, if its metadata names one that its idempotency key confirms."""
    metadata = batch.metadata or {}
    values = [metadata.get(name) for name in CREATOR_FIELDS]
    if not all(isinstance(value, str) and value for value in values):
        return None
    dag_id, task_id, run_id, map_text = values
    if not re.fullmatch(r"-1|[0-9]{1,9}", map_text):
        return None
    parsed = parse_key(key_of(batch))
    if parsed is not None and parsed[0] == lineage(dag_id, task_id, run_id, map_text):
        return Creator(dag_id, task_id, run_id, int(map_text))
    shard = _SHARD_NAME.match(str(metadata.get("ds_name") or ""))
    if shard is not None and shard.group(1) == job_token(dag_id, task_id, run_id, int(map_text)):
        return Creator(dag_id, task_id, run_id, int(map_text), (int(shard.group(2)), int(shard.group(3))))
    return None
