"""
Finish events on a real deployment: the finish watcher (an AssetWatcher in the triggerer) lists the
connection's batches and turns each finish into one Asset event that starts the results DAG; DashScope's
callbacks reach the api-server's receiver, which posts them to the mailbox that wakes the deferred waits
and feeds the watcher.

The emulator posts each batch's finish callback to the URL the create operator built from
``[dashscope_batch] callback_base_url`` (the api-server). Run one scenario at a time:
``bash .ci/test tests/deployment -k <name>``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import pytest
from scenario_support import AIRFLOW_VERSION, FINISH_EVENTS_SECRET, _free_port, wait_for

from airflow_provider_dashscope_batch.events import asset_uri
from airflow_provider_dashscope_batch.events.tokens import MARK_KEY, mark, mint_token
from airflow_provider_dashscope_batch.events.watcher import cursor_key
from airflow_provider_dashscope_batch.transfers.manifest import ResultManifest

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(AIRFLOW_VERSION < (3, 3), reason="the deployment suite runs on the Airflow 3.3 leg"),
]

TASK = "create_batch"
EVENT_CREATES = 100
RESULTS_DAG = "deployment_events_results"
CONN = "dashscope_default"
#: How many submitted-and-forgotten batches finish together for the results DAG.
BURST = 100
#: Longest a wait may take to end after its batch finished (the issue's bound, at the 99th percentile).
P99_BOUND = 5.0


def _batch_id(extra: Any) -> str | None:
    """The batch of an Asset event the watcher's trigger event recorded (``extra["payload"]``)."""
    extra = json.loads(extra) if isinstance(extra, str) else extra  # JSON text on SQLite
    payload = (extra or {}).get("payload")
    return payload.get("batch_id") if isinstance(payload, dict) else None


def _results_runs(airflow) -> list[tuple[str, list[str]]]:
    """Each run of the results DAG: its state and the batch ids of the Asset events it consumed."""
    rows = airflow.query(
        "SELECT dr.id, dr.state, ae.extra FROM dag_run dr"
        " LEFT JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id"
        " LEFT JOIN asset_event ae ON ae.id = dae.event_id WHERE dr.dag_id = :dag_id",
        dag_id=RESULTS_DAG,
    )
    runs: dict[int, tuple[str, list[str]]] = {}
    for run_id, state, extra in rows:
        taken = runs.setdefault(run_id, (state, []))[1]
        if extra is not None:
            taken.append(_batch_id(extra))
    return list(runs.values())


def _landed(airflow) -> list[str]:
    """The batch ids of every result set the results DAG published (its manifests, written last)."""
    manifests = sorted(airflow.events_results.glob("*/manifest.json"))
    return [
        shard.batch_id
        for path in manifests
        for shard in ResultManifest.model_validate_json(path.read_bytes()).shards
    ]


def _recorded(airflow) -> list[str]:
    """The batch ids of every Asset event of the finish Asset (the finishes the watcher handed on)."""
    rows = airflow.query(
        "SELECT ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id WHERE a.uri = :uri",
        uri=asset_uri(CONN),
    )
    return [_batch_id(extra) for (extra,) in rows]


def _watching(airflow) -> bool:
    """Whether the finish watcher has made its first round (its cursor is in the Variable)."""
    found = airflow.api("GET", f"/variables/{cursor_key(CONN)}", ok=(200, 404))
    return bool(found.get("value")) and json.loads(found["value"]).get("since") is not None


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.mark.timeout(1500)  # 100 task processes start (and resume) on LocalExecutor
def test_callbacks_end_100_deferred_waits_within_seconds(scenario):
    """
    100 deferred waits with callbacks end p99 <= 5 s after their batch finished, with at most one status
    read per batch beyond the receiver's confirmations.

    The results DAG is paused meanwhile: its transfers read each finished batch too, and those reads are
    not the waits' (its runs of a burst are the next scenario's). The receiver still records every
    finish's Asset event.
    """
    airflow, emulator = scenario.deployment, scenario.emulator
    airflow.api("PATCH", f"/dags/{RESULTS_DAG}", json={"is_paused": True})
    try:
        _ends_100_waits_within_seconds(scenario, airflow, emulator)
    finally:
        airflow.api("PATCH", f"/dags/{RESULTS_DAG}", json={"is_paused": False})


