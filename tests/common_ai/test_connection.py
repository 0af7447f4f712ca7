"""What a common.ai connection's host names: base URL and workspace (cost settings: test_adapter_cost.py)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.batch",
    reason="apache-airflow-providers-common-ai is not installed; it needs pydantic >= 2.12, and the "
    "Airflow 3.0 leg pins pydantic 2.11.7",
)

from airflow_provider_dashscope_batch.common_ai.connection import resolve_host
from airflow_provider_dashscope_batch.regions import DEFAULT_BASE_URL, REGION_BASE_URLS


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, (DEFAULT_BASE_URL, None)),
        ("", (DEFAULT_BASE_URL, None)),
        ("ap-southeast-1", (REGION_BASE_URLS["ap-southeast-1"], None)),
        (
            "ap-southeast-1?workspace=ws-1",
            ("https://ws-1.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1", "ws-1"),
        ),
        ("cn-beijing?workspace=ws-1", (REGION_BASE_URLS["cn-beijing"], "ws-1")),
        (REGION_BASE_URLS["ap-southeast-1"] + "/", (REGION_BASE_URLS["ap-southeast-1"], None)),
        ("https://dashscope-intl.aliyuncs.com", (REGION_BASE_URLS["ap-southeast-1"], None)),
        (
            "http://127.0.0.1:8000/compatible-mode/v1?workspace=ws-2",
            ("http://127.0.0.1:8000/compatible-mode/v1", "ws-2"),
        ),
    ],
)
def test_host_names_region_base_url_and_workspace(host, expected):
    assert resolve_host(host) == expected


@pytest.mark.parametrize("host", ["dashscope.aliyuncs.com", "mars-1", "https://x.example?region=1"])
def test_a_host_that_names_no_endpoint_is_refused(host):
    with pytest.raises(ValueError, match="host"):
        resolve_host(host)
