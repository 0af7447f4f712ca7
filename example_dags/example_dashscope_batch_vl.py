"""
Example DAG: describe images with Qwen-VL as a DashScope batch, one request per CSV row, answers in Parquet.

Each row of the CSV (``image_id,image_url,language``) becomes one chat request whose user message holds the
image (an ``image_url`` part) and a prompt built from the row's columns (a text part). The preflight checks
the message shape for the model (image parts only for vision models); the answers land as a Parquet table
with ``content``, ``finish_reason`` and usage per image (image tokens included in ``prompt_tokens``).

Multimodal batch (Qwen-VL Max/Plus/Flash, Qwen-OCR) runs in the China (Beijing) region only. Image URLs
must be reachable by the service (public or pre-signed ``https://``), or ``data:`` URLs within the 6 MB
line limit.

Environment (all optional):

* ``DASHSCOPE_VL_CSV``: the images (default ``example_dags/data/images.csv``).
* ``DASHSCOPE_RESULTS_DESTINATION``: where the table lands (default ``file://<tmp>/dashscope-batch-results``).
* ``DASHSCOPE_EXAMPLE_POLL_INTERVAL``: seconds between status polls (default 60).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, teardown

from airflow_provider_dashscope_batch.hooks.dashscope import DashScopeBatchHook
from airflow_provider_dashscope_batch.operators.batch import DashScopeCreateBatchOperator
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator
from airflow_provider_dashscope_batch.transfers.results_to_object_storage import (
    DashScopeBatchResultsToObjectStorageOperator,
)

DAG_ID = "example_dashscope_batch_vl"
IMAGES = os.environ.get("DASHSCOPE_VL_CSV", str(Path(__file__).parent / "data" / "images.csv"))
DESTINATION = os.environ.get(
    "DASHSCOPE_RESULTS_DESTINATION", f"file://{Path(tempfile.gettempdir()) / 'dashscope-batch-results'}"
)
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope", "vision"],
) as dag:
    # [START howto_vl_from_csv]
    upload_images = DashScopeUploadFileOperator(
        task_id="upload_images",
        csv=IMAGES,
        id_column="image_id",
        image_column="image_url",
        template="Describe this image in one sentence, in {language}.",
        model="qwen-vl-max",
        body_params={"max_tokens": 200},
    )
    describe = DashScopeCreateBatchOperator(
        task_id="describe",
        input_file_id=upload_images.output,
        endpoint="/v1/chat/completions",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    answers_to_parquet = DashScopeBatchResultsToObjectStorageOperator(
        task_id="answers_to_parquet",
        batch_id="{{ ti.xcom_pull(task_ids='describe', key='batch_id') }}",
        destination=DESTINATION,
        output_format="parquet",  # output.parquet: content, finish_reason, usage per image
    )
    # [END howto_vl_from_csv]

    @teardown
    def delete_input_file(file_id: str) -> None:
        """Uploaded files never expire and count against the account's 10,000-file quota."""
        DashScopeBatchHook().get_conn().delete_file(file_id)

    describe >> answers_to_parquet >> delete_input_file(upload_images.output)
