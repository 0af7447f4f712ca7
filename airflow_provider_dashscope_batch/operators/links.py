"""
Extra links from a task to the Model Studio console, in the style of the official providers' links.

Like google's ``BaseGoogleLink`` and the alibaba provider's MaxCompute link, the task stores what the
link needs in XCom while it runs (here: the region of its connection) and the link is a format of that
value, so the api-server never reads the connection. Airflow 3 computes the link when the task's
process ends (also when it defers) and serves it from XCom.

The console documents a Batch inference page per region, not a page per batch: the link opens the
region's page, whose search box takes the batch id (the task logs it and pushes it to XCom). The page
addresses are those the service's batch-inference guide links to: China (Beijing) in
https://help.aliyun.com/zh/model-studio/batch-inference ("批量推理" page), Singapore in
https://www.alibabacloud.com/help/en/model-studio/batch-inference ("Batch inference" page).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_dashscope_batch.regions import DEFAULT_REGION, REGION_BASE_URLS

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey

    from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

__all__ = ["CONSOLE_BATCH_PAGES", "DashScopeBatchConsoleLink", "console_region"]

log = logging.getLogger(__name__)

#: The Model Studio console's Batch inference page of each region.
CONSOLE_BATCH_PAGES: dict[str, str] = {
    "cn-beijing": "https://bailian.console.aliyun.com/model/batch",
    "ap-southeast-1": "https://modelstudio.console.alibabacloud.com/?tab=dashboard#/model-batch",
}


def console_region(extra: dict[str, Any]) -> str | None:
    """
    The region whose console shows a connection's batches, from the connection's extra (no I/O).

    An explicit ``region`` wins, so a connection through a proxy or gateway (``base_url``) still links to
    the console of its key's region; else the region whose endpoint ``base_url`` is; else, with neither
    set, the default region. ``custom`` with an unknown endpoint has no console: None.
    """

    def get(name: str) -> str:
        return str(extra.get(name) or extra.get(f"extra__dashscope__{name}") or "")

    region, base_url = get("region"), get("base_url").rstrip("/")
    if region in CONSOLE_BATCH_PAGES:
        return region
    if base_url:
        return next((r for r, url in REGION_BASE_URLS.items() if url == base_url), None)
    return None if region else DEFAULT_REGION


class DashScopeBatchConsoleLink(BaseOperatorLink):
    """The Batch inference page of the Model Studio console in the region of the task's connection."""

    name = "Model Studio console"
    key: ClassVar[str] = "dashscope_console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The console page stored by :meth:`persist` for this task instance, or ``""`` (no button)."""
        conf = XCom.get_value(key=self.key, ti_key=ti_key)
        page = CONSOLE_BATCH_PAGES.get(conf.get("region") or "") if isinstance(conf, dict) else None
        return page or ""

    @classmethod
    def persist(cls, context: Context, operator: BaseOperator, hook: DashScopeBatchHook) -> None:
        """Store the region of ``hook``'s connection for the link; never fails the task."""
        if not operator.do_xcom_push:
            return
        try:
            region = console_region(hook.get_connection(hook.dashscope_conn_id).extra_dejson)
        except Exception as exc:  # a link is a convenience; the task's own calls report a bad connection
            log.debug("No console link: %s", exc)
            region = None
        # stored even without a region, so the link finds its XCom (no "not found" error in the log)
        context["ti"].xcom_push(key=cls.key, value={"region": region})
