"""Which console page a connection's tasks link to (the link itself is tested on a real api-server in
tests/browser/test_extra_links_browser.py)."""

from __future__ import annotations

import pytest

from airflow_provider_dashscope_batch.operators.links import CONSOLE_BATCH_PAGES, console_region
from airflow_provider_dashscope_batch.regions import REGION_BASE_URLS


def test_every_region_has_a_console_page():
    assert CONSOLE_BATCH_PAGES.keys() == REGION_BASE_URLS.keys()


@pytest.mark.parametrize(
    ("extra", "region"),
    [
        ({}, "cn-beijing"),
        ({"region": "ap-southeast-1"}, "ap-southeast-1"),
        ({"extra__dashscope__region": "ap-southeast-1"}, "ap-southeast-1"),
        # a gateway or proxy in front of the service: the key's region still names the console
        ({"region": "ap-southeast-1", "base_url": "http://gateway.internal/v1"}, "ap-southeast-1"),
        ({"base_url": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/"}, "ap-southeast-1"),
        ({"region": "custom", "base_url": "http://gateway.internal/v1"}, None),
        ({"base_url": "http://127.0.0.1:8000/compatible-mode/v1"}, None),
    ],
)
def test_console_region(extra, region):
    assert console_region(extra) == region
