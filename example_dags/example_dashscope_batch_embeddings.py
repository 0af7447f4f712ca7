"""
Example DAG: embed a CSV of texts with text-embedding-v4 as a DashScope batch and land the vectors in Parquet.

The CSV (``doc_id,text``) becomes requests of up to 10 texts each (the model's per-request limit), is
validated and uploaded; the batch runs without holding a worker slot; the output lands as a Parquet table
with one row per text: its id (``input_id``), the vector as a fixed-size ``list<float32>`` column
(``embedding``), ``dimensions``, usage and the text itself (carried from the CSV, so no join is needed),
which a vector store loads as is.

Batch embeddings run in the China (Beijing) region only: point the connection at
``https://dashscope.aliyuncs.com/compatible-mode/v1``.

Environment (all optional):

* ``DASHSCOPE_EMBEDDINGS_CSV``: the texts (default ``example_dags/data/texts.csv``), e.g.
  ``s3://aws_default@my-bucket/texts.csv``.
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

DAG_ID = "example_dashscope_batch_embeddings"
TEXTS = os.environ.get("DASHSCOPE_EMBEDDINGS_CSV", str(Path(__file__).parent / "data" / "texts.csv"))
DESTINATION = os.environ.get(
    "DASHSCOPE_RESULTS_DESTINATION", f"file://{Path(tempfile.gettempdir()) / 'dashscope-batch-results'}"
)
POLL_INTERVAL = float(os.environ.get("DASHSCOPE_EXAMPLE_POLL_INTERVAL", "60"))
INPUT_COLUMNS = f"{DESTINATION.rstrip('/')}-input-columns"  # where the upload keeps the carried columns

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "dashscope", "embeddings"],
) as dag:
    # [START howto_embeddings_from_csv]
    upload_texts = DashScopeUploadFileOperator(
        task_id="upload_texts",
        csv=TEXTS,
        id_column="doc_id",
        text_column="text",
        model="text-embedding-v4",
        endpoint="/v1/embeddings",
        inputs_per_request=10,  # text-embedding-v4 takes at most 10 texts per request
        body_params={"dimensions": 256},  # 2048, 1536, 1024 (default), 768, 512, 256, 128 or 64
        carry_columns=["text"],  # the CSV's text column, carried into the table beside its vector
        carry_columns_to=INPUT_COLUMNS,
    )
    embed = DashScopeCreateBatchOperator(
        task_id="embed",
        input_file_id=upload_texts.output,
        endpoint="/v1/embeddings",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    vectors_to_parquet = DashScopeBatchResultsToObjectStorageOperator(
        task_id="vectors_to_parquet",
        batch_id="{{ ti.xcom_pull(task_ids='embed', key='batch_id') }}",
        destination=DESTINATION,
        output_format="parquet",  # output.parquet: one row per text, embedding: fixed_size_list<float>[256]
        input_columns=INPUT_COLUMNS,  # adds the column "text"
    )
    # [END howto_embeddings_from_csv]

    @teardown
    def delete_input_file(file_id: str) -> None:
        """Uploaded files never expire and count against the account's 10,000-file quota."""
        DashScopeBatchHook().get_conn().delete_file(file_id)

    embed >> vectors_to_parquet >> delete_input_file(upload_texts.output)
