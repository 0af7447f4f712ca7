"""The receiver on a real socket: callbacks and EventBridge events, verified and recorded once."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from airflow_provider_dashscope_batch.events.callback import airflow_callback_url
from airflow_provider_dashscope_batch.events.mailbox import Mailbox, variable_key
from airflow_provider_dashscope_batch.events.receiver import MAX_BODY_BYTES, BadRequest, finish_batch_id
from airflow_provider_dashscope_batch.events.tokens import callback_url, eventbridge_url, mint_token
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook

SAMPLE_REQUESTS = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "requests.jsonl"
RETRIEVE = "GET /batches/{batch_id}"
CONN = "dashscope_default"


def asset_events(asset_id: int) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.scalars(select(AssetEvent.extra).where(AssetEvent.asset_id == asset_id)))


def mailbox() -> Mailbox:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        variable = session.scalar(select(Variable).where(Variable.key == variable_key(CONN)))
        return Mailbox.from_value(variable.val if variable is not None else None)


def deliveries(emulator, count: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while len(emulator.callbacks()) < count:
        assert time.monotonic() < deadline, f"expected {count} deliveries, got {emulator.callbacks()}"
        time.sleep(0.05)
    return emulator.callbacks()


def finished_batch(client, callback: str | None) -> str:
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    metadata = {"ds_batch_finish_callback": callback, "idempotency_key": "airflow-" + "0" * 40 + "-g1"}
    batch = client.create_batch(
        input_file_id=file_id,
        endpoint="/v1/chat/ds-test",
        metadata={k: v for k, v in metadata.items() if v is not None},
    )
    deadline = time.monotonic() + 30
    while not client.retrieve_batch(batch.id).status.is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return batch.id


def test_a_callback_is_confirmed_with_one_read_and_recorded_once_when_it_arrives_twice(
    dashscope_emulator, events_conn, finished_asset, client
):
    dashscope_emulator.configure(callback_deliveries=2)
    url = airflow_callback_url(DashScopeBatchHook())
    batch_id = finished_batch(client, url)
    sent = deliveries(dashscope_emulator, 2)  # at once: the mailbox row lock lets one of them record
    assert [d["status_code"] for d in sent] == [200, 200]
    (extra,) = asset_events(finished_asset)
    assert extra["batch_id"] == batch_id
    assert extra["status"] == "completed"
    assert extra["output_file_id"]
    assert mailbox().since(0) == ([batch_id], False)


def test_a_forged_token_for_a_real_batch_changes_nothing_and_reads_nothing(
    dashscope_emulator, events_conn, finished_asset, client, receiver
):
    batch_id = finished_batch(client, airflow_callback_url(DashScopeBatchHook()))
    deliveries(dashscope_emulator, 1)
    recorded = asset_events(finished_asset)
    other = finished_batch(client, None)
    before = dashscope_emulator.request_counts().get(RETRIEVE, 0)
    forged = [
        mint_token("not-the-key", CONN),  # right shape, wrong key
        mint_token(dashscope_emulator.api_key, "another_conn"),  # minted for another connection
        "x" * 20,
    ]
    for token in forged:
        response = httpx.post(callback_url(receiver.base_url, CONN, token), json={"id": other})
        assert response.status_code == 404
        assert response.json() == {"detail": "unknown event"}
    assert asset_events(finished_asset) == recorded
    assert other not in mailbox()
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == before
    assert batch_id in mailbox()


def test_a_valid_token_cannot_vouch_for_another_batch(
    dashscope_emulator, events_conn, finished_asset, client, receiver
):
    url = airflow_callback_url(DashScopeBatchHook())
    finished_batch(client, url)
    deliveries(dashscope_emulator, 1)
    other = finished_batch(client, airflow_callback_url(DashScopeBatchHook()))  # its own, other token
    deliveries(dashscope_emulator, 2)
    recorded = asset_events(finished_asset)
    third = finished_batch(client, None)
    response = httpx.post(url, json={"id": third})
    assert response.status_code == 404
    assert asset_events(finished_asset) == recorded
    assert third not in mailbox()
    assert other in mailbox()


def test_a_replayed_callback_changes_nothing(dashscope_emulator, events_conn, finished_asset, client):
    url = airflow_callback_url(DashScopeBatchHook())
    batch_id = finished_batch(client, url)
    deliveries(dashscope_emulator, 1)
    body = client.retrieve_batch(batch_id).model_dump(mode="json")
    seq = mailbox().seq
    reads = dashscope_emulator.request_counts().get(RETRIEVE, 0)
    for _ in range(3):
        response = httpx.post(url, json=body)
        assert response.status_code == 200
        assert response.json()["outcome"] == "duplicate"
    assert len(asset_events(finished_asset)) == 1
    assert mailbox().seq == seq
    assert dashscope_emulator.request_counts().get(RETRIEVE, 0) == reads  # a replay costs no read


def test_an_unfinished_batch_is_not_recorded(dashscope_emulator, events_conn, finished_asset, client):
    dashscope_emulator.set_clock(time_scale=0)  # the batch stays validating
    url = airflow_callback_url(DashScopeBatchHook())
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    batch = client.create_batch(
        input_file_id=file_id, endpoint="/v1/chat/ds-test", metadata={"ds_batch_finish_callback": url}
    )
    response = httpx.post(url, json={"id": batch.id, "status": "completed"})  # the body is not trusted
    assert response.status_code == 409
    assert response.json()["status"] == "validating"
    assert asset_events(finished_asset) == []
    assert batch.id not in mailbox()


def test_an_eventbridge_event_is_recorded_for_a_batch_airflow_created(
    dashscope_emulator, events_conn, finished_asset, client, receiver
):
    target = eventbridge_url(receiver.base_url, CONN, dashscope_emulator.api_key)
    dashscope_emulator.configure(eventbridge_target=target)
    batch_id = finished_batch(client, None)
    (sent,) = deliveries(dashscope_emulator, 1)
    assert (sent["kind"], sent["status_code"]) == ("eventbridge", 200)
    (extra,) = asset_events(finished_asset)
    assert extra["batch_id"] == batch_id
    assert batch_id in mailbox()


def test_bad_bodies_get_a_4xx_and_log_nothing_of_them(
    dashscope_emulator, events_conn, finished_asset, receiver, caplog
):
    url = callback_url(receiver.base_url, CONN, mint_token(dashscope_emulator.api_key, CONN))
    secret = "sk-" + "s3cr3t" * 4
    with caplog.at_level(logging.DEBUG):
        bad_json = httpx.post(
            url, content=f'{{"id": "{secret}"', headers={"content-type": "application/json"}
        )
        too_big = httpx.post(url, content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        no_batch = httpx.post(url, json={"secret": secret})
        wrong_type = httpx.post(url, json={"specversion": "1.0", "type": "x:y", "data": {"id": "batch_1"}})
    assert bad_json.status_code == 400
    assert too_big.status_code == 413
    assert no_batch.status_code == 400
    assert wrong_type.status_code == 400
    assert secret not in caplog.text
    assert secret not in bad_json.text + no_batch.text
    assert asset_events(finished_asset) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "batch_a", "object": "batch", "status": "completed"}, "batch_a"),
        (
            {
                "specversion": "1.0",
                "source": "acs.dashscope",
                "type": "dashscope:System:BatchTaskFinish",
                "data": {"id": "batch_b"},
            },
            "batch_b",
        ),
        (
            {
                "specversion": "1.0",
                "type": "dashscope:System:BatchTaskFinish",
                "data": {"batchId": "batch_c"},
            },
            "batch_c",
        ),
    ],
)
def test_the_batch_id_of_a_callback_and_of_a_cloudevent(body, expected):
    assert finish_batch_id(json.dumps(body).encode()) == expected


@pytest.mark.parametrize(
    "body", [b"[]", b"nul", b'{"id": 3}', b'{"id": "file-1"}', b'{"specversion": "1.0"}']
)
def test_bodies_naming_no_batch_are_rejected(body):
    with pytest.raises(BadRequest):
        finish_batch_id(body)


def test_a_burst_of_callbacks_is_recorded_together_each_once(
    dashscope_emulator, events_conn, finished_asset, client
):
    dashscope_emulator.set_clock(time_scale=0)
    file_id = client.upload_file(SAMPLE_REQUESTS).id
    created = [
        client.create_batch(
            input_file_id=file_id,
            endpoint="/v1/chat/ds-test",
            metadata={"ds_batch_finish_callback": airflow_callback_url(DashScopeBatchHook())},
        ).id
        for _ in range(20)
    ]
    dashscope_emulator.advance(3600)  # all finish at once: 20 callbacks arrive together
    sent = deliveries(dashscope_emulator, 20)
    assert {d["status_code"] for d in sent} == {200}
    assert sorted(e["batch_id"] for e in asset_events(finished_asset)) == sorted(created)
    posted, lost = mailbox().since(0)
    assert (sorted(posted), lost) == (sorted(created), False)


def _create_asset_triggered_runs() -> None:
    """One pass of the scheduler's run creation (what ``airflow scheduler`` does every loop)."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.utils.session import create_session
    from airflow.utils.sqlalchemy import prohibit_commit

    runner = SchedulerJobRunner(job=Job())
    with create_session() as session, prohibit_commit(session) as guard:
        runner._create_dagruns_for_dags(guard, session)


def _consumed(dag_id: str) -> list[list[str]]:
    """The batch ids of the Asset events each run of ``dag_id`` consumed, oldest run first."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id))
        return [sorted(e.extra["batch_id"] for e in run.consumed_asset_events) for run in runs]


def test_a_finish_recorded_after_a_run_was_queued_is_in_the_next_run(
    dashscope_emulator, events_conn, finished_asset, results_dag, client
):
    """
    Finishes recorded after the first one queued a results run are in that run, not stranded.

    Up to Airflow 3.3 the queue row keeps the first event's time and the run takes the events up to it:
    the second finish would be in no run until a third finish came.
    """
    url = airflow_callback_url(DashScopeBatchHook())
    first = finished_batch(client, url)
    deliveries(dashscope_emulator, 1)
    second = finished_batch(client, url)
    deliveries(dashscope_emulator, 2)
    _create_asset_triggered_runs()
    assert _consumed(results_dag) == [sorted([first, second])]
    third = finished_batch(client, url)  # recorded after the run took the others: the next run's
    deliveries(dashscope_emulator, 3)
    _create_asset_triggered_runs()
    assert _consumed(results_dag) == [sorted([first, second]), [third]]
