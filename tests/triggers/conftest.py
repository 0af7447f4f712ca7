"""Fixtures for the trigger tests: a ``dashscope_default`` connection pointing at the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider_dashscope_batch.client import DashScopeClient

REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"


@pytest.fixture
def dashscope_conn(dashscope_emulator, monkeypatch) -> Callable[..., None]:
    """Point ``dashscope_default`` at the emulator; call again with extra fields (e.g. ``max_retries``)."""

    def configure(**extra: object) -> None:
        conn = {
            "conn_type": "dashscope",
            "password": dashscope_emulator.api_key,
            "extra": {"base_url": dashscope_emulator.base_url, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))

    configure()
    return configure


@pytest.fixture
def client(dashscope_emulator) -> Iterator[DashScopeClient]:
    """A sync client to set the scene (upload, create, cancel) over HTTP."""
    with DashScopeClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url) as c:
        yield c


@pytest.fixture
def new_batch(client) -> Callable[[], str]:
    """Create a batch of the sample requests; returns its id."""
    file_id = client.upload_file(REQUESTS).id

    def create() -> str:
        return client.create_batch(input_file_id=file_id, endpoint="/v1/chat/ds-test").id

    return create
