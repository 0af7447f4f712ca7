"""
Finish events: DashScope's finish callback and EventBridge end deferred waits within seconds.

* :mod:`~.tokens` -- the per-batch callback token and the receiver's URLs.
* :mod:`~.receiver` -- the FastAPI app on the api-server that verifies and records a finish.
* :mod:`~.mailbox` -- the per-connection Variable through which the api-server wakes the triggerers.
* :mod:`~.wake` -- the triggerer side: one mailbox read per round per connection wakes its waits.
* :mod:`~.plugin` -- the Airflow plugin that mounts the receiver (Airflow 3.1+).

See the "Completion events" page of the docs.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dashscope_batch.events.mailbox import asset_name, asset_uri

__all__ = ["AIRFLOW_RECEIVER", "asset_name", "asset_uri", "finished_batches_asset"]

#: ``finish_callback`` value that points the batch's callback at this Airflow's receiver.
AIRFLOW_RECEIVER = "airflow"


def finished_batches_asset(conn_id: str = "dashscope_default") -> Any:
    """The Asset whose events are connection ``conn_id``'s verified batch finishes (schedule DAGs on it)."""
    from airflow.providers.common.compat.sdk import Asset

    return Asset(name=asset_name(conn_id), uri=asset_uri(conn_id))
