"""The results transfer operator run for real: emulator over HTTP -> local files and S3 (moto server)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    Asset,
    ObjectStoragePath,
)
from dashscope_batch_emulator import emulated_embedding

from airflow_provider_dashscope_batch.client import DashScopeClient, NotFoundError
from airflow_provider_dashscope_batch.client.types import Batch
from airflow_provider_dashscope_batch.results.tables import EMBEDDING_COLUMNS, RESULT_COLUMNS
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

CONTENT_PATH = "/files/*/content"
S3_BUCKET = "results-bucket"  # created by the s3_bucket fixture


def run(batch: Batch, destination: str, **kwargs: Any) -> dict[str, Any]:
    op = DashScopeBatchResultsToObjectStorageOperator(
        task_id="transfer", batch_id=batch.id, destination=destination, **kwargs
    )
    return op.execute({})


def only_shard(manifest: dict[str, Any]) -> dict[str, Any]:
    (shard,) = manifest["shards"]
    return shard


def remote_bytes(client: DashScopeClient, file_id: str) -> bytes:
    return b"".join(client.iter_file_content(file_id))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.usefixtures("dashscope_conn")
class TestLocal:
    def test_jsonl_byte_for_byte_with_manifest(self, make_batch, client, tmp_path):
        batch = make_batch(10, fail="^req-(3|7)$")
        assert batch.output_file_id
        assert batch.error_file_id

        manifest = run(batch, f"file://{tmp_path}")

        out_dir = tmp_path / batch.id
        assert listing(out_dir) == ["errors.jsonl", "manifest.json", "output.jsonl"]
        output = (out_dir / "output.jsonl").read_bytes()
        errors = (out_dir / "errors.jsonl").read_bytes()
        assert output == remote_bytes(client, batch.output_file_id)
        assert errors == remote_bytes(client, batch.error_file_id)
        assert json.loads((out_dir / "manifest.json").read_text()) == manifest

        shard = only_shard(manifest)
        files = shard["files"]
        assert files["output"]["lines"] == 8
        assert files["errors"]["lines"] == 2
        assert files["output"]["sha256"] == hashlib.sha256(output).hexdigest()
        assert files["output"]["source_sha256"] == files["output"]["sha256"]
        assert files["output"]["bytes"] == len(output)
        assert files["errors"]["file_id"] == batch.error_file_id
        assert files["output"]["uri"].endswith(f"{batch.id}/output.jsonl")
        assert shard["batch_id"] == batch.id
        assert shard["status"] == "completed"
        assert shard["request_counts"] == {"total": 10, "completed": 8, "failed": 2}
        assert shard["input_file_id"] == batch.input_file_id
        assert manifest["manifest_version"] == 2
        assert manifest["format"] == "jsonl"
        assert manifest["warnings"] == []
        assert manifest["manifest_uri"].endswith(f"{batch.id}/manifest.json")

        expected = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for line in output.splitlines():
            usage = json.loads(line)["response"]["body"]["usage"]
            for key in expected:
                expected[key] += usage[key]
        assert expected["total_tokens"] > 0
        assert shard["usage"] == {**expected, "requests": 8, "reasoning_tokens": 0}
        totals = manifest["totals"]
        assert totals["usage"] == shard["usage"]
        assert totals["request_counts"] == shard["request_counts"]
        assert (totals["output_lines"], totals["error_lines"]) == (8, 2)
        assert totals["bytes"] == len(output) + len(errors)

    def test_csv_one_row_per_request(self, make_batch, tmp_path):
        batch = make_batch(6, fail="^req-2$")

        manifest = run(batch, f"file://{tmp_path}", output_format="csv")

        out_dir = tmp_path / batch.id
        assert listing(out_dir) == ["errors.csv", "manifest.json", "output.csv"]
        with (out_dir / "output.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(RESULT_COLUMNS)
        assert sorted(r["custom_id"] for r in rows) == ["req-0", "req-1", "req-3", "req-4", "req-5"]
        for row in rows:
            assert row["status_code"] == "200"
            assert row["model"] == "qwen-plus"
            assert row["content"]
            assert int(row["total_tokens"]) == int(row["prompt_tokens"]) + int(row["completion_tokens"])
            assert row["error_code"] == ""
        with (out_dir / "errors.csv").open(newline="", encoding="utf-8") as f:
            (error_row,) = list(csv.DictReader(f))
        assert error_row["custom_id"] == "req-2"
        assert error_row["error_code"]
        assert error_row["error_message"]
        output = only_shard(manifest)["files"]["output"]
        assert output["lines"] == 5
        assert output["sha256"] == hashlib.sha256((out_dir / "output.csv").read_bytes()).hexdigest()
        assert output["source_sha256"] != output["sha256"]

    def test_parquet_rows_and_row_groups(self, make_batch, tmp_path):
        pq = pytest.importorskip("pyarrow.parquet")
        batch = make_batch(7, fail="^req-6$")

        run(batch, f"file://{tmp_path}", output_format="parquet", parquet_row_group_size=2)

        out_dir = tmp_path / batch.id
        assert listing(out_dir) == ["errors.parquet", "manifest.json", "output.parquet"]
        parquet = pq.ParquetFile(out_dir / "output.parquet")
        assert parquet.metadata.num_rows == 6
        assert parquet.metadata.num_row_groups == 3
        table = parquet.read()
        assert table.column_names == list(RESULT_COLUMNS)
        assert str(table.schema.field("total_tokens").type) == "int64"
        rows = table.to_pylist()
        assert sorted(r["custom_id"] for r in rows) == [f"req-{i}" for i in range(6)]
        assert all(r["content"] and r["status_code"] == 200 for r in rows)
        (error_row,) = pq.read_table(out_dir / "errors.parquet").to_pylist()
        assert error_row["custom_id"] == "req-6"
        assert error_row["error_code"]
        assert error_row["total_tokens"] is None

    def test_embeddings_one_row_per_text_with_its_vector(self, make_batch, tmp_path):
        batch = make_batch(3, endpoint="/v1/embeddings")

        manifest = run(batch, f"file://{tmp_path}", output_format="csv")

        with (tmp_path / batch.id / "output.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(EMBEDDING_COLUMNS)
        assert sorted(r["custom_id"] for r in rows) == ["req-0", "req-1", "req-2"]
        for row in rows:
            text = f"text {row['custom_id'].removeprefix('req-')}"
            assert json.loads(row["embedding"]) == emulated_embedding(text, 64)
            assert (row["dimensions"], row["input_index"], row["input_id"]) == ("64", "0", row["custom_id"])
        usage = only_shard(manifest)["usage"]
        assert usage["completion_tokens"] == 0
        assert usage["prompt_tokens"] == usage["total_tokens"] == sum(int(r["total_tokens"]) for r in rows)
        assert "errors" not in only_shard(manifest)["files"]
        table = only_shard(manifest)["files"]["output"]["table"]
        assert (table["name"], table["version"], table["embedding_dimensions"]) == ("embeddings", 2, 64)
        assert table["columns"]["embedding"] == "vector"

    def test_parquet_embedding_vectors_read_back(self, make_batch, tmp_path):
        pq = pytest.importorskip("pyarrow.parquet")
        batch = make_batch(5, endpoint="/v1/embeddings", dimensions=128)

        run(batch, f"file://{tmp_path}", output_format="parquet", parquet_row_group_size=2)

        table = pq.read_table(tmp_path / batch.id / "output.parquet")
        assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[128]"
        for row in table.to_pylist():
            expected = emulated_embedding(f"text {row['custom_id'].removeprefix('req-')}", 128)
            assert row["embedding"] == pytest.approx(expected, abs=1e-7)  # float32 of the service's floats

    def test_chat_finish_reason_and_reasoning_columns(self, client, tmp_path):
        pq = pytest.importorskip("pyarrow.parquet")
        bodies = [
            {"model": "qwen-plus", "messages": [{"role": "user", "content": "a long question " * 20}]},
            {
                "model": "qwen-plus",
                "max_tokens": 3,
                "messages": [{"role": "user", "content": "cut me short"}],
            },
        ]
        lines = [
            json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
            for i, body in enumerate(bodies)
        ]
        uploaded = client.upload_file(io.BytesIO("\n".join(lines).encode()), filename="in.jsonl")
        batch = client.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
        while not batch.status.is_terminal:
            time.sleep(0.05)
            batch = client.retrieve_batch(batch.id)

        manifest = run(batch, f"file://{tmp_path}", output_format="parquet")

        rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / batch.id / "output.parquet").to_pylist()}
        assert (rows["c0"]["finish_reason"], rows["c1"]["finish_reason"]) == ("stop", "length")
        assert rows["c1"]["completion_tokens"] == 3
        assert only_shard(manifest)["files"]["output"]["table"]["name"] == "requests"

    def test_count_check_fail_publishes_nothing(self, make_batch, counts_disagree, tmp_path):
        batch = make_batch(5)

        with (
            counts_disagree(batch, completed=6),
            pytest.raises(AirflowException, match=r"5 lines but request_counts.completed is 6"),
        ):
            run(batch, f"file://{tmp_path}")

        assert listing(tmp_path / batch.id) == []

    def test_count_check_warn_publishes_and_records(self, make_batch, counts_disagree, tmp_path):
        batch = make_batch(5)

        with counts_disagree(batch, failed=1):
            manifest = run(batch, f"file://{tmp_path}", count_check="warn")

        assert listing(tmp_path / batch.id) == ["manifest.json", "output.jsonl"]
        assert len(manifest["warnings"]) == 1
        assert "errors file (none) has 0 lines but request_counts.failed is 1" in manifest["warnings"][0]
        with counts_disagree(batch, completed=4):
            assert run(batch, f"file://{tmp_path}", count_check="off")["warnings"] == []

    def test_truncated_download_is_restarted(self, make_batch, client, dashscope_emulator, tmp_path):
        batch = make_batch(20, fail="^req-1$")
        # the first download of each file is cut after 100 bytes (full Content-Length, then a dropped socket)
        dashscope_emulator.add_fault("truncate", method="GET", path=CONTENT_PATH, truncate_at=100, count=2)

        manifest = run(batch, f"file://{tmp_path}")

        assert dashscope_emulator.faults() == []
        out_dir = tmp_path / batch.id
        assert listing(out_dir) == ["errors.jsonl", "manifest.json", "output.jsonl"]
        assert (out_dir / "output.jsonl").read_bytes() == remote_bytes(client, batch.output_file_id)
        assert only_shard(manifest)["files"]["output"]["lines"] == 19

    def test_persistent_truncation_fails_without_partial_file(self, make_batch, dashscope_emulator, tmp_path):
        batch = make_batch(20)
        dashscope_emulator.add_fault("truncate", method="GET", path=CONTENT_PATH, truncate_at=100)

        with pytest.raises(AirflowException, match="failed 2 times, nothing was published"):
            run(batch, f"file://{tmp_path}", download_attempts=2)

        assert listing(tmp_path / batch.id) == []

    def test_dropped_connection_is_retried(self, make_batch, client, dashscope_emulator, tmp_path):
        batch = make_batch(5)
        dashscope_emulator.add_fault("drop", method="GET", path=CONTENT_PATH, count=1)

        run(batch, f"file://{tmp_path}", output_format="csv")

        assert dashscope_emulator.faults() == []
        with (tmp_path / batch.id / "output.csv").open(newline="", encoding="utf-8") as f:
            assert len(list(csv.DictReader(f))) == 5

    def test_rerun_per_overwrite_policy(self, make_batch, dashscope_emulator, tmp_path):
        batch = make_batch(4, fail="^req-0$")
        first = run(batch, f"file://{tmp_path}")
        output = tmp_path / batch.id / "output.jsonl"
        stamp = output.stat().st_mtime_ns

        dashscope_emulator.clear_request_counts()
        assert run(batch, f"file://{tmp_path}", overwrite="skip") == first
        assert output.stat().st_mtime_ns == stamp
        assert not any("content" in route for route in dashscope_emulator.request_counts())

        # a skip with another format does not match the manifest: transfer again
        csv_manifest = run(batch, f"file://{tmp_path}", overwrite="skip", output_format="csv")
        assert csv_manifest["format"] == "csv"
        assert listing(tmp_path / batch.id) == sorted(
            ["errors.csv", "errors.jsonl", "manifest.json", "output.csv", "output.jsonl"]
        )

        with pytest.raises(AirflowFailException, match="overwrite='fail'"):
            run(batch, f"file://{tmp_path}", overwrite="fail")

        output.write_bytes(b"garbage\n")
        replaced = run(batch, f"file://{tmp_path}", overwrite="replace")
        digest = only_shard(first)["files"]["output"]["sha256"]
        assert only_shard(replaced)["files"]["output"]["sha256"] == digest
        assert hashlib.sha256(output.read_bytes()).hexdigest() == digest

    def test_skip_with_tampered_file_transfers_again(self, make_batch, tmp_path):
        batch = make_batch(3)
        first = run(batch, f"file://{tmp_path}")
        output = tmp_path / batch.id / "output.jsonl"
        output.write_bytes(b"truncated")

        again = run(batch, f"file://{tmp_path}", overwrite="skip")

        assert again["transferred_at"] >= first["transferred_at"]
        assert (
            hashlib.sha256(output.read_bytes()).hexdigest() == only_shard(first)["files"]["output"]["sha256"]
        )

    def test_stale_temporary_objects_are_swept(self, make_batch, tmp_path):
        batch = make_batch(2)
        (tmp_path / batch.id).mkdir()
        (tmp_path / batch.id / ".output.jsonl.0123.part").write_bytes(b"half")

        run(batch, f"file://{tmp_path}")

        assert listing(tmp_path / batch.id) == ["manifest.json", "output.jsonl"]

    def test_delete_remote_files_after_transfer(self, make_batch, client, tmp_path):
        batch = make_batch(4, fail="^req-3$")

        manifest = run(batch, f"file://{tmp_path}", delete_remote_files=True)

        deleted = only_shard(manifest)["deleted_remote_files"]
        assert deleted == [batch.input_file_id, batch.output_file_id, batch.error_file_id]
        for file_id in deleted:
            with pytest.raises(NotFoundError):
                client.retrieve_file(file_id)
        out_dir = tmp_path / batch.id
        assert (out_dir / "output.jsonl").stat().st_size == only_shard(manifest)["files"]["output"]["bytes"]
        # the file records the deletions too: it is written after them
        assert json.loads((out_dir / "manifest.json").read_text()) == manifest
        # a rerun that finds the verified transfer tolerates the already deleted files
        again = run(batch, f"file://{tmp_path}", overwrite="skip", delete_remote_files=True)
        assert again == manifest

    def test_no_remote_deletion_when_verification_fails(self, make_batch, client, counts_disagree, tmp_path):
        batch = make_batch(3)

        with (
            counts_disagree(batch, completed=2),
            pytest.raises(AirflowException, match="count_check"),
        ):
            run(batch, f"file://{tmp_path}", delete_remote_files=True)

        assert client.retrieve_file(batch.output_file_id).id == batch.output_file_id
        assert client.retrieve_file(batch.input_file_id).id == batch.input_file_id

    def test_unfinished_batch_is_rejected(self, client, dashscope_emulator, tmp_path):
        dashscope_emulator.set_clock(time_scale=0)
        line = {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/ds-test",
            "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]},
        }
        uploaded = client.upload_file(io.BytesIO(json.dumps(line).encode() + b"\n"), filename="in.jsonl")
        batch = client.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/ds-test")

        with pytest.raises(AirflowException, match="has finished"):
            run(batch, f"file://{tmp_path}")
        assert not (tmp_path / batch.id).exists()


def test_static_destination_is_an_asset_outlet():
    static = DashScopeBatchResultsToObjectStorageOperator(
        task_id="t", batch_id="b", destination="s3://my_conn@bucket/results/"
    )
    assert static.outlets == [Asset("s3://bucket/results/")]
    templated = DashScopeBatchResultsToObjectStorageOperator(
        task_id="t2", batch_id="b", destination="s3://my_conn@bucket/{{ ds }}"
    )
    assert templated.outlets == []
    explicit = DashScopeBatchResultsToObjectStorageOperator(
        task_id="t3", batch_id="b", destination="file:///tmp/x", outlets=[Asset("file:///elsewhere")]
    )
    assert explicit.outlets == [Asset("file:///elsewhere")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_format": "xlsx"}, "output_format must be one of"),
        ({"overwrite": "merge"}, "overwrite must be one of"),
        ({"count_check": "maybe"}, "count_check must be one of"),
        ({"download_attempts": 0}, "must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DashScopeBatchResultsToObjectStorageOperator(
            task_id="t", batch_id="b", destination="file:///x", **kwargs
        )


@pytest.mark.usefixtures("dashscope_conn")
class TestS3:
    def test_jsonl_and_manifest_on_s3(self, make_batch, client, s3_bucket, tmp_path):
        batch = make_batch(12, fail="^req-(0|5)$")

        manifest = run(batch, f"s3://s3_results@{S3_BUCKET}/runs/")

        keys = sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
        prefix = f"runs/{batch.id}/"
        assert keys == [f"{prefix}errors.jsonl", f"{prefix}manifest.json", f"{prefix}output.jsonl"]
        body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"{prefix}output.jsonl")["Body"].read()
        assert body == remote_bytes(client, batch.output_file_id)
        stored = json.loads(
            s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"{prefix}manifest.json")["Body"].read()
        )
        assert stored == manifest
        # URIs keep the connection id, so ObjectStoragePath(uri) reopens them
        output = only_shard(manifest)["files"]["output"]
        assert output["uri"] == f"s3://s3_results@{S3_BUCKET}/{prefix}output.jsonl"
        assert output["lines"] == 10

    def test_oss_destination(self, make_batch, client, moto_endpoint, s3_bucket, monkeypatch):
        # moto stands in for OSS's S3-compatible endpoint; the transfer registers oss:// itself
        conn = {"conn_type": "aws", "login": "testing", "password": "testing"}
        conn["extra"] = {"region": "cn-hangzhou", "endpoint_url": moto_endpoint}
        monkeypatch.setenv("AIRFLOW_CONN_OSS_MOTO", json.dumps(conn))
        batch = make_batch(4, fail="^req-2$")

        manifest = run(batch, f"oss://oss_moto@{S3_BUCKET}/oss-runs")

        key = f"oss-runs/{batch.id}/output.jsonl"
        body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
        assert body == remote_bytes(client, batch.output_file_id)
        assert only_shard(manifest)["files"]["output"]["uri"] == f"oss://oss_moto@{S3_BUCKET}/{key}"
        assert s3_state(s3_bucket, "oss-runs/")[1] == []

    def test_parquet_on_s3_with_truncated_download(self, make_batch, dashscope_emulator, s3_bucket):
        pq = pytest.importorskip("pyarrow.parquet")
        batch = make_batch(8)
        dashscope_emulator.add_fault("truncate", method="GET", path=CONTENT_PATH, truncate_at=50, count=1)

        run(batch, f"s3://s3_results@{S3_BUCKET}/pq", output_format="parquet")

        keys = sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
        assert keys == [f"pq/{batch.id}/manifest.json", f"pq/{batch.id}/output.parquet"]
        body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"pq/{batch.id}/output.parquet")["Body"].read()
        table = pq.read_table(io.BytesIO(body))
        assert sorted(table.column("custom_id").to_pylist()) == sorted(f"req-{i}" for i in range(8))

    def test_rerun_skip_on_s3(self, make_batch, s3_bucket):
        batch = make_batch(3)
        destination = f"s3://s3_results@{S3_BUCKET}/skip"
        first = run(batch, destination, output_format="csv")

        assert run(batch, destination, output_format="csv", overwrite="skip") == first
        with pytest.raises(AirflowFailException):
            run(batch, destination, output_format="csv", overwrite="fail")


def s3_state(s3: Any, prefix: str) -> tuple[list[str], list[str]]:
    """Keys under ``prefix`` and keys of multipart uploads still in progress (neither may hold a partial)."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix).get("Contents", []))
    uploads = sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []))
    return keys, uploads


