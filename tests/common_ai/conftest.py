"""
Fixtures for the common.ai adapter tests: a connection to the emulator, a fast trigger clock, a DB.

common.ai 1.0 needs pydantic >= 2.12 (through pydantic-ai), which the Airflow 3.0 leg's pinned web
stack rules out, so the test modules run where the package is installed (the Airflow 3.3 leg) and
skip themselves elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

CONN_ID = "qwen"


@pytest.fixture
def qwen_conn(dashscope_emulator, monkeypatch):
    """
    ``qwen``: a connection of the given type whose host is the emulator's compatible-mode URL.

    Call it again to switch type or host (``qwen_conn(conn_type="dashscope", host=...)``).
    """

    def configure(conn_type: str = "pydanticai", host: str | None = None) -> None:
        conn = {
            "conn_type": conn_type,
            "host": dashscope_emulator.base_url if host is None else host,
            "password": dashscope_emulator.api_key,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))

    configure()
    return configure


@pytest.fixture
def fast_trigger_clock(monkeypatch):
    """
    Shorten the poll sleep of common.ai's trigger (its ``poll_interval`` is at least 30 s).

    Only the trigger module's view of ``asyncio`` is replaced, so nothing else in the process (the
    emulator's server loop included) sleeps less.
    """
    from airflow.providers.common.ai.triggers import llm_batch

    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(llm_batch, "asyncio", SimpleNamespace(sleep=sleep, to_thread=asyncio.to_thread))


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's throw-away SQLite metadata DB (tests/conftest.py points Airflow at it)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=240
    )


@pytest.fixture
def adapter(dashscope_emulator):
    """The adapter over a :class:`RecordingClient` of the emulator."""
    from adapter_helpers import RecordingClient

    from airflow_provider_dashscope_batch.common_ai.adapter import DashScopeBatchAdapter

    client = RecordingClient(api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url)
    adapter = DashScopeBatchAdapter(client=client)
    yield adapter
    adapter.close()
