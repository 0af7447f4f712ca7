"""The "DashScope batches" page as users meet it: a real api-server, real Chromium, the emulator's batches.

The api-server runs the provider's plugin with Airflow's Simple auth manager extended by per-DAG rights
(``per_dag_auth_manager.py``): ``admin`` (admin), ``editor`` (user: edits DAGs), ``viewer`` (viewer) and
``outsider`` (user, but no access to ``secret_dag``). Each signs in through Airflow's own token endpoint
and the browser carries Airflow's cookie, as after a login. The batches are created in the emulator with
the metadata the operators set; those of ``costed_job`` by a real sharded operator and results transfer,
run with ``airflow dags test`` on the api-server's DB, so the page shows the actual costs it recorded.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_dashscope_batch.client import DashScopeClient
from airflow_provider_dashscope_batch.client.identity import lineage, with_generation
from airflow_provider_dashscope_batch.cost.label import ESTIMATE_METADATA_KEY
from airflow_provider_dashscope_batch.sharding.creator import creator_metadata, creator_of
from airflow_provider_dashscope_batch.sharding.job import job_token
from tests.browser.api_server import AirflowApiServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="the page needs Airflow 3.1+ (external views)"),
]

PASSWORDS = {"admin": "admin-pw", "editor": "editor-pw", "viewer": "viewer-pw", "outsider": "outsider-pw"}
ROLES = {"admin": "admin", "editor": "user", "viewer": "viewer", "outsider": "user"}
PAGE = "/dashscope-batches/"
COSTED = ("costed1", "costed2")
REQUESTS = 10
#: What the sharded job's batches carry: the whole job's estimate.
JOB_ESTIMATE = {"airflow_estimated_cost": "3.5000 CNY ceiling"}
DAGS = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator

    for dag_id in ("reports", "secret_dag"):
        with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
            EmptyOperator(task_id="create")
    """
)
COSTED_DAG = "costed_job"
#: Two shards of two priced requests each, then their results transferred: the actual costs recorded.
COSTED_DAGS = textwrap.dedent(
    f"""
    import os
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_dashscope_batch.operators.shards import DashScopeShardedBatchOperator
    from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
        DashScopeBatchResultsToObjectStorageOperator,
    )

    REQUESTS = [
        {{"custom_id": f"c{{i}}", "method": "POST", "url": "/v1/chat/completions",
          "body": {{"model": "qwen-plus", "messages": [{{"role": "user", "content": "hello"}}]}}}}
        for i in range(4)
    ]

    with DAG("{COSTED_DAG}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        shards = DashScopeShardedBatchOperator(
            task_id="sharded", requests=REQUESTS, max_requests_per_shard=2, poll_interval=0.2
        )
        DashScopeBatchResultsToObjectStorageOperator(
            task_id="transfer",
            batch_ids="{{{{ ti.xcom_pull(task_ids='sharded', key='batch_ids') }}}}",
            destination=os.environ["COSTED_RESULTS"],
            result_set="job",
        ).set_upstream(shards)
    """
)


