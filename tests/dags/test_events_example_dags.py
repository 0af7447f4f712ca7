"""The completion-events example pair with ``dag.test()``: submit and forget, the watcher, the results DAG."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.timeout(240)


def get_variable(key: str):
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


def put_variable(key: str, value: str) -> None:
    from airflow.models.variable import Variable

    Variable.set(key, value)


def test_a_submitted_batch_is_one_watcher_event_when_it_finishes_and_the_results_dag_lands_it(
    load_example, dashscope_conn, airflow_db, states, dashscope_emulator, client, tmp_path
):
    from airflow.models.variable import Variable

    from airflow_provider_dashscope_batch.events.watcher import cursor_key

    Variable.delete(cursor_key("dashscope_default"))
    dashscope_conn(finish_events_secret="example-secret")
    module = load_example("example_dashscope_batch_events")
    (watcher,) = module.FINISHED.watchers
    watch = watcher.trigger.watch(get=get_variable, put=put_variable, clock=dashscope_emulator.now)
    watch.poll_interval = 0

    async def round_() -> list[dict]:
        return [payload async for payload in watch.round()]

    assert asyncio.run(round_()) == []  # the baseline
    submit = module.submit_dag.test()
    assert submit.state == "success", states(submit)
    (batch,) = list(client.list_batches())
    deadline = time.monotonic() + 60
    while not client.retrieve_batch(batch.id).status.is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (payload,) = asyncio.run(round_())
    assert payload["batch_id"] == batch.id
    assert asyncio.run(round_()) == []

    results = module.results_dag.test(run_conf={"batch_id": batch.id})
    assert results.state == "success", states(results)
    (landed,) = (tmp_path / "results").iterdir()
    assert landed.name == batch.id
    assert dashscope_emulator.request_counts()["DELETE /files/{file_id}"] == 1
