"""Every client method, sync and async, against the emulator over HTTP -- including its faults."""

from __future__ import annotations

import io
import json
import logging
import os
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from airflow_provider_dashscope_batch.client import (
    APIConnectionError,
    APITimeoutError,
    AsyncDashScopeClient,
    AuthenticationError,
    IncompleteDownloadError,
    InvalidRequestError,
    LocalValidationError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from airflow_provider_dashscope_batch.client.types import BatchStatus
from tests.client.client_helpers import finished

ENDPOINT = "/v1/chat/ds-test"


@pytest.fixture
def input_file(client, tmp_path, write_requests):
    return client.upload_file(write_requests(tmp_path / "requests.jsonl", 10))


# ------------------------------------------------------------------------------------------------ files
def test_upload_retrieve_list_delete(client, tmp_path, write_requests):
    path = write_requests(tmp_path / "in.jsonl", 3)
    uploaded = client.upload_file(path, upload_token="token-of-this-upload")
    assert uploaded.id.startswith("file-")
    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == (
        "in.token-of-this-upload.jsonl",
        path.stat().st_size,
        "batch",
    )
    assert client.retrieve_file(uploaded.id).bytes == uploaded.bytes
    assert uploaded.id in [f.id for f in client.list_files(purpose="batch")]
    deleted = client.delete_file(uploaded.id)
    assert deleted.deleted
    assert deleted.id == uploaded.id
    with pytest.raises(NotFoundError) as err:
        client.retrieve_file(uploaded.id)
    assert err.value.status_code == 404
    assert err.value.request_id


def test_upload_from_stream_needs_a_name(client, tmp_path, write_requests):
    data = write_requests(tmp_path / "x.jsonl", 2).read_bytes()
    uploaded = client.upload_file(io.BytesIO(data), filename="from-stream.jsonl")
    stem, token, ext = uploaded.filename.split(".")
    assert (stem, len(token), ext, uploaded.bytes) == ("from-stream", 32, "jsonl", len(data))
    with pytest.raises(LocalValidationError, match="filename"):
        client.upload_file(io.BytesIO(data))


def test_file_pagination_past_several_pages(client, dashscope_emulator, tmp_path, write_requests):
    ids = {client.upload_file(write_requests(tmp_path / f"f{i}.jsonl", 1)).id for i in range(7)}
    dashscope_emulator.clear_request_counts()
    assert {f.id for f in client.list_files(page_size=2)} == ids
    assert dashscope_emulator.request_counts()["GET /files"] == 4


def test_large_streamed_upload_and_download(client, dashscope_emulator, tmp_path, write_requests):
    """Correctness of a several-MB round trip; peak memory is measured in benchmarks/transfer.py."""
    source = write_requests(tmp_path / "big.jsonl", 5000, "qwen-plus", "/v1/chat/completions")
    uploaded = client.upload_file(source)
    assert uploaded.bytes == source.stat().st_size
    batch = finished(
        client,
        dashscope_emulator,
        client.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions"),
    )
    assert batch.status is BatchStatus.COMPLETED, batch.errors
    assert batch.request_counts.completed == 5000
    target = tmp_path / "out" / "output.jsonl"
    target.parent.mkdir()
    written = client.download_file(batch.output_file_id, target)
    assert written == target.stat().st_size == client.retrieve_file(batch.output_file_id).bytes
    assert os.listdir(target.parent) == ["output.jsonl"]  # the temp name was renamed away
    with target.open() as handle:
        custom_ids = {json.loads(line)["custom_id"] for line in handle}
    assert custom_ids == {str(i) for i in range(5000)}
    stream = io.BytesIO()
    assert client.download_file(batch.output_file_id, stream) == written
    assert stream.getvalue() == target.read_bytes()
    assert b"".join(client.iter_file_content(batch.output_file_id, chunk_size=4096)) == target.read_bytes()


def test_truncated_download_raises_typed_error_and_leaves_no_file(
    client, dashscope_emulator, input_file, tmp_path
):
    batch = finished(
        client, dashscope_emulator, client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    )
    dashscope_emulator.add_fault("truncate", method="GET", path="/files/*/content", truncate_at=100)
    target = tmp_path / "output.jsonl"
    with pytest.raises(IncompleteDownloadError) as err:
        client.download_file(batch.output_file_id, target)
    assert err.value.received < err.value.expected
    assert list(tmp_path.iterdir()) == [tmp_path / "requests.jsonl"]


# ---------------------------------------------------------------------------------------------- batches
def test_create_retrieve_list_cancel(client, dashscope_emulator, input_file):
    batch = client.create_batch(
        input_file_id=input_file.id,
        endpoint=ENDPOINT,
        completion_window=timedelta(days=2),
        metadata={"ds_name": "nightly scoring", "ds_description": "test"},
        idempotency_key="key-1",
    )
    assert batch.status is BatchStatus.VALIDATING
    assert batch.completion_window == "48h"
    assert batch.metadata == {
        "ds_name": "nightly scoring",
        "ds_description": "test",
        "idempotency_key": "key-1",
    }
    assert client.retrieve_batch(batch.id).id == batch.id
    assert [b.id for b in client.list_batches(ds_name="nightly", input_file_ids=[input_file.id])] == [
        batch.id
    ]
    assert list(client.list_batches(ds_name="nomatch")) == []
    since = datetime.now(UTC) - timedelta(hours=1)
    assert [b.id for b in client.list_batches(status=["validating", "in_progress"], create_after=since)] == [
        batch.id
    ]
    assert client.find_batch(idempotency_key="key-1", input_file_id=input_file.id).id == batch.id
    assert client.find_batch(idempotency_key="other", input_file_id=input_file.id) is None
    cancelled = client.cancel_batch(batch.id)
    assert cancelled.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert finished(client, dashscope_emulator, cancelled).status is BatchStatus.CANCELLED


def test_batch_pagination_past_several_pages(client, dashscope_emulator, input_file):
    created = [client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT).id for _ in range(7)]
    dashscope_emulator.clear_request_counts()
    assert [b.id for b in client.list_batches(page_size=2)] == created[::-1]  # newest first
    assert dashscope_emulator.request_counts()["GET /batches"] == 4


