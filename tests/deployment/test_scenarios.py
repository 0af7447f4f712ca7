"""What happens to the service-side batch when an operator of a real deployment acts on a waiting task.

Every scenario runs its own DAG run on the shared deployment (see scenario_support.py) with its own input
file, and ends by checking the emulator's request counters and batch list (exactly one working batch per
logical create) and that the API key is in no log file, no component's output and not in the metadata
DB. The emulator's clock stands still until the scenario has acted, so every batch is still unfinished
when it does.

Run: ``bash .ci/test tests/deployment`` (the whole suite runs it too; it skips on Airflow < 3.3).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from scenario_support import (
    AIRFLOW_VERSION,
    CANCEL,
    CREATE,
    HA_CREATES,
    LIST,
    MAPPED_CREATES,
    _free_port,
    task_process,
    wait_for,
)

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(
        AIRFLOW_VERSION < (3, 3), reason="Airflow 3.3+ tells a deferred task's trigger about user actions"
    ),
]

TASK = "create_batch"


def _one_batch(scenario, status: str):
    """The scenario's only batch, after checking it is in ``status``."""
    batches = scenario.batches()
    assert len(batches) == 1, [(b.id, b.status) for b in batches]
    assert batches[0].status == status, batches[0]
    return batches[0]


def _wait_trigger_gone(scenario, try_number: int) -> str:
    """Wait until the triggerer dropped the trigger of ``try_number`` (on_kill has run); return its log."""
    return wait_for(
        lambda: (log := scenario.trigger_log(TASK, try_number)) and "trigger completed" in log and log,
        f"the triggerer to drop the trigger of try {try_number}",
    )


def test_happy_path(scenario):
    """The create task defers, holds no slot while the batch runs, and the results land."""
    airflow = scenario.deployment
    scenario.trigger("deployment_deferred")
    ti = scenario.wait_task(TASK, "deferred")

    scenario.wait_released(ti)  # no executor worker, supervisor nor task process works for it
    pool = airflow.default_pool()
    assert (pool["occupied_slots"], pool["running_slots"], pool["deferred_slots"]) == (0, 0, 1), pool
    assert scenario.counts().get(CREATE) == 1
    _one_batch(scenario, "validating")

    scenario.let_batches_run(ti)
    assert scenario.wait_run() == "success"
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), counts
    _one_batch(scenario, "completed")
    landed = b"".join(p.read_bytes() for p in scenario.results.rglob("*") if p.is_file())
    assert all(f"request-{n}".encode() in landed for n in range(1, 6)), landed[:500]
    scenario.assert_key_not_logged()


def test_triggerer_killed_mid_wait(scenario):
    """SIGKILL of the triggerer while it waits: a new triggerer takes the wait over; one batch."""
    airflow = scenario.deployment
    scenario.trigger("deployment_single")
    ti = scenario.wait_task(TASK, "deferred")
    first = scenario.wait_trigger_started(TASK)
    batch = _one_batch(scenario, "validating")
    scenario.wait_batch_reads(batch.id)  # the triggerer runs the wait

    airflow.kill("triggerer")
    reads = scenario.batch_reads(batch.id)
    airflow.spawn("triggerer")
    scenario.wait_trigger_started(TASK, besides=frozenset({first}))  # a new triggerer takes the wait over
    scenario.wait_batch_reads(batch.id, more_than=reads)  # ... and polls the same batch

    scenario.let_batches_run(ti)
    assert scenario.wait_run() == "success"
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), counts
    _one_batch(scenario, "completed")
    scenario.assert_key_not_logged()


def test_task_process_killed_and_retried(scenario):
    """SIGKILL of the task process waiting in-process: the retry re-attaches to the batch; one batch."""
    scenario.trigger("deployment_in_process")
    ti = scenario.wait_task(TASK, "running")
    batch = wait_for(lambda: next(iter(scenario.batches()), None), "try 1 to create its batch")
    scenario.wait_batch_reads(batch.id)  # try 1 waits in its process
    process = task_process(ti)
    assert process is not None, f"no process titled for task instance {ti['id']}"
    assert process.pid == ti["pid"], (process.pid, ti["pid"])

    os.kill(process.pid, signal.SIGKILL)
    reads = scenario.batch_reads(batch.id)
    scenario.wait_task(TASK, "running", try_number=2)
    scenario.wait_batch_reads(batch.id, more_than=reads)  # try 2 reads the batch try 1 created

    scenario.let_batches_run()
    assert scenario.wait_run() == "success"
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), counts
    _one_batch(scenario, "completed")
    scenario.assert_key_not_logged()


def test_clear_while_deferred(scenario):
    """Clear of a deferred create: the new try re-attaches and the batch is not cancelled (issue 12, 1)."""
    airflow = scenario.deployment
    scenario.trigger("deployment_single")
    scenario.wait_task(TASK, "deferred")
    scenario.wait_trigger_started(TASK)  # only a running trigger hears of the user's action

    airflow.clear(scenario.dag_id, scenario.run_id, TASK)
    retry = scenario.wait_task(TASK, "deferred", try_number=2)
    _wait_trigger_gone(scenario, 1)
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), f"the clear cost the batch: {counts}"

    scenario.let_batches_run(retry)
    assert scenario.wait_run() == "success"
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), counts
    _one_batch(scenario, "completed")
    scenario.assert_key_not_logged()


