"""DAGs the tests run with ``dag.test()`` to prove behaviours the examples do not show (not examples)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_dashscope_batch.operators.batch import (
    DashScopeCancelBatchOperator,
    DashScopeCreateBatchOperator,
)
from airflow_provider_dashscope_batch.operators.upload import DashScopeUploadFileOperator

HERE = Path(__file__).parent
REQUESTS = HERE.parents[2] / "example_dags" / "data" / "requests.jsonl"
FAST = {"poll_interval": 0.2, "max_poll_interval": 0.5}
BATCH_ID = "{{ ti.xcom_pull(task_ids='create_batch', key='batch_id') }}"


def upload(file: Path = REQUESTS) -> DashScopeUploadFileOperator:
    return DashScopeUploadFileOperator(task_id="upload_file", file=str(file), endpoint="/v1/chat/ds-test")


with DAG("dashscope_test_validation_failure", schedule=None) as validation_failure:
    DashScopeCreateBatchOperator(
        task_id="create_batch", input_file_id=upload(HERE / "bad_requests.jsonl").output, **FAST
    )

with DAG("dashscope_test_retry", schedule=None) as retry:
    DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload().output,
        endpoint="/v1/chat/ds-test",
        deferrable=False,
        retries=2,
        retry_delay=timedelta(0),
        error_budget=0,
        **FAST,
    )

with DAG("dashscope_test_execution_timeout", schedule=None) as execution_timeout:
    DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload().output,
        endpoint="/v1/chat/ds-test",
        deferrable=False,
        execution_timeout=timedelta(seconds=3),
        **FAST,
    )

for deferrable in (True, False):
    with DAG(
        f"dashscope_test_wait_timeout_{'deferred' if deferrable else 'in_process'}", schedule=None
    ) as dag:
        DashScopeCreateBatchOperator(
            task_id="create_batch",
            input_file_id=upload().output,
            endpoint="/v1/chat/ds-test",
            deferrable=deferrable,
            wait_timeout=2,
            **FAST,
        )
    globals()[dag.dag_id] = dag

with DAG("dashscope_test_cancel", schedule=None) as cancel:
    created = DashScopeCreateBatchOperator(
        task_id="create_batch",
        input_file_id=upload().output,
        endpoint="/v1/chat/ds-test",
        wait_for_completion=False,
    )
    created >> DashScopeCancelBatchOperator(
        task_id="cancel_batch", batch_id=BATCH_ID, wait_for_completion=True, deferrable=True, **FAST
    )

for deferrable in (True, False):
    with DAG(
        f"dashscope_test_replace_failed_{'deferred' if deferrable else 'in_process'}", schedule=None
    ) as dag:
        DashScopeCreateBatchOperator(
            task_id="create_batch",
            input_file_id=upload().output,
            endpoint="/v1/chat/ds-test",
            deferrable=deferrable,
            retries=1,
            retry_delay=timedelta(0),
            **FAST,
        )
    globals()[dag.dag_id] = dag