class _Ti:
    """The identity of a task instance, as the operators read it from the context."""

    def __init__(self, dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = dag_id, task_id, run_id, map_index


def _input_file(client: DashScopeClient, tmp: Path) -> str:
    path = tmp / "requests.jsonl"
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/ds-test",
            "body": {"model": "batch-test-model", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(REQUESTS)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return client.upload_file(path).id


def _create_batches(emulator: Any, tmp: Path) -> dict[str, str]:
    """
    The page's batches: four of ``reports`` (two rounds of a task's job, two shards of a sharded job,
    each with the estimate the operators write), one of ``secret_dag``, two of no DAG.
    """
    client = DashScopeClient(api_key=emulator.api_key, base_url=emulator.base_url)
    file_id = _input_file(client, tmp)
    create = _Ti("reports", "create", "manual__2026-12-07")
    secret = _Ti("secret_dag", "create", "manual__2026-12-07")
    shard = _Ti("reports", "sharded", "manual__2026-12-07")
    token = job_token(shard.dag_id, shard.task_id, shard.run_id, -1)

    def key(ti: _Ti, generation: int = 1) -> str:
        return with_generation(lineage(ti.dag_id, ti.task_id, ti.run_id, "-1"), generation)

    def shard_spec(i: int) -> tuple[dict[str, str], str]:
        metadata = {"ds_name": f"{token} translate {i}/2", **creator_metadata(shard), **JOB_ESTIMATE}
        return metadata, with_generation(lineage(token, str(i - 1), str(i) * 64), 1)

    specs = {
        "reports": (
            {
                "ds_name": "daily report",
                **creator_metadata(create),
                ESTIMATE_METADATA_KEY: "1.2000 CNY ceiling",
            },
            key(create),
        ),
        "shard": shard_spec(1),
        "secret": ({"ds_name": "secret job", **creator_metadata(secret)}, key(secret)),
        "adhoc": ({"ds_name": "adhoc notebook run"}, None),
        # claims a DAG its idempotency key does not confirm: shown as a batch of no known DAG
        "forged": ({"ds_name": "forged claim", **creator_metadata(create)}, "airflow-" + "0" * 40 + "-g1"),
        # the job's second round and second shard, newer than the rest: the page brings them together
        "round2": (
            {
                "ds_name": "daily report round 2",
                **creator_metadata(create),
                ESTIMATE_METADATA_KEY: "0.1200 CNY ceiling",
            },
            key(create, 2),
        ),
        "shard2": shard_spec(2),
    }
    ids = {}
    for name, (metadata, idempotency_key) in specs.items():
        batch = client.create_batch(
            input_file_id=file_id,
            endpoint="/v1/chat/ds-test",
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        ids[name] = batch.id
    client.close()
    emulator.advance(1)  # validated; in progress
    emulator.advance(4)  # 4 of 10 requests done at 1 request per emulated second
    return ids


def _costed_batches(emulator: Any) -> dict[str, str]:
    """The costed job's two shards, completed by its run: ``costed1``, ``costed2``."""
    with DashScopeClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        listed = list(client.list_batches(page_size=20))
    shards = {}
    for batch in listed:
        creator = creator_of(batch)
        if creator is not None and creator.dag_id == COSTED_DAG and creator.shard is not None:
            assert batch.status == "completed", batch
            shards[f"costed{creator.shard[0]}"] = batch.id
    assert set(shards) == {"costed1", "costed2"}, listed
    return shards


@pytest.fixture(scope="module")
def page_server(
    tmp_path_factory: pytest.TempPathFactory, dashscope_emulator_session: Any
) -> Iterator[tuple[AirflowApiServer, dict[str, str]]]:
    """The api-server with per-DAG rights, the four users, the connection, and the emulator's batches."""
    emulator = dashscope_emulator_session
    emulator.reset()  # batches finish at once: for the costed job's run
    home = tmp_path_factory.mktemp("airflow-batches-page")
    server = AirflowApiServer(home)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    conn = {"conn_type": "dashscope", "password": emulator.api_key, "extra": {"base_url": emulator.base_url}}
    server.env.update(
        AIRFLOW__CORE__AUTH_MANAGER="per_dag_auth_manager.PerDagAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in ROLES.items()),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW_CONN_DASHSCOPE_DEFAULT=json.dumps(conn),
        PYTHONPATH=str(Path(__file__).parent),
    )
    # the DAGs exist, so their links open and the audit log's entries are readable per DAG
    (home / "dags" / "page_dags.py").write_text(DAGS)
    (home / "dags" / "costed_dags.py").write_text(COSTED_DAGS)
    server.env["COSTED_RESULTS"] = (home / "results").as_uri()
    for args in (["db", "migrate"], ["dags", "reserialize"], ["dags", "test", COSTED_DAG]):
        done = subprocess.run(
            [server.airflow, *args], env=server.env, capture_output=True, text=True, check=False, timeout=300
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    costed = _costed_batches(emulator)
    emulator.configure(time_scale=0, processing_rate=1, validating_seconds=1, cancelling_seconds=1)
    ids = {**_create_batches(emulator, tmp_path_factory.mktemp("batches")), **costed}
    server.start()
    try:
        yield server, ids
    finally:
        server.stop()
        emulator.reset()


def _token(server: AirflowApiServer, user: str) -> str:
    answer = httpx.post(
        f"{server.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["access_token"]


def _http(server: AirflowApiServer, user: str | None) -> httpx.Client:
    cookies = {"_token": _token(server, user)} if user else {}
    return httpx.Client(base_url=server.url, cookies=cookies, timeout=30, follow_redirects=False)


def _signed_in(page: Any, server: AirflowApiServer, user: str) -> Any:
    page.context.add_cookies([{"name": "_token", "value": _token(server, user), "url": server.url}])
    return page


def _shown(page: Any) -> set[str]:
    return set(page.locator("tr[data-batch-id]").evaluate_all("rows => rows.map(r => r.dataset.batchId)"))


def _shot(page: Any, screenshots_dir: Path | None, name: str) -> None:
    if screenshots_dir is not None:
        page.screenshot(path=str(screenshots_dir / name), full_page=True)


def test_no_session_is_401_and_a_bad_token_403(page_server):
    server, ids = page_server
    with _http(server, None) as anonymous:
        assert anonymous.get(PAGE).status_code == 401
        assert (
            anonymous.get(f"/dashscope-batches/batches/dashscope_default/{ids['reports']}").status_code == 401
        )
        assert (
            anonymous.post(
                f"/dashscope-batches/batches/dashscope_default/{ids['reports']}/cancel"
            ).status_code
            == 401
        )
        assert anonymous.get(PAGE, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


def test_the_page_lists_the_batches_with_progress(page_server, browser_page, screenshots_dir):
    server, ids = page_server
    page = _signed_in(browser_page, server, "viewer")
    page.goto(f"{server.url}{PAGE}")
    assert _shown(page) == {ids[n] for n in ("reports", "round2", "shard", "shard2", "secret", *COSTED)}
    row = page.locator(f'tr[data-batch-id="{ids["reports"]}"]')
    assert row.locator(".status").inner_text() == "in_progress"
    assert row.locator(".count").inner_text() == "4 of 10 done"
    assert row.locator('[role="progressbar"]').get_attribute("aria-valuenow") == "4"
    links = row.locator("a[target=_top]")
    assert links.nth(2).get_attribute("href") == "/dags/reports/runs/manual__2026-12-07/tasks/create"
    assert "shard 1 of 2" in page.locator(f'tr[data-batch-id="{ids["shard"]}"]').inner_text()
    assert "2 batch(es) on this page" in page.content()  # the two of no known DAG
    assert page.locator("a.cancel").count() == 0  # a viewer may not cancel
    _shot(page, screenshots_dir, "batches-page.png")


def test_the_page_sits_in_airflows_navigation(page_server, browser_page, screenshots_dir):
    server, ids = page_server
    page = _signed_in(browser_page, server, "admin")
    page.goto(f"{server.url}/plugin/dashscope-batches")
    frame = page.frame_locator("iframe")
    frame.locator(f'tr[data-batch-id="{ids["adhoc"]}"]').wait_for()
    # an admin may edit the connection, so the batches of no known DAG show too
    assert frame.locator("tr[data-batch-id]").count() == 9
    assert "not created by this Airflow" in frame.locator(f'tr[data-batch-id="{ids["forged"]}"]').inner_text()
    page.wait_for_timeout(500)
    _shot(page, screenshots_dir, "batches-page-in-airflow.png")


def test_filters_narrow_the_list_and_one_request_serves_a_page_view(
    page_server, browser_page, dashscope_emulator_session
):
    server, ids = page_server
    emulator = dashscope_emulator_session
    page = _signed_in(browser_page, server, "admin")
    page.goto(f"{server.url}{PAGE}")
    page.fill('input[name="ds_name"]', "secret")
    page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r"ds_name=secret"))
    assert _shown(page) == {ids["secret"]}
    page.fill('input[name="ds_name"]', "")
    page.select_option('select[name="status"]', "completed")
    page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r"status=completed"))
    assert _shown(page) == {ids[n] for n in COSTED}
    # the extra link's filter: the batches of one task only
    page.goto(f"{server.url}{PAGE}?dag_id=reports&run_id=manual__2026-12-07&task_id=sharded")
    assert _shown(page) == {ids["shard"], ids["shard2"]}
    emulator.clear_request_counts()
    for _ in range(3):
        page.goto(f"{server.url}{PAGE}?ds_name=report&limit=10")
    assert emulator.request_counts().get("GET /batches") == 1  # three views within the shared TTL


def _rows(page: Any) -> list[str]:
    """The list's rows in order: ``job:<dag>/<run>/<task>/<map index>`` or a batch id."""
    script = "rows => rows.map(r => r.dataset.job ? 'job:' + r.dataset.job : r.dataset.batchId)"
    return page.locator("tr[data-job], tr[data-batch-id]").evaluate_all(script)


def test_a_jobs_batches_are_grouped_under_it_with_the_estimates(page_server, browser_page):
    server, ids = page_server
    page = _signed_in(browser_page, server, "viewer")
    page.goto(f"{server.url}{PAGE}")
    rows = _rows(page)
    sharded, rounds = "job:reports/manual__2026-12-07/sharded/-1", "job:reports/manual__2026-12-07/create/-1"
    # listed newest first: shard 2, round 2, ..., shard 1, round 1; the page brings each job together
    assert rows[:3] == [sharded, ids["shard2"], ids["shard"]]
    assert rows[3:6] == [rounds, ids["round2"], ids["reports"]]
    job = page.locator(f'tr[data-job="{sharded[4:]}"]')
    assert "2 batches (shards)" in job.inner_text()
    assert "est. 3.5000 CNY" in job.inner_text()  # the whole job's, carried by each shard, said once
    assert job.locator('[role="progressbar"]').get_attribute("aria-valuemax") == "20"
    assert "est. 1.3200 CNY" in page.locator(f'tr[data-job="{rounds[4:]}"]').inner_text()  # rounds summed
    row = page.locator(f'tr[data-batch-id="{ids["round2"]}"]')
    assert row.locator(".place").inner_text() == "round 2"
    assert row.locator(".estimate").inner_text() == "0.1200 CNY"
    assert row.locator(".actual").inner_text() == "actual —"  # not finished: no transfer recorded it
    assert "shard 2 of 2, round 1" in page.locator(f'tr[data-batch-id="{ids["shard2"]}"]').inner_text()
    job.locator("a.job-filter").click()
    page.wait_for_url(re.compile(r"task_id=sharded"))
    assert _shown(page) == {ids["shard"], ids["shard2"]}


def test_a_batchs_page_shows_its_jobs_rounds_and_shards(page_server, browser_page, screenshots_dir):
    server, ids = page_server
    page = _signed_in(browser_page, server, "viewer")
    page.goto(f"{server.url}/dashscope-batches/batches/dashscope_default/{ids['round2']}")
    script = "rows => rows.map(r => [r.dataset.roundBatchId, r.cells[0].innerText, r.className])"
    listed = page.locator("tr[data-round-batch-id]").evaluate_all(script)
    assert listed == [[ids["reports"], "round 1", ""], [ids["round2"], "round 2", "current"]]
    assert "Estimated cost of the job: 1.3200 CNY (ceiling)" in page.locator("body").inner_text()
    _shot(page, screenshots_dir, "batches-rounds.png")
    page.goto(f"{server.url}/dashscope-batches/batches/dashscope_default/{ids['shard']}")
    listed = page.locator("tr[data-round-batch-id]").evaluate_all(script)
    assert [r[:2] for r in listed] == [
        [ids["shard"], "shard 1 of 2, round 1"],
        [ids["shard2"], "shard 2 of 2, round 1"],
    ]
    assert "Estimated cost of the job: 3.5000 CNY (ceiling)" in page.locator("body").inner_text()
    # a one-batch job: its one round
    page.goto(f"{server.url}/dashscope-batches/batches/dashscope_default/{ids['secret']}")
    assert page.locator("tr[data-round-batch-id]").count() == 1


def test_a_user_without_access_to_a_dag_sees_none_of_its_batches(page_server, browser_page):
    server, ids = page_server
    page = _signed_in(browser_page, server, "outsider")
    page.goto(f"{server.url}{PAGE}")
    assert _shown(page) == {ids[n] for n in ("reports", "round2", "shard", "shard2", *COSTED)}
    with _http(server, "outsider") as outsider:
        detail = outsider.get(f"/dashscope-batches/batches/dashscope_default/{ids['secret']}")
        assert detail.status_code == 403
        assert ids["secret"] not in outsider.get(PAGE).text


def test_a_viewer_may_not_cancel(page_server):
    server, ids = page_server
    url = f"/dashscope-batches/batches/dashscope_default/{ids['reports']}/cancel"
    with _http(server, "viewer") as viewer:
        assert viewer.get(url).status_code == 403
        refused = viewer.post(url, data={"csrf_token": "x" * 64})
        assert refused.status_code == 403
        assert "Traceback" not in refused.text


def test_an_editor_cancels_after_confirming_and_the_audit_log_records_it(
    page_server, browser_page, screenshots_dir
):
    server, ids = page_server
    page = _signed_in(browser_page, server, "editor")
    page.goto(f"{server.url}{PAGE}")
    assert page.locator("a.cancel").count() == 5  # an editor edits every DAG here
    page.locator(f'tr[data-batch-id="{ids["reports"]}"] a.cancel').click()
    page.wait_for_url(re.compile(r"/cancel$"))
    assert "This cannot be undone" in page.content()
    _shot(page, screenshots_dir, "batches-cancel-confirm.png")
    page.click("button.danger")
    page.wait_for_url(re.compile(rf"/batches/dashscope_default/{ids['reports']}$"))
    assert page.locator(".status").first.inner_text() in ("cancelling", "cancelled")
    _shot(page, screenshots_dir, "batches-detail.png")
    with _http(server, "admin") as admin:
        logs = admin.get("/api/v2/eventLogs", params={"event": "dashscope_batch_cancel"}).json()["event_logs"]
    assert [(e["owner"], e["dag_id"], e["task_id"], e["run_id"]) for e in logs] == [
        ("editor", "reports", "create", "manual__2026-12-07")
    ]
    assert ids["reports"] in logs[0]["extra"]


def test_a_forged_or_cross_site_cancel_is_refused(page_server):
    server, ids = page_server
    url = f"/dashscope-batches/batches/dashscope_default/{ids['shard']}/cancel"
    with _http(server, "editor") as editor:
        form = editor.get(url)
        assert form.status_code == 200
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text).group(1)
        action = re.search(r'action="([^"]+)"', form.text).group(1).replace("&amp;", "&")
        assert editor.post(action, data={"csrf_token": "0" * 64}).status_code == 403
        cross = editor.post(action, data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        assert editor.post(url, data={"csrf_token": token}).status_code == 400  # not the batch's DAG run
        too_big = editor.post(action, content=b"a" * 10_000, headers={"content-type": "text/plain"})
        assert too_big.status_code == 413
        with _http(server, "viewer") as viewer:  # another user's session cannot use the token
            assert viewer.post(action, data={"csrf_token": token}).status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        "status=nonsense",
        "limit=100000",
        "create_after=2026-13-45",
        "create_after=yesterday",
        "after=../../etc",
        "ds_name=" + "x" * 300,
        "input_file_ids=" + ",".join(f"file-{i}" for i in range(25)),
        "input_file_ids=%3Cscript%3E",
        "conn_id=not_listed",
        "map_index=abc&dag_id=reports",
        "ds_name=%00",
    ],
)
def test_hostile_input_gets_a_clear_refusal_never_a_500(page_server, query):
    server, _ = page_server
    with _http(server, "admin") as admin:
        answer = admin.get(f"{PAGE}?{query}")
        assert 400 <= answer.status_code < 500, answer.text
        assert "Traceback" not in answer.text
        assert "<script>" not in answer.text
        for path in (
            f"batches/dashscope_default/batch_{uuid.uuid4().hex}",
            "batches/dashscope_default/..%2Fx",
            f"batches/..%2F..%2Fapi/batch_{'x' * 500}",
        ):
            assert 400 <= admin.get(f"/dashscope-batches/{path}").status_code < 500