def _ends_100_waits_within_seconds(scenario, airflow, emulator) -> None:
    scenario.trigger("deployment_events")

    def all_deferred() -> list[dict[str, Any]]:
        tis = airflow.mapped(scenario.dag_id, scenario.run_id, TASK)
        return len(tis) == EVENT_CREATES and {ti["state"] for ti in tis} == {"deferred"} and tis

    tis = wait_for(all_deferred, f"{EVENT_CREATES} mapped creates to defer", timeout=800)
    scenario.let_batches_run(*tis)
    # 100 resumed tasks start on LocalExecutor: the run takes a while to end, the waits did not
    assert airflow.wait_run(scenario.dag_id, scenario.run_id, timeout=600) == "success"
    counts = scenario.counts()
    reads_per_path = emulator.request_counts(per_path=True)

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

    # reads of these batches only: the watchers of other connections confirm other scenarios' finishes
    reads = sum(reads_per_path.get(f"GET /batches/{batch_id}", 0) for batch_id in batch_of.values())
    confirmations = 2 * len(sent)  # the receiver's read per callback, the watcher's per mailbox post
    assert reads - confirmations <= EVENT_CREATES, (reads, counts)

    scenario.assert_key_not_logged()


@pytest.mark.timeout(900)
def test_a_burst_of_100_finishes_found_by_list_polling_starts_results_runs_that_land_each_once(scenario):
    """
    100 batches submitted and forgotten (no task waits, no callback, no inbound traffic) finish together
    while two triggerers run: the watcher's list poll hands on 100 Asset events, each once, and the
    results DAG's asset-triggered runs consume each exactly once and publish each batch's results exactly
    once (every manifest in the object storage counted). A batch without this connection's mark is no
    event.

    Airflow starts one run for the events recorded since the previous run, so the runs are fewer than
    the batches. Up to Airflow 3.3 some finishes of the burst are in no run until a later finish
    (apache/airflow#56050): the scenario counts them, then finishes one more batch and checks that every
    finish is then consumed exactly once.
    """
    airflow, emulator = scenario.deployment, scenario.emulator
    wait_for(lambda: _watching(airflow), "the watcher's first round (what finished before is no event)")
    airflow.spawn(
        "triggerer-2", command="triggerer", AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(_free_port())
    )
    try:
        burst = {_marked_batch(scenario, f"burst-{n}") for n in range(BURST)}
        stranger = scenario.client.create_batch(
            input_file_id=scenario.input_file_id, endpoint="/v1/chat/ds-test"
        )
        emulator.advance(3600)  # every batch finishes at once

        recorded = wait_for(
            lambda: burst <= set(ids := _recorded(airflow)) and ids, "the burst to be recorded", timeout=300
        )
    finally:
        airflow.forget("triggerer-2")
    assert Counter(b for b in recorded if b in burst) == dict.fromkeys(burst, 1)
    assert stranger.id not in recorded

    def settled() -> list[tuple[str, list[str]]]:
        runs = [(state, [b for b in taken if b in burst]) for state, taken in _results_runs(airflow)]
        runs = [(state, taken) for state, taken in runs if taken]
        return bool(runs) and {state for state, _ in runs} <= {"success", "failed"} and runs

    wait_for(settled, "the results DAG's runs of the burst to end", timeout=300)
    time.sleep(30)  # the scheduler has had every chance to queue a run for what is left
    runs = settled()
    stranded = burst - {b for _, taken in runs for b in taken}
    # apache/airflow#56050 (Airflow <= 3.3): an event recorded after the queue row's time but before the
    # run was created is in no run until a later event; docs/completion-events.rst reports the numbers
    print(f"#56050: {len(stranded)} of {BURST} finishes in no run after the burst's runs ended")
    late = _marked_batch(scenario, "late")  # one later finish takes every stranded one along
    emulator.advance(3600)
    everything = burst | {late}

    def results_took_everything() -> list[tuple[str, list[str]]]:
        runs = [(state, [b for b in taken if b in everything]) for state, taken in _results_runs(airflow)]
        runs = [(state, taken) for state, taken in runs if taken]
        finished = {state for state, _ in runs} <= {"success", "failed"}
        return finished and everything <= {b for _, taken in runs for b in taken} and runs

    runs = wait_for(results_took_everything, "the results DAG to take every finished batch", timeout=300)
    assert {state for state, _ in runs} == {"success"}, runs
    consumed = Counter(b for _, taken in runs for b in taken)
    assert set(consumed.values()) == {1}, {b: n for b, n in consumed.items() if n > 1}
    landed = Counter(b for b in _landed(airflow) if b in everything)
    assert (set(landed), set(landed.values())) == (everything, {1}), landed
    assert _recorded(airflow).count(stranger.id) == 0
    scenario.assert_key_not_logged()


