"""Each example DAG runs green with ``dag.test()`` against the emulator, and red where it should."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(240)


def test_main_example_green(load_example, states, dashscope_emulator, tmp_path):
    dag_run = load_example("example_dashscope_batch").dag.test()
    assert dag_run.state == "success", states(dag_run)
    counts = dashscope_emulator.request_counts()
    assert counts["POST /batches"] == 1
    assert counts["DELETE /files/{file_id}"] == 1  # the clean-up ran
    (landed,) = (tmp_path / "results").iterdir()
    assert landed.name.startswith("batch_")
    assert (landed / "output.jsonl").read_text().count("\n") == 5
    assert json.loads((landed / "manifest.json").read_text())


@pytest.mark.parametrize(
    "name", ["example_dashscope_batch", "example_dashscope_batch_sensor", "example_dashscope_batch_mapped"]
)
def test_every_example_green_in_the_demo_setting(load_example, states, dashscope_emulator, name):
    dashscope_emulator.fail_requests("^request-5$")  # what .ci/demo does, so that an error file appears
    dag_run = load_example(name).dag.test()
    assert dag_run.state == "success", states(dag_run)


def test_sensor_example_green(load_example, states, dashscope_emulator):
    dag_run = load_example("example_dashscope_batch_sensor").dag.test()
    assert states(dag_run) == {
        "upload_file": "success",
        "create_batch": "success",
        "wait_for_batch": "success",
        "results_to_object_storage": "success",
        "cancel_batch_if_waiting_failed": "skipped",
    }
    assert "POST /batches/{batch_id}/cancel" not in dashscope_emulator.request_counts()


def test_mapped_example_green(load_example, states, dashscope_emulator):
    dag_run = load_example("example_dashscope_batch_mapped").dag.test()
    assert dag_run.state == "success", states(dag_run)
    assert {k for k, v in states(dag_run).items() if v == "success"} >= {
        "create_batch[0]",
        "create_batch[1]",
        "create_batch[2]",
        "summarize",
    }
    assert dashscope_emulator.request_counts()["POST /batches"] == 3
    summary = dag_run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert summary == {"batches": 3, "total": 9, "completed": 9, "failed": 0}


def test_main_example_red_when_every_request_fails(load_example, states, dashscope_emulator):
    dashscope_emulator.fail_requests(".*")
    dag_run = load_example("example_dashscope_batch").dag.test()
    assert dag_run.state == "failed"
    assert states(dag_run)["create_batch"] == "failed"
    assert states(dag_run)["delete_input_file"] == "success"  # clean-up still runs


def test_sensor_example_red_when_every_request_fails(load_example, states, dashscope_emulator):
    dashscope_emulator.fail_requests(".*")
    dag_run = load_example("example_dashscope_batch_sensor").dag.test()
    assert dag_run.state == "failed"
    assert states(dag_run)["wait_for_batch"] == "failed"
    assert states(dag_run)["cancel_batch_if_waiting_failed"] == "success"


def test_main_example_red_when_the_batch_expires(
    load_example, states, dashscope_emulator, batches, dag_test_acting_on_batch
):
    dashscope_emulator.configure(time_scale=0, processing_rate=1e-5)  # 5 requests would take days
    dag_run = dag_test_acting_on_batch(
        load_example("example_dashscope_batch").dag, lambda _: dashscope_emulator.advance(25 * 3600)
    )
    assert dag_run.state == "failed"
    assert states(dag_run)["create_batch"] == "failed"
    (batch,) = batches()
    assert batch["status"] == "expired"


def test_main_example_red_when_the_batch_is_cancelled(
    load_example, states, dashscope_emulator, client, batches, dag_test_acting_on_batch
):
    dashscope_emulator.configure(processing_rate=0.01)
    dag_run = dag_test_acting_on_batch(load_example("example_dashscope_batch").dag, client.cancel_batch)
    assert dag_run.state == "failed"
    assert states(dag_run)["create_batch"] == "failed"
    assert batches()[0]["status"] == "cancelled"


def test_red_on_a_validation_failure(load_test_dags, states, dashscope_emulator):
    dag_run = load_test_dags.validation_failure.test()
    assert dag_run.state == "failed"
    assert states(dag_run) == {"upload_file": "failed", "create_batch": "upstream_failed"}
    assert dashscope_emulator.request_counts() == {}  # a bad file costs no upload and no batch
