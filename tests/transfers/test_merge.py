"""Several batches merged into one result set: emulator over HTTP -> local files and S3 (moto server)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_dashscope_batch.client import NotFoundError
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.transfers.manifest import ResultManifest
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

S3_BUCKET = "results-bucket"  # created by the s3_bucket fixture


def merge(batches: list[Any], destination: str, **kwargs: Any) -> dict[str, Any]:
    op = DashScopeBatchResultsToObjectStorageOperator(
        task_id="merge", batch_ids=batches, destination=destination, **kwargs
    )
    return op.execute({})


@pytest.fixture
def shards(make_batch) -> list[Batch]:
    """Three finished batches, 12 + 9 + 7 requests with unique custom_ids, some failed in each."""
    return [
        make_batch(12, prefix="a", fail="^a-(1|5)$"),
        make_batch(9, prefix="b", fail="^b-0$"),
        make_batch(7, prefix="c", fail="^c-6$"),
    ]


def custom_ids(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["custom_id"] for line in lines]


def assert_totals_are_sums(manifest: dict[str, Any]) -> None:
    shards, totals = manifest["shards"], manifest["totals"]
    assert totals["batches"] == len(shards)
    for key in ("total", "completed", "failed"):
        assert totals["request_counts"][key] == sum(s["request_counts"][key] for s in shards)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "requests"):
        assert totals["usage"][key] == sum(s["usage"][key] for s in shards)
    assert totals["output_lines"] == sum(s["files"]["output"]["lines"] for s in shards)
    assert totals["error_lines"] == sum(
        s["files"]["errors"]["lines"] for s in shards if "errors" in s["files"]
    )
    assert totals["bytes"] == sum(f["bytes"] for s in shards for f in s["files"].values())


def assert_same_document(stored: dict[str, Any], xcom: dict[str, Any]) -> None:
    """Every field of the XCom copy is in the file with the same value, and nothing else is."""
    assert stored == xcom
    assert ResultManifest.model_validate(stored).model_dump(mode="json") == xcom


@pytest.mark.usefixtures("dashscope_conn")
class TestMergeLocal:
    def test_three_batches_one_result_set(self, shards, client, tmp_path):
        manifest = merge([b.id for b in shards], f"file://{tmp_path}", result_set="job-1")

        root = tmp_path / "job-1"
        assert sorted(p.name for p in root.iterdir()) == ["errors", "manifest.json", "output"]
        parts = [f"part-{i:05d}.jsonl" for i in range(3)]
        assert sorted(p.name for p in (root / "output").iterdir()) == parts
        assert sorted(p.name for p in (root / "errors").iterdir()) == parts
        output = [line for part in parts for line in (root / "output" / part).read_bytes().splitlines()]
        errors = [line for part in parts for line in (root / "errors" / part).read_bytes().splitlines()]
        everything = custom_ids(output) + custom_ids(errors)
        expected = [f"a-{i}" for i in range(12)] + [f"b-{i}" for i in range(9)] + [f"c-{i}" for i in range(7)]
        assert sorted(everything) == sorted(expected)  # every custom_id exactly once
        assert sorted(custom_ids(errors)) == ["a-1", "a-5", "b-0", "c-6"]

        assert [s["batch_id"] for s in manifest["shards"]] == [b.id for b in shards]
        for index, (batch, shard) in enumerate(zip(shards, manifest["shards"], strict=True)):
            out = shard["files"]["output"]
            data = (root / "output" / parts[index]).read_bytes()
            assert out["file_id"] == batch.output_file_id
            assert shard["error_file_id"] == batch.error_file_id
            assert out["sha256"] == hashlib.sha256(data).hexdigest() == out["source_sha256"]
            assert out["bytes"] == len(data)
            assert out["uri"] == f"file://{root}/output/{parts[index]}"
            assert out["lines"] == shard["request_counts"]["completed"]
            assert shard["usage"]["requests"] == out["lines"]
        assert manifest["totals"]["output_lines"] == 24
        assert manifest["totals"]["error_lines"] == 4
        assert_totals_are_sums(manifest)
        assert_same_document(json.loads((root / "manifest.json").read_text()), manifest)

    def test_one_truncated_shard_publishes_nothing(self, shards, dashscope_emulator, tmp_path):
        # the second shard's output is cut short on every attempt; the first was already fully staged
        path = f"/files/{shards[1].output_file_id}/content"
        dashscope_emulator.add_fault("truncate", method="GET", path=path, truncate_at=100)

        with pytest.raises(AirflowException, match=f"batch {shards[1].id}, output file: .*failed 2 times"):
            merge([b.id for b in shards], f"file://{tmp_path}", result_set="cut", download_attempts=2)

        root = tmp_path / "cut"
        assert [p for p in root.rglob("*") if p.is_file()] == []

    def test_count_mismatch_in_one_shard_publishes_nothing(self, shards, counts_disagree, tmp_path):
        with (
            counts_disagree(shards[2], completed=7),
            pytest.raises(AirflowException, match=f"batch {shards[2].id}: output file .* has 6 lines"),
        ):
            merge([b.id for b in shards], f"file://{tmp_path}", result_set="count")

        assert [p for p in (tmp_path / "count").rglob("*") if p.is_file()] == []

    def test_csv_parts_share_one_header_per_part_and_batch_dicts_are_accepted(self, shards, tmp_path):
        dicts = [b.model_dump(mode="json") for b in shards]  # what a mapped create task pushes

        manifest = merge(dicts, f"file://{tmp_path}", output_format="csv")

        root = Path(manifest["destination"].removeprefix("file://"))
        assert root.name.startswith("merged-")
        rows = []
        for part in sorted((root / "output").iterdir()):
            with part.open(newline="", encoding="utf-8") as f:
                rows.extend(csv.DictReader(f))
        assert len(rows) == 24
        assert len({r["custom_id"] for r in rows}) == 24
        # the same batches land in the same place again
        assert (
            merge([b.id for b in shards], f"file://{tmp_path}", output_format="csv", overwrite="skip")
            == manifest
        )

    def test_rendered_list_and_replace_with_fewer_shards(self, shards, tmp_path):
        destination = f"file://{tmp_path}"
        merge([b.id for b in shards], destination, result_set="job")

        manifest = merge(str([shards[0].id, shards[1].id]), destination, result_set="job")

        root = tmp_path / "job"
        # the third part of the earlier run is not part of this result set any more
        assert sorted(p.name for p in (root / "output").iterdir()) == ["part-00000.jsonl", "part-00001.jsonl"]
        assert manifest["totals"]["batches"] == 2
        assert_same_document(json.loads((root / "manifest.json").read_text()), manifest)

    def test_delete_remote_files_of_every_shard(self, shards, client, tmp_path):
        manifest = merge(
            [b.id for b in shards], f"file://{tmp_path}", result_set="gone", delete_remote_files=True
        )

        for batch, shard in zip(shards, manifest["shards"], strict=True):
            assert shard["deleted_remote_files"] == [
                batch.input_file_id,
                batch.output_file_id,
                batch.error_file_id,
            ]
            for file_id in shard["deleted_remote_files"]:
                with pytest.raises(NotFoundError):
                    client.retrieve_file(file_id)
        assert_same_document(json.loads((tmp_path / "gone" / "manifest.json").read_text()), manifest)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of batch_id and batch_ids"),
        ({"batch_id": "a", "batch_ids": ["b"]}, "exactly one of batch_id and batch_ids"),
        ({"batch_id": "a", "result_set": "x"}, "needs batch_ids"),
    ],
)
def test_batch_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DashScopeBatchResultsToObjectStorageOperator(task_id="t", destination="file:///x", **kwargs)


@pytest.mark.usefixtures("dashscope_conn")
def test_repeated_batch_id_is_rejected(shards, tmp_path):
    with pytest.raises(AirflowException, match="more than once"):
        merge([shards[0].id, shards[0].id], f"file://{tmp_path}")


@pytest.mark.usefixtures("dashscope_conn")
class TestMergeS3:
    def test_three_batches_on_s3(self, shards, client, s3_bucket):
        manifest = merge([b.id for b in shards], f"s3://s3_results@{S3_BUCKET}/jobs", result_set="job-1")

        prefix = "jobs/job-1/"
        keys = sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
        parts = [f"part-{i:05d}.jsonl" for i in range(3)]
        assert keys == sorted(
            [f"{prefix}manifest.json"]
            + [f"{prefix}output/{p}" for p in parts]
            + [f"{prefix}errors/{p}" for p in parts]
        )
        assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []
        lines = []
        for key in keys:
            if key != f"{prefix}manifest.json":
                lines += s3_bucket.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read().splitlines()
        assert len(custom_ids(lines)) == len(set(custom_ids(lines))) == 28
        assert_totals_are_sums(manifest)
        stored = json.loads(
            s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"{prefix}manifest.json")["Body"].read()
        )
        assert_same_document(stored, manifest)
        assert (
            manifest["shards"][2]["files"]["output"]["uri"]
            == f"s3://s3_results@{S3_BUCKET}/{prefix}output/{parts[2]}"
        )

    def test_one_truncated_shard_on_s3_publishes_nothing(self, shards, dashscope_emulator, s3_bucket):
        path = f"/files/{shards[2].error_file_id}/content"
        dashscope_emulator.add_fault("truncate", method="GET", path=path, truncate_at=50)

        with pytest.raises(AirflowException, match="nothing was published"):
            merge(
                [b.id for b in shards],
                f"s3://s3_results@{S3_BUCKET}/jobs",
                result_set="cut",
                download_attempts=2,
            )

        # five files were staged as multipart uploads before the last one failed: all aborted, none completed
        assert s3_bucket.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []) == []
        assert s3_bucket.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []) == []
