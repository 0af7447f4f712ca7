"""
The Airflow plugin that mounts the finish-event receiver on the api-server.

Registered through the ``airflow.plugins`` entry point, so every api-server with this provider
installed serves ``POST /dashscope-batch/events/{conn_id}/{token}`` (Airflow mounts plugin FastAPI apps
from 3.0 on; the feature is documented from 3.1). Where plugins cannot be served, run
:func:`~airflow_provider_dashscope_batch.events.receiver.create_app` with any ASGI server on a host with
the Airflow configuration and metadata database (see the "Completion events" docs page).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_dashscope_batch.events.receiver import create_app
from airflow_provider_dashscope_batch.events.tokens import ROUTE_PREFIX

__all__ = ["DashScopeBatchEventsPlugin"]


class DashScopeBatchEventsPlugin(AirflowPlugin):
    """Mounts the receiver of DashScope finish callbacks and EventBridge events."""

    name = "dashscope_batch_events"
    fastapi_apps = [  # noqa: RUF012 (AirflowPlugin's declared attribute)
        {"app": create_app(), "url_prefix": ROUTE_PREFIX, "name": "DashScope Batch finish events"}
    ]
