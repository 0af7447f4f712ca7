"""Client-test helpers other test directories share: the shared-client registry, a batch run to its end."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_provider_dashscope_batch.client import loop_clients
from airflow_provider_dashscope_batch.client.types import Batch


def active_shared_clients() -> int:
    """Number of shared clients open in the running event loop (a test's view of the registry)."""
    return len(loop_clients._registry.get(asyncio.get_running_loop(), {}))


def finished(client: Any, emulator: Any, batch: Batch) -> Batch:
    """Advance the emulator's clock until ``batch`` is terminal; return it as last read."""
    for _ in range(50):
        batch = client.retrieve_batch(batch.id)
        if batch.status.is_terminal:
            return batch
        emulator.advance(5)
    raise AssertionError(f"batch {batch.id} stuck in {batch.status}")
