"""A batch's job on the page: shards and rounds found from its metadata, grouped, and the job's estimate."""

from __future__ import annotations

from decimal import Decimal

from airflow_provider_dashscope_batch.client.identity import lineage, with_generation
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.cost.label import CostFigure
from airflow_provider_dashscope_batch.sharding.job import job_token
from airflow_provider_dashscope_batch.ui.jobs import group_by_job, job_batch, job_name_filter

CREATOR = {"airflow_dag_id": "d", "airflow_task_id": "t", "airflow_run_id": "r", "airflow_map_index": "-1"}


def _round(n: int, name: str, cost: str | None = None) -> Batch:
    metadata = {
        **CREATOR,
        "ds_name": name,
        "idempotency_key": with_generation(lineage("d", "t", "r", "-1"), n),
    }
    if cost is not None:
        metadata["airflow_estimated_cost"] = cost
    return Batch(id=f"batch_round{n}", status="completed", metadata=metadata)


def _shard(i: int, n: int, cost: str) -> Batch:
    token = job_token("d", "s", "r", -1)
    metadata = {
        **CREATOR,
        "airflow_task_id": "s",
        "ds_name": f"{token} translate {i}/{n}",
        "idempotency_key": with_generation(lineage(token, str(i - 1), "0" * 64), 1),
        "airflow_estimated_cost": cost,
    }
    return Batch(id=f"batch_shard{i}", status="in_progress", metadata=metadata)


def test_rounds_are_numbered_by_key_generation_and_their_estimates_summed():
    items = [
        job_batch(_round(2, "daily round 2", "0.5000 CNY ceiling")),
        job_batch(_round(1, "daily", "2.0 CNY ceiling")),
    ]
    assert [i.place for i in items] == ["round 2", "round 1"]
    [group] = group_by_job(items)
    assert group.job == ("d", "r", "t", -1)
    assert not group.sharded
    assert group.estimated == CostFigure(Decimal("2.5"), "CNY", "ceiling")
    assert job_name_filter(items[0]) == "daily"  # lists round 1 and its later rounds


def test_shards_carry_the_whole_jobs_estimate_once():
    items = [job_batch(_shard(i, 2, "8.0000 USD expected")) for i in (1, 2)]
    assert items[1].place == "shard 2 of 2, round 1"
    [group] = group_by_job(items)
    assert group.sharded
    assert group.estimated == CostFigure(Decimal(8), "USD", "expected")
    assert job_name_filter(items[0]) == job_token("d", "s", "r", -1)


def test_batches_of_no_known_job_stand_alone_and_jobs_keep_the_lists_order():
    adhoc = job_batch(Batch(id="batch_adhoc", status="completed", metadata={"ds_name": "x"}))
    groups = group_by_job(
        [
            job_batch(_round(2, "a round 2")),
            adhoc,
            job_batch(_shard(1, 1, "1 CNY ceiling")),
            job_batch(_round(1, "a")),
        ]
    )
    assert [(g.job, [b.batch.id for b in g.batches]) for g in groups] == [
        (("d", "r", "t", -1), ["batch_round2", "batch_round1"]),
        (None, ["batch_adhoc"]),
        (("d", "r", "s", -1), ["batch_shard1"]),
    ]
    assert adhoc.place == ""
    assert job_name_filter(adhoc) is None
    assert groups[0].estimated is None  # no estimate carried
