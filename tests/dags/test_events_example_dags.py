"""The completion-events example pair with ``dag.test()``: submit and forget, then the results DAG."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(240)


def recorded_batches(asset_id: int) -> list[str]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.scalars(select(AssetEvent.extra).where(AssetEvent.asset_id == asset_id))
        return [extra["batch_id"] for extra in extras]


def test_a_submitted_batch_is_recorded_when_it_finishes_and_the_results_dag_lands_it(
    load_example, events_conn, receiver, finished_asset, states, dashscope_emulator, client, tmp_path
):
    module = load_example("example_dashscope_batch_events")
    submit = module.submit_dag.test()
    assert submit.state == "success", states(submit)
    (batch,) = list(client.list_batches())
    assert batch.metadata["ds_batch_finish_callback"].startswith(receiver.base_url)
    deadline = time.monotonic() + 60
    while not recorded_batches(finished_asset):  # the emulator's callback reaches the receiver
        assert time.monotonic() < deadline, dashscope_emulator.callbacks()
        time.sleep(0.1)
    assert recorded_batches(finished_asset) == [batch.id]

    results = module.results_dag.test(run_conf={"batch_id": batch.id})
    assert results.state == "success", states(results)
    (landed,) = (tmp_path / "results").iterdir()
    assert landed.name == batch.id
    assert dashscope_emulator.request_counts()["DELETE /files/{file_id}"] == 1
