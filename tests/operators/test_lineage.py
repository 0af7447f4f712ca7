"""OpenLineage of the operators, captured by the openlineage provider's own file transport from real runs.

Each example DAG runs with ``airflow dags test`` against the emulator in a subprocess whose
``[openlineage] transport`` is the provider's ``file`` transport; the test reads the COMPLETE events it
wrote. Where the openlineage provider is not installed (the Airflow 3.0 leg), a run must not import it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_dashscope_batch.operators.lineage import path_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT_FILE = REPO_ROOT / "example_dags" / "data" / "requests.jsonl"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
HAS_OPENLINEAGE = importlib.util.find_spec("airflow.providers.openlineage") is not None
needs_openlineage = pytest.mark.skipif(
    not HAS_OPENLINEAGE, reason="the openlineage provider is installed on the Airflow 3.3 leg only"
)


@pytest.fixture(scope="module")
def migrated_db() -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], check=True, capture_output=True, timeout=240)


def _dags_test(dag_id: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _namespace(emulator: Any) -> str:
    return f"dashscope://{urlsplit(emulator.base_url).netloc}"


def _run_with_lineage(dag_id: str, tmp_path: Path, **env: str) -> dict[str, dict[str, Any]]:
    """Run the DAG; return each task's COMPLETE event by task id."""
    events = tmp_path / "openlineage.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    _dags_test(
        dag_id,
        {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "dashscope-tests",
            "DASHSCOPE_EXAMPLE_POLL_INTERVAL": "0.2",
            "DASHSCOPE_RESULTS_DESTINATION": (tmp_path / "results").as_uri(),
            **env,
        },
    )
    complete = {}
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event.get("eventType") == "COMPLETE" and event["job"]["name"].startswith(f"{dag_id}."):
            complete[event["job"]["name"].removeprefix(f"{dag_id}.")] = event
    return complete


def _names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def _stats(dataset: dict[str, Any]) -> tuple[int, int | None]:
    stats = dataset["outputFacets"]["outputStatistics"]
    return stats["rowCount"], stats.get("size")


@needs_openlineage
def test_upload_create_and_transfer_draw_one_chain(
    migrated_db, dashscope_conn, dashscope_emulator, client, tmp_path
):
    dashscope_emulator.fail_requests("^request-5$")
    events = _run_with_lineage("example_dashscope_batch", tmp_path)

    namespace = _namespace(dashscope_emulator)
    [batch] = client.list_batches()
    upload, create, transfer = (
        events["upload_file"],
        events["create_batch"],
        events["results_to_object_storage"],
    )
    assert _names(upload["inputs"]) == [("file", str(INPUT_FILE))]
    assert _names(upload["outputs"]) == [(namespace, f"files/{batch.input_file_id}")]
    assert _names(create["inputs"]) == [(namespace, f"files/{batch.input_file_id}")]
    assert _names(create["outputs"]) == [(namespace, f"batches/{batch.id}")]
    assert _stats(create["outputs"][0])[0] == 4  # 4 of the 5 requests succeeded
    assert _names(transfer["inputs"]) == [(namespace, f"batches/{batch.id}")]
    directory = tmp_path / "results" / batch.id
    assert sorted(_names(transfer["outputs"])) == sorted(
        ("file", str(directory / name)) for name in ("output.jsonl", "errors.jsonl", "manifest.json")
    )
    by_name = {Path(d["name"]).name: d for d in transfer["outputs"]}
    for name, rows in (("output.jsonl", 4), ("errors.jsonl", 1)):
        assert _stats(by_name[name]) == (rows, (directory / name).stat().st_size)


@needs_openlineage
def test_sharded_job_and_merge_draw_source_batches_results(
    migrated_db, dashscope_conn, dashscope_emulator, client, tmp_path
):
    source = tmp_path / "products.csv"
    events = _run_with_lineage(
        "example_dashscope_batch_sharded",
        tmp_path,
        DASHSCOPE_SHARDED_INPUT=source.as_uri(),
        DASHSCOPE_SHARDED_REQUESTS="7",
    )

    namespace = _namespace(dashscope_emulator)
    [batch] = client.list_batches()
    shards, merge = events["run_shards"], events["merge_results"]
    assert _names(shards["inputs"]) == [("file", str(source))]
    assert _names(shards["outputs"]) == [(namespace, f"batches/{batch.id}")]
    inputs = {name: d for _, name in _names(merge["inputs"]) for d in merge["inputs"] if d["name"] == name}
    assert f"batches/{batch.id}" in inputs
    # delete_remote_files=True: the batch's DashScope files are inputs the transfer dropped
    dropped = {name for name, d in inputs.items() if "lifecycleStateChange" in d.get("facets", {})}
    assert dropped == {f"files/{batch.input_file_id}", f"files/{batch.output_file_id}"}
    assert {
        d["facets"]["lifecycleStateChange"]["lifecycleStateChange"]
        for d in merge["inputs"]
        if d["name"] in dropped
    } == {"DROP"}
    assert ("file", str(tmp_path / "results")) not in _names(merge["outputs"])
    assert any(name.endswith("manifest.json") for _, name in _names(merge["outputs"]))


@pytest.mark.skipif(HAS_OPENLINEAGE, reason="checks the leg without the openlineage provider")
def test_nothing_of_openlineage_is_imported_without_it(migrated_db, dashscope_conn, tmp_path):
    """A run on a leg without the provider works, and the lineage module itself imports nothing of it."""
    _dags_test(
        "example_dashscope_batch",
        {
            "DASHSCOPE_EXAMPLE_POLL_INTERVAL": "0.2",
            "DASHSCOPE_RESULTS_DESTINATION": (tmp_path / "results").as_uri(),
        },
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, airflow_provider_dashscope_batch.operators.lineage as lineage, "
            "airflow_provider_dashscope_batch.operators.batch;"
            "print(sorted(m for m in sys.modules if 'openlineage' in m))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/in.jsonl", ("file", "/data/in.jsonl")),
        ("file:///data/in.jsonl", ("file", "/data/in.jsonl")),
        ("s3://aws_default@bucket/dir/in.jsonl", ("s3://bucket", "dir/in.jsonl")),
        ("oss://bucket/in.jsonl", ("oss://bucket", "in.jsonl")),
    ],
)
@needs_openlineage
def test_path_datasets_follow_the_providers_naming(location, expected):
    dataset = path_dataset(location)
    assert (dataset.namespace, dataset.name) == expected
