"""The former home of :func:`~.loop_clients.shared_async_client`, kept importable.

Earlier releases documented this module in the API reference, so triggers written outside this package
may import from it; the code lives in :mod:`.loop_clients`.
"""

from __future__ import annotations

from airflow_provider_dashscope_batch.client.loop_clients import DEFAULT_MAX_IN_FLIGHT, shared_async_client

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "shared_async_client"]
