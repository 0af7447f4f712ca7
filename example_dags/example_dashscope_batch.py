"""
Example DAG: validate and upload a JSONL file, run it as a DashScope batch without holding a worker slot,
land the results in object storage, then delete the uploaded input file.

Environment (all optional):

* ``DASHSCOPE_RESULTS_DESTINATION``: where results land (default ``file://<tmp>/dashscope-batch-results``),
  e.g. ``s3://aws_default@my-bucket/dashscope``; also overridable per run with the ``destination`` param.
* ``DASHSCOPE_EXAMPLE_POLL_INTERVAL``: seconds between status polls (default 60, the service's advice;
  the demo and the tests use a fraction of a second against the emulator's fast clock).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, Param, teardown

from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

DAG_ID = "example_dashscope_batch"
INPUT_FILE = Path(__file__).parent / "data" / "requests.jsonl"
DESTINATION = os.environ.get(
    "DASHSCOPE_RESULTS_DESTINATION", f"file://{Path(tempfile.gettempdir()) / 'dashscope-batch-results'}"
)
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"destination": Param(DESTINATION, type="string", description="Where the results land")},
    tags=["example", "dashscope"],
) as dag:
    # [START howto_operator_dashscope_upload_file]
    upload_file = DashScopeUploadFileOperator(
        task_id="upload_file",
        file=str(INPUT_FILE),
        endpoint="/v1/chat/ds-test",
    )
    # [END howto_operator_dashscope_upload_file]

    # [START howto_operator_dashscope_create_batch]
    create_batch = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload_file.output,
        endpoint="/v1/chat/ds-test",
        completion_window="24h",
        metadata={"ds_name": "example_dashscope_batch", "ds_description": "Airflow example DAG"},
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        on_partial_failure="success",
        on_all_failed="fail",
    )
    # [END howto_operator_dashscope_create_batch]

    # [START howto_operator_dashscope_results_to_object_storage]
    results_to_object_storage = DashScopeBatchResultsToObjectStorageOperator(
        task_id="results_to_object_storage",
        batch_id="{{ ti.xcom_pull(task_ids='create_batch', key='batch_id') }}",
        destination="{{ params.destination }}",
    )
    # [END howto_operator_dashscope_results_to_object_storage]

    @teardown
    def delete_input_file(file_id: str) -> None:
        """Uploaded files never expire and count against the account's 10,000-file quota."""
        DashScopeBatchHook().get_conn().delete_file(file_id)

    # A teardown runs whatever happened upstream and does not turn a failed run green.
    create_batch >> results_to_object_storage >> delete_input_file(upload_file.output)
