"""The declared ``dashscope`` connection form agrees with the client and the hook it describes."""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_dashscope_batch.client import REGION_BASE_URLS, DashScopeClient
from airflow_provider_dashscope_batch.hooks.connection_form import CONN_FIELDS, CUSTOM_REGION
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook


@pytest.mark.parametrize("field", ["timeout", "max_retries"])
def test_form_defaults_are_the_clients(field):
    """The form shows the value the client uses when the field is left empty."""
    client_default = inspect.signature(DashScopeClient).parameters[field].default
    assert CONN_FIELDS[field]["schema"]["default"] == client_default
    assert getattr(DashScopeBatchHook().client_settings("sk-x", {}), field) == client_default


def test_every_offered_region_is_accepted():
    assert CONN_FIELDS["region"]["schema"]["enum"] == [*REGION_BASE_URLS, CUSTOM_REGION]
    hook = DashScopeBatchHook()
    for region in REGION_BASE_URLS:
        assert hook.client_settings("sk-x", {"region": region}).base_url == REGION_BASE_URLS[region]
    custom = {"region": CUSTOM_REGION, "base_url": "http://gw.local/v1"}
    assert hook.client_settings("sk-x", custom).base_url == "http://gw.local/v1"


def test_legacy_field_behaviour_is_the_declared_one():
    """Airflow < 3.2 asks the hook; it answers with the declaration in its older key names."""
    assert DashScopeBatchHook.get_ui_field_behaviour() == {
        "hidden_fields": ["host", "schema", "port", "login"],
        "relabeling": {"password": "API Key"},
        "placeholders": {
            "password": "sk-...",
            "base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "workspace_id": "llm-...",
        },
    }
