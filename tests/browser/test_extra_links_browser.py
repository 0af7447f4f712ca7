"""The console extra link, as a user meets it: Airflow's extra-link REST API and a click in the task view.

A DAG with the create, the sharded and the cancel operator runs with ``airflow dags test`` against the
emulator, on the api-server's own metadata DB, through a connection that names its region; the
api-server then serves each task's link from XCom, and the browser opens it from the task instance page.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

import httpx
import pytest

from airflow_provider_dashscope_batch.operators.links import CONSOLE_BATCH_PAGES

pytestmark = pytest.mark.browser

DAG_ID = "dashscope_console_links"
LINK_NAME = "Model Studio console"
TASKS = ("create", "sharded", "cancel")
DAG_FILE = textwrap.dedent(
    f"""
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_dashscope_batch.operators.batch import (
        DashScopeCancelBatchOperator,
        DashScopeCreateBatchOperator,
    )
    from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
    from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator

    REQUESTS = [
        {{"custom_id": f"r{{i}}", "method": "POST", "url": "/v1/chat/ds-test",
          "body": {{"model": "batch-test-model", "messages": [{{"role": "user", "content": "hi"}}]}}}}
        for i in range(3)
    ]

    with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        upload = DashScopeUploadFileOperator(task_id="upload", requests=REQUESTS, endpoint="/v1/chat/ds-test")
        create = DashScopeCreateBatchOperator(
            task_id="create", input_file_id=upload.output, endpoint="/v1/chat/ds-test", poll_interval=0.2
        )
        sharded = DashScopeShardedBatchOperator(
            task_id="sharded", requests=REQUESTS, endpoint="/v1/chat/ds-test", poll_interval=0.2
        )
        cancel = DashScopeCancelBatchOperator(
            task_id="cancel", batch_id="{{{{ ti.xcom_pull(task_ids='create', key='batch_id') }}}}"
        )
        create >> [sharded, cancel]
    """
)


def _run_dag(server: Any, emulator: Any, region: str) -> str:
    """Run the DAG once with ``airflow dags test`` on the api-server's DB; returns the run id."""
    (server.home / "dags" / f"{DAG_ID}.py").write_text(DAG_FILE)
    conn = {
        "conn_type": "dashscope",
        "password": emulator.api_key,
        "extra": {"region": region, "base_url": emulator.base_url},
    }
    env = {**server.env, "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps(conn)}
    for args in (["dags", "reserialize"], ["dags", "test", DAG_ID]):
        done = subprocess.run(
            [server.airflow, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        output = done.stdout[-3000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{output}"
    client = _api(server)
    runs = client.get(f"/dags/{DAG_ID}/dagRuns", params={"order_by": "-run_after"}).json()["dag_runs"]
    assert runs[0]["state"] == "success", runs[0]
    return runs[0]["dag_run_id"]


def _api(server: Any) -> httpx.Client:
    token = httpx.get(f"{server.url}/auth/token", timeout=30).json()["access_token"]
    return httpx.Client(
        base_url=f"{server.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _links(server: Any, run_id: str, task_id: str) -> dict[str, str | None]:
    response = _api(server).get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/links")
    response.raise_for_status()
    body = response.json()
    return body.get("extra_links", body)  # 3.3 wraps the links; 3.0 answers the name -> URL map itself


@pytest.mark.parametrize("region", ["cn-beijing", "ap-southeast-1"])
def test_each_operator_links_to_its_regions_console(airflow_api_server, dashscope_emulator, region):
    run_id = _run_dag(airflow_api_server, dashscope_emulator, region)

    for task_id in TASKS:
        expected = {LINK_NAME: CONSOLE_BATCH_PAGES[region]}
        assert _links(airflow_api_server, run_id, task_id) == expected, task_id
    assert _links(airflow_api_server, run_id, "upload") == {}


def test_clicking_the_link_opens_the_console(airflow_api_server, dashscope_emulator, browser_page):
    run_id = _run_dag(airflow_api_server, dashscope_emulator, "ap-southeast-1")
    page = browser_page
    # No network here: the console answers from the browser's own route, which records the visit.
    opened: list[str] = []

    def console(route: Any) -> None:
        opened.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>Model Studio</title>")

    page.context.route("https://modelstudio.console.alibabacloud.com/**", console)
    page.goto(f"{airflow_api_server.url}/dags/{DAG_ID}/runs/{run_id}/tasks/create")
    page.get_by_text("Details", exact=True).click()  # the task instance's Details tab lists its extra links
    link = page.get_by_role("link", name=LINK_NAME)
    link.wait_for()
    with page.context.expect_page() as new_tab:
        link.click()
    new_tab.value.wait_for_load_state()

    assert new_tab.value.url == CONSOLE_BATCH_PAGES["ap-southeast-1"]
    assert new_tab.value.title() == "Model Studio"
    assert len(opened) == 1  # the page was requested (a request carries no ``#fragment``)
