"""
Where the DashScope Batch API lives: one compatible-mode base URL per region, and the workspace header.

The client, the hook and the connection form all read these. The module imports nothing, because
Airflow's provider discovery reaches it through ``get_provider_info`` in every Airflow process.
"""

from __future__ import annotations

#: Compatible-mode base URL of each region; an API key belongs to exactly one region.
REGION_BASE_URLS: dict[str, str] = {
    "cn-beijing": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "ap-southeast-1": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
DEFAULT_REGION = "cn-beijing"
DEFAULT_BASE_URL = REGION_BASE_URLS[DEFAULT_REGION]
#: Header naming a Model Studio workspace (sent when the connection sets one).
WORKSPACE_HEADER = "X-DashScope-WorkSpace"
