"""Fixtures for the results transfer: finished batches on the emulator and an S3 server (moto, over HTTP)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.emulator import EmulatorServer
from airflow_provider_dashscope_batch.models import Batch

S3_CONN_ID = "s3_results"  # the tests spell it out in their URLs
S3_BUCKET = "results-bucket"


@pytest.fixture
def dashscope_conn(dashscope_conn) -> str:
    """``dashscope_default`` pointing at the emulator, with a small client retry budget."""
    dashscope_conn(max_retries=2)
    return "dashscope_default"


def _requests(n: int, endpoint: str, dimensions: int) -> bytes:
    lines = []
    for i in range(n):
        if endpoint == "/v1/embeddings":
            body: dict[str, Any] = {
                "model": "text-embedding-v4",
                "input": f"text {i}",
                "dimensions": dimensions,
            }
        else:
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"Say hello {i} 你好"}]}
        lines.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": endpoint, "body": body}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def make_batch(dashscope_emulator: EmulatorServer, client: DashScopeClient) -> Callable[..., Batch]:
    """Run a batch to completion on the emulator; ``fail`` is a custom_id regex of requests that fail."""

    def make(
        n: int = 10, *, fail: str | None = None, endpoint: str = "/v1/chat/completions", dimensions: int = 64
    ) -> Batch:
        dashscope_emulator.fail_requests(fail)
        uploaded = client.upload_file(io.BytesIO(_requests(n, endpoint, dimensions)), filename="input.jsonl")
        batch = client.create_batch(input_file_id=uploaded.id, endpoint=endpoint)
        deadline = time.monotonic() + 60
        while not batch.status.is_terminal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {batch.id} did not finish: {batch.status}")
            time.sleep(0.05)
            batch = client.retrieve_batch(batch.id)
        return batch

    return make


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's server mode) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An empty bucket on the moto server plus an ``aws`` connection ``s3_results``; yields a boto3 client."""
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", json.dumps(conn))
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=S3_BUCKET)
    yield s3
    listed = s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", [])
    for obj in listed:
        s3.delete_object(Bucket=S3_BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=S3_BUCKET)
