"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Airflow imports this module in every process that discovers providers, so it imports only plain
declarations: the connection form comes from
:mod:`~airflow_provider_dashscope_batch.hooks.connection_form`, not from the hook or the client.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dashscope_batch import __version__
from airflow_provider_dashscope_batch.hooks.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

_MODULE = "airflow_provider_dashscope_batch"


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata for Airflow's ProvidersManager."""
    return {
        "package-name": "airflow-provider-dashscope-batch",
        "name": "DashScope Batch",
        "description": "`Alibaba Cloud Model Studio (DashScope) <https://www.alibabacloud.com/product/modelstudio>`__"
        " OpenAI-compatible Batch API: upload, create, wait (deferrable), cancel and results transfer.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "DashScope Batch",
                "external-doc-url": "https://www.alibabacloud.com/help/en/model-studio/batch-interfaces-compatible-with-openai",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "DashScope Batch",
                "python-modules": [f"{_MODULE}.operators.{name}" for name in ("upload", "batch", "shards")],
            }
        ],
        "sensors": [{"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.sensors.batch"]}],
        "triggers": [
            {
                "integration-name": "DashScope Batch",
                "python-modules": [
                    f"{_MODULE}.triggers.batch",
                    f"{_MODULE}.triggers.sharded",
                    f"{_MODULE}.events.watcher",
                ],
            }
        ],
        "hooks": [{"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.hooks.dashscope"]}],
        "transfers": [
            {
                "source-integration-name": "DashScope Batch",
                "target-integration-name": "Common IO",
                "python-module": f"{_MODULE}.transfers.results_to_object_storage",
            }
        ],
        "extra-links": [
            f"{_MODULE}.operators.links.DashScopeBatchConsoleLink",
            f"{_MODULE}.operators.links.DashScopeBatchesPageLink",
        ],
        "filesystems": [f"{_MODULE}.fs.oss"],
        "connection-types": [
            {
                "connection-type": "dashscope",
                "hook-class-name": f"{_MODULE}.hooks.dashscope.DashScopeBatchHook",
                "hook-name": "DashScope Batch",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
