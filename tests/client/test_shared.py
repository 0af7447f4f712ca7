"""``client.shared``, the former name of ``client.loop_clients``, still imports."""

from __future__ import annotations


def test_the_former_shared_module_still_imports():
    """``client.shared`` was documented in earlier releases; triggers outside the package may use it."""
    from airflow_provider_dashscope_batch.client import loop_clients, shared

    assert shared.shared_async_client is loop_clients.shared_async_client
    assert shared.DEFAULT_MAX_IN_FLIGHT == loop_clients.DEFAULT_MAX_IN_FLIGHT
