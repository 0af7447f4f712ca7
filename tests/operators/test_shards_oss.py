"""
A sharded job staged to OSS (``stage_to``) against the emulator: no upload, batches from ``oss:`` ids.

The emulator reads ``oss:<region>:<bucket>/<key>`` from ``<oss_root>/<bucket>/<key>``; with ``oss_root``
``/`` a local ``stage_to`` folder is read as OSS with its first path component as the bucket, so the real
operator writes the objects and the emulator's batches read exactly what it wrote.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from shard_helpers import FAST, TaskInstance, drive, shard_bodies

from airflow_provider_dashscope_batch.operators.shard_oss import OssStaging
from airflow_provider_dashscope_batch.operators.shards import JOB_XCOM_KEY, DashScopeShardedBatchOperator


@pytest.fixture
def oss(dashscope_emulator):
    dashscope_emulator.configure(oss_root="/", validating_seconds=0, finalizing_seconds=0)
    return dashscope_emulator


def _sharded(stage_to: str, **kwargs: object) -> DashScopeShardedBatchOperator:
    return DashScopeShardedBatchOperator(
        task_id="run_shards",
        requests=shard_bodies(250),
        max_requests_per_shard=100,
        stage_to=stage_to,
        **FAST,
        **kwargs,
    )


def _oss_id(path) -> str:
    bucket, _, key = path.resolve().as_posix().lstrip("/").partition("/")
    return f"oss:cn-beijing:{bucket}/{key}"


def test_shards_staged_to_oss_run_without_an_upload(dashscope_conn, oss, client, tmp_path):
    stage = tmp_path / "stage"
    result, _ = drive(_sharded(f"file://{stage}"), {"ti": TaskInstance()})

    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    objects = sorted(stage.iterdir())
    assert len(objects) == 3
    batches = [client.retrieve_batch(b) for b in result["batch_ids"]]
    assert sorted(b.input_file_id for b in batches) == sorted(_oss_id(o) for o in objects)
    counts = oss.request_counts()
    assert "POST /files" not in counts
    assert counts["POST /batches"] == 3
    answered = set()
    for batch in batches:
        for line in b"".join(client.iter_file_content(str(batch.output_file_id))).splitlines():
            answered.add(json.loads(line)["custom_id"])
    assert answered == {f"r{i}" for i in range(250)}
    assert stage.exists()  # staged objects are kept


def test_a_retry_re_uses_the_staged_objects(dashscope_conn, oss, tmp_path):
    stage = tmp_path / "stage"
    oss.configure(time_scale=0)  # the first try's batch stays running
    ti = TaskInstance()
    with pytest.raises(TaskDeferred):
        _sharded(str(stage), max_active_batches=1).execute({"ti": ti})
    assert [r["batch"] is not None for r in ti.xcoms[JOB_XCOM_KEY]["runs"]] == [True, False, False]
    objects = sorted(stage.iterdir())
    assert len(objects) == 3  # every shard is staged at the split, batched as slots free
    for o in objects:
        os.utime(o, ns=(0, 0))
    oss.configure(time_scale=1)  # the worker died; a new try runs the job to its end

    result, _ = drive(_sharded(str(stage), max_active_batches=1), {"ti": ti})

    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    assert sorted(stage.iterdir()) == objects
    assert [o.stat().st_mtime_ns for o in objects] == [0, 0, 0]  # none written twice
    counts = oss.request_counts()
    assert (counts["POST /batches"], counts.get("POST /files", 0)) == (3, 0)


def test_a_truncated_staged_object_is_written_again(dashscope_conn, oss, tmp_path):
    stage = tmp_path / "stage"
    oss.configure(time_scale=0)
    ti = TaskInstance()
    with pytest.raises(TaskDeferred):
        _sharded(str(stage), max_active_batches=1).execute({"ti": ti})
    last = sorted(stage.iterdir())[-1]
    whole = last.read_bytes()
    last.write_bytes(whole[:10])  # a copy cut short
    oss.configure(time_scale=1)

    result, _ = drive(_sharded(str(stage), max_active_batches=1), {"ti": ti})

    assert result["request_counts"] == {"total": 250, "completed": 250, "failed": 0}
    assert last.read_bytes() == whole


def test_staging_to_oss_is_refused_outside_beijing(dashscope_conn, oss, tmp_path):
    dashscope_conn(region="ap-southeast-1")
    stage = tmp_path / "stage"
    with pytest.raises(AirflowFailException, match=r"OSS inputs for cn-beijing only .* ap-southeast-1"):
        _sharded(str(stage)).execute({"ti": TaskInstance()})
    assert not stage.exists()
    assert "POST /batches" not in oss.request_counts()


@pytest.mark.parametrize(
    ("stage_to", "object_id"),
    [
        ("oss://my-bucket/batch-inputs/", "oss:cn-beijing:my-bucket/batch-inputs/a.jsonl"),
        ("s3://my-bucket", "oss:cn-beijing:my-bucket/a.jsonl"),
        ("file:///srv/in/x", "oss:cn-beijing:srv/in/x/a.jsonl"),
    ],
)
def test_the_bucket_and_key_of_stage_to(stage_to, object_id):
    assert OssStaging.of(stage_to, "cn-beijing").object_id("a.jsonl") == object_id


def test_a_folder_naming_no_bucket_is_refused():
    with pytest.raises(AirflowFailException, match="names no OSS bucket"):
        OssStaging.of("s3://Not_A_Bucket/x", "cn-beijing")


def test_staging_writes_once(tmp_path):
    source = tmp_path / "shard-00000.jsonl"
    source.write_bytes(b'{"custom_id": "1"}\n')
    staging = OssStaging.of(tmp_path / "stage", "cn-beijing")
    log = logging.getLogger(__name__)
    first = staging.stage(source, "job-token-1", log)
    staged = tmp_path / "stage" / "shard-00000.job-token-1.jsonl"
    os.utime(staged, ns=(0, 0))
    assert staging.stage(source, "job-token-1", log) == first == _oss_id(staged)
    assert staged.stat().st_mtime_ns == 0


def test_staging_to_a_bucket_url_writes_the_object_once(s3_bucket, tmp_path, caplog):
    """An ``ObjectStoragePath`` with a bucket (here S3 on moto's server): its bucket and key make the id."""
    source = tmp_path / "shard-00000.jsonl"
    source.write_bytes(b'{"custom_id": "1"}\n')
    staging = OssStaging.of("s3://s3_results@results-bucket/in", "cn-beijing")
    log = logging.getLogger(__name__)
    with caplog.at_level(logging.INFO, logger=__name__):
        first = staging.stage(source, "job-token-1", log)
        again = staging.stage(source, "job-token-1", log)
    assert first == again == "oss:cn-beijing:results-bucket/in/shard-00000.job-token-1.jsonl"
    body = s3_bucket.get_object(Bucket="results-bucket", Key="in/shard-00000.job-token-1.jsonl")["Body"]
    assert body.read() == source.read_bytes()
    ours = [r.getMessage().split(" ")[0] for r in caplog.records if r.name == __name__]
    assert ours == ["Staged", "Re-using"]
