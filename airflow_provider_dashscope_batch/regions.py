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
#: A workspace's own host where the region has one: the newest batch guide (zh) recommends
#: ``https://{WorkspaceId}.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1`` for Singapore; the shared
#: host of :data:`REGION_BASE_URLS` keeps working.
WORKSPACE_BASE_URLS: dict[str, str] = {
    "ap-southeast-1": "https://{workspace}.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1",
}


def region_base_url(region: str, workspace: str | None = None) -> str:
    """
    The base URL of ``region``: the workspace's own host where the region has one and a workspace is
    given, else the region's shared host.

    :raises ValueError: for a workspace id that cannot be a host name label, or an unknown region.
    """
    template = WORKSPACE_BASE_URLS.get(region)
    if workspace and template:
        label = workspace.strip()
        if not (0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()):
            raise ValueError(f"workspace id {workspace!r} is not a host name label (letters, digits and -)")
        return template.format(workspace=label)
    return REGION_BASE_URLS[region]
