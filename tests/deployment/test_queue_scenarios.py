"""
Finish events through RabbitMQ on a real deployment: EventBridge's messages in a queue, read by the finish
watcher of the ``dashscope_queued`` connection in the triggerer, start the results DAG once per finish.

The session's broker (tests/rabbitmq_server.py) stands in for ApsaraMQ for RabbitMQ; the scenario
publishes what EventBridge would. Run it alone: ``bash .ci/test tests/deployment -k queue``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from scenario_support import AIRFLOW_VERSION, FINISH_EVENTS_SECRET, FINISH_QUEUE, QUEUED_CONN_ID, wait_for

from airflow_provider_dashscope_batch.events import asset_uri
from airflow_provider_dashscope_batch.events.tokens import MARK_KEY, mark
from airflow_provider_dashscope_batch.events.watcher import cursor_key
from airflow_provider_dashscope_batch.transfers.manifest import ResultManifest

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(AIRFLOW_VERSION < (3, 3), reason="the deployment suite runs on the Airflow 3.3 leg"),
]

RESULTS_DAG = "deployment_queued_results"
BURST = 100


def event(batch_id: str) -> bytes:
    """A ``dashscope:System:BatchTaskFinish`` event as EventBridge puts it in the queue."""
    data = {"batch_id": batch_id, "status": "completed"}
    envelope = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "acs.dashscope"}
    return json.dumps({**envelope, "type": "dashscope:System:BatchTaskFinish", "data": data}).encode()


def batch_of(extra: Any) -> str | None:
    extra = json.loads(extra) if isinstance(extra, str) else extra
    payload = (extra or {}).get("payload")
    return payload.get("batch_id") if isinstance(payload, dict) else None


def recorded(airflow) -> list[str]:
    """The batch ids of the queued connection's finish Asset events."""
    rows = airflow.query(
        "SELECT ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id WHERE a.uri = :uri",
        uri=asset_uri(QUEUED_CONN_ID),
    )
    return [batch_of(extra) for (extra,) in rows]


def consumed(airflow, batches: set[str]) -> tuple[set[str], Counter[str]] | None:
    """Once the results DAG's runs that took ``batches`` have all ended: their states and takings."""
    rows = airflow.query(
        "SELECT dr.id, dr.state, ae.extra FROM dag_run dr"
        " JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id"
        " JOIN asset_event ae ON ae.id = dae.event_id WHERE dr.dag_id = :dag_id",
        dag_id=RESULTS_DAG,
    )
    states = {run_id: state for run_id, state, _ in rows}
    taken = Counter(b for _, _, extra in rows if (b := batch_of(extra)) in batches)
    if set(taken) != batches or not set(states.values()) <= {"success", "failed"}:
        return None
    return set(states.values()), taken


def marked(scenario, name: str, secret: str = FINISH_EVENTS_SECRET) -> str:
    key = f"airflow-{name}-{scenario.input_file_id}-{time.monotonic_ns()}"
    metadata = {"idempotency_key": key, MARK_KEY: mark(secret, QUEUED_CONN_ID, key)}
    return scenario.client.create_batch(
        input_file_id=scenario.input_file_id, endpoint="/v1/chat/ds-test", metadata=metadata
    ).id


@pytest.mark.timeout(900)
def test_a_burst_of_100_finishes_through_rabbitmq_starts_results_runs_that_land_each_once(
    scenario, deployment_rabbitmq
):
    """
    100 finishes delivered through the queue (with duplicates, another deployment's batch and garbage)
    are 100 Asset events, each once; the results DAG consumes and lands each batch exactly once; every
    message is acknowledged. A later finish takes along those apache/airflow#56050 leaves in no run.
    """
    airflow, emulator, broker = scenario.deployment, scenario.emulator, deployment_rabbitmq

    def watching() -> bool:
        found = airflow.api("GET", f"/variables/{cursor_key(QUEUED_CONN_ID)}", ok=(200, 404))
        return bool(found.get("value")) and json.loads(found["value"]).get("since") is not None

    wait_for(watching, "the queue watcher's first round")
    burst = {marked(scenario, f"queued-{n}") for n in range(BURST)}
    stranger = marked(scenario, "stranger", secret="another-deployment")
    emulator.advance(3600)  # every batch finishes at once
    broker.publish(
        FINISH_QUEUE,
        *(event(b) for b in sorted(burst)),
        *(event(b) for b in sorted(burst)[:10]),  # EventBridge delivers some twice
        event(stranger),
        b"[" * 50_000,
        b"not json",
    )
    wait_for(lambda: burst <= set(recorded(airflow)), "the burst to be recorded", timeout=300)
    wait_for(lambda: broker.waiting(FINISH_QUEUE) == 0, "every message to be acknowledged", timeout=60)
    assert Counter(b for b in recorded(airflow) if b in burst) == dict.fromkeys(burst, 1)
    assert stranger not in recorded(airflow)

    late = marked(scenario, "late")  # takes along what apache/airflow#56050 left in no run
    emulator.advance(3600)
    broker.publish(FINISH_QUEUE, event(late))
    everything = burst | {late}
    states, taken = wait_for(
        lambda: consumed(airflow, everything), "the results DAG to take every finish", timeout=400
    )
    assert states == {"success"}
    assert set(taken.values()) == {1}, {b: n for b, n in taken.items() if n > 1}
    manifests = sorted(airflow.events_results.glob("*/manifest.json"))
    landed = Counter(
        shard.batch_id
        for path in manifests
        for shard in ResultManifest.model_validate_json(path.read_bytes()).shards
        if shard.batch_id in everything
    )
    assert (set(landed), set(landed.values())) == (everything, {1}), landed
    assert recorded(airflow).count(stranger) == 0
    scenario.assert_key_not_logged()