@pytest.mark.usefixtures("dashscope_conn")
class TestS3Publish:
    """On S3 the files go straight to their final keys as multipart uploads, aborted on any failure."""

    def test_multipart_output_is_byte_for_byte(self, make_batch, client, s3_bucket):
        # > 5 MiB, so the output is a multipart upload of several parts
        batch = make_batch(20, endpoint="/v1/embeddings", dimensions=40_000)

        manifest = run(batch, f"s3://s3_results@{S3_BUCKET}/mpu")

        assert only_shard(manifest)["files"]["output"]["bytes"] > 6 * 2**20
        body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"mpu/{batch.id}/output.jsonl")["Body"].read()
        assert body == remote_bytes(client, batch.output_file_id)
        assert s3_state(s3_bucket, "mpu/") == (
            [f"mpu/{batch.id}/manifest.json", f"mpu/{batch.id}/output.jsonl"],
            [],
        )
        assert manifest["totals"]["usage"]["requests"] == 20
        # files opened with autocommit=False are recorded in the (cached) filesystem's transaction;
        # the transfer finished them itself, so none is left for a later transaction to commit again
        fs = ObjectStoragePath(f"s3://s3_results@{S3_BUCKET}/mpu").fs
        assert list(fs.transaction.files) == []

    def test_truncated_multipart_download_leaves_nothing(self, make_batch, dashscope_emulator, s3_bucket):
        batch = make_batch(20, endpoint="/v1/embeddings", dimensions=40_000)
        # cut after the first 5 MiB part went to S3: the upload must be aborted, not completed
        dashscope_emulator.add_fault("truncate", method="GET", path=CONTENT_PATH, truncate_at=6 * 2**20)

        with pytest.raises(AirflowException, match="failed 2 times, nothing was published"):
            run(batch, f"s3://s3_results@{S3_BUCKET}/cut", download_attempts=2)

        assert s3_state(s3_bucket, "cut/") == ([], [])

    def test_dropped_connection_on_s3_publishes_once(self, make_batch, client, dashscope_emulator, s3_bucket):
        batch = make_batch(5, fail="^req-4$")
        dashscope_emulator.add_fault("drop", method="GET", path=CONTENT_PATH, count=1)

        run(batch, f"s3://s3_results@{S3_BUCKET}/drop")

        assert dashscope_emulator.faults() == []
        prefix = f"drop/{batch.id}/"
        keys, uploads = s3_state(s3_bucket, "drop/")
        assert (keys, uploads) == (
            [f"{prefix}errors.jsonl", f"{prefix}manifest.json", f"{prefix}output.jsonl"],
            [],
        )
        body = s3_bucket.get_object(Bucket=S3_BUCKET, Key=f"{prefix}output.jsonl")["Body"].read()
        assert body == remote_bytes(client, batch.output_file_id)

    def test_failed_count_check_on_s3_publishes_nothing(self, make_batch, counts_disagree, s3_bucket):
        batch = make_batch(20, endpoint="/v1/embeddings", dimensions=40_000)

        with (
            counts_disagree(batch, completed=21),
            pytest.raises(AirflowException, match=r"20 lines but request_counts.completed is 21"),
        ):
            run(batch, f"s3://s3_results@{S3_BUCKET}/count")

        assert s3_state(s3_bucket, "count/") == ([], [])

    def test_replace_on_s3_keeps_no_temporary_objects(self, make_batch, s3_bucket):
        batch = make_batch(3, fail="^req-1$")
        destination = f"s3://s3_results@{S3_BUCKET}/again"
        run(batch, destination)
        second = run(batch, destination, overwrite="replace")

        prefix = f"again/{batch.id}/"
        assert s3_state(s3_bucket, "again/") == (
            [f"{prefix}errors.jsonl", f"{prefix}manifest.json", f"{prefix}output.jsonl"],
            [],
        )
        assert only_shard(second)["files"]["errors"]["lines"] == 1