def test_mark_failed_while_deferred(scenario):
    """Mark failed of a deferred create cancels its batch."""
    airflow = scenario.deployment
    scenario.trigger("deployment_single")
    ti = scenario.wait_task(TASK, "deferred")
    scenario.wait_trigger_started(TASK)  # only a running trigger hears of the user's action

    airflow.set_state(scenario.dag_id, scenario.run_id, TASK, "failed")
    _wait_trigger_gone(scenario, 1)
    assert scenario.counts().get(CANCEL) == 1, "marking failed did not cancel the batch"

    scenario.let_batches_run(ti)
    assert scenario.wait_run() == "failed"
    wait_for(lambda: scenario.batches()[0].status == "cancelled", "the batch to end cancelled")
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL)) == (1, 1), counts
    _one_batch(scenario, "cancelled")
    scenario.assert_key_not_logged()


def test_mark_success_while_deferred(scenario):
    """
    Mark success of a deferred create keeps the batch (docs/operators/create.rst): it runs to the end and
    its results stay downloadable; nothing is cancelled.
    """
    airflow = scenario.deployment
    scenario.trigger("deployment_single")
    ti = scenario.wait_task(TASK, "deferred")
    scenario.wait_trigger_started(TASK)  # only a running trigger hears of the user's action

    airflow.set_state(scenario.dag_id, scenario.run_id, TASK, "success")
    log = _wait_trigger_gone(scenario, 1)
    assert scenario.counts().get(CANCEL, 0) == 0, "marking success cancelled the batch"

    scenario.let_batches_run(ti)
    assert scenario.wait_run() == "success"
    batch = wait_for(
        lambda: (b := scenario.batches()[0]).status == "completed" and b, "the batch to complete"
    )
    assert batch.id in log
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (1, 0), counts
    _one_batch(scenario, "completed")
    scenario.assert_key_not_logged()


@pytest.mark.timeout(600)
def test_mapped_deferred_waits(scenario):
    """
    100 mapped creates wait deferred together, all complete, one batch each; no first try lists batches
    to look for an earlier one (issue 12, item 3).

    The triggerer is stopped while the run fans out, so every request the service sees until it starts
    again comes from the tasks' first tries (a wait may read statuses with the list too).
    """
    airflow = scenario.deployment
    airflow.halt("triggerer")
    scenario.trigger("deployment_mapped")

    def all_deferred() -> list[dict[str, Any]]:
        tis = airflow.mapped(scenario.dag_id, scenario.run_id, TASK)
        return len(tis) == MAPPED_CREATES and {ti["state"] for ti in tis} == {"deferred"} and tis

    tis = wait_for(all_deferred, f"{MAPPED_CREATES} mapped creates to defer", timeout=400)
    scenario.wait_released(*tis)
    pool = airflow.default_pool()
    assert (pool["occupied_slots"], pool["running_slots"]) == (0, 0), pool
    assert pool["deferred_slots"] == MAPPED_CREATES, pool
    counts = scenario.counts()
    assert counts.get(CREATE) == MAPPED_CREATES, counts
    assert counts.get(LIST, 0) == 0, f"first tries looked for earlier batches: {counts}"

    airflow.spawn("triggerer")
    scenario.let_batches_run(*tis)
    assert scenario.wait_run() == "success"
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (MAPPED_CREATES, 0), counts
    batches = scenario.batches()
    assert len(batches) == MAPPED_CREATES
    assert {b.status for b in batches} == {"completed"}
    assert len({b.metadata["idempotency_key"] for b in batches}) == MAPPED_CREATES
    scenario.assert_key_not_logged()


def test_two_triggerers_one_killed_mid_wait(scenario):
    """
    High availability: two triggerers, the one running the waits is SIGKILLed; the other finishes them.

    Every wait goes on polling from the surviving triggerer once ``[triggerer]
    triggerer_health_check_threshold`` passes, and every create still has exactly one batch: a trigger
    that runs again, elsewhere, creates and cancels nothing (docs/trigger.rst, "Several triggerers").
    """
    airflow = scenario.deployment
    scenario.trigger("deployment_ha")

    def all_deferred() -> list[dict[str, Any]]:
        tis = airflow.mapped(scenario.dag_id, scenario.run_id, TASK)
        return len(tis) == HA_CREATES and {ti["state"] for ti in tis} == {"deferred"} and tis

    tis = wait_for(all_deferred, f"{HA_CREATES} mapped creates to defer")
    first = {i: scenario.wait_trigger_started(TASK, map_index=i) for i in range(HA_CREATES)}
    airflow.spawn(
        "triggerer-2", command="triggerer", AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(_free_port())
    )
    try:
        wait_for(
            lambda: (
                len(
                    airflow.api("GET", "/jobs", params={"job_type": "TriggererJob", "is_alive": True})["jobs"]
                )
                == 2
            ),
            "two live triggerers",
        )
        airflow.kill("triggerer")
        airflow.forget("triggerer")  # dead on purpose: the deployment's checks must not count it
        for index in range(HA_CREATES):  # the survivor takes the orphaned waits over
            scenario.wait_trigger_started(TASK, map_index=index, besides=frozenset({first[index]}))

        scenario.let_batches_run(*tis)
        assert scenario.wait_run() == "success"
    finally:
        airflow.spawn("triggerer")  # the deployment as the other scenarios know it: one triggerer
        airflow.forget("triggerer-2")
    counts = scenario.counts()
    assert (counts.get(CREATE), counts.get(CANCEL, 0)) == (HA_CREATES, 0), counts
    batches = scenario.batches()
    assert len(batches) == HA_CREATES
    assert {b.status for b in batches} == {"completed"}
    assert len({b.metadata["idempotency_key"] for b in batches}) == HA_CREATES
    for index in range(HA_CREATES):  # each wait ran on both triggerers, and on no third
        jobs = scenario.trigger_jobs(TASK, map_index=index)
        assert len(jobs) == 2, (index, jobs)
    scenario.assert_key_not_logged()
