"""Each example DAG runs green with ``dag.test()`` against the emulator, and red where it should."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from dashscope_batch_emulator import emulated_embedding, image_tokens_of

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "example_dags" / "data"

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


def _landed_table(tmp_path, name):
    pq = pytest.importorskip("pyarrow.parquet")
    (landed,) = (tmp_path / "results").iterdir()
    manifest = json.loads((landed / "manifest.json").read_text())
    return pq.read_table(landed / name), manifest


def test_embeddings_example_lands_the_emulators_vectors(load_example, states, dashscope_emulator, tmp_path):
    dag_run = load_example("example_dashscope_batch_embeddings").dag.test()
    assert dag_run.state == "success", states(dag_run)

    table, manifest = _landed_table(tmp_path, "output.parquet")
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[256]"
    texts = dict(csv.reader((EXAMPLE_DATA / "texts.csv").open(encoding="utf-8")))
    del texts["doc_id"]
    rows = table.to_pylist()
    assert sorted(r["input_id"] for r in rows) == sorted(texts)  # one row per text, 12 texts in 2 requests
    assert len({r["custom_id"] for r in rows}) == 2
    for row in rows:
        assert row["embedding"] == pytest.approx(emulated_embedding(texts[row["input_id"]], 256), abs=1e-7)
        assert row["text"] == texts[row["input_id"]]  # carried from the CSV
    (shard,) = manifest["shards"]
    assert shard["files"]["output"]["table"]["input_columns"] == ["text"]
    assert shard["files"]["output"]["table"]["embedding_dimensions"] == 256
    assert shard["usage"]["total_tokens"] == sum(r["total_tokens"] or 0 for r in rows)


def test_vl_example_lands_answers_with_image_tokens(load_example, states, dashscope_emulator, tmp_path):
    dag_run = load_example("example_dashscope_batch_vl").dag.test()
    assert dag_run.state == "success", states(dag_run)

    table, _ = _landed_table(tmp_path, "output.parquet")
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["img-1", "img-2", "img-3"]
    assert {r["finish_reason"] for r in rows.values()} == {"stop"}
    assert all("Describe this image" in r["content"] for r in rows.values())
    # 56x56 -> 4 patches + 2; 280x140 -> 50 + 2; an image given by URL counts as the emulator's 1024x1024
    image_tokens = {
        "img-1": 6,
        "img-2": 52,
        "img-3": image_tokens_of({"image_url": "https://x"}, "qwen-vl-max", {}),
    }
    for custom_id, tokens in image_tokens.items():
        assert rows[custom_id]["prompt_tokens"] > tokens
    assert rows["img-2"]["prompt_tokens"] - rows["img-1"]["prompt_tokens"] == 52 - 6


def test_vl_example_red_for_a_text_model(load_example, states, dashscope_emulator, tmp_path, monkeypatch):
    """The preflight refuses image parts for a model that reads text only: nothing is uploaded."""
    module = load_example("example_dashscope_batch_vl")
    module.dag.get_task("upload_images").model = "qwen-plus"
    dag_run = module.dag.test()
    assert states(dag_run)["upload_images"] == "failed"
    assert "POST /files" not in dashscope_emulator.request_counts()