def test_service_rejection_is_typed(client, input_file):
    with pytest.raises(InvalidRequestError) as err:
        client.create_batch(input_file_id="file-does-not-exist", endpoint=ENDPOINT)
    assert err.value.status_code == 400
    assert err.value.code


# ----------------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("kind", "status"),
    [("status", 500), ("status", 502), ("status", 503), ("status", 429), ("drop", 500)],
)
def test_transient_faults_are_retried(client, dashscope_emulator, input_file, kind, status):
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    dashscope_emulator.clear_request_counts()
    dashscope_emulator.add_fault(
        kind, method="GET", path="/batches/*", status=status, retry_after=0.01, count=2
    )
    assert client.retrieve_batch(batch.id).id == batch.id
    assert dashscope_emulator.request_counts()["GET /batches/{batch_id}"] == 3


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [("status", 503, ServerError), ("status", 429, RateLimitError), ("drop", 500, APIConnectionError)],
)
def test_retry_budget_ends_in_typed_error(client, dashscope_emulator, kind, status, error):
    dashscope_emulator.add_fault(kind, method="GET", path="/batches/*", status=status, retry_after=0.01)
    with pytest.raises(error):
        client.retrieve_batch("batch_x")
    assert dashscope_emulator.request_counts()["GET /batches/{batch_id}"] == 4  # 1 + max_retries


def test_timeouts_are_retried_then_typed(make_client, dashscope_emulator, input_file):
    client = make_client(timeout=0.2)
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    dashscope_emulator.add_fault("latency", method="GET", path="/batches/*", latency=1.0, count=1)
    assert client.retrieve_batch(batch.id).id == batch.id
    dashscope_emulator.add_fault("latency", method="GET", path="/batches/*", latency=1.0)
    with pytest.raises(APITimeoutError):
        client.retrieve_batch(batch.id)


def test_non_transient_errors_are_not_retried(make_client, dashscope_emulator):
    client = make_client(api_key="sk-wrong-key-for-this-region")
    with pytest.raises(AuthenticationError):
        client.retrieve_batch("batch_x")
    assert dashscope_emulator.request_counts()["GET /batches/{batch_id}"] == 1


