"""Run the DAG end to end against the emulator (the provider brings the ``dashscope_emulator`` fixture)."""

import json


def test_results_land_with_a_manifest(summaries_dag, dashscope_emulator, tmp_path):
    dashscope_emulator.fail_requests(r"^doc-2$")  # one request fails: the error file appears too

    run = summaries_dag.test()

    assert run.state == "success"
    (batch_dir,) = (tmp_path / "results").iterdir()
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    assert manifest["totals"]["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert (batch_dir / "errors.jsonl").exists()


def test_a_lost_create_response_does_not_duplicate_the_batch(summaries_dag, dashscope_emulator):
    # The service creates the batch, then the connection drops before the response arrives.
    dashscope_emulator.add_fault("truncate", method="POST", path="/batches", truncate_at=0, count=1)

    run = summaries_dag.test()

    assert run.state == "success"
    assert dashscope_emulator.request_counts()["POST /batches"] == 1
