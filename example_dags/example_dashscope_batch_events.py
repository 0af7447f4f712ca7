"""
Example DAG pair: submit a batch and forget it; a results DAG runs when DashScope reports it finished.

``example_dashscope_batch_submit`` uploads the requests and creates a batch, and the task ends at once --
nothing waits. The connection's ``finish_events_secret`` extra makes the operator mark the batch as this
deployment's. ``example_dashscope_batch_results`` is scheduled on the connection's finish Asset
(:func:`~airflow_provider_dashscope_batch.events.finished_batches_asset`), which carries an
``AssetWatcher``: the triggerer runs the finish watcher, which lists the connection's batches once a
minute, and each marked batch's finish becomes one Asset event with the batch in
``extra["payload"]`` -- in every region, with no inbound traffic to Airflow. The results DAG lands the
results of every batch whose finish started it in object storage (one mapped transfer per batch) and
deletes their input files. Started by hand, it takes the batch id from the ``batch_id`` param.

With a public api-server, ``finish_callback="airflow"`` and ``mailbox_interval`` add the receiver as a
faster source (see the "Completion events" docs page). Environment (optional):
``DASHSCOPE_RESULTS_DESTINATION`` as in ``example_dashscope_batch``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, get_current_context, task

from airflow_provider_dashscope_batch.events import finished_batches_asset
from airflow_provider_dashscope_batch.events.watcher import payloads
from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

INPUT_FILE = Path(__file__).parent / "data" / "requests.jsonl"
DESTINATION = os.environ.get(
    "DASHSCOPE_RESULTS_DESTINATION", f"file://{Path(tempfile.gettempdir()) / 'dashscope-batch-results'}"
)
# [START howto_completion_events_asset]
# Asset(name=..., uri=..., watchers=[AssetWatcher(name=..., trigger=DashScopeBatchFinishTrigger(...))])
FINISHED = finished_batches_asset("dashscope_default", poll_interval=60)
# [END howto_completion_events_asset]

with DAG(
    dag_id="example_dashscope_batch_submit",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope"],
) as submit_dag:
    upload_file = DashScopeUploadFileOperator(
        task_id="upload_file", file=str(INPUT_FILE), endpoint="/v1/chat/ds-test"
    )
    # [START howto_completion_events_submit]
    create_batch = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload_file.output,
        endpoint="/v1/chat/ds-test",
        metadata={"ds_name": "example_dashscope_batch_submit"},
        wait_for_completion=False,
    )
    # [END howto_completion_events_submit]

# [START howto_completion_events_results]
with DAG(
    dag_id="example_dashscope_batch_results",
    schedule=[FINISHED],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"batch_id": Param(None, type=["null", "string"], description="Batch of a manual run")},
    tags=["example", "dashscope"],
) as results_dag:

    @task
    def finished_batches() -> list[dict[str, Any]]:
        """
        The batches of the Asset events that started this run (or the ``batch_id`` param's batch).

        Airflow starts one run for the events recorded since the previous run, so a run may carry
        several finishes; each event is in exactly one run.
        """
        context = get_current_context()
        if context["params"].get("batch_id"):
            batch = DashScopeBatchHook().get_conn().retrieve_batch(context["params"]["batch_id"])
            return [{"batch_id": batch.id, "input_file_id": batch.input_file_id}]
        return [
            {"batch_id": finish["batch_id"], "input_file_id": finish["input_file_id"]}
            for finish in payloads(context["triggering_asset_events"][FINISHED])
        ]

    batches = finished_batches()
    results_to_object_storage = DashScopeBatchResultsToObjectStorageOperator.partial(
        task_id="results_to_object_storage", destination=DESTINATION
    ).expand(batch_id=batches.map(lambda finished: finished["batch_id"]))

    @task
    def delete_input_files(finished: list[dict[str, Any]]) -> None:
        """Uploaded files never expire and count against the account's 10,000-file quota."""
        client = DashScopeBatchHook().get_conn()
        for batch in finished:
            client.delete_file(batch["input_file_id"])

    results_to_object_storage >> delete_input_files(batches)
# [END howto_completion_events_results]