@pytest.mark.parametrize(
    ("kind", "status", "posts"),
    [
        ("truncate", 500, 1),  # created, response lost -> found by idempotency key, not re-sent
        ("status", 500, 2),  # rejected before creation -> looked up, not found, re-sent
        ("status", 429, 2),  # rate limited -> re-sent without lookup
        ("drop", 500, 2),  # connection dropped before handling -> looked up, re-sent
    ],
)
def test_ambiguous_create_never_duplicates(client, dashscope_emulator, input_file, kind, status, posts):
    dashscope_emulator.clear_request_counts()
    dashscope_emulator.add_fault(
        kind, method="POST", path="/batches", status=status, truncate_at=0, retry_after=0.01, count=1
    )
    batch = client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    assert [b.id for b in client.list_batches()] == [batch.id]
    assert dashscope_emulator.request_counts()["POST /batches"] == posts


@pytest.mark.parametrize(("kind", "posts"), [("truncate", 1), ("status", 2)])
def test_ambiguous_upload_never_duplicates(client, dashscope_emulator, tmp_path, write_requests, kind, posts):
    path = write_requests(tmp_path / "once.jsonl", 5)
    dashscope_emulator.add_fault(kind, method="POST", path="/files", status=500, truncate_at=0, count=1)
    uploaded = client.upload_file(path)
    assert [f.id for f in client.list_files()] == [uploaded.id]
    assert dashscope_emulator.request_counts()["POST /files"] == posts


def test_unseekable_stream_upload_is_not_resent(client, dashscope_emulator, tmp_path, write_requests):
    path = write_requests(tmp_path / "pipe.jsonl", 5)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, path.read_bytes())
    os.close(write_fd)
    dashscope_emulator.add_fault(
        "status", method="POST", path="/files", status=503, retry_after=0.01, count=1
    )
    with os.fdopen(read_fd, "rb") as pipe, pytest.raises(ServerError):
        client.upload_file(pipe, filename="pipe.jsonl")
    assert dashscope_emulator.request_counts()["POST /files"] == 1
    assert list(client.list_files()) == []


def test_retry_after_longer_than_allowed_is_not_waited(make_client, dashscope_emulator):
    client = make_client(retry_policy=RetryPolicy(max_retries=3, max_retry_after=1.0))
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=429, retry_after=60)
    with pytest.raises(RateLimitError):
        client.retrieve_batch("batch_x")
    assert dashscope_emulator.request_counts()["GET /batches/{batch_id}"] == 1


# ---------------------------------------------------------------------------------------------- secrets
def test_key_never_in_errors_or_logs(make_client, dashscope_emulator, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "sk-this-key-must-never-leak-0123456789"
    wrong = make_client(api_key=secret)
    with pytest.raises(AuthenticationError) as auth:
        wrong.retrieve_batch("batch_x")
    right = make_client()
    dashscope_emulator.add_fault("status", method="GET", path="/batches/*", status=503, retry_after=0.01)
    with pytest.raises(ServerError) as server:
        right.retrieve_batch("batch_x")
    dashscope_emulator.clear_faults()
    dashscope_emulator.add_fault("drop", method="GET", path="/files/*")
    with pytest.raises(APIConnectionError) as dropped:
        right.retrieve_file("file-x")
    for exc in (auth.value, server.value, dropped.value):
        for text in (str(exc), repr(exc), str(exc.__dict__)):
            assert secret not in text
            assert dashscope_emulator.api_key not in text
    assert "retry 1/3" in caplog.text  # the retries were logged ...
    assert secret not in caplog.text  # ... without any key
    assert dashscope_emulator.api_key not in caplog.text
    assert secret not in repr(wrong)


def test_a_cancelled_async_download_leaves_no_partial_file(client, dashscope_emulator, input_file, tmp_path):
    batch = finished(
        client, dashscope_emulator, client.create_batch(input_file_id=input_file.id, endpoint=ENDPOINT)
    )
    dashscope_emulator.add_fault("latency", method="GET", path="/files/*/content", latency=2.0)
    target = tmp_path / "out" / "output.jsonl"
    target.parent.mkdir()

    async def cancel_mid_download() -> None:
        face = AsyncDashScopeClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url)
        async with face, anyio.create_task_group() as group:
            group.start_soon(face.download_file, batch.output_file_id, target)
            while not any(target.parent.iterdir()):  # noqa: ASYNC110 -- waits for a file, not a task
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()  # the temporary file is open, the answer delayed

    anyio.run(cancel_mid_download)
    assert list(target.parent.iterdir()) == []
