"""
Finish events on a real deployment: DashScope's callbacks reach the api-server's receiver, wake the
deferred waits in the triggerer through the metadata DB, and start the results DAG from Asset events.

The emulator posts each batch's finish callback to the URL the create operator built from
``[dashscope_batch] callback_base_url`` (the api-server). Run:
``bash .ci/test tests/deployment -k events``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from scenario_support import AIRFLOW_VERSION, LIST, RETRIEVE, wait_for

from airflow_provider_dashscope_batch.events.tokens import mint_token

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(AIRFLOW_VERSION < (3, 3), reason="the deployment suite runs on the Airflow 3.3 leg"),
]

TASK = "create_batch"
EVENT_CREATES = 100
RESULTS_DAG = "deployment_events_results"
#: Longest a wait may take to end after its batch finished (the issue's bound, at the 99th percentile).
P99_BOUND = 5.0


def _results_runs(airflow) -> list[list[str]]:
    """The batch ids each finished run of the results DAG took from its triggering Asset events."""
    runs = airflow.api("GET", f"/dags/{RESULTS_DAG}/dagRuns", params={"limit": 100})["dag_runs"]
    taken = []
    for run in runs:
        if run["state"] != "success":
            continue
        entry = airflow.api(
            "GET",
            f"/dags/{RESULTS_DAG}/dagRuns/{run['dag_run_id']}/taskInstances/finished_batches/xcomEntries/return_value",
        )
        taken.append(list(entry["value"]))
    return taken


def _recorded(airflow) -> list[str]:
    """The batch ids in the extras of every Asset event (the finishes the receiver recorded)."""
    events: list[dict[str, Any]] = []
    while True:  # the REST API pages (at most 100 a page)
        page = airflow.api("GET", "/assets/events", params={"limit": 100, "offset": len(events)})
        events += page["asset_events"]
        if not page["asset_events"] or len(events) >= page["total_entries"]:
            return [e["extra"].get("batch_id") for e in events if e.get("extra")]


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.mark.timeout(1500)  # 100 task processes start (and resume) on LocalExecutor
def test_callbacks_end_100_deferred_waits_within_seconds(scenario):
    """
    100 deferred waits with callbacks end p99 <= 5 s after their batch finished, with at most one status
    read per batch beyond the receiver's confirmations.

    That the results DAG takes each recorded batch exactly once is checked with one batch in the next
    scenario; at 100 batches its asset-triggered runs did not all arrive within 600 s on a loaded
    machine (a known limit, see docs/completion-events.rst).
    """
    airflow, emulator = scenario.deployment, scenario.emulator
    scenario.trigger("deployment_events")

    def all_deferred() -> list[dict[str, Any]]:
        tis = airflow.mapped(scenario.dag_id, scenario.run_id, TASK)
        return len(tis) == EVENT_CREATES and {ti["state"] for ti in tis} == {"deferred"} and tis

    tis = wait_for(all_deferred, f"{EVENT_CREATES} mapped creates to defer", timeout=800)
    scenario.let_batches_run(*tis)
    # 100 resumed tasks start on LocalExecutor: the run takes a while to end, the waits did not
    assert airflow.wait_run(scenario.dag_id, scenario.run_id, timeout=600) == "success"
    counts = scenario.counts()

    tis = airflow.mapped(scenario.dag_id, scenario.run_id, TASK)
    batch_of = {
        ti["map_index"]: airflow.api(
            "GET",
            f"/dags/{scenario.dag_id}/dagRuns/{scenario.run_id}/taskInstances/{TASK}/xcomEntries/batch_id",
            params={"map_index": ti["map_index"]},
        )["value"]
        for ti in tis
    }
    sent = {d["batch_id"]: d for d in emulator.callbacks() if d["batch_id"] in set(batch_of.values())}
    assert len(sent) == EVENT_CREATES
    assert {d["status_code"] for d in sent.values()} == {200}, sent
    # the triggerer sets scheduled_when when the trigger's event resumes the task: the end of the wait
    delays = sorted(_epoch(ti["scheduled_when"]) - sent[batch_of[ti["map_index"]]]["sent_at"] for ti in tis)
    p99 = delays[int(0.99 * len(delays)) - 1]
    assert p99 <= P99_BOUND, f"p99 {p99:.1f}s, delays {[round(d, 1) for d in delays]}"

    reads = counts.get(RETRIEVE, 0) + counts.get(LIST, 0)
    confirmations = len(sent)  # one read by the receiver per delivered callback
    assert reads - confirmations <= EVENT_CREATES, counts

    scenario.assert_key_not_logged()


def test_lost_callbacks_end_by_the_safety_net_and_forged_or_replayed_ones_change_nothing(scenario):
    """
    With the callback lost, the wait still ends (its safety-net poll); a forged callback (right batch id,
    wrong token) and a callback for an unfinished batch change nothing; the late callback is recorded
    once and its replay changes nothing.
    """
    airflow, emulator = scenario.deployment, scenario.emulator
    emulator.configure(callback_deliveries=0)
    try:
        scenario.trigger("deployment_events_safety_net")
        ti = scenario.wait_task(TASK, "deferred")
        (batch,) = scenario.batches()
        url = batch.metadata["ds_batch_finish_callback"]
        assert url.startswith(f"{airflow.url}/dashscope-batch/events/dashscope_default/")
        forged = url.rsplit("/", 1)[0] + "/" + mint_token("sk-not-the-key", "dashscope_default")
        claim = {**batch.model_dump(mode="json"), "status": "completed"}
        assert httpx.post(forged, json=claim, timeout=30).status_code == 404
        unfinished = httpx.post(url, json=claim, timeout=30)  # the service says it is still validating
        assert (unfinished.status_code, unfinished.json()["status"]) == (409, "validating")
        assert scenario.wait_task(TASK, "deferred")["try_number"] == 1
        assert batch.id not in _recorded(airflow)

        scenario.let_batches_run(ti)
        assert scenario.wait_run() == "success"  # the safety-net poll saw it finish
        assert batch.id not in {d["batch_id"] for d in emulator.callbacks()}
        assert batch.id not in _recorded(airflow)

        finished = scenario.client.retrieve_batch(batch.id).model_dump(mode="json")
        assert httpx.post(forged, json=finished, timeout=30).status_code == 404
        assert batch.id not in _recorded(airflow)
        late = httpx.post(url, json=finished, timeout=30)  # the lost callback, arriving late
        assert (late.status_code, late.json()["outcome"]) == (200, "recorded")
        for _ in range(2):
            replay = httpx.post(url, json=finished, timeout=30)
            assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
        assert _recorded(airflow).count(batch.id) == 1
        runs = wait_for(
            lambda: [run for run in _results_runs(airflow) if batch.id in run],
            "the results DAG to take the late-recorded batch",
            timeout=120,
        )
        assert len(runs) == 1
    finally:
        emulator.configure(callback_deliveries=1)
    scenario.assert_key_not_logged()
