"""
The example DAGs as system tests: the same DAG files against the emulator (always) and against the
real DashScope service (opt-in).

The real service runs only with ``DASHSCOPE_SYSTEM_API_KEY`` set (``DASHSCOPE_SYSTEM_REGION``:
``cn-beijing``, the default, or ``ap-southeast-1``) and only the examples on ``batch-test-model``,
which the service does not bill (at most 100 lines and 1 MB per file, 2 batches at once).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.regions import DEFAULT_REGION, REGION_BASE_URLS

KEY_ENV = "DASHSCOPE_SYSTEM_API_KEY"
REGION_ENV = "DASHSCOPE_SYSTEM_REGION"


@dataclass(frozen=True)
class Service:
    """Where the DAGs run: ``emulator`` or ``dashscope``, with the key and endpoint of the connection."""

    name: str
    api_key: str
    base_url: str
    poll_interval: float


@pytest.fixture(params=["emulator", "dashscope"])
def service(request, monkeypatch) -> Service:
    """The ``dashscope_default`` connection pointed at the emulator, or at the real service (opt-in)."""
    if request.param == "emulator":
        emulator = request.getfixturevalue("dashscope_emulator")
        found = Service("emulator", emulator.api_key, emulator.base_url, 0.2)
        extra = {"base_url": found.base_url}
    else:
        key = os.environ.get(KEY_ENV)
        if not key:
            pytest.skip(f"set {KEY_ENV} (and {REGION_ENV}) to run the example DAGs against DashScope")
        region = os.environ.get(REGION_ENV, DEFAULT_REGION)
        if region not in REGION_BASE_URLS:
            pytest.fail(f"{REGION_ENV}={region!r}: choose one of {', '.join(REGION_BASE_URLS)}")
        found = Service("dashscope", key, REGION_BASE_URLS[region], 5.0)
        extra = {"region": region}
    conn = {"conn_type": "dashscope", "password": found.api_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("DASHSCOPE_EXAMPLE_POLL_INTERVAL", str(found.poll_interval))
    return found


@pytest.fixture
def service_client(service: Service) -> Iterator[DashScopeClient]:
    """A client of the same service, to check and clean up what a run left there."""
    with DashScopeClient(api_key=service.api_key, base_url=service.base_url) as client:
        yield client
