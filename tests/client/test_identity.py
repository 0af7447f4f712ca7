"""The one definition of the idempotency key: its field, format, digest and parts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_dashscope_batch.client import identity as idempotency
from airflow_provider_dashscope_batch.client.identity import (
    IDEMPOTENCY_KEY,
    KEY_PATTERN,
    key_of,
    lineage,
    parse_key,
    with_generation,
)
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.operators.batch import idempotency_key_for
from airflow_provider_dashscope_batch.sharding.job import ShardRun, latest_batches, shard_key_base
from airflow_provider_dashscope_batch.sharding.split import Shard


def batch(key: str | None, batch_id: str = "b") -> Batch:
    metadata = {} if key is None else {IDEMPOTENCY_KEY: key}
    return Batch.model_validate({"id": batch_id, "status": "in_progress", "metadata": metadata})


def test_lineage_is_a_digest_of_the_parts():
    expected = "airflow-" + hashlib.sha256(b"a\x1fb").hexdigest()[:40]
    assert lineage("a", "b") == expected
    assert lineage("a", "b") != lineage("ab")
    assert KEY_PATTERN.match(with_generation(expected, 3))


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("airflow-" + "0" * 40 + "-g2", ("airflow-" + "0" * 40, 2)),
        ("airflow-" + "0" * 40, None),  # no generation
        ("airflow-" + "0" * 39 + "-g2", None),
        ("airflow-" + "A" * 40 + "-g2", None),
        ("4f0c1d", None),  # a key the client minted
        (None, None),
    ],
)
def test_parse_key(key, parsed):
    assert parse_key(key) == parsed


def test_key_of_reads_the_metadata_field():
    assert IDEMPOTENCY_KEY == "idempotency_key"
    assert key_of(batch("k1")) == "k1"
    assert key_of(batch(None)) is None


def test_operator_and_sharded_keys_are_one_format():
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    key = idempotency_key_for({"ti": ti}, generation=2)
    assert parse_key(key) == (lineage("d", "t", "r", "-1"), 2)
    shard = Shard(index=0, first_line=1, requests=1, bytes=1, sha256="0" * 64, uri="p")
    base = shard_key_base("token", shard)
    run = ShardRun(shard=shard, key_base=base, generation=4)
    assert parse_key(run.idempotency_key) == (base, 4)


def test_sharded_jobs_ignore_keys_without_a_generation():
    base = "airflow-" + "1" * 40
    found = latest_batches([batch(base, "old"), batch(f"{base}-g1", "g1"), batch(f"{base}-g3", "g3")])
    assert {k: (g, b.id) for k, (g, b) in found.items()} == {base: (3, "g3")}


def test_the_module_imports_no_airflow():
    source = Path(idempotency.__file__).read_text()
    assert "import airflow" not in source
    assert "from airflow." not in source