def test_the_page_runs_no_script_and_is_framed_only_by_airflow(page_server):
    server, _ = page_server
    with _http(server, "viewer") as viewer:
        answer = viewer.get(PAGE)
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'self'" in policy
    assert answer.headers["cache-control"] == "no-store"
    assert "<script" not in answer.text


def test_the_actual_cost_the_transfer_recorded_shows_on_the_batch_its_job_and_its_page(
    page_server, browser_page, screenshots_dir
):
    server, ids = page_server
    manifest = json.loads((server.home / "results" / "job" / "manifest.json").read_text())
    by_batch = {shard["batch_id"]: shard["cost"] for shard in manifest["shards"]}
    total = manifest["cost"]["actual"]
    assert Decimal(total["cost"]) > 0

    def money(cost: dict[str, Any]) -> tuple[Decimal, str]:
        return Decimal(cost["cost"]), cost["currency"]

    def shown(text: str) -> tuple[Decimal, str]:  # "actual 0.000048 CNY"
        label, amount, currency = text.split()
        assert label == "actual", text
        return Decimal(amount), currency

    page = _signed_in(browser_page, server, "viewer")
    page.goto(f"{server.url}{PAGE}")
    for name in COSTED:
        row = page.locator(f'tr[data-batch-id="{ids[name]}"]')
        assert shown(row.locator(".actual").inner_text()) == money(by_batch[ids[name]])
    job = page.locator(f'tr[data-job^="{COSTED_DAG}/"]')
    assert shown(job.locator(".actual").inner_text()) == money(total)  # the shards' sum, as the manifest's
    assert page.locator(f'tr[data-batch-id="{ids["secret"]}"] .actual').inner_text() == "actual —"

    page.goto(f"{server.url}/dashscope-batches/batches/dashscope_default/{ids['costed1']}")
    assert shown(page.locator("dd .actual").inner_text()) == money(by_batch[ids["costed1"]])
    line = page.locator(".job-actual").inner_text()  # "Actual cost of the job: 0.0001 CNY (4 requests, …"
    assert shown("actual " + line.removeprefix("Actual cost of the job: ").split(" (")[0]) == money(total)
    assert f"({total['requests']} requests, {total['input_tokens']} input" in line
    _shot(page, screenshots_dir, "batches-actual-cost.png")
