"""
Example DAG: create a batch without waiting, then wait for it with a sensor in reschedule mode (the
worker slot is free between pokes), land the results, and cancel the batch if the sensor gives up.

``DASHSCOPE_EXAMPLE_POLL_INTERVAL`` sets the seconds between pokes (default 60);
``DASHSCOPE_RESULTS_DESTINATION`` where results land (default ``file://<tmp>/dashscope-batch-results``).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import (
    DashScopeCancelBatchOperator,
    DashScopeCreateBatchOperator,
)
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.sensors.batch import DashScopeBatchSensor
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

DAG_ID = "example_dashscope_batch_sensor"
INPUT_FILE = Path(__file__).parent / "data" / "requests.jsonl"
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))
DESTINATION = os.environ.get(
    "DASHSCOPE_RESULTS_DESTINATION", f"file://{Path(tempfile.gettempdir()) / 'dashscope-batch-results'}"
)
BATCH_ID = "{{ ti.xcom_pull(task_ids='create_batch', key='batch_id') }}"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope"],
) as dag:
    upload_file = DashScopeUploadFileOperator(
        task_id="upload_file", file=str(INPUT_FILE), endpoint="/v1/chat/ds-test"
    )

    # [START howto_operator_dashscope_create_batch_no_wait]
    create_batch = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload_file.output,
        endpoint="/v1/chat/ds-test",
        wait_for_completion=False,
    )
    # [END howto_operator_dashscope_create_batch_no_wait]

    # [START howto_sensor_dashscope_batch]
    wait_for_batch = DashScopeBatchSensor(
        task_id="wait_for_batch",
        batch_id=BATCH_ID,
        mode="reschedule",
        poke_interval=POLL_INTERVAL,
        timeout=timedelta(hours=24),
        on_all_failed="fail",  # the default: a batch in which every request failed fails the sensor
    )
    # [END howto_sensor_dashscope_batch]

    # [START howto_operator_dashscope_cancel_batch]
    cancel_batch = DashScopeCancelBatchOperator(
        task_id="cancel_batch_if_waiting_failed",
        batch_id=BATCH_ID,
        trigger_rule="one_failed",
    )
    # [END howto_operator_dashscope_cancel_batch]

    results_to_object_storage = DashScopeBatchResultsToObjectStorageOperator(
        task_id="results_to_object_storage", batch_id=BATCH_ID, destination=DESTINATION
    )

    upload_file >> create_batch >> wait_for_batch >> [results_to_object_storage, cancel_batch]
