"""The creator of a batch: named in its metadata by the operators, believed only when its key agrees."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_provider_dashscope_batch.client.identity import lineage, with_generation
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.sharding.creator import Creator, creator_metadata, creator_of
from airflow_provider_dashscope_batch.sharding.job import job_token

TI = SimpleNamespace(dag_id="reports", task_id="create", run_id="manual__1", map_index=3)


def _batch(metadata: dict[str, str]) -> Batch:
    return Batch(id="batch_1", status="in_progress", metadata=metadata)


def test_a_create_tasks_batch_names_its_task_instance_and_its_key_confirms_it():
    key = with_generation(lineage("reports", "create", "manual__1", "3"), 2)
    batch = _batch({**creator_metadata(TI), "idempotency_key": key})
    assert creator_of(batch) == Creator("reports", "create", "manual__1", 3)


def test_a_shards_batch_is_confirmed_by_the_job_token_in_its_name():
    token = job_token("reports", "create", "manual__1", 3)
    batch = _batch({**creator_metadata(TI), "ds_name": f"{token} translate 2/5", "idempotency_key": "x"})
    assert creator_of(batch) == Creator("reports", "create", "manual__1", 3, (2, 5))


def test_a_claim_its_key_does_not_confirm_names_no_creator():
    other = with_generation(lineage("reports", "create", "manual__2", "3"), 1)
    assert creator_of(_batch({**creator_metadata(TI), "idempotency_key": other})) is None
    assert creator_of(_batch({**creator_metadata(TI), "ds_name": "0123456789abcdef x 1/2"})) is None
    assert creator_of(_batch({"idempotency_key": other})) is None
    assert creator_of(Batch(id="batch_2", status="completed")) is None


def test_a_malformed_map_index_names_no_creator():
    key = with_generation(lineage("reports", "create", "manual__1", "x"), 1)
    assert (
        creator_of(_batch({**creator_metadata(TI), "airflow_map_index": "x", "idempotency_key": key})) is None
    )


def test_an_incomplete_task_instance_gives_no_metadata():
    assert creator_metadata(SimpleNamespace(dag_id="d", task_id="", run_id="r")) == {}
    assert creator_metadata(SimpleNamespace(dag_id="d", task_id="t", run_id="r")) == {
        "airflow_dag_id": "d",
        "airflow_task_id": "t",
        "airflow_run_id": "r",
        "airflow_map_index": "-1",
    }
