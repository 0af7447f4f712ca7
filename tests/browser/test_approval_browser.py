"""Approve before paying, as a person meets it: Airflow's "Required actions" in real Chromium (Airflow 3.1+).

A DAG runs with ``airflow dags test`` on the api-server's metadata DB against the emulator: a create task
and a sharded task whose estimates exceed ``approve_above`` wait for a decision. The browser approves the
create task's job in the task's Required actions tab and rejects the sharded one's; the approved task
creates its batch, the rejected one fails with nothing uploaded or created.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="human-in-the-loop approval needs Airflow 3.1+"),
]

DAG_ID = "dashscope_approval"
DAG_FILE = textwrap.dedent(
    f"""
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
    from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
    from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator

    REQUESTS = [
        {{"custom_id": f"r{{i}}", "method": "POST", "url": "/v1/chat/completions",
          "body": {{"model": "qwen-plus", "max_tokens": 1000,
                   "messages": [{{"role": "user", "content": "Summarise the report " * 20}}]}}}}
        for i in range(50)
    ]

    with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        upload = DashScopeUploadFileOperator(task_id="upload", requests=REQUESTS)
        DashScopeCreateBatchOperator(
            task_id="create", input_file_id=upload.output, wait_for_completion=False, approve_above=0.01
        )
        DashScopeShardedBatchOperator(task_id="sharded", requests=REQUESTS, approve_above="0.01")
    """
)


def _api(server: Any) -> httpx.Client:
    token = httpx.get(f"{server.url}/auth/token", timeout=30).json()["access_token"]
    return httpx.Client(
        base_url=f"{server.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _states(server: Any) -> dict[str, str]:
    with _api(server) as api:
        runs = api.get(f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        if not runs:
            return {}
        tis = api.get(f"/dags/{DAG_ID}/dagRuns/{runs[0]['dag_run_id']}/taskInstances").json()
    return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}


def _wait_for(
    server: Any, wanted: dict[str, set[str]], process: subprocess.Popen[bytes], log: Path, seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = _states(server)
        if all(states.get(task) in allowed for task, allowed in wanted.items()):
            return
        if process.poll() is not None and any(states.get(t) not in a for t, a in wanted.items()):
            raise AssertionError(f"airflow dags test ended with {states}:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"tasks did not reach {wanted}: {_states(server)}\n{log.read_text()[-4000:]}")


def _decide(page: Any, server: Any, run_id: str, task_id: str, choice: str) -> None:
    page.goto(f"{server.url}/dags/{DAG_ID}/runs/{run_id}/tasks/{task_id}/required_actions")
    page.get_by_text("Approve a DashScope batch job").first.wait_for()
    page.get_by_test_id(f"hitl-option-{choice}").click()
    page.wait_for_selector(f'[data-testid="hitl-option-{choice}"][disabled]')  # the answer is recorded


def test_a_person_approves_one_job_and_rejects_another(
    airflow_api_server, dashscope_emulator, browser_page, screenshots_dir
):
    server = airflow_api_server
    (server.home / "dags" / f"{DAG_ID}.py").write_text(DAG_FILE)
    conn = {
        "conn_type": "dashscope",
        "password": dashscope_emulator.api_key,
        "extra": {"region": "cn-beijing", "base_url": dashscope_emulator.base_url},
    }
    env = {**server.env, "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps(conn)}
    reserialize = subprocess.run(
        [server.airflow, "dags", "reserialize"], env=env, capture_output=True, text=True, check=False
    )
    assert reserialize.returncode == 0, reserialize.stderr[-3000:]
    output = server.home / "dags-test.log"
    process = subprocess.Popen(
        [server.airflow, "dags", "test", DAG_ID],
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        parked = {"awaiting_input", "deferred"}  # Airflow 3.3+ parks the task; 3.1 and 3.2 defer it
        _wait_for(server, {"create": parked, "sharded": parked}, process, output, 240)
        assert dashscope_emulator.request_counts().get("POST /batches", 0) == 0
        uploads_before = dashscope_emulator.request_counts().get("POST /files", 0)  # the upload task's
        with _api(server) as api:
            run_id = api.get(f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"][0]["dag_run_id"]
        page = browser_page
        page.goto(f"{server.url}/dags/{DAG_ID}/runs/{run_id}/tasks/create/required_actions")
        page.get_by_text("Approve a DashScope batch job").first.wait_for()
        page.wait_for_timeout(500)
        if screenshots_dir is not None:
            page.screenshot(path=str(screenshots_dir / "approval-step.png"), full_page=True)
        _decide(page, server, run_id, "create", "Approve")
        _decide(page, server, run_id, "sharded", "Reject")
        _wait_for(server, {"create": {"success"}, "sharded": {"failed"}}, process, output, 240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    counts = dashscope_emulator.request_counts()
    assert counts.get("POST /batches") == 1  # the approved job only
    assert counts.get("POST /files", 0) == uploads_before  # the rejected sharded job uploaded nothing
    log = output.read_text()  # ``dags test`` prints the task logs
    assert "Approved by" in log
    assert "The job was rejected" in log
    assert "nothing was uploaded or created" in log
