"""Fixtures for the results transfer: finished batches on the emulator (S3 comes from tests/conftest.py)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import respx
from dashscope_batch_emulator import EmulatorServer

from airflow_provider_dashscope_batch.catalog import shipped_catalog
from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.client.types import Batch


@pytest.fixture
def dashscope_conn(dashscope_conn) -> str:
    """``dashscope_default`` pointing at the emulator, with a small client retry budget."""
    dashscope_conn(max_retries=2)
    return "dashscope_default"


def _requests(n: int, endpoint: str, dimensions: int | None, prefix: str) -> bytes:
    lines = []
    for i in range(n):
        if endpoint == "/v1/embeddings":
            body: dict[str, Any] = {"model": "text-embedding-v4", "input": f"text {i}"}
            if dimensions is not None:
                body["dimensions"] = dimensions
        else:
            body = {"model": "qwen-plus", "messages": [{"role": "user", "content": f"Say hello {i} 你好"}]}
        lines.append(
            json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": endpoint, "body": body})
        )
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def make_batch(dashscope_emulator: EmulatorServer, client: DashScopeClient) -> Callable[..., Batch]:
    """Run a batch of ``<prefix>-<i>`` requests to completion; ``fail`` is a regex of custom_ids that fail."""

    def make(
        n: int = 10,
        *,
        fail: str | None = None,
        endpoint: str = "/v1/chat/completions",
        dimensions: int | None = 64,
        prefix: str = "req",
    ) -> Batch:
        dashscope_emulator.fail_requests(fail)
        if (
            dimensions is not None
            and dimensions not in shipped_catalog().get("text-embedding-v4").embedding.dimensions
        ):
            # longer vectors than the model documents (large files): the emulator's default length
            dashscope_emulator.configure(embedding_dimensions=dimensions)
            dimensions = None
        uploaded = client.upload_file(
            io.BytesIO(_requests(n, endpoint, dimensions, prefix)), filename="input.jsonl"
        )
        batch = client.create_batch(input_file_id=uploaded.id, endpoint=endpoint)
        deadline = time.monotonic() + 60
        while not batch.status.is_terminal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {batch.id} did not finish: {batch.status}")
            time.sleep(0.05)
            batch = client.retrieve_batch(batch.id)
        return batch

    return make


@pytest.fixture
def counts_disagree(dashscope_emulator: EmulatorServer) -> Callable[..., AbstractContextManager[None]]:
    """
    Serve a batch with ``request_counts`` that disagree with its files; all other requests pass through.

    respx because the emulator always reports honest counts: a disagreement is a wire detail only the real
    service (or a bug) could produce.
    """

    @contextmanager
    def serve(batch: Batch, **counts: int) -> Iterator[None]:
        body = batch.model_dump(mode="json")
        body["request_counts"].update(counts)
        with respx.mock(assert_all_called=False) as router:
            router.get(f"{dashscope_emulator.base_url}/batches/{batch.id}").respond(200, json=body)
            router.route().pass_through()
            yield

    return serve
