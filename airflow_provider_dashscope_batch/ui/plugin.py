"""
The Airflow plugin that adds the "DashScope batches" page to Airflow's navigation (Airflow 3.1+).

Registered through the ``airflow.plugins`` entry point. On Airflow 3.1+ it mounts the page's FastAPI app
(:func:`~airflow_provider_dashscope_batch.ui.app.create_app`) at ``/dashscope-batches`` and adds an
external view to the Browse menu, which Airflow's UI shows in an iframe. On Airflow 3.0, which has no
external views, the plugin adds nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

__all__ = ["DashScopeBatchUIPlugin"]

#: The page's route inside Airflow's UI (``/plugin/<url_route>``).
URL_ROUTE = "dashscope-batches"


def _apps() -> list[dict[str, Any]]:
    if not AIRFLOW_V_3_1_PLUS:
        return []
    from airflow_provider_dashscope_batch.ui.app import ROUTE_PREFIX, create_app

    return [{"app": create_app(), "url_prefix": ROUTE_PREFIX, "name": "DashScope batches"}]


def _views() -> list[dict[str, Any]]:
    if not AIRFLOW_V_3_1_PLUS:
        return []
    from airflow_provider_dashscope_batch.ui.app import ROUTE_PREFIX

    return [
        {
            "name": "DashScope batches",
            "href": f"{ROUTE_PREFIX}/",
            "url_route": URL_ROUTE,
            "destination": "nav",
            "category": "browse",
        }
    ]


class DashScopeBatchUIPlugin(AirflowPlugin):
    """The "DashScope batches" page: the service's batch list, a batch's detail, and cancel."""

    name = "dashscope_batch_ui"
    fastapi_apps = _apps()
    external_views = _views()
