"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The ``dashscope`` connection form is declared here (``conn-fields`` + ``ui-field-behaviour``), which is
all Airflow >= 3.2 reads; :class:`~airflow_provider_dashscope_batch.hooks.dashscope.DashScopeBatchHook`
derives the Python widgets of Airflow 3.0/3.1 from the same :data:`CONN_FIELDS`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dashscope_batch import __version__
from airflow_provider_dashscope_batch.client._base import REGION_BASE_URLS

CUSTOM_REGION = "custom"

#: Extra fields of the ``dashscope`` connection, as ProvidersManager's ``conn-fields`` JSON schema.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": {
        "label": "Region",
        "description": "cn-beijing (Beijing) or ap-southeast-1 (Singapore); API keys are per region. "
        "Choose 'custom' and set Base URL for other endpoints.",
        "schema": {
            "type": ["string", "null"],
            "enum": [*REGION_BASE_URLS, CUSTOM_REGION],
            "default": "cn-beijing",
        },
    },
    "base_url": {
        "label": "Base URL",
        "description": "Overrides the region, e.g. a gateway, the local emulator or a new region "
        "(…/compatible-mode/v1).",
        "schema": {"type": ["string", "null"]},
    },
    "workspace_id": {
        "label": "Workspace ID",
        "description": "Optional Model Studio workspace, sent as the X-DashScope-WorkSpace header.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Per-request timeout.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 60},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 429 / 5xx / connection errors, with exponential backoff.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 5},
    },
}

#: Host, schema, port and login mean nothing here (the region / base URL say where to go, the key is
#: the whole credential), so they are hidden; the password field is relabelled as the API key.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "port", "login"],
    "relabeling": {"password": "API Key"},
    "placeholders": {
        "password": "sk-...",
        "base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1",
        "workspace_id": "llm-...",
    },
}

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
            {"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.operators.batch"]}
        ],
        "sensors": [{"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.sensors.batch"]}],
        "triggers": [
            {"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.triggers.batch"]}
        ],
        "hooks": [{"integration-name": "DashScope Batch", "python-modules": [f"{_MODULE}.hooks.dashscope"]}],
        "transfers": [
            {
                "source-integration-name": "DashScope Batch",
                "target-integration-name": "Common IO",
                "python-module": f"{_MODULE}.transfers.results_to_object_storage",
            }
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
