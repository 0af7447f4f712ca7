"""
The ``dashscope`` connection form, declared once.

Airflow >= 3.2 reads these declarations from the provider info (``conn-fields`` and
``ui-field-behaviour``); Airflow 3.0/3.1 ask the hook, which derives its widgets from the same
declarations. Only :mod:`~airflow_provider_dashscope_batch.regions` is imported, so provider discovery
stays cheap.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dashscope_batch.regions import (
    DEFAULT_BASE_URL,
    DEFAULT_REGION,
    REGION_BASE_URLS,
    WORKSPACE_HEADER,
)

#: The region choice that means "use the Base URL field".
CUSTOM_REGION = "custom"

#: Extra fields of the connection, as ProvidersManager's ``conn-fields`` JSON schema. The defaults of
#: ``timeout`` and ``max_retries`` are the client's own (a test pins that).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region": {
        "label": "Region",
        "description": "cn-beijing (Beijing) or ap-southeast-1 (Singapore); API keys are per region. "
        f"Choose '{CUSTOM_REGION}' and set Base URL for other endpoints.",
        "schema": {
            "type": ["string", "null"],
            "enum": [*REGION_BASE_URLS, CUSTOM_REGION],
            "default": DEFAULT_REGION,
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
        "description": f"Optional Model Studio workspace, sent as the {WORKSPACE_HEADER} header; in "
        "ap-southeast-1 the workspace's own host is used ({id}.ap-southeast-1.maas.aliyuncs.com).",
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
    "callback_base_url": {
        "label": "Airflow public URL (finish callbacks)",
        "description": "Base URL at which DashScope reaches this Airflow's api-server, for "
        'finish_callback="airflow" (e.g. https://airflow.example.com).',
        "schema": {"type": ["string", "null"]},
    },
}

#: Host, schema, port and login mean nothing here (the region / base URL say where to go, the key is
#: the whole credential), so they are hidden; the password field is relabelled as the API key.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "port", "login"],
    "relabeling": {"password": "API Key"},
    "placeholders": {
        "password": "sk-...",
        "base_url": DEFAULT_BASE_URL,
        "workspace_id": "llm-...",
    },
}