def _marked_batch(scenario, name: str) -> str:
    """Create a batch the way the create operator does with a finish-events secret (the mark)."""
    key = f"airflow-{name}-{scenario.input_file_id}-{time.monotonic_ns()}"
    batch = scenario.client.create_batch(
        input_file_id=scenario.input_file_id,
        endpoint="/v1/chat/ds-test",
        metadata={"idempotency_key": key, MARK_KEY: mark(FINISH_EVENTS_SECRET, CONN, key)},
    )
    return batch.id


def test_lost_callbacks_end_by_polling_and_forged_or_replayed_ones_change_nothing(scenario):
    """
    With the callback lost, the wait still ends (its own poll); a forged callback (right batch id, wrong
    token) and a callback for an unfinished batch change nothing; the finish is one Asset event (the
    watcher's list poll or the late callback's mailbox post, whichever comes first) and the late callback
    and its replays change nothing more.
    """
    airflow, emulator = scenario.deployment, scenario.emulator
    emulator.configure(callback_deliveries=0)
    try:
        scenario.trigger("deployment_events_safety_net")
        ti = scenario.wait_task(TASK, "deferred")
        (batch,) = scenario.batches()
        url = batch.metadata["ds_batch_finish_callback"]
        assert url.startswith(f"{airflow.url}/dashscope-batch/events/dashscope_default/")
        forged = url.rsplit("/", 1)[0] + "/" + mint_token("not-the-secret", "dashscope_default")
        claim = {**batch.model_dump(mode="json"), "status": "completed"}
        assert httpx.post(forged, json=claim, timeout=30).status_code == 404
        unfinished = httpx.post(url, json=claim, timeout=30)  # the service says it is still validating
        assert (unfinished.status_code, unfinished.json()["status"]) == (409, "validating")
        assert scenario.wait_task(TASK, "deferred")["try_number"] == 1
        assert batch.id not in _recorded(airflow)

        scenario.let_batches_run(ti)
        assert scenario.wait_run() == "success"  # its own poll saw it finish
        assert batch.id not in {d["batch_id"] for d in emulator.callbacks()}

        finished = scenario.client.retrieve_batch(batch.id).model_dump(mode="json")
        assert httpx.post(forged, json=finished, timeout=30).status_code == 404
        late = httpx.post(url, json=finished, timeout=30)  # the lost callback, arriving late
        assert (late.status_code, late.json()["outcome"]) == (200, "recorded")
        for _ in range(2):
            replay = httpx.post(url, json=finished, timeout=30)
            assert (replay.status_code, replay.json()["outcome"]) == (200, "duplicate")
        wait_for(lambda: batch.id in _recorded(airflow), "the watcher to hand the finish on", timeout=120)
        runs = wait_for(
            lambda: [run for run in _results_runs(airflow) if batch.id in run[1] and run[0] == "success"],
            "the results DAG to take the late-recorded batch",
            timeout=120,
        )
        assert len(runs) == 1
        assert _landed(airflow).count(batch.id) == 1
    finally:
        emulator.configure(callback_deliveries=1)
    scenario.assert_key_not_logged()
