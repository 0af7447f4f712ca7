"""
DAGs for the job-round tests: upload -> create (rounds) -> transfer, a linear chain.

``ROUNDS_TEST_INPUT`` is the JSONL input, ``ROUNDS_TEST_RESULTS`` the results folder URL.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

INPUT = os.environ.get("ROUNDS_TEST_INPUT", "/nonexistent.jsonl")
RESULTS = os.environ.get("ROUNDS_TEST_RESULTS", "file:///nonexistent")
ARGS = {"start_date": datetime(2025, 1, 1), "retry_delay": timedelta(seconds=0)}


def job(dag_id: str, *, deferrable: bool, resubmit_rounds: int, retries: int) -> DAG:
    with DAG(dag_id, schedule=None, default_args=ARGS) as dag:
        upload = DashScopeUploadFileOperator(task_id="upload", file=INPUT)
        create = DashScopeCreateBatchOperator(
            task_id="create",
            input_file_id=upload.output,
            endpoint="/v1/chat/ds-test",
            poll_interval=0.2,
            max_poll_interval=0.2,
            deferrable=deferrable,
            resubmit_rounds=resubmit_rounds,
            retries=retries,
        )
        transfer = DashScopeBatchResultsToObjectStorageOperator(
            task_id="transfer",
            batch_ids="{{ ti.xcom_pull(task_ids='create', key='batch_ids') }}",
            destination=RESULTS,
            result_set="job",
            output_format="csv",
        )
        upload >> create >> transfer
    return dag


rounds_in_process = job("rounds_in_process", deferrable=False, resubmit_rounds=1, retries=0)
rounds_deferred = job("rounds_deferred", deferrable=True, resubmit_rounds=1, retries=0)
retry_after_expiry = job("retry_after_expiry", deferrable=False, resubmit_rounds=0, retries=1)
